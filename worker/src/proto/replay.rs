//! Packet-id replay protection (receive side) and packet-id generation (send side).
//!
//! This mirrors OpenVPN 2.6's `packet_id.c` (`packet_id_rec` / `packet_id_send`), see digest §3.7, §7.3
//! and §7.5.
//!
//! # Receive side: [`ReplayWindow`]
//!
//! ```text
//! ReplayWindow::new(window_packets, window_seconds)      // --replay-window n t (defaults 64 15)
//! window.check(id, time, now_unix) -> Result<(), ReplayError>   // pure check, no state change
//! window.commit(id, time, now_unix)                       // record as seen (after authentication!)
//! ```
//!
//! `time` is the long-form timestamp carried by wrapped control packets (tls-crypt, tls-auth); short-form
//! users (the data channel) pass `0`. `now_unix` is the local wall clock in Unix seconds; it only drives the
//! time-backtrack expiry ("reaping") of seen slots.
//!
//! Semantics (identical to OpenVPN's backtrack mode, used for UDP and, since 2.6, TCP):
//! * id 0 is always rejected;
//! * a packet with a lower `time` than the highest seen is rejected, a higher `time` is accepted and
//!   starts a fresh window;
//! * within the same `time`: an id above the highest seen is accepted; an id at distance `d` below the
//!   highest is accepted only if `d` is inside the window and that slot was never seen;
//! * at most every 5 s (`SEQ_REAP_INTERVAL`) the window is reaped: the first seen slot (scanning from the
//!   highest id downwards) whose receive time is older than `window_seconds`, and every older slot, become
//!   expired and can no longer be accepted.
//!
//! `window_packets == 0` selects OpenVPN's strict "non-backtrack" mode: ids must increase by exactly one
//! (a higher `time` must restart at id 1).
//!
//! # Send side: [`PacketIdSend`]
//!
//! ```text
//! PacketIdSend::new(PacketIdForm::Short | PacketIdForm::Long)
//! send.next(now_unix) -> Result<PacketId, PacketIdSendError>   // first id is 1
//! send.near_wrap() -> bool                                     // id >= 0xFF000000: renegotiate now
//! ```
//!
//! The short form never wraps: after id `0xFFFFFFFF` [`PacketIdSend::next`] fails with
//! [`PacketIdSendError::Exhausted`], which the caller must turn into a renegotiation (new key). The long
//! form behaves like OpenVPN: the timestamp is fixed at the first packet and the id may roll over to 1
//! with a newer timestamp, but only if the wall clock moved past the current timestamp; otherwise it
//! fails with the same error.
//!
//! Invariants: neither type allocates after construction; all arithmetic is checked or explicitly
//! wrapping as in the C original; no input can cause a panic.

use thiserror::Error;

/// Default `--replay-window` size in packets.
pub const DEFAULT_WINDOW_PACKETS: u32 = 64;
/// Default `--replay-window` time backtrack in seconds.
pub const DEFAULT_WINDOW_SECONDS: u32 = 15;
/// Largest window size OpenVPN accepts (`MAX_SEQ_BACKTRACK`).
pub const MAX_WINDOW_PACKETS: u32 = 65536;
/// Largest time backtrack OpenVPN accepts (`MAX_TIME_BACKTRACK`).
pub const MAX_WINDOW_SECONDS: u32 = 600;
/// OpenVPN reaps expired window slots at most this often (seconds).
pub const REAP_INTERVAL_SECONDS: u64 = 5;
/// Send-side packet ids at or above this value should trigger a renegotiation (`PACKET_ID_WRAP_TRIGGER`).
pub const WRAP_TRIGGER: u32 = 0xFF00_0000;

/// Slot value: id inside the window, not yet received.
const SLOT_UNSEEN: u64 = 0;
/// Slot value: id can no longer be accepted (time backtrack exceeded).
const SLOT_EXPIRED: u64 = 1;
/// Seen slots store `now_unix + SLOT_SEEN_BASE` so that no receive time collides with the markers.
const SLOT_SEEN_BASE: u64 = 2;

impl ReplayError {
    /// The rejected packet id as OpenVPN prints it in its replay warning: `[ #ID ]`, or
    /// `[ time = (T) ]` for a long-form timestamp that moved backwards.
    pub fn openvpn_packet_id(&self) -> String {
        match *self {
            Self::ZeroId => "[ #0 ]".to_string(),
            Self::TimeBacktrack { time, .. } => format!("[ time = ({time}) ]"),
            Self::OutsideWindow { id, .. }
            | Self::Replay { id }
            | Self::Expired { id }
            | Self::NotSequential { id, .. } => format!("[ #{id} ]"),
        }
    }
}

/// Why a packet id was rejected by [`ReplayWindow::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// Packet id 0 is never valid.
    #[error("packet id 0 is invalid")]
    ZeroId,
    /// The long-form timestamp is older than the newest one already accepted.
    #[error("packet time {time} is older than the current window time {current}")]
    TimeBacktrack {
        /// Timestamp carried by the packet.
        time: u32,
        /// Timestamp of the current window.
        current: u32,
    },
    /// The id is further behind the highest accepted id than the window allows.
    #[error("packet id {id} is {distance} behind the highest id {highest}, outside the window")]
    OutsideWindow {
        /// Id carried by the packet.
        id: u32,
        /// Highest id accepted so far.
        highest: u32,
        /// `highest - id`.
        distance: u32,
    },
    /// The id was already received (a replay).
    #[error("packet id {id} was already received (replay)")]
    Replay {
        /// Id carried by the packet.
        id: u32,
    },
    /// The id is inside the window but its slot expired because of the time backtrack limit.
    #[error("packet id {id} arrived too late (time backtrack window expired)")]
    Expired {
        /// Id carried by the packet.
        id: u32,
    },
    /// Strict (non-backtrack) mode: the id is not the immediate successor of the last one.
    #[error("packet id {id} is not the successor of {last} (strict sequential mode)")]
    NotSequential {
        /// Id carried by the packet.
        id: u32,
        /// Last id accepted.
        last: u32,
    },
}

/// Receive-side replay window for one key and direction (OpenVPN `packet_id_rec`).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Circular list of slot states; `slots[head]` is the highest id, `slots[head+i]` is `highest - i`.
    slots: Vec<u64>,
    /// Index of the slot of the highest id.
    head: usize,
    /// Number of valid slots (`<= slots.len()`).
    size: usize,
    /// Configured window size in packets (0 = strict sequential mode).
    seq_backtrack: u32,
    /// Configured time backtrack in seconds (0 = never reap).
    time_backtrack: u32,
    /// Highest id accepted within `time`.
    id: u32,
    /// Current long-form time (0 for short form).
    time: u32,
    /// Wall clock of the last reap.
    last_reap: u64,
}

impl ReplayWindow {
    /// Creates a window of `window_packets` ids and `window_seconds` time backtrack (`--replay-window n t`).
    ///
    /// Values above OpenVPN's limits (65536 packets, 600 s) are clamped to those limits.
    /// `window_packets == 0` selects strict sequential mode.
    pub fn new(window_packets: u32, window_seconds: u32) -> Self {
        let seq_backtrack = window_packets.min(MAX_WINDOW_PACKETS);
        let time_backtrack = window_seconds.min(MAX_WINDOW_SECONDS);
        Self {
            slots: vec![SLOT_UNSEEN; seq_backtrack as usize],
            head: 0,
            size: 0,
            seq_backtrack,
            time_backtrack,
            id: 0,
            time: 0,
            last_reap: 0,
        }
    }

    /// Window with OpenVPN's defaults (64 packets, 15 seconds).
    pub fn with_defaults() -> Self {
        Self::new(DEFAULT_WINDOW_PACKETS, DEFAULT_WINDOW_SECONDS)
    }

    /// Highest accepted id in the current time epoch (0 before the first packet).
    pub fn highest_id(&self) -> u32 {
        self.id
    }

    /// Current long-form time epoch (0 before the first packet or for the short form).
    pub fn current_time(&self) -> u32 {
        self.time
    }

    fn cap(&self) -> usize {
        self.slots.len()
    }

    fn item_index(&self, index: usize) -> usize {
        // cap > 0 whenever this is called (backtrack mode); index < size <= cap.
        (self.head + index) % self.cap()
    }

    fn item(&self, index: usize) -> u64 {
        self.slots[self.item_index(index)]
    }

    fn push_unseen(&mut self) {
        let cap = self.cap();
        self.head = (self.head + cap - 1) % cap;
        self.slots[self.head] = SLOT_UNSEEN;
        self.size = (self.size + 1).min(cap);
    }

    fn reap_due(&self, now_unix: u64) -> bool {
        self.last_reap.saturating_add(REAP_INTERVAL_SECONDS) <= now_unix
    }

    /// Index of the first slot a reap at `now_unix` would expire (or `size` if none).
    fn reap_boundary(&self, now_unix: u64) -> usize {
        if self.time_backtrack == 0 {
            return self.size;
        }
        for i in 0..self.size {
            let v = self.item(i);
            if v == SLOT_EXPIRED {
                return self.size;
            }
            if v >= SLOT_SEEN_BASE {
                let seen_at = v - SLOT_SEEN_BASE;
                if seen_at.saturating_add(u64::from(self.time_backtrack)) < now_unix {
                    return i;
                }
            }
        }
        self.size
    }

    fn reap(&mut self, now_unix: u64) {
        let start = self.reap_boundary(now_unix);
        for i in start..self.size {
            let idx = self.item_index(i);
            if self.slots[idx] == SLOT_EXPIRED {
                break;
            }
            self.slots[idx] = SLOT_EXPIRED;
        }
        self.last_reap = now_unix;
    }

    /// Checks whether (`id`, `time`) would be accepted at `now_unix`. Does not change the window.
    ///
    /// Use `time = 0` for short-form packet ids.
    pub fn check(&self, id: u32, time: u32, now_unix: u64) -> Result<(), ReplayError> {
        if id == 0 {
            return Err(ReplayError::ZeroId);
        }
        if self.seq_backtrack == 0 {
            return self.check_sequential(id, time);
        }
        if time < self.time {
            return Err(ReplayError::TimeBacktrack {
                time,
                current: self.time,
            });
        }
        if time > self.time || id > self.id {
            return Ok(());
        }
        let distance = self.id - id;
        let index = distance as usize;
        if index >= self.size {
            return Err(ReplayError::OutsideWindow {
                id,
                highest: self.id,
                distance,
            });
        }
        // OpenVPN reaps before testing (crypto_check_replay); emulate that without mutating.
        if self.reap_due(now_unix) && index >= self.reap_boundary(now_unix) {
            return Err(ReplayError::Expired { id });
        }
        match self.item(index) {
            SLOT_UNSEEN => Ok(()),
            SLOT_EXPIRED => Err(ReplayError::Expired { id }),
            _ => Err(ReplayError::Replay { id }),
        }
    }

    fn check_sequential(&self, id: u32, time: u32) -> Result<(), ReplayError> {
        if time < self.time {
            return Err(ReplayError::TimeBacktrack {
                time,
                current: self.time,
            });
        }
        let ok = if time == self.time {
            self.id == 0 || Some(id) == self.id.checked_add(1)
        } else {
            id == 1
        };
        if ok {
            Ok(())
        } else {
            Err(ReplayError::NotSequential { id, last: self.id })
        }
    }

    /// Records (`id`, `time`) as received at `now_unix`.
    ///
    /// INVARIANT: call only after [`ReplayWindow::check`] succeeded for the same values and the packet
    /// authenticated; unauthenticated packets must never move the window.
    pub fn commit(&mut self, id: u32, time: u32, now_unix: u64) {
        if self.seq_backtrack == 0 {
            self.time = time;
            self.id = id;
            return;
        }
        if self.reap_due(now_unix) {
            self.reap(now_unix);
        }
        let backtrack = self.seq_backtrack;
        if self.size == 0 || time > self.time || (id >= backtrack && id - backtrack > self.id) {
            self.time = time;
            self.id = 0;
            if id > backtrack {
                self.id = id - backtrack;
            }
            self.head = 0;
            self.size = 0;
        }
        // Bounded by `backtrack` iterations thanks to the reset above.
        while self.id < id {
            self.push_unseen();
            self.id += 1;
        }
        let distance = (self.id - id) as usize;
        if distance < self.size {
            let idx = self.item_index(distance);
            self.slots[idx] = now_unix.saturating_add(SLOT_SEEN_BASE);
        }
    }

    /// `check` followed by `commit` when it succeeds (for callers that authenticated already).
    pub fn check_and_commit(
        &mut self,
        id: u32,
        time: u32,
        now_unix: u64,
    ) -> Result<(), ReplayError> {
        self.check(id, time, now_unix)?;
        self.commit(id, time, now_unix);
        Ok(())
    }
}

/// Packet-id wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketIdForm {
    /// 4-byte id only (data channel).
    Short,
    /// 4-byte id followed by 4-byte Unix time (tls-auth / tls-crypt control channel).
    Long,
}

/// One packet id produced by [`PacketIdSend::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketId {
    /// Sequence number (never 0).
    pub id: u32,
    /// Timestamp (meaningful for the long form; the short form carries it but never writes it).
    pub time: u32,
}

impl PacketId {
    /// Writes the short form (4 bytes, big endian) into `out[..4]`.
    pub fn write_short(&self, out: &mut [u8; 4]) {
        *out = self.id.to_be_bytes();
    }

    /// Writes the long form (id then time, 8 bytes, big endian) into `out[..8]`.
    pub fn write_long(&self, out: &mut [u8; 8]) {
        out[..4].copy_from_slice(&self.id.to_be_bytes());
        out[4..].copy_from_slice(&self.time.to_be_bytes());
    }
}

/// Why no further packet id can be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketIdSendError {
    /// The 32-bit id space is exhausted; the key must be renegotiated (OpenVPN: "packet ID roll over").
    #[error("packet id space exhausted; renegotiate the key")]
    Exhausted,
}

/// Send-side packet-id counter for one key (OpenVPN `packet_id_send`).
#[derive(Debug, Clone)]
pub struct PacketIdSend {
    form: PacketIdForm,
    id: u32,
    time: u32,
}

impl PacketIdSend {
    /// New counter; the first id produced is 1.
    pub fn new(form: PacketIdForm) -> Self {
        Self {
            form,
            id: 0,
            time: 0,
        }
    }

    /// Starts a long-form counter with a fixed timestamp (e.g. tls-crypt-v2 session start).
    pub fn with_time(form: PacketIdForm, time: u32) -> Self {
        Self { form, id: 0, time }
    }

    /// Resumes a counter whose last handed-out id was `last_id` (restored state, tests).
    pub fn with_last_id(form: PacketIdForm, last_id: u32, time: u32) -> Self {
        Self {
            form,
            id: last_id,
            time,
        }
    }

    /// The wire form of this counter.
    pub fn form(&self) -> PacketIdForm {
        self.form
    }

    /// Last id handed out (0 before the first).
    pub fn last_id(&self) -> u32 {
        self.id
    }

    /// Current timestamp (0 before the first packet unless set with [`PacketIdSend::with_time`]).
    pub fn time(&self) -> u32 {
        self.time
    }

    /// True once the id reached [`WRAP_TRIGGER`]: the caller should start a renegotiation now.
    pub fn near_wrap(&self) -> bool {
        self.id >= WRAP_TRIGGER
    }

    /// Produces the next packet id. `now_unix` fixes the timestamp on first use.
    ///
    /// Wire time is 32 bits; `now_unix` is truncated like OpenVPN's `htonl((uint32_t)now)`.
    pub fn next(&mut self, now_unix: u64) -> Result<PacketId, PacketIdSendError> {
        let now32 = now_unix as u32;
        if self.time == 0 {
            self.time = now32;
        }
        if self.id == u32::MAX {
            if self.form == PacketIdForm::Short || now32 <= self.time {
                return Err(PacketIdSendError::Exhausted);
            }
            self.time = now32;
            self.id = 0;
        }
        self.id += 1;
        Ok(PacketId {
            id: self.id,
            time: self.time,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn accept(w: &mut ReplayWindow, id: u32, time: u32, now: u64) -> Result<(), ReplayError> {
        w.check_and_commit(id, time, now)
    }

    #[test]
    fn rejects_zero() {
        let w = ReplayWindow::with_defaults();
        assert_eq!(w.check(0, 0, T0), Err(ReplayError::ZeroId));
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::with_defaults();
        for id in 1..=200 {
            accept(&mut w, id, 0, T0).unwrap();
            assert_eq!(w.check(id, 0, T0), Err(ReplayError::Replay { id }));
        }
        assert_eq!(w.highest_id(), 200);
    }

    #[test]
    fn check_does_not_mutate() {
        let mut w = ReplayWindow::with_defaults();
        w.check(5, 0, T0).unwrap();
        w.check(5, 0, T0).unwrap();
        assert_eq!(w.highest_id(), 0);
        w.commit(5, 0, T0);
        assert_eq!(w.check(5, 0, T0), Err(ReplayError::Replay { id: 5 }));
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::with_defaults();
        accept(&mut w, 10, 0, T0).unwrap();
        // ids 1..9 were skipped and are still acceptable (window holds 10 slots).
        for id in (1..10).rev() {
            accept(&mut w, id, 0, T0).unwrap();
        }
        for id in 1..=10 {
            assert_eq!(w.check(id, 0, T0), Err(ReplayError::Replay { id }));
        }
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new(64, 15);
        accept(&mut w, 1, 0, T0).unwrap();
        accept(&mut w, 100, 0, T0).unwrap();
        // distance 63 is the last slot inside a 64-packet window
        w.check(37, 0, T0).unwrap();
        assert_eq!(
            w.check(36, 0, T0),
            Err(ReplayError::OutsideWindow {
                id: 36,
                highest: 100,
                distance: 64
            })
        );
        accept(&mut w, 37, 0, T0).unwrap();
        assert_eq!(w.check(37, 0, T0), Err(ReplayError::Replay { id: 37 }));
        // advancing by one pushes id 37 out
        accept(&mut w, 101, 0, T0).unwrap();
        assert!(matches!(
            w.check(37, 0, T0),
            Err(ReplayError::OutsideWindow { .. })
        ));
        w.check(38, 0, T0).unwrap();
    }

    #[test]
    fn large_jump_resets_window() {
        let mut w = ReplayWindow::new(8, 15);
        accept(&mut w, 1, 0, T0).unwrap();
        accept(&mut w, 1000, 0, T0).unwrap();
        // After the jump the window covers 993..=1000, all unseen but 1000.
        w.check(993, 0, T0).unwrap();
        assert!(matches!(
            w.check(992, 0, T0),
            Err(ReplayError::OutsideWindow { .. })
        ));
        assert_eq!(w.check(1000, 0, T0), Err(ReplayError::Replay { id: 1000 }));
    }

    #[test]
    fn long_form_time_semantics() {
        let mut w = ReplayWindow::with_defaults();
        accept(&mut w, 5, 1000, T0).unwrap();
        assert!(matches!(
            w.check(6, 999, T0),
            Err(ReplayError::TimeBacktrack {
                time: 999,
                current: 1000
            })
        ));
        // newer time: fresh window, id may restart low
        accept(&mut w, 1, 1001, T0).unwrap();
        assert_eq!(w.current_time(), 1001);
        assert!(matches!(
            w.check(5, 1000, T0),
            Err(ReplayError::TimeBacktrack { .. })
        ));
        assert_eq!(w.check(1, 1001, T0), Err(ReplayError::Replay { id: 1 }));
        w.check(2, 1001, T0).unwrap();
    }

    #[test]
    fn time_backtrack_expiry() {
        let mut w = ReplayWindow::new(64, 15);
        accept(&mut w, 1, 0, T0).unwrap();
        accept(&mut w, 3, 0, T0).unwrap(); // id 2 skipped
                                           // within 15 s the hole can still be filled
        w.check(2, 0, T0 + 15).unwrap();
        // 16 s later, id 1 (seen at T0) is too old and everything at/after it (i.e. older) expires;
        // id 3 was also seen at T0, so the whole window expires from the top.
        accept(&mut w, 4, 0, T0 + 16).unwrap();
        assert_eq!(w.check(2, 0, T0 + 16), Err(ReplayError::Expired { id: 2 }));
        // new ids are still fine
        accept(&mut w, 5, 0, T0 + 16).unwrap();
    }

    #[test]
    fn reap_only_every_five_seconds() {
        let mut w = ReplayWindow::new(64, 15);
        accept(&mut w, 1, 0, T0).unwrap(); // reaps at T0 (last_reap = T0)
        accept(&mut w, 3, 0, T0 + 1).unwrap();
        // at T0+17 a reap is due: the seen slot of id 3 (T0+1) is older than 15 s -> 2 expires
        assert_eq!(w.check(2, 0, T0 + 17), Err(ReplayError::Expired { id: 2 }));
        // at T0+4 no reap is due (and nothing is old anyway)
        w.check(2, 0, T0 + 4).unwrap();
    }

    #[test]
    fn reap_boundary_is_first_old_seen_slot() {
        let mut w = ReplayWindow::new(64, 15);
        accept(&mut w, 1, 0, T0).unwrap();
        accept(&mut w, 3, 0, T0 + 10).unwrap(); // 2 is a hole
        accept(&mut w, 6, 0, T0 + 20).unwrap(); // 4, 5 are holes
                                                // at T0+20 a reap ran: id 1 (T0) is old -> 1 and below expired; id 3 (T0+10) is fine.
        w.check(2, 0, T0 + 20).unwrap();
        w.check(4, 0, T0 + 20).unwrap();
        // at T0+26: id 3 seen at T0+10 is now older than 15 s -> 3 and 2 expire, 4 and 5 stay.
        assert_eq!(w.check(2, 0, T0 + 26), Err(ReplayError::Expired { id: 2 }));
        w.check(4, 0, T0 + 26).unwrap();
        accept(&mut w, 5, 0, T0 + 26).unwrap();
        assert_eq!(w.check(2, 0, T0 + 26), Err(ReplayError::Expired { id: 2 }));
    }

    #[test]
    fn high_ids_near_u32_max() {
        let mut w = ReplayWindow::with_defaults();
        accept(&mut w, u32::MAX - 1, 0, T0).unwrap();
        accept(&mut w, u32::MAX, 0, T0).unwrap();
        assert_eq!(
            w.check(u32::MAX, 0, T0),
            Err(ReplayError::Replay { id: u32::MAX })
        );
        w.check(u32::MAX - 2, 0, T0).unwrap();
    }

    #[test]
    fn strict_sequential_mode() {
        let mut w = ReplayWindow::new(0, 0);
        accept(&mut w, 7, 0, T0).unwrap();
        accept(&mut w, 8, 0, T0).unwrap();
        assert!(matches!(
            w.check(10, 0, T0),
            Err(ReplayError::NotSequential { .. })
        ));
        assert!(matches!(
            w.check(8, 0, T0),
            Err(ReplayError::NotSequential { .. })
        ));
        assert!(matches!(
            w.check(2, 1, T0),
            Err(ReplayError::NotSequential { .. })
        ));
        accept(&mut w, 1, 1, T0).unwrap();
    }

    #[test]
    fn send_short_form() {
        let mut s = PacketIdSend::new(PacketIdForm::Short);
        assert_eq!(s.next(T0).unwrap().id, 1);
        assert_eq!(s.next(T0).unwrap().id, 2);
        assert!(!s.near_wrap());
        let mut s = PacketIdSend::new(PacketIdForm::Short);
        s.id = WRAP_TRIGGER - 1;
        assert!(!s.near_wrap());
        s.next(T0).unwrap();
        assert!(s.near_wrap());
        s.id = u32::MAX - 1;
        assert_eq!(s.next(T0).unwrap().id, u32::MAX);
        assert_eq!(s.next(T0 + 100), Err(PacketIdSendError::Exhausted));
        assert_eq!(s.next(T0 + 100), Err(PacketIdSendError::Exhausted));
    }

    #[test]
    fn send_long_form_rollover() {
        let mut s = PacketIdSend::new(PacketIdForm::Long);
        let p = s.next(T0).unwrap();
        assert_eq!((p.id, p.time), (1, T0 as u32));
        // time stays fixed while ids are available
        assert_eq!(s.next(T0 + 50).unwrap().time, T0 as u32);
        s.id = u32::MAX;
        assert_eq!(s.next(T0), Err(PacketIdSendError::Exhausted));
        let p = s.next(T0 + 1).unwrap();
        assert_eq!((p.id, p.time), (1, T0 as u32 + 1));
        let mut b = [0u8; 8];
        p.write_long(&mut b);
        assert_eq!(b, [0, 0, 0, 1, 0x65, 0x53, 0xf1, 0x01]);
    }

    #[test]
    fn sender_receiver_interop_with_rollover() {
        let mut s = PacketIdSend::with_time(PacketIdForm::Long, 500);
        let mut w = ReplayWindow::with_defaults();
        for _ in 0..10 {
            let p = s.next(600).unwrap();
            accept(&mut w, p.id, p.time, 600).unwrap();
        }
        s.id = u32::MAX;
        let p = s.next(601).unwrap();
        accept(&mut w, p.id, p.time, 601).unwrap();
        assert_eq!(w.current_time(), 601);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_accepts_twice(
            ops in proptest::collection::vec((0u32..300, 0u32..3, 0u64..100), 0..400),
            n in 0u32..100,
            t in 0u32..30,
        ) {
            let mut w = ReplayWindow::new(n, t);
            let mut seen = std::collections::HashSet::new();
            for (id, time, dt) in ops {
                if w.check_and_commit(id, time, T0 + dt).is_ok() {
                    proptest::prop_assert!(seen.insert((id, time)), "accepted twice: {id} {time}");
                }
            }
        }
    }
}
