//! Configuration sources: files, `config` includes, `cd`, and the command line.
//!
//! [`Loader`] feeds directives, in order, into the directive table's parse functions:
//!
//! * [`Loader::command_line`] mirrors OpenVPN's `parse_argv`: `--option a b` is the
//!   directive `option a b` (parameters are the following arguments that do not start with
//!   `--`, at most 15); a single argument without `--` means `config ARG`.
//! * [`Loader::file`] is `config FILE`. `config` includes are expanded in place. Relative
//!   include paths are relative to the current directory (not to the including file), as in
//!   OpenVPN. Nesting is limited to 10 levels (OpenVPN's limit); deeper includes are an error.
//! * `cd DIR` does not change the process's directory (the library never calls `chdir`); it
//!   changes the loader's notion of the current directory, exactly where OpenVPN would have
//!   called `chdir()`: later `config` includes resolve against it, and at the end every
//!   relative file path in the configuration is resolved against the final directory (that is
//!   where OpenVPN opens key files, status and log files: after all options are read).
//!   A `cd` to something that is not a directory is an error, as in OpenVPN.
//! * Unknown directives are errors, unless named by an earlier `ignore-unknown-option` or
//!   wrapped in `setenv opt NAME …`: then they are warnings (as in OpenVPN, this also covers a
//!   wrong parameter count, and for `setenv opt` a bad value). Deliberately unsupported
//!   directives are errors even then: silently dropping a feature the operator asked for is
//!   not acceptable.
//!
//! All errors are collected; lines with errors are skipped and loading continues. The
//! cross-option validation and macro expansion ([`crate::expand`]) only run when no
//! directive-level error was found, so that one bad line does not cascade into misleading
//! follow-up errors.
//!
//! The loader reads configuration files only; key material, CCD files and scripts are never
//! opened here (that is the daemon's job).

use crate::directives::{lookup, Builder, Context, Directive, Handler, ParseError, Support};
use crate::error::{ConfigError, Warning};
use crate::lexer::{lex_source, Location, Origin, MAX_PARAMS};
use crate::model::{CcdConfig, Config};
use std::path::{Path, PathBuf};

/// OpenVPN's maximum include depth.
pub const MAX_INCLUDE_DEPTH: usize = 10;

/// A successfully loaded configuration and the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The typed configuration.
    pub config: Config,
    /// Non-fatal findings, in order.
    pub warnings: Vec<Warning>,
}

/// Loads a configuration from one or more sources, in order.
#[derive(Debug)]
pub struct Loader {
    pub(crate) builder: Builder,
    pub(crate) errors: Vec<ConfigError>,
    cwd: PathBuf,
    top: Option<Location>,
}

impl Loader {
    /// A loader for a server configuration whose relative paths start at `cwd`.
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        let cwd = cwd.into();
        Loader {
            builder: Builder::new(Context::Server, cwd.clone()),
            errors: Vec::new(),
            cwd,
            top: None,
        }
    }

    /// Processes command-line arguments (without the program name) like OpenVPN's
    /// `parse_argv`.
    pub fn command_line(&mut self, args: &[String]) {
        if args.len() == 1 && !args[0].starts_with("--") {
            let loc = Location::command_line(1);
            self.note_top(&loc);
            let a = vec![args[0].clone()];
            self.directive("config", &a, None, &loc, 0);
            return;
        }
        let mut i = 0;
        while i < args.len() {
            let loc = Location::command_line(u32::try_from(i + 1).unwrap_or(u32::MAX));
            self.note_top(&loc);
            let first = &args[i];
            let mut params = Vec::new();
            let mut j = i + 1;
            while j < args.len() && params.len() < MAX_PARAMS - 1 && !args[j].starts_with("--") {
                params.push(args[j].clone());
                j += 1;
            }
            match first.strip_prefix("--") {
                Some(name) => self.directive(name, &params, None, &loc, 0),
                None => self.errors.push(ConfigError::CommandLineArg {
                    loc,
                    arg: first.clone(),
                }),
            }
            i = j;
        }
    }

    /// Reads `path` as if `config PATH` had been given on the command line.
    pub fn file(&mut self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        let loc = Location::file(path, 0);
        self.note_top(&loc);
        self.include(path, &loc, 1);
    }

    /// Processes a configuration text that does not come from a file (`name` is used in
    /// locations).
    pub fn text(&mut self, name: &str, text: &str) {
        let origin = Origin::Text(name.to_string());
        self.note_top(&Location {
            origin: origin.clone(),
            line: 0,
        });
        self.lex_and_apply(text.as_bytes(), origin, 1);
    }

    /// The syslog ident the directives read so far ask for (`syslog [NAME]`, else
    /// `daemon [NAME]`; `openvpn` without a name), also when other lines had errors: where the
    /// daemon sends its configuration errors besides standard error, as OpenVPN opens syslog
    /// while it parses these two options.
    pub fn syslog_ident(&self) -> Option<String> {
        self.builder.cfg.logging.syslog_ident()
    }

    /// Finishes: validation, macro expansion, path resolution.
    pub fn finish(self) -> Result<Loaded, Vec<ConfigError>> {
        let Loader {
            builder,
            errors,
            cwd,
            top,
        } = self;
        if !errors.is_empty() {
            return Err(errors);
        }
        let top = top.unwrap_or(Location {
            origin: Origin::CommandLine,
            line: 0,
        });
        crate::expand::finalize(builder, cwd, &top)
    }

    /// Remembers where errors that belong to no directive are reported: the first
    /// configuration file (or text) if there is one, else the command line.
    fn note_top(&mut self, loc: &Location) {
        let replace = match &self.top {
            None => true,
            Some(t) => {
                matches!(t.origin, Origin::CommandLine)
                    && !matches!(loc.origin, Origin::CommandLine)
            }
        };
        if replace {
            let mut l = loc.clone();
            if matches!(l.origin, Origin::File(_)) {
                l.line = 0;
            }
            self.top = Some(l);
        }
    }

    fn include(&mut self, path: &Path, loc: &Location, level: usize) {
        if level > MAX_INCLUDE_DEPTH {
            self.errors.push(ConfigError::IncludeDepth {
                loc: loc.clone(),
                path: path.to_path_buf(),
                max: MAX_INCLUDE_DEPTH,
            });
            return;
        }
        if level == 1 {
            self.note_top(&Location::file(path, 0));
        }
        let resolved = self.cwd.join(path);
        match std::fs::read(&resolved) {
            Ok(bytes) => {
                self.builder.cfg.files.push(resolved);
                self.lex_and_apply(&bytes, Origin::File(path.to_path_buf()), level);
            }
            Err(source) => self.errors.push(ConfigError::ReadFile {
                loc: loc.clone(),
                path: resolved,
                source,
            }),
        }
    }

    fn lex_and_apply(&mut self, bytes: &[u8], origin: Origin, level: usize) {
        let (lines, lex_errors) = lex_source(bytes, &origin, true);
        // Report lexer errors in line order together with directive errors.
        let mut lex_errors = lex_errors.into_iter().peekable();
        for line in lines {
            while let Some(e) = lex_errors.next_if(|e| e.loc.line < line.loc.line) {
                self.errors.push(ConfigError::Lex {
                    loc: e.loc,
                    source: e.error,
                });
            }
            let name = line.tokens[0].text.clone();
            let args: Vec<String> = line.tokens[1..].iter().map(|t| t.text.clone()).collect();
            let inline = line.inline.as_ref().map(|b| b.content.as_str());
            self.directive(&name, &args, inline, &line.loc, level);
        }
        for e in lex_errors {
            self.errors.push(ConfigError::Lex {
                loc: e.loc,
                source: e.error,
            });
        }
    }

    fn directive(
        &mut self,
        name: &str,
        args: &[String],
        inline: Option<&str>,
        loc: &Location,
        level: usize,
    ) {
        let action = apply(&mut self.builder, &mut self.errors, name, args, inline, loc);
        match action {
            Some(LoaderAction::Include(p)) => self.include(Path::new(&p), loc, level + 1),
            Some(LoaderAction::Cd(d)) => self.cd(&d, loc),
            None => {}
        }
    }

    fn cd(&mut self, dir: &str, loc: &Location) {
        let target = self.cwd.join(dir);
        match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => {
                self.cwd = target;
                self.builder.cfg.cd = Some(PathBuf::from(dir));
            }
            Ok(_) => self.errors.push(ConfigError::ChangeDir {
                loc: loc.clone(),
                path: target,
                reason: "not a directory".into(),
            }),
            Err(e) => self.errors.push(ConfigError::ChangeDir {
                loc: loc.clone(),
                path: target,
                reason: e.to_string(),
            }),
        }
    }
}

/// What the loader must do after a `Handler::Loader` directive passed the table checks.
enum LoaderAction {
    Include(String),
    Cd(String),
}

/// Applies one directive to the builder: `setenv opt`, lookup, context, support, inline,
/// arity, then the parse function. Returns the loader action for `config`/`cd`.
fn apply(
    b: &mut Builder,
    errors: &mut Vec<ConfigError>,
    name: &str,
    args: &[String],
    inline: Option<&str>,
    loc: &Location,
) -> Option<LoaderAction> {
    // `setenv opt NAME …`: an unknown NAME is only a warning (OpenVPN add_option).
    let (name, args, soft) = if name == "setenv" && args.first().map(String::as_str) == Some("opt")
    {
        match args.get(1) {
            Some(n) => (n.as_str(), &args[2..], true),
            None => {
                b.warn(loc, "'setenv opt' without an option name is ignored");
                return None;
            }
        }
    } else {
        (name, args, false)
    };
    let ignored = |b: &Builder| soft || b.cfg.ignore_unknown.iter().any(|n| n == name);
    let Some(spec) = lookup(name) else {
        if ignored(b) {
            b.warn(
                loc,
                format!("unknown option '{name}' ignored (setenv opt / ignore-unknown-option)"),
            );
        } else {
            errors.push(ConfigError::UnknownDirective {
                loc: loc.clone(),
                name: name.to_string(),
            });
        }
        return None;
    };
    if !spec.allowed_in(b.ctx) {
        let detail = match b.ctx {
            Context::Server => "is only valid in a client-config-dir file",
            Context::Ccd => "cannot be used in a client-config-dir file",
        };
        errors.push(ConfigError::Context {
            loc: loc.clone(),
            name: name.to_string(),
            detail: detail.to_string(),
        });
        return None;
    }
    if let Support::Unsupported { reason } = spec.support() {
        errors.push(ConfigError::Unsupported {
            loc: loc.clone(),
            name: name.to_string(),
            reason: reason.to_string(),
        });
        return None;
    }
    if inline.is_some() && !spec.inline {
        errors.push(ConfigError::Context {
            loc: loc.clone(),
            name: name.to_string(),
            detail: "is not expected to be inline".to_string(),
        });
        return None;
    }
    let n = args.len() + usize::from(inline.is_some());
    if inline.is_some() && !args.is_empty() {
        errors.push(ConfigError::Arity {
            loc: loc.clone(),
            name: name.to_string(),
            detail: "an inline block takes no parameters on its tag line".to_string(),
        });
        return None;
    }
    if let Err(detail) = spec.check_arity(n) {
        if ignored(b) {
            b.warn(
                loc,
                format!("option '{name}': {detail}; ignored (setenv opt / ignore-unknown-option)"),
            );
        } else {
            errors.push(ConfigError::Arity {
                loc: loc.clone(),
                name: name.to_string(),
                detail,
            });
        }
        return None;
    }
    let d = Directive {
        name,
        args,
        inline,
        loc,
    };
    let action = match spec.handler {
        Handler::Loader => match spec.name {
            "config" => Some(LoaderAction::Include(args[0].clone())),
            _ => Some(LoaderAction::Cd(args[0].clone())),
        },
        Handler::Ignore(note) => {
            if !note.is_empty() {
                b.warn(loc, format!("option '{name}': {note}"));
            }
            None
        }
        Handler::Unsupported(_) => None,
        Handler::Parse(f) => match f(b, &d) {
            Ok(()) => None,
            Err(ParseError::Bad(detail)) if soft => {
                b.warn(
                    loc,
                    format!("option '{name}': {detail}; ignored (setenv opt)"),
                );
                return None;
            }
            Err(ParseError::Bad(detail)) => {
                errors.push(ConfigError::BadValue {
                    loc: loc.clone(),
                    name: name.to_string(),
                    detail,
                });
                return None;
            }
            Err(ParseError::Unsupported(reason)) => {
                errors.push(ConfigError::Unsupported {
                    loc: loc.clone(),
                    name: name.to_string(),
                    reason,
                });
                return None;
            }
        },
    };
    b.seen.insert(spec.name, loc.clone());
    action
}

/// Parses one client-config-dir file's content (`path` is used in locations only; the
/// caller reads the file). Only the per-client directives are accepted.
pub fn parse_ccd(path: &Path, text: &[u8]) -> Result<(CcdConfig, Vec<Warning>), Vec<ConfigError>> {
    let mut b = Builder::new(Context::Ccd, PathBuf::new());
    let mut errors = Vec::new();
    let origin = Origin::File(path.to_path_buf());
    let (lines, lex_errors) = lex_source(text, &origin, true);
    for e in lex_errors {
        errors.push(ConfigError::Lex {
            loc: e.loc,
            source: e.error,
        });
    }
    for line in lines {
        let name = line.tokens[0].text.clone();
        let args: Vec<String> = line.tokens[1..].iter().map(|t| t.text.clone()).collect();
        let inline = line.inline.as_ref().map(|b| b.content.as_str());
        // CCD context: `config`/`cd` are refused by the context check, so no action results.
        let _ = apply(&mut b, &mut errors, &name, &args, inline, &line.loc);
    }
    if errors.is_empty() {
        Ok((b.ccd, b.warnings))
    } else {
        errors.sort_by_key(|e| e.location().line);
        Err(errors)
    }
}
