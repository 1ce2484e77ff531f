//! Credentials of the peer of a connected unix socket (for the management broker's access control).
//!
//! [`peer_credentials`] reads `SO_PEERCRED` (pid/uid/gid captured by the kernel at `connect` time);
//! [`peer_groups`] reads `SO_PEERGROUPS` (the peer's supplementary groups at `connect` time).

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// Errors of peer-credential queries.
#[derive(Debug, thiserror::Error)]
pub enum PeerCredError {
    /// `getsockopt(SO_PEERCRED)` failed (not a unix socket, or not connected).
    #[error("cannot read SO_PEERCRED: {0}")]
    PeerCred(#[source] nix::Error),
    /// `getsockopt(SO_PEERGROUPS)` failed.
    #[error("cannot read SO_PEERGROUPS: {0}")]
    PeerGroups(#[source] std::io::Error),
}

/// The kernel-attested identity of a unix-socket peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// The peer's pid at connect time.
    pub pid: i32,
    /// The peer's effective uid at connect time.
    pub uid: u32,
    /// The peer's effective gid at connect time.
    pub gid: u32,
}

/// `SO_PEERCRED` of `sock`.
pub fn peer_credentials<F: AsFd>(sock: &F) -> Result<PeerCred, PeerCredError> {
    let c = getsockopt(sock, sockopt::PeerCredentials).map_err(PeerCredError::PeerCred)?;
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// `SO_PEERGROUPS` of `sock`: the peer's supplementary group ids.
pub fn peer_groups<F: AsFd>(sock: &F) -> Result<Vec<u32>, PeerCredError> {
    crate::sys::peer_groups(sock.as_fd()).map_err(PeerCredError::PeerGroups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn socketpair_peer_is_self() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_credentials(&a).unwrap();
        assert_eq!(c.pid, i32::try_from(std::process::id()).unwrap());
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.gid, nix::unistd::getegid().as_raw());
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut theirs = peer_groups(&a).unwrap();
        mine.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(mine, theirs);
    }

    #[test]
    fn non_socket_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_credentials(&f).is_err());
        assert!(peer_groups(&f).is_err());
    }
}
