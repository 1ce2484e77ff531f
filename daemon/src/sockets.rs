//! Transport and management sockets, created and bound by the parent and handed to the children.
//!
//! - [`bind_transport`]: UDP socket or TCP listener as OpenVPN's `proto`/`local`/`port`: `udp`/`tcp`
//!   without `local` bind `[::]` dual-stack (falling back to `0.0.0.0` when the host has no IPv6),
//!   `udp4`/`tcp4` bind IPv4, `udp6`/`tcp6` bind IPv6 (dual-stack); `sndbuf`/`rcvbuf` applied; UDP
//!   sockets get `UDP_GRO` where the kernel has it (the worker splits coalesced datagrams). With
//!   several data-plane threads (`data-threads`), one UDP socket per thread, all bound to the same
//!   address with `SO_REUSEPORT` (the kernel spreads clients over them by a hash of their address);
//!   a probe bind without `SO_REUSEPORT` first makes a port that anyone already holds fail with
//!   "Address already in use" as it does for OpenVPN, instead of silently sharing it with another
//!   server that also uses `SO_REUSEPORT` (Linux admits only sockets of the same user to a group).
//! - [`bind_management`]: a unix listener (socket file mode 0600, a stale socket file is replaced,
//!   any other file at the path is an error) or a TCP listener.
//!
//! All descriptors are close-on-exec; the spawner places the ones a child needs on its fixed numbers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockProtocol,
    SockType, SockaddrIn, SockaddrIn6, UnixAddr,
};

use crate::settings::{Management, Settings, Transport};

/// OpenVPN's listen backlog for TCP servers.
const TCP_BACKLOG: i32 = 32;

/// Errors of socket creation.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// `socket()` failed.
    #[error("cannot create {what} socket: {source}")]
    Create {
        /// Which socket.
        what: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// A socket option could not be set.
    #[error("cannot set {option} on {addr}: {source}")]
    Option {
        /// The option.
        option: &'static str,
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// `bind()` failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// `listen()` failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// The management socket path is occupied by something that is not a socket.
    #[error("management socket path {0} exists and is not a socket")]
    PathOccupied(PathBuf),
    /// A filesystem operation on the management socket path failed.
    #[error("management socket {path}: {source}")]
    UnixPath {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `local` and `proto` name different address families.
    #[error("local address {local} does not match proto {proto}")]
    FamilyMismatch {
        /// The `local` address.
        local: IpAddr,
        /// The protocol.
        proto: &'static str,
    },
}

/// A bound transport socket (UDP socket or listening TCP socket).
#[derive(Debug)]
pub struct TransportSocket {
    /// The socket (of the first data-plane thread).
    pub fd: OwnedFd,
    /// The further UDP sockets of the same `SO_REUSEPORT` group, one per further data-plane thread.
    pub more: Vec<OwnedFd>,
    /// The bound address (with the kernel-chosen port if `port 0`).
    pub addr: SocketAddr,
    /// TCP listener (true) or UDP socket (false).
    pub tcp: bool,
}

fn proto_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Udp4 => "udp4",
        Transport::Udp6 => "udp6",
        Transport::Tcp => "tcp",
        Transport::Tcp4 => "tcp4",
        Transport::Tcp6 => "tcp6",
    }
}

/// Creates and binds the transport socket described by `settings`: for UDP, `sockets` of them in
/// one `SO_REUSEPORT` group (one per TUN queue the device really has, so no socket is left without a
/// thread to read it); a TCP listener is always one.
pub fn bind_transport(settings: &Settings, sockets: usize) -> Result<TransportSocket, SocketError> {
    let t = settings.transport;
    let tcp = t.is_tcp();
    let want_v4 = matches!(t, Transport::Udp4 | Transport::Tcp4);
    let want_v6 = matches!(t, Transport::Udp6 | Transport::Tcp6);
    let addr = match settings.local {
        Some(ip) => {
            if (want_v4 && ip.is_ipv6()) || (want_v6 && ip.is_ipv4()) {
                return Err(SocketError::FamilyMismatch {
                    local: ip,
                    proto: proto_name(t),
                });
            }
            SocketAddr::new(ip, settings.port)
        }
        None if want_v4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), settings.port),
        None => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), settings.port),
    };
    let count = if tcp { 1 } else { sockets.max(1) };
    let bind_fallback = |addr: SocketAddr, reuseport: bool| {
        match bind_inet_opts(addr, tcp, settings.sndbuf, settings.rcvbuf, reuseport) {
            Err(SocketError::Create {
                source: nix::Error::EAFNOSUPPORT,
                ..
            }) if settings.local.is_none() && !want_v6 => {
                // No IPv6 on this host: OpenVPN falls back to IPv4 for the dual-stack default.
                let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
                bind_inet_opts(v4, tcp, settings.sndbuf, settings.rcvbuf, reuseport)
            }
            other => other,
        }
    };
    if count == 1 {
        return bind_fallback(addr, false);
    }
    // INVARIANT: the probe binds without SO_REUSEPORT, so a port held by anyone (another server
    // with SO_REUSEPORT included) fails here; its port (the kernel's choice for `port 0`) is then
    // the group's.
    let probe = bind_fallback(addr, false)?;
    let at = probe.addr;
    drop(probe);
    let mut first = bind_fallback(at, true)?;
    for _ in 1..count {
        let more = bind_inet_opts(first.addr, tcp, settings.sndbuf, settings.rcvbuf, true)?;
        first.more.push(more.fd);
    }
    Ok(first)
}

/// Binds one inet socket at `addr` (dual-stack when `addr` is `[::]`).
pub fn bind_inet(
    addr: SocketAddr,
    tcp: bool,
    sndbuf: Option<u32>,
    rcvbuf: Option<u32>,
) -> Result<TransportSocket, SocketError> {
    bind_inet_opts(addr, tcp, sndbuf, rcvbuf, false)
}

/// [`bind_inet`], as a member of a `SO_REUSEPORT` group when `reuseport`.
fn bind_inet_opts(
    addr: SocketAddr,
    tcp: bool,
    sndbuf: Option<u32>,
    rcvbuf: Option<u32>,
    reuseport: bool,
) -> Result<TransportSocket, SocketError> {
    let what = if tcp { "TCP" } else { "UDP" };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let (ty, proto) = if tcp {
        (SockType::Stream, SockProtocol::Tcp)
    } else {
        (SockType::Datagram, SockProtocol::Udp)
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, proto)
        .map_err(|source| SocketError::Create { what, source })?;
    let a = addr.to_string();
    let opt_err = |option: &'static str| {
        let a = a.clone();
        move |source| SocketError::Option {
            option,
            addr: a,
            source,
        }
    };
    if let SocketAddr::V6(v6) = addr {
        // Dual-stack for the wildcard, like OpenVPN's default (`bind ipv6only` not set).
        let only = !v6.ip().is_unspecified();
        setsockopt(&fd, sockopt::Ipv6V6Only, &only).map_err(opt_err("IPV6_V6ONLY"))?;
    }
    if tcp {
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(opt_err("SO_REUSEADDR"))?;
    }
    if reuseport {
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(opt_err("SO_REUSEPORT"))?;
    }
    if !tcp {
        // UDP_GRO: the kernel may hand the worker several datagrams of one sender as one message
        // (with their size in a control message; the worker splits them again). Best effort: a kernel
        // without it (< 5.0) refuses the option and the worker, which checks with getsockopt, receives
        // one datagram per message as before.
        let _ = setsockopt(&fd, sockopt::UdpGroSegment, &true);
    }
    if let Some(n) = sndbuf {
        setsockopt(&fd, sockopt::SndBuf, &(n as usize)).map_err(opt_err("SO_SNDBUF"))?;
    }
    if let Some(n) = rcvbuf {
        setsockopt(&fd, sockopt::RcvBuf, &(n as usize)).map_err(opt_err("SO_RCVBUF"))?;
    }
    let bind_err = |source| SocketError::Bind {
        addr: a.clone(),
        source,
    };
    match addr {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)).map_err(bind_err)?,
        SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &SockaddrIn6::from(v6)).map_err(bind_err)?,
    }
    if tcp {
        let backlog = Backlog::new(TCP_BACKLOG).map_err(|source| SocketError::Listen {
            addr: a.clone(),
            source,
        })?;
        listen(&fd, backlog).map_err(|source| SocketError::Listen {
            addr: a.clone(),
            source,
        })?;
    }
    let bound = local_addr(&fd).unwrap_or(addr);
    Ok(TransportSocket {
        fd,
        more: Vec::new(),
        addr: bound,
        tcp,
    })
}

fn local_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    let ss: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(v4) = ss.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    ss.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// A bound management listener.
#[derive(Debug)]
pub struct ManagementSocket {
    /// The listening socket.
    pub fd: OwnedFd,
    /// What was configured.
    pub spec: Management,
}

/// Creates the listener for one `management` directive.
pub fn bind_management(spec: &Management) -> Result<ManagementSocket, SocketError> {
    let fd = match spec {
        Management::Unix(path) => bind_unix(path)?,
        Management::Tcp(ip, port) => bind_inet(SocketAddr::new(*ip, *port), true, None, None)?.fd,
    };
    Ok(ManagementSocket {
        fd,
        spec: spec.clone(),
    })
}

/// Creates the listener of the metrics endpoint (`metrics-listen`): a loopback TCP socket, or a
/// unix socket with mode 0660 and group `gid` (root's group when `None`). Returns the fd and
/// whether it is a unix socket.
pub fn bind_metrics(
    spec: &bulwark_config::MetricsListen,
    gid: Option<u32>,
) -> Result<(OwnedFd, bool), SocketError> {
    match spec {
        bulwark_config::MetricsListen::Tcp { ip, port } => {
            // INVARIANT: the configuration loader admits loopback addresses only; checked again
            // here, where the socket is made.
            if !ip.is_loopback() {
                return Err(SocketError::Bind {
                    addr: format!("{ip}:{port}"),
                    source: nix::errno::Errno::EADDRNOTAVAIL,
                });
            }
            Ok((
                bind_inet(SocketAddr::new(*ip, *port), true, None, None)?.fd,
                false,
            ))
        }
        bulwark_config::MetricsListen::Unix { path, .. } => {
            let fd = bind_unix(path)?;
            let perr = |source| SocketError::UnixPath {
                path: path.clone(),
                source,
            };
            if let Some(g) = gid {
                std::os::unix::fs::chown(path, None, Some(g)).map_err(perr)?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perr)?;
            Ok((fd, true))
        }
    }
}

fn bind_unix(path: &Path) -> Result<OwnedFd, SocketError> {
    let perr = |source| SocketError::UnixPath {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(perr)?,
        Ok(_) => return Err(SocketError::PathOccupied(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(perr(e)),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| SocketError::Create {
        what: "unix",
        source,
    })?;
    let a = path.display().to_string();
    let ua = UnixAddr::new(path).map_err(|source| SocketError::Bind {
        addr: a.clone(),
        source,
    })?;
    // Create the socket file with no permissions for anyone but the owner from the start.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let r = bind(fd.as_raw_fd(), &ua);
    nix::sys::stat::umask(old);
    r.map_err(|source| SocketError::Bind {
        addr: a.clone(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(perr)?;
    let backlog = Backlog::new(TCP_BACKLOG).map_err(|source| SocketError::Listen {
        addr: a.clone(),
        source,
    })?;
    listen(&fd, backlog).map_err(|source| SocketError::Listen { addr: a, source })?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn udp_loopback_ephemeral() {
        let s = bind_inet(
            "127.0.0.1:0".parse().unwrap(),
            false,
            Some(65536),
            Some(65536),
        )
        .unwrap();
        assert!(!s.tcp);
        assert_ne!(s.addr.port(), 0);
    }

    #[test]
    fn tcp_dual_stack_wildcard() {
        let s = match bind_inet("[::]:0".parse().unwrap(), true, None, None) {
            Ok(s) => s,
            Err(SocketError::Create {
                source: nix::Error::EAFNOSUPPORT,
                ..
            }) => return,
            Err(e) => panic!("{e}"),
        };
        assert!(s.tcp);
        let only: bool = nix::sys::socket::getsockopt(&s.fd, sockopt::Ipv6V6Only).unwrap();
        assert!(!only);
        // Reachable over IPv4 loopback.
        std::net::TcpStream::connect(("127.0.0.1", s.addr.port())).unwrap();
    }

    #[test]
    fn unix_listener_mode_0600_and_occupied_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mgmt.sock");
        let m = bind_management(&Management::Unix(p.clone())).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        drop(m);
        // A stale socket is replaced.
        bind_management(&Management::Unix(p.clone())).unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(matches!(
            bind_management(&Management::Unix(f)),
            Err(SocketError::PathOccupied(_))
        ));
    }

    #[test]
    fn one_udp_socket_per_data_thread_in_one_reuseport_group() {
        let mut s = crate::settings::tests_support::minimal();
        s.transport = Transport::Udp4;
        s.local = Some("127.0.0.1".parse().unwrap());
        let t = bind_transport(&s, 3).unwrap();
        assert_ne!(t.addr.port(), 0);
        assert_eq!(t.more.len(), 2);
        for fd in std::iter::once(&t.fd).chain(&t.more) {
            assert_eq!(local_addr(fd), Some(t.addr));
            let on: bool = nix::sys::socket::getsockopt(fd, sockopt::ReusePort).unwrap();
            assert!(on);
        }
        // the port is taken: a second server fails as with OpenVPN, single- or multi-threaded
        s.port = t.addr.port();
        assert!(matches!(
            bind_transport(&s, 3),
            Err(SocketError::Bind { .. })
        ));
        assert!(matches!(
            bind_transport(&s, 1),
            Err(SocketError::Bind { .. })
        ));
        // and a TCP server has one listener whatever data-threads says
        s.transport = Transport::Tcp4;
        s.port = 0;
        let t = bind_transport(&s, 4).unwrap();
        assert!(t.tcp && t.more.is_empty());
    }

    #[test]
    fn family_mismatch() {
        let mut s = crate::settings::tests_support::minimal();
        s.transport = Transport::Udp4;
        s.local = Some("::1".parse().unwrap());
        assert!(matches!(
            bind_transport(&s, 1),
            Err(SocketError::FamilyMismatch { .. })
        ));
    }
}
