//! Raw socket plumbing: the only module of this crate that contains `unsafe` code.
//!
//! API (crate-internal; only [`SysError`] is public):
//! - `recv_packet`: one `recvmsg(2)` with `MSG_CMSG_CLOEXEC | MSG_TRUNC`; every file descriptor
//!   the kernel installed is wrapped into an `OwnedFd` before anything else is looked at, so it is
//!   closed on every error path (also when the control data was truncated).
//! - `send_packet`: one `sendmsg(2)` with the fds as a single `SCM_RIGHTS` control message.
//! - `claim_inherited_fd`: take ownership of a descriptor inherited across `exec` at a fixed
//!   number, at most once per process.
//! - `place_fds_on_exec`: make a `Command` put descriptors on fixed numbers in the child
//!   between `fork` and `exec` (a `pre_exec` hook that only calls `fcntl`/`dup2`).
//! - `register_async`: hand an owned socket to the tokio reactor.
//! - `getsockopt_int`: read an integer `SOL_SOCKET` option (`SO_DOMAIN`, `SO_PROTOCOL`, ...)
//!   that nix has no typed wrapper for.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io::IoSlice;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// Linux's `SCM_MAX_FD`: the most descriptors one `SCM_RIGHTS` message can carry. The receive
/// buffer has room for this many so that a peer that sends too many is seen (and its fds closed)
/// as a count mismatch rather than silently truncated by the kernel.
const SCM_MAX_FD: usize = 253;

/// Size of the control buffer in `u64` words (8-byte aligned as `cmsghdr` requires).
const CMSG_WORDS: usize = cmsg_space_for_fds(SCM_MAX_FD).div_ceil(8);

const fn cmsg_space_for_fds(n: usize) -> usize {
    // CMSG_SPACE computed by hand so that it can be a const without `unsafe`:
    // header (aligned) + data (aligned to size_of::<usize>()).
    let align = size_of::<usize>();
    let hdr = (size_of::<libc::cmsghdr>() + align - 1) & !(align - 1);
    let data = (n * size_of::<libc::c_int>() + align - 1) & !(align - 1);
    hdr + data
}

/// A failed system call in this module.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// `recvmsg(2)` failed.
    #[error("recvmsg on IPC socket")]
    Recv(#[source] Errno),
    /// `sendmsg(2)` failed.
    #[error("sendmsg on IPC socket")]
    Send(#[source] Errno),
    /// `sendmsg(2)` sent fewer bytes than the packet holds (cannot happen on `SOCK_SEQPACKET`).
    #[error("sendmsg sent {sent} of {len} bytes")]
    ShortSend {
        /// Bytes the kernel accepted.
        sent: usize,
        /// Bytes in the packet.
        len: usize,
    },
    /// The inherited descriptor number is not open in this process.
    #[error("inherited fd {fd} is not open")]
    NotOpen {
        /// The descriptor number.
        fd: RawFd,
        /// The `fcntl(F_GETFD)` error.
        #[source]
        source: Errno,
    },
    /// The inherited descriptor was already claimed in this process.
    #[error("inherited fd {fd} was already claimed")]
    AlreadyClaimed {
        /// The descriptor number.
        fd: RawFd,
    },
    /// The inherited descriptor number is one of stdin/stdout/stderr or negative.
    #[error("fd {fd} cannot be claimed as an inherited IPC descriptor (must be >= 3)")]
    ReservedFd {
        /// The descriptor number.
        fd: RawFd,
    },
    /// `getsockopt(2)` failed.
    #[error("getsockopt(SOL_SOCKET, {name})")]
    GetSockOpt {
        /// The option number.
        name: libc::c_int,
        /// The error.
        #[source]
        source: Errno,
    },
}

/// The result of one [`recv_packet`].
#[derive(Debug)]
pub(crate) struct RawPacket {
    /// The real length of the packet (may exceed the buffer if `truncated`).
    pub len: usize,
    /// `MSG_TRUNC`: the packet did not fit into the buffer.
    pub truncated: bool,
    /// `MSG_CTRUNC`: the control data did not fit (some fds were discarded by the kernel).
    pub control_truncated: bool,
    /// A control message other than `SCM_RIGHTS` (level, type), if any was present.
    pub foreign_control: Option<(libc::c_int, libc::c_int)>,
    /// Every descriptor received, already owned.
    pub fds: Vec<OwnedFd>,
}

/// Receive one packet into `buf`. `nonblocking` adds `MSG_DONTWAIT`.
pub(crate) fn recv_packet(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> Result<RawPacket, SysError> {
    let mut control = [0u64; CMSG_WORDS];
    let control_bytes = CMSG_WORDS * size_of::<u64>();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = control_bytes as _;
    let mut flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `hdr` points at one iovec describing `buf` (valid, writable, len bytes) and at
    // `control` (valid, writable, control_bytes bytes, 8-byte aligned); both outlive the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut hdr, flags) };
    if n < 0 {
        return Err(SysError::Recv(Errno::last()));
    }
    // n >= 0 checked above
    let len = n as usize;
    let mut fds = Vec::new();
    let mut foreign_control = None;
    let base = control.as_ptr() as usize;
    let used = (hdr.msg_controllen as usize).min(control_bytes);
    // INVARIANT: every fd in every SCM_RIGHTS message is turned into an OwnedFd in this loop,
    // before any check that could return early, so no received descriptor can leak.
    // SAFETY: `hdr` was filled in by a successful recvmsg; CMSG_FIRSTHDR only reads msg_control
    // and msg_controllen and returns null or a pointer inside `control`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        let offset = cmsg as usize - base;
        if offset + size_of::<libc::cmsghdr>() > used {
            break;
        }
        // SAFETY: the header lies entirely within the `used` bytes of `control` (checked above);
        // read_unaligned copes with any alignment.
        let header: libc::cmsghdr = unsafe { std::ptr::read_unaligned(cmsg) };
        // SAFETY: CMSG_DATA is pointer arithmetic on a header that lies within `control`.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let data_offset = data as usize - base;
        let cmsg_len = header.cmsg_len as usize;
        let hdr_part = data_offset - offset;
        if cmsg_len < hdr_part || offset + cmsg_len > used {
            // malformed or cut off: the kernel never produces this, stop walking
            break;
        }
        let data_len = cmsg_len - hdr_part;
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            let count = data_len / size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: `data + i*4 .. +4` lies within this control message's data, which lies
                // within `used` bytes of `control` (checked above).
                let raw: libc::c_int =
                    unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: the kernel just installed `raw` in our table for this SCM_RIGHTS message;
                // nothing else refers to it, so this OwnedFd is its sole owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        } else if foreign_control.is_none() {
            foreign_control = Some((header.cmsg_level, header.cmsg_type));
        }
        // SAFETY: CMSG_NXTHDR reads `hdr` and the current header (both valid) and returns null or a
        // pointer inside msg_control; it is bounds-checked again at the top of the loop.
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    Ok(RawPacket {
        len,
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        control_truncated: hdr.msg_flags & libc::MSG_CTRUNC != 0,
        foreign_control,
        fds,
    })
}

/// Send `packet` as one datagram, with `fds` (if any) as one `SCM_RIGHTS` control message.
/// Uses `MSG_NOSIGNAL` (a closed peer is `EPIPE`, never `SIGPIPE`); `nonblocking` adds
/// `MSG_DONTWAIT`.
pub(crate) fn send_packet(
    fd: BorrowedFd<'_>,
    packet: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> Result<(), SysError> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let iov = [IoSlice::new(packet)];
    let sent =
        sendmsg::<UnixAddr>(fd.as_raw_fd(), &iov, cmsgs, flags, None).map_err(SysError::Send)?;
    if sent != packet.len() {
        return Err(SysError::ShortSend {
            sent,
            len: packet.len(),
        });
    }
    Ok(())
}

static CLAIMED: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// Take ownership of descriptor `fd`, inherited from the parent at a fixed number.
///
/// Refuses fds 0..=2, descriptors that are not open, and a second claim of the same number in
/// this process (so two `OwnedFd`s never own one descriptor through this function).
pub(crate) fn claim_inherited_fd(fd: RawFd) -> Result<OwnedFd, SysError> {
    if fd < 3 {
        return Err(SysError::ReservedFd { fd });
    }
    let mut claimed = CLAIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let set = claimed.get_or_insert_with(HashSet::new);
    if set.contains(&fd) {
        return Err(SysError::AlreadyClaimed { fd });
    }
    // SAFETY: F_GETFD only queries the descriptor flags of `fd`; it touches no memory.
    let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if rc < 0 {
        return Err(SysError::NotOpen {
            fd,
            source: Errno::last(),
        });
    }
    set.insert(fd);
    // SAFETY: `fd` is open (F_GETFD succeeded), is not stdio, and has not been claimed before in
    // this process; by the fixed-fd-layout contract (see `layout`) nothing else in the child owns
    // it, so the returned OwnedFd is its sole owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Register a `pre_exec` hook on `cmd` that, in the child, places each `(fd, target)` of
/// `entries` on descriptor number `target` (without close-on-exec, so it survives `exec`).
///
/// All sources are first duplicated above the highest target (close-on-exec, so the temporaries
/// vanish at `exec`), then `dup2`'d onto their targets: a source that sits on another entry's
/// target number is never clobbered before it is copied. The hook owns `entries`, so the
/// descriptors stay open for as long as `cmd` lives; drop `cmd` after spawning to close the
/// parent's copies. Targets must be distinct and >= 3 (checked by the caller).
pub(crate) fn place_fds_on_exec(cmd: &mut std::process::Command, entries: Vec<(OwnedFd, RawFd)>) {
    use std::os::unix::process::CommandExt;
    let above = entries.iter().map(|(_, t)| *t).max().unwrap_or(2) + 1;
    let mut temps: Vec<RawFd> = vec![-1; entries.len()];
    let hook = move || -> std::io::Result<()> {
        // Runs in the forked child: only async-signal-safe calls, no allocation.
        for (slot, (fd, _)) in temps.iter_mut().zip(entries.iter()) {
            // SAFETY: F_DUPFD_CLOEXEC only duplicates an open descriptor (owned by `entries`)
            // to the lowest free number >= `above`; it touches no memory.
            let t = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above) };
            if t < 0 {
                return Err(std::io::Error::last_os_error());
            }
            *slot = t;
        }
        for (tmp, (_, target)) in temps.iter().zip(entries.iter()) {
            // SAFETY: dup2 only changes the child's descriptor table; `tmp` is open (created
            // above) and `target` is a number the caller reserved for this descriptor.
            if unsafe { libc::dup2(*tmp, *target) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec in the child; it calls only fcntl and dup2
    // (async-signal-safe), allocates nothing, takes no locks, and writes only into its own
    // pre-allocated `temps`.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Register `fd` with the current tokio reactor (the caller has checked that a runtime exists).
pub(crate) fn register_async(
    fd: OwnedFd,
) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, std::io::Error> {
    // SAFETY: an OwnedFd is a valid open descriptor that stays open and refers to the same file
    // description until it is dropped, and its as_raw_fd always returns the same number; the
    // AsyncFd owns it from here on, so nothing else can close or replace it.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Read an `int`-valued `SOL_SOCKET` option.
pub(crate) fn getsockopt_int(
    fd: BorrowedFd<'_>,
    name: libc::c_int,
) -> Result<libc::c_int, SysError> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid, writable and live across the call; `len` tells the
    // kernel the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(SysError::GetSockOpt {
            name,
            source: Errno::last(),
        });
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    #[test]
    fn cmsg_space_matches_libc() {
        for n in [0usize, 1, 2, 3, 16, SCM_MAX_FD] {
            // SAFETY: CMSG_SPACE is pure arithmetic.
            let expected = unsafe { libc::CMSG_SPACE((n * 4) as u32) } as usize;
            assert_eq!(cmsg_space_for_fds(n), expected, "n={n}");
        }
    }

    #[test]
    fn packets_and_fds_round_trip() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_packet(a.as_fd(), b"hello", &[r.as_fd(), w.as_fd()], false).unwrap();
        let mut buf = [0u8; 16];
        let p = recv_packet(b.as_fd(), &mut buf, false).unwrap();
        assert_eq!(p.len, 5);
        assert!(!p.truncated && !p.control_truncated && p.foreign_control.is_none());
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(p.fds.len(), 2);
        // received fds carry FD_CLOEXEC
        for fd in &p.fds {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
        // too small a buffer reports MSG_TRUNC with the real length
        send_packet(a.as_fd(), &[7u8; 40], &[], false).unwrap();
        let p = recv_packet(b.as_fd(), &mut buf, false).unwrap();
        assert!(p.truncated);
        assert_eq!(p.len, 40);
        // nonblocking on an empty queue
        assert!(matches!(
            recv_packet(b.as_fd(), &mut buf, true),
            Err(SysError::Recv(Errno::EAGAIN))
        ));
        drop(a);
        let p = recv_packet(b.as_fd(), &mut buf, false).unwrap();
        assert_eq!(p.len, 0);
    }

    #[test]
    fn claim_refuses_stdio_closed_and_double_claims() {
        assert!(matches!(
            claim_inherited_fd(1),
            Err(SysError::ReservedFd { .. })
        ));
        let (r, w) = nix::unistd::pipe().unwrap();
        // claimed numbers stay claimed for the life of the process: use a number no other test uses
        let raw = 701;
        // SAFETY: 701 is not used by anything else in this test process; dup2 only touches the fd table.
        assert_eq!(unsafe { libc::dup2(r.as_raw_fd(), raw) }, raw);
        drop(r);
        let owned = claim_inherited_fd(raw).unwrap();
        assert!(matches!(
            claim_inherited_fd(raw),
            Err(SysError::AlreadyClaimed { .. })
        ));
        drop(owned);
        drop(w);
        // a number far above anything open
        assert!(matches!(
            claim_inherited_fd(1_000_000),
            Err(SysError::NotOpen { .. })
        ));
    }
}
