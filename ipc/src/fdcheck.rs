//! What is this descriptor? Checks a child runs on every fd it was handed before using it.
//!
//! API: [`fd_kind`] classifies a descriptor ([`FdKind`]); [`expect_role`] checks one fd against
//! an [`FdRole`]; [`check_fds`] checks a whole received list against the roles a message
//! declared; [`expect_unix_seqpacket`] checks an IPC channel end.
//!
//! Classification uses `fstat` (file type; for character devices the device number — a TUN fd
//! is the misc device 10:200, `/dev/net/tun`) and, for sockets, `getsockopt` `SO_DOMAIN`,
//! `SO_TYPE`, `SO_PROTOCOL` and `SO_ACCEPTCONN`.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::stat::{fstat, SFlag};

use crate::msg::FdRole;
use crate::sys::{self, SysError};

/// Major number of Linux misc character devices.
pub const MISC_MAJOR: u32 = 10;
/// Minor number of `/dev/net/tun` within the misc devices.
pub const TUN_MINOR: u32 = 200;

/// Properties of a socket descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    /// `SO_DOMAIN` (`AF_INET`, `AF_INET6`, `AF_UNIX`, ...).
    pub domain: i32,
    /// `SO_TYPE` (`SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET`, ...).
    pub sock_type: i32,
    /// `SO_PROTOCOL` (`IPPROTO_UDP`, `IPPROTO_TCP`, 0 for unix sockets).
    pub protocol: i32,
    /// `SO_ACCEPTCONN`: the socket is listening.
    pub listening: bool,
}

/// What a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// The TUN/TAP clone device (`/dev/net/tun`, char 10:200).
    Tun,
    /// Another character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A socket.
    Socket(SocketInfo),
    /// A pipe or FIFO.
    Fifo,
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// Anything else (block device, symlink via O_PATH, ...), with its `st_mode` file-type bits.
    Other {
        /// `st_mode & S_IFMT`.
        file_type: u32,
    },
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdKind::Tun => write!(f, "TUN device"),
            FdKind::CharDevice { major, minor } => write!(f, "char device {major}:{minor}"),
            FdKind::Socket(s) => write!(
                f,
                "socket (domain {}, type {}, protocol {}{})",
                s.domain,
                s.sock_type,
                s.protocol,
                if s.listening { ", listening" } else { "" }
            ),
            FdKind::Fifo => write!(f, "pipe"),
            FdKind::Regular => write!(f, "regular file"),
            FdKind::Directory => write!(f, "directory"),
            FdKind::Other { file_type } => write!(f, "file type {file_type:#o}"),
        }
    }
}

/// A descriptor is not what it should be, or could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum FdCheckError {
    /// `fstat` failed.
    #[error("fstat")]
    Fstat(#[source] Errno),
    /// A socket option could not be read.
    #[error("reading socket options")]
    SockOpt(#[source] SysError),
    /// The descriptor is of the wrong kind.
    #[error("expected {expected}, found {found}")]
    WrongKind {
        /// What was expected.
        expected: &'static str,
        /// What it is.
        found: FdKind,
    },
    /// The number of descriptors differs from the number of roles.
    #[error("{roles} fd roles declared but {fds} fds received")]
    CountMismatch {
        /// Roles declared.
        roles: usize,
        /// Descriptors received.
        fds: usize,
    },
    /// Descriptor `index` does not match its declared role.
    #[error("fd #{index} (declared {role:?})")]
    Role {
        /// Position in the list.
        index: usize,
        /// The declared role.
        role: FdRole,
        /// Why it does not match.
        #[source]
        source: Box<FdCheckError>,
    },
}

/// Classify `fd`.
pub fn fd_kind(fd: impl AsFd) -> Result<FdKind, FdCheckError> {
    let fd = fd.as_fd();
    let st = fstat(fd).map_err(FdCheckError::Fstat)?;
    let file_type = st.st_mode & SFlag::S_IFMT.bits();
    let kind = if file_type == SFlag::S_IFCHR.bits() {
        let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        if major == MISC_MAJOR && minor == TUN_MINOR {
            FdKind::Tun
        } else {
            FdKind::CharDevice { major, minor }
        }
    } else if file_type == SFlag::S_IFSOCK.bits() {
        let opt = |name| sys::getsockopt_int(fd, name).map_err(FdCheckError::SockOpt);
        FdKind::Socket(SocketInfo {
            domain: opt(libc::SO_DOMAIN)?,
            sock_type: opt(libc::SO_TYPE)?,
            protocol: opt(libc::SO_PROTOCOL)?,
            listening: opt(libc::SO_ACCEPTCONN)? != 0,
        })
    } else if file_type == SFlag::S_IFIFO.bits() {
        FdKind::Fifo
    } else if file_type == SFlag::S_IFREG.bits() {
        FdKind::Regular
    } else if file_type == SFlag::S_IFDIR.bits() {
        FdKind::Directory
    } else {
        FdKind::Other { file_type }
    };
    Ok(kind)
}

fn is_inet(domain: i32) -> bool {
    domain == libc::AF_INET || domain == libc::AF_INET6
}

/// Does `kind` fit `role`?
pub fn kind_matches(kind: &FdKind, role: FdRole) -> bool {
    match (role, kind) {
        (FdRole::Tun, FdKind::Tun) => true,
        (FdRole::UdpSocket, FdKind::Socket(s)) => {
            is_inet(s.domain) && s.sock_type == libc::SOCK_DGRAM && s.protocol == libc::IPPROTO_UDP
        }
        (FdRole::TcpListener, FdKind::Socket(s)) => {
            is_inet(s.domain)
                && s.sock_type == libc::SOCK_STREAM
                && s.protocol == libc::IPPROTO_TCP
                && s.listening
        }
        (FdRole::UnixListener, FdKind::Socket(s)) => {
            s.domain == libc::AF_UNIX && s.sock_type == libc::SOCK_STREAM && s.listening
        }
        _ => false,
    }
}

/// Check that `fd` is what `role` says: the TUN device, an inet UDP socket, a listening inet TCP
/// socket, or a listening unix stream socket.
pub fn expect_role(fd: impl AsFd, role: FdRole) -> Result<FdKind, FdCheckError> {
    let kind = fd_kind(fd)?;
    if !kind_matches(&kind, role) {
        return Err(FdCheckError::WrongKind {
            expected: role.description(),
            found: kind,
        });
    }
    Ok(kind)
}

/// Check every received descriptor against the role declared for its position.
pub fn check_fds(roles: &[FdRole], fds: &[OwnedFd]) -> Result<(), FdCheckError> {
    if roles.len() != fds.len() {
        return Err(FdCheckError::CountMismatch {
            roles: roles.len(),
            fds: fds.len(),
        });
    }
    for (index, (role, fd)) in roles.iter().zip(fds).enumerate() {
        expect_role(fd, *role).map_err(|source| FdCheckError::Role {
            index,
            role: *role,
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// Check that `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket (an IPC channel end).
pub fn expect_unix_seqpacket(fd: impl AsFd) -> Result<(), FdCheckError> {
    let kind = fd_kind(fd)?;
    match kind {
        FdKind::Socket(s) if s.domain == libc::AF_UNIX && s.sock_type == libc::SOCK_SEQPACKET => {
            Ok(())
        }
        found => Err(FdCheckError::WrongKind {
            expected: "unix seqpacket socket",
            found,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixListener;

    #[test]
    fn classifies_common_descriptors() {
        let udp: OwnedFd = UdpSocket::bind("127.0.0.1:0").unwrap().into();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream: OwnedFd = TcpStream::connect(tcp.local_addr().unwrap())
            .unwrap()
            .into();
        let tcp: OwnedFd = tcp.into();
        let dir = tempfile::tempdir().unwrap();
        let unix: OwnedFd = UnixListener::bind(dir.path().join("s")).unwrap().into();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let file: OwnedFd = std::fs::File::open("/proc/self/status").unwrap().into();
        let null: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();

        assert!(expect_role(&udp, FdRole::UdpSocket).is_ok());
        assert!(expect_role(&tcp, FdRole::TcpListener).is_ok());
        assert!(expect_role(&unix, FdRole::UnixListener).is_ok());
        assert!(expect_role(&stream, FdRole::TcpListener).is_err());
        assert!(expect_role(&udp, FdRole::TcpListener).is_err());
        assert!(expect_role(&tcp, FdRole::UdpSocket).is_err());
        assert!(expect_role(&unix, FdRole::TcpListener).is_err());
        assert!(expect_role(&r, FdRole::Tun).is_err());
        assert!(matches!(
            expect_role(&null, FdRole::Tun),
            Err(FdCheckError::WrongKind {
                found: FdKind::CharDevice { major: 1, minor: 3 },
                ..
            })
        ));
        assert_eq!(fd_kind(&r).unwrap(), FdKind::Fifo);
        assert_eq!(fd_kind(&file).unwrap(), FdKind::Regular);
        assert!(expect_unix_seqpacket(&unix).is_err());
    }

    #[test]
    fn tun_clone_device_is_recognised_when_present() {
        // /dev/net/tun may be absent in a minimal container; then there is nothing to check.
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            Ok(f) => assert_eq!(fd_kind(&f).unwrap(), FdKind::Tun),
            Err(e) => eprintln!("skipping: /dev/net/tun unavailable: {e}"),
        }
    }

    #[test]
    fn check_fds_reports_position_and_count() {
        let udp: OwnedFd = UdpSocket::bind("127.0.0.1:0").unwrap().into();
        let tcp: OwnedFd = TcpListener::bind("127.0.0.1:0").unwrap().into();
        let fds = vec![udp, tcp];
        assert!(check_fds(&[FdRole::UdpSocket, FdRole::TcpListener], &fds).is_ok());
        assert!(matches!(
            check_fds(&[FdRole::UdpSocket, FdRole::UdpSocket], &fds),
            Err(FdCheckError::Role { index: 1, .. })
        ));
        assert!(matches!(
            check_fds(&[FdRole::UdpSocket], &fds),
            Err(FdCheckError::CountMismatch { roles: 1, fds: 2 })
        ));
    }
}
