//! Command-line parsing for the `bulwark` binary.
//!
//! Forms:
//! - `bulwark --config FILE [bulwark flags] [--directive args ...]` (or `bulwark FILE`): run the
//!   server. Every `--name args...` that is not a bulwark flag is an OpenVPN directive, exactly as
//!   `openvpn` accepts them on its command line; they are handed to the config loader in order.
//! - `bulwark check-config --config FILE [--directive args ...]`: parse and validate only.
//! - `bulwark init DIR [--ec | --rsa 2048|3072] [--clients N] [--proto udp|tcp] [--port N]
//!   [--wrap tls-crypt|tls-auth|none]`: generate a PKI and a server configuration.
//! - `bulwark --version`, `bulwark --help`.
//!
//! Bulwark's own flags (not OpenVPN directives): `--libexec-dir DIR` (where the child binaries are),
//! `--sandbox-dir DIR` (the empty chroot directory), `--on-security-event exit|restart`.

use std::path::PathBuf;

/// What to do after a child exits because of a security event (seccomp kill, IPC protocol
/// violation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityEventPolicy {
    /// Stop the daemon with an error (the default: never restart blindly).
    Exit,
    /// Log the event and restart the child within the normal restart budget.
    Restart,
}

/// Options of the run command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// `--config FILE`.
    pub config: PathBuf,
    /// Directive arguments after the config, in order (`--name`, values, ...).
    pub directives: Vec<String>,
    /// `--libexec-dir DIR`.
    pub libexec_dir: Option<PathBuf>,
    /// `--sandbox-dir DIR`.
    pub sandbox_dir: Option<PathBuf>,
    /// `--on-security-event`.
    pub on_security_event: SecurityEventPolicy,
    /// `--seccomp kill|trap|log|off` for the sandboxed children (default kill).
    pub seccomp: bulwark_ipc::msg::SeccompMode,
}

/// Options of `bulwark init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    /// Target directory.
    pub dir: PathBuf,
    /// Key algorithm.
    pub key: bulwark_pki::KeyKind,
    /// Number of client profiles.
    pub clients: usize,
    /// `udp` or `tcp`.
    pub tcp: bool,
    /// Port.
    pub port: u16,
    /// Control-channel wrapping.
    pub wrap: bulwark_pki::WrapMode,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the server.
    Run(RunOptions),
    /// Validate a configuration.
    CheckConfig {
        /// The config file.
        config: PathBuf,
        /// Directive arguments.
        directives: Vec<String>,
    },
    /// Generate a PKI and configuration.
    Init(InitArgs),
    /// Print the version.
    Version,
    /// Print the help text.
    Help,
}

/// Command-line errors (one line each).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// No arguments at all.
    #[error("no configuration given (use --config FILE, or --help)")]
    NoConfig,
    /// A flag lacks its value.
    #[error("option '{0}' needs a value")]
    MissingValue(String),
    /// A value is invalid.
    #[error("invalid value '{value}' for '{option}': {why}")]
    BadValue {
        /// The option.
        option: String,
        /// The value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// An unexpected argument.
    #[error("unexpected argument '{0}'")]
    Unexpected(String),
    /// `--config` given twice.
    #[error("--config given more than once")]
    DuplicateConfig,
}

/// The help text.
pub const HELP: &str = "\
Usage:
  bulwark --config FILE [--OPTION ARGS ...]   run the VPN server
  bulwark FILE                                same as --config FILE
  bulwark check-config --config FILE [--OPTION ARGS ...]
                                              validate a configuration, print every error
  bulwark init DIR [--ec | --rsa 2048|3072] [--clients N] [--proto udp|tcp]
               [--port N] [--wrap tls-crypt|tls-auth|none]
                                              generate a CA, certificates, keys, server.conf
                                              and client profiles in DIR
  bulwark --version | --help

Any --OPTION ARGS after the configuration is an OpenVPN directive, as on openvpn's
command line (e.g. --verb 4 --port 1195).

Bulwark options:
  --libexec-dir DIR              directory of bulwark-worker and bulwark-mgmt
                                 (default: next to this binary, then /usr/libexec/bulwark)
  --sandbox-dir DIR              empty root-owned directory the children chroot into
                                 (default: /run/bulwark/empty, created if missing)
  --seccomp kill|trap|log|off    seccomp enforcement in the worker and the broker (default kill;
                                 trap reports the syscall; log and off do NOT confine)
  --on-security-event exit|restart
                                 after a child is killed by seccomp or violates the IPC
                                 protocol: stop the daemon (default) or restart the child
";

/// The version line.
pub fn version_text() -> String {
    format!(
        "bulwark {} (OpenVPN 2.x compatible server, privilege-separated)\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn value(args: &[String], i: &mut usize, opt: &str) -> Result<String, CliError> {
    *i += 1;
    args.get(*i)
        .cloned()
        .ok_or_else(|| CliError::MissingValue(opt.to_owned()))
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let Some(first) = args.first() else {
        return Err(CliError::NoConfig);
    };
    match first.as_str() {
        "--version" | "-V" if args.len() == 1 => return Ok(Command::Version),
        "--help" | "-h" if args.len() == 1 => return Ok(Command::Help),
        "init" => return parse_init(&args[1..]),
        "check-config" => {
            let run = parse_run(&args[1..])?;
            if run.libexec_dir.is_some() || run.sandbox_dir.is_some() {
                return Err(CliError::Unexpected("--libexec-dir/--sandbox-dir".into()));
            }
            return Ok(Command::CheckConfig {
                config: run.config,
                directives: run.directives,
            });
        }
        _ => {}
    }
    if args.iter().any(|a| a == "--help") {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| a == "--version") {
        return Ok(Command::Version);
    }
    Ok(Command::Run(parse_run(args)?))
}

fn parse_run(args: &[String]) -> Result<RunOptions, CliError> {
    let mut config = None;
    let mut directives = Vec::new();
    let mut libexec_dir = None;
    let mut sandbox_dir = None;
    let mut on_security_event = SecurityEventPolicy::Exit;
    let mut seccomp = bulwark_ipc::msg::SeccompMode::Kill;
    let mut i = 0;
    if args.len() == 1 && !args[0].starts_with("--") {
        return Ok(RunOptions {
            config: PathBuf::from(&args[0]),
            directives,
            libexec_dir,
            sandbox_dir,
            on_security_event,
            seccomp,
        });
    }
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--config" => {
                let v = value(args, &mut i, a)?;
                if config.replace(PathBuf::from(v)).is_some() {
                    return Err(CliError::DuplicateConfig);
                }
            }
            "--libexec-dir" => libexec_dir = Some(PathBuf::from(value(args, &mut i, a)?)),
            "--sandbox-dir" => sandbox_dir = Some(PathBuf::from(value(args, &mut i, a)?)),
            "--seccomp" => {
                let v = value(args, &mut i, a)?;
                seccomp = bulwark_ipc::msg::SeccompMode::parse(&v).ok_or(CliError::BadValue {
                    option: a.into(),
                    value: v,
                    why: "expected kill, trap, log or off",
                })?;
            }
            "--on-security-event" => {
                let v = value(args, &mut i, a)?;
                on_security_event = match v.as_str() {
                    "exit" => SecurityEventPolicy::Exit,
                    "restart" => SecurityEventPolicy::Restart,
                    _ => {
                        return Err(CliError::BadValue {
                            option: a.into(),
                            value: v,
                            why: "expected exit or restart",
                        })
                    }
                };
            }
            _ if a.starts_with("--") && a.len() > 2 => {
                // An OpenVPN directive: the name and every following non-option argument.
                directives.push(a.to_owned());
                while i + 1 < args.len() && !args[i + 1].starts_with("--") {
                    i += 1;
                    directives.push(args[i].clone());
                }
            }
            _ => return Err(CliError::Unexpected(a.to_owned())),
        }
        i += 1;
    }
    let config = config.ok_or(CliError::NoConfig)?;
    Ok(RunOptions {
        config,
        directives,
        libexec_dir,
        sandbox_dir,
        on_security_event,
        seccomp,
    })
}

fn parse_init(args: &[String]) -> Result<Command, CliError> {
    let mut dir = None;
    let mut out = InitArgs {
        dir: PathBuf::new(),
        key: bulwark_pki::KeyKind::EcP256,
        clients: 1,
        tcp: false,
        port: 1194,
        wrap: bulwark_pki::WrapMode::TlsCrypt,
    };
    let bad = |option: &str, value: String, why| CliError::BadValue {
        option: option.into(),
        value,
        why,
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--ec" => out.key = bulwark_pki::KeyKind::EcP256,
            "--rsa" => {
                let v = value(args, &mut i, a)?;
                out.key = match v.as_str() {
                    "2048" => bulwark_pki::KeyKind::Rsa2048,
                    "3072" => bulwark_pki::KeyKind::Rsa3072,
                    _ => return Err(bad(a, v, "expected 2048 or 3072")),
                };
            }
            "--clients" => {
                let v = value(args, &mut i, a)?;
                out.clients = match v.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => return Err(bad(a, v, "expected a number from 1 to 1000")),
                };
            }
            "--proto" => {
                let v = value(args, &mut i, a)?;
                out.tcp = match v.as_str() {
                    "udp" => false,
                    "tcp" => true,
                    _ => return Err(bad(a, v, "expected udp or tcp")),
                };
            }
            "--port" => {
                let v = value(args, &mut i, a)?;
                out.port = match v.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(bad(a, v, "expected a port from 1 to 65535")),
                };
            }
            "--wrap" => {
                let v = value(args, &mut i, a)?;
                out.wrap = match v.as_str() {
                    "tls-crypt" => bulwark_pki::WrapMode::TlsCrypt,
                    "tls-auth" => bulwark_pki::WrapMode::TlsAuth,
                    "none" => bulwark_pki::WrapMode::None,
                    _ => return Err(bad(a, v, "expected tls-crypt, tls-auth or none")),
                };
            }
            _ if !a.starts_with('-') && dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(CliError::Unexpected(a.to_owned())),
        }
        i += 1;
    }
    out.dir = dir.ok_or_else(|| CliError::MissingValue("init DIR".into()))?;
    Ok(Command::Init(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn run_with_directives() {
        let c = parse(&v(&[
            "--config",
            "s.conf",
            "--verb",
            "4",
            "--push",
            "route 1.2.3.0 255.255.255.0",
            "--persist-tun",
        ]))
        .unwrap();
        let Command::Run(r) = c else { panic!() };
        assert_eq!(r.config, PathBuf::from("s.conf"));
        assert_eq!(
            r.directives,
            v(&[
                "--verb",
                "4",
                "--push",
                "route 1.2.3.0 255.255.255.0",
                "--persist-tun"
            ])
        );
        assert_eq!(r.on_security_event, SecurityEventPolicy::Exit);
    }

    #[test]
    fn bare_file_and_flags() {
        assert!(matches!(parse(&v(&["x.conf"])), Ok(Command::Run(_))));
        assert_eq!(parse(&v(&["--version"])), Ok(Command::Version));
        assert_eq!(parse(&v(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(&v(&[])), Err(CliError::NoConfig));
        assert_eq!(parse(&v(&["--verb", "3"])), Err(CliError::NoConfig));
        let Ok(Command::Run(r)) = parse(&v(&[
            "--config",
            "a",
            "--libexec-dir",
            "/x",
            "--on-security-event",
            "restart",
        ])) else {
            panic!()
        };
        assert_eq!(r.libexec_dir, Some(PathBuf::from("/x")));
        assert_eq!(r.on_security_event, SecurityEventPolicy::Restart);
        assert!(parse(&v(&["--config", "a", "--on-security-event", "maybe"])).is_err());
        assert_eq!(
            parse(&v(&["--config", "a", "--config", "b"])),
            Err(CliError::DuplicateConfig)
        );
    }

    #[test]
    fn init_args() {
        let Ok(Command::Init(i)) = parse(&v(&[
            "init",
            "d",
            "--rsa",
            "3072",
            "--clients",
            "3",
            "--proto",
            "tcp",
            "--port",
            "443",
            "--wrap",
            "none",
        ])) else {
            panic!()
        };
        assert_eq!(i.dir, PathBuf::from("d"));
        assert_eq!(i.key, bulwark_pki::KeyKind::Rsa3072);
        assert_eq!((i.clients, i.tcp, i.port), (3, true, 443));
        assert_eq!(i.wrap, bulwark_pki::WrapMode::None);
        assert!(parse(&v(&["init"])).is_err());
        assert!(parse(&v(&["init", "d", "--rsa", "1024"])).is_err());
        assert!(parse(&v(&["init", "d", "--port", "0"])).is_err());
    }

    #[test]
    fn check_config() {
        let c = parse(&v(&["check-config", "--config", "f", "--port", "1"])).unwrap();
        assert_eq!(
            c,
            Command::CheckConfig {
                config: "f".into(),
                directives: v(&["--port", "1"])
            }
        );
    }
}
