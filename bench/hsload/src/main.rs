#![deny(unsafe_code)]
//! `bulwark-hsload`: a handshake load generator for OpenVPN 2.6 servers (the stock `openvpn` and
//! Bulwark), built on Bulwark's sans-IO protocol engine (`bulwark_worker::proto`) in client role.
//!
//! Why: `bench/run.sh --handshakes` with stock `openvpn` clients measures mostly the clients (~40–50 ms
//! of CPU each for process start, TUN set-up and their own TLS); a session here costs a small fraction
//! of a server's handshake, so the server becomes the bottleneck. See `bench/README.md`.
//!
//! With `--hold` (and `--data-pps`) it is also a many-client data load: every completed session stays
//! open for a while and sends encrypted inner packets at a paced total rate (see `bench/threads.sh`).
//!
//! Modules: `cli` (options), `tls` (rustls client configuration), `session` (one client session,
//! sans-IO), `load` (inner packets and pacing of the data load), `runner` (the poll loop and the
//! report).

mod cli;
mod load;
mod runner;
mod session;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bulwark_worker::proto::wrap::{StaticKey, WrapError};

/// Errors that stop the program before or during the run.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Cli(#[from] cli::CliError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("{path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    ParseKey {
        path: PathBuf,
        #[source]
        source: WrapError,
    },
    #[error("session set-up: {0}")]
    Profile(#[from] session::SessionError),
    #[error(transparent)]
    Run(#[from] runner::RunError),
    #[error("cannot raise the open-file limit to {want}: {source}")]
    FileLimit {
        want: u64,
        #[source]
        source: nix::Error,
    },
}

/// Raises the soft open-file limit so that every session can have its socket (sessions in their
/// handshake plus those waiting for the ACK of their EXIT).
fn raise_file_limit(want: u64) -> Result<(), MainError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|source| MainError::FileLimit { want, source })?;
    if soft >= want {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard)
        .map_err(|source| MainError::FileLimit { want, source })
}

fn real_main() -> Result<(), MainError> {
    let args = cli::parse(std::env::args().skip(1))?;
    let tls = tls::client_config(&args.ca, &args.cert, &args.key)?;
    let wrap_key = match &args.tls_crypt {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| MainError::ReadKey {
                path: path.clone(),
                source,
            })?;
            Some(
                StaticKey::parse(&text).map_err(|source| MainError::ParseKey {
                    path: path.clone(),
                    source,
                })?,
            )
        }
    };
    // held sessions keep their sockets: with --hold up to --count of them at once
    let held = if args.hold.is_zero() { 0 } else { args.count };
    raise_file_limit((args.concurrency as u64 * 8).max(held) + 256)?;
    let profile = Arc::new(session::Profile::new(
        tls,
        tls::server_name(&args.server),
        args.server.is_ipv6(),
        wrap_key,
        args.push_request_tick,
        args.exit_wait,
        args.hold,
    )?);
    let report = runner::run(&args, &profile)?;
    println!("{}", report.to_json(&args));
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(MainError::Cli(cli::CliError::Help)) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Err(e @ MainError::Cli(_)) => {
            eprintln!("bulwark-hsload: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("bulwark-hsload: {e}");
            ExitCode::FAILURE
        }
    }
}
