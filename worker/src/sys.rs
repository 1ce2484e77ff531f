//! The worker's unsafe system glue: registering owned descriptors with the tokio reactor, and asking
//! the TUN descriptor whether it carries virtio-net headers.
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

/// `_IOR('T', 210, unsigned int)`: read the TUN queue's `ifreq` flags.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// `_IOR('T', 215, int)`: read the virtio-net header size.
const TUNGETVNETHDRSZ: libc::c_ulong = 0x8004_54d7;
/// `IFF_VNET_HDR`: reads and writes carry a virtio-net header.
const IFF_VNET_HDR: i16 = 0x4000;

/// `struct ifreq` restricted to the name and flags members (40 bytes like the kernel's).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// Whether the TUN descriptor carries virtio-net headers (the parent opened it with `IFF_VNET_HDR`),
/// and their size.
pub fn tun_vnet_hdr(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: TUNGETIFF writes a `struct ifreq` (40 bytes) into the buffer passed; `req` is a 40-byte
    // `repr(C)` image of it that lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, std::ptr::addr_of_mut!(req)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if req.flags & IFF_VNET_HDR == 0 {
        return Ok(None);
    }
    let mut size: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one `int` to the pointer passed, which points at `size`.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            TUNGETVNETHDRSZ,
            std::ptr::addr_of_mut!(size),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(usize::try_from(size).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_layout() {
        assert_eq!(std::mem::size_of::<super::IfReqFlags>(), 40);
    }
}
