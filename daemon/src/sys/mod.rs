#![allow(unsafe_code)]
//! The daemon's unsafe system-call wrappers: TUN ioctls and fork + exec-by-fd.
//!
//! Every `unsafe` block of the daemon crate lives under this module, each with a `// SAFETY:` comment.

pub mod spawn;
pub mod tun;
