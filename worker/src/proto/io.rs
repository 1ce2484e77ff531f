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

    /// This peer as OpenVPN's `[AF_INET]ip:port` form.
    pub fn actual(&self) -> Actual<'_> {
        Actual(self)
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

/// A peer as OpenVPN's `print_link_socket_actual` prints it: `[AF_INET]ip:port` (also for an IPv4
/// peer reaching a dual-stack socket), `[AF_INET6]ip:port`.
pub struct Actual<'a>(&'a PeerAddr);

impl fmt::Display for Actual<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self.0.socket_addr() {
            SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => "AF_INET6",
            _ => "AF_INET",
        };
        write!(f, "[{family}]{}", self.0)
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

/// An owned packet inside a (pooled) buffer: the packet's bytes are `buffer[start..]`.
///
/// The bytes in front of `start` are headroom the engine used to prepend headers in place (the data
/// channel encrypts inside the buffer it copied the payload into, see
/// [`crate::proto::session::Peer::encrypt_data`]); after the driver sent or wrote the packet it hands the
/// whole buffer back to the [`Outbox`] pool with [`Outbox::recycle`], so the data path does not allocate
/// per packet. Dereferences to the packet's bytes; equality compares the bytes only.
#[derive(Clone, Default)]
pub struct PacketBuf {
    buf: Vec<u8>,
    start: usize,
}

impl PacketBuf {
    /// The packet `buf[range]`: bytes after `range.end` are dropped, bytes before `range.start` stay as
    /// headroom. A range outside the buffer is clamped to it (never panics).
    pub fn from_parts(mut buf: Vec<u8>, range: std::ops::Range<usize>) -> Self {
        let end = range.end.min(buf.len());
        buf.truncate(end);
        PacketBuf {
            start: range.start.min(end),
            buf,
        }
    }

    /// The packet's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Number of bytes of the packet (headroom not counted).
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True for an empty packet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packet as a plain vector (moves the bytes to the front if there is headroom).
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.buf
    }

    /// The whole underlying buffer, headroom included, for [`Outbox::recycle`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl From<Vec<u8>> for PacketBuf {
    fn from(buf: Vec<u8>) -> Self {
        PacketBuf { buf, start: 0 }
    }
}

impl std::ops::Deref for PacketBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for PacketBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for PacketBuf {
    /// The packet's bytes, mutable (the driver rewrites headers in place when it coalesces).
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }
}

impl PartialEq for PacketBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for PacketBuf {}

impl fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.len())
            .field("headroom", &self.start)
            .finish()
    }
}

/// One packet to send to a peer (a UDP datagram, or one length-prefixed frame on a TCP connection; the
/// driver adds the TCP length prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// destination
    pub to: PeerAddr,
    /// the OpenVPN packet
    pub data: PacketBuf,
}

/// Log severity classes, mapped to OpenVPN verbosity levels by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogClass {
    /// errors and security-relevant failures (shown at verb ≥ 1)
    Error,
    /// what OpenVPN prints at `M_INFO` (verb ≥ 1): `Peer Connection Initiated with`, `peer info:`,
    /// `MULTI_sva:`, inactivity timeouts
    Notice,
    /// OpenVPN's `D_HANDSHAKE` (verb ≥ 2): `VERIFY OK`, `Control Channel:`, `Data Channel:`,
    /// `Timers:`, `Protocol options:`
    Handshake,
    /// normal operational messages (verb ≥ 3)
    Info,
    /// detailed messages (verb ≥ 4)
    Detail,
    /// debugging (verb ≥ 7)
    Debug,
    /// the driver's `R`/`W`/`r`/`w` packet characters (exactly verb 5; never from the engine)
    PacketTrace,
}

impl LogClass {
    /// The lowest `verb` that shows this class (the packet characters: exactly this one).
    pub fn verb(self) -> u8 {
        match self {
            LogClass::Error | LogClass::Notice => 1,
            LogClass::Handshake => 2,
            LogClass::Info => 3,
            LogClass::Detail => 4,
            LogClass::PacketTrace => 5,
            LogClass::Debug => 7,
        }
    }
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
    /// a client announced its exit on the control channel (`EXIT`)
    ExitAnnounced {
        /// the client id
        cid: u64,
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

/// Capacity of a pooled packet buffer: the largest data-channel packet for a 1500-byte inner MTU plus
/// headroom, rounded up (larger packets grow their buffer, which then stays in the pool).
pub const POOL_BUF_CAPACITY: usize = 2048;
/// Most buffers the pool keeps; more are freed (bounds the memory a burst leaves behind).
pub const POOL_MAX_BUFFERS: usize = 512;

/// What one engine call produced.
///
/// The outbox also owns the packet-buffer pool: the engine takes buffers with [`Outbox::take_buffer`] for
/// the packets it produces, and the driver returns them with [`Outbox::recycle`] once written, so that in
/// steady state the data path allocates nothing.
#[derive(Debug, Default)]
pub struct Outbox {
    /// packets to send to peers, in order
    pub transmits: Vec<Transmit>,
    /// inner packets to write to the TUN device, in order
    pub tun: Vec<PacketBuf>,
    /// events for the driver/parent
    pub events: Vec<EngineEvent>,
    /// empty buffers ready for reuse
    spare: Vec<Vec<u8>>,
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

    /// An empty buffer with at least [`POOL_BUF_CAPACITY`] bytes of capacity, from the pool when it
    /// has one (no allocation), else newly allocated.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        match self.spare.pop() {
            Some(b) => b,
            None => Vec::with_capacity(POOL_BUF_CAPACITY),
        }
    }

    /// Returns a buffer to the pool (cleared; dropped if the pool is full or the buffer too small to be
    /// worth keeping).
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < POOL_MAX_BUFFERS && buf.capacity() >= POOL_BUF_CAPACITY {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Number of buffers in the pool (for tests and statistics).
    pub fn pooled(&self) -> usize {
        self.spare.len()
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

    #[test]
    fn packet_buf_keeps_headroom_and_clamps() {
        let p = PacketBuf::from_parts(vec![1, 2, 3, 4, 5, 6], 2..5);
        assert_eq!(&*p, &[3, 4, 5]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.clone().into_vec(), vec![3, 4, 5]);
        assert_eq!(p.into_buffer(), vec![1, 2, 3, 4, 5]);
        let q = PacketBuf::from_parts(vec![1, 2], 5..9);
        assert!(q.is_empty());
        assert_eq!(
            PacketBuf::from(vec![7u8]),
            PacketBuf::from_parts(vec![0, 7], 1..2)
        );
    }

    #[test]
    fn pool_reuses_buffers_and_is_bounded() {
        let mut out = Outbox::default();
        let mut b = out.take_buffer();
        assert!(b.capacity() >= POOL_BUF_CAPACITY);
        b.extend_from_slice(&[1, 2, 3]);
        let ptr = b.as_ptr();
        out.recycle(b);
        assert_eq!(out.pooled(), 1);
        let b = out.take_buffer();
        assert!(b.is_empty(), "recycled buffers come back empty");
        assert_eq!(b.as_ptr(), ptr, "the same allocation is reused");
        out.recycle(Vec::with_capacity(16));
        assert_eq!(out.pooled(), 0, "small buffers are not kept");
        for _ in 0..POOL_MAX_BUFFERS + 10 {
            out.recycle(Vec::with_capacity(POOL_BUF_CAPACITY));
        }
        assert_eq!(out.pooled(), POOL_MAX_BUFFERS);
    }
}
