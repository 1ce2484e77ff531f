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

static mut SIGSYS_ROLE_WORKER: bool = true;

extern "C" fn sigsys_reporter(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // Async-signal-safe: fixed buffers, write(2) and _exit(2) only, no allocation.
    let mut buf = [0u8; 96];
    let mut n = 0;
    // SAFETY: written once before the handler is installed, only read here.
    let prefix: &[u8] = if unsafe { SIGSYS_ROLE_WORKER } {
        b"bulwark-worker: seccomp violation: forbidden syscall "
    } else {
        b"bulwark-mgmt: seccomp violation: forbidden syscall "
    };
    for &b in prefix {
        buf[n] = b;
        n += 1;
    }
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; for SIGSYS the syscall number
    // is the int at byte offset 24 (after si_signo, si_errno, si_code, padding and si_call_addr).
    let nr = unsafe { *((info as *const u8).add(24) as *const libc::c_int) };
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut v = nr.unsigned_abs();
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    buf[n] = b'\n';
    n += 1;
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is valid for n bytes.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::_exit(159);
    }
}

/// Installs the SIGSYS handler of seccomp trap mode (reports the syscall number and role, exits 159).
pub(crate) fn install_sigsys_reporter(worker: bool) -> Result<(), nix::Error> {
    // SAFETY: single write before the handler exists; no concurrent reader yet.
    unsafe {
        SIGSYS_ROLE_WORKER = worker;
    }
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::SigAction(sigsys_reporter),
        nix::sys::signal::SaFlags::SA_SIGINFO,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGSYS, &action) }.map(|_| ())
}
