//! One generated client session, sans-IO: bytes and a time value in, datagrams and a deadline out.
//! It runs what a stock OpenVPN 2.6 client (UDP, `client`, tls-crypt) does up to "Initialization
//! Sequence Completed", on Bulwark's protocol engine in client role, and then ends the session.
//!
//! ```text
//! let mut s = Session::new(profile, &seed, now);   // seed: SEED_LEN random bytes
//! s.start(now);                                   // queues P_CONTROL_HARD_RESET_CLIENT_V2
//! while s.poll_transmit(now, now_unix, &mut buf)? { send(&buf) }   // after every call below
//! s.on_datagram(&datagram, now, now_unix)?;       // a datagram from the server
//! s.on_timeout(now)?;                             // when now >= s.next_deadline()
//! s.completed_at() / s.phase() / s.exit() / s.stats()
//! ```
//!
//! Sequence (digest §9): hard reset → the server's reset (its ACK of our reset starts TLS) → TLS over
//! P_CONTROL_V1 (`reliable.rs` for ordering, ACKs and retransmission, `wrap.rs` for tls-crypt in the
//! client direction) → our key-method-2 message alone in the first application-data record
//! (`km2::build_client_message`) → the server's key-method-2 message → key state active → `PUSH_REPLY`
//! (both servers push unasked to a client with IV_PROTO REQUEST_PUSH; `PUSH_REQUEST` goes out at the
//! first 1-second tick of the session after the key exchange, like a 2.6 client's `wait_for_connect`
//! timer, then every 5 s) = **completed**. Then, like the stock client: the data-channel key is derived
//! (EKM or legacy PRF, `data::DataKey` in client role), and the session ends with `EXIT` on the control
//! channel when the server pushed `protocol-flags cc-exit` (the session is done when the server ACKed
//! it), else with one OCC_EXIT data packet. With a hold (`--hold`) the session first stays open
//! ([`Phase::Held`]) for that long: the runner sends inner packets through it ([`Session::seal_data`],
//! P_DATA_V2 under the data key with the pushed peer-id, the pushed compression framing if any), a
//! keepalive ping goes out when nothing was sent for the pushed `ping` interval, control packets are
//! still ACKed, and the server's data packets (its pings) are ignored; then it ends as above.
//!
//! Errors that end the session are [`SessionError`]s; a datagram that does not authenticate or belongs
//! to another session is dropped and counted, as OpenVPN does.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_worker::proto::data::{Cipher, DataError, DataKey, DataKeyConfig, Digest};
use bulwark_worker::proto::keys::{Key2, KeysError, LegacyKeySource, Role, EKM_LABEL_DATA_KEYS};
use bulwark_worker::proto::km2::{self, IvProto, Km2Error, OccSettings, ServerKeyMessage};
use bulwark_worker::proto::magic::{CompressionFraming, MagicError, PING_PAYLOAD};
use bulwark_worker::proto::packet::{split_op_key, Opcode, SessionId, SID_LEN};
use bulwark_worker::proto::reliable::{
    control_payload_budget, Reliable, ReliableError, IPV4_UDP_OVERHEAD, IPV6_UDP_OVERHEAD,
    TLS_MTU_DEFAULT,
};
use bulwark_worker::proto::wrap::{ControlWrapper, ReplayParams, StaticKey, WrapError};
use bulwark_worker::proto::{magic, push};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// `--tls-timeout` default: first control-channel retransmission after 2 s, doubling.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(2);
/// A 2.6 client repeats PUSH_REQUEST every 5 s (`PUSH_REQUEST_INTERVAL`).
pub const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// The data ciphers of a default 2.6 client (its `IV_CIPHERS`); a pushed cipher must be one of them.
pub const DATA_CIPHERS: [Cipher; 3] = [
    Cipher::Aes256Gcm,
    Cipher::Aes128Gcm,
    Cipher::ChaCha20Poly1305,
];
/// Random bytes a session needs: session id, pre-master, random1, random2, one spare IV block.
pub const SEED_LEN: usize = SID_LEN + 48 + 32 + 32 + 16;
/// Keepalive interval while held when the server pushed no `ping` (OpenVPN's `keepalive 10 ...`).
pub const DEFAULT_PING: Duration = Duration::from_secs(10);
/// Largest plaintext accepted before the server's key-method-2 message could be parsed.
const MAX_PENDING_PLAINTEXT: usize = 16 * 1024;

/// Errors that end a session. [`SessionError::reason`] is the key it is counted under.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// rustls failed (handshake failure, bad certificate, alert from the server).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Moving bytes in or out of rustls failed.
    #[error("TLS buffer: {0}")]
    TlsIo(std::io::Error),
    /// The server closed the TLS connection.
    #[error("TLS connection closed by the server")]
    TlsClosed,
    /// The reliability layer refused a packet (cannot happen with the budget used; reported).
    #[error("reliability layer: {0}")]
    Reliable(#[from] ReliableError),
    /// Wrapping an outgoing control packet failed.
    #[error("control packet wrap: {0}")]
    Wrap(#[from] WrapError),
    /// The server's key-method-2 message is malformed, or ours could not be built.
    #[error("key-method-2: {0}")]
    Km2(#[from] Km2Error),
    /// A control message could not be encoded.
    #[error("control message: {0}")]
    Message(#[from] push::PushError),
    /// The server answered AUTH_FAILED.
    #[error("server said {0}")]
    AuthFailed(String),
    /// The server sent RESTART, HALT or EXIT before the handshake completed.
    #[error("server said {0}")]
    ServerSignal(String),
    /// The PUSH_REPLY cannot be used as a 2.6 client would (no or a foreign cipher, bad peer-id).
    #[error("unusable PUSH_REPLY: {0}")]
    Push(String),
    /// Data-channel key derivation failed.
    #[error("data-channel keys: {0}")]
    Keys(#[from] KeysError),
    /// Data-channel key setup or the OCC_EXIT packet failed.
    #[error("data channel: {0}")]
    Data(#[from] DataError),
    /// The pushed compression framing could not be applied to a data packet.
    #[error("data framing: {0}")]
    Framing(#[from] MagicError),
}

impl SessionError {
    /// Short key for the failure counts of the report.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Tls(_) | SessionError::TlsIo(_) => "tls_error",
            SessionError::TlsClosed => "tls_closed",
            SessionError::Reliable(_) | SessionError::Wrap(_) | SessionError::Message(_) => {
                "internal"
            }
            SessionError::Km2(_) => "bad_key_method_2",
            SessionError::AuthFailed(_) => "auth_failed",
            SessionError::ServerSignal(_) => "server_restart_halt_exit",
            SessionError::Push(_)
            | SessionError::Keys(_)
            | SessionError::Data(_)
            | SessionError::Framing(_) => "bad_push_reply",
        }
    }
}

/// What every session of a run shares: TLS configuration, wrap key, the strings a 2.6 client sends.
#[derive(Debug)]
pub struct Profile {
    tls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    wrap_key: Option<StaticKey>,
    options: String,
    peer_info: String,
    budget: usize,
    push_request_tick: Duration,
    exit_wait: Duration,
    hold: Duration,
}

impl Profile {
    /// `push_request_tick`: PUSH_REQUEST goes out at the first multiple of it (from the session start)
    /// after the key exchange, zero = right then. `exit_wait`: how long to wait for the server's ACK of
    /// EXIT before the session is given up as done anyway. `hold`: how long a completed session stays
    /// open before it is ended (zero: at once).
    pub fn new(
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        ipv6: bool,
        wrap_key: Option<StaticKey>,
        push_request_tick: Duration,
        exit_wait: Duration,
        hold: Duration,
    ) -> Result<Self, SessionError> {
        let overhead = wrapper(wrap_key.as_ref()).overhead();
        let ip = if ipv6 {
            IPV6_UDP_OVERHEAD
        } else {
            IPV4_UDP_OVERHEAD
        };
        let budget = control_payload_budget(TLS_MTU_DEFAULT, overhead, ip, 0)?;
        Ok(Self {
            tls,
            server_name,
            wrap_key,
            options: OccSettings::default().options_string(true),
            peer_info: peer_info(),
            budget,
            push_request_tick,
            exit_wait,
            hold,
        })
    }
}

fn wrapper(key: Option<&StaticKey>) -> ControlWrapper {
    match key {
        Some(k) => ControlWrapper::tls_crypt(k, false, ReplayParams::default()),
        None => ControlWrapper::none(),
    }
}

/// `IV_PROTO` of a 2.6.14 client: DATA_V2, REQUEST_PUSH, TLS_KEY_EXPORT, AUTH_PENDING_KW, DNS_OPTION,
/// CC_EXIT_NOTIFY, AUTH_FAIL_TEMP, DYN_TLS_CRYPT (= 990, digest §5.5).
pub const IV_PROTO_2_6: u32 = IvProto::DATA_V2
    | IvProto::REQUEST_PUSH
    | IvProto::TLS_KEY_EXPORT
    | IvProto::AUTH_PENDING_KW
    | IvProto::DNS_OPTION
    | IvProto::CC_EXIT_NOTIFY
    | IvProto::AUTH_FAIL_TEMP
    | IvProto::DYN_TLS_CRYPT;

/// The peer-info of a default 2.6.14 client on Linux (digest §5.4), byte for byte.
pub fn peer_info() -> String {
    let ciphers: Vec<&str> = DATA_CIPHERS.iter().map(|c| c.name()).collect();
    format!(
        "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\nIV_CIPHERS={}\n\
         IV_PROTO={IV_PROTO_2_6}\nIV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n",
        ciphers.join(":")
    )
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Our hard reset is out, no reset from the server yet.
    Reset,
    /// TLS handshake running.
    Tls,
    /// TLS done, key-method-2 messages being exchanged.
    KeyExchange,
    /// Key state active, waiting for PUSH_REPLY.
    Push,
    /// Completed and held open (`--hold`): data may be sent.
    Held,
    /// Completed; EXIT (or OCC_EXIT) on its way.
    Exiting,
    /// Finished: nothing more to send.
    Done,
}

impl Phase {
    /// Name used in the report (`timeout_<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Reset => "reset",
            Phase::Tls => "tls",
            Phase::KeyExchange => "key_exchange",
            Phase::Push => "push",
            Phase::Held => "hold",
            Phase::Exiting => "exit",
            Phase::Done => "done",
        }
    }
}

/// How a completed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// `EXIT` sent on the control channel and ACKed by the server.
    CcExitAcked,
    /// `EXIT` sent, no ACK within the exit wait.
    CcExitUnacked,
    /// No `cc-exit` pushed: one OCC_EXIT data packet sent.
    OccExit,
}

/// Per-session counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Datagrams produced.
    pub sent: u64,
    /// Reliable control packets sent again (same message id).
    pub retransmits: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped (failed authentication, replay, other session, bad opcode).
    pub dropped: u64,
    /// PUSH_REQUESTs sent.
    pub push_requests: u64,
}

/// One client session. See the module documentation.
pub struct Session {
    profile: Arc<Profile>,
    sid: SessionId,
    wrap: ControlWrapper,
    rel: Reliable,
    tls: ClientConnection,
    phase: Phase,
    started: Instant,
    tls_out: Vec<u8>,
    plain_in: Vec<u8>,
    pre_master: [u8; 48],
    random1: [u8; 32],
    random2: [u8; 32],
    iv_seed: [u8; 16],
    server_km2: Option<ServerKeyMessage>,
    km2_sent: bool,
    next_push_request: Option<Instant>,
    push_options: Vec<String>,
    completed_at: Option<Instant>,
    exit_deadline: Option<Instant>,
    exit: Option<ExitKind>,
    pending_data: Option<Vec<u8>>,
    data_key: Option<DataKey>,
    framing: CompressionFraming,
    cc_exit: bool,
    inner_source: Option<Ipv4Addr>,
    hold_until: Option<Instant>,
    held_fully: bool,
    ping_interval: Duration,
    next_ping: Option<Instant>,
    next_new_id: u32,
    stats: SessionStats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .field("phase", &self.phase)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session; `seed` supplies its random values (session id, key-method-2 randoms).
    pub fn new(
        profile: Arc<Profile>,
        seed: &[u8; SEED_LEN],
        now: Instant,
    ) -> Result<Self, SessionError> {
        let mut sid = [0u8; SID_LEN];
        sid.copy_from_slice(&seed[..SID_LEN]);
        if sid == [0; SID_LEN] {
            sid[0] = 1; // an all-zero session id is invalid
        }
        let sid = SessionId(sid);
        let mut pre_master = [0u8; 48];
        let mut random1 = [0u8; 32];
        let mut random2 = [0u8; 32];
        let mut iv_seed = [0u8; 16];
        let mut at = SID_LEN;
        for field in [
            &mut pre_master[..],
            &mut random1[..],
            &mut random2[..],
            &mut iv_seed[..],
        ] {
            field.copy_from_slice(&seed[at..at + field.len()]);
            at += field.len();
        }
        let tls = ClientConnection::new(profile.tls.clone(), profile.server_name.clone())?;
        Ok(Self {
            wrap: wrapper(profile.wrap_key.as_ref()),
            rel: Reliable::new(0, sid, SessionId::default(), TLS_TIMEOUT, false),
            profile,
            sid,
            tls,
            phase: Phase::Reset,
            started: now,
            tls_out: Vec::new(),
            plain_in: Vec::new(),
            pre_master,
            random1,
            random2,
            iv_seed,
            server_km2: None,
            km2_sent: false,
            next_push_request: None,
            push_options: Vec::new(),
            completed_at: None,
            exit_deadline: None,
            exit: None,
            pending_data: None,
            data_key: None,
            framing: CompressionFraming::None,
            cc_exit: false,
            inner_source: None,
            hold_until: None,
            held_fully: false,
            ping_interval: DEFAULT_PING,
            next_ping: None,
            next_new_id: 0,
            stats: SessionStats::default(),
        })
    }

    /// Queues the hard reset (message 0).
    pub fn start(&mut self, now: Instant) -> Result<(), SessionError> {
        self.started = now;
        self.rel
            .queue(Opcode::ControlHardResetClientV2, Vec::new(), now)?;
        Ok(())
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When PUSH_REPLY arrived.
    pub fn completed_at(&self) -> Option<Instant> {
        self.completed_at
    }

    /// How the session ended (once [`Phase::Done`]).
    pub fn exit(&self) -> Option<ExitKind> {
        self.exit
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The IPv4 address the server assigned (pushed `ifconfig`), the source of inner packets.
    pub fn inner_source(&self) -> Option<Ipv4Addr> {
        self.inner_source
    }

    /// Whether the session was held for its whole `--hold` (ended by the hold timer, not by an error
    /// or the end of the run).
    pub fn held_fully(&self) -> bool {
        self.held_fully
    }

    /// Encrypts the inner packet `inner` as a data packet (P_DATA_V2 with the pushed peer-id, else
    /// P_DATA_V1; the pushed compression framing) into `buf` and returns the packet's range in it.
    /// `None` unless the session is [`Phase::Held`].
    pub fn seal_data(
        &mut self,
        inner: &[u8],
        buf: &mut Vec<u8>,
        now: Instant,
    ) -> Result<Option<Range<usize>>, SessionError> {
        if self.phase != Phase::Held {
            return Ok(None);
        }
        let range = self.seal(inner, buf)?;
        // OpenVPN pings only when nothing else went out for the interval
        self.next_ping = Some(now + self.ping_interval);
        Ok(Some(range))
    }

    /// Frames and encrypts `payload` into `buf` under the data key.
    fn seal(&mut self, payload: &[u8], buf: &mut Vec<u8>) -> Result<Range<usize>, SessionError> {
        let key = self
            .data_key
            .as_mut()
            .ok_or_else(|| SessionError::Push("no data key".into()))?;
        let framing = self.framing;
        let start = key.headroom() + framing.headroom();
        let end = start + payload.len();
        buf.clear();
        buf.resize(end + framing.tailroom() + key.tailroom(), 0);
        buf[start..end].copy_from_slice(payload);
        let framed = framing.encode(buf, start..end)?;
        // AEAD only (DATA_CIPHERS), so no IV is drawn; a CBC key would take the seeded block
        let iv = self.iv_seed;
        Ok(key.encrypt(buf, framed, &mut |b: &mut [u8]| {
            b.iter_mut().zip(iv.iter()).for_each(|(d, s)| *d = *s);
        })?)
    }

    /// Earliest time [`Session::on_timeout`] / [`Session::poll_transmit`] have work without input.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        [
            self.rel.next_timeout(),
            self.next_push_request,
            self.exit_deadline,
            self.hold_until,
            self.next_ping,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Next datagram to send into `out` (cleared first); `false` when there is nothing to send.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        now_unix: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, SessionError> {
        out.clear();
        if self.phase == Phase::Done {
            return Ok(false);
        }
        if let Some(p) = self.pending_data.take() {
            out.extend_from_slice(&p);
            self.stats.sent += 1;
            return Ok(true);
        }
        if let Some(pkt) = self.rel.poll_transmit(now) {
            if let Some(id) = pkt.message_id {
                if id < self.next_new_id {
                    self.stats.retransmits += 1;
                } else {
                    self.next_new_id = id.wrapping_add(1);
                }
            }
            self.wrap.wrap(&pkt, now_unix, out)?;
            self.stats.sent += 1;
            return Ok(true);
        }
        if self.exit == Some(ExitKind::OccExit) {
            // the OCC_EXIT packet and the ACK of PUSH_REPLY are out
            self.phase = Phase::Done;
        }
        Ok(false)
    }

    /// Runs the timers: PUSH_REQUEST, the end of the hold, the keepalive ping while held, the exit
    /// wait. (Retransmissions come from `poll_transmit`.)
    pub fn on_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.phase == Phase::Held && self.hold_until.is_some_and(|t| now >= t) {
            self.held_fully = true;
            self.begin_exit(now)?;
        }
        if self.phase == Phase::Held && self.next_ping.is_some_and(|t| now >= t) {
            self.next_ping = Some(now + self.ping_interval);
            if self.pending_data.is_none() {
                let mut buf = Vec::with_capacity(64);
                let range = self.seal(&PING_PAYLOAD, &mut buf)?;
                self.pending_data = Some(buf[range].to_vec());
            }
        }
        if self.phase == Phase::Push && self.next_push_request.is_some_and(|t| now >= t) {
            self.next_push_request = Some(now + PUSH_REQUEST_INTERVAL);
            self.send_message("PUSH_REQUEST", now)?;
            self.stats.push_requests += 1;
        }
        if self.phase == Phase::Exiting && self.exit_deadline.is_some_and(|t| now >= t) {
            self.exit = Some(ExitKind::CcExitUnacked);
            self.phase = Phase::Done;
        }
        Ok(())
    }

    /// Processes one datagram from the server.
    pub fn on_datagram(
        &mut self,
        datagram: &[u8],
        now: Instant,
        now_unix: u64,
    ) -> Result<(), SessionError> {
        self.stats.received += 1;
        if self.phase == Phase::Done {
            return Ok(());
        }
        let Some(&first) = datagram.first() else {
            self.stats.dropped += 1;
            return Ok(());
        };
        match split_op_key(first) {
            Ok((op, _)) if op.is_data() => return Ok(()), // pings after the push: not needed
            Ok(_) => {}
            Err(_) => {
                self.stats.dropped += 1;
                return Ok(());
            }
        }
        let pkt = match self.wrap.unwrap(datagram, now_unix) {
            Ok(p) => p,
            Err(_) => {
                self.stats.dropped += 1;
                return Ok(());
            }
        };
        // key_id 0 only (no renegotiation within a generated session); server opcodes only
        if pkt.key_id != 0 || pkt.opcode.is_client_only() {
            self.stats.dropped += 1;
            return Ok(());
        }
        let remote = self.rel.remote_session();
        if remote.is_zero() {
            if pkt.opcode != Opcode::ControlHardResetServerV2 {
                self.stats.dropped += 1;
                return Ok(());
            }
            self.rel.set_remote_session(pkt.session_id);
        } else if pkt.session_id != remote {
            self.stats.dropped += 1;
            return Ok(());
        }
        if self.rel.on_acks(&pkt.acks).is_err() {
            self.stats.dropped += 1;
            return Ok(());
        }
        if let Some(id) = pkt.message_id {
            self.rel.on_receive(pkt.opcode, id, &pkt.payload);
        }
        while let Some(d) = self.rel.next_in_order() {
            if d.opcode.is_hard_reset() {
                // message 0: early-negotiation TLVs (none for tls-crypt / no wrapping)
                continue;
            }
            if self.phase < Phase::Tls {
                // TLS data before the reset exchange finished: OpenVPN would not get here
                continue;
            }
            self.feed_tls(&d.payload)?;
        }
        self.progress(now)
    }

    fn feed_tls(&mut self, mut bytes: &[u8]) -> Result<(), SessionError> {
        while !bytes.is_empty() {
            let n = self.tls.read_tls(&mut bytes).map_err(SessionError::TlsIo)?;
            let state = self.tls.process_new_packets()?;
            if state.peer_has_closed() {
                return Err(SessionError::TlsClosed);
            }
            let avail = state.plaintext_bytes_to_read();
            if avail > 0 {
                if self.plain_in.len() + avail > MAX_PENDING_PLAINTEXT {
                    return Err(SessionError::TlsIo(std::io::Error::other(
                        "too much plaintext from the server",
                    )));
                }
                let at = self.plain_in.len();
                self.plain_in.resize(at + avail, 0);
                self.tls
                    .reader()
                    .read_exact(&mut self.plain_in[at..])
                    .map_err(SessionError::TlsIo)?;
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Moves the session along after input: starts TLS, writes our key-method-2 message, parses what
    /// the server wrote, queues TLS output.
    fn progress(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.phase == Phase::Reset
            && !self.rel.remote_session().is_zero()
            && self.rel.all_acked()
        {
            // our reset is ACKed (S_START): the ClientHello may go
            self.phase = Phase::Tls;
        }
        if self.phase == Phase::Tls && !self.tls.is_handshaking() && !self.km2_sent {
            let mut msg = Vec::with_capacity(512);
            km2::build_client_message(
                &self.pre_master,
                &self.random1,
                &self.random2,
                &self.profile.options,
                None,
                &self.profile.peer_info,
                &mut msg,
            )?;
            // one write = one record, alone
            self.tls
                .writer()
                .write_all(&msg)
                .map_err(SessionError::TlsIo)?;
            self.km2_sent = true;
            self.phase = Phase::KeyExchange;
        }
        if self.phase == Phase::KeyExchange && self.server_km2.is_none() {
            self.read_server_key_message()?;
        }
        self.flush_tls(now)?;
        if self.phase == Phase::KeyExchange
            && self.server_km2.is_some()
            && self.rel.all_acked()
            && self.tls_out.is_empty()
        {
            // key state active (S_ACTIVE): PUSH_REQUEST at the next tick unless PUSH_REPLY comes first
            self.phase = Phase::Push;
            self.next_push_request = Some(self.next_tick(now));
        }
        if self.phase == Phase::Push || self.phase == Phase::Held {
            // like OpenVPN, text messages are read once the key state is active (tls_rec_payload)
            self.read_messages(now)?;
        }
        if self.phase == Phase::Exiting
            && self.exit.is_none()
            && self.rel.all_acked()
            && self.tls_out.is_empty()
        {
            self.exit = Some(ExitKind::CcExitAcked);
            self.phase = Phase::Done;
        }
        Ok(())
    }

    /// First multiple of the push-request tick after the session start that is not before `now`.
    fn next_tick(&self, now: Instant) -> Instant {
        let tick = self.profile.push_request_tick;
        if tick.is_zero() {
            return now;
        }
        let since = now.saturating_duration_since(self.started);
        let n = since.as_nanos().div_ceil(tick.as_nanos()).max(1);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.started + tick.saturating_mul(n)
    }

    /// Parses the server's key-method-2 message at the start of the plaintext; the server sends it
    /// alone in its record, so what follows it belongs to later records and is kept.
    fn read_server_key_message(&mut self) -> Result<(), SessionError> {
        if self.plain_in.is_empty() {
            return Ok(());
        }
        match ServerKeyMessage::parse(&self.plain_in) {
            Ok((m, used)) => {
                self.server_km2 = Some(m);
                self.plain_in.drain(..used);
                Ok(())
            }
            Err(Km2Error::Truncated { .. }) => Ok(()), // the rest comes with the next record
            Err(e) => Err(e.into()),
        }
    }

    fn read_messages(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.plain_in.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.plain_in);
        for msg in push::extract_messages(&buf) {
            let Ok(msg) = msg else {
                continue; // OpenVPN drops an unterminated or non-printable message
            };
            if self.phase != Phase::Push && self.phase != Phase::Held {
                break; // exiting: the rest does not matter
            }
            if self.phase == Phase::Held {
                // held: only a signal from the server matters (it ends the session as an error)
                if msg.starts_with("RESTART") || msg.starts_with("HALT") || msg == "EXIT" {
                    return Err(SessionError::ServerSignal(msg.to_string()));
                }
                continue;
            }
            if let Some(rest) = msg.strip_prefix("PUSH_REPLY") {
                let mut last = true;
                for opt in rest.split(',').filter(|o| !o.is_empty()) {
                    if opt == "push-continuation 2" {
                        last = false;
                    } else if !opt.starts_with("push-continuation") {
                        self.push_options.push(opt.to_string());
                    }
                }
                if last {
                    self.on_push_reply(now)?;
                }
            } else if msg.starts_with("AUTH_FAILED") {
                return Err(SessionError::AuthFailed(msg.to_string()));
            } else if msg.starts_with("RESTART") || msg.starts_with("HALT") || msg == "EXIT" {
                return Err(SessionError::ServerSignal(msg.to_string()));
            }
            // AUTH_PENDING, INFO, INFO_PRE and unknown messages: keep waiting
        }
        Ok(())
    }

    fn push_option(&self, name: &str) -> Option<&str> {
        self.push_options.iter().find_map(|o| {
            o.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .map(str::trim)
        })
    }

    /// PUSH_REPLY complete: the handshake is done. Derive the data key like the client does, then hold
    /// the session open or end it the way the server negotiated.
    fn on_push_reply(&mut self, now: Instant) -> Result<(), SessionError> {
        self.next_push_request = None;
        let cipher_name = self
            .push_option("cipher")
            .ok_or_else(|| SessionError::Push("no cipher pushed".into()))?;
        let cipher = Cipher::parse(cipher_name)
            .ok()
            .filter(|c| DATA_CIPHERS.contains(c))
            .ok_or_else(|| SessionError::Push(format!("cipher {cipher_name} not allowed")))?;
        let peer_id = match self.push_option("peer-id") {
            None => None,
            Some(p) => Some(
                p.parse::<u32>()
                    .ok()
                    .filter(|&p| p < 0x00FF_FFFF)
                    .ok_or_else(|| SessionError::Push(format!("bad peer-id {p}")))?,
            ),
        };
        let (ekm, cc_exit) = {
            let flags: Vec<&str> = self
                .push_option("protocol-flags")
                .map(|f| f.split_whitespace().collect())
                .unwrap_or_default();
            (
                flags.contains(&"tls-ekm") || self.push_option("key-derivation") == Some("tls-ekm"),
                flags.contains(&"cc-exit"),
            )
        };
        let key2 = if ekm {
            let ekm = self.tls.export_keying_material(
                [0u8; 256],
                EKM_LABEL_DATA_KEYS.as_bytes(),
                None,
            )?;
            Key2::from_ekm(&ekm)?
        } else {
            let server = self
                .server_km2
                .as_ref()
                .ok_or_else(|| SessionError::Push("no server key-method-2 message".into()))?;
            Key2::from_legacy_prf(&LegacyKeySource {
                client_pre_master: &self.pre_master,
                client_random1: &self.random1,
                client_random2: &self.random2,
                server_random1: &server.random1,
                server_random2: &server.random2,
                client_session_id: &self.sid.0,
                server_session_id: &self.rel.remote_session().0,
            })?
        };
        let key = DataKey::from_key2(
            &DataKeyConfig {
                cipher,
                auth: Digest::Sha1,
                key_id: 0,
                peer_id,
                replay_window: 64,
                replay_seconds: 15,
            },
            &key2,
            Role::Client,
        )?;
        self.data_key = Some(key);
        self.cc_exit = cc_exit;
        self.framing = self.pushed_framing();
        self.inner_source = self
            .push_option("ifconfig")
            .and_then(|v| v.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        if let Some(secs) = self
            .push_option("ping")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&s| s > 0)
        {
            self.ping_interval = Duration::from_secs(secs);
        }
        // "Initialization Sequence Completed"
        self.completed_at = Some(now);
        if self.profile.hold.is_zero() {
            self.begin_exit(now)
        } else {
            self.phase = Phase::Held;
            self.hold_until = Some(now + self.profile.hold);
            self.next_ping = Some(now + self.ping_interval);
            Ok(())
        }
    }

    /// The compression framing a 2.6 client applies for the pushed `compress`/`comp-lzo` option when
    /// it sends uncompressed: stub-v2/lz4-v2 = the v2 header, LZO = the 0xFA byte, stub/lz4 = the
    /// swapped 0xFB byte; none pushed = none.
    fn pushed_framing(&self) -> CompressionFraming {
        if self.push_options.iter().any(|o| o.starts_with("comp-lzo")) {
            return CompressionFraming::StubV1;
        }
        match self
            .push_options
            .iter()
            .find(|o| *o == "compress" || o.starts_with("compress "))
            .map(|o| o.trim_start_matches("compress").trim())
        {
            None => CompressionFraming::None,
            Some("stub-v2" | "lz4-v2") => CompressionFraming::StubV2,
            Some("lzo") => CompressionFraming::StubV1,
            Some(_) => CompressionFraming::StubV1Swap,
        }
    }

    /// Ends a completed session: `EXIT` on the control channel if the server pushed `cc-exit`, else
    /// one OCC_EXIT data packet.
    fn begin_exit(&mut self, now: Instant) -> Result<(), SessionError> {
        self.phase = Phase::Exiting;
        self.hold_until = None;
        self.next_ping = None;
        if self.cc_exit {
            self.send_message("EXIT", now)?;
            self.exit_deadline = Some(now + self.profile.exit_wait);
        } else {
            let mut buf = Vec::with_capacity(64);
            let range = self.seal(&magic::occ_exit(), &mut buf)?;
            // replaces a ping not yet sent: the OCC_EXIT says more
            self.pending_data = Some(buf[range].to_vec());
            self.exit = Some(ExitKind::OccExit);
        }
        Ok(())
    }

    fn send_message(&mut self, msg: &str, now: Instant) -> Result<(), SessionError> {
        let mut m = Vec::with_capacity(msg.len() + 1);
        push::encode_message(msg, &mut m)?;
        self.tls
            .writer()
            .write_all(&m)
            .map_err(SessionError::TlsIo)?;
        self.flush_tls(now)
    }

    /// Pulls TLS output and queues it as P_CONTROL_V1 packets as far as the send window allows.
    fn flush_tls(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.phase < Phase::Tls {
            return Ok(());
        }
        while self.tls.wants_write() {
            self.tls
                .write_tls(&mut self.tls_out)
                .map_err(SessionError::TlsIo)?;
        }
        if !self.tls_out.is_empty() {
            let n = self.rel.queue_stream(
                Opcode::ControlV1,
                &self.tls_out,
                self.profile.budget,
                now,
            )?;
            self.tls_out.drain(..n);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! A session against a minimal in-process server made of the same engine parts in server role
    //! (tls-crypt NORMAL direction, `Reliable`, rustls `ServerConnection`, the worker's key-method-2
    //! parser and builder), with certificates from rcgen.

    use super::*;
    use bulwark_worker::proto::km2::{build_server_message, ClientKeyMessage, Km2Limits};
    use bulwark_worker::proto::magic::{Magic, OccMessage};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, ServerConfig, ServerConnection};

    const NOW_UNIX: u64 = 1_800_000_000;
    const PUSH: &str = "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,\
        ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,\
        protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500";

    struct Pki {
        roots: RootCertStore,
        server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            let cert = p.signed_by(&key, &issuer).unwrap();
            (
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_cert.der().to_vec()))
            .unwrap();
        Pki {
            server: leaf("server", ExtendedKeyUsagePurpose::ServerAuth),
            client: leaf("client1", ExtendedKeyUsagePurpose::ClientAuth),
            roots,
        }
    }

    /// What the fake server does after the key exchange.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Reply {
        /// PUSH_REPLY at once (IV_PROTO REQUEST_PUSH), with or without `cc-exit`.
        PushUnasked { cc_exit: bool },
        /// PUSH_REPLY only on PUSH_REQUEST.
        PushOnRequest,
        /// AUTH_FAILED.
        AuthFailed,
    }

    struct FakeServer {
        wrap: ControlWrapper,
        rel: Option<Reliable>,
        tls: ServerConnection,
        plain: Vec<u8>,
        client_km2: Option<ClientKeyMessage>,
        reply: Reply,
        replied: bool,
        key: Option<DataKey>,
        push_requests: u32,
        exit_received: bool,
        occ_exit_received: bool,
        /// Decrypted data payloads other than OCC_EXIT (inner packets, pings).
        data_in: Vec<Vec<u8>>,
        out: Vec<Vec<u8>>,
    }

    impl FakeServer {
        fn new(p: &Pki, wrap_key: &StaticKey, reply: Reply) -> Self {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(p.roots.clone()),
                provider.clone(),
            )
            .build()
            .unwrap();
            let cfg = ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(p.server.0.clone(), p.server.1.clone_key())
                .unwrap();
            Self {
                wrap: ControlWrapper::tls_crypt(wrap_key, true, ReplayParams::default()),
                rel: None,
                tls: ServerConnection::new(Arc::new(cfg)).unwrap(),
                plain: Vec::new(),
                client_km2: None,
                reply,
                replied: false,
                key: None,
                push_requests: 0,
                exit_received: false,
                occ_exit_received: false,
                data_in: Vec::new(),
                out: Vec::new(),
            }
        }

        fn on_datagram(&mut self, d: &[u8], now: Instant) {
            if split_op_key(d[0]).unwrap().0.is_data() {
                let mut d = d.to_vec();
                let r = self
                    .key
                    .as_mut()
                    .unwrap()
                    .decrypt(&mut d, NOW_UNIX)
                    .unwrap();
                if let Magic::Occ(OccMessage::Exit) = magic::classify(&d[r.clone()]) {
                    self.occ_exit_received = true;
                } else {
                    self.data_in.push(d[r].to_vec());
                }
                return;
            }
            let pkt = self.wrap.unwrap(d, NOW_UNIX).unwrap();
            if self.rel.is_none() {
                assert_eq!(pkt.opcode, Opcode::ControlHardResetClientV2);
                assert!(pkt.acks.is_empty());
                let mut rel =
                    Reliable::new(0, SessionId([9; 8]), pkt.session_id, TLS_TIMEOUT, false);
                rel.queue(Opcode::ControlHardResetServerV2, Vec::new(), now)
                    .unwrap();
                self.rel = Some(rel);
            }
            let rel = self.rel.as_mut().unwrap();
            rel.on_acks(&pkt.acks).unwrap();
            if let Some(id) = pkt.message_id {
                rel.on_receive(pkt.opcode, id, &pkt.payload);
            }
            while let Some(m) = rel.next_in_order() {
                if m.opcode.is_hard_reset() {
                    continue;
                }
                let mut b = &m.payload[..];
                while !b.is_empty() {
                    self.tls.read_tls(&mut b).unwrap();
                    let st = self.tls.process_new_packets().unwrap();
                    let n = st.plaintext_bytes_to_read();
                    let at = self.plain.len();
                    self.plain.resize(at + n, 0);
                    self.tls.reader().read_exact(&mut self.plain[at..]).unwrap();
                }
            }
            if self.client_km2.is_none() && !self.plain.is_empty() {
                // the client's key-method-2 message, parsed as the worker's server does
                let m = ClientKeyMessage::parse(&self.plain, &Km2Limits::default()).unwrap();
                self.plain.clear();
                self.client_km2 = Some(m);
                let mut msg = Vec::new();
                let occ = OccSettings::default().options_string(false);
                build_server_message(&[1; 32], &[2; 32], &occ, &mut msg).unwrap();
                self.tls.writer().write_all(&msg).unwrap();
            }
            for m in push::extract_messages(&std::mem::take(&mut self.plain)) {
                match m.unwrap() {
                    "PUSH_REQUEST" => {
                        self.push_requests += 1;
                        if self.reply == Reply::PushOnRequest && !self.replied {
                            self.send(PUSH);
                        }
                    }
                    "EXIT" => self.exit_received = true,
                    other => panic!("unexpected message {other}"),
                }
            }
            // our key-method-2 message goes into the send window first: active = it was ACKed
            self.flush(now);
            let active = self.client_km2.is_some() && self.rel.as_ref().unwrap().all_acked();
            if active && !self.replied {
                match self.reply {
                    Reply::PushUnasked { cc_exit } => {
                        let ekm = self
                            .tls
                            .export_keying_material(
                                [0u8; 256],
                                EKM_LABEL_DATA_KEYS.as_bytes(),
                                None,
                            )
                            .unwrap();
                        let cfg = DataKeyConfig {
                            cipher: Cipher::Aes256Gcm,
                            auth: Digest::Sha1,
                            key_id: 0,
                            peer_id: Some(0),
                            replay_window: 64,
                            replay_seconds: 15,
                        };
                        let k2 = Key2::from_ekm(&ekm).unwrap();
                        self.key = Some(DataKey::from_key2(&cfg, &k2, Role::Server).unwrap());
                        let push = if cc_exit {
                            PUSH.to_string()
                        } else {
                            PUSH.replace("cc-exit ", "")
                        };
                        self.send(&push);
                    }
                    Reply::AuthFailed => self.send("AUTH_FAILED"),
                    Reply::PushOnRequest => {}
                }
            }
            self.flush(now);
        }

        fn send(&mut self, msg: &str) {
            let mut m = Vec::new();
            push::encode_message(msg, &mut m).unwrap();
            self.tls.writer().write_all(&m).unwrap();
            self.replied = true;
        }

        fn flush(&mut self, now: Instant) {
            let rel = self.rel.as_mut().unwrap();
            let mut ct = Vec::new();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut ct).unwrap();
            }
            let n = rel.queue_stream(Opcode::ControlV1, &ct, 1100, now).unwrap();
            assert_eq!(n, ct.len(), "test server: send window large enough");
            while let Some(p) = rel.poll_transmit(now) {
                let mut d = Vec::new();
                self.wrap.wrap(&p, NOW_UNIX, &mut d).unwrap();
                self.out.push(d);
            }
        }
    }

    fn setup(reply: Reply, tick: Duration) -> (Session, FakeServer, Instant) {
        setup_held(reply, tick, Duration::ZERO)
    }

    fn setup_held(reply: Reply, tick: Duration, hold: Duration) -> (Session, FakeServer, Instant) {
        let p = pki();
        let wrap_key = StaticKey::generate(core::array::from_fn(|i| i as u8));
        let tls = crate::tls::build_client_config(
            p.roots.clone(),
            p.client.0.clone(),
            p.client.1.clone_key(),
        )
        .unwrap();
        let server: std::net::SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let profile = Profile::new(
            tls,
            crate::tls::server_name(&server),
            false,
            Some(wrap_key.clone()),
            tick,
            Duration::from_secs(5),
            hold,
        )
        .unwrap();
        let now = Instant::now();
        let seed: [u8; SEED_LEN] =
            core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(1));
        let mut s = Session::new(Arc::new(profile), &seed, now).unwrap();
        s.start(now).unwrap();
        (s, FakeServer::new(&p, &wrap_key, reply), now)
    }

    /// Exchanges datagrams (no loss) until neither side has anything to send.
    fn pump(c: &mut Session, srv: &mut FakeServer, now: Instant) -> Result<(), SessionError> {
        for _ in 0..100 {
            let mut buf = Vec::new();
            let mut moved = false;
            while c.poll_transmit(now, NOW_UNIX, &mut buf)? {
                srv.on_datagram(&buf, now);
                moved = true;
            }
            for d in std::mem::take(&mut srv.out) {
                c.on_datagram(&d, now, NOW_UNIX)?;
                moved = true;
            }
            if !moved {
                return Ok(());
            }
        }
        panic!("no quiescence");
    }

    #[test]
    fn peer_info_and_options_are_a_default_2_6_14_client() {
        assert_eq!(IV_PROTO_2_6, 990);
        assert_eq!(
            peer_info(),
            "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n\
             IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\n\
             IV_COMP_STUB=1\nIV_COMP_STUBv2=1\n"
        );
    }

    #[test]
    fn full_handshake_then_exit_on_the_control_channel() {
        let (mut c, mut srv, now) =
            setup(Reply::PushUnasked { cc_exit: true }, Duration::from_secs(1));
        pump(&mut c, &mut srv, now).unwrap();
        // the client's key-method-2 message as the server parsed it: what a stock 2.6.14 client sends
        let km = srv.client_km2.as_ref().unwrap();
        assert_eq!(km.options, OccSettings::default().options_string(true));
        assert_eq!(
            km.options,
            "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client"
        );
        assert_eq!(km.credentials, km2::Credentials::None);
        let pi = &km.peer_info;
        assert_eq!(pi.version(), Some("2.6.14"));
        assert_eq!(pi.platform(), Some("linux"));
        assert_eq!(pi.proto(), IvProto(990));
        assert!(pi.proto().data_v2() && pi.proto().request_push());
        assert!(pi.proto().tls_key_export() && pi.proto().cc_exit_notify());
        assert_eq!(
            pi.ciphers(),
            Some("AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305")
        );
        assert_eq!((pi.ncp(), pi.mtu()), (Some(2), Some(1600)));
        // completed, EXIT sent and ACKed
        assert!(c.completed_at().is_some());
        assert!(c.push_options.iter().any(|o| o == "cipher AES-256-GCM"));
        assert!(srv.exit_received);
        assert_eq!(c.phase(), Phase::Done);
        assert_eq!(c.exit(), Some(ExitKind::CcExitAcked));
        let st = c.stats();
        assert_eq!((st.retransmits, st.dropped, st.push_requests), (0, 0, 0));
        assert_eq!(
            srv.push_requests, 0,
            "PUSH_REPLY came before the 1-second tick"
        );
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn without_cc_exit_the_session_ends_with_occ_exit() {
        let (mut c, mut srv, now) = setup(
            Reply::PushUnasked { cc_exit: false },
            Duration::from_secs(1),
        );
        pump(&mut c, &mut srv, now).unwrap();
        assert!(c.completed_at().is_some());
        assert!(
            srv.occ_exit_received,
            "the server's data key decrypted OCC_EXIT"
        );
        assert!(!srv.exit_received);
        assert_eq!(c.phase(), Phase::Done);
        assert_eq!(c.exit(), Some(ExitKind::OccExit));
    }

    #[test]
    fn push_request_goes_out_at_the_tick_when_the_server_waits_for_it() {
        let (mut c, mut srv, now) = setup(Reply::PushOnRequest, Duration::from_secs(1));
        pump(&mut c, &mut srv, now).unwrap();
        assert_eq!(c.phase(), Phase::Push);
        let t = c.next_deadline().unwrap();
        assert_eq!(t, now + Duration::from_secs(1), "the first 1-second tick");
        c.on_timeout(t).unwrap();
        pump(&mut c, &mut srv, t).unwrap();
        assert_eq!(srv.push_requests, 1);
        assert_eq!(c.completed_at(), Some(t));
        assert_eq!(c.stats().push_requests, 1);
        assert_eq!(c.exit(), Some(ExitKind::CcExitAcked));
    }

    #[test]
    fn push_request_tick_zero_asks_right_after_the_key_exchange() {
        let (mut c, mut srv, now) = setup(Reply::PushOnRequest, Duration::ZERO);
        pump(&mut c, &mut srv, now).unwrap();
        assert_eq!(c.next_deadline(), Some(now));
        c.on_timeout(now).unwrap();
        pump(&mut c, &mut srv, now).unwrap();
        assert_eq!(srv.push_requests, 1);
        assert!(c.completed_at().is_some());
    }

    #[test]
    fn auth_failed_ends_the_session_with_its_reason() {
        let (mut c, mut srv, now) = setup(Reply::AuthFailed, Duration::from_secs(1));
        let e = pump(&mut c, &mut srv, now).unwrap_err();
        assert_eq!(e.reason(), "auth_failed");
        assert!(c.completed_at().is_none());
    }

    #[test]
    fn lost_reset_is_retransmitted_and_foreign_datagrams_are_dropped() {
        let (mut c, mut srv, now) =
            setup(Reply::PushUnasked { cc_exit: true }, Duration::from_secs(1));
        let mut buf = Vec::new();
        assert!(c.poll_transmit(now, NOW_UNIX, &mut buf).unwrap()); // lost
        assert!(!c.poll_transmit(now, NOW_UNIX, &mut buf).unwrap());
        assert_eq!(c.next_deadline(), Some(now + TLS_TIMEOUT));
        // garbage and a packet under another key are dropped, not fatal
        c.on_datagram(&[], now, NOW_UNIX).unwrap();
        c.on_datagram(&[0x38, 1, 2, 3], now, NOW_UNIX).unwrap();
        let other = StaticKey::generate([3; 256]);
        let mut w = ControlWrapper::tls_crypt(&other, true, ReplayParams::default());
        let mut rel = Reliable::new(0, SessionId([5; 8]), SessionId([6; 8]), TLS_TIMEOUT, false);
        rel.queue(Opcode::ControlHardResetServerV2, Vec::new(), now)
            .unwrap();
        let mut d = Vec::new();
        w.wrap(&rel.poll_transmit(now).unwrap(), NOW_UNIX, &mut d)
            .unwrap();
        c.on_datagram(&d, now, NOW_UNIX).unwrap();
        assert_eq!(c.stats().dropped, 3);
        assert_eq!(c.phase(), Phase::Reset);
        let later = now + TLS_TIMEOUT;
        pump(&mut c, &mut srv, later).unwrap();
        assert_eq!(c.stats().retransmits, 1);
        assert!(c.completed_at().is_some());
    }

    #[test]
    fn held_session_sends_data_under_its_key_then_exits_at_the_end_of_the_hold() {
        let hold = Duration::from_secs(3);
        let (mut c, mut srv, now) = setup_held(
            Reply::PushUnasked { cc_exit: true },
            Duration::from_secs(1),
            hold,
        );
        pump(&mut c, &mut srv, now).unwrap();
        assert!(c.completed_at().is_some());
        assert_eq!(c.phase(), Phase::Held);
        assert!(!srv.exit_received, "no EXIT while held");
        assert_eq!(c.inner_source(), Some(Ipv4Addr::new(10, 8, 0, 2)));
        assert_eq!(
            c.next_deadline(),
            Some(now + hold),
            "hold ends before the 10 s ping"
        );
        // inner packets: P_DATA_V2 with the pushed peer-id 0, the server's key opens them
        let inner = crate::load::ipv4_udp_packet(
            Ipv4Addr::new(10, 8, 0, 2),
            20000,
            "10.8.0.1:9000".parse().unwrap(),
            1200,
        )
        .unwrap();
        let mut buf = Vec::new();
        for _ in 0..3 {
            let r = c.seal_data(&inner, &mut buf, now).unwrap().unwrap();
            assert_eq!(buf[r.start] >> 3, Opcode::DataV2.as_u8());
            assert_eq!(&buf[r.start + 1..r.start + 4], &[0, 0, 0], "peer-id 0");
            assert_eq!(
                r.len(),
                4 + 4 + 16 + 1200,
                "V2 header, packet id, GCM tag, payload"
            );
            let pkt = buf[r].to_vec();
            srv.on_datagram(&pkt, now);
        }
        assert_eq!(srv.data_in.len(), 3, "decrypted and replay-checked");
        assert!(srv.data_in.iter().all(|d| *d == inner));
        // a control packet from the server while held is still ACKed
        srv.send("INFO,hello");
        srv.flush(now);
        pump(&mut c, &mut srv, now).unwrap();
        assert_eq!(c.phase(), Phase::Held);
        assert!(srv.rel.as_ref().unwrap().all_acked(), "the client ACKed it");
        // the server's data packets (pings) are ignored
        c.on_datagram(&[0x48, 0, 0, 0, 1, 2, 3], now, NOW_UNIX)
            .unwrap();
        assert_eq!(c.phase(), Phase::Held);
        // end of the hold: EXIT on the control channel, ACKed, done; no more data
        let end = now + hold;
        c.on_timeout(end).unwrap();
        assert_eq!(c.phase(), Phase::Exiting);
        assert!(c.seal_data(&inner, &mut buf, end).unwrap().is_none());
        pump(&mut c, &mut srv, end).unwrap();
        assert!(srv.exit_received);
        assert_eq!(c.exit(), Some(ExitKind::CcExitAcked));
        assert!(c.held_fully());
    }

    #[test]
    fn idle_held_session_pings_and_ends_with_occ_exit_without_cc_exit() {
        let hold = Duration::from_secs(25);
        let (mut c, mut srv, now) = setup_held(
            Reply::PushUnasked { cc_exit: false },
            Duration::from_secs(1),
            hold,
        );
        pump(&mut c, &mut srv, now).unwrap();
        assert_eq!(c.phase(), Phase::Held);
        assert!(!srv.occ_exit_received);
        // nothing sent for the pushed `ping 10`: a keepalive ping
        let t = now + Duration::from_secs(10);
        assert_eq!(c.next_deadline(), Some(t));
        c.on_timeout(t).unwrap();
        pump(&mut c, &mut srv, t).unwrap();
        assert_eq!(srv.data_in, vec![PING_PAYLOAD.to_vec()]);
        // data sent at t + 5 postpones the next ping to t + 15
        let mut buf = Vec::new();
        let r = c
            .seal_data(b"not an IP packet", &mut buf, t + Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let pkt = buf[r].to_vec();
        srv.on_datagram(&pkt, t);
        assert_eq!(c.next_deadline(), Some(t + Duration::from_secs(15)));
        // end of the hold: OCC_EXIT under the same key (its packet id follows the data's)
        let end = now + hold;
        c.on_timeout(end).unwrap();
        pump(&mut c, &mut srv, end).unwrap();
        assert!(srv.occ_exit_received);
        assert_eq!(c.exit(), Some(ExitKind::OccExit));
        assert_eq!(c.phase(), Phase::Done);
        assert!(c.held_fully());
    }

    #[test]
    fn pushed_compression_options_give_the_framing_of_uncompressed_packets() {
        let (mut c, _, _) = setup(Reply::PushOnRequest, Duration::from_secs(1));
        let cases: [(&[&str], CompressionFraming); 8] = [
            (&["cipher AES-256-GCM"], CompressionFraming::None),
            (&["compress stub-v2"], CompressionFraming::StubV2),
            (&["compress lz4-v2"], CompressionFraming::StubV2),
            (&["comp-lzo no"], CompressionFraming::StubV1),
            (&["comp-lzo"], CompressionFraming::StubV1),
            (&["compress lzo"], CompressionFraming::StubV1),
            (&["compress"], CompressionFraming::StubV1Swap),
            (&["compress lz4"], CompressionFraming::StubV1Swap),
        ];
        for (opts, want) in cases {
            c.push_options = opts.iter().map(|o| o.to_string()).collect();
            assert_eq!(c.pushed_framing(), want, "{opts:?}");
        }
    }
}
