//! Data model shared between the broker and the rest of Bulwark.
//!
//! Everything here is plain data, `serde`-serialisable, and travels over IPC from the parent to the
//! broker: the [`StatusSnapshot`] (what `status N` and the `--status` file render), the history
//! entries for `state`/`log`/`echo` ([`StateEntry`], [`LogRecord`], [`EchoEntry`]) and the
//! real-time events ([`MgmtEvent`]) the broker turns into `>STATE:`, `>LOG:`, `>CLIENT:` ...
//! notifications.
//!
//! Invariants:
//! * Times are Unix seconds (UTC). Human-readable columns are rendered in local time using the
//!   snapshot's `utc_offset_secs` (the broker is chrooted and cannot read the zone database; the
//!   parent supplies the offset in effect when it built the snapshot).
//! * Environment blocks ([`EnvBlock`]) are kept in **emission order** (OpenVPN emits most recently
//!   set variable first); the broker never reorders them, it only filters.
//! * [`StatusJson`] is the versioned JSON form of a snapshot (`schema` = [`STATUS_JSON_SCHEMA`]).
//!   Fields are only ever added in a compatible way; an incompatible change bumps the schema name.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// Errors produced by this module.
#[derive(Debug, Error)]
pub enum ModelError {
    /// Serialising a status snapshot to JSON failed.
    #[error("cannot serialise status snapshot to JSON: {0}")]
    JsonEncode(#[source] serde_json::Error),
    /// A JSON document could not be parsed as a status snapshot.
    #[error("cannot parse status JSON: {0}")]
    JsonDecode(#[source] serde_json::Error),
    /// A JSON document carried an unknown schema identifier.
    #[error("unsupported status JSON schema {found:?} (expected {expected:?})")]
    JsonSchema {
        /// The schema found in the document.
        found: String,
        /// The schema this build understands.
        expected: &'static str,
    },
}

/// Transport protocol of a client's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportProto {
    /// UDP (any address family).
    Udp,
    /// TCP server side.
    Tcp,
}

impl TransportProto {
    /// Lower-case name (`udp` / `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProto::Udp => "udp",
            TransportProto::Tcp => "tcp",
        }
    }
}

/// The real (link) address of a client: protocol, IP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealAddr {
    /// Transport protocol.
    pub proto: TransportProto,
    /// Peer socket address. IPv4 peers on a dual-stack socket may be given v4-mapped.
    pub addr: SocketAddr,
}

impl RealAddr {
    /// The address as OpenVPN 2.6 prints it in status output: IPv4 (also v4-mapped) as
    /// `a.b.c.d:port`, IPv6 as the bare address without port.
    pub fn status_form(&self) -> String {
        match self.addr.ip() {
            IpAddr::V4(v4) => format!("{}:{}", v4, self.addr.port()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("{}:{}", v4, self.addr.port()),
                None => v6.to_string(),
            },
        }
    }
}

/// One connected (or connecting) client instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// X.509 common name; `None` before authentication (printed `UNDEF`).
    pub common_name: Option<String>,
    /// Real address.
    pub real_address: RealAddr,
    /// Virtual IPv4 address, if any.
    pub virtual_v4: Option<Ipv4Addr>,
    /// Virtual IPv6 address, if any.
    pub virtual_v6: Option<Ipv6Addr>,
    /// Link-level bytes received from this client.
    pub bytes_received: u64,
    /// Link-level bytes sent to this client.
    pub bytes_sent: u64,
    /// Instance creation time (Unix seconds).
    pub connected_since: i64,
    /// auth-user-pass username; `None` printed as `UNDEF`.
    pub username: Option<String>,
    /// Management client id (CID).
    pub client_id: u64,
    /// Data channel peer id.
    pub peer_id: u32,
    /// Negotiated data channel cipher name (e.g. `AES-256-GCM`).
    pub data_cipher: String,
}

/// Key of a routing table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteKey {
    /// IPv4 host route.
    V4(Ipv4Addr),
    /// IPv6 host route.
    V6(Ipv6Addr),
    /// IPv4 subnet (iroute), printed `a.b.c.d/bits`.
    V4Net(Ipv4Addr, u8),
    /// IPv6 subnet (iroute), printed `addr/bits`.
    V6Net(Ipv6Addr, u8),
    /// Ethernet address (TAP) with VLAN id, printed `xx:xx:xx:xx:xx:xx@vid`.
    Mac([u8; 6], u16),
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteKey::V4(a) => write!(f, "{a}"),
            RouteKey::V6(a) => write!(f, "{a}"),
            RouteKey::V4Net(a, b) => write!(f, "{a}/{b}"),
            RouteKey::V6Net(a, b) => write!(f, "{a}/{b}"),
            RouteKey::Mac(m, vid) => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}@{}",
                m[0], m[1], m[2], m[3], m[4], m[5], vid
            ),
        }
    }
}

/// One routing table entry (host route, iroute or cached iroute host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The virtual address/subnet/MAC.
    pub key: RouteKey,
    /// Learned-from-iroute cached host route (printed with a trailing `C`).
    pub cached: bool,
    /// Owner's common name (`None` → `UNDEF`).
    pub common_name: Option<String>,
    /// Owner's real address.
    pub real_address: RealAddr,
    /// Last time traffic used the route (Unix seconds).
    pub last_ref: i64,
}

/// Global statistics of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GlobalStats {
    /// Max broadcast/multicast queue length; `None` when the multicast buffer does not exist
    /// (the line is then omitted, as OpenVPN does).
    pub max_bcast_mcast_queue_len: Option<u64>,
    /// Whether data channel offload is enabled.
    pub dco_enabled: bool,
}

/// A point-in-time view of the server, rendered by [`crate::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Title/version line (`OpenVPN 2.6.14 x86_64-pc-linux-gnu [...]` compatible).
    pub title: String,
    /// Time the snapshot was taken (Unix seconds).
    pub updated: i64,
    /// Local time offset from UTC in seconds, used for every human-readable time column.
    pub utc_offset_secs: i32,
    /// Client instances, in the order they are to be listed.
    pub clients: Vec<ClientEntry>,
    /// Routing table, in the order it is to be listed.
    pub routes: Vec<RouteEntry>,
    /// Global statistics.
    pub global: GlobalStats,
}

/// Identifier of the JSON status schema produced by [`StatusJson`].
pub const STATUS_JSON_SCHEMA: &str = "bulwark.status.v1";

/// Versioned JSON document form of a [`StatusSnapshot`].
///
/// ```json
/// {"schema":"bulwark.status.v1","snapshot":{"title":"...","updated":1795334294, ...}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusJson {
    /// Always [`STATUS_JSON_SCHEMA`].
    pub schema: String,
    /// The snapshot.
    pub snapshot: StatusSnapshot,
}

impl StatusJson {
    /// Serialise a snapshot into the versioned JSON form.
    pub fn encode(snapshot: &StatusSnapshot) -> Result<String, ModelError> {
        let doc = StatusJson {
            schema: STATUS_JSON_SCHEMA.to_string(),
            snapshot: snapshot.clone(),
        };
        serde_json::to_string(&doc).map_err(ModelError::JsonEncode)
    }

    /// Parse the versioned JSON form, rejecting unknown schemas.
    pub fn decode(text: &str) -> Result<StatusSnapshot, ModelError> {
        let doc: StatusJson = serde_json::from_str(text).map_err(ModelError::JsonDecode)?;
        if doc.schema != STATUS_JSON_SCHEMA {
            return Err(ModelError::JsonSchema {
                found: doc.schema,
                expected: STATUS_JSON_SCHEMA,
            });
        }
        Ok(doc.snapshot)
    }
}

/// One state history entry (`state` command / `>STATE:` notification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// Unix time of the transition.
    pub time: i64,
    /// State name (`CONNECTING`, `ASSIGN_IP`, `CONNECTED`, `RECONNECTING`, `EXITING`, ...).
    pub name: String,
    /// Detail (`SUCCESS`, signal text, ...), may be empty.
    pub detail: String,
    /// Local tun IPv4 address.
    pub tun_v4: Option<Ipv4Addr>,
    /// Remote address and port (empty on a server).
    pub remote: Option<SocketAddr>,
    /// Local bound address and port (empty when bound to the wildcard).
    pub local: Option<SocketAddr>,
    /// Local tun IPv6 address (9th field only when present).
    pub tun_v6: Option<Ipv6Addr>,
}

impl StateEntry {
    /// The comma-separated line as OpenVPN prints it (without `>STATE:` and line ending).
    pub fn line(&self) -> String {
        fn addr_pair(a: &Option<SocketAddr>) -> String {
            match a {
                Some(sa) => format!("{},{}", sa.ip(), sa.port()),
                None => ",".to_string(),
            }
        }
        let mut s = format!(
            "{},{},{},{},{},{}",
            self.time,
            self.name,
            self.detail,
            self.tun_v4.map(|a| a.to_string()).unwrap_or_default(),
            addr_pair(&self.remote),
            addr_pair(&self.local),
        );
        if let Some(v6) = self.tun_v6 {
            s.push(',');
            s.push_str(&v6.to_string());
        }
        s
    }
}

/// Flags of a log record as shown in `>LOG:` (`I`, `F`, `N`, `W`, `D`, in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LogFlags {
    /// Exactly M_INFO.
    pub info: bool,
    /// Fatal.
    pub fatal: bool,
    /// Non-fatal error.
    pub nonfatal: bool,
    /// Warning.
    pub warn: bool,
    /// Debug.
    pub debug: bool,
}

impl LogFlags {
    /// The flag string (`""`, `"I"`, `"D"`, `"W"`, ...).
    pub fn as_string(&self) -> String {
        let mut s = String::new();
        for (on, c) in [
            (self.info, 'I'),
            (self.fatal, 'F'),
            (self.nonfatal, 'N'),
            (self.warn, 'W'),
            (self.debug, 'D'),
        ] {
            if on {
                s.push(c);
            }
        }
        s
    }
}

/// One log record as kept in the management log cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Unix time.
    pub time: i64,
    /// Flags.
    pub flags: LogFlags,
    /// Message text (with the per-client prefix where OpenVPN has one).
    pub message: String,
}

impl LogRecord {
    /// `<t>,<flags>,<message>`.
    pub fn line(&self) -> String {
        format!("{},{},{}", self.time, self.flags.as_string(), self.message)
    }
}

/// One echo history entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoEntry {
    /// Unix time.
    pub time: i64,
    /// Echo text.
    pub text: String,
}

impl EchoEntry {
    /// `<t>,<text>`.
    pub fn line(&self) -> String {
        format!("{},{}", self.time, self.text)
    }
}

/// An ordered environment block of a `>CLIENT:` notification, in emission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EnvBlock {
    /// `(name, value)` pairs, first pair is emitted first.
    pub vars: Vec<(String, String)>,
    /// Raw peer-info lines (`IV_*`/`UV_*`, `name=value`), printed first and unfiltered at
    /// env-filter levels ≥ 1 for CONNECT/REAUTH/CR_RESPONSE.
    pub peer_info: Vec<String>,
}

/// Kind of a `>CLIENT:` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientEventKind {
    /// `>CLIENT:CONNECT,<cid>,<kid>`.
    Connect {
        /// Key id.
        kid: u32,
    },
    /// `>CLIENT:REAUTH,<cid>,<kid>`.
    Reauth {
        /// Key id.
        kid: u32,
    },
    /// `>CLIENT:ESTABLISHED,<cid>`.
    Established,
    /// `>CLIENT:DISCONNECT,<cid>`.
    Disconnect,
    /// `>CLIENT:CR_RESPONSE,<cid>,<kid>,<response>`.
    CrResponse {
        /// Key id.
        kid: u32,
        /// Base64 response as sent by the client.
        response: String,
    },
}

/// A real-time event delivered to the broker by the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MgmtEvent {
    /// A log record (goes to the log cache and `>LOG:`).
    Log(LogRecord),
    /// A state transition (state history and `>STATE:`).
    State(StateEntry),
    /// An echo parameter (echo history and `>ECHO:`).
    Echo(EchoEntry),
    /// The daemon entered a management hold: `>HOLD:Waiting for hold release:<secs>`.
    Hold {
        /// Seconds OpenVPN would have waited without a GUI.
        wait_secs: u64,
    },
    /// The hold was released (clears the pending prompt).
    HoldReleased,
    /// A `>CLIENT:` event with env block.
    Client {
        /// Client id.
        cid: u64,
        /// Event kind.
        kind: ClientEventKind,
        /// `n_clients` value prepended to CONNECT/REAUTH/ESTABLISHED/CR_RESPONSE (ignored for
        /// DISCONNECT).
        n_clients: u32,
        /// Environment.
        env: EnvBlock,
    },
    /// `>CLIENT:ADDRESS,<cid>,<addr>,<primary>`.
    ClientAddress {
        /// Client id.
        cid: u64,
        /// Address text (`10.97.0.2`, `a.b.c.d/255.255.255.0`, `addr/bits`, MAC@vid).
        addr: String,
        /// Primary (pool/ifconfig-push) address.
        primary: bool,
    },
    /// `>NOTIFY:<text>` (e.g. `info,remote-exit,EXIT`).
    Notify(String),
    /// `>FATAL:<text>`; every session is closed after delivering it.
    Fatal(String),
}
