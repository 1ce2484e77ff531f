//! One client session: its key states (TLS sessions), control-channel reliability and wrapping, the
//! key-method-2 exchange, push, data-channel keys, and its timers.
//!
//! A [`Peer`] is created by [`crate::proto::server::Server`] once first contact is proven (cookie or TCP).
//! Key states follow OpenVPN's per-key_state machine (digest §5.7): a primary key state plus at most one
//! lame duck kept for `tran-window` after a renegotiation.
//!
//! Everything is deterministic: time and randomness come in as parameters.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::data::{Cipher, DataKey, DataKeyConfig, Digest};
use crate::proto::io::{ClientInfo, LogClass, Outbox, PacketBuf, PeerAddr, Transmit};
use crate::proto::keys;
use crate::proto::km2;
use crate::proto::magic::{self, CompressionFraming, Magic, OccMessage};
use crate::proto::packet::{ControlPacket, Opcode, SessionId};
use crate::proto::pool::{Lease, PoolConfig, Topology};
use crate::proto::push;
use crate::proto::reliable::{
    control_payload_budget, Reliable, IPV4_UDP_OVERHEAD, IPV6_UDP_OVERHEAD,
};
use crate::proto::tls::{PeerIdentity, TlsError, TlsServer, TlsSession};
use crate::proto::wrap::{ControlWrapper, InitialPacket, ReplayParams, StaticKey};

/// Label of the data-channel key exporter.
const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// Label of the dynamic tls-crypt key exporter.
const DYN_TLS_CRYPT_LABEL: &[u8] = b"EXPORTER-OpenVPN-dynamic-tls-crypt";
/// How long a session lingers after AUTH_FAILED / EXIT so final messages are delivered and ACKed.
const LINGER: Duration = Duration::from_secs(5);
/// OpenVPN ignores repeated PUSH_REQUESTs for this long after a reply.
const PUSH_DEDUP: Duration = Duration::from_secs(30);
/// Largest TLS plaintext a control message may occupy (one record).
const MAX_CONTROL_MESSAGE: usize = 2048;

/// Per-server settings every session needs (built by the driver from the worker configuration).
#[derive(Clone)]
pub struct PeerConfig {
    /// the TLS server (shared; its CRL can be replaced for new handshakes)
    pub tls: Arc<TlsServer>,
    /// `data-ciphers`, in preference order
    pub data_ciphers: Vec<Cipher>,
    /// `data-ciphers-fallback` for clients that announce no ciphers
    pub data_ciphers_fallback: Option<Cipher>,
    /// `auth` digest name (used by CBC ciphers and tls-auth)
    pub auth: String,
    /// the global push list, in order, including what `server`/`keepalive` expand to
    pub push: Vec<String>,
    /// server's own keepalive ping interval
    pub ping: Option<Duration>,
    /// server-side ping-restart (drop a silent client)
    pub ping_restart: Option<Duration>,
    /// `reneg-sec` maximum and minimum (the server randomises between them)
    pub reneg_sec: Option<(u32, u32)>,
    /// `reneg-bytes`
    pub reneg_bytes: Option<u64>,
    /// `reneg-pkts`
    pub reneg_pkts: Option<u64>,
    /// `hand-window`
    pub hand_window: Duration,
    /// `tran-window`
    pub tran_window: Duration,
    /// `tls-timeout` (initial control retransmit timeout)
    pub tls_timeout: Duration,
    /// `replay-window n t`
    pub replay_window: (u32, u32),
    /// `mute-replay-warnings`: replays are counted (`drops.replay`) but not logged
    pub mute_replay_warnings: bool,
    /// `client-to-client`
    pub client_to_client: bool,
    /// `duplicate-cn`
    pub duplicate_cn: bool,
    /// `max-clients`
    pub max_clients: u32,
    /// `tun-mtu` pushed to clients that announce IV_MTU
    pub tun_mtu: u16,
    /// the OCC options string sent in key-method-2
    pub options_string: String,
    /// control-channel packet size budget (`tls-mtu`)
    pub tls_mtu: usize,
    /// `username-as-common-name`
    pub username_as_common_name: bool,
    /// whether the server has `explicit-exit-notify` (sends RESTART on shutdown)
    pub explicit_exit_notify: bool,
    /// Ask the parent before admitting a client (`EngineEvent::AuthRequest`).
    pub defer_auth: bool,
    /// `inactive SECONDS [BYTES]`: end the session when its tunnel traffic within SECONDS stays
    /// below BYTES (0: any traffic keeps it).
    pub inactive: Option<(Duration, u64)>,
    /// `connect-freq N SECONDS`.
    pub connect_freq: Option<(u32, Duration)>,
    /// `connect-freq-initial N SECONDS` (stateless replies to initial packets); `None` = 100 per 10 s.
    pub connect_freq_initial: Option<(u32, Duration)>,
}

/// What the server must do after a peer call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOutcome {
    /// nothing
    Continue,
    /// the client authenticated: assign it an address, then call [`Peer::connected`]
    NeedsAddress,
    /// the client authenticated and the parent must decide (`defer_auth`): report
    /// [`Peer::auth_request`] and wait for the verdict
    NeedsAuth,
    /// remove the session (reason for the log)
    Remove(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KsState {
    /// our reset is sent, waiting for its ACK
    PreStart,
    /// reset ACKed, TLS running, waiting for the client's key-method-2
    Start,
    /// client's key-method-2 processed, ours written; waiting until everything we sent is ACKed
    SentKey,
    /// fully negotiated
    Active,
}

struct KeyState {
    key_id: u8,
    state: KsState,
    tls: TlsSession,
    rel: Reliable,
    /// TLS ciphertext not yet packetised (the send window was full)
    ct_pending: Vec<u8>,
    must_negotiate: Instant,
    /// plaintext read from TLS, not yet parsed
    plain: Vec<u8>,
    km2: Option<km2::ClientKeyMessage>,
    /// our key-method-2 randoms (legacy PRF input)
    server_random1: [u8; 32],
    server_random2: [u8; 32],
    data: Option<DataKey>,
    /// when this key may become the sending key
    send_ok_at: Option<Instant>,
    /// the client proved it has this key (a data packet arrived on it)
    peer_uses: bool,
    /// lame-duck expiry
    expires: Option<Instant>,
    bytes: u64,
    packets: u64,
}

impl KeyState {
    fn new(cfg: &PeerConfig, key_id: u8, rel: Reliable, now: Instant) -> Result<Self, TlsError> {
        Ok(Self {
            key_id,
            state: KsState::PreStart,
            tls: cfg.tls.new_session()?,
            rel,
            ct_pending: Vec::new(),
            must_negotiate: now + cfg.hand_window,
            plain: Vec::new(),
            km2: None,
            server_random1: [0; 32],
            server_random2: [0; 32],
            data: None,
            send_ok_at: None,
            peer_uses: false,
            expires: None,
            bytes: 0,
            packets: 0,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// key state 0 negotiating
    Handshaking,
    /// authenticated, waiting for the parent's verdict (`defer_auth`)
    WaitingAuth,
    /// authenticated, waiting for the server to assign an address
    WaitingAddress,
    /// connected
    Established,
    /// lingering before removal (AUTH_FAILED, EXIT)
    Closing,
}

/// Negotiated per-client options.
#[derive(Debug, Clone, Default)]
struct Negotiated {
    cipher: Option<Cipher>,
    cc_exit: bool,
    ekm: bool,
    dyn_tls_crypt: bool,
    request_push: bool,
    framing: CompressionFraming,
    iv_mtu: Option<u16>,
    data_v2: bool,
}

/// Per-session counters the server sums for its metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerDrops {
    /// data packets refused by the replay window (duplicates, too old)
    pub replay: u64,
    /// data packets that failed authentication or decryption
    pub decrypt: u64,
    /// renegotiations (new key states after the first), either side starting them
    pub renegotiations: u64,
}

/// One client session.
pub struct Peer {
    cfg: Arc<PeerConfig>,
    cid: u64,
    peer_id: u32,
    addr: PeerAddr,
    own_sid: SessionId,
    remote_sid: SessionId,
    wrap0: ControlWrapper,
    /// the key of `wrap0` (static key or tls-crypt-v2 Kc), XORed into the dynamic tls-crypt key
    original_wrap_key: Option<[u8; 256]>,
    dyn_wrap: Option<ControlWrapper>,
    primary: KeyState,
    lame: Option<KeyState>,
    next_key_id: u8,
    phase: Phase,
    identity: Option<PeerIdentity>,
    common_name: String,
    username: Option<String>,
    peer_info: Option<km2::PeerInfo>,
    neg: Negotiated,
    lease: Option<Lease>,
    last_recv: Instant,
    last_send: Instant,
    bytes_in: u64,
    bytes_out: u64,
    /// data packets dropped by the replay window, dropped for failed authentication/decryption,
    /// and renegotiations started (metrics; summed by the server)
    drops: PeerDrops,
    connected_since: u64,
    reneg_at: Option<Instant>,
    push_sent_at: Option<Instant>,
    close_at: Option<Instant>,
    /// why the session ends when `close_at` fires (None: the peer asked to exit)
    close_reason: Option<&'static str>,
    /// Whether the log prefix names the client (`CN/ip:port`): from the line after
    /// `Peer Connection Initiated` on, as OpenVPN's instance prefix (multi.c generate_prefix).
    prefix_has_cn: bool,
    superseded_by: Option<u64>,
    /// a TLS failure that must be reported when the session ends
    failure: Option<String>,
    /// the per-client part of PUSH_REPLY (set when connected)
    client_push: Option<Vec<String>>,
    /// the password of the key-method-2 message, kept only until the parent decided
    password: Option<String>,
    /// when a parked client is given up (`defer_auth`)
    auth_deadline: Option<Instant>,
    /// a renegotiated key that waits for the parent's verdict (`defer_auth` re-authentication);
    /// its data keys are derived only once accepted, the previous key carries the traffic
    reauth_key: Option<u8>,
    /// push-reset / push-remove / push granted by the parent
    push_edits: Option<(bool, Vec<String>, Vec<String>)>,
    /// `--inactive`: start of the current window (or the last traffic when BYTES is 0)
    inactive_since: Instant,
    /// `--inactive`: tunnel bytes in the current window
    inactive_bytes: u64,
}

impl Peer {
    /// Replaces the settings this client's next TLS handshakes (renegotiations) use, e.g. the
    /// server certificate after a SIGHUP reload; running key states and what was pushed stay.
    pub fn set_config(&mut self, cfg: Arc<PeerConfig>) {
        self.cfg = cfg;
    }

    /// Creates a session. `stateless` means our hard reset was sent by the cookie path and is therefore
    /// already ACKed (digest §3.6).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Arc<PeerConfig>,
        cid: u64,
        peer_id: u32,
        addr: PeerAddr,
        own_sid: [u8; 8],
        remote_sid: SessionId,
        wrap0: ControlWrapper,
        original_wrap_key: Option<[u8; 256]>,
        stateless: bool,
        now: Instant,
        now_unix: u64,
        _rng: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Self, TlsError> {
        let own = SessionId(own_sid);
        let rel = if stateless {
            Reliable::new_after_cookie(own, remote_sid, cfg.tls_timeout)
        } else {
            Reliable::new(0, own, remote_sid, cfg.tls_timeout, false)
        };
        let mut primary = KeyState::new(&cfg, 0, rel, now)?;
        if stateless {
            primary.state = KsState::Start;
        }
        Ok(Self {
            cid,
            peer_id,
            addr,
            own_sid: SessionId(own_sid),
            remote_sid,
            wrap0,
            original_wrap_key,
            dyn_wrap: None,
            primary,
            lame: None,
            next_key_id: 1,
            phase: Phase::Handshaking,
            identity: None,
            common_name: String::new(),
            username: None,
            peer_info: None,
            neg: Negotiated::default(),
            lease: None,
            last_recv: now,
            last_send: now,
            bytes_in: 0,
            drops: PeerDrops::default(),
            bytes_out: 0,
            connected_since: now_unix,
            reneg_at: None,
            push_sent_at: None,
            close_at: None,
            close_reason: None,
            prefix_has_cn: false,
            superseded_by: None,
            failure: None,
            client_push: None,
            password: None,
            auth_deadline: None,
            reauth_key: None,
            push_edits: None,
            inactive_since: now,
            inactive_bytes: 0,
            cfg,
        })
    }

    /// Client id.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Data-channel peer id.
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// Current transport address.
    pub fn addr(&self) -> PeerAddr {
        self.addr
    }

    /// Updates the transport address after an authenticated float.
    pub fn set_addr(&mut self, addr: PeerAddr) {
        self.addr = addr;
    }

    /// Common name (empty before authentication).
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The address lease, once connected.
    pub fn lease(&self) -> Option<Lease> {
        self.lease
    }

    /// Unix time the session was created/connected.
    pub fn connected_since(&self) -> u64 {
        self.connected_since
    }

    /// (bytes received from the client, bytes sent to it), data channel payload bytes on the wire.
    pub fn byte_counts(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// Drop and renegotiation counters of this session.
    pub fn drops(&self) -> PeerDrops {
        self.drops
    }

    /// True once the client authenticated and got an address.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// Whether the status lists this session under its common name: established, or an
    /// established client lingering before it goes (its `EXIT`, a `client-kill`), which OpenVPN
    /// still lists as connected until the instance closes.
    pub fn listed_by_name(&self) -> bool {
        self.is_established() || (self.phase == Phase::Closing && self.lease.is_some())
    }

    /// Marks this session as replaced by a newer one from the same address.
    pub fn set_superseded_by(&mut self, cid: u64) {
        self.superseded_by = Some(cid);
    }

    /// The newer session that replaces this one, if any.
    pub fn superseded_by(&self) -> Option<u64> {
        self.superseded_by
    }

    /// OpenVPN's log prefix: `CN/ip:port` once the connection was initiated, `ip:port` before
    /// (also for the peer-info lines and `Peer Connection Initiated` itself, which OpenVPN prints
    /// before it gives the instance its name).
    pub fn log_prefix(&self) -> String {
        if self.common_name.is_empty() || !self.prefix_has_cn {
            self.addr.to_string()
        } else {
            format!("{}/{}", self.common_name, self.addr)
        }
    }

    /// Whether a control packet belongs to this session (its sender session id is the client's).
    pub fn owns_control(&self, data: &[u8]) -> bool {
        data.len() >= 9 && data[1..9] == self.remote_sid.0
    }

    /// The peer-info variables as `K=V` lines, in the order the client sent them.
    fn peer_info_lines(&self) -> Vec<String> {
        self.peer_info
            .as_ref()
            .map(|i| i.vars.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default()
    }

    /// The report of this client for the parent and management.
    pub fn client_info(&self) -> Option<ClientInfo> {
        let lease = self.lease?;
        Some(ClientInfo {
            cid: self.cid,
            peer_id: self.peer_id,
            common_name: self.common_name.clone(),
            username: self.username.clone(),
            addr: self.addr,
            vaddr: Some(lease.ip),
            vaddr6: lease.ip6,
            cipher: self
                .neg
                .cipher
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
            connected_since: self.connected_since,
            iroutes: Vec::new(),
            iroutes_v6: Vec::new(),
            peer_info: self.peer_info_lines(),
            cert_env: self.identity.as_ref().map(|i| i.env()).unwrap_or_default(),
        })
    }

    /// Processes the packet that created the session (already unwrapped by the server).
    pub fn on_first_packet(
        &mut self,
        first: InitialPacket,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        self.last_recv = now;
        let pkt = first.packet;
        if pkt.opcode.is_hard_reset() {
            // TCP (stateful) path: queue our own hard reset (message 0) which ACKs theirs.
            if let Some(mid) = pkt.message_id {
                self.primary.rel.on_receive(pkt.opcode, mid, &pkt.payload);
            }
            while self.primary.rel.next_in_order().is_some() {}
            if let Err(e) =
                self.primary
                    .rel
                    .queue(Opcode::ControlHardResetServerV2, Vec::new(), now)
            {
                return PeerOutcome::Remove(format!("TLS Error: {e}"));
            }
            self.flush(now, now_unix, rng, out);
            return PeerOutcome::Continue;
        }
        self.process_unwrapped(pkt, now, now_unix, rng, out)
    }

    /// One control packet for this session.
    pub fn on_control(
        &mut self,
        data: &[u8],
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        let key_id = data[0] & 0x07;
        let wrapper = if key_id > 0 {
            self.dyn_wrap.as_mut().unwrap_or(&mut self.wrap0)
        } else {
            &mut self.wrap0
        };
        let pkt = match wrapper.unwrap(data, now_unix) {
            Ok(p) => p,
            Err(e) => {
                out.log(
                    LogClass::Error,
                    format!("{} {}", self.log_prefix(), e.openvpn_message(&self.addr)),
                );
                return PeerOutcome::Continue;
            }
        };
        self.last_recv = now;
        self.process_unwrapped(pkt, now, now_unix, rng, out)
    }

    fn key_state_mut(&mut self, key_id: u8) -> Option<&mut KeyState> {
        if self.primary.key_id == key_id {
            Some(&mut self.primary)
        } else {
            self.lame.as_mut().filter(|k| k.key_id == key_id)
        }
    }

    fn process_unwrapped(
        &mut self,
        pkt: ControlPacket,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        if pkt.session_id != self.remote_sid {
            return PeerOutcome::Continue;
        }
        if pkt.opcode.is_hard_reset() && pkt.key_id == 0 && self.primary.key_id == 0 {
            // a retransmitted hard reset: re-ACK it
            if let Some(mid) = pkt.message_id {
                self.primary.rel.on_receive(pkt.opcode, mid, &[]);
            }
            self.flush(now, now_unix, rng, out);
            return PeerOutcome::Continue;
        }
        if pkt.opcode == Opcode::ControlSoftResetV1 && pkt.key_id != self.primary.key_id {
            if self.primary.state != KsState::Active || self.phase != Phase::Established {
                return PeerOutcome::Continue;
            }
            // peer-initiated renegotiation
            if let Err(e) = self.start_renegotiation(pkt.key_id, now, out) {
                return PeerOutcome::Remove(format!("TLS Error: cannot start renegotiation: {e}"));
            }
        }
        let Some(ks) = self.key_state_mut(pkt.key_id) else {
            return PeerOutcome::Continue;
        };
        if ks.rel.on_acks(&pkt.acks).is_err() {
            // an ACK block naming another session: drop the whole packet
            return PeerOutcome::Continue;
        }
        if ks.state == KsState::PreStart && ks.rel.all_acked() {
            ks.state = KsState::Start;
        }
        if let Some(mid) = pkt.message_id {
            ks.rel.on_receive(pkt.opcode, mid, &pkt.payload);
        }
        let mut tls_failed = None;
        while let Some(d) = ks.rel.next_in_order() {
            // message 0 of a hard/soft reset carries early-negotiation TLVs (or nothing), not TLS
            if d.opcode.is_hard_reset()
                || d.opcode == Opcode::ControlSoftResetV1
                || d.payload.is_empty()
            {
                continue;
            }
            if let Err(e) = ks.tls.feed_ciphertext(&d.payload) {
                tls_failed = Some(e.to_string());
                break;
            }
        }
        for ev in ks.tls.take_verify_events() {
            out.log(
                ev.level.log_class(),
                format!("{} {}", self.addr, ev.message),
            );
        }
        if let Some(e) = tls_failed {
            out.log(
                LogClass::Error,
                format!(
                    "{} TLS Error: TLS object -> incoming plaintext read error",
                    self.log_prefix()
                ),
            );
            out.log(
                LogClass::Error,
                format!(
                    "{} TLS Error: TLS handshake failed ({e})",
                    self.log_prefix()
                ),
            );
            self.failure = Some(e);
            self.flush(now, now_unix, rng, out);
            return PeerOutcome::Remove(
                "SIGUSR1[soft,tls-error] received, client-instance restarting".into(),
            );
        }
        let key_id = pkt.key_id;
        let outcome = self.process_plaintext(key_id, now, now_unix, rng, out);
        self.flush(now, now_unix, rng, out);
        if outcome != PeerOutcome::Continue {
            return outcome;
        }
        self.check_active(key_id, now, now_unix, rng, out)
    }

    fn start_renegotiation(
        &mut self,
        key_id: u8,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), TlsError> {
        self.drops.renegotiations += 1;
        let rel = Reliable::new(
            key_id,
            self.own_sid,
            self.remote_sid,
            self.cfg.tls_timeout,
            false,
        );
        let mut ks = KeyState::new(&self.cfg, key_id, rel, now)?;
        if let Err(e) = ks.rel.queue(Opcode::ControlSoftResetV1, Vec::new(), now) {
            out.log(
                LogClass::Error,
                format!("{} TLS Error: {e}", self.log_prefix()),
            );
        }
        let mut old = std::mem::replace(&mut self.primary, ks);
        old.expires = Some(now + self.cfg.tran_window);
        self.lame = Some(old);
        self.next_key_id = if key_id >= 7 { 1 } else { key_id + 1 };
        out.log(
            LogClass::Detail,
            format!(
                "{} TLS: soft reset sec=0/0 bytes=0/-1 pkts=0/0",
                self.log_prefix()
            ),
        );
        Ok(())
    }

    /// Reads TLS plaintext: first the client's key-method-2 message, then NUL-terminated text messages.
    fn process_plaintext(
        &mut self,
        key_id: u8,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        let prefix = self.log_prefix();
        let is_primary = self.primary.key_id == key_id;
        let Some(ks) = self.key_state_mut(key_id) else {
            return PeerOutcome::Continue;
        };
        ks.tls.read_plaintext(&mut ks.plain);
        if ks.km2.is_none() {
            if ks.tls.is_handshaking() || ks.plain.is_empty() {
                return PeerOutcome::Continue;
            }
            let parsed = match km2::ClientKeyMessage::parse(&ks.plain, &km2::Km2Limits::default()) {
                Ok(msg) => {
                    // the key-method-2 message is alone in its record; anything after it is discarded
                    ks.plain.clear();
                    msg
                }
                Err(e) => {
                    out.log(
                        LogClass::Error,
                        format!("{prefix} TLS Error: key-method 2 message malformed: {e}"),
                    );
                    return PeerOutcome::Remove("TLS Error: key method 2 parse failure".into());
                }
            };
            let identity = ks.tls.peer_identity();
            let control_line = ks.tls.control_channel_line();
            ks.km2 = Some(parsed.clone());
            if let Some(line) = control_line {
                out.log(LogClass::Handshake, format!("{prefix} {line}"));
            }
            if let Err(reason) = self.authenticate(parsed, identity, is_primary, out) {
                self.send_text(key_id, &format!("AUTH_FAILED,{reason}"), now, out);
                self.phase = Phase::Closing;
                self.close_at = Some(now + LINGER);
                return PeerOutcome::Continue;
            }
            // our key-method-2 reply, alone in its record
            let mut r1 = [0u8; 32];
            let mut r2 = [0u8; 32];
            rng(&mut r1);
            rng(&mut r2);
            let mut reply = Vec::with_capacity(256);
            if let Err(e) =
                km2::build_server_message(&r1, &r2, &self.cfg.options_string, &mut reply)
            {
                return PeerOutcome::Remove(format!("TLS Error: {e}"));
            }
            let Some(ks) = self.key_state_mut(key_id) else {
                return PeerOutcome::Continue;
            };
            ks.server_random1 = r1;
            ks.server_random2 = r2;
            if let Err(e) = ks.tls.write_plaintext(&reply) {
                return PeerOutcome::Remove(format!("TLS Error: {e}"));
            }
            ks.state = KsState::SentKey;
            let _ = now_unix;
        }
        // text messages
        let Some(ks) = self.key_state_mut(key_id) else {
            return PeerOutcome::Continue;
        };
        let mut messages = Vec::new();
        while let Some(pos) = ks.plain.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = ks.plain.drain(..=pos).collect();
            messages.push(
                String::from_utf8_lossy(&msg[..msg.len() - 1])
                    .trim_end()
                    .to_string(),
            );
        }
        if ks.plain.len() > MAX_CONTROL_MESSAGE {
            return PeerOutcome::Remove("TLS Error: control message too long".into());
        }
        for m in messages {
            let outcome = self.on_text_message(key_id, &m, now, now_unix, rng, out);
            if outcome != PeerOutcome::Continue {
                return outcome;
            }
        }
        PeerOutcome::Continue
    }

    /// Checks the client's identity and options after its key-method-2 message (cert verified by TLS).
    fn authenticate(
        &mut self,
        msg: km2::ClientKeyMessage,
        identity: Option<PeerIdentity>,
        is_primary_first: bool,
        out: &mut Outbox,
    ) -> Result<(), String> {
        let first = self.phase == Phase::Handshaking && is_primary_first;
        // The parent's authorisation (auth-user-pass-verify, `>CLIENT:CONNECT|REAUTH`) sees the
        // password of every key exchange, the first and each renegotiation's.
        if self.cfg.defer_auth {
            if let km2::Credentials::Provided { password, .. } = &msg.credentials {
                self.password = Some(String::from_utf8_lossy(password.as_bytes()).into_owned());
            }
        }
        let username = match &msg.credentials {
            km2::Credentials::Provided { username, .. } if !username.is_empty() => {
                Some(String::from_utf8_lossy(username).into_owned())
            }
            km2::Credentials::TooLong { .. } => {
                return Err(km2::USER_PASS_TOO_LONG_REASON.to_string());
            }
            _ => None,
        };
        let cn = match (&identity, &username) {
            (_, Some(u)) if self.cfg.username_as_common_name => u.clone(),
            (Some(id), _) => id.common_name.clone(),
            (None, _) => String::new(),
        };
        if !first {
            // renegotiation: the identity must not change (OpenVPN locks the CN for the session)
            if cn != self.common_name {
                out.log(
                    LogClass::Error,
                    format!("{} TLS Auth Error: TLS object CN attempted to change from '{}' to '{}' -- tunnel disabled", self.log_prefix(), self.common_name, cn),
                );
                return Err("common name changed".into());
            }
            return Ok(());
        }
        if cn.is_empty() {
            out.log(
                LogClass::Error,
                format!(
                    "{} TLS Error: could not determine a common name for the peer",
                    self.addr
                ),
            );
            return Err(String::new());
        }
        let info = msg.peer_info.clone();
        // cipher negotiation (ssl_ncp.c)
        let cipher = match crate::proto::data::negotiate(
            &self.cfg.data_ciphers,
            info.ciphers(),
            info.ncp(),
            msg.occ_cipher(),
            self.cfg.data_ciphers_fallback,
        ) {
            Ok(n) => n.cipher,
            Err(_) => {
                out.log(
                    LogClass::Error,
                    format!("{cn}/{} PUSH: No common cipher between server and client. Server data-ciphers: '{}', client supported ciphers '{}'", self.addr, self.cfg.data_ciphers.iter().map(|c| c.name()).collect::<Vec<_>>().join(":"), info.ciphers().unwrap_or_default()),
                );
                return Err("Data channel cipher negotiation failed (no shared cipher)".into());
            }
        };
        self.common_name = cn;
        self.username = username;
        self.identity = identity;
        self.neg.cipher = Some(cipher);
        let proto = info.proto();
        self.neg.data_v2 = proto.data_v2();
        self.neg.request_push = proto.request_push();
        self.neg.ekm = proto.tls_key_export();
        self.neg.cc_exit = proto.cc_exit_notify();
        self.neg.dyn_tls_crypt = proto.dyn_tls_crypt();
        self.neg.iv_mtu = info.mtu().and_then(|m| u16::try_from(m).ok());
        self.neg.framing =
            CompressionFraming::for_client(msg.uses_compression(), info.comp_stub_v2());
        let prefix = self.log_prefix();
        // OpenVPN: M_INFO (verb 1), misc.c output_peer_info_env
        for (k, v) in &info.vars {
            out.log(LogClass::Notice, format!("{prefix} peer info: {k}={v}"));
        }
        self.peer_info = Some(info);
        Ok(())
    }

    fn on_text_message(
        &mut self,
        key_id: u8,
        msg: &str,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        let _ = (rng, now_unix);
        if msg == "PUSH_REQUEST" {
            match self.phase {
                Phase::Established => {
                    let recent = self.push_sent_at.is_some_and(|t| now < t + PUSH_DEDUP);
                    if !recent {
                        self.send_push_reply(now, out);
                    }
                }
                Phase::Closing => {
                    self.send_text(key_id, "AUTH_FAILED", now, out);
                }
                _ => {}
            }
            PeerOutcome::Continue
        } else if let Some(rest) = msg.strip_prefix("CR_RESPONSE") {
            let response = rest.strip_prefix(',').unwrap_or("");
            if !self.is_waiting_auth() {
                out.log(
                    LogClass::Detail,
                    format!(
                        "{} CR_RESPONSE received while no authentication is pending; ignored",
                        self.log_prefix()
                    ),
                );
            } else if !bulwark_ipc::msg::clients::valid_cr_response(response) {
                out.log(
                    LogClass::Error,
                    format!(
                        "{} CR_RESPONSE is not base64 text of at most 1024 bytes; ignored",
                        self.log_prefix()
                    ),
                );
            } else {
                out.events.push(super::io::EngineEvent::CrResponse {
                    cid: self.cid,
                    kid: u32::from(self.primary.key_id),
                    response: response.to_string(),
                });
            }
            PeerOutcome::Continue
        } else if msg == "EXIT" || msg.starts_with("EXIT,") {
            if self.close_at.is_some() {
                // already closing (a retransmitted EXIT, or after AUTH_FAILED): OpenVPN's
                // schedule_exit arms once
                return PeerOutcome::Continue;
            }
            // OpenVPN's words and levels (D_STREAM_ERRORS, D_SCHED_EXIT): the instance lingers
            // so retransmits and ACKs do not start a new session, then goes with
            // SIGTERM[soft,delayed-exit].
            let prefix = self.log_prefix();
            out.log(
                LogClass::Error,
                format!("{prefix} CC-EEN exit message received by peer"),
            );
            out.log(
                LogClass::Info,
                format!("{prefix} Delayed exit in {} seconds", LINGER.as_secs()),
            );
            out.events
                .push(super::io::EngineEvent::ExitAnnounced { cid: self.cid });
            self.phase = Phase::Closing;
            self.close_at = Some(now + LINGER);
            self.close_reason =
                Some("SIGTERM[soft,delayed-exit] received, client-instance exiting");
            PeerOutcome::Continue
        } else {
            out.log(
                LogClass::Detail,
                format!(
                    "{} WARNING: Received unknown control message: {msg}",
                    self.log_prefix()
                ),
            );
            PeerOutcome::Continue
        }
    }

    /// Checks whether the key state became active; on the first one, ask for an address.
    fn check_active(
        &mut self,
        key_id: u8,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        let _ = rng;
        let is_primary = self.primary.key_id == key_id;
        let phase = self.phase;
        let Some(ks) = self.key_state_mut(key_id) else {
            return PeerOutcome::Continue;
        };
        if ks.state != KsState::SentKey || !ks.rel.all_acked() || ks.tls.is_handshaking() {
            return PeerOutcome::Continue;
        }
        ks.state = KsState::Active;
        if is_primary && key_id == 0 && phase == Phase::Handshaking {
            out.log(
                LogClass::Notice,
                format!(
                    "{} [{}] Peer Connection Initiated with {}",
                    self.log_prefix(),
                    self.common_name,
                    self.addr.actual()
                ),
            );
            self.prefix_has_cn = true;
            if self.cfg.defer_auth {
                self.phase = Phase::WaitingAuth;
                self.auth_deadline = Some(now + self.cfg.hand_window);
                return PeerOutcome::NeedsAuth;
            }
            self.phase = Phase::WaitingAddress;
            return PeerOutcome::NeedsAddress;
        }
        if is_primary && key_id != 0 && self.cfg.defer_auth && phase == Phase::Established {
            // INVARIANT: a renegotiated key gets no data keys before the parent re-authorises the
            // client; the previous (lame) key keeps carrying traffic until then.
            self.reauth_key = Some(key_id);
            self.auth_deadline = Some(now + self.cfg.hand_window);
            return PeerOutcome::NeedsAuth;
        }
        if is_primary && key_id != 0 {
            // renegotiated key: derive its data keys now (no push on renegotiation)
            if let Err(e) = self.install_data_key(key_id, now, now_unix, out) {
                return PeerOutcome::Remove(format!("TLS Error: key derivation failed: {e}"));
            }
            self.schedule_reneg(now, rng);
        }
        PeerOutcome::Continue
    }

    fn install_data_key(
        &mut self,
        key_id: u8,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) -> Result<(), String> {
        let cipher = self.neg.cipher.ok_or("no cipher negotiated")?;
        let ekm = self.neg.ekm;
        let auth = self.cfg.auth.clone();
        let replay = self.cfg.replay_window;
        let hand_window = self.cfg.hand_window;
        let reneg_half = self
            .cfg
            .reneg_sec
            .map(|(max, _)| Duration::from_secs(u64::from(max) / 2));
        let own_sid = self.own_sid;
        let remote_sid = self.remote_sid;
        let prefix = self.log_prefix();
        let data_v2 = self.neg.data_v2;
        let peer_id = self.peer_id;
        let ks = self.key_state_mut(key_id).ok_or("no such key state")?;
        let key2 = if ekm {
            let k: [u8; 256] = ks
                .tls
                .export_keying_material(EKM_LABEL)
                .map_err(|e| e.to_string())?;
            keys::Key2::from_ekm(&k).map_err(|e| e.to_string())?
        } else {
            let m = ks.km2.as_ref().ok_or("no key-method-2 message")?;
            let src = keys::LegacyKeySource {
                client_pre_master: &m.pre_master,
                client_random1: &m.random1,
                client_random2: &m.random2,
                server_random1: &ks.server_random1,
                server_random2: &ks.server_random2,
                client_session_id: &remote_sid.0,
                server_session_id: &own_sid.0,
            };
            keys::Key2::from_legacy_prf(&src).map_err(|e| e.to_string())?
        };
        let digest = Digest::parse(&auth).map_err(|e| e.to_string())?;
        let dcfg = DataKeyConfig {
            cipher,
            auth: digest,
            key_id,
            peer_id: data_v2.then_some(peer_id),
            replay_window: replay.0,
            replay_seconds: replay.1,
        };
        let dk = DataKey::from_key2(&dcfg, &key2, keys::Role::Server).map_err(|e| e.to_string())?;
        ks.data = Some(dk);
        let delay = reneg_half.map_or(hand_window, |h| h.min(hand_window));
        ks.send_ok_at = Some(if key_id == 0 { now } else { now + delay });
        let _ = now_unix;
        // OpenVPN (D_CIPHER_INIT, verb 4), for every key
        for dir in ["Outgoing", "Incoming"] {
            out.log(
                LogClass::Detail,
                format!(
                    "{prefix} {dir} Data Channel: Cipher '{}' initialized with {} bit key",
                    cipher.name(),
                    cipher.key_len() * 8
                ),
            );
            if !cipher.is_aead() {
                out.log(
                    LogClass::Detail,
                    format!(
                        "{prefix} {dir} Data Channel: Using {} bit message hash '{}' for HMAC authentication",
                        digest.len() * 8,
                        digest.name()
                    ),
                );
            }
        }
        if key_id == 0 {
            self.log_deferred_options(&prefix, cipher, digest, out);
        }
        Ok(())
    }

    /// OpenVPN's summary of what was agreed for a new connection (D_HANDSHAKE,
    /// tls_print_deferred_options_results): the data channel, the timers, the protocol options.
    fn log_deferred_options(&self, prefix: &str, cipher: Cipher, digest: Digest, out: &mut Outbox) {
        let mut data = if cipher.is_aead() {
            format!("Data Channel: cipher '{}'", cipher.name())
        } else {
            format!(
                "Data Channel: cipher '{}', auth '{}'",
                cipher.name(),
                digest.name()
            )
        };
        if self.neg.data_v2 {
            data.push_str(&format!(", peer-id: {}", self.peer_id));
        }
        out.log(LogClass::Handshake, format!("{prefix} {data}"));
        let mut timers = Vec::new();
        if let Some(p) = self.cfg.ping {
            timers.push(format!("ping {}", p.as_secs()));
        }
        if let Some(r) = self.cfg.ping_restart {
            timers.push(format!("ping-restart {}", r.as_secs()));
        }
        if let Some((d, bytes)) = self.cfg.inactive {
            timers.push(if bytes > 0 {
                format!("inactive {} {bytes}", d.as_secs())
            } else {
                format!("inactive {}", d.as_secs())
            });
        }
        if !timers.is_empty() {
            out.log(
                LogClass::Handshake,
                format!("{prefix} Timers: {}", timers.join(", ")),
            );
        }
        let mut proto = Vec::new();
        if self.cfg.explicit_exit_notify {
            proto.push("explicit-exit-notify 1".to_string());
        }
        let flags: Vec<&str> = [
            (self.neg.cc_exit, " cc-exit"),
            (self.neg.ekm, " tls-ekm"),
            (self.neg.dyn_tls_crypt, " dyn-tls-crypt"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| *f)
        .collect();
        if !flags.is_empty() {
            proto.push(format!("protocol-flags{}", flags.concat()));
        }
        if !proto.is_empty() {
            out.log(
                LogClass::Handshake,
                format!("{prefix} Protocol options: {}", proto.join(", ")),
            );
        }
    }

    /// Called by the server once an address is assigned: derive keys, send PUSH_REPLY.
    pub fn connected(
        &mut self,
        lease: Lease,
        pool: &PoolConfig,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        self.lease = Some(lease);
        self.phase = Phase::Established;
        self.connected_since = now_unix;
        self.inactive_since = now;
        self.inactive_bytes = 0;
        if let Err(e) = self.install_data_key(0, now, now_unix, out) {
            return PeerOutcome::Remove(format!("TLS Error: key derivation failed: {e}"));
        }
        if self.neg.dyn_tls_crypt {
            let derived = self
                .primary
                .tls
                .export_keying_material::<256>(DYN_TLS_CRYPT_LABEL)
                .map_err(|e| e.to_string())
                .and_then(|ekm| {
                    keys::dyn_tls_crypt_key(&ekm, self.original_wrap_key.as_ref().map(|k| &k[..]))
                        .map_err(|e| e.to_string())
                });
            match derived {
                Ok(k2) => {
                    let mut b = [0u8; 256];
                    b.copy_from_slice(k2.as_bytes());
                    let sk = StaticKey::from_bytes(b);
                    let replay = ReplayParams {
                        packets: self.cfg.replay_window.0,
                        seconds: self.cfg.replay_window.1,
                    };
                    let w = ControlWrapper::tls_crypt(&sk, true, replay);
                    for l in w.key_init_lines("dynamic tls-crypt") {
                        out.log(LogClass::Detail, format!("{} {l}", self.log_prefix()));
                    }
                    self.dyn_wrap = Some(w);
                }
                Err(e) => return PeerOutcome::Remove(format!("TLS Error: dynamic tls-crypt: {e}")),
            }
        }
        self.client_push = Some(self.client_push_options(pool, &lease));
        if self.neg.request_push {
            self.send_push_reply(now, out);
        }
        self.schedule_reneg(now, rng);
        self.flush(now, now_unix, rng, out);
        PeerOutcome::Continue
    }

    /// The per-client options appended to the global push list, in a 2.6 server's order (digest §8.3).
    fn client_push_options(&self, pool: &PoolConfig, lease: &Lease) -> Vec<String> {
        let mut v = Vec::new();
        if let (Some(ip6), Some(p6)) = (lease.ip6, pool.ipv6.as_ref()) {
            v.push(format!(
                "ifconfig-ipv6 {}/{} {}",
                ip6, p6.prefix_len, p6.server_ip
            ));
        }
        v.push(format!("ifconfig {} {}", lease.ip, lease.peer_or_mask));
        if self.neg.data_v2 {
            v.push(format!("peer-id {}", self.peer_id));
        }
        if let Some(c) = self.neg.cipher {
            v.push(format!("cipher {}", c.name()));
        }
        let mut flags = Vec::new();
        if self.neg.cc_exit {
            flags.push("cc-exit");
            if self.neg.ekm {
                flags.push("tls-ekm");
            }
        } else if self.neg.ekm {
            v.push("key-derivation tls-ekm".to_string());
        }
        if self.neg.dyn_tls_crypt {
            flags.push("dyn-tls-crypt");
        }
        if !flags.is_empty() {
            v.push(format!("protocol-flags {}", flags.join(" ")));
        }
        if let Some(c) = self.neg.framing.push_option() {
            v.push(c.to_string());
        }
        if self.neg.iv_mtu.is_some_and(|m| m >= self.cfg.tun_mtu) {
            v.push(format!("tun-mtu {}", self.cfg.tun_mtu));
        }
        v
    }

    fn schedule_reneg(&mut self, now: Instant, rng: &mut dyn FnMut(&mut [u8])) {
        self.reneg_at = self.cfg.reneg_sec.map(|(max, min)| {
            let span = max.saturating_sub(min);
            let mut b = [0u8; 4];
            rng(&mut b);
            let jitter = if span == 0 {
                0
            } else {
                u32::from_be_bytes(b) % (span + 1)
            };
            now + Duration::from_secs(u64::from(max - jitter))
        });
    }

    fn send_push_reply(&mut self, now: Instant, out: &mut Outbox) {
        let Some(client_opts) = self.client_push.clone() else {
            return;
        };
        let global: Vec<String> = match &self.push_edits {
            None => self.cfg.push.clone(),
            Some((reset, remove, add)) => {
                let mut g: Vec<String> = if *reset {
                    Vec::new()
                } else {
                    self.cfg
                        .push
                        .iter()
                        .filter(|o| !remove.iter().any(|r| o.starts_with(r.as_str())))
                        .cloned()
                        .collect()
                };
                g.extend(add.iter().cloned());
                g
            }
        };
        let messages = match push::build_push_reply(&global, &client_opts) {
            Ok(m) => m,
            Err(e) => {
                out.log(
                    LogClass::Error,
                    format!("{} PUSH: cannot build PUSH_REPLY: {e}", self.log_prefix()),
                );
                return;
            }
        };
        // OpenVPN (D_PUSH): one line per message sent, secrets taken out.
        let prefix = self.log_prefix();
        for msg in messages {
            out.log(
                LogClass::Info,
                format!(
                    "{prefix} SENT CONTROL [{}]: '{}' (status=1)",
                    self.common_name,
                    push::sanitize_control_message(&msg)
                ),
            );
            self.send_text(self.primary.key_id, &msg, now, out);
        }
        self.push_sent_at = Some(now);
    }

    fn send_text(&mut self, key_id: u8, msg: &str, now: Instant, out: &mut Outbox) {
        let _ = (now, &out);
        let Some(ks) = self.key_state_mut(key_id) else {
            return;
        };
        let mut bytes = Vec::with_capacity(msg.len() + 1);
        bytes.extend_from_slice(msg.as_bytes());
        bytes.push(0);
        let _ = ks.tls.write_plaintext(&bytes);
    }

    /// Packs pending TLS output into reliable packets and sends everything due (with piggy-backed ACKs,
    /// or a standalone P_ACK_V1).
    fn flush(
        &mut self,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) {
        let _ = rng;
        let budget = self.control_payload_budget();
        let to = self.addr;
        let mut sent_any = false;
        let prefix_needed = self.log_prefix();
        let (primary, lame) = (&mut self.primary, self.lame.as_mut());
        for ks in std::iter::once(primary).chain(lame) {
            ks.tls.take_ciphertext(&mut ks.ct_pending);
            if !ks.ct_pending.is_empty() {
                match ks
                    .rel
                    .queue_stream(Opcode::ControlV1, &ks.ct_pending, budget, now)
                {
                    Ok(used) => {
                        ks.ct_pending.drain(..used);
                    }
                    Err(e) => out.log(LogClass::Error, format!("{prefix_needed} TLS Error: {e}")),
                }
            }
            let wrapper = if ks.key_id > 0 {
                self.dyn_wrap.as_mut().unwrap_or(&mut self.wrap0)
            } else {
                &mut self.wrap0
            };
            while let Some(pkt) = ks.rel.poll_transmit(now) {
                let mut buf = Vec::with_capacity(pkt.plain_len() + 64);
                match wrapper.wrap(&pkt, now_unix, &mut buf) {
                    Ok(()) => {
                        // link bytes count every packet, control included (OpenVPN's link_write_bytes)
                        self.bytes_out = self.bytes_out.saturating_add(buf.len() as u64);
                        out.transmits.push(Transmit {
                            to,
                            data: buf.into(),
                        });
                        sent_any = true;
                    }
                    Err(e) => out.log(
                        LogClass::Error,
                        format!("{prefix_needed} cannot wrap control packet: {e}"),
                    ),
                }
            }
        }
        if sent_any {
            self.last_send = now;
        }
    }

    fn control_payload_budget(&self) -> usize {
        let ip_udp = if self.addr.socket_addr().is_ipv4() {
            IPV4_UDP_OVERHEAD
        } else {
            IPV6_UDP_OVERHEAD
        };
        control_payload_budget(self.cfg.tls_mtu, self.wrap0.overhead(), ip_udp, 0).unwrap_or(64)
    }

    /// Encrypts an inner packet to this client (TUN → client, or client-to-client) and queues the
    /// data packet in `out.transmits`.
    ///
    /// The payload is copied once, into a buffer from the outbox pool behind exactly the headroom the
    /// sending key and the compression framing need; framing and encryption then happen in place and
    /// the queued [`PacketBuf`] points at the finished packet (no allocation once the pool is warm).
    pub fn encrypt_data(
        &mut self,
        pkt: &[u8],
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) {
        if self.phase != Phase::Established {
            return;
        }
        let _ = now_unix;
        let framing = self.neg.framing;
        // choose the sending key: the primary once the client is known to have it (or its delay passed)
        let use_primary = self.primary.data.is_some()
            && (self.primary.peer_uses
                || self.primary.send_ok_at.is_some_and(|t| now >= t)
                || self.lame.as_ref().and_then(|l| l.data.as_ref()).is_none());
        let ks = if use_primary {
            &mut self.primary
        } else {
            match self.lame.as_mut() {
                Some(l) if l.data.is_some() => l,
                _ => return,
            }
        };
        let Some(dk) = ks.data.as_mut() else {
            return;
        };
        // INVARIANT: the payload sits behind enough headroom for the key's header and the framing
        // marker, with room behind it for CBC padding / the swapped framing byte, so framing and
        // encryption happen in place.
        let start = dk.headroom() + framing.headroom();
        let end = start + pkt.len();
        let mut buf = out.take_buffer();
        buf.resize(start, 0);
        buf.extend_from_slice(pkt);
        buf.resize(end + framing.tailroom() + dk.tailroom(), 0);
        let res = framing
            .encode(&mut buf, start..end)
            .map_err(|e| format!("data framing: {e}"))
            .and_then(|range| {
                dk.encrypt(&mut buf, range, rng)
                    .map_err(|e| format!("data encrypt: {e}"))
            });
        match res {
            Ok(range) => {
                let wire_len = range.len() as u64;
                ks.bytes += wire_len;
                ks.packets += 1;
                self.bytes_out += wire_len;
                self.last_send = now;
                out.transmits.push(Transmit {
                    to: self.addr,
                    data: PacketBuf::from_parts(buf, range),
                });
            }
            Err(e) => {
                out.recycle(buf);
                out.log(LogClass::Detail, format!("{} {e}", self.log_prefix()));
            }
        }
    }

    /// Decrypts a data packet from this client. Returns the inner packet (empty for keepalive pings and
    /// other internal payloads), or `None` if it was dropped.
    ///
    /// The packet is copied once into a buffer from the outbox pool and decrypted there in place; the
    /// returned [`PacketBuf`] points at the plaintext inside it (the header stays as headroom), so the
    /// caller can queue it for the TUN device without another copy. Internal payloads return their
    /// buffer to the pool at once.
    pub fn decrypt_data(
        &mut self,
        from: PeerAddr,
        data: &[u8],
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) -> Option<PacketBuf> {
        let key_id = data.first()? & 0x07;
        let framing = self.neg.framing;
        let ks = self.key_state_mut(key_id)?;
        let dk = ks.data.as_mut()?;
        let aead = dk.config().cipher.is_aead();
        let mut pkt = out.take_buffer();
        pkt.extend_from_slice(data);
        let range = match dk.decrypt(&mut pkt, now_unix) {
            Ok(r) => r,
            Err(e) => {
                out.recycle(pkt);
                // OpenVPN's wording and level (D_CRYPT_ERRORS / D_REPLAY_ERRORS, verb 1): the
                // prefix names the cipher mode, the reason is OpenVPN's for the two failures
                // people match on (a forged or corrupted packet, a replay).
                let what = if aead {
                    "AEAD Decrypt error"
                } else {
                    "Authenticate/Decrypt packet error"
                };
                let reason = match &e {
                    crate::proto::data::DataError::Replay(r) => {
                        self.drops.replay += 1;
                        if self.cfg.mute_replay_warnings {
                            return None;
                        }
                        format!(
                            "bad packet ID (may be a replay): {} -- see the man page entry for \
                             --no-replay and --replay-window for more info or silence this \
                             warning with --mute-replay-warnings",
                            r.openvpn_packet_id()
                        )
                    }
                    crate::proto::data::DataError::AuthFailed => {
                        self.drops.decrypt += 1;
                        if aead {
                            "cipher final failed"
                        } else {
                            "packet HMAC authentication failed"
                        }
                        .to_string()
                    }
                    other => {
                        self.drops.decrypt += 1;
                        other.to_string()
                    }
                };
                out.log(
                    LogClass::Error,
                    format!("{} {what}: {reason}", self.log_prefix()),
                );
                return None;
            }
        };
        let _ = from;
        ks.peer_uses = true;
        ks.bytes += data.len() as u64;
        ks.packets += 1;
        self.bytes_in += data.len() as u64;
        self.last_recv = now;
        let range = match framing.decode(&mut pkt, range) {
            Ok(r) => r,
            Err(e) => {
                out.recycle(pkt);
                out.log(
                    LogClass::Detail,
                    format!("{} dropping data packet: {e}", self.log_prefix()),
                );
                return None;
            }
        };
        match magic::classify(&pkt[range.clone()]) {
            Magic::None => Some(PacketBuf::from_parts(pkt, range)),
            Magic::Ping => {
                out.recycle(pkt);
                Some(PacketBuf::default())
            }
            Magic::Occ(OccMessage::Exit) => {
                out.recycle(pkt);
                // removed at once; the removal logs SIGTERM[soft,remote-exit] (the default reason)
                self.phase = Phase::Closing;
                self.close_at = Some(now);
                Some(PacketBuf::default())
            }
            Magic::Occ(_) => {
                out.recycle(pkt);
                Some(PacketBuf::default())
            }
        }
    }

    /// Earliest timer of this session.
    pub fn next_timeout(&self) -> Option<Instant> {
        // the earliest candidate, without allocating (the driver asks on every event-loop turn)
        struct Earliest(Option<Instant>);
        impl Earliest {
            fn push(&mut self, d: Instant) {
                self.0 = Some(self.0.map_or(d, |t| t.min(d)));
            }
        }
        let mut t = Earliest(None);
        for ks in std::iter::once(&self.primary).chain(self.lame.as_ref()) {
            if let Some(d) = ks.rel.next_timeout() {
                t.push(d);
            }
            if ks.state != KsState::Active {
                t.push(ks.must_negotiate);
            }
            if let Some(e) = ks.expires {
                t.push(e);
            }
        }
        if self.phase == Phase::Established {
            if let Some(p) = self.cfg.ping {
                t.push(self.last_send + p);
            }
            if let Some(r) = self.reneg_at {
                t.push(r);
            }
        }
        if let Some(r) = self.cfg.ping_restart {
            t.push(self.last_recv + r);
        }
        if let Some(c) = self.close_at {
            t.push(c);
        }
        if let (Some((d, _)), Phase::Established) = (self.cfg.inactive, self.phase) {
            t.push(self.inactive_since + d);
        }
        if self.is_waiting_auth() {
            if let Some(d) = self.auth_deadline {
                t.push(d);
            }
        }
        t.0
    }

    /// Runs due timers.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        if self.close_at.is_some_and(|c| now >= c) {
            return PeerOutcome::Remove(
                self.close_reason
                    .unwrap_or("SIGTERM[soft,remote-exit] received, client-instance exiting")
                    .into(),
            );
        }
        if let Some(r) = self.cfg.ping_restart {
            if now >= self.last_recv + r {
                out.log(
                    LogClass::Notice,
                    format!(
                        "{} [{}] Inactivity timeout (--ping-restart), restarting",
                        self.log_prefix(),
                        self.common_name
                    ),
                );
                return PeerOutcome::Remove(
                    "SIGUSR1[soft,ping-restart] received, client-instance restarting".into(),
                );
            }
        }
        if let (Some((d, _)), Phase::Established) = (self.cfg.inactive, self.phase) {
            // the timer restarts only when enough tunnel bytes passed (see note_tunnel)
            if now >= self.inactive_since + d {
                out.log(
                    LogClass::Notice,
                    format!(
                        "{} Inactivity timeout (--inactive), exiting",
                        self.log_prefix()
                    ),
                );
                return PeerOutcome::Remove(
                    "SIGTERM[soft,inactive] received, client-instance exiting".into(),
                );
            }
        }
        if self.is_waiting_auth() && self.auth_deadline.is_some_and(|d| now >= d) {
            out.log(
                LogClass::Error,
                format!(
                    "{} TLS Error: no authentication decision within {} seconds (--hand-window)",
                    self.log_prefix(),
                    self.cfg.hand_window.as_secs()
                ),
            );
            self.password = None;
            return PeerOutcome::Remove(
                "SIGUSR1[soft,tls-error] received, client-instance restarting".into(),
            );
        }
        if self.primary.state != KsState::Active && now >= self.primary.must_negotiate {
            out.log(
                LogClass::Error,
                format!("{} TLS Error: TLS key negotiation failed to occur within {} seconds (check your network connectivity)", self.log_prefix(), self.cfg.hand_window.as_secs()),
            );
            out.log(
                LogClass::Error,
                format!("{} TLS Error: TLS handshake failed", self.log_prefix()),
            );
            return PeerOutcome::Remove(
                "SIGUSR1[soft,tls-error] received, client-instance restarting".into(),
            );
        }
        if self
            .lame
            .as_ref()
            .and_then(|l| l.expires)
            .is_some_and(|e| now >= e)
        {
            self.lame = None;
        }
        if self.phase == Phase::Established {
            let reneg_due = self.reneg_at.is_some_and(|r| now >= r)
                || self
                    .cfg
                    .reneg_bytes
                    .is_some_and(|b| self.primary.bytes >= b)
                || self
                    .cfg
                    .reneg_pkts
                    .is_some_and(|p| self.primary.packets >= p)
                || self
                    .primary
                    .data
                    .as_ref()
                    .is_some_and(|d| d.send_near_wrap());
            if reneg_due && self.primary.state == KsState::Active {
                self.reneg_at = None;
                let kid = self.next_key_id;
                if let Err(e) = self.start_renegotiation(kid, now, out) {
                    return PeerOutcome::Remove(format!(
                        "TLS Error: cannot start renegotiation: {e}"
                    ));
                }
            }
            if let Some(p) = self.cfg.ping {
                if now >= self.last_send + p {
                    self.encrypt_data(&magic::PING_PAYLOAD, now, now_unix, rng, out);
                }
            }
        }
        self.flush(now, now_unix, rng, out);
        PeerOutcome::Continue
    }

    /// Server shutdown: `RESTART` to clients that understand control-channel exit notification.
    pub fn notify_shutdown(
        &mut self,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) {
        if self.phase == Phase::Established && self.cfg.explicit_exit_notify {
            self.send_text(self.primary.key_id, "RESTART", now, out);
            self.flush(now, now_unix, rng, out);
        }
    }

    /// Test scaffolding: marks the session established as `cn` without a handshake, so server
    /// tests can exercise what happens to connected clients.
    #[cfg(test)]
    pub(crate) fn force_established(&mut self, cn: &str, now: Instant) {
        self.phase = Phase::Established;
        self.common_name = cn.to_string();
        self.prefix_has_cn = true;
        self.inactive_since = now;
        self.inactive_bytes = 0;
    }

    /// Test scaffolding: installs `key` as the primary key state's data-channel key.
    #[cfg(test)]
    pub(crate) fn force_data_key(&mut self, key: crate::proto::data::DataKey) {
        self.primary.data = Some(key);
    }

    /// Counts a control packet read from the link for this session (OpenVPN's `link_read_bytes`
    /// counts every packet that reaches the instance, authenticated or not; data packets are
    /// counted by the data path).
    pub fn note_link_in(&mut self, len: usize) {
        self.bytes_in = self
            .bytes_in
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    }

    /// Management `client-kill`: sends `message` (OpenVPN's default is `RESTART`; `HALT` or any
    /// text is passed through) on the control channel and schedules the end of the session
    /// [`LINGER`] (OpenVPN's `scheduled_exit_interval`, 5 s) later; the session keeps working
    /// until then so the message is delivered and acknowledged. A session that is not
    /// established has no negotiated control channel to carry text: it only gets the exit.
    pub fn schedule_kill(
        &mut self,
        message: &str,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) {
        if self.phase == Phase::Established {
            self.send_text(self.primary.key_id, message, now, out);
        }
        out.log(
            LogClass::Info,
            format!(
                "{} Delayed exit in {} seconds",
                self.log_prefix(),
                LINGER.as_secs()
            ),
        );
        // an exit already scheduled (the peer's own exit notification) keeps its deadline and reason
        if self.close_at.is_none() {
            self.close_at = Some(now + LINGER);
            self.close_reason =
                Some("SIGTERM[soft,delayed-exit] received, client-instance exiting");
        }
        self.flush(now, now_unix, rng, out);
    }

    /// Tunnel traffic of this client (`--inactive` bookkeeping): `len` bytes through the TUN.
    pub fn note_tunnel(&mut self, len: usize, now: Instant) {
        // As OpenVPN's register_activity: bytes accumulate, and each time they reach the
        // minimum the count restarts and so does the inactivity timer.
        if let Some((_, min_bytes)) = self.cfg.inactive {
            self.inactive_bytes = self
                .inactive_bytes
                .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
            if self.inactive_bytes >= min_bytes {
                self.inactive_bytes = 0;
                self.inactive_since = now;
            }
        }
    }

    /// Whether the session waits for the parent's authorisation verdict.
    pub fn is_waiting_auth(&self) -> bool {
        self.phase == Phase::WaitingAuth
            || (self.phase == Phase::Established && self.reauth_key.is_some())
    }

    /// Whether the session waits for a re-authorisation verdict after a renegotiation.
    pub fn is_reauthenticating(&self) -> bool {
        self.phase == Phase::Established && self.reauth_key.is_some()
    }

    /// The parent re-authorised the client after a renegotiation: the waiting key gets its data
    /// keys and the next renegotiation is scheduled. Returns an error line if key derivation
    /// failed (the session must end).
    pub fn accept_reauth(
        &mut self,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) -> PeerOutcome {
        let Some(key_id) = self.reauth_key.take() else {
            return PeerOutcome::Continue;
        };
        self.auth_deadline = None;
        if self.primary.key_id != key_id {
            // the key was replaced meanwhile (a newer renegotiation): nothing to install
            return PeerOutcome::Continue;
        }
        if let Err(e) = self.install_data_key(key_id, now, now_unix, out) {
            return PeerOutcome::Remove(format!("TLS Error: key derivation failed: {e}"));
        }
        self.schedule_reneg(now, rng);
        self.flush(now, now_unix, rng, out);
        PeerOutcome::Continue
    }

    /// The key id of the session's primary key state.
    pub fn primary_key_id(&self) -> u8 {
        self.primary.key_id
    }

    /// What the parent needs to decide about this client (`defer_auth`). Takes the password: it
    /// leaves the engine with this request and is not kept.
    pub fn auth_request(&mut self) -> bulwark_ipc::msg::clients::ClientAuthRequest {
        use bulwark_ipc::msg::mgmt::{RealAddr, TransportProto};
        let real_address = match self.addr {
            PeerAddr::Udp(a) => RealAddr {
                proto: TransportProto::Udp,
                addr: a,
            },
            PeerAddr::Tcp { addr, .. } => RealAddr {
                proto: TransportProto::Tcp,
                addr,
            },
        };
        bulwark_ipc::msg::clients::ClientAuthRequest {
            cid: self.cid,
            kid: u32::from(self.primary.key_id),
            reauth: self.reauth_key.is_some(),
            common_name: self.common_name.clone(),
            username: self.username.clone(),
            password: self.password.take(),
            real_address,
            peer_info: self.peer_info_lines(),
            cert_env: self.identity.as_ref().map(|i| i.env()).unwrap_or_default(),
        }
    }

    /// The parent accepted the client: continue to address assignment with these push edits.
    pub fn accept(
        &mut self,
        push_reset: bool,
        push_remove: Vec<String>,
        push: Vec<String>,
    ) -> bool {
        if self.phase != Phase::WaitingAuth {
            return false;
        }
        self.phase = Phase::WaitingAddress;
        self.auth_deadline = None;
        self.push_edits = Some((push_reset, push_remove, push));
        true
    }

    /// The parent refused the client: `AUTH_FAILED[,reason]`, then the session lingers and ends.
    pub fn deny(
        &mut self,
        client_reason: Option<&str>,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) {
        let msg = match client_reason {
            Some(r) => format!("AUTH_FAILED,{r}"),
            None => "AUTH_FAILED".to_string(),
        };
        self.send_text(self.primary.key_id, &msg, now, out);
        self.phase = Phase::Closing;
        self.auth_deadline = None;
        self.reauth_key = None;
        self.close_at = Some(now + LINGER);
        self.flush(now, now_unix, rng, out);
    }

    /// Authentication continues out of band: `AUTH_PENDING` and `INFO_PRE`; the client may take
    /// up to `timeout_secs` (at most the hand-window) more.
    pub fn pending(
        &mut self,
        extra: &str,
        timeout_secs: u32,
        now: Instant,
        now_unix: u64,
        rng: &mut dyn FnMut(&mut [u8]),
        out: &mut Outbox,
    ) {
        if !self.is_waiting_auth() {
            return;
        }
        let keywords = self
            .peer_info
            .as_ref()
            .and_then(|i| i.vars.iter().find(|(k, _)| k == "IV_PROTO"))
            .and_then(|(_, v)| v.parse::<u32>().ok())
            .is_some_and(|v| v & (1 << 4) != 0);
        let t = timeout_secs.min(u32::try_from(self.cfg.hand_window.as_secs()).unwrap_or(u32::MAX));
        self.send_text(
            self.primary.key_id,
            &push::auth_pending(t, keywords),
            now,
            out,
        );
        match push::info_pre(extra) {
            Ok(m) => self.send_text(self.primary.key_id, &m, now, out),
            Err(e) => out.log(
                LogClass::Error,
                format!("{} client-pending-auth: {e}", self.log_prefix()),
            ),
        }
        self.auth_deadline = Some(now + Duration::from_secs(u64::from(t)));
        self.flush(now, now_unix, rng, out);
    }

    /// The client's addresses as pushed (for status).
    pub fn virtual_addrs(&self) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        (self.lease.map(|l| l.ip), self.lease.and_then(|l| l.ip6))
    }

    /// Topology hint for callers.
    pub fn topology(pool: &PoolConfig) -> Topology {
        pool.topology
    }
}
