#![allow(unsafe_code)]
//! Thin wrappers over the few system calls the `nix` and `caps` crates do not cover.
//!
//! Every `unsafe` block in the policy crate lives here, each with a `// SAFETY:` comment.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `close_range(first, last, 0)`: closes every descriptor in `first..=last`.
pub(crate) fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers and only closes descriptors of this process; callers
    // guarantee no live Rust object owns a descriptor in the range (they own the keep-list logic).
    let rc = unsafe { libc::close_range(first, last, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `prctl(PR_CAPBSET_DROP, cap)`. Returns `Ok(false)` when the kernel does not know the capability.
pub(crate) fn capbset_drop(cap: u32) -> io::Result<bool> {
    // SAFETY: PR_CAPBSET_DROP takes an integer capability index and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// `getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS)`: the supplementary groups of the peer of a unix socket.
pub(crate) fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        // SAFETY: the buffer pointer and `len` describe a live, writable allocation of exactly `len`
        // bytes; the kernel writes at most `len` bytes and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed =
            usize::try_from(len).unwrap_or(usize::MAX) / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed.min(groups.len()));
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= 65_536 {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

/// `prctl(PR_CAPBSET_READ, cap)`: `None` when the kernel does not know the capability.
pub(crate) fn capbset_read(cap: u32) -> io::Result<Option<bool>> {
    // SAFETY: PR_CAPBSET_READ takes an integer capability index and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    match rc {
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        _ => {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}
