//! The worker's unsafe registration code: registering owned descriptors with the tokio reactor.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::net::UdpSocket;

use tokio::io::unix::AsyncFd;

/// Registers the TUN device (an owned `File`) with the reactor.
pub fn register_file(file: File) -> io::Result<AsyncFd<File>> {
    // SAFETY: tokio requires that the descriptor stays open and is not registered twice while the
    // `AsyncFd` lives. The `File` is moved into the `AsyncFd`, which owns it and closes it only after
    // deregistering, and nothing else holds this descriptor in the worker.
    unsafe { AsyncFd::register(file) }.map_err(|e| e.into())
}

/// Registers the UDP transport socket (an owned, non-blocking `UdpSocket`) with the reactor, so the
/// driver can use `recvmmsg`/`sendmmsg` on it under readiness guards.
pub fn register_udp(sock: UdpSocket) -> io::Result<AsyncFd<UdpSocket>> {
    // SAFETY: as for `register_file`: the socket is moved into the `AsyncFd`, which owns the descriptor
    // for its whole lifetime (`UdpSocket::as_raw_fd` always returns that same descriptor), and nothing
    // else in the worker holds or registers it.
    unsafe { AsyncFd::register(sock) }.map_err(|e| e.into())
}
