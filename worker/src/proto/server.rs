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

use crate::proto::cookie::{cookie_capable, CookieJar, InitialRateLimiter};
use crate::proto::io::{EngineEvent, LogClass, Outbox, PeerAddr, Transmit};
use crate::proto::packet::{Opcode, SessionId, PEER_ID_NONE};
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
}

/// The server engine.
pub struct Server {
    cfg: Arc<PeerConfig>,
    wrap: ServerWrap,
    /// the group wrap key (tls-auth / tls-crypt), for the dynamic tls-crypt derivation
    group_key: Option<[u8; 256]>,
    cookies: CookieJar,
    limiter: InitialRateLimiter,
    peers: HashMap<u64, Peer>,
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
            limiter: InitialRateLimiter::default(),
            cfg: Arc::new(cfg),
            wrap,
            group_key,
            peers: HashMap::new(),
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
        self.stats
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
                    format!("{from} TLS Error: cannot authenticate control packet from [AF_INET]{from} ({e})"),
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
                        data: buf,
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
                self.create_peer(from, initial, wrapper, server_sid, true, now, now_unix, out);
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
                    initial,
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
        first: InitialPacket,
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
                out.log(
                    LogClass::Detail,
                    format!("{from} MULTI: Connection attempt would exceed new connection frequency limit as controlled by --connect-freq"),
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
            let old = peer.addr();
            peer.set_addr(from);
            out.log(
                LogClass::Info,
                format!("{} Float from {} to {}", peer.log_prefix(), old, from),
            );
            self.by_addr.remove(&old);
            self.by_addr.insert(from, cid);
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

    /// Earliest deadline of any timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        for p in self.peers.values() {
            if let Some(d) = p.next_timeout() {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        }
        t
    }

    /// Runs every due timer.
    pub fn on_timeout(&mut self, now: Instant, now_unix: u64, out: &mut Outbox) {
        let due: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout().is_some_and(|d| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for cid in due {
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

    /// Disconnects a client by id (management `client-kill`, `kill`).
    pub fn kill(
        &mut self,
        cid: u64,
        message: Option<&str>,
        now: Instant,
        now_unix: u64,
        out: &mut Outbox,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&cid) else {
            return false;
        };
        peer.send_restart(message, now, now_unix, &mut *self.rng, out);
        self.remove_peer(cid, "client-instance exiting", now, now_unix, out);
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
        if let Some((ip, second)) = g.ifconfig_push {
            if let Some(owner) = self.routes.lookup(IpAddr::V4(ip)) {
                if owner != cid {
                    return Err(format!(
                        "ifconfig-push address {ip} is in use by another client"
                    ));
                }
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
            LogClass::Info,
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
