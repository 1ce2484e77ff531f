//! The worker's only unsafe code: registering an owned descriptor with the tokio reactor.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use tokio::io::unix::AsyncFd;

/// Registers the TUN device (an owned `File`) with the reactor.
pub fn register_file(file: File) -> io::Result<AsyncFd<File>> {
    // SAFETY: tokio requires that the descriptor stays open and is not registered twice while the
    // `AsyncFd` lives. The `File` is moved into the `AsyncFd`, which owns it and closes it only after
    // deregistering, and nothing else holds this descriptor in the worker.
    unsafe { AsyncFd::register(file) }.map_err(|e| e.into())
}
