//! `/dev/net/tun` ioctls: `TUNSETIFF` (create or attach a TUN interface), `TUNSETPERSIST` and
//! `TUNSETOFFLOAD`.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// `IFF_TUN`: layer-3 device.
pub const IFF_TUN: i16 = 0x0001;
/// `IFF_NO_PI`: no packet-information header.
pub const IFF_NO_PI: i16 = 0x1000;
/// `IFF_VNET_HDR`: every read and write carries a virtio-net header.
pub const IFF_VNET_HDR: i16 = 0x4000;
/// `IFF_MULTI_QUEUE`: every `TUNSETIFF` with the device's name attaches one more queue.
pub const IFF_MULTI_QUEUE: i16 = 0x0100;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUN_F_CSUM`: userspace accepts packets with a partial checksum.
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUN_F_TSO4`: TCP/IPv4 super-packets.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUN_F_TSO6`: TCP/IPv6 super-packets.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUN_F_TSO_ECN`: TCP super-packets with ECN (CWR).
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// `TUN_F_USO4`: UDP/IPv4 super-packets (Linux 6.2).
pub const TUN_F_USO4: u32 = 0x20;
/// `TUN_F_USO6`: UDP/IPv6 super-packets (Linux 6.2).
pub const TUN_F_USO6: u32 = 0x40;

/// `struct ifreq` restricted to the name and flags members (40 bytes like the kernel's).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// Issues `TUNSETIFF` with `name` (may be a pattern such as `tun%d` or empty) and `flags`; returns the
/// name the kernel gave the interface.
pub fn tun_set_iff(fd: BorrowedFd<'_>, name: &str, flags: i16) -> std::io::Result<String> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `req` is a properly sized (40-byte) `struct ifreq` image that lives across the call; the
    // kernel reads the name and flags and writes back the resulting name within the same buffer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, std::ptr::addr_of_mut!(req)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = req
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(libc::IFNAMSIZ);
    String::from_utf8(req.name[..end].to_vec())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Issues `TUNSETPERSIST` (keep the interface after the last fd closes, or not).
pub fn tun_set_persist(fd: BorrowedFd<'_>, persist: bool) -> std::io::Result<()> {
    let arg = libc::c_ulong::from(persist);
    // SAFETY: TUNSETPERSIST takes its argument by value (an integer), no pointer is passed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, arg) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Issues `TUNSETOFFLOAD` with the `TUN_F_*` bits userspace can handle.
pub fn tun_set_offload(fd: BorrowedFd<'_>, flags: u32) -> std::io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an integer), no pointer is passed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_layout() {
        assert_eq!(std::mem::size_of::<super::IfReqFlags>(), 40);
    }
}
