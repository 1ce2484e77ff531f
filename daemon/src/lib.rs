#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
//! The `bulwark` parent process: configuration, TUN and netlink, sockets, spawning and supervising
//! the sandboxed children, signals, sd_notify and the log sink.
//!
//! Modules: [`settings`] (what the parent acts on, from the config), [`tun`] + [`netlink`] (the TUN
//! device and its addresses/routes), [`sockets`] (transport and management listeners), [`sys`] (the
//! only unsafe code: TUN ioctls, fork + exec-by-fd).

pub mod netlink;
pub mod settings;
pub mod signer;
pub mod sockets;
pub mod sys;
pub mod tun;
