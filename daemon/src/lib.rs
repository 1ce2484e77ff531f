#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
//! The `bulwark` parent process: configuration, TUN and netlink, sockets, spawning and supervising
//! the sandboxed children, signals, sd_notify and the log sink.
//!
//! Entry point: [`run::main_with_args`] (the `bulwark` binary only forwards its arguments).
//!
//! Modules:
//! - [`cli`]: command line (`--config FILE [--directive args]`, `check-config`, `init`, `--help`,
//!   `--version`, Bulwark's own `--libexec-dir`/`--sandbox-dir`/`--on-security-event`).
//! - [`config_input`]: the one place the typed OpenVPN configuration becomes [`settings::Settings`].
//! - [`run`]: start-up sequence (ordering invariants), supervision loop, signals, shutdown.
//! - [`children`]: child binaries opened at start, fork + exec by fd, the start-up protocol.
//! - [`supervise`]: restart budget/backoff and exit classification (security events).
//! - [`tun`] + [`netlink`]: the TUN device and its addresses/routes (rtnetlink, no `ip` subprocess).
//! - [`sockets`]: transport socket and management listeners.
//! - [`logging`]: OpenVPN-style log lines to stderr / file / syslog; children's records re-emitted.
//! - [`notify`] sends the systemd readiness notification (`READY=1`).
//! - [`initcmd`]: `bulwark init`.
//! - [`signer`]: the worker's signing requests (owned by the TLS engineer).
//! - [`sys`]: the only unsafe code (TUN ioctls, fork + execveat, daemonize, local time offset).
//!
//! Invariants: the parent treats its children as untrusted (every unexpected message is a
//! protocol violation: the child is killed and the event logged as a security event); the TUN
//! device lives in the parent for the daemon's lifetime, so a worker crash never removes it.

pub mod audit;
pub mod children;
pub mod cli;
pub mod client_env;
pub mod client_hooks;
pub mod config_input;
pub mod engine;
pub mod initcmd;
pub mod logging;
pub mod mgmt_setup;
pub mod mute;
pub mod netlink;
pub mod notify;
pub mod reload_plan;
pub mod router;
pub mod run;
pub mod settings;
pub mod signer;
pub mod signer_service;
pub mod sockets;
pub mod supervise;
pub mod sys;
pub mod tun;

/// Renders an error and its whole `source()` chain on one line (`a: b: c`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
