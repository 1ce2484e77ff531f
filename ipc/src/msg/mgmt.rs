//! Management data model: the types that travel between the management broker, the parent and
//! the worker.
//!
//! The broker (`bulwark-mgmt`) turns management command lines into [`Request`]s, the parent
//! answers them with [`Response`]s (asking the worker where the tunnel is involved), and pushes
//! [`MgmtEvent`]s (log lines, state changes, `>CLIENT:` events) to the broker. The status
//! [`StatusSnapshot`] is what `status N` and the status files render. [`AuditRecord`]s flow from
//! the broker to the parent, the only writer of the audit trail.
//!
//! Invariants:
//! * Times are Unix seconds (UTC). Human-readable columns are rendered in local time using the
//!   snapshot's `utc_offset_secs` (the broker is chrooted and cannot read the zone database; the
//!   parent supplies the offset in effect when it built the snapshot).
//! * Environment blocks ([`EnvBlock`]) are kept in **emission order**; the broker never reorders
//!   them, it only filters.
//! * Everything here is plain data; sizes are checked by the `validate()` of the message that
//!   carries it (see [`super::broker`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

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
        match self.ip() {
            IpAddr::V4(v4) => format!("{}:{}", v4, self.addr.port()),
            v6 => v6.to_string(),
        }
    }

    /// The peer's IP with a v4-mapped IPv6 address (dual-stack socket) shown as IPv4, as
    /// OpenVPN's `trusted_ip`/`untrusted_ip` environment variables show it.
    pub fn ip(&self) -> IpAddr {
        match self.addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            ip => ip,
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

/// What the parent counts for the metrics endpoint (since it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ParentCounters {
    /// SIGHUP reloads that were applied.
    pub reloads: u64,
    /// SIGHUP reloads rejected because the new configuration failed a check.
    pub reloads_rejected: u64,
    /// Status file writes that failed.
    pub status_write_errors: u64,
    /// Log lines that could not be written to the log file.
    pub log_lines_lost: u64,
    /// Worker restarts (crash, SIGUSR1, configuration change).
    pub worker_restarts: u64,
    /// Authorisation verdicts: clients admitted by the hooks / management client-auth.
    pub auth_accepted: u64,
    /// Authorisation verdicts: clients refused.
    pub auth_denied: u64,
}

/// The counters of a status snapshot (not part of OpenVPN's status formats; the metrics
/// endpoint exports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SnapshotCounters {
    /// The engine's counters.
    pub engine: super::clients::EngineCounters,
    /// The parent's counters.
    pub parent: ParentCounters,
    /// Link bytes read by the worker (all clients, also dropped packets).
    pub link_bytes_in: u64,
    /// Link bytes written by the worker.
    pub link_bytes_out: u64,
}

/// A point-in-time view of the server, rendered by the broker's status renderer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Counters for the metrics endpoint (not rendered in the status formats).
    #[serde(default)]
    pub counters: SnapshotCounters,
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

/// Errors of a backend call.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendError {
    /// The daemon cannot serve this request in its current state (e.g. initial hold).
    #[error("not available in the current daemon state")]
    Unavailable,
    /// The daemon side is gone (channel closed).
    #[error("backend disconnected")]
    Disconnected,
    /// The daemon returned a response of the wrong kind for the request.
    #[error("unexpected backend response to {request}")]
    UnexpectedResponse {
        /// Name of the request.
        request: String,
    },
}

/// Signals the management interface may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MgmtSignal {
    /// SIGHUP (restart, re-read config).
    Hup,
    /// SIGTERM (exit).
    Term,
    /// SIGUSR1 (soft restart).
    Usr1,
    /// SIGUSR2 (status dump to log).
    Usr2,
    /// SIGINT (exit).
    Int,
}

impl MgmtSignal {
    /// Parse the exact upper-case OpenVPN names.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SIGHUP" => MgmtSignal::Hup,
            "SIGTERM" => MgmtSignal::Term,
            "SIGUSR1" => MgmtSignal::Usr1,
            "SIGUSR2" => MgmtSignal::Usr2,
            "SIGINT" => MgmtSignal::Int,
            _ => return None,
        })
    }

    /// The OpenVPN name.
    pub fn name(self) -> &'static str {
        match self {
            MgmtSignal::Hup => "SIGHUP",
            MgmtSignal::Term => "SIGTERM",
            MgmtSignal::Usr1 => "SIGUSR1",
            MgmtSignal::Usr2 => "SIGUSR2",
            MgmtSignal::Int => "SIGINT",
        }
    }
}

/// `--auth-retry` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRetry {
    /// `none`.
    None,
    /// `interact`.
    Interact,
    /// `nointeract`.
    NoInteract,
}

impl AuthRetry {
    /// Parse an auth-retry keyword.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => AuthRetry::None,
            "interact" => AuthRetry::Interact,
            "nointeract" => AuthRetry::NoInteract,
            _ => return None,
        })
    }

    /// Keyword.
    pub fn name(self) -> &'static str {
        match self {
            AuthRetry::None => "none",
            AuthRetry::Interact => "interact",
            AuthRetry::NoInteract => "nointeract",
        }
    }
}

/// A request from the broker to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Static facts: pid and title string. → [`Response::Info`]
    Info,
    /// Current status snapshot. → [`Response::Status`]
    Status,
    /// Global load statistics. → [`Response::LoadStats`]
    LoadStats,
    /// Number of authenticated clients. → [`Response::Count`]
    NClients,
    /// Per-client link byte counters of established clients. → [`Response::ByteCounts`]
    ByteCounts,
    /// Kill every instance with this common name. → [`Response::Count`] (killed)
    KillCommonName(String),
    /// Kill the instance(s) at this IPv4 address and port. → [`Response::Count`]
    KillAddress {
        /// Address.
        ip: Ipv4Addr,
        /// Port.
        port: u16,
    },
    /// Send a control message (`RESTART`, `HALT`, ...) and schedule the client's exit.
    /// → [`Response::Done`]
    ClientKill {
        /// Client id.
        cid: u64,
        /// Control message.
        message: String,
    },
    /// Throw a signal. → [`Response::Signal`]
    Signal(MgmtSignal),
    /// Current verb. → [`Response::Number`]
    GetVerb,
    /// Set verb (0..=15 already checked). → [`Response::Done`]
    SetVerb(u8),
    /// Current mute. → [`Response::Number`]
    GetMute,
    /// Set mute (≥0 already checked). → [`Response::Done`]
    SetMute(u32),
    /// Hold flag. → [`Response::Flag`]
    GetHold,
    /// Set hold flag. → [`Response::Done`]
    SetHold(bool),
    /// Release the current hold. → [`Response::Done`]
    HoldRelease,
    /// Current auth-retry. → [`Response::AuthRetry`]
    GetAuthRetry,
    /// Set auth-retry. → [`Response::Done`]
    SetAuthRetry(AuthRetry),
    /// Forget cached passwords. → [`Response::Done`]
    ForgetPasswords,
    /// Accept a client with client-connect config lines (`client-auth`). → [`Response::Done`]
    ClientAuth {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
        /// Config lines (`push ...`, `ifconfig-push ...`).
        config: Vec<String>,
    },
    /// Accept a client without config (`client-auth-nt`). → [`Response::Done`]
    ClientAuthNt {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
    },
    /// Deny a client. → [`Response::Done`]
    ClientDeny {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
        /// Reason for the log.
        reason: String,
        /// Reason sent to the client.
        client_reason: Option<String>,
    },
    /// Pending auth. → [`Response::Done`]
    ClientPendingAuth {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
        /// Extra (`WEB_AUTH:...`, `CR_TEXT:...`).
        extra: String,
        /// Timeout in seconds.
        timeout: u32,
    },
}

impl Request {
    /// Short name for errors and audit.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Info => "Info",
            Request::Status => "Status",
            Request::LoadStats => "LoadStats",
            Request::NClients => "NClients",
            Request::ByteCounts => "ByteCounts",
            Request::KillCommonName(_) => "KillCommonName",
            Request::KillAddress { .. } => "KillAddress",
            Request::ClientKill { .. } => "ClientKill",
            Request::Signal(_) => "Signal",
            Request::GetVerb => "GetVerb",
            Request::SetVerb(_) => "SetVerb",
            Request::GetMute => "GetMute",
            Request::SetMute(_) => "SetMute",
            Request::GetHold => "GetHold",
            Request::SetHold(_) => "SetHold",
            Request::HoldRelease => "HoldRelease",
            Request::GetAuthRetry => "GetAuthRetry",
            Request::SetAuthRetry(_) => "SetAuthRetry",
            Request::ForgetPasswords => "ForgetPasswords",
            Request::ClientAuth { .. } => "ClientAuth",
            Request::ClientAuthNt { .. } => "ClientAuthNt",
            Request::ClientDeny { .. } => "ClientDeny",
            Request::ClientPendingAuth { .. } => "ClientPendingAuth",
        }
    }
}

/// Outcome of a signal request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalOutcome {
    /// Thrown; the name is the one after `--remap-usr1`.
    Thrown(String),
    /// Ignored because the daemon is in a management hold (SIGHUP/SIGUSR1).
    IgnoredInHold,
}

/// A response from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Static facts.
    Info {
        /// Daemon pid.
        pid: u32,
        /// Title string.
        title: String,
    },
    /// Status snapshot.
    Status(Box<StatusSnapshot>),
    /// Load statistics.
    LoadStats {
        /// Authenticated clients.
        nclients: u32,
        /// Link bytes read (process-wide).
        bytes_in: u64,
        /// Link bytes written (process-wide).
        bytes_out: u64,
    },
    /// A count.
    Count(u32),
    /// `(cid, bytes_in, bytes_out)` of established clients.
    ByteCounts(Vec<(u64, u64, u64)>),
    /// Signal outcome.
    Signal(SignalOutcome),
    /// A number (verb, mute).
    Number(u32),
    /// A flag (hold).
    Flag(bool),
    /// auth-retry mode.
    AuthRetry(AuthRetry),
    /// Success (`true`) or failure (`false`) of an action.
    Done(bool),
}

/// Access role of a management connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
pub enum Role {
    /// Read-only.
    Monitor,
    /// Monitor + kill/client-kill/hold release/SIGUSR2.
    Operator,
    /// Operator + client-auth family; sees secrets.
    Auth,
    /// Everything (secrets redacted).
    Admin,
}

impl Role {
    /// Parse a role name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "monitor" => Some(Role::Monitor),
            "operator" => Some(Role::Operator),
            "auth" => Some(Role::Auth),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Role name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Monitor => "monitor",
            Role::Operator => "operator",
            Role::Auth => "auth",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may run a command that requires `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// Whether secrets are shown to this role.
    pub fn sees_secrets(self) -> bool {
        self == Role::Auth
    }

    /// Whether `>CLIENT:CONNECT|REAUTH|CR_RESPONSE` (which need an answer) are delivered.
    pub fn receives_auth_requests(self) -> bool {
        self >= Role::Auth
    }
}

/// Identity of a management peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peer {
    /// Unix socket peer with its credentials.
    Unix {
        /// Peer uid.
        uid: u32,
        /// Peer (primary) gid.
        gid: u32,
        /// Peer pid, if known.
        pid: Option<i32>,
    },
    /// TCP peer.
    Tcp(SocketAddr),
    /// Unix socket peer whose credentials could not be read.
    UnixUnknown,
}

/// Where a listener listens (used for log texts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenerKind {
    /// Unix socket at this path.
    Unix(String),
    /// TCP socket.
    Tcp,
}

/// Access policy of one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerPolicy {
    /// Kind (for log texts).
    pub kind: ListenerKind,
    /// pw-file password (first line); `None` = no password prompt.
    pub password: Option<String>,
    /// Every connection is `monitor`.
    pub read_only: bool,
    /// Role when no mapping applies.
    pub default_role: Role,
    /// uid → role mappings (unix only), checked first.
    pub uid_roles: Vec<(u32, Role)>,
    /// gid → role mappings (unix only; the peer's primary gid).
    pub gid_roles: Vec<(u32, Role)>,
    /// `--management-client-user` uid.
    pub required_uid: Option<u32>,
    /// `--management-client-group` gid.
    pub required_gid: Option<u32>,
}

impl ListenerPolicy {
    /// An OpenVPN-compatible policy: no mappings, `admin` role for everyone.
    pub fn openvpn_compatible(kind: ListenerKind, password: Option<String>) -> Self {
        ListenerPolicy {
            kind,
            password,
            read_only: false,
            default_role: Role::Admin,
            uid_roles: Vec::new(),
            gid_roles: Vec::new(),
            required_uid: None,
            required_gid: None,
        }
    }
}

/// Outcome of one command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Executed; `ok` is false when the reply was an `ERROR:`.
    Executed {
        /// Reply was not an error.
        ok: bool,
    },
    /// Refused by access control; nothing ran.
    Denied,
    /// Rejected before dispatch (lexer error, binary input).
    Rejected,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix time.
    pub time: i64,
    /// Peer identity.
    pub peer: Peer,
    /// Role of the connection.
    pub role: Role,
    /// Command with secrets redacted.
    pub command: String,
    /// Outcome.
    pub outcome: AuditOutcome,
}

// ---- validation -------------------------------------------------------------------------------

use crate::validate::{check_len, check_text, ValidationError};

/// Longest name, message or reason text in a management message.
pub const MAX_MGMT_TEXT: usize = 4096;
/// Most config lines in one `client-auth` block.
pub const MAX_CLIENT_AUTH_LINES: usize = 1024;
/// Most entries in a status snapshot or env block.
pub const MAX_MGMT_ENTRIES: usize = 65_536;

fn text(field: &'static str, s: &str) -> Result<(), ValidationError> {
    check_text(field, s, MAX_MGMT_TEXT)
}

impl Request {
    /// Check sizes and characters (requests come from the broker, which faces local users).
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Request::KillCommonName(cn) => text("request.common_name", cn),
            Request::ClientKill { message, .. } => text("request.message", message),
            Request::SetVerb(v) if *v > 15 => Err(ValidationError::Field {
                field: "request.verb",
                why: format!("{v} out of range"),
            }),
            Request::ClientAuth { kid, config, .. } => {
                check_kid(*kid)?;
                check_len("request.config", config.len(), 0, MAX_CLIENT_AUTH_LINES)?;
                config.iter().try_for_each(|l| text("request.config", l))
            }
            Request::ClientAuthNt { kid, .. } => check_kid(*kid),
            Request::ClientDeny {
                kid,
                reason,
                client_reason,
                ..
            } => {
                check_kid(*kid)?;
                text("request.reason", reason)?;
                client_reason
                    .as_deref()
                    .map_or(Ok(()), |c| text("request.client_reason", c))
            }
            Request::ClientPendingAuth { kid, extra, .. } => {
                check_kid(*kid)?;
                text("request.extra", extra)
            }
            _ => Ok(()),
        }
    }
}

fn check_kid(kid: u32) -> Result<(), ValidationError> {
    if kid > 7 {
        return Err(ValidationError::Field {
            field: "request.kid",
            why: format!("{kid} is not a key id (0..=7)"),
        });
    }
    Ok(())
}

impl StatusSnapshot {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        text("status.title", &self.title)?;
        check_len("status.clients", self.clients.len(), 0, MAX_MGMT_ENTRIES)?;
        check_len("status.routes", self.routes.len(), 0, MAX_MGMT_ENTRIES)?;
        for c in &self.clients {
            if let Some(cn) = &c.common_name {
                text("status.common_name", cn)?;
            }
            if let Some(u) = &c.username {
                text("status.username", u)?;
            }
            text("status.cipher", &c.data_cipher)?;
        }
        Ok(())
    }
}

impl Response {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Response::Info { title, .. } => text("response.title", title),
            Response::Status(s) => s.validate(),
            Response::ByteCounts(v) => {
                check_len("response.bytecounts", v.len(), 0, MAX_MGMT_ENTRIES)
            }
            Response::Signal(SignalOutcome::Thrown(name)) => text("response.signal", name),
            _ => Ok(()),
        }
    }
}

impl MgmtEvent {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            MgmtEvent::Log(r) => text("event.log", &r.message),
            MgmtEvent::State(s) => {
                text("event.state.name", &s.name)?;
                text("event.state.detail", &s.detail)
            }
            MgmtEvent::Echo(e) => text("event.echo", &e.text),
            MgmtEvent::Hold { .. } | MgmtEvent::HoldReleased => Ok(()),
            MgmtEvent::Client { env, .. } => {
                check_len("event.env", env.vars.len(), 0, MAX_MGMT_ENTRIES)?;
                for (k, v) in &env.vars {
                    text("event.env.name", k)?;
                    text("event.env.value", v)?;
                }
                env.peer_info
                    .iter()
                    .try_for_each(|l| text("event.env.peer_info", l))
            }
            MgmtEvent::ClientAddress { addr, .. } => text("event.address", addr),
            MgmtEvent::Notify(t) | MgmtEvent::Fatal(t) => text("event.text", t),
        }
    }
}

impl ListenerPolicy {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let ListenerKind::Unix(p) = &self.kind {
            text("policy.path", p)?;
        }
        if let Some(p) = &self.password {
            check_text("policy.password", p, 1024)?;
        }
        check_len("policy.uid_roles", self.uid_roles.len(), 0, 1024)?;
        check_len("policy.gid_roles", self.gid_roles.len(), 0, 1024)
    }
}

impl AuditRecord {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        text("audit.command", &self.command)
    }
}
