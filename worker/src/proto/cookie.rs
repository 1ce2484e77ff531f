//! OpenVPN 2.6's stateless three-way handshake for UDP ("HMAC cookie", digest §3.6).
//!
//! # API
//! * [`CookieJar::new`]`(secret)` — server-wide; `secret` is 32 random bytes from the caller.
//!   [`CookieJar::session_id_for`] computes the server session id (the cookie) for a client address and
//!   session id at a time; [`CookieJar::verify`] checks one (current and previous time slot valid).
//! * [`CookieJar::reply_to_reset`] — answers an authenticated client hard reset (opcode 7, or 10 from an
//!   early-negotiation tls-crypt-v2 client) with the stateless P_CONTROL_HARD_RESET_SERVER_V2 (own sid =
//!   cookie, ACK of message 0, message id 0, RESEND_WKC TLV for tls-crypt-v2), wrapped with replay id 1.
//!   It stores nothing. [`stateless_reset_reply`] builds the bare packet.
//! * [`CookieJar::admit`] — checks the client's third packet (P_CONTROL_V1 / P_ACK_V1 /
//!   P_CONTROL_WKC_V1 whose ACK block names a valid cookie, acked ids ≤ 1, message id ≤ 1, not an
//!   already admitted cookie) and returns an [`Admission`]. Allocating a session is a separate, explicit
//!   step the caller takes with the `Admission` (see [`Admission`]); every rejected packet leaves no
//!   trace except nothing at all. The only state `admit` keeps is a bounded, server-wide list of
//!   recently admitted cookies (so a replayed third packet cannot create a second session).
//! * [`InitialRateLimiter`] — `--connect-freq-initial n s` (default 100 per 10 s) for stateless replies.
//!
//! # Cookie
//! `cookie = HMAC-SHA256(secret, u32 BE slot || family || IP || port BE || client sid)[..8]` with
//! `slot = now / ((hand_window + 1) / 2)` (30-second slots for the 60 s default). The client never
//! checks it, so the exact input need not match OpenVPN's (which hashes a raw `sockaddr`). IPv4-mapped
//! IPv6 addresses are treated as the IPv4 address.
//!
//! # Invariants
//! * Nothing here allocates per-peer state; [`CookieJar::session_id_for`] and [`CookieJar::verify`] are
//!   pure, comparison is constant-time.
//! * An [`Admission`] can only be created by [`CookieJar::admit`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::packet::{AckBlock, ControlPacket, Opcode, SessionId};
use super::wrap::{InitialPacket, ServerWrap, WrapError};

/// `--hand-window` default (seconds).
pub const DEFAULT_HAND_WINDOW: u32 = 60;
/// Early-negotiation TLV type "flags".
pub const TLV_TYPE_EARLY_NEG_FLAGS: u16 = 0x0001;
/// Early-negotiation flag: the client must resend its WKc.
pub const EARLY_NEG_FLAG_RESEND_WKC: u16 = 0x0001;
/// How many admitted cookies are remembered for replay detection.
pub const ADMITTED_CAPACITY: usize = 4096;
/// Highest message id / acked id a third packet may carry (2.6.15+, commit 68c01720).
pub const MAX_THIRD_PACKET_ID: u32 = 1;

/// Why the stateless handshake refused a packet.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CookieError {
    /// The packet is not a client hard reset that may be answered statelessly.
    #[error("opcode {0:?} cannot be answered statelessly")]
    NotAReset(Opcode),
    /// A tls-crypt-v2 client without early-negotiation support: no cookie possible, the caller must
    /// either keep state from the first packet (allow-noncookie) or drop it (force-cookie).
    #[error("tls-crypt-v2 client without early negotiation cannot do the cookie handshake")]
    NotCookieCapable,
    /// A hard reset must carry message id 0.
    #[error("hard reset with message id {0:?}, expected 0")]
    BadResetMessageId(Option<u32>),
    /// The packet cannot be a third packet (wrong opcode).
    #[error("opcode {0:?} cannot complete the handshake")]
    NotAThirdPacket(Opcode),
    /// The third packet acknowledges nothing, so it names no cookie.
    #[error("third packet carries no ACK block")]
    NoAck,
    /// The cookie is wrong: other secret, other address/port, other client sid, or expired.
    #[error("invalid or expired cookie")]
    BadCookie,
    /// Acked ids or message id above 1: a stale packet of an older session.
    #[error("third packet references message id {0} > 1")]
    StaleIds(u32),
    /// This cookie was already admitted (a replayed third packet).
    #[error("cookie already admitted (replayed third packet)")]
    Replayed,
    /// Wrapping the reply failed.
    #[error("wrapping the stateless reply failed: {0}")]
    Wrap(#[from] WrapError),
}

/// Server-wide cookie state: the HMAC secret and the bounded list of admitted cookies.
pub struct CookieJar {
    secret: [u8; 32],
    slot_secs: u64,
    admitted: VecDeque<([u8; 8], u64)>,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("slot_secs", &self.slot_secs)
            .field("admitted", &self.admitted.len())
            .finish_non_exhaustive()
    }
}

/// Proof that a third packet passed [`CookieJar::admit`]. The caller allocates the session from it:
/// `ServerWrap::session_wrapper_after_cookie(admission.initial(), now)` and
/// `Reliable::new_after_cookie(admission.server_session(), admission.client_session(), tls_timeout)`,
/// then processes `admission.initial().packet` as the session's first received packet (do not unwrap
/// the datagram again: its replay id is already recorded by the new wrapper).
#[derive(Debug)]
pub struct Admission {
    peer: SocketAddr,
    client_sid: SessionId,
    server_sid: SessionId,
    initial: InitialPacket,
}

impl Admission {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client's session id.
    pub fn client_session(&self) -> SessionId {
        self.client_sid
    }

    /// Our session id (the cookie).
    pub fn server_session(&self) -> SessionId {
        self.server_sid
    }

    /// The authenticated third packet (with tls-crypt-v2 client key info, if any).
    pub fn initial(&self) -> &InitialPacket {
        &self.initial
    }

    /// Consumes the admission.
    pub fn into_initial(self) -> InitialPacket {
        self.initial
    }
}

/// The bare stateless reply: HARD_RESET_SERVER_V2, key id 0, own sid = `server_sid`, ACK of message 0
/// naming `client_sid`, message id 0, payload = RESEND_WKC TLV if `resend_wkc`, else empty.
pub fn stateless_reset_reply(
    server_sid: SessionId,
    client_sid: SessionId,
    resend_wkc: bool,
) -> ControlPacket {
    let mut payload = Vec::new();
    if resend_wkc {
        payload.extend_from_slice(&TLV_TYPE_EARLY_NEG_FLAGS.to_be_bytes());
        payload.extend_from_slice(&2u16.to_be_bytes());
        payload.extend_from_slice(&EARLY_NEG_FLAG_RESEND_WKC.to_be_bytes());
    }
    // One id is always within `MAX_ACKS`.
    let acks = AckBlock::new(&[0], client_sid).unwrap_or_default();
    ControlPacket {
        opcode: Opcode::ControlHardResetServerV2,
        key_id: 0,
        session_id: server_sid,
        acks,
        message_id: Some(0),
        payload,
    }
}

/// True if the first packet may be answered with a cookie: opcode 7, or opcode 10 from a client that
/// announced early negotiation.
pub fn cookie_capable(initial: &InitialPacket) -> bool {
    match initial.packet.opcode {
        Opcode::ControlHardResetClientV2 => true,
        Opcode::ControlHardResetClientV3 => initial.early_negotiation(),
        _ => false,
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl CookieJar {
    /// A jar for the default `--hand-window 60` (30-second slots).
    pub fn new(secret: [u8; 32]) -> Self {
        Self::with_hand_window(secret, DEFAULT_HAND_WINDOW)
    }

    /// A jar whose slot length is `(hand_window + 1) / 2` seconds (at least 1).
    pub fn with_hand_window(secret: [u8; 32], hand_window: u32) -> Self {
        let slot_secs = u64::from(hand_window.saturating_add(1) / 2).max(1);
        Self {
            secret,
            slot_secs,
            admitted: VecDeque::new(),
        }
    }

    /// Slot length in seconds.
    pub fn slot_secs(&self) -> u64 {
        self.slot_secs
    }

    fn slot(&self, now_unix: u64) -> u64 {
        now_unix / self.slot_secs
    }

    fn cookie_at(&self, slot: u64, peer: SocketAddr, client_sid: [u8; 8]) -> [u8; 8] {
        let mut out = [0u8; 8];
        // HMAC accepts any key length, so this cannot fail; if it ever did, an all-zero cookie would be
        // returned, which `verify` refuses to accept (see there).
        let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret) else {
            return out;
        };
        m.update(&(slot as u32).to_be_bytes());
        match canonical_ip(peer.ip()) {
            IpAddr::V4(v4) => {
                m.update(&[4]);
                m.update(&v4.octets());
            }
            IpAddr::V6(v6) => {
                m.update(&[6]);
                m.update(&v6.octets());
            }
        }
        m.update(&peer.port().to_be_bytes());
        m.update(&client_sid);
        out.copy_from_slice(&m.finalize().into_bytes()[..8]);
        out
    }

    /// The server session id (cookie) for `peer` / `client_sid` at `now_unix`.
    pub fn session_id_for(&self, peer: SocketAddr, client_sid: [u8; 8], now_unix: u64) -> [u8; 8] {
        self.cookie_at(self.slot(now_unix), peer, client_sid)
    }

    /// True if `server_sid` is the cookie of the current or the previous slot. Pure: no state changes.
    pub fn verify(
        &self,
        peer: SocketAddr,
        client_sid: [u8; 8],
        server_sid: [u8; 8],
        now_unix: u64,
    ) -> bool {
        if server_sid == [0u8; 8] {
            return false;
        }
        let slot = self.slot(now_unix);
        let mut ok = subtle::Choice::from(0);
        for s in [Some(slot), slot.checked_sub(1)].into_iter().flatten() {
            ok |= self.cookie_at(s, peer, client_sid).ct_eq(&server_sid);
        }
        bool::from(ok)
    }

    /// Answers an authenticated client hard reset (from [`ServerWrap::unwrap_initial`]) statelessly:
    /// appends the wrapped HARD_RESET_SERVER_V2 to `out`. Stores nothing. The caller applies
    /// [`InitialRateLimiter`] before calling this.
    pub fn reply_to_reset(
        &self,
        wrap: &ServerWrap,
        peer: SocketAddr,
        initial: &InitialPacket,
        now_unix: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), CookieError> {
        let p = &initial.packet;
        if !matches!(
            p.opcode,
            Opcode::ControlHardResetClientV2 | Opcode::ControlHardResetClientV3
        ) {
            return Err(CookieError::NotAReset(p.opcode));
        }
        if !cookie_capable(initial) {
            return Err(CookieError::NotCookieCapable);
        }
        if p.message_id != Some(0) {
            return Err(CookieError::BadResetMessageId(p.message_id));
        }
        let cookie = SessionId(self.session_id_for(peer, p.session_id.0, now_unix));
        let reply = stateless_reset_reply(cookie, p.session_id, initial.early_negotiation());
        wrap.wrap_stateless(initial, &reply, now_unix, out)?;
        Ok(())
    }

    /// Checks a third packet (from [`ServerWrap::unwrap_initial`]) and, if it completes the handshake,
    /// returns the [`Admission`] and remembers the cookie as used. Rejected packets change nothing.
    pub fn admit(
        &mut self,
        peer: SocketAddr,
        initial: InitialPacket,
        now_unix: u64,
    ) -> Result<Admission, CookieError> {
        let p = &initial.packet;
        if !matches!(
            p.opcode,
            Opcode::ControlV1 | Opcode::AckV1 | Opcode::ControlWkcV1
        ) {
            return Err(CookieError::NotAThirdPacket(p.opcode));
        }
        let server_sid = p.acks.remote_session().ok_or(CookieError::NoAck)?;
        if !self.verify(peer, p.session_id.0, server_sid.0, now_unix) {
            return Err(CookieError::BadCookie);
        }
        if let Some(&id) = p.acks.ids().iter().find(|&&id| id > MAX_THIRD_PACKET_ID) {
            return Err(CookieError::StaleIds(id));
        }
        if let Some(id) = p.message_id.filter(|&id| id > MAX_THIRD_PACKET_ID) {
            return Err(CookieError::StaleIds(id));
        }
        let slot = self.slot(now_unix);
        while self.admitted.front().is_some_and(|&(_, exp)| exp < slot) {
            self.admitted.pop_front();
        }
        if self
            .admitted
            .iter()
            .any(|(c, _)| bool::from(c.ct_eq(&server_sid.0)))
        {
            return Err(CookieError::Replayed);
        }
        if self.admitted.len() >= ADMITTED_CAPACITY {
            self.admitted.pop_front();
        }
        // A cookie verifies during its own slot and the next one.
        self.admitted.push_back((server_sid.0, slot + 1));
        let client_sid = p.session_id;
        Ok(Admission {
            peer,
            client_sid,
            server_sid,
            initial,
        })
    }

    /// Number of remembered admitted cookies (for tests and metrics).
    pub fn admitted_len(&self) -> usize {
        self.admitted.len()
    }
}

/// `--connect-freq-initial n s`: at most `n` stateless replies per `s` seconds (default 100 per 10).
#[derive(Debug, Clone)]
pub struct InitialRateLimiter {
    max: u32,
    period: u64,
    window_start: u64,
    count: u32,
}

impl Default for InitialRateLimiter {
    fn default() -> Self {
        Self::new(100, 10)
    }
}

impl InitialRateLimiter {
    /// `max` replies per `period_secs` (a period of 0 is treated as 1).
    pub fn new(max: u32, period_secs: u64) -> Self {
        Self {
            max,
            period: period_secs.max(1),
            window_start: 0,
            count: 0,
        }
    }

    /// True if one more reply may be sent at `now_unix` (and counts it).
    pub fn allow(&mut self, now_unix: u64) -> bool {
        if now_unix >= self.window_start.saturating_add(self.period) || now_unix < self.window_start
        {
            self.window_start = now_unix;
            self.count = 0;
        }
        if self.count >= self.max {
            return false;
        }
        self.count += 1;
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::wrap::{
        GroupWrap, ReplayParams, StaticKey, TlsCryptV2ClientKey, TlsCryptV2ServerKey, V2Metadata,
    };

    const NOW: u64 = 1_763_800_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn jar() -> CookieJar {
        CookieJar::new([7u8; 32])
    }

    #[test]
    fn cookie_depends_on_everything_and_expires() {
        let j = jar();
        let p = addr("192.0.2.1:1194");
        let c = j.session_id_for(p, [1; 8], NOW);
        assert_ne!(c, [0; 8]);
        assert!(j.verify(p, [1; 8], c, NOW));
        assert_ne!(j.session_id_for(addr("192.0.2.2:1194"), [1; 8], NOW), c);
        assert_ne!(j.session_id_for(addr("192.0.2.1:1195"), [1; 8], NOW), c);
        assert_ne!(j.session_id_for(p, [2; 8], NOW), c);
        assert_ne!(CookieJar::new([8u8; 32]).session_id_for(p, [1; 8], NOW), c);
        // valid for the current and the next slot, not after
        let slot_end = (NOW / 30 + 1) * 30;
        assert!(j.verify(p, [1; 8], c, slot_end - 1));
        assert!(j.verify(p, [1; 8], c, slot_end + 29));
        assert!(!j.verify(p, [1; 8], c, slot_end + 30));
        // a cookie from the future slot is not accepted
        let future = j.session_id_for(p, [1; 8], NOW + 30);
        assert!(!j.verify(p, [1; 8], future, NOW));
        // mapped IPv4 == IPv4
        assert_eq!(
            j.session_id_for(addr("[::ffff:192.0.2.1]:1194"), [1; 8], NOW),
            c
        );
        assert!(!j.verify(p, [1; 8], [0; 8], NOW));
        assert_eq!(CookieJar::with_hand_window([0; 32], 0).slot_secs(), 1);
    }

    fn group_key() -> StaticKey {
        let mut b = [0u8; 256];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i * 7 + 3) as u8;
        }
        StaticKey::from_bytes(b)
    }

    fn client_wrapper() -> crate::proto::wrap::ControlWrapper {
        crate::proto::wrap::ControlWrapper::tls_crypt(&group_key(), false, ReplayParams::default())
    }

    fn reset(sid: [u8; 8]) -> ControlPacket {
        ControlPacket {
            opcode: Opcode::ControlHardResetClientV2,
            key_id: 0,
            session_id: SessionId(sid),
            acks: AckBlock::empty(),
            message_id: Some(0),
            payload: vec![],
        }
    }

    fn third(
        sid: [u8; 8],
        server: SessionId,
        op: Opcode,
        acked: &[u32],
        mid: Option<u32>,
    ) -> ControlPacket {
        ControlPacket {
            opcode: op,
            key_id: 0,
            session_id: SessionId(sid),
            acks: AckBlock::new(acked, server).unwrap(),
            message_id: mid,
            payload: if mid.is_some() {
                b"ClientHello".to_vec()
            } else {
                vec![]
            },
        }
    }

    /// Full simulated exchange; returns (server wrap, jar, client wrapper, cookie).
    fn handshake(
        peer: SocketAddr,
    ) -> (
        ServerWrap,
        CookieJar,
        crate::proto::wrap::ControlWrapper,
        SessionId,
    ) {
        let sw = ServerWrap::new(
            GroupWrap::TlsCrypt(group_key()),
            None,
            ReplayParams::default(),
        );
        let j = jar();
        let mut cl = client_wrapper();
        let mut d1 = Vec::new();
        cl.wrap(&reset([5; 8]), NOW, &mut d1).unwrap();
        let init = sw.unwrap_initial(&d1).unwrap();
        let mut reply = Vec::new();
        j.reply_to_reset(&sw, peer, &init, NOW, &mut reply).unwrap();
        assert_eq!(j.admitted_len(), 0);
        let r = cl.unwrap(&reply, NOW).unwrap();
        assert_eq!(r.opcode, Opcode::ControlHardResetServerV2);
        assert_eq!(r.acks.ids(), &[0]);
        assert_eq!(r.acks.remote_session(), Some(SessionId([5; 8])));
        assert_eq!(r.message_id, Some(0));
        assert!(r.payload.is_empty());
        assert_eq!(
            &reply[9..13],
            &[0, 0, 0, 1],
            "stateless reply uses replay id 1"
        );
        // the same reset answered again gives the same cookie (retransmission)
        let mut reply2 = Vec::new();
        j.reply_to_reset(&sw, peer, &init, NOW + 1, &mut reply2)
            .unwrap();
        let r2 = crate::proto::wrap::ControlWrapper::tls_crypt(
            &group_key(),
            false,
            ReplayParams::default(),
        )
        .unwrap(&reply2, NOW)
        .unwrap();
        assert_eq!(r2.session_id, r.session_id);
        (sw, j, cl, r.session_id)
    }

    #[test]
    fn full_exchange_admits_once() {
        let peer = addr("198.51.100.7:40000");
        let (sw, mut j, mut cl, cookie) = handshake(peer);
        let mut d3 = Vec::new();
        cl.wrap(
            &third([5; 8], cookie, Opcode::ControlV1, &[0], Some(1)),
            NOW + 2,
            &mut d3,
        )
        .unwrap();
        let adm = j
            .admit(peer, sw.unwrap_initial(&d3).unwrap(), NOW + 2)
            .unwrap();
        assert_eq!(adm.server_session(), cookie);
        assert_eq!(adm.client_session(), SessionId([5; 8]));
        assert_eq!(adm.peer(), peer);
        assert_eq!(j.admitted_len(), 1);
        // allocation step: session wrapper continues at replay id 2 and rejects a replay of packet 3
        let mut w = sw
            .session_wrapper_after_cookie(adm.initial(), NOW + 2)
            .unwrap();
        assert!(matches!(w.unwrap(&d3, NOW + 2), Err(WrapError::Replay(_))));
        let mut out = Vec::new();
        w.wrap(
            &third([9; 8], SessionId([5; 8]), Opcode::ControlV1, &[1], Some(1)),
            NOW + 2,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[9..13], &[0, 0, 0, 2]);
        // replayed third packet: refused, no second admission
        assert_eq!(
            j.admit(peer, sw.unwrap_initial(&d3).unwrap(), NOW + 3)
                .unwrap_err(),
            CookieError::Replayed
        );
        assert_eq!(j.admitted_len(), 1);
        // after the cookie expired the replay fails on the cookie itself and the entry is gone
        assert_eq!(
            j.admit(peer, sw.unwrap_initial(&d3).unwrap(), NOW + 120)
                .unwrap_err(),
            CookieError::BadCookie
        );
    }

    #[test]
    fn negative_matrix_allocates_nothing() {
        let peer = addr("198.51.100.7:40000");
        let (sw, mut j, mut cl, cookie) = handshake(peer);
        let mk = |cl: &mut crate::proto::wrap::ControlWrapper, p: ControlPacket| {
            let mut d = Vec::new();
            cl.wrap(&p, NOW, &mut d).unwrap();
            sw.unwrap_initial(&d).unwrap()
        };
        let good = third([5; 8], cookie, Opcode::ControlV1, &[0], Some(1));
        let mut wrong_mac = cookie;
        wrong_mac.0[0] ^= 1;
        let cases: Vec<(SocketAddr, InitialPacket, u64, CookieError)> = vec![
            // wrong MAC
            (
                peer,
                mk(
                    &mut cl,
                    third([5; 8], wrong_mac, Opcode::ControlV1, &[0], Some(1)),
                ),
                NOW,
                CookieError::BadCookie,
            ),
            // other address / other port
            (
                addr("198.51.100.8:40000"),
                mk(&mut cl, good.clone()),
                NOW,
                CookieError::BadCookie,
            ),
            (
                addr("198.51.100.7:40001"),
                mk(&mut cl, good.clone()),
                NOW,
                CookieError::BadCookie,
            ),
            // other client session id with the same cookie
            (
                peer,
                mk(
                    &mut cl,
                    third([6; 8], cookie, Opcode::ControlV1, &[0], Some(1)),
                ),
                NOW,
                CookieError::BadCookie,
            ),
            // expired slot
            (
                peer,
                mk(&mut cl, good.clone()),
                NOW + 90,
                CookieError::BadCookie,
            ),
            // no ACK
            (
                peer,
                mk(
                    &mut cl,
                    third([5; 8], cookie, Opcode::ControlV1, &[], Some(1)),
                ),
                NOW,
                CookieError::NoAck,
            ),
            // stale ids
            (
                peer,
                mk(
                    &mut cl,
                    third([5; 8], cookie, Opcode::ControlV1, &[0, 2], Some(1)),
                ),
                NOW,
                CookieError::StaleIds(2),
            ),
            (
                peer,
                mk(
                    &mut cl,
                    third([5; 8], cookie, Opcode::ControlV1, &[0], Some(5)),
                ),
                NOW,
                CookieError::StaleIds(5),
            ),
            // a reset is not a third packet
            (
                peer,
                mk(&mut cl, reset([5; 8])),
                NOW,
                CookieError::NotAThirdPacket(Opcode::ControlHardResetClientV2),
            ),
        ];
        for (p, init, now, want) in cases {
            assert_eq!(j.admit(p, init, now).unwrap_err(), want);
            assert_eq!(j.admitted_len(), 0, "a rejected packet left state behind");
        }
        // P_ACK_V1 as third packet is fine
        let ack = third([5; 8], cookie, Opcode::AckV1, &[0], None);
        assert!(j.admit(peer, mk(&mut cl, ack), NOW).is_ok());
    }

    #[test]
    fn reply_rejects_non_resets() {
        let sw = ServerWrap::new(
            GroupWrap::TlsCrypt(group_key()),
            None,
            ReplayParams::default(),
        );
        let mut cl = client_wrapper();
        let mut d = Vec::new();
        cl.wrap(
            &third([5; 8], SessionId([1; 8]), Opcode::ControlV1, &[0], Some(1)),
            NOW,
            &mut d,
        )
        .unwrap();
        let init = sw.unwrap_initial(&d).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            jar()
                .reply_to_reset(&sw, addr("127.0.0.1:1"), &init, NOW, &mut out)
                .unwrap_err(),
            CookieError::NotAReset(Opcode::ControlV1)
        );
        let mut r = reset([5; 8]);
        r.message_id = Some(3);
        d.clear();
        cl.wrap(&r, NOW, &mut d).unwrap();
        let init = sw.unwrap_initial(&d).unwrap();
        assert_eq!(
            jar()
                .reply_to_reset(&sw, addr("127.0.0.1:1"), &init, NOW, &mut out)
                .unwrap_err(),
            CookieError::BadResetMessageId(Some(3))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn v2_cookie_flow_with_resend_wkc() {
        let srv = TlsCryptV2ServerKey::generate([3u8; 128]);
        let ck =
            TlsCryptV2ClientKey::generate(&srv, [4u8; 256], &V2Metadata::Timestamp(5)).unwrap();
        let sw = ServerWrap::new(GroupWrap::None, Some(srv), ReplayParams::default());
        let peer = addr("[2001:db8::1]:5000");
        // client side: tls-crypt with Kc (INVERSE); datagrams with WKc are built by `v2_datagram`
        let mut cl =
            crate::proto::wrap::ControlWrapper::tls_crypt(&ck.kc, false, ReplayParams::default());
        let d1 = v2_datagram(
            &ck,
            Opcode::ControlHardResetClientV3,
            [5; 8],
            None,
            0x0F00_0001,
        );
        let init = sw.unwrap_initial(&d1).unwrap();
        assert!(cookie_capable(&init));
        let j = jar();
        let mut reply = Vec::new();
        j.reply_to_reset(&sw, peer, &init, NOW, &mut reply).unwrap();
        let rp = cl.unwrap(&reply, NOW).unwrap();
        assert_eq!(rp.payload, vec![0, 1, 0, 2, 0, 1]);
        assert_eq!(reply.len(), 72, "digest: 72-byte reply");
        // third packet: empty P_CONTROL_WKC_V1
        let d3 = v2_datagram(
            &ck,
            Opcode::ControlWkcV1,
            [5; 8],
            Some(rp.session_id),
            0x0F00_0002,
        );
        let mut j = j;
        let adm = j.admit(peer, sw.unwrap_initial(&d3).unwrap(), NOW).unwrap();
        assert_eq!(adm.initial().v2.as_ref().unwrap().kc, ck.kc);
        // a v2 client without the marker cannot do cookies
        let old = v2_datagram(&ck, Opcode::ControlHardResetClientV3, [5; 8], None, 1);
        let init_old = sw.unwrap_initial(&old).unwrap();
        assert_eq!(
            j.reply_to_reset(&sw, peer, &init_old, NOW, &mut Vec::new())
                .unwrap_err(),
            CookieError::NotCookieCapable
        );
    }

    /// A tls-crypt-v2 client datagram (opcode 10 or 11) built with the wrap module's primitives.
    fn v2_datagram(
        ck: &TlsCryptV2ClientKey,
        op: Opcode,
        sid: [u8; 8],
        ack_server: Option<SessionId>,
        pid: u32,
    ) -> Vec<u8> {
        let p = ControlPacket {
            opcode: op,
            key_id: 0,
            session_id: SessionId(sid),
            acks: match ack_server {
                Some(s) => AckBlock::new(&[0], s).unwrap(),
                None => AckBlock::empty(),
            },
            message_id: Some(if op == Opcode::ControlWkcV1 { 1 } else { 0 }),
            payload: vec![],
        };
        crate::proto::wrap::test_support::seal_client_v2(&ck.kc, &p, pid, 777, &ck.wkc)
    }

    /// Kills and reaps the OpenVPN child when the test ends (also on failure).
    struct ChildGuard(std::process::Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Runs a stock OpenVPN 2.6 client against our stateless handshake on 127.0.0.1: its hard reset must
    /// authenticate, our cookie reply must be accepted (the client ACKs it with our cookie as remote
    /// session id) and its third packet must be admitted exactly once.
    fn live_cookie_handshake(
        sw: &ServerWrap,
        dir: &crate::proto::wrap::test_support::TempDir,
        wrap_args: &[String],
    ) {
        use std::net::UdpSocket;
        use std::time::{Duration, Instant};
        let (key, cert) = (dir.path("k.pem"), dir.path("c.pem"));
        let st = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
            ])
            .args(["-subj", "/CN=bulwark-test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = sock.local_addr().unwrap().port().to_string();
        let child = std::process::Command::new(crate::proto::wrap::test_support::OPENVPN)
            .args([
                "--client",
                "--dev",
                "null",
                "--proto",
                "udp4",
                "--remote",
                "127.0.0.1",
                &port,
                "--nobind",
            ])
            .args(["--verb", "0", "--connect-retry-max", "1", "--ca"])
            .arg(&cert)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(wrap_args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _guard = ChildGuard(child);
        let mut buf = [0u8; 2048];
        let (n, peer) = sock.recv_from(&mut buf).unwrap();
        let init = sw.unwrap_initial(&buf[..n]).unwrap();
        assert!(
            init.packet.opcode.is_hard_reset(),
            "first packet {:?}",
            init.packet.opcode
        );
        let mut jar = CookieJar::new([0x5a; 32]);
        let mut reply = Vec::new();
        jar.reply_to_reset(sw, peer, &init, unix_now(), &mut reply)
            .unwrap();
        sock.send_to(&reply, peer).unwrap();
        let cookie = SessionId(jar.session_id_for(peer, init.packet.session_id.0, unix_now()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "no third packet from the stock client"
            );
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(from, peer);
            let third = sw.unwrap_initial(&buf[..n]).unwrap();
            if third.packet.opcode.is_hard_reset() {
                continue; // a retransmitted reset
            }
            assert_eq!(third.packet.acks.remote_session(), Some(cookie));
            let mut other = peer;
            other.set_port(peer.port().wrapping_add(1));
            assert_eq!(
                jar.admit(other, third.clone(), unix_now()).unwrap_err(),
                CookieError::BadCookie
            );
            let adm = jar.admit(peer, third.clone(), unix_now()).unwrap();
            assert_eq!(adm.server_session(), cookie);
            assert_eq!(
                jar.admit(peer, third, unix_now()).unwrap_err(),
                CookieError::Replayed
            );
            // allocation works and the session accepts the client's next packets
            let mut w = sw
                .session_wrapper_after_cookie(adm.initial(), unix_now())
                .unwrap();
            if w.mode_name() != "none" {
                assert!(matches!(
                    w.unwrap(&buf[..n], unix_now()),
                    Err(WrapError::Replay(_))
                ));
            }
            if init.packet.opcode == Opcode::ControlHardResetClientV3 {
                // 2.6 client: early negotiation, RESEND_WKC honoured with a P_CONTROL_WKC_V1
                assert!(init.early_negotiation());
                assert_eq!(reply.len(), 72);
                assert_eq!(adm.initial().packet.opcode, Opcode::ControlWkcV1);
            }
            return;
        }
    }

    #[test]
    fn live_stock_client_tls_crypt() {
        let dir = crate::proto::wrap::test_support::TempDir::new("cookie-tc");
        let key = StaticKey::generate([0x42; 256].map(|b: u8| b.wrapping_add(1)));
        let mut raw = [0u8; 256];
        for (i, x) in raw.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(13).wrapping_add(key.as_bytes()[i]);
        }
        let key = StaticKey::generate(raw);
        let f = dir.path("tc.key");
        std::fs::write(&f, key.to_file_string()).unwrap();
        let sw = ServerWrap::new(GroupWrap::TlsCrypt(key), None, ReplayParams::default());
        live_cookie_handshake(&sw, &dir, &["--tls-crypt".into(), f.display().to_string()]);
    }

    #[test]
    fn live_stock_client_tls_auth_sha256() {
        let dir = crate::proto::wrap::test_support::TempDir::new("cookie-ta");
        let mut raw = [0u8; 256];
        for (i, x) in raw.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(29) ^ 0x5c;
        }
        let key = StaticKey::generate(raw);
        let f = dir.path("ta.key");
        std::fs::write(&f, key.to_file_string()).unwrap();
        let sw = ServerWrap::new(
            GroupWrap::TlsAuth {
                key,
                dir: crate::proto::wrap::KeyDirection::Normal,
                digest: crate::proto::wrap::AuthDigest::Sha256,
            },
            None,
            ReplayParams::default(),
        );
        let args = [
            "--tls-auth".into(),
            f.display().to_string(),
            "1".into(),
            "--auth".into(),
            "SHA256".into(),
        ];
        live_cookie_handshake(&sw, &dir, &args);
    }

    #[test]
    fn live_stock_client_no_wrapping() {
        let dir = crate::proto::wrap::test_support::TempDir::new("cookie-none");
        let sw = ServerWrap::new(GroupWrap::None, None, ReplayParams::default());
        live_cookie_handshake(&sw, &dir, &[]);
    }

    #[test]
    fn live_stock_client_tls_crypt_v2_with_our_keys() {
        let dir = crate::proto::wrap::test_support::TempDir::new("cookie-v2");
        let srv = TlsCryptV2ServerKey::generate([0x33; 128].map(|b: u8| b ^ 0x0f));
        let ck =
            TlsCryptV2ClientKey::generate(&srv, [0x21; 256], &V2Metadata::User(b"carol".to_vec()))
                .unwrap();
        let f = dir.path("v2c.key");
        std::fs::write(&f, ck.to_file_string()).unwrap();
        let sw = ServerWrap::new(GroupWrap::None, Some(srv), ReplayParams::default());
        live_cookie_handshake(
            &sw,
            &dir,
            &["--tls-crypt-v2".into(), f.display().to_string()],
        );
    }

    #[test]
    fn rate_limiter() {
        let mut r = InitialRateLimiter::new(3, 10);
        assert!((0..3).all(|_| r.allow(100)));
        assert!(!r.allow(105));
        assert!(r.allow(110));
        assert!(InitialRateLimiter::default().allow(0));
    }
}
