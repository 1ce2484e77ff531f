#![deny(unsafe_code)]
#![warn(missing_docs)]
//! `bulwark-config`: the OpenVPN 2.x option language for Bulwark.
//!
//! * [`lexer`]: OpenVPN's quoting/escaping/comment rules ([`lexer::split_line`], also used
//!   by the management broker for command lines), inline `<tag>` blocks, file:line on every
//!   token.
//! * [`directives()`]: the static directive table (name, arity, contexts, support status,
//!   description) that drives parsing and documentation.
//! * [`load_file`] / [`load_args`] / [`load_str`] / [`Loader`]: read files, `config`
//!   includes, `cd`, and command-line options into a typed [`Config`]; all errors are
//!   collected as [`ConfigError`]s (`FILE:LINE: message`), warnings separately.
//! * [`expand`]: the `server`, `server-ipv6` and `keepalive` macros, expanded as OpenVPN 2.6's
//!   `helper.c`, and cross-option validation.
//! * [`parse_ccd`]: client-config-dir files (`ifconfig-push`, `iroute`, `push`, `push-reset`,
//!   `disable`, …).
//!
//! The loader reads configuration files (and `config` includes) only: key material, CCD
//! files, scripts and status files are never opened here.

pub mod directives;
pub mod error;
pub mod expand;
pub mod lexer;
pub mod load;
pub mod model;

pub use directives::{directives, lookup, Contexts, DirectiveSpec, Support};
pub use error::{ConfigError, Warning};
pub use lexer::{split_line, LexError, Location, Origin, Token};
pub use load::{parse_ccd, Loaded, Loader, MAX_INCLUDE_DEPTH};
pub use model::*;

use std::path::{Path, PathBuf};

fn current_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

/// Loads a server configuration the way `openvpn <cli_args…> --config PATH` would (the
/// command-line options first, as the systemd units pass them, then the file; for
/// single-valued options the file wins, list options accumulate). Relative paths start at
/// the process's current directory.
pub fn load_file(path: impl AsRef<Path>, cli_args: &[String]) -> Result<Loaded, Vec<ConfigError>> {
    let mut l = Loader::new(current_dir());
    if !cli_args.is_empty() {
        l.command_line(cli_args);
    }
    l.file(path);
    l.finish()
}

/// Loads a configuration from command-line arguments only (without the program name), as
/// OpenVPN's `parse_argv`: `--config FILE` reads a file in place; a single argument without
/// `--` is a config file.
pub fn load_args(args: &[String]) -> Result<Loaded, Vec<ConfigError>> {
    let mut l = Loader::new(current_dir());
    l.command_line(args);
    l.finish()
}

/// Loads a configuration from a string (`name` appears in error locations); `config`
/// includes and `cd` resolve against `cwd`.
pub fn load_str(
    name: &str,
    text: &str,
    cwd: impl Into<PathBuf>,
) -> Result<Loaded, Vec<ConfigError>> {
    let mut l = Loader::new(cwd);
    l.text(name, text);
    l.finish()
}
