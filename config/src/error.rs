//! Diagnostics produced while loading a configuration.
//!
//! [`ConfigError`] is the single error type of the loader: every variant carries the
//! [`Location`] of the directive (or line) at fault and displays as `FILE:LINE: message`
//! (`command line: message` for command-line options). The loader collects all of them
//! instead of stopping at the first. [`Warning`] is the same shape for non-fatal findings.

use crate::lexer::{LexError, Location};
use std::fmt;
use std::path::PathBuf;

/// A fatal problem in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A line could not be split into parameters.
    #[error("{loc}: {source}")]
    Lex {
        /// Where.
        loc: Location,
        /// The lexer's finding.
        source: LexError,
    },
    /// A `config FILE` include (or the top file) could not be read.
    #[error("{loc}: cannot read configuration file '{}': {source}", path.display())]
    ReadFile {
        /// The directive that asked for the file.
        loc: Location,
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Too many nested `config` includes.
    #[error("{loc}: maximum recursive include levels ({max}) exceeded in include attempt of file '{}' (does a configuration file include itself?)", path.display())]
    IncludeDepth {
        /// The directive.
        loc: Location,
        /// The file it tried to include.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// `cd DIR` names something that is not a directory.
    #[error("{loc}: option 'cd': cannot change directory to '{}': {reason}", path.display())]
    ChangeDir {
        /// The directive.
        loc: Location,
        /// The resolved directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A command-line argument that is not an `--option`.
    #[error("{loc}: expected an --option, found '{arg}' (every option on the command line must start with '--')")]
    CommandLineArg {
        /// Where.
        loc: Location,
        /// The argument.
        arg: String,
    },
    /// The directive is not known.
    #[error("{loc}: unknown directive '{name}' (Unrecognized option or missing or extra parameter(s)); use 'ignore-unknown-option {name}' or 'setenv opt {name} ...' to make this a warning")]
    UnknownDirective {
        /// Where.
        loc: Location,
        /// The directive name.
        name: String,
    },
    /// The directive is known but deliberately not supported.
    #[error("{loc}: option '{name}' is not supported by Bulwark: {reason}")]
    Unsupported {
        /// Where.
        loc: Location,
        /// The directive.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// Wrong number of parameters.
    #[error("{loc}: option '{name}': {detail}")]
    Arity {
        /// Where.
        loc: Location,
        /// The directive.
        name: String,
        /// What is wrong ("expects 1 parameter, got 2").
        detail: String,
    },
    /// The directive is not allowed where it appears (command line, CCD file, inline…).
    #[error("{loc}: option '{name}' {detail}")]
    Context {
        /// Where.
        loc: Location,
        /// The directive.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A parameter has a bad value.
    #[error("{loc}: option '{name}': {detail}")]
    BadValue {
        /// Where.
        loc: Location,
        /// The directive.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// Options that conflict, or a required option that is missing.
    #[error("{loc}: {detail}")]
    Invalid {
        /// The directive the problem is attached to (or the top file).
        loc: Location,
        /// What is wrong.
        detail: String,
    },
}

impl ConfigError {
    /// The location the error refers to.
    pub fn location(&self) -> &Location {
        match self {
            ConfigError::Lex { loc, .. }
            | ConfigError::ReadFile { loc, .. }
            | ConfigError::IncludeDepth { loc, .. }
            | ConfigError::ChangeDir { loc, .. }
            | ConfigError::CommandLineArg { loc, .. }
            | ConfigError::UnknownDirective { loc, .. }
            | ConfigError::Unsupported { loc, .. }
            | ConfigError::Arity { loc, .. }
            | ConfigError::Context { loc, .. }
            | ConfigError::BadValue { loc, .. }
            | ConfigError::Invalid { loc, .. } => loc,
        }
    }
}

/// A non-fatal finding (deprecated option, ignored option, risky setting…).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Warning {
    /// Where.
    pub loc: Location,
    /// What.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.message)
    }
}
