//! The engine's edge: transport addresses, and the outbox an engine call fills.
//!
//! The engine never performs I/O. Every entry point takes the input bytes, the current time and an
//! [`Outbox`]; the driver then sends the queued datagrams/stream frames, writes the queued TUN packets and
//! forwards the queued events to the parent.

use std::fmt;
use std::net::SocketAddr;

/// A source of cryptographically secure random bytes, passed in by the driver (tests pass a seeded one).
pub type Rng = Box<dyn FnMut(&mut [u8]) + Send>;

/// Where a peer's packets come from and go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerAddr {
    /// a UDP peer, identified by its source address
    Udp(SocketAddr),
    /// a TCP connection (one client session per connection), identified by the driver's connection id
    Tcp {
        /// connection id assigned by the driver
        conn: u64,
        /// the remote address of the connection
        addr: SocketAddr,
    },
}

impl PeerAddr {
    /// The remote socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        match self {
            PeerAddr::Udp(a) => *a,
            PeerAddr::Tcp { addr, .. } => *addr,
        }
    }

    /// Whether this is a stream transport.
    pub fn is_tcp(&self) -> bool {
        matches!(self, PeerAddr::Tcp { .. })
    }

    /// OpenVPN's protocol tag for status files and `>CLIENT:ENV` (`udp4`, `tcp4-server`, ...).
    pub fn proto_tag(&self) -> &'static str {
        match (self, self.socket_addr().is_ipv4()) {
            (PeerAddr::Udp(_), true) => "udp4",
            (PeerAddr::Udp(_), false) => "udp6",
            (PeerAddr::Tcp { .. }, true) => "tcp4-server",
            (PeerAddr::Tcp { .. }, false) => "tcp6-server",
        }
    }
}

impl fmt::Display for PeerAddr {
    /// `ip:port` as OpenVPN prints peers (IPv6 without brackets, as OpenVPN's `print_sockaddr` does).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.socket_addr();
        match a {
            SocketAddr::V4(v4) => write!(f, "{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => write!(f, "{}:{}", v4, v6.port()),
                None => write!(f, "{}:{}", v6.ip(), v6.port()),
            },
        }
    }
}

/// One packet to send to a peer (a UDP datagram, or one length-prefixed frame on a TCP connection; the
/// driver adds the TCP length prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// destination
    pub to: PeerAddr,
    /// the OpenVPN packet
    pub data: Vec<u8>,
}

/// Log severity classes, mapped to OpenVPN verbosity levels by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogClass {
    /// errors and security-relevant failures (shown at verb ≥ 1)
    Error,
    /// normal operational messages (verb ≥ 3)
    Info,
    /// detailed messages (verb ≥ 4)
    Detail,
    /// debugging (verb ≥ 7)
    Debug,
}

/// Something the engine wants the rest of the system to know.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// a log line, already in OpenVPN's wording (prefix included)
    Log {
        /// severity
        class: LogClass,
        /// the message
        line: String,
    },
    /// a client finished authentication and got its address
    ClientConnected(ClientInfo),
    /// a client waits for the parent's decision (`defer_auth`)
    AuthRequest(Box<bulwark_ipc::msg::clients::ClientAuthRequest>),
    /// a client session ended
    ClientDisconnected {
        /// the client id (as the management interface shows it)
        cid: u64,
        /// why
        reason: String,
        /// bytes received from the client over the session
        bytes_in: u64,
        /// bytes sent to the client over the session
        bytes_out: u64,
        /// seconds connected
        duration_secs: u64,
    },
    /// an established client's packets now come from another address (float)
    ClientFloated {
        /// the client id
        cid: u64,
        /// the new address
        to: PeerAddr,
    },
    /// a client waiting for a pending verdict sent `CR_RESPONSE` (already checked with
    /// `valid_cr_response`)
    CrResponse {
        /// the client id
        cid: u64,
        /// the key id being authorised
        kid: u32,
        /// the response text
        response: String,
    },
    /// a TCP connection must be closed by the driver
    CloseTcp {
        /// connection id
        conn: u64,
    },
}

/// A connected client, as reported to the parent and the management interface.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientInfo {
    /// client id
    pub cid: u64,
    /// data-channel peer id
    pub peer_id: u32,
    /// certificate common name (or username with `username-as-common-name`)
    pub common_name: String,
    /// username sent by the client, if any
    pub username: Option<String>,
    /// transport address
    pub addr: PeerAddr,
    /// assigned tunnel IPv4 address
    pub vaddr: Option<std::net::Ipv4Addr>,
    /// assigned tunnel IPv6 address
    pub vaddr6: Option<std::net::Ipv6Addr>,
    /// negotiated data cipher
    pub cipher: String,
    /// unix time of connection
    pub connected_since: u64,
    /// networks routed to this client (`iroute`)
    pub iroutes: Vec<(std::net::Ipv4Addr, u8)>,
    /// IPv6 networks routed to this client (`iroute-ipv6`)
    pub iroutes_v6: Vec<(std::net::Ipv6Addr, u8)>,
    /// peer-info lines as sent (`IV_VER=2.6.14`, ...)
    pub peer_info: Vec<String>,
    /// certificate environment (deepest certificate first)
    pub cert_env: Vec<(String, String)>,
}

/// What one engine call produced.
#[derive(Debug, Default)]
pub struct Outbox {
    /// packets to send to peers, in order
    pub transmits: Vec<Transmit>,
    /// inner packets to write to the TUN device, in order
    pub tun: Vec<Vec<u8>>,
    /// events for the driver/parent
    pub events: Vec<EngineEvent>,
}

impl Outbox {
    /// Queues a log line.
    pub fn log(&mut self, class: LogClass, line: impl Into<String>) {
        self.events.push(EngineEvent::Log {
            class,
            line: line.into(),
        });
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty() && self.tun.is_empty() && self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_openvpn() {
        let a = PeerAddr::Udp("10.99.0.2:41234".parse().unwrap());
        assert_eq!(a.to_string(), "10.99.0.2:41234");
        assert_eq!(a.proto_tag(), "udp4");
        let m = PeerAddr::Udp("[::ffff:10.0.0.1]:5".parse().unwrap());
        assert_eq!(m.to_string(), "10.0.0.1:5");
        let t = PeerAddr::Tcp {
            conn: 3,
            addr: "[fd00::2]:7".parse().unwrap(),
        };
        assert_eq!(t.to_string(), "fd00::2:7");
        assert_eq!(t.proto_tag(), "tcp6-server");
    }
}
