//! The multi-client server engine: peer table, stateless first contact, dispatch, routing, timers.
//!
//! Entry points (all deterministic, no I/O; time is passed in):
//! * [`Server::on_datagram`] — one OpenVPN packet from a peer (a UDP datagram or a TCP frame);
//! * [`Server::on_tun_packet`] — one inner packet read from the TUN device;
//! * [`Server::on_timeout`] / [`Server::next_timeout`] — timers;
//! * [`Server::on_tcp_closed`] — the driver saw a TCP connection close;
//! * [`Server::shutdown`] — tell every client we are going away.
//!
//! Per-client protocol state lives in [`crate::proto::session::Peer`].
//!
//! INVARIANT: no per-peer state is allocated for a UDP source until its third packet proves (through the
//! HMAC cookie) that it receives at its claimed address and holds the control-channel key. TCP connections
//! already prove the address (three-way handshake), so their session is created on the first valid reset.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_ipc::msg::clients::WorkerStatus;
use bulwark_ipc::msg::mgmt::{ClientEntry, RealAddr, RouteEntry, RouteKey, TransportProto};

use crate::proto::cookie::{cookie_capable, CookieJar, InitialRateLimiter};
use crate::proto::io::{EngineEvent, LogClass, Outbox, PeerAddr, Transmit};
use crate::proto::packet::{Opcode, SessionId, PEER_ID_NONE};
use crate::proto::peers::PeerTable;
use crate::proto::pool::{inner_addrs, Pool, Prefix, RouteTable};
use crate::proto::session::{Peer, PeerConfig, PeerOutcome};
use crate::proto::wrap::{ControlWrapper, InitialPacket, ServerWrap};

/// Server-wide counters (exported through status and metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// packets dropped because they were malformed
    pub malformed: u64,
    /// control packets that failed authentication (HMAC / tag / WKc)
    pub auth_failures: u64,
    /// third packets with an invalid cookie
    pub cookie_failures: u64,
    /// stateless replies suppressed by the initial-packet rate limit
    pub rate_limited: u64,
    /// data packets from unknown peers
    pub unknown_data: u64,
    /// inner packets from the TUN with no route to a client
    pub no_route: u64,
    /// inner packets from a client with a source address it does not own
    pub spoofed: u64,
    /// handshakes started (sessions created)
    pub handshakes_started: u64,
    /// clients that completed authentication
    pub handshakes_completed: u64,
    /// handshakes that failed
    pub handshakes_failed: u64,
    /// data packets refused by a replay window
    pub replay_drops: u64,
    /// data packets that failed authentication or decryption
    pub decrypt_failures: u64,
    /// renegotiations started (by either side)
    pub renegotiations: u64,
}

/// The server engine.
pub struct Server {
    cfg: Arc<PeerConfig>,
    wrap: ServerWrap,
    /// the group wrap key (tls-auth / tls-crypt), for the dynamic tls-crypt derivation
    group_key: Option<[u8; 256]>,
    cookies: CookieJar,
    limiter: InitialRateLimiter,
    peers: PeerTable,
    by_addr: HashMap<PeerAddr, u64>,
    by_peer_id: HashMap<u32, u64>,
    routes: RouteTable,
    pool: Pool,
    next_cid: u64,
    /// what the parent granted each accepted client (`defer_auth`)
    granted: HashMap<u64, bulwark_ipc::msg::clients::ClientOverrides>,
    /// clients reported to the parent with an AuthRequest (their end is reported too)
    asked: std::collections::HashSet<u64>,
    /// `connect-freq`: start of the current window and sessions created in it
    connect_window: Option<(Instant, u32)>,
    stats: ServerStats,
    rng: crate::proto::io::Rng,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("peers", &self.peers.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Server {
    /// Creates the engine. `rng` fills buffers with cryptographically secure random bytes (the driver
    /// passes the OS generator; tests pass a seeded one).
    pub fn new(
        cfg: PeerConfig,
        wrap: ServerWrap,
        group_key: Option<[u8; 256]>,
        pool: Pool,
        cookie_secret: [u8; 32],
        rng: crate::proto::io::Rng,
    ) -> Self {
        let hand = u32::try_from(cfg.hand_window.as_secs()).unwrap_or(60);
        Self {
            cookies: CookieJar::with_hand_window(cookie_secret, hand),
            limiter: cfg
                .connect_freq_initial
                .map_or_else(InitialRateLimiter::default, |(n, period)| {
                    InitialRateLimiter::new(n, period.as_secs())
                }),
            cfg: Arc::new(cfg),
            wrap,
            group_key,
            peers: PeerTable::default(),
            by_addr: HashMap::new(),
            by_peer_id: HashMap::new(),
            routes: RouteTable::default(),
            pool,
            next_cid: 0,
            granted: HashMap::new(),
            asked: std::collections::HashSet::new(),
            connect_window: None,
            stats: ServerStats::default(),
            rng,
        }
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        // Sessions that ended were added in remove_peer; the live ones are summed now.
        let mut st = self.stats;
        for p in self.peers.values() {
            let d = p.drops();
            st.replay_drops += d.replay;
            st.decrypt_failures += d.decrypt;
            st.renegotiations += d.renegotiations;
        }
        st
    }

    /// What the parent granted a client (`defer_auth`), if anything.
    pub fn granted(&self, cid: u64) -> Option<&bulwark_ipc::msg::clients::ClientOverrides> {
        self.granted.get(&cid)
    }

    /// Connected and handshaking peers.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Replaces the global push list for clients that authenticate from now on (SIGHUP reload);
    /// connected clients keep what they were pushed.
    pub fn set_push(&mut self, push: Vec<String>) {
        let mut cfg = (*self.cfg).clone();
        cfg.push = push;
        self.cfg = Arc::new(cfg);
    }

    /// Replaces the TLS server (certificate chain, CA, CRL, TLS options) for every handshake from
    /// now on, renegotiations of connected clients included: after a SIGHUP reload the parent signs
    /// with the new key, so an old certificate must not be presented any more.
    pub fn set_tls(&mut self, tls: Arc<crate::proto::tls::TlsServer>) {
        let mut cfg = (*self.cfg).clone();
        cfg.tls = tls;
        self.cfg = Arc::new(cfg);
        for peer in self.peers.values_mut() {
            peer.set_config(Arc::clone(&self.cfg));
        }
    }

    /// Replaces the CRL used by NEW handshakes (the parent re-read the file).
    pub fn set_crl(&mut self, crl: Option<&[u8]>) -> Result<(), crate::proto::tls::TlsError> {
        self.cfg.tls.set_crl(crl)
    }

    fn alloc_peer_id(&self) -> Option<u32> {
        (0..self.cfg.max_clients).find(|id| !self.by_peer_id.contains_key(id))
    }

    /// One OpenVPN packet from the network.
    pub fn on_datagram(
        &mut self,
        from: PeerAddr,
        data: &[u8],
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) {
        let Some(&first) = data.first() else {
            self.stats.malformed += 1;
            return;
        };
        let op = first >> 3;
        if op == Opcode::DataV1.as_u8() || op == Opcode::DataV2.as_u8() {
            self.on_data(from, data, now, now_unix, out);
            return;
        }
        // control packet: an existing session from this address?
        if let Some(&cid) = self.by_addr.get(&from) {
            if let Some(peer) = self.peers.get_mut(&cid) {
                if peer.owns_control(data) {
                    peer.note_link_in(data.len());
                    let outcome = peer.on_control(data, now, now_unix, &mut *self.rng, out);
                    self.after_peer(cid, outcome, now, now_unix, out);
                    return;
                }
            }
        }
        self.on_new_contact(from, data, now, now_unix, out);
    }

    /// First contact (or a new session from a known address): the stateless cookie exchange for UDP, a
    /// new session for TCP.
    fn on_new_contact(
        &mut self,
        from: PeerAddr,
        data: &[u8],
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) {
        let initial = match self.wrap.unwrap_initial(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.auth_failures += 1;
                out.log(
                    LogClass::Error,
                    format!("{from} {}", e.openvpn_message(&from)),
                );
                return;
            }
        };
        let opcode = initial.packet.opcode;
        match from {
            PeerAddr::Udp(addr) if cookie_capable(&initial) => {
                // packet 1: answer statelessly with a cookie session id; nothing is stored
                if !self.limiter.allow(now_unix) {
                    self.stats.rate_limited += 1;
                    return;
                }
                let mut buf = Vec::with_capacity(128);
                match self
                    .cookies
                    .reply_to_reset(&self.wrap, addr, &initial, now_unix, &mut buf)
                {
                    Ok(()) => out.transmits.push(Transmit {
                        to: from,
                        data: buf.into(),
                    }),
                    Err(e) => out.log(LogClass::Detail, format!("{from} cannot answer reset: {e}")),
                }
            }
            PeerAddr::Udp(addr)
                if matches!(
                    opcode,
                    Opcode::ControlV1 | Opcode::AckV1 | Opcode::ControlWkcV1
                ) =>
            {
                // packet 3: only a valid cookie allocates state
                let adm = match self.cookies.admit(addr, initial, now_unix) {
                    Ok(a) => a,
                    Err(e) => {
                        self.stats.cookie_failures += 1;
                        out.log(
                            LogClass::Detail,
                            format!("{from} dropping third packet: {e}"),
                        );
                        return;
                    }
                };
                let wrapper = match self
                    .wrap
                    .session_wrapper_after_cookie(adm.initial(), now_unix)
                {
                    Ok(w) => w,
                    Err(e) => {
                        self.stats.auth_failures += 1;
                        out.log(LogClass::Detail, format!("{from} {e}"));
                        return;
                    }
                };
                let server_sid = adm.server_session();
                let initial = adm.into_initial();
                self.create_peer(
                    from,
                    (initial, data.len()),
                    wrapper,
                    server_sid,
                    true,
                    now,
                    now_unix,
                    out,
                );
            }
            // TCP (the connection proves the address), or a tls-crypt-v2 client without cookie
            // support (OpenVPN's default `allow-noncookie`)
            _ if opcode.is_hard_reset() && (from.is_tcp() || initial.v2.is_some()) => {
                let mut wrapper = self.wrap.session_wrapper(&initial);
                if let Err(e) = wrapper.record_initial(&initial, now_unix) {
                    self.stats.auth_failures += 1;
                    out.log(LogClass::Detail, format!("{from} {e}"));
                    return;
                }
                let mut sid = [0u8; 8];
                while sid == [0u8; 8] {
                    (self.rng)(&mut sid);
                }
                self.create_peer(
                    from,
                    (initial, data.len()),
                    wrapper,
                    SessionId(sid),
                    false,
                    now,
                    now_unix,
                    out,
                );
            }
            _ => {
                self.stats.malformed += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_peer(
        &mut self,
        from: PeerAddr,
        (first, first_len): (InitialPacket, usize),
        wrapper: ControlWrapper,
        server_sid: SessionId,
        stateless: bool,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) {
        if let Some((limit, window)) = self.cfg.connect_freq {
            let (start, count) = match self.connect_window {
                Some((start, count)) if now < start + window => (start, count),
                _ => (now, 0),
            };
            if count >= limit {
                self.stats.rate_limited += 1;
                // OpenVPN 2.6 logs this at D_MULTI_ERRORS (verb 1) with the peer's address
                out.log(
                    LogClass::Error,
                    format!("MULTI: Connection from {from} would exceed new connection frequency limit as controlled by --connect-freq"),
                );
                self.connect_window = Some((start, count));
                return;
            }
            self.connect_window = Some((start, count + 1));
        }
        let Some(peer_id) = self.alloc_peer_id() else {
            out.log(
                LogClass::Error,
                format!("{from} MULTI: new incoming connection would exceed maximum number of clients ({})", self.cfg.max_clients),
            );
            return;
        };
        let cid = self.next_cid;
        let original_key = match &first.v2 {
            Some(v2) => Some(*v2.kc.as_bytes()),
            None => self.group_key,
        };
        // OpenVPN (D_CIPHER_INIT, verb 4) as it sets up the new instance's control channel keys
        for l in wrapper.key_init_lines("Control Channel Encryption") {
            out.log(LogClass::Detail, format!("{from} {l}"));
        }
        let mut peer = match Peer::new(
            Arc::clone(&self.cfg),
            cid,
            peer_id,
            from,
            server_sid.0,
            first.packet.session_id,
            wrapper,
            original_key,
            stateless,
            now,
            now_unix,
            &mut *self.rng,
        ) {
            Ok(p) => p,
            Err(e) => {
                out.log(
                    LogClass::Error,
                    format!("{from} TLS Error: cannot create TLS session: {e}"),
                );
                return;
            }
        };
        self.next_cid += 1;
        self.stats.handshakes_started += 1;
        // A new session from an address that already has one: the old one stays until the new one
        // authenticates (never tear down an authenticated session because of an unauthenticated reset).
        if let Some(old_cid) = self.by_addr.insert(from, cid) {
            if let Some(p) = self.peers.get_mut(&old_cid) {
                p.set_superseded_by(cid);
            }
        }
        self.by_peer_id.insert(peer_id, cid);
        peer.note_link_in(first_len);
        let outcome = peer.on_first_packet(first, now, now_unix, &mut *self.rng, out);
        self.peers.insert(cid, peer);
        self.after_peer(cid, outcome, now, now_unix, out);
    }

    fn on_data(
        &mut self,
        from: PeerAddr,
        data: &[u8],
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) {
        let cid = if data[0] >> 3 == Opcode::DataV2.as_u8() && data.len() >= 4 {
            let pid = u32::from_be_bytes([0, data[1], data[2], data[3]]);
            if pid != PEER_ID_NONE {
                self.by_peer_id.get(&pid).copied()
            } else {
                self.by_addr.get(&from).copied()
            }
        } else {
            self.by_addr.get(&from).copied()
        };
        let Some(cid) = cid else {
            self.stats.unknown_data += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&cid) else {
            self.stats.unknown_data += 1;
            return;
        };
        // TCP peers never float; a data packet for another connection's peer id is dropped.
        if from != peer.addr() && (from.is_tcp() || peer.addr().is_tcp()) {
            self.stats.unknown_data += 1;
            return;
        }
        let Some(plain) = peer.decrypt_data(from, data, now, now_unix, out) else {
            return;
        };
        if from != peer.addr() {
            // INVARIANT: floating happens only after the packet authenticated and passed the replay check.
            // OpenVPN's wording and level (D_MULTI_MEDIUM), with the instance's old prefix.
            let old = peer.addr();
            out.log(
                LogClass::Detail,
                format!(
                    "{} peer {} ({}) floated from {} to {}",
                    peer.log_prefix(),
                    peer.peer_id(),
                    peer.common_name(),
                    old,
                    from.actual()
                ),
            );
            peer.set_addr(from);
            self.by_addr.remove(&old);
            self.by_addr.insert(from, cid);
            // INVARIANT: only a client the parent knows as established is reported (a float of
            // an unknown client is an IPC violation in the parent's eyes; a client may send data
            // packets before it is admitted).
            if peer.is_established() {
                out.events
                    .push(EngineEvent::ClientFloated { cid, to: from });
            }
        }
        if plain.is_empty() {
            return;
        }
        peer.note_tunnel(plain.len(), now);
        // route the inner packet
        let Some((src, dst)) = inner_addrs(&plain) else {
            self.stats.malformed += 1;
            return;
        };
        if !self.source_allowed(cid, src) {
            // As OpenVPN: an IPv6 link-local source (the client's router solicitations and the
            // like) is dropped without a word; any other foreign source is logged and counted.
            if matches!(src, std::net::IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                out.recycle(plain.into_buffer());
                return;
            }
            self.stats.spoofed += 1;
            out.log(
                LogClass::Detail,
                format!(
                    "{} MULTI: bad source address from client [{}], packet dropped",
                    self.peers
                        .get(&cid)
                        .map(|p| p.log_prefix())
                        .unwrap_or_default(),
                    src
                ),
            );
            return;
        }
        if self.cfg.client_to_client {
            if let Some(dst_cid) = self.routes.lookup(dst) {
                if dst_cid != cid {
                    if let Some(dst_peer) = self.peers.get_mut(&dst_cid) {
                        dst_peer.note_tunnel(plain.len(), now);
                        dst_peer.encrypt_data(&plain, now, now_unix, &mut *self.rng, out);
                    }
                    out.recycle(plain.into_buffer());
                    return;
                }
            }
        }
        out.tun.push(plain);
    }

    fn source_allowed(&self, cid: u64, src: IpAddr) -> bool {
        self.routes.lookup(src) == Some(cid)
    }

    /// One inner packet from the TUN device.
    pub fn on_tun_packet(&mut self, pkt: &[u8], now: Instant, now_unix: u64, out: &mut Outbox) {
        let Some((_, dst)) = inner_addrs(pkt) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(cid) = self.routes.lookup(dst) else {
            self.stats.no_route += 1;
            return;
        };
        if let Some(peer) = self.peers.get_mut(&cid) {
            peer.note_tunnel(pkt.len(), now);
            peer.encrypt_data(pkt, now, now_unix, &mut *self.rng, out);
        }
    }

    /// The driver saw a TCP connection end.
    pub fn on_tcp_closed(&mut self, conn: u64, now: Instant, now_unix: u64, out: &mut Outbox) {
        let cid = self.by_addr.iter().find_map(|(a, c)| match a {
            PeerAddr::Tcp { conn: c2, .. } if *c2 == conn => Some(*c),
            _ => None,
        });
        if let Some(cid) = cid {
            self.remove_peer(cid, "Connection reset, restarting [0]", now, now_unix, out);
        }
    }

    /// Earliest deadline of any timer, from the peer table's timer queue: never later than the true
    /// one, at times earlier (a deadline that moved later) — then [`Server::on_timeout`] finds
    /// nothing due and the queue moves on. O(log peers), not O(peers): the driver asks every turn.
    pub fn next_timeout(&mut self) -> Option<Instant> {
        self.peers.next_timeout()
    }

    /// Runs every due timer.
    pub fn on_timeout(&mut self, now: Instant, now_unix: u64, out: &mut Outbox) {
        for cid in self.peers.take_due(now) {
            if let Some(peer) = self.peers.get_mut(&cid) {
                let outcome = peer.on_timeout(now, now_unix, &mut *self.rng, out);
                self.after_peer(cid, outcome, now, now_unix, out);
            }
        }
    }

    /// Tells every client the server is going away (`RESTART` with explicit-exit-notify) and flushes.
    pub fn shutdown(&mut self, now: Instant, now_unix: u64, out: &mut Outbox) {
        let cids: Vec<u64> = self.peers.keys().copied().collect();
        for cid in cids {
            if let Some(peer) = self.peers.get_mut(&cid) {
                peer.notify_shutdown(now, now_unix, &mut *self.rng, out);
            }
        }
    }

    /// Management `status`: every instance (handshaking ones too, without a common name, as
    /// OpenVPN lists them `UNDEF`), ordered by client id, the route table entries of established
    /// clients (virtual addresses and granted iroutes as `V4Net`/`V6Net`) and the link byte
    /// totals. Routes carry `last_ref = now_unix`: the engine does not track per-route use times.
    pub fn status(&self, now_unix: u64) -> WorkerStatus {
        let mut clients = Vec::new();
        let mut routes = Vec::new();
        let (mut link_in, mut link_out) = (0u64, 0u64);
        let mut peers: Vec<&Peer> = self.peers.values().collect();
        peers.sort_by_key(|p| p.cid());
        let now_i = i64::try_from(now_unix).unwrap_or(i64::MAX);
        for p in peers {
            let (rx, tx) = p.byte_counts();
            link_in = link_in.saturating_add(rx);
            link_out = link_out.saturating_add(tx);
            let real = real_addr(&p.addr());
            let info = p.client_info();
            let (v4, v6) = p.virtual_addrs();
            let established = p.listed_by_name();
            let cn = p.common_name();
            let since = if p.connected_since() == 0 {
                now_unix
            } else {
                p.connected_since()
            };
            clients.push(ClientEntry {
                common_name: (established && !cn.is_empty()).then(|| cn.to_string()),
                real_address: real,
                virtual_v4: v4,
                virtual_v6: v6,
                bytes_received: rx,
                bytes_sent: tx,
                connected_since: i64::try_from(since).unwrap_or(i64::MAX),
                username: info.as_ref().and_then(|i| i.username.clone()),
                client_id: p.cid(),
                peer_id: p.peer_id(),
                data_cipher: info
                    .as_ref()
                    .map(|i| i.cipher.clone())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "UNDEF".into()),
            });
            if !established {
                continue;
            }
            let owner = (!cn.is_empty()).then(|| cn.to_string());
            let mut keys = Vec::new();
            keys.extend(v4.map(RouteKey::V4));
            keys.extend(v6.map(RouteKey::V6));
            if let Some(g) = self.granted.get(&p.cid()) {
                keys.extend(g.iroutes.iter().map(|(n, b)| RouteKey::V4Net(*n, *b)));
                keys.extend(g.iroutes_v6.iter().map(|(n, b)| RouteKey::V6Net(*n, *b)));
            }
            routes.extend(keys.into_iter().map(|key| RouteEntry {
                key,
                cached: false,
                common_name: owner.clone(),
                real_address: real,
                last_ref: now_i,
            }));
        }
        let st = self.stats();
        WorkerStatus {
            counters: bulwark_ipc::msg::clients::EngineCounters {
                malformed: st.malformed,
                control_auth_failures: st.auth_failures,
                cookie_failures: st.cookie_failures,
                rate_limited: st.rate_limited,
                unknown_data: st.unknown_data,
                no_route: st.no_route,
                spoofed: st.spoofed,
                handshakes_started: st.handshakes_started,
                handshakes_completed: st.handshakes_completed,
                handshakes_failed: st.handshakes_failed,
                replay_drops: st.replay_drops,
                decrypt_failures: st.decrypt_failures,
                renegotiations: st.renegotiations,
            },
            clients,
            routes,
            link_bytes_in: link_in,
            link_bytes_out: link_out,
        }
    }

    /// Management `bytecount`: `(cid, bytes received from, bytes sent to)` of every established
    /// client, ordered by client id.
    pub fn byte_counts(&self) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<(u64, u64, u64)> = self
            .peers
            .values()
            .filter(|p| p.is_established())
            .map(|p| {
                let (rx, tx) = p.byte_counts();
                (p.cid(), rx, tx)
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Management `kill CN`: as OpenVPN 2.6 (`management_callback_kill_by_cn`), every instance
    /// whose verified common name is `cn` is signalled SIGTERM and closed at once; nothing is
    /// sent to the client. Returns how many were killed.
    pub fn kill_common_name(
        &mut self,
        cn: &str,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) -> u32 {
        let mut cids: Vec<u64> = self
            .peers
            .values()
            .filter(|p| !p.common_name().is_empty() && p.common_name() == cn)
            .map(|p| p.cid())
            .collect();
        cids.sort_unstable();
        self.kill_now(&cids, now, now_unix, out)
    }

    /// Management `kill [proto:]IP:port`: as OpenVPN 2.6 (`management_callback_kill_by_addr`),
    /// every instance whose link address is `ip:port` (and whose transport is `proto`, if given)
    /// is closed at once without a message to the client. An IPv4-mapped IPv6 link address
    /// matches its IPv4 form. Returns how many were killed.
    pub fn kill_address(
        &mut self,
        proto: Option<TransportProto>,
        ip: IpAddr,
        port: u16,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) -> u32 {
        let mut cids: Vec<u64> = self
            .peers
            .values()
            .filter(|p| addr_matches(&real_addr(&p.addr()), proto, ip, port))
            .map(|p| p.cid())
            .collect();
        cids.sort_unstable();
        self.kill_now(&cids, now, now_unix, out)
    }

    fn kill_now(&mut self, cids: &[u64], now: Instant, now_unix: u64, out: &mut Outbox) -> u32 {
        let mut n = 0u32;
        for &cid in cids {
            if self.peers.contains_key(&cid) {
                self.remove_peer(
                    cid,
                    "SIGTERM[soft,] received, client-instance exiting",
                    now,
                    now_unix,
                    out,
                );
                n = n.saturating_add(1);
            }
        }
        n
    }

    /// Management `client-kill CID [message]`: as OpenVPN 2.6 (`send_restart`), `message` is
    /// sent to the client on the control channel (an empty message means OpenVPN's default,
    /// `RESTART`; `HALT` tells the client to exit; any other text is passed through) and the
    /// instance is closed 5 seconds later (`SIGTERM[soft,delayed-exit]`). Returns whether the
    /// client id exists.
    pub fn client_kill(
        &mut self,
        cid: u64,
        message: &str,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&cid) else {
            return false;
        };
        let msg = if message.is_empty() {
            "RESTART"
        } else {
            message
        };
        peer.schedule_kill(msg, now, now_unix, &mut *self.rng, out);
        true
    }

    /// The parent's decision about a client that waits for it (`defer_auth`). A verdict for a
    /// client that is gone or not waiting (a race with a disconnect or a timeout) is logged and
    /// ignored.
    pub fn auth_verdict(
        &mut self,
        cid: u64,
        kid: u32,
        verdict: bulwark_ipc::msg::clients::AuthVerdict,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) {
        use bulwark_ipc::msg::clients::AuthVerdict;
        let waiting = self
            .peers
            .get(&cid)
            .is_some_and(|p| p.is_waiting_auth() && u32::from(p.primary_key_id()) == kid);
        if !waiting {
            out.log(
                LogClass::Detail,
                format!("authentication verdict for client {cid} key {kid} ignored: the client is no longer waiting"),
            );
            return;
        }
        match verdict {
            AuthVerdict::Accept(o) => {
                let Some(peer) = self.peers.get_mut(&cid) else {
                    return;
                };
                if peer.is_reauthenticating() {
                    // re-authorisation after a renegotiation: addresses, iroutes and the push
                    // reply stay as granted at connection time
                    let _ = o;
                    let outcome = peer.accept_reauth(now, now_unix, &mut *self.rng, out);
                    self.after_peer(cid, outcome, now, now_unix, out);
                    return;
                }
                peer.accept(o.push_reset, o.push_remove.clone(), o.push.clone());
                self.granted.insert(cid, *o);
                self.assign_address(cid, now, now_unix, out);
            }
            AuthVerdict::Deny {
                reason,
                client_reason,
            } => {
                if let Some(peer) = self.peers.get_mut(&cid) {
                    out.log(
                        LogClass::Error,
                        format!(
                            "{} TLS Auth Error: client authentication denied: {reason}",
                            peer.log_prefix()
                        ),
                    );
                    peer.deny(client_reason.as_deref(), now, now_unix, &mut *self.rng, out);
                }
            }
            AuthVerdict::Pending {
                extra,
                timeout_secs,
            } => {
                if let Some(peer) = self.peers.get_mut(&cid) {
                    peer.pending(&extra, timeout_secs, now, now_unix, &mut *self.rng, out);
                }
            }
        }
    }

    /// The address for a client: `ifconfig-push` granted by the parent, else the persisted
    /// address if free, else the next free pool address.
    fn lease_for(&mut self, cid: u64) -> Result<crate::proto::pool::Lease, String> {
        let g = self.granted.get(&cid).cloned().unwrap_or_default();
        // a static address another client already holds is refused (an iroute covering it is not
        // a holder: the client's host route takes precedence over prefixes)
        if let Some((a6, _)) = g.ifconfig_ipv6_push {
            if self
                .routes
                .host_owner(IpAddr::V6(a6))
                .is_some_and(|owner| owner != cid)
            {
                return Err(format!(
                    "ifconfig-ipv6-push address {a6} is in use by another client"
                ));
            }
        }
        if let Some((ip, second)) = g.ifconfig_push {
            if self
                .routes
                .host_owner(IpAddr::V4(ip))
                .is_some_and(|owner| owner != cid)
            {
                return Err(format!(
                    "ifconfig-push address {ip} is in use by another client"
                ));
            }
            let mut lease = match self.pool.index_of(ip) {
                Some(_) => self.pool.acquire_ip(ip).map_err(|e| e.to_string())?,
                None => crate::proto::pool::Lease {
                    index: u32::MAX,
                    ip,
                    peer_or_mask: second,
                    ip6: None,
                },
            };
            lease.peer_or_mask = second;
            if let Some((a6, _)) = g.ifconfig_ipv6_push {
                lease.ip6 = Some(a6);
            }
            return Ok(lease);
        }
        if let Some(hint) = g.pool_hint {
            if let Ok(mut l) = self.pool.acquire_ip(hint) {
                if let Some((a6, _)) = g.ifconfig_ipv6_push {
                    l.ip6 = Some(a6);
                }
                return Ok(l);
            }
        }
        let mut l = self.pool.acquire().map_err(|e| e.to_string())?;
        if let Some((a6, _)) = g.ifconfig_ipv6_push {
            l.ip6 = Some(a6);
        }
        Ok(l)
    }

    fn after_peer(
        &mut self,
        cid: u64,
        outcome: PeerOutcome,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) {
        match outcome {
            PeerOutcome::Continue => {}
            PeerOutcome::NeedsAddress => self.assign_address(cid, now, now_unix, out),
            PeerOutcome::NeedsAuth => {
                if let Some(peer) = self.peers.get_mut(&cid) {
                    self.asked.insert(cid);
                    out.events
                        .push(EngineEvent::AuthRequest(Box::new(peer.auth_request())));
                }
            }
            PeerOutcome::Remove(reason) => self.remove_peer(cid, &reason, now, now_unix, out),
        }
    }

    fn assign_address(&mut self, cid: u64, now: Instant, now_unix: u64, out: &mut Outbox) {
        // duplicate-cn: without it, a new client with the same CN replaces the old one
        let Some(cn) = self.peers.get(&cid).map(|p| p.common_name().to_string()) else {
            return;
        };
        if !self.cfg.duplicate_cn {
            let dups: Vec<u64> = self
                .peers
                .iter()
                .filter(|(c, p)| **c != cid && p.is_established() && p.common_name() == cn)
                .map(|(c, _)| *c)
                .collect();
            for d in dups {
                if let Some(p) = self.peers.get(&d) {
                    out.log(
                        LogClass::Info,
                        format!(
                            "MULTI: new connection by client '{}' will cause previous active sessions by this client to be dropped.  Remember to use the --duplicate-cn option if you want multiple clients using the same certificate or username to concurrently connect.",
                            p.common_name()
                        ),
                    );
                }
                self.remove_peer(d, "client-instance restarting", now, now_unix, out);
            }
        }
        // a superseded session from the same address goes now that the new one authenticated
        let superseded: Vec<u64> = self
            .peers
            .iter()
            .filter(|(c, p)| **c != cid && p.superseded_by() == Some(cid))
            .map(|(c, _)| *c)
            .collect();
        for s in superseded {
            self.remove_peer(s, "client-instance restarting", now, now_unix, out);
        }
        let lease = match self.lease_for(cid) {
            Ok(l) => l,
            Err(e) => {
                out.log(
                    LogClass::Error,
                    format!("MULTI: no dynamic or static remote --ifconfig address is available for {cn}: {e}"),
                );
                self.remove_peer(cid, "address pool exhausted", now, now_unix, out);
                return;
            }
        };
        self.routes.add(Prefix::host(IpAddr::V4(lease.ip)), cid);
        if let Some(v6) = lease.ip6 {
            self.routes.add(Prefix::host(IpAddr::V6(v6)), cid);
        }
        let (iroutes, iroutes_v6) = self
            .granted
            .get(&cid)
            .map(|g| (g.iroutes.clone(), g.iroutes_v6.clone()))
            .unwrap_or_default();
        for (net, bits) in &iroutes {
            self.routes.add(
                Prefix {
                    addr: IpAddr::V4(*net),
                    len: *bits,
                },
                cid,
            );
        }
        for (net, bits) in &iroutes_v6 {
            self.routes.add(
                Prefix {
                    addr: IpAddr::V6(*net),
                    len: *bits,
                },
                cid,
            );
        }
        let Some(peer) = self.peers.get_mut(&cid) else {
            return;
        };
        let prefix = peer.log_prefix();
        out.log(
            LogClass::Notice,
            format!(
                "{prefix} MULTI_sva: pool returned IPv4={}, IPv6={}",
                lease.ip,
                lease
                    .ip6
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "(Not enabled)".into())
            ),
        );
        out.log(
            LogClass::Info,
            format!("{prefix} MULTI: Learn: {} -> {prefix}", lease.ip),
        );
        out.log(
            LogClass::Info,
            format!(
                "{prefix} MULTI: primary virtual IP for {prefix}: {}",
                lease.ip
            ),
        );
        if let Some(v6) = lease.ip6 {
            out.log(
                LogClass::Info,
                format!("{prefix} MULTI: Learn: {v6} -> {prefix}"),
            );
            out.log(
                LogClass::Info,
                format!("{prefix} MULTI: primary virtual IPv6 for {prefix}: {v6}"),
            );
        }
        let outcome = peer.connected(
            lease,
            self.pool.config(),
            now,
            now_unix,
            &mut *self.rng,
            out,
        );
        self.stats.handshakes_completed += 1;
        if let Some(mut info) = peer.client_info() {
            info.iroutes = iroutes;
            info.iroutes_v6 = iroutes_v6;
            out.events.push(EngineEvent::ClientConnected(info));
        }
        self.after_peer(cid, outcome, now, now_unix, out);
    }

    fn remove_peer(
        &mut self,
        cid: u64,
        reason: &str,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) {
        let Some(peer) = self.peers.remove(&cid) else {
            return;
        };
        let _ = now;
        if self.by_addr.get(&peer.addr()) == Some(&cid) {
            self.by_addr.remove(&peer.addr());
        }
        if self.by_peer_id.get(&peer.peer_id()) == Some(&cid) {
            self.by_peer_id.remove(&peer.peer_id());
        }
        self.routes.remove_peer(cid);
        self.granted.remove(&cid);
        if let Some(lease) = peer.lease() {
            self.pool.release(&lease);
        }
        if !peer.is_established() {
            self.stats.handshakes_failed += 1;
        }
        let d = peer.drops();
        self.stats.replay_drops += d.replay;
        self.stats.decrypt_failures += d.decrypt;
        self.stats.renegotiations += d.renegotiations;
        out.log(LogClass::Info, format!("{} {}", peer.log_prefix(), reason));
        let asked = self.asked.remove(&cid);
        if peer.is_established() || asked {
            let (bytes_in, bytes_out) = peer.byte_counts();
            out.events.push(EngineEvent::ClientDisconnected {
                cid,
                reason: reason.to_string(),
                bytes_in,
                bytes_out,
                duration_secs: now_unix.saturating_sub(peer.connected_since()),
            });
        }
        if let PeerAddr::Tcp { conn, .. } = peer.addr() {
            out.events.push(EngineEvent::CloseTcp { conn });
        }
        let _ = Duration::ZERO;
    }
}

/// The link address of a peer as the management interface shows it.
pub fn real_addr(a: &PeerAddr) -> RealAddr {
    match a {
        PeerAddr::Udp(addr) => RealAddr {
            proto: TransportProto::Udp,
            addr: *addr,
        },
        PeerAddr::Tcp { addr, .. } => RealAddr {
            proto: TransportProto::Tcp,
            addr: *addr,
        },
    }
}

/// Whether a link address is the one a management `kill` names.
fn addr_matches(r: &RealAddr, proto: Option<TransportProto>, ip: IpAddr, port: u16) -> bool {
    let same_ip = match (r.addr.ip(), ip) {
        (IpAddr::V6(a), IpAddr::V4(b)) => a.to_ipv4_mapped() == Some(b),
        (a, b) => a == b,
    };
    same_ip && r.addr.port() == port && proto.is_none_or(|p| p == r.proto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tls::{KeySigner, SignError};
    use bulwark_ipc::msg::engine::EngineConfig;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::{SignatureAlgorithm, SignatureScheme};
    use std::net::SocketAddr;

    /// The engine never signs in these tests: no client gets as far as the server's signature.
    #[derive(Debug)]
    struct NoSign;

    impl KeySigner for NoSign {
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::ECDSA
        }
        fn sign(&self, _: SignatureScheme, _: &[u8]) -> Result<Vec<u8>, SignError> {
            Err(SignError::Refused {
                reason: "test".into(),
            })
        }
    }

    fn server_with(tweak: impl FnOnce(&mut EngineConfig)) -> Server {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name.push(DnType::CommonName, "server");
        let cert = leaf
            .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        let mut ec = EngineConfig::minimal_for_tests();
        ec.tls.ca_pem = ca_pem.into_bytes();
        ec.tls.cert_chain_pem = cert.pem().into_bytes();
        tweak(&mut ec);
        let mut n = 0u8;
        crate::setup::build(
            &ec,
            Arc::new(NoSign),
            [7u8; 32],
            Box::new(move |b: &mut [u8]| {
                for x in b {
                    n = n.wrapping_add(1);
                    *x = n;
                }
            }),
        )
        .unwrap()
    }

    /// P_CONTROL_HARD_RESET_CLIENT_V2, key id 0, no acks, packet id 0, no wrapping.
    fn reset(sid: u8) -> Vec<u8> {
        let mut p = vec![(Opcode::ControlHardResetClientV2.as_u8() << 3)];
        p.extend_from_slice(&[sid; 8]);
        p.push(0);
        p.extend_from_slice(&[0, 0, 0, 0]);
        p
    }

    fn tcp(conn: u64, port: u16) -> PeerAddr {
        PeerAddr::Tcp {
            conn,
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
        }
    }

    fn logs(out: &Outbox) -> Vec<String> {
        out.events
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Log { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn status_lists_handshaking_instances_without_common_name() {
        let mut s = server_with(|_| {});
        let (t0, mut out) = (Instant::now(), Outbox::default());
        s.on_datagram(tcp(1, 4000), &reset(1), t0, 1_000, &mut out);
        s.on_datagram(tcp(2, 4001), &reset(2), t0, 1_001, &mut out);
        assert_eq!(s.peers().count(), 2);
        let st = s.status(2_000);
        assert_eq!(st.clients.len(), 2);
        assert_eq!(st.clients[0].client_id, 0);
        assert_eq!(st.clients[1].client_id, 1);
        assert!(st.clients.iter().all(|c| c.common_name.is_none()));
        assert_eq!(st.clients[0].real_address.proto, TransportProto::Tcp);
        assert_eq!(
            st.clients[1].real_address.addr,
            SocketAddr::from(([192, 0, 2, 1], 4001))
        );
        assert_eq!(st.clients[0].connected_since, 1_000);
        assert_eq!(st.clients[0].data_cipher, "UNDEF");
        assert!(st.routes.is_empty());
        assert!(st.link_bytes_in > 0, "the resets were counted");
        assert_eq!(
            st.link_bytes_in,
            st.clients.iter().map(|c| c.bytes_received).sum::<u64>()
        );
        // bytecount only reports established clients
        assert!(s.byte_counts().is_empty());
    }

    #[test]
    fn kill_by_address_closes_at_once_without_a_message() {
        let mut s = server_with(|_| {});
        let (t0, mut out) = (Instant::now(), Outbox::default());
        s.on_datagram(tcp(1, 4000), &reset(1), t0, 1_000, &mut out);
        s.on_datagram(tcp(2, 4001), &reset(2), t0, 1_000, &mut out);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut out = Outbox::default();
        assert_eq!(
            s.kill_address(Some(TransportProto::Udp), ip, 4000, t0, 1_000, &mut out),
            0
        );
        assert_eq!(s.kill_address(None, ip, 4002, t0, 1_000, &mut out), 0);
        assert_eq!(s.kill_common_name("client1", t0, 1_000, &mut out), 0);
        assert!(out.is_empty());
        assert_eq!(
            s.kill_address(Some(TransportProto::Tcp), ip, 4000, t0, 1_000, &mut out),
            1
        );
        assert_eq!(s.peers().count(), 1);
        assert!(out.transmits.is_empty(), "kill sends nothing to the client");
        assert!(logs(&out)
            .iter()
            .any(|l| l.ends_with(" SIGTERM[soft,] received, client-instance exiting")));
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, EngineEvent::CloseTcp { conn: 1 })));
        // an IPv4-mapped link address matches the IPv4 form
        let mapped = RealAddr {
            proto: TransportProto::Udp,
            addr: "[::ffff:192.0.2.9]:5000".parse().unwrap(),
        };
        assert!(addr_matches(
            &mapped,
            None,
            "192.0.2.9".parse().unwrap(),
            5000
        ));
        assert!(!addr_matches(
            &mapped,
            Some(TransportProto::Tcp),
            "192.0.2.9".parse().unwrap(),
            5000
        ));
    }

    #[test]
    fn client_kill_tears_down_five_seconds_later() {
        let mut s = server_with(|_| {});
        let (t0, mut out) = (Instant::now(), Outbox::default());
        s.on_datagram(tcp(1, 4000), &reset(1), t0, 1_000, &mut out);
        let mut out = Outbox::default();
        assert!(!s.client_kill(99, "HALT", t0, 1_000, &mut out));
        assert!(s.client_kill(0, "", t0, 1_000, &mut out));
        assert!(logs(&out)
            .iter()
            .any(|l| l.ends_with("Delayed exit in 5 seconds")));
        assert_eq!(
            s.peers().count(),
            1,
            "the instance lives until the delay ends"
        );
        let due = s.next_timeout().unwrap();
        assert!(due <= t0 + Duration::from_secs(5));
        let mut out = Outbox::default();
        s.on_timeout(t0 + Duration::from_millis(4_900), 1_004, &mut out);
        assert_eq!(s.peers().count(), 1);
        s.on_timeout(t0 + Duration::from_secs(5), 1_005, &mut out);
        assert_eq!(s.peers().count(), 0);
        assert!(logs(&out)
            .iter()
            .any(|l| l.ends_with(" SIGTERM[soft,delayed-exit] received, client-instance exiting")));
    }

    /// The timer queue against a walk over every peer: after every step its next deadline is not
    /// later than the true earliest one, and driving the server only by `next_timeout` /
    /// `on_timeout` (as the driver does) runs every deadline — kills included, whose delayed exit
    /// comes before the peer's pending retransmission — and ends every handshake.
    #[test]
    fn timer_queue_never_misses_a_deadline() {
        let mut s = server_with(|_| {});
        let t0 = Instant::now();
        let mut now = t0;
        let mut out = Outbox::default();
        for i in 0..40u16 {
            s.on_datagram(
                tcp(u64::from(i), 4000 + i),
                &reset(i as u8 + 1),
                now,
                1_000,
                &mut out,
            );
            s.peers.check_invariant();
            now += Duration::from_millis(250);
        }
        assert_eq!(s.peers().count(), 40);
        let mut wakes = 0;
        let mut killed = false;
        while let Some(due) = s.next_timeout() {
            wakes += 1;
            assert!(wakes < 10_000, "the queue does not settle");
            let truth = s.peers().filter_map(Peer::next_timeout).min();
            assert!(truth.is_some_and(|t| due <= t), "{due:?} vs {truth:?}");
            now = now.max(due);
            s.on_timeout(now, 1_000 + (now - t0).as_secs(), &mut out);
            s.peers.check_invariant();
            // nothing that was due is left due
            assert!(s.peers().filter_map(Peer::next_timeout).all(|d| d > now));
            if !killed && now - t0 >= Duration::from_secs(20) {
                // retransmissions have backed off past 5 s: the delayed exit is the earliest
                killed = true;
                for cid in (0..40).step_by(5) {
                    assert!(s.client_kill(cid, "", now, 1_000, &mut out));
                }
                s.peers.check_invariant();
                let exit = now + Duration::from_secs(5);
                assert!(s.next_timeout().is_some_and(|d| d <= exit));
            }
        }
        assert!(killed);
        assert_eq!(s.peers().count(), 0, "every handshake ended");
        assert!(now - t0 <= Duration::from_secs(120), "{:?}", now - t0);
    }

    #[test]
    fn connect_freq_initial_bounds_the_stateless_replies() {
        let udp = |port: u16| PeerAddr::Udp(SocketAddr::from(([192, 0, 2, 1], port)));
        let replies = |s: &mut Server, n: u8, now_unix: u64| {
            let mut out = Outbox::default();
            for i in 0..n {
                let port = 5000 + u16::from(i) + 100 * (now_unix % 100) as u16;
                s.on_datagram(udp(port), &reset(i + 1), Instant::now(), now_unix, &mut out);
            }
            out.transmits.len()
        };
        // the default: 100 replies per 10 s
        let mut s = server_with(|_| {});
        assert_eq!(replies(&mut s, 120, 1_000), 100);
        // `connect-freq-initial 3 10`: 3 per 10 s, a new window answers again
        let mut s = server_with(|ec| ec.connect_freq_initial = Some((3, 10)));
        assert_eq!(replies(&mut s, 5, 1_000), 3);
        assert_eq!(replies(&mut s, 5, 1_009), 0);
        assert_eq!(replies(&mut s, 5, 1_010), 3);
        // raised above the default
        let mut s = server_with(|ec| ec.connect_freq_initial = Some((1000, 10)));
        assert_eq!(replies(&mut s, 200, 1_000), 200);
        assert_eq!(s.peers().count(), 0, "stateless: nothing stored");
    }

    #[test]
    fn connect_freq_refuses_new_sessions_beyond_the_window_limit() {
        let mut s = server_with(|ec| ec.connect_freq = Some((2, 10)));
        let (t0, mut out) = (Instant::now(), Outbox::default());
        s.on_datagram(tcp(1, 4000), &reset(1), t0, 1_000, &mut out);
        s.on_datagram(tcp(2, 4001), &reset(2), t0, 1_000, &mut out);
        let mut out = Outbox::default();
        s.on_datagram(
            tcp(3, 4002),
            &reset(3),
            t0 + Duration::from_secs(9),
            1_009,
            &mut out,
        );
        assert_eq!(s.peers().count(), 2);
        assert!(out.transmits.is_empty());
        assert!(logs(&out).contains(
            &"MULTI: Connection from 192.0.2.1:4002 would exceed new connection frequency limit as controlled by --connect-freq".to_string()
        ));
        // a new window admits again
        let mut out = Outbox::default();
        s.on_datagram(
            tcp(4, 4003),
            &reset(4),
            t0 + Duration::from_secs(10),
            1_010,
            &mut out,
        );
        assert_eq!(s.peers().count(), 3);
        assert!(!out.transmits.is_empty(), "the new session answered");
    }

    #[test]
    fn inactive_restarts_only_when_the_minimum_passed() {
        let mut s = server_with(|ec| {
            ec.inactive = Some((60, 1000));
            // the forced session never finishes its TLS handshake: keep that deadline out of the way
            ec.hand_window = 600;
            ec.ping = None;
            ec.ping_restart = None;
        });
        let (t0, mut out) = (Instant::now(), Outbox::default());
        s.on_datagram(tcp(1, 4000), &reset(1), t0, 1_000, &mut out);
        let peer = s.peers.get_mut(&0).unwrap();
        peer.force_established("client1", t0);
        peer.note_tunnel(600, t0 + Duration::from_secs(10));
        peer.note_tunnel(600, t0 + Duration::from_secs(20)); // 1200 >= 1000: timer restarts at 20 s
        peer.note_tunnel(900, t0 + Duration::from_secs(30)); // below the minimum: no restart
        let mut out = Outbox::default();
        s.on_timeout(t0 + Duration::from_secs(79), 1_079, &mut out);
        assert_eq!(s.peers().count(), 1);
        s.on_timeout(t0 + Duration::from_secs(80), 1_080, &mut out);
        assert_eq!(s.peers().count(), 0);
        let l = logs(&out);
        assert!(l
            .iter()
            .any(|l| l.ends_with(" Inactivity timeout (--inactive), exiting")));
        assert!(l
            .iter()
            .any(|l| l.ends_with(" SIGTERM[soft,inactive] received, client-instance exiting")));
        // an established client's end is reported
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, EngineEvent::ClientDisconnected { cid: 0, .. })));
    }

    #[test]
    fn kill_by_common_name_and_bytecount_of_established_clients() {
        let mut s = server_with(|_| {});
        let (t0, mut out) = (Instant::now(), Outbox::default());
        for (i, port) in [(1u8, 4000u16), (2, 4001), (3, 4002)] {
            s.on_datagram(tcp(u64::from(i), port), &reset(i), t0, 1_000, &mut out);
        }
        s.peers.get_mut(&0).unwrap().force_established("alice", t0);
        s.peers.get_mut(&2).unwrap().force_established("alice", t0);
        let counts = s.byte_counts();
        assert_eq!(counts.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 2]);
        assert!(counts.iter().all(|c| c.1 > 0 && c.2 > 0));
        let st = s.status(1_500);
        assert_eq!(st.clients[0].common_name.as_deref(), Some("alice"));
        assert_eq!(st.clients[1].common_name, None);
        let mut out = Outbox::default();
        assert_eq!(s.kill_common_name("bob", t0, 1_500, &mut out), 0);
        assert_eq!(s.kill_common_name("alice", t0, 1_500, &mut out), 2);
        assert_eq!(s.peers().map(|p| p.cid()).collect::<Vec<_>>(), vec![1]);
        assert!(out.transmits.is_empty());
        let ends = out
            .events
            .iter()
            .filter(|e| matches!(e, EngineEvent::ClientDisconnected { .. }))
            .count();
        assert_eq!(ends, 2);
    }

    /// A data packet of `payload` encrypted by `client` (the client side of a data key).
    fn client_data_packet(client: &mut crate::proto::data::DataKey, payload: &[u8]) -> Vec<u8> {
        use crate::proto::data::{MAX_HEADROOM, MAX_TAILROOM};
        let mut buf = vec![0u8; MAX_HEADROOM + payload.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + payload.len()].copy_from_slice(payload);
        let mut n = 0u8;
        let mut rng = move |b: &mut [u8]| {
            for x in b {
                n = n.wrapping_add(1);
                *x = n;
            }
        };
        let r = client
            .encrypt(
                &mut buf,
                MAX_HEADROOM..MAX_HEADROOM + payload.len(),
                &mut rng,
            )
            .unwrap();
        buf[r].to_vec()
    }

    #[test]
    fn data_channel_errors_are_logged_in_openvpns_words_and_replays_can_be_muted() {
        use crate::proto::data::{Cipher, DataKey, DataKeyConfig, Digest};
        use crate::proto::keys::{Key2, Role};
        for (cipher, what, forged) in [
            (
                Cipher::Aes256Gcm,
                "AEAD Decrypt error",
                "cipher final failed",
            ),
            (
                Cipher::Aes256Cbc,
                "Authenticate/Decrypt packet error",
                "packet HMAC authentication failed",
            ),
        ] {
            for mute in [false, true] {
                let mut s = server_with(|ec| ec.mute_replay_warnings = mute);
                let (t0, mut out) = (Instant::now(), Outbox::default());
                let from = tcp(1, 4000);
                s.on_datagram(from, &reset(1), t0, 1_000, &mut out);
                let cfg = DataKeyConfig {
                    cipher,
                    auth: Digest::Sha256,
                    key_id: 0,
                    peer_id: None,
                    replay_window: 64,
                    replay_seconds: 15,
                };
                let k2 = Key2::from_ekm(&[0x5a; 256]).unwrap();
                let peer = s.peers.get_mut(&0).unwrap();
                peer.force_established("client1", t0);
                peer.force_data_key(DataKey::from_key2(&cfg, &k2, Role::Server).unwrap());
                let mut client = DataKey::from_key2(&cfg, &k2, Role::Client).unwrap();
                let pkt = client_data_packet(&mut client, b"hello");
                let mut out = Outbox::default();
                s.on_datagram(from, &pkt, t0, 1_001, &mut out);
                assert!(logs(&out).is_empty(), "{:?}", logs(&out));
                // the same packet again: a replay
                s.on_datagram(from, &pkt, t0, 1_002, &mut out);
                // a forged one: last byte of the tag/HMAC-covered data flipped
                let mut bad = client_data_packet(&mut client, b"again");
                let last = bad.len() - 1;
                bad[last] ^= 1;
                s.on_datagram(from, &bad, t0, 1_003, &mut out);
                let prefix = "client1/192.0.2.1:4000";
                let mut want = Vec::new();
                if !mute {
                    want.push(format!(
                        "{prefix} {what}: bad packet ID (may be a replay): [ #1 ] -- see the man \
                         page entry for --no-replay and --replay-window for more info or silence \
                         this warning with --mute-replay-warnings"
                    ));
                }
                want.push(format!("{prefix} {what}: {forged}"));
                assert_eq!(logs(&out), want, "{cipher:?} mute {mute}");
                assert!(out.events.iter().all(
                    |e| !matches!(e, EngineEvent::Log { class, .. } if *class != LogClass::Error)
                ));
                let st = s.stats();
                assert_eq!((st.replay_drops, st.decrypt_failures), (1, 1), "{cipher:?}");
            }
        }
    }
}
