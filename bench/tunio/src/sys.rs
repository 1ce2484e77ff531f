//! The only unsafe code of the bench: the two TUN ioctls nix does not wrap (`TUNSETIFF`,
//! `TUNSETOFFLOAD`, the same calls and constants as `daemon/src/sys/tun.rs`), and tun-rs'
//! `SyncDevice::from_fd` (an `unsafe fn`), called once to report whether tun-rs adopts a descriptor
//! opened with `IFF_VNET_HDR` — the way Bulwark's privileged parent hands the TUN to the worker.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `IFF_TUN`: layer-3 device.
pub const IFF_TUN: i16 = 0x0001;
/// `IFF_NO_PI`: no packet-information header.
pub const IFF_NO_PI: i16 = 0x1000;
/// `IFF_VNET_HDR`: every read and write carries a virtio-net header.
pub const IFF_VNET_HDR: i16 = 0x4000;
/// `TUN_F_CSUM`.
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUN_F_TSO4`.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUN_F_TSO6`.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUN_F_TSO_ECN`.
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// `TUN_F_USO4` (Linux 6.2).
pub const TUN_F_USO4: u32 = 0x20;
/// `TUN_F_USO6` (Linux 6.2).
pub const TUN_F_USO6: u32 = 0x40;

/// `struct ifreq` restricted to the name and flags members (40 bytes like the kernel's).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// `TUNSETIFF` with `name` and `flags` on a freshly opened `/dev/net/tun` descriptor.
pub fn tun_set_iff(fd: BorrowedFd<'_>, name: &str, flags: i16) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `req` is a 40-byte `struct ifreq` image that lives across the call; the kernel reads
    // the name and flags and writes back the name within the same buffer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, std::ptr::addr_of_mut!(req)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TUNSETOFFLOAD` with the `TUN_F_*` bits userspace handles.
pub fn tun_set_offload(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an integer), no pointer is passed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Hands `fd` (an attached TUN descriptor) to tun-rs' `SyncDevice::from_fd`; tun-rs owns it from
/// then on (it closes it when the device, or the error path, drops it).
pub fn tunrs_adopt(fd: OwnedFd) -> io::Result<tun_rs::SyncDevice> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` is a valid, open descriptor whose ownership is transferred here (taken out of
    // the OwnedFd, so nothing else closes it); from_fd's contract asks for IFF_NO_PI framing, which
    // every descriptor this bench opens has. Its IFF_VNET_HDR is exactly what is being probed: tun-rs
    // checks it itself (TUNGETIFF) and refuses before any read or write.
    unsafe { tun_rs::SyncDevice::from_fd(raw) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_layout() {
        assert_eq!(std::mem::size_of::<super::IfReqFlags>(), 40);
    }
}
