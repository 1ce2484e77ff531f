#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
//! The `bulwark` parent process: configuration, TUN and netlink, sockets, spawning and supervising
//! the sandboxed children, signals, sd_notify and the log sink.
//!
//! Modules: [`settings`] (what the parent acts on, from the config), [`tun`] + [`netlink`] (the TUN
//! device and its addresses/routes), [`sockets`] (transport and management listeners), [`sys`] (the
//! only unsafe code: TUN ioctls, fork + exec-by-fd).

pub mod children;
pub mod cli;
pub mod config_input;
pub mod initcmd;
pub mod logging;
pub mod netlink;
pub mod notify;
pub mod run;
pub mod settings;
pub mod signer;
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
