//! TUN offload: the virtio-net header of an `IFF_VNET_HDR` TUN device, segmentation of the kernel's
//! TSO/USO super-packets before encryption, and coalescing of decrypted TCP segments into super-packets
//! for the TUN write (userspace GRO).
//!
//! With `IFF_VNET_HDR` every read from the TUN device starts with a [`VnetHdr`] and every write must
//! start with one. With `TUNSETOFFLOAD` (checksum, TSO4/6, USO4/6; set by the parent) the kernel hands
//! over
//! - packets whose transport checksum is only partial ([`F_NEEDS_CSUM`]: the pseudo-header sum sits in
//!   the checksum field and the sum from `csum_start` on must still be added), and
//! - TCP/UDP super-packets of up to 64 KiB ([`GSO_TCPV4`], [`GSO_TCPV6`], [`GSO_UDP_L4`]) that stand
//!   for `gso_size`-sized segments.
//!
//! [`segment`] turns one such read into ordinary, fully checksummed IP packets (the peer's OpenVPN
//! writes them to its own TUN without offload): per segment the IPv4 total length, identification
//! (incremented per segment, as the kernel's own segmentation does) and header checksum, the IPv6
//! payload length, the TCP sequence number and flags (FIN/PSH only on the last segment, CWR only on
//! the first) or the UDP length, and the transport checksum are rewritten.
//!
//! [`coalesce`] looks at decrypted packets in the order they are to be written and merges a run of
//! in-order TCP segments of one flow (same addresses, ports, ACK, window, options and IP header fields;
//! only ACK/PSH flags; every segment's IP and TCP checksums verified, so a corrupt segment is never
//! passed off as valid) into one super-packet: the first packet's header is rewritten in place and the
//! returned [`Coalesced`] says how to write the group with one vectored write (header, first packet,
//! then the payloads of the others). Everything else is written alone with a plain header.
//!
//! Invariants: nothing here panics on any input (every offset is checked; malformed input is an
//! [`OffloadError`] or "not coalescable"); the output packets of [`segment`] are complete IP packets no
//! longer than the input; [`coalesce`] never merges packets of different flows or out of order, and never
//! more than [`MAX_COALESCE`] packets or 65535 bytes of IP packet.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Size of the virtio-net header without mergeable buffers (the TUN default).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO: IP fragmentation; never requested, refused).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO: UDP segmentation).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP super-packet carries ECN (CWR on the first segment only).
pub const GSO_ECN: u8 = 0x80;
/// Most packets merged into one super-packet (as the kernel's GRO).
pub const MAX_COALESCE: usize = 64;
/// Largest IP packet (IPv4 total length; for IPv6 the payload length is bounded the same way here).
const MAX_IP_LEN: usize = 65535;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
/// Offset of the checksum inside the TCP header.
const TCP_CSUM_OFF: usize = 16;
/// Offset of the checksum inside the UDP header.
const UDP_CSUM_OFF: usize = 6;

/// Errors of [`VnetHdr::parse`] and [`segment`]: the packet is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Fewer bytes than a virtio-net header.
    #[error("short virtio-net header ({0} bytes)")]
    ShortHeader(usize),
    /// A GSO type this code does not handle (or did not ask for).
    #[error("unsupported GSO type {0:#x}")]
    UnsupportedGso(u8),
    /// `csum_start`/`csum_offset` point outside the packet.
    #[error("checksum offsets {start}+{offset} outside a {len}-byte packet")]
    ChecksumOffsets {
        /// csum_start
        start: usize,
        /// csum_offset
        offset: usize,
        /// packet length
        len: usize,
    },
    /// The packet is not a well-formed IPv4/IPv6 packet of the protocol its GSO type names.
    #[error("malformed {0} super-packet")]
    Malformed(&'static str),
    /// A GSO packet with a segment size of zero.
    #[error("GSO packet with segment size 0")]
    ZeroSegmentSize,
}

/// The virtio-net header (`struct virtio_net_hdr`, native byte order as the TUN driver uses for
/// legacy headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` / `F_DATA_VALID`
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`
    pub gso_type: u8,
    /// length of the headers (IP + transport)
    pub hdr_len: u16,
    /// segment payload size
    pub gso_size: u16,
    /// where checksumming starts
    pub csum_start: u16,
    /// where the checksum is stored, relative to `csum_start`
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, OffloadError> {
        let Some(h) = b.get(..VNET_HDR_LEN) else {
            return Err(OffloadError::ShortHeader(b.len()));
        };
        let u = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        Ok(VnetHdr {
            flags: h[0],
            gso_type: h[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Ones'-complement sum of `data` as big-endian 16-bit words (an odd last byte padded with zero),
/// added to `acc`. `data` must start at an even offset of the summed message.
///
/// The sum is byte-order independent (RFC 1071, 2.B): the data is summed as little-endian 64-bit
/// words — plain loads, no byte swaps — with end-around carry (2^64 ≡ 1 mod 0xffff) in four
/// independent accumulators over 32-byte blocks, folded to 16 bits and byte-swapped at the end. The
/// value returned is congruent (mod 0xffff) to the plain big-endian sum and zero only for all-zero
/// data, so [`csum_fold`] of any chain of calls gives the same result.
pub fn csum_add(acc: u64, data: &[u8]) -> u64 {
    #[inline(always)]
    fn add_carry(a: u64, x: u64) -> u64 {
        let (s, c) = a.overflowing_add(x);
        s + u64::from(c)
    }
    #[inline(always)]
    fn word(c: &[u8]) -> u64 {
        u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
    }
    let mut a = [0u64; 4];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        a[0] = add_carry(a[0], word(&b[0..8]));
        a[1] = add_carry(a[1], word(&b[8..16]));
        a[2] = add_carry(a[2], word(&b[16..24]));
        a[3] = add_carry(a[3], word(&b[24..32]));
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        a[0] = add_carry(a[0], word(w));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // the tail starts at an even offset: zero padding makes an odd last byte the low byte of
        // its little-endian 16-bit word, i.e. the high byte of the big-endian one
        let mut t = [0u8; 8];
        t[..tail.len()].copy_from_slice(tail);
        a[0] = add_carry(a[0], u64::from_le_bytes(t));
    }
    let wide: u64 = a.iter().map(|&x| (x >> 32) + (x & 0xffff_ffff)).sum();
    acc + u64::from(csum_fold(wide).swap_bytes())
}

/// Folds a sum from [`csum_add`] to 16 bits (not complemented).
pub fn csum_fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The final checksum value to store: the complement of the folded sum, 0 sent as 0xffff (as the
/// kernel's `CSUM_MANGLED_0`; both mean "zero" in ones' complement, and a UDP checksum of 0 would mean
/// "none").
fn csum_finish(acc: u64) -> u16 {
    match !csum_fold(acc) {
        0 => 0xffff,
        v => v,
    }
}

/// The IP layer of a packet.
#[derive(Debug, Clone, Copy)]
enum Ip {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

/// Parsed IP header: version, header length, transport protocol.
#[derive(Debug, Clone, Copy)]
struct IpInfo {
    ip: Ip,
    hlen: usize,
    proto: u8,
}

fn parse_ip(p: &[u8]) -> Option<IpInfo> {
    match p.first()? >> 4 {
        4 => {
            if p.len() < 20 {
                return None;
            }
            let hlen = usize::from(p[0] & 0x0f) * 4;
            if hlen < 20 || p.len() < hlen {
                return None;
            }
            // fragments are never super-packets nor coalescable
            let frag = u16::from_be_bytes([p[6], p[7]]);
            if frag & 0x3fff != 0 {
                return None;
            }
            Some(IpInfo {
                ip: Ip::V4 {
                    src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                    dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                },
                hlen,
                proto: p[9],
            })
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&p[8..24]);
            dst.copy_from_slice(&p[24..40]);
            // extension headers are not handled: the next header must be the transport itself
            Some(IpInfo {
                ip: Ip::V6 {
                    src: Ipv6Addr::from(src),
                    dst: Ipv6Addr::from(dst),
                },
                hlen: 40,
                proto: p[6],
            })
        }
        _ => None,
    }
}

/// The pseudo-header sum for a transport segment of `len` bytes.
fn pseudo(ip: &Ip, proto: u8, len: usize) -> u64 {
    let mut acc = 0u64;
    match ip {
        Ip::V4 { src, dst } => {
            acc = csum_add(acc, &src.octets());
            acc = csum_add(acc, &dst.octets());
        }
        Ip::V6 { src, dst } => {
            acc = csum_add(acc, &src.octets());
            acc = csum_add(acc, &dst.octets());
        }
    }
    acc + u64::from(proto) + len as u64
}

/// Rewrites the IPv4 total length and header checksum, or the IPv6 payload length, for a packet
/// of `total` bytes whose IP header is `hdr` (length checked by the caller).
fn set_ip_len(hdr: &mut [u8], v4: bool, total: usize) {
    if v4 {
        let t = u16::try_from(total).unwrap_or(u16::MAX);
        hdr[2..4].copy_from_slice(&t.to_be_bytes());
        hdr[10..12].copy_from_slice(&[0, 0]);
        let c = !csum_fold(csum_add(0, hdr));
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let pl = u16::try_from(total.saturating_sub(40)).unwrap_or(u16::MAX);
        hdr[4..6].copy_from_slice(&pl.to_be_bytes());
    }
}

/// Turns one packet read from a vnet TUN device (`pkt`, after the header `h`) into ordinary, fully
/// checksummed IP packets and passes each to `emit`, in order. `scratch` is reused for the packets
/// that need rewriting. Returns how many packets were emitted.
pub fn segment(
    pkt: &[u8],
    h: &VnetHdr,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            if h.flags & F_NEEDS_CSUM == 0 {
                emit(pkt);
                return Ok(1);
            }
            let (start, offset) = (usize::from(h.csum_start), usize::from(h.csum_offset));
            let at = start + offset;
            if start >= pkt.len() || at + 2 > pkt.len() {
                return Err(OffloadError::ChecksumOffsets {
                    start,
                    offset,
                    len: pkt.len(),
                });
            }
            scratch.clear();
            scratch.extend_from_slice(pkt);
            // the field holds the pseudo-header sum: summing from csum_start over it completes it
            let c = csum_finish(csum_add(0, &scratch[start..]));
            scratch[at..at + 2].copy_from_slice(&c.to_be_bytes());
            emit(scratch);
            Ok(1)
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_l4(pkt, h, true, scratch, emit),
        GSO_UDP_L4 => segment_l4(pkt, h, false, scratch, emit),
        other => Err(OffloadError::UnsupportedGso(other)),
    }
}

fn segment_l4(
    pkt: &[u8],
    h: &VnetHdr,
    tcp: bool,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let what = if tcp { "TCP" } else { "UDP" };
    let bad = || OffloadError::Malformed(what);
    let info = parse_ip(pkt).ok_or_else(bad)?;
    let v4 = matches!(info.ip, Ip::V4 { .. });
    let want = if tcp { PROTO_TCP } else { PROTO_UDP };
    let gso_v4 = h.gso_type & !GSO_ECN == GSO_TCPV4;
    if info.proto != want || (tcp && gso_v4 != v4) {
        return Err(bad());
    }
    let l4 = info.hlen;
    let thlen = if tcp {
        let doff = usize::from(pkt.get(l4 + 12).ok_or_else(bad)? >> 4) * 4;
        if doff < 20 {
            return Err(bad());
        }
        doff
    } else {
        8
    };
    let hdrs = l4 + thlen;
    if pkt.len() < hdrs {
        return Err(bad());
    }
    let mss = usize::from(h.gso_size);
    if mss == 0 {
        return Err(OffloadError::ZeroSegmentSize);
    }
    let payload = &pkt[hdrs..];
    let proto = want;
    let seq0 = if tcp {
        u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]])
    } else {
        0
    };
    let id0 = if v4 {
        u16::from_be_bytes([pkt[4], pkt[5]])
    } else {
        0
    };
    let flags0 = if tcp { pkt[l4 + 13] } else { 0 };
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload
        .chunks(mss)
        .chain(payload.is_empty().then_some(&payload[..0]))
        .enumerate()
    {
        scratch.clear();
        scratch.extend_from_slice(&pkt[..hdrs]);
        scratch.extend_from_slice(chunk);
        let total = scratch.len();
        if v4 {
            // incrementing identification, as the kernel's own TSO/USO segmentation
            let id = id0.wrapping_add(u16::try_from(i).unwrap_or(u16::MAX));
            scratch[4..6].copy_from_slice(&id.to_be_bytes());
        }
        set_ip_len(&mut scratch[..l4], v4, total);
        let seg_len = total - l4;
        if tcp {
            let off = u32::try_from(i * mss).unwrap_or(u32::MAX);
            scratch[l4 + 4..l4 + 8].copy_from_slice(&seq0.wrapping_add(off).to_be_bytes());
            let mut f = flags0;
            if i + 1 < count {
                f &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                f &= !TCP_CWR;
            }
            scratch[l4 + 13] = f;
            scratch[l4 + TCP_CSUM_OFF..l4 + TCP_CSUM_OFF + 2].copy_from_slice(&[0, 0]);
            let c = csum_finish(csum_add(pseudo(&info.ip, proto, seg_len), &scratch[l4..]));
            scratch[l4 + TCP_CSUM_OFF..l4 + TCP_CSUM_OFF + 2].copy_from_slice(&c.to_be_bytes());
        } else {
            let ulen = u16::try_from(seg_len).unwrap_or(u16::MAX);
            scratch[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
            scratch[l4 + UDP_CSUM_OFF..l4 + UDP_CSUM_OFF + 2].copy_from_slice(&[0, 0]);
            let c = csum_finish(csum_add(pseudo(&info.ip, proto, seg_len), &scratch[l4..]));
            scratch[l4 + UDP_CSUM_OFF..l4 + UDP_CSUM_OFF + 2].copy_from_slice(&c.to_be_bytes());
        }
        emit(scratch);
    }
    Ok(count)
}

/// How to write the packets at the start of a [`coalesce`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesced {
    /// packets merged (1: write the first packet alone)
    pub count: usize,
    /// the header to write in front
    pub hdr: VnetHdr,
    /// for packets 2..=count, write only the bytes from here on (their payload)
    pub payload_at: usize,
}

/// The fields that must match for two segments to be merged, and where the payload starts.
#[derive(Debug, Clone, Copy)]
struct TcpSeg {
    v4: bool,
    iphl: usize,
    thl: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// Parses a candidate segment: plain IPv4 (no options, not a fragment) or IPv6 without extension
/// headers, TCP with only ACK (and PSH) set, some payload, lengths consistent, both checksums valid.
fn tcp_candidate(p: &[u8]) -> Option<(TcpSeg, IpInfo)> {
    let info = parse_ip(p)?;
    if info.proto != PROTO_TCP {
        return None;
    }
    let v4 = matches!(info.ip, Ip::V4 { .. });
    if v4 {
        if info.hlen != 20 || usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
            return None;
        }
        if csum_fold(csum_add(0, &p[..20])) != 0xffff {
            return None;
        }
    } else if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
        return None;
    }
    let l4 = info.hlen;
    let thl = usize::from(*p.get(l4 + 12)? >> 4) * 4;
    if thl < 20 || p.len() <= l4 + thl {
        return None;
    }
    let flags = p[l4 + 13];
    if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    let seg_len = p.len() - l4;
    if csum_fold(csum_add(pseudo(&info.ip, PROTO_TCP, seg_len), &p[l4..])) != 0xffff {
        return None;
    }
    let seq = u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]);
    Some((
        TcpSeg {
            v4,
            iphl: l4,
            thl,
            seq,
            flags,
            payload: p.len() - l4 - thl,
        },
        info,
    ))
}

/// Whether `q` continues `p`'s flow header-wise: IP header equal except identification, length and
/// checksum (IPv4) or length (IPv6); TCP header equal except sequence number, flags and checksum.
fn same_flow(p: &[u8], q: &[u8], s: &TcpSeg) -> bool {
    let (l4, thl) = (s.iphl, s.thl);
    if q.len() <= l4 + thl {
        return false;
    }
    let ip_same = if s.v4 {
        // version/IHL, TOS | flags/fragment, TTL, protocol | addresses
        p[0..2] == q[0..2] && p[6..10] == q[6..10] && p[12..20] == q[12..20]
    } else {
        // version, traffic class, flow label | next header, hop limit, addresses
        p[0..4] == q[0..4] && p[6..40] == q[6..40]
    };
    // ports | ACK number, data offset | window | urgent pointer, options
    ip_same
        && p[l4..l4 + 4] == q[l4..l4 + 4]
        && p[l4 + 8..l4 + 13] == q[l4 + 8..l4 + 13]
        && p[l4 + 14..l4 + 16] == q[l4 + 14..l4 + 16]
        && p[l4 + 18..l4 + thl] == q[l4 + 18..l4 + thl]
}

/// Decides how to write `pkts[0]`: alone (plain header), or merged with the following in-order
/// segments of its TCP flow into one super-packet — then `pkts[0]`'s IP and TCP headers are rewritten
/// in place for the merged length (TCP checksum left partial, as [`F_NEEDS_CSUM`] asks the kernel to
/// treat it) and the caller writes `hdr`, `pkts[0]`, then `pkts[i][payload_at..]` for `i in 1..count`.
pub fn coalesce<T: AsRef<[u8]> + AsMut<[u8]>>(pkts: &mut [T]) -> Coalesced {
    let plain = Coalesced {
        count: 1,
        hdr: VnetHdr::default(),
        payload_at: 0,
    };
    let Some(first) = pkts.first() else {
        return Coalesced { count: 0, ..plain };
    };
    let Some((s, info)) = tcp_candidate(first.as_ref()) else {
        return plain;
    };
    if s.flags & TCP_PSH != 0 {
        return plain;
    }
    let hdrs = s.iphl + s.thl;
    let mss = s.payload;
    let mut total = first.as_ref().len();
    let mut next_seq = s.seq.wrapping_add(u32::try_from(mss).unwrap_or(u32::MAX));
    let mut count = 1;
    let mut last_psh = false;
    while count < pkts.len() && count < MAX_COALESCE {
        let q = pkts[count].as_ref();
        let Some((qs, _)) = tcp_candidate(q) else {
            break;
        };
        if qs.thl != s.thl
            || qs.iphl != s.iphl
            || qs.seq != next_seq
            || qs.payload > mss
            || total + qs.payload > MAX_IP_LEN
            || !same_flow(first.as_ref(), q, &s)
        {
            break;
        }
        total += qs.payload;
        next_seq = next_seq.wrapping_add(u32::try_from(qs.payload).unwrap_or(u32::MAX));
        count += 1;
        last_psh = qs.flags & TCP_PSH != 0;
        if last_psh || qs.payload < mss {
            break;
        }
    }
    if count == 1 {
        return plain;
    }
    let p = pkts[0].as_mut();
    set_ip_len(&mut p[..s.iphl], s.v4, total);
    let l4 = s.iphl;
    if last_psh {
        p[l4 + 13] |= TCP_PSH;
    }
    let tcp_len = total - l4;
    let partial = csum_fold(pseudo(&info.ip, PROTO_TCP, tcp_len));
    p[l4 + TCP_CSUM_OFF..l4 + TCP_CSUM_OFF + 2].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if s.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: u16::try_from(hdrs).unwrap_or(u16::MAX),
        gso_size: u16::try_from(mss).unwrap_or(u16::MAX),
        csum_start: u16::try_from(l4).unwrap_or(u16::MAX),
        csum_offset: TCP_CSUM_OFF as u16,
    };
    Coalesced {
        count,
        hdr,
        payload_at: hdrs,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TCP_SYN: u8 = 0x02;

    /// RFC 1071 word by word, the definition [`csum_add`] must agree with.
    fn csum_reference(acc: u64, data: &[u8]) -> u64 {
        let mut acc = acc;
        for p in data.chunks(2) {
            acc += u64::from(u16::from_be_bytes([p[0], p.get(1).copied().unwrap_or(0)]));
        }
        acc
    }

    proptest! {
        #[test]
        fn csum_add_agrees_with_the_word_by_word_sum(
            acc in 0u64..(1 << 40),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            split in 0usize..150,
        ) {
            prop_assert_eq!(csum_fold(csum_add(acc, &data)), csum_fold(csum_reference(acc, &data)));
            // chained at an even offset, as the callers do (pseudo-header, then header, then data)
            let at = (split * 2).min(data.len() & !1);
            let chained = csum_add(csum_add(acc, &data[..at]), &data[at..]);
            prop_assert_eq!(csum_fold(chained), csum_fold(csum_reference(acc, &data)));
        }
    }

    #[test]
    fn csum_add_edge_values() {
        for data in [
            vec![],
            vec![0u8; 64],
            vec![0xff; 64],
            vec![0xff; 63],
            vec![0xff, 0xff],
            vec![0x12],
            (0..=255u8).collect::<Vec<_>>(),
            (0..=254u8).rev().collect::<Vec<_>>(),
        ] {
            for acc in [0u64, 1, 0xffff, 0xfffe_ffff] {
                assert_eq!(
                    csum_fold(csum_add(acc, &data)),
                    csum_fold(csum_reference(acc, &data)),
                    "{acc:#x} {data:?}"
                );
            }
        }
    }

    /// Builds a TCP/IPv4 or IPv6 packet with valid checksums.
    fn tcp_pkt(v6: bool, seq: u32, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
        let thl = 20 + opts.len();
        let mut p = Vec::new();
        let ip = if v6 {
            p.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, PROTO_TCP, 64]);
            p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
            p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
            Ip::V6 {
                src: "fd00::1".parse().unwrap(),
                dst: "fd00::2".parse().unwrap(),
            }
        } else {
            p.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, PROTO_TCP, 0, 0]);
            p.extend_from_slice(&[10, 8, 0, 1, 10, 8, 0, 2]);
            Ip::V4 {
                src: Ipv4Addr::new(10, 8, 0, 1),
                dst: Ipv4Addr::new(10, 8, 0, 2),
            }
        };
        let l4 = p.len();
        p.extend_from_slice(&5201u16.to_be_bytes());
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&777u32.to_be_bytes());
        p.push(((thl / 4) as u8) << 4);
        p.push(flags);
        p.extend_from_slice(&[0x01, 0x00, 0, 0, 0, 0]);
        p.extend_from_slice(opts);
        p.extend_from_slice(payload);
        let total = p.len();
        set_ip_len(&mut p[..l4], !v6, total);
        let c = csum_finish(csum_add(pseudo(&ip, PROTO_TCP, total - l4), &p[l4..]));
        p[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn valid_tcp(p: &[u8]) -> bool {
        tcp_candidate(p).is_some()
    }

    fn udp_pkt(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, PROTO_UDP, 0, 0, 10, 8, 0, 1, 10, 8, 0, 2,
        ];
        p.extend_from_slice(&53u16.to_be_bytes());
        p.extend_from_slice(&5353u16.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(payload);
        let total = p.len();
        set_ip_len(&mut p[..20], true, total);
        p[24..26].copy_from_slice(&u16::try_from(total - 20).unwrap().to_be_bytes());
        p
    }

    fn udp_ok(p: &[u8]) -> bool {
        let ip = parse_ip(p).unwrap();
        csum_fold(csum_add(0, &p[..20])) == 0xffff
            && csum_fold(csum_add(pseudo(&ip.ip, PROTO_UDP, p.len() - 20), &p[20..])) == 0xffff
            && usize::from(u16::from_be_bytes([p[24], p[25]])) == p.len() - 20
    }

    #[test]
    fn header_round_trip_and_short() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.to_bytes()).unwrap(), h);
        assert_eq!(VnetHdr::parse(&[0; 9]), Err(OffloadError::ShortHeader(9)));
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(csum_fold(csum_add(0, &d)), 0xddf2);
        // odd length pads a zero byte
        assert_eq!(csum_fold(csum_add(0, &[0xab])), 0xab00);
        assert_eq!(
            csum_fold(csum_add(0, &d[..5])),
            csum_fold(csum_add(0, &[0, 1, 0xf2, 3, 0xf4, 0]))
        );
    }

    #[test]
    fn plain_packet_passes_through() {
        let p = tcp_pkt(false, 1, TCP_ACK, b"hello", &[]);
        let mut out = Vec::new();
        let mut s = Vec::new();
        let n = segment(&p, &VnetHdr::default(), &mut s, |x| out.push(x.to_vec())).unwrap();
        assert_eq!((n, out), (1, vec![p]));
    }

    #[test]
    fn partial_checksum_is_completed() {
        let good = tcp_pkt(false, 1, TCP_ACK, b"some payload!", &[]);
        // what the kernel hands over with CHECKSUM_PARTIAL: the pseudo-header sum in the field
        let mut partial = good.clone();
        let ps = csum_fold(pseudo(
            &Ip::V4 {
                src: Ipv4Addr::new(10, 8, 0, 1),
                dst: Ipv4Addr::new(10, 8, 0, 2),
            },
            PROTO_TCP,
            good.len() - 20,
        ));
        partial[36..38].copy_from_slice(&ps.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut out = Vec::new();
        segment(&partial, &h, &mut Vec::new(), |x| out.push(x.to_vec())).unwrap();
        assert_eq!(out, vec![good]);
        let bad = VnetHdr {
            csum_start: 200,
            ..h
        };
        assert!(matches!(
            segment(&partial, &bad, &mut Vec::new(), |_| {}),
            Err(OffloadError::ChecksumOffsets { .. })
        ));
    }

    fn tso(v6: bool, payload_len: usize, mss: usize, flags: u8) -> (Vec<u8>, VnetHdr) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 % 251) as u8).collect();
        let p = tcp_pkt(
            v6,
            1000,
            flags,
            &payload,
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        );
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: if v6 { 72 } else { 52 },
            gso_size: mss as u16,
            csum_start: if v6 { 40 } else { 20 },
            csum_offset: 16,
        };
        (p, h)
    }

    #[test]
    fn tso_splits_into_valid_in_order_segments() {
        for v6 in [false, true] {
            let (p, h) = tso(v6, 10_000, 1448, TCP_ACK | TCP_PSH | TCP_FIN);
            let mut out = Vec::new();
            let n = segment(&p, &h, &mut Vec::new(), |x| out.push(x.to_vec())).unwrap();
            assert_eq!(n, 7);
            assert_eq!(out.len(), 7);
            let l4 = if v6 { 40 } else { 20 };
            let hdrs = l4 + 32;
            let mut seq = 1000u32;
            let mut joined = Vec::new();
            for (i, s) in out.iter().enumerate() {
                let ip = parse_ip(s).unwrap();
                // every segment has valid checksums and lengths
                let seg_len = s.len() - l4;
                assert_eq!(
                    csum_fold(csum_add(pseudo(&ip.ip, PROTO_TCP, seg_len), &s[l4..])),
                    0xffff
                );
                if v6 {
                    assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
                } else {
                    assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
                    assert_eq!(csum_fold(csum_add(0, &s[..20])), 0xffff);
                    assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
                }
                assert_eq!(
                    u32::from_be_bytes([s[l4 + 4], s[l4 + 5], s[l4 + 6], s[l4 + 7]]),
                    seq
                );
                let last = i == 6;
                assert_eq!(s[l4 + 13] & (TCP_FIN | TCP_PSH) != 0, last);
                assert!(s.len() - hdrs <= 1448);
                seq += (s.len() - hdrs) as u32;
                joined.extend_from_slice(&s[hdrs..]);
            }
            assert_eq!(joined, p[hdrs..].to_vec(), "payload preserved in order");
        }
    }

    #[test]
    fn ecn_cwr_only_on_first_segment() {
        let (p, mut h) = tso(false, 3000, 1000, TCP_ACK | TCP_CWR);
        h.gso_type |= GSO_ECN;
        let mut flags = Vec::new();
        segment(&p, &h, &mut Vec::new(), |x| flags.push(x[33])).unwrap();
        assert_eq!(flags, vec![TCP_ACK | TCP_CWR, TCP_ACK, TCP_ACK]);
    }

    #[test]
    fn uso_splits_udp() {
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let p = udp_pkt(&payload);
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 28,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 6,
        };
        let mut out = Vec::new();
        assert_eq!(
            segment(&p, &h, &mut Vec::new(), |x| out.push(x.to_vec())).unwrap(),
            3
        );
        assert_eq!(
            out.iter().map(|s| s.len() - 28).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        assert!(out.iter().all(|s| udp_ok(s)));
        let joined: Vec<u8> = out.iter().flat_map(|s| s[28..].to_vec()).collect();
        assert_eq!(joined, payload);
    }

    #[test]
    fn malformed_super_packets_are_errors() {
        let (p, h) = tso(false, 3000, 1000, TCP_ACK);
        for cut in [0, 1, 19, 20, 25, 33, 40, 51] {
            assert!(
                segment(&p[..cut], &h, &mut Vec::new(), |_| {}).is_err(),
                "cut {cut}"
            );
        }
        let zero = VnetHdr { gso_size: 0, ..h };
        assert_eq!(
            segment(&p, &zero, &mut Vec::new(), |_| {}),
            Err(OffloadError::ZeroSegmentSize)
        );
        let ufo = VnetHdr {
            gso_type: GSO_UDP,
            ..h
        };
        assert_eq!(
            segment(&p, &ufo, &mut Vec::new(), |_| {}),
            Err(OffloadError::UnsupportedGso(GSO_UDP))
        );
        let v6_on_v4 = VnetHdr {
            gso_type: GSO_TCPV6,
            ..h
        };
        assert!(segment(&p, &v6_on_v4, &mut Vec::new(), |_| {}).is_err());
        let udp_as_tcp = udp_pkt(&[0; 100]);
        assert!(segment(&udp_as_tcp, &h, &mut Vec::new(), |_| {}).is_err());
        // a bad data offset
        let mut q = p.clone();
        q[32] = 0x10;
        assert!(segment(&q, &h, &mut Vec::new(), |_| {}).is_err());
    }

    fn run_of(v6: bool, n: usize, mss: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let payload: Vec<u8> = (0..mss).map(|j| ((i * mss + j) % 253) as u8).collect();
                tcp_pkt(
                    v6,
                    5000 + (i * mss) as u32,
                    TCP_ACK,
                    &payload,
                    &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3],
                )
            })
            .collect()
    }

    /// Writes a coalesced group the way the driver does and returns the bytes after the header.
    fn assemble(pkts: &[Vec<u8>], c: &Coalesced) -> Vec<u8> {
        let mut b = pkts[0].clone();
        for p in &pkts[1..c.count] {
            b.extend_from_slice(&p[c.payload_at..]);
        }
        b
    }

    #[test]
    fn coalesces_an_in_order_run_and_the_result_segments_back() {
        for v6 in [false, true] {
            let orig = run_of(v6, 10, 1000);
            let mut pkts = orig.clone();
            let c = coalesce(&mut pkts);
            assert_eq!(c.count, 10);
            assert_eq!(c.hdr.gso_size, 1000);
            assert_eq!(c.hdr.flags, F_NEEDS_CSUM);
            let sup = assemble(&pkts, &c);
            // the kernel's view: complete the partial checksum and segment again
            let mut back = Vec::new();
            segment(&sup, &c.hdr, &mut Vec::new(), |x| back.push(x.to_vec())).unwrap();
            assert_eq!(back.len(), 10);
            for (b, o) in back.iter().zip(&orig) {
                let l4 = if v6 { 40 } else { 20 };
                // same payload, sequence, ports; valid checksums
                assert_eq!(b[l4 + 32..], o[l4 + 32..]);
                assert_eq!(b[l4..l4 + 8], o[l4..l4 + 8]);
                assert!(valid_tcp(b));
            }
        }
    }

    #[test]
    fn coalescing_stops_at_gaps_flags_short_segments_and_bad_checksums() {
        // a gap in sequence numbers
        let mut pkts = run_of(false, 4, 500);
        pkts.remove(2);
        assert_eq!(coalesce(&mut pkts).count, 2);
        // PSH on the third: included, then the group ends with PSH set
        let mut pkts = run_of(false, 5, 500);
        pkts[2][33] |= TCP_PSH;
        // re-checksum the modified packet
        pkts[2][36..38].copy_from_slice(&[0, 0]);
        let ip = parse_ip(&pkts[2]).unwrap();
        let sum = csum_finish(csum_add(
            pseudo(&ip.ip, PROTO_TCP, pkts[2].len() - 20),
            &pkts[2][20..],
        ));
        pkts[2][36..38].copy_from_slice(&sum.to_be_bytes());
        let r = coalesce(&mut pkts);
        assert_eq!(r.count, 3);
        assert_ne!(pkts[0][33] & TCP_PSH, 0);
        // a shorter segment ends the group (included)
        let mut pkts = run_of(false, 3, 500);
        let short = tcp_pkt(
            false,
            5000 + 1500,
            TCP_ACK,
            &[1; 100],
            &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3],
        );
        pkts.push(short);
        pkts.extend(run_of(false, 1, 500));
        assert_eq!(coalesce(&mut pkts).count, 4);
        // a corrupt checksum is never merged
        let mut pkts = run_of(false, 4, 500);
        pkts[1][60] ^= 0xff;
        assert_eq!(coalesce(&mut pkts).count, 1);
        // different options (timestamp) end the group
        let mut pkts = run_of(false, 2, 500);
        pkts.push(tcp_pkt(
            false,
            6000,
            TCP_ACK,
            &[0; 500],
            &[1, 1, 8, 10, 0, 0, 0, 10, 0, 0, 0, 3],
        ));
        assert_eq!(coalesce(&mut pkts).count, 2);
        // SYN, FIN, pure ACKs and non-TCP are written alone
        let mut syn = vec![
            tcp_pkt(false, 1, TCP_SYN, &[], &[]),
            tcp_pkt(false, 2, TCP_ACK, &[1], &[]),
        ];
        assert_eq!(coalesce(&mut syn).count, 1);
        let mut acks = vec![
            tcp_pkt(false, 1, TCP_ACK, &[], &[]),
            tcp_pkt(false, 1, TCP_ACK, &[], &[]),
        ];
        assert_eq!(coalesce(&mut acks).count, 1);
        let mut fin = vec![
            tcp_pkt(false, 1, TCP_ACK | TCP_FIN, &[1], &[]),
            tcp_pkt(false, 2, TCP_ACK, &[1], &[]),
        ];
        assert_eq!(coalesce(&mut fin).count, 1);
        let mut udp = vec![udp_pkt(&[1; 10]), udp_pkt(&[1; 10])];
        assert_eq!(coalesce(&mut udp).count, 1);
        let mut none: Vec<Vec<u8>> = Vec::new();
        assert_eq!(coalesce(&mut none).count, 0);
    }

    #[test]
    fn coalescing_is_bounded_by_64k_and_64_packets() {
        let mut pkts = run_of(false, 80, 1400);
        let c = coalesce(&mut pkts);
        assert!(c.count < 80);
        let total: usize = 52 + c.count * 1400;
        assert!(total <= MAX_IP_LEN, "{total}");
        let mut small = run_of(false, 80, 100);
        assert_eq!(coalesce(&mut small).count, MAX_COALESCE);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..3000 {
            let len = (rnd() % 200) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            if len > 0 && rnd() % 2 == 0 {
                b[0] = if rnd() % 2 == 0 { 0x45 } else { 0x60 };
            }
            if let Ok(h) = VnetHdr::parse(&b) {
                let _ = segment(&b[VNET_HDR_LEN.min(b.len())..], &h, &mut Vec::new(), |_| {});
            }
            let h = VnetHdr {
                flags: (rnd() % 4) as u8,
                gso_type: [0, 1, 3, 4, 5, 0x81][(rnd() % 6) as usize],
                hdr_len: 0,
                gso_size: (rnd() % 100) as u16,
                csum_start: (rnd() % 64) as u16,
                csum_offset: (rnd() % 20) as u16,
            };
            let _ = segment(&b, &h, &mut Vec::new(), |_| {});
            let mut v = vec![b.clone(), b.clone(), b];
            let _ = coalesce(&mut v);
        }
    }
}
