//! Types and checks shared by several channels: [`FdRole`] (what a passed descriptor is), the
//! caps on role lists and failure reasons, and the sandbox-identity check used by both children's
//! configuration.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::validate::{
    check_absolute_path, check_len, check_text, check_unprivileged_id, ValidationError,
};
use crate::MAX_FDS_PER_MESSAGE;

/// Most descriptors (and so roles) one `Init` message may carry.
pub const MAX_FD_ROLES: usize = MAX_FDS_PER_MESSAGE;

/// Longest `Fatal { reason }` text, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// What a descriptor passed with an `Init` message is; position `i` describes fd `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FdRole {
    /// A TUN device (opened from `/dev/net/tun` and attached to an interface).
    Tun,
    /// A bound inet UDP socket (OpenVPN `proto udp`).
    UdpSocket,
    /// A listening inet TCP socket (OpenVPN `proto tcp-server`, or a TCP management listener).
    TcpListener,
    /// A listening unix stream socket (a management listener on a unix path).
    UnixListener,
}

impl FdRole {
    /// A short description for errors.
    pub fn description(self) -> &'static str {
        match self {
            FdRole::Tun => "TUN device",
            FdRole::UdpSocket => "inet UDP socket",
            FdRole::TcpListener => "listening inet TCP socket",
            FdRole::UnixListener => "listening unix stream socket",
        }
    }

    /// The variant's name.
    pub fn name(self) -> &'static str {
        match self {
            FdRole::Tun => "Tun",
            FdRole::UdpSocket => "UdpSocket",
            FdRole::TcpListener => "TcpListener",
            FdRole::UnixListener => "UnixListener",
        }
    }
}

/// Check a role list: length within `min..=MAX_FD_ROLES`, every role in `allowed`.
pub(crate) fn check_roles(
    message: &'static str,
    roles: &[FdRole],
    min: usize,
    allowed: &[FdRole],
) -> Result<(), ValidationError> {
    if roles.len() < min || roles.len() > MAX_FD_ROLES {
        return Err(ValidationError::FdRoleCount {
            count: roles.len(),
            min,
            max: MAX_FD_ROLES,
        });
    }
    if let Some(role) = roles.iter().find(|r| !allowed.contains(r)) {
        return Err(ValidationError::FdRoleNotAllowed {
            role: role.name(),
            message,
        });
    }
    Ok(())
}

/// The identity a sandboxed child drops to and the directory it chroots into.
pub(crate) fn check_sandbox(uid: u32, gid: u32, chroot_dir: &Path) -> Result<(), ValidationError> {
    check_unprivileged_id("uid", uid)?;
    check_unprivileged_id("gid", gid)?;
    check_absolute_path("chroot_dir", chroot_dir)
}

/// A `Fatal { reason }`: non-empty, capped, no control characters.
pub(crate) fn check_reason(reason: &str) -> Result<(), ValidationError> {
    check_len("reason", reason.len(), 1, MAX_REASON_LEN)?;
    check_text("reason", reason, MAX_REASON_LEN)
}

/// A Hello's protocol version must equal this side's.
pub(crate) fn check_version(found: u16) -> Result<(), ValidationError> {
    if found != crate::PROTOCOL_VERSION {
        return Err(ValidationError::VersionMismatch {
            expected: crate::PROTOCOL_VERSION,
            found,
        });
    }
    Ok(())
}

/// A Hello's pid must be a real process id.
pub(crate) fn check_pid(pid: i32) -> Result<(), ValidationError> {
    if pid <= 0 {
        return Err(ValidationError::InvalidPid { pid });
    }
    Ok(())
}
