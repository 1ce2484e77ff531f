//! The data load of `--hold`/`--data-pps`: the inner IPv4/UDP packet every held session sends, and
//! the pacer that spreads a total packet rate over time.
//!
//! Inner packet ([`ipv4_udp_packet`]): a 20-byte IPv4 header (no options, DF set, TTL 64, id 0, the
//! header checksum computed with the worker's ones'-complement helpers) and an 8-byte UDP header with
//! checksum 0 ("none", allowed for IPv4), then a fixed payload pattern up to the requested total size.
//! It is built once per session (the source is the session's pushed `ifconfig` address, which the server
//! checks) and then only copied and encrypted per send.
//!
//! Pacing ([`Pacer`]): packet `n` (counted from when the data phase started) is due at `n / rate`
//! seconds; each turn of the loop takes what is due, at most [`Pacer::max_batch`] (10 ms worth). What a
//! late turn cannot take within that bound is skipped, not made up later, and counted, so a generator
//! that cannot keep up shows a lower achieved rate and a skip count instead of bursts. While no session
//! is held the pacer is paused and that time does not count.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bulwark_worker::offload::{csum_add, csum_fold};

/// IPv4 header without options.
pub const IPV4_HEADER: usize = 20;
/// UDP header.
pub const UDP_HEADER: usize = 8;
/// Smallest inner packet: the two headers, no payload.
pub const MIN_SIZE: usize = IPV4_HEADER + UDP_HEADER;
/// Largest inner packet: the tunnel MTU (`tun-mtu 1500`).
pub const MAX_SIZE: usize = 1500;
/// Longest a turn may be late before packets are skipped: the pacer hands out at most this much of
/// the rate at once.
pub const MAX_BACKLOG: Duration = Duration::from_millis(10);

/// Errors of this module.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    /// The inner packet size is outside `MIN_SIZE..=MAX_SIZE`.
    #[error("inner packet size {0} is not within {MIN_SIZE}..={MAX_SIZE}")]
    Size(usize),
}

/// The IPv4 header checksum of `header` (its checksum field, bytes 10-11, taken as zero).
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut acc = 0u64;
    for (i, pair) in header.chunks(2).enumerate() {
        if i != 5 {
            acc = csum_add(acc, pair);
        }
    }
    !csum_fold(acc)
}

/// An inner IPv4/UDP packet of `size` bytes in total from `src:src_port` to `dst`.
pub fn ipv4_udp_packet(
    src: Ipv4Addr,
    src_port: u16,
    dst: SocketAddrV4,
    size: usize,
) -> Result<Vec<u8>, LoadError> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(LoadError::Size(size));
    }
    // within MAX_SIZE, so both lengths fit 16 bits
    let total = u16::try_from(size).map_err(|_| LoadError::Size(size))?;
    let udp_len = total - IPV4_HEADER as u16;
    let mut p = vec![0u8; size];
    p[0] = 0x45; // version 4, IHL 5
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
    p[8] = 64; // TTL
    p[9] = 17; // UDP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let csum = ipv4_header_checksum(&p[..IPV4_HEADER]);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    let u = &mut p[IPV4_HEADER..];
    u[0..2].copy_from_slice(&src_port.to_be_bytes());
    u[2..4].copy_from_slice(&dst.port().to_be_bytes());
    u[4..6].copy_from_slice(&udp_len.to_be_bytes());
    // u[6..8]: checksum 0 = none
    for (i, b) in u[UDP_HEADER..].iter_mut().enumerate() {
        *b = i as u8;
    }
    Ok(p)
}

/// Spreads `rate` packets per second over the time the data phase is active. See the module docs.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    /// Start of the current active stretch and the packet count at its start.
    stretch: Option<(Instant, u64)>,
    /// Active time of the stretches before the current one.
    active_before: Duration,
    /// Packets handed out.
    taken: u64,
    /// Packets skipped because a turn came too late.
    skipped: u64,
}

impl Pacer {
    /// A paused pacer for `rate` packets per second (0 = no data).
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            stretch: None,
            active_before: Duration::ZERO,
            taken: 0,
            skipped: 0,
        }
    }

    /// Most packets one turn hands out: [`MAX_BACKLOG`] worth of the rate, at least 1.
    pub fn max_batch(&self) -> u64 {
        (u128::from(self.rate) * MAX_BACKLOG.as_nanos() / 1_000_000_000).max(1) as u64
    }

    /// Packets due by `now` in the current stretch (starting it if paused), at most
    /// [`Pacer::max_batch`]; the rest of a larger backlog is skipped.
    pub fn take(&mut self, now: Instant) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        let (t0, n0) = *self.stretch.get_or_insert((now, self.taken + self.skipped));
        let elapsed = now.saturating_duration_since(t0).as_nanos();
        // packets 0..=k of the stretch are due once k / rate seconds have passed: the first at once
        let due = n0 + (elapsed * u128::from(self.rate) / 1_000_000_000) as u64 + 1;
        let done = self.taken + self.skipped;
        let backlog = due.saturating_sub(done);
        let n = backlog.min(self.max_batch());
        self.skipped += backlog - n;
        self.taken += n;
        n
    }

    /// When the next packet is due (None while paused or without a rate).
    pub fn next_due(&self) -> Option<Instant> {
        let (t0, n0) = self.stretch?;
        if self.rate == 0 {
            return None;
        }
        let k = (self.taken + self.skipped).saturating_sub(n0);
        let ns = u128::from(k) * 1_000_000_000 / u128::from(self.rate);
        Some(t0 + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Ends the current stretch (no session held): its time counts as active up to `now`.
    pub fn pause(&mut self, now: Instant) {
        if let Some((t0, _)) = self.stretch.take() {
            self.active_before += now.saturating_duration_since(t0);
        }
    }

    /// Time the pacer was active, up to `now` for a running stretch.
    pub fn active(&self, now: Instant) -> Duration {
        self.active_before
            + self
                .stretch
                .map_or(Duration::ZERO, |(t0, _)| now.saturating_duration_since(t0))
    }

    /// Packets handed out so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Packets skipped so far (a turn came more than [`MAX_BACKLOG`] late).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 1071 style check: the ones'-complement sum over a header with its checksum is 0xffff.
    fn sums_to_ones(header: &[u8]) -> bool {
        csum_fold(csum_add(0, header)) == 0xffff
    }

    #[test]
    fn header_checksum_matches_a_known_packet() {
        // the classic example header (Wikipedia "IPv4 header checksum"): checksum 0xb861
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
        assert!(sums_to_ones(&h));
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(
            ipv4_header_checksum(&z),
            0xb861,
            "the field itself is ignored"
        );
    }

    #[test]
    fn inner_packet_has_right_lengths_addresses_and_checksum() {
        let src = Ipv4Addr::new(10, 8, 0, 7);
        let dst: SocketAddrV4 = "10.8.0.1:9000".parse().unwrap();
        for size in [MIN_SIZE, 29, 576, 1200, MAX_SIZE] {
            let p = ipv4_udp_packet(src, 20001, dst, size).unwrap();
            assert_eq!(p.len(), size);
            assert_eq!(p[0], 0x45);
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), size);
            assert_eq!(&p[6..8], &[0x40, 0x00]);
            assert_eq!((p[8], p[9]), (64, 17));
            assert_eq!(&p[12..16], &[10, 8, 0, 7]);
            assert_eq!(&p[16..20], &[10, 8, 0, 1]);
            assert!(sums_to_ones(&p[..20]), "size {size}: header checksum");
            let u = &p[20..];
            assert_eq!(u16::from_be_bytes([u[0], u[1]]), 20001);
            assert_eq!(u16::from_be_bytes([u[2], u[3]]), 9000);
            assert_eq!(usize::from(u16::from_be_bytes([u[4], u[5]])), size - 20);
            assert_eq!(&u[6..8], &[0, 0], "UDP checksum: none");
            // the worker's own parser sees the same addresses
            let (s, d) = bulwark_worker::proto::pool::inner_addrs(&p).unwrap();
            assert_eq!((s, d), (src.into(), (*dst.ip()).into()));
        }
        // another source changes the checksum, and it is still right
        let a = ipv4_udp_packet(src, 1, dst, 100).unwrap();
        let b = ipv4_udp_packet(Ipv4Addr::new(10, 8, 3, 200), 1, dst, 100).unwrap();
        assert_ne!(&a[10..12], &b[10..12]);
        assert!(sums_to_ones(&b[..20]));
    }

    #[test]
    fn inner_packet_size_is_bounded() {
        let dst: SocketAddrV4 = "10.8.0.1:9".parse().unwrap();
        let src = Ipv4Addr::new(10, 8, 0, 2);
        assert_eq!(
            ipv4_udp_packet(src, 1, dst, MIN_SIZE - 1),
            Err(LoadError::Size(27))
        );
        assert_eq!(
            ipv4_udp_packet(src, 1, dst, MAX_SIZE + 1),
            Err(LoadError::Size(1501))
        );
    }

    #[test]
    fn pacer_hands_out_the_rate_over_time() {
        let t = Instant::now();
        let mut p = Pacer::new(1000); // 1 packet per ms
        assert_eq!(p.next_due(), None, "paused until the first take");
        assert_eq!(p.take(t), 1, "the first packet is due at once");
        assert_eq!(p.next_due(), Some(t + Duration::from_millis(1)));
        assert_eq!(p.take(t), 0);
        assert_eq!(p.take(t + Duration::from_micros(999)), 0);
        assert_eq!(p.take(t + Duration::from_millis(1)), 1);
        assert_eq!(p.take(t + Duration::from_millis(5)), 4);
        assert_eq!(p.next_due(), Some(t + Duration::from_millis(6)));
        // one second of steady 1 ms turns: exactly the rate
        let mut n = 0;
        for ms in 6..=1005 {
            n += p.take(t + Duration::from_millis(ms));
        }
        assert_eq!(n, 1000);
        assert_eq!(p.taken(), 1006);
        assert_eq!(p.skipped(), 0);
        assert_eq!(
            p.active(t + Duration::from_millis(1005)),
            Duration::from_millis(1005)
        );
    }

    #[test]
    fn pacer_skips_what_a_late_turn_cannot_take_and_pauses() {
        let t = Instant::now();
        let mut p = Pacer::new(150_000);
        assert_eq!(p.max_batch(), 1500, "10 ms of 150000/s");
        assert_eq!(p.take(t), 1);
        // 100 ms late: 15000 due, 1500 handed out, the rest skipped, not made up later
        assert_eq!(p.take(t + Duration::from_millis(100)), 1500);
        assert_eq!(p.skipped(), 13_500);
        assert_eq!(p.take(t + Duration::from_millis(101)), 150);
        // paused for 1 s: that time neither counts nor builds a backlog
        p.pause(t + Duration::from_millis(101));
        assert_eq!(p.next_due(), None);
        let r = t + Duration::from_millis(1101);
        assert_eq!(p.take(r), 1);
        assert_eq!(p.take(r + Duration::from_millis(2)), 300);
        assert_eq!(p.skipped(), 13_500);
        assert_eq!(
            p.active(r + Duration::from_millis(2)),
            Duration::from_millis(103)
        );
        // rate 0: nothing, ever; small rates still give one packet per turn at most what is due
        let mut z = Pacer::new(0);
        assert_eq!(z.take(t), 0);
        assert_eq!(z.next_due(), None);
        let mut s = Pacer::new(3);
        assert_eq!(s.max_batch(), 1);
        assert_eq!(s.take(t), 1);
        assert_eq!(s.take(t + Duration::from_millis(333)), 0);
        assert_eq!(s.take(t + Duration::from_millis(334)), 1);
    }
}
