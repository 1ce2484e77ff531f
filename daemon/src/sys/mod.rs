#![allow(unsafe_code)]
//! The daemon's unsafe system-call wrappers: TUN ioctls and fork + exec-by-fd.
//!
//! Every `unsafe` block of the daemon crate lives under this module, each with a `// SAFETY:` comment.

pub mod spawn;
pub mod tun;

/// The local time zone's current UTC offset in seconds (`localtime_r(now).tm_gmtoff`); `None` if the
/// C library cannot tell. Call while single-threaded (the C library's time-zone state is global).
pub fn local_utc_offset_seconds() -> Option<i64> {
    // SAFETY: `time(NULL)` has no pointer argument to satisfy.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: `tm` is plain old data; all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live, properly aligned locals for the duration of the call.
    let r = unsafe { libc::localtime_r(&now, &mut tm) };
    if r.is_null() {
        None
    } else {
        Some(tm.tm_gmtoff)
    }
}

/// Detaches from the terminal like OpenVPN's `daemon`: fork (the parent exits 0), `setsid`, fork
/// again (the session leader exits 0, so the daemon can never reacquire a terminal), stdin/stdout/
/// stderr onto `/dev/null`. Must run while single-threaded.
pub fn daemonize() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for round in 0..2 {
        // SAFETY: called while single-threaded (documented precondition), so the child may run
        // arbitrary code after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid > 0 {
            // SAFETY: _exit ends the intermediate process at once without running destructors that
            // would tear down state (e.g. the TUN descriptor) the daemon process still uses.
            unsafe { libc::_exit(0) };
        }
        if round == 0 {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
        }
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; `devnull` stays open across the call.
        if unsafe { libc::dup2(devnull.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
