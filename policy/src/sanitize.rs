//! Start-up hygiene: close inherited descriptors and clear the environment.
//!
//! Both functions must run while the process is single-threaded and before any Rust object owns a
//! descriptor above 2 that is not on the keep-list (they would be closed underneath it).

use std::ffi::OsString;
use std::os::fd::RawFd;

/// Errors of the sanitizing operations.
#[derive(Debug, thiserror::Error)]
pub enum SanitizeError {
    /// `close_range` failed and `/proc/self/fd` could not be read as a fallback.
    #[error("cannot close inherited file descriptors: {0}")]
    CloseFds(#[source] std::io::Error),
    /// A keep-list entry is not a valid descriptor number.
    #[error("invalid descriptor {0} in the keep-list")]
    BadKeep(RawFd),
}

/// Closes every descriptor above 2 that is not in `keep`.
///
/// Uses `close_range(2)`; on kernels without it falls back to walking `/proc/self/fd`.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), SanitizeError> {
    let mut keep: Vec<u32> = keep
        .iter()
        .map(|&fd| u32::try_from(fd).map_err(|_| SanitizeError::BadKeep(fd)))
        .collect::<Result<_, _>>()?;
    keep.retain(|&fd| fd > 2);
    keep.sort_unstable();
    keep.dedup();
    match close_gaps(&keep) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => close_via_proc(&keep),
        Err(e) => Err(SanitizeError::CloseFds(e)),
    }
}

fn close_gaps(keep: &[u32]) -> std::io::Result<()> {
    let mut first = 3u32;
    for &k in keep {
        if k > first {
            crate::sys::close_range(first, k - 1)?;
        }
        first = k.saturating_add(1);
    }
    if first < u32::MAX {
        crate::sys::close_range(first, u32::MAX)?;
    }
    Ok(())
}

fn close_via_proc(keep: &[u32]) -> Result<(), SanitizeError> {
    let mut victims = Vec::new();
    let dir = std::fs::read_dir("/proc/self/fd").map_err(SanitizeError::CloseFds)?;
    for entry in dir {
        let entry = entry.map_err(SanitizeError::CloseFds)?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        {
            if fd > 2 && keep.binary_search(&fd).is_err() {
                victims.push(fd);
            }
        }
    }
    // The directory handle itself is closed now (dropped); closing it again just fails with EBADF.
    for fd in victims {
        let raw = RawFd::try_from(fd).map_err(|_| SanitizeError::BadKeep(RawFd::MAX))?;
        match nix::unistd::close(raw) {
            Ok(()) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Err(SanitizeError::CloseFds(e.into())),
        }
    }
    Ok(())
}

/// Removes every environment variable whose name is not in `allow`; returns the removed names.
///
/// Must run while single-threaded (`std::env::remove_var` is not thread-safe).
pub fn clear_environment(allow: &[&str]) -> Vec<OsString> {
    let mut removed = Vec::new();
    for (name, _) in std::env::vars_os() {
        let keep = name.to_str().is_some_and(|n| allow.contains(&n));
        if !keep {
            removed.push(name);
        }
    }
    for name in &removed {
        std::env::remove_var(name);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keep_is_an_error() {
        assert!(matches!(
            close_inherited_fds(&[-5]),
            Err(SanitizeError::BadKeep(-5))
        ));
    }
}
