//! Sans-IO OpenVPN protocol engine.
//!
//! Everything in this module is deterministic: it takes bytes and a time value in and returns bytes and
//! timer deadlines out. It performs no I/O, reads no clock and draws no randomness of its own (random
//! bytes are passed in by the caller). See `docs/architecture.md`.

pub mod cookie;
pub mod data;
pub mod io;
pub mod keys;
pub mod km2;
pub mod magic;
pub mod packet;
pub mod peers;
pub mod pool;
pub mod push;
pub mod reliable;
pub mod replay;
pub mod server;
pub mod session;
pub mod tls;
pub mod wrap;
