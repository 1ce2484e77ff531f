//! The server's peer table with a timer queue: the earliest deadline of all peers without visiting
//! every peer.
//!
//! The driver asks for the engine's next deadline once per event-loop turn (on every data-plane
//! thread). Walking all peers for it cost O(peers) per turn — with a thousand clients, tens of
//! microseconds for every received datagram. Here every peer's deadline sits in a min-heap instead:
//!
//! * every mutable access to a peer ([`PeerTable::get_mut`], [`PeerTable::insert`],
//!   [`PeerTable::values_mut`]) marks it *dirty*; before the heap is read, each dirty peer's
//!   [`Peer::next_timeout`] is computed again and pushed when it is earlier than the entry it already
//!   has (a deadline that moved later keeps its old, earlier entry: that entry fires early, finds
//!   nothing due, and is replaced — one spurious wake-up per peer and deadline change at most);
//! * [`PeerTable::take_due`] pops the entries that are due and returns their peers.
//!
//! INVARIANT: every peer with a deadline `d` has a live heap entry at or before `d` (its
//! `scheduled` time), once the dirty peers are flushed. So [`PeerTable::next_timeout`] is never
//! later than the true earliest deadline (it may be earlier, never late), and no due peer is missed.
//! Entries of removed peers, and entries superseded by an earlier one, are stale: recognised by
//! `scheduled` not matching, and dropped when they reach the top.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use crate::proto::session::Peer;

/// Dirty peers are flushed into the heap at the latest when this many accumulated (a caller that
/// never asks for the deadline cannot grow the list without bound).
const MAX_DIRTY: usize = 4096;

/// Peers by client id, with their deadlines in a heap.
#[derive(Default)]
pub struct PeerTable {
    peers: HashMap<u64, Peer>,
    /// `(deadline, cid)`, earliest first; may hold stale entries
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// each peer's live entry in `heap`
    scheduled: HashMap<u64, Instant>,
    /// peers changed since the last flush (may repeat)
    dirty: Vec<u64>,
}

impl PeerTable {
    /// The peer, for reading.
    pub fn get(&self, cid: &u64) -> Option<&Peer> {
        self.peers.get(cid)
    }

    /// The peer, for changing (its deadline is looked at again before the next read of the heap).
    pub fn get_mut(&mut self, cid: &u64) -> Option<&mut Peer> {
        if self.dirty.len() >= MAX_DIRTY {
            self.flush();
        }
        let peer = self.peers.get_mut(cid)?;
        // the same peer again (a batch from one client): once is enough
        if self.dirty.last() != Some(cid) {
            self.dirty.push(*cid);
        }
        Some(peer)
    }

    /// Adds (or replaces) a peer.
    pub fn insert(&mut self, cid: u64, peer: Peer) {
        self.peers.insert(cid, peer);
        self.mark(cid);
    }

    /// Removes a peer; its heap entries become stale.
    pub fn remove(&mut self, cid: &u64) -> Option<Peer> {
        self.scheduled.remove(cid);
        self.peers.remove(cid)
    }

    /// Whether the peer exists.
    pub fn contains_key(&self, cid: &u64) -> bool {
        self.peers.contains_key(cid)
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Client ids.
    pub fn keys(&self) -> impl Iterator<Item = &u64> {
        self.peers.keys()
    }

    /// Peers, for reading.
    pub fn values(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// `(cid, peer)` pairs, for reading.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Peer)> {
        self.peers.iter()
    }

    /// Peers, for changing (all are looked at again).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        let cids: Vec<u64> = self.peers.keys().copied().collect();
        for cid in cids {
            self.mark(cid);
        }
        self.peers.values_mut()
    }

    fn mark(&mut self, cid: u64) {
        if self.dirty.len() >= MAX_DIRTY {
            self.flush();
        }
        if self.dirty.last() != Some(&cid) {
            self.dirty.push(cid);
        }
    }

    /// Pushes the dirty peers' deadlines that are earlier than their live entries.
    fn flush(&mut self) {
        for i in 0..self.dirty.len() {
            let cid = self.dirty[i];
            let Some(d) = self.peers.get(&cid).and_then(Peer::next_timeout) else {
                continue;
            };
            match self.scheduled.entry(cid) {
                Entry::Occupied(mut e) => {
                    if d < *e.get() {
                        e.insert(d);
                        self.heap.push(Reverse((d, cid)));
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(d);
                    self.heap.push(Reverse((d, cid)));
                }
            }
        }
        self.dirty.clear();
    }

    /// Drops stale entries from the top of the heap.
    fn prune(&mut self) {
        while let Some(&Reverse((t, cid))) = self.heap.peek() {
            if self.scheduled.get(&cid) == Some(&t) {
                break;
            }
            self.heap.pop();
        }
    }

    /// The earliest deadline of all peers (or earlier, never later; see the module invariant).
    pub fn next_timeout(&mut self) -> Option<Instant> {
        self.flush();
        self.prune();
        self.heap.peek().map(|&Reverse((t, _))| t)
    }

    /// The peers whose deadline is at or before `now`, in deadline order; their entries are
    /// consumed (each is marked dirty, so its next deadline is scheduled again). A peer whose live
    /// entry fired but whose deadline has moved later is only rescheduled, not returned.
    pub fn take_due(&mut self, now: Instant) -> Vec<u64> {
        self.flush();
        let mut due = Vec::new();
        loop {
            self.prune();
            let Some(&Reverse((t, cid))) = self.heap.peek() else {
                break;
            };
            if t > now {
                break;
            }
            self.heap.pop();
            self.scheduled.remove(&cid);
            self.dirty.push(cid);
            if self
                .peers
                .get(&cid)
                .and_then(Peer::next_timeout)
                .is_some_and(|d| d <= now)
            {
                due.push(cid);
            }
        }
        due
    }

    /// Test aid: the invariant holds (the heap's next deadline is not later than every peer's).
    #[cfg(test)]
    pub fn check_invariant(&mut self) {
        let truth = self.peers.values().filter_map(Peer::next_timeout).min();
        let ours = self.next_timeout();
        match (truth, ours) {
            (Some(t), Some(o)) => assert!(o <= t, "timer queue {o:?} later than {t:?}"),
            (Some(t), None) => panic!("timer queue empty, a peer is due at {t:?}"),
            _ => {}
        }
    }
}
