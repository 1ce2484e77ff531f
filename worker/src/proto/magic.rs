//! Magic payloads inside decrypted data packets (keepalive ping, OCC, exit notification) and the
//! compression framing byte(s) in front of every payload.
//!
//! Digest §7.6, §7.7 and OpenVPN `ping.c`, `occ.c`, `compstub.c`, `multi.c`
//! (`multi_client_connect_compress_migrate`).
//!
//! # API
//!
//! ```text
//! // receive path, after DataKey::decrypt:
//! let range = framing.decode(&mut buf, range)?;        // strip framing; Err(Compressed) => drop+count
//! match classify(&buf[range]) { Magic::Ping => .., Magic::Occ(OccMessage::Exit) => .., Magic::None => tun }
//! // send path, before DataKey::encrypt (payload in buf[range], 2 bytes headroom / 1 byte tailroom):
//! let range = framing.encode(&mut buf, range)?;
//! PING_PAYLOAD, occ_exit(), occ_reply(options, &mut out)?, occ_mtu_reply(recv, send)
//! // per client, at connect time (server runs in "compress migrate" mode: never compresses):
//! let framing = CompressionFraming::for_client(km2.uses_compression(), peer_info.comp_stub_v2());
//! framing.push_option() -> Option<&'static str>    // "compress stub-v2" | "comp-lzo no" | None
//! ```
//!
//! Framing modes: `None` (default 2.6 client: raw IP packets), `StubV2` (`compress stub-v2`: raw, a
//! leading 0x50 is escaped as `50 00`), `StubV1` (`comp-lzo no`: `FA` + packet), `StubV1Swap`
//! (`compress`/`compress stub`: `FB` + packet[1..] + packet[0]). Compressed packets (0x66, 0x69,
//! `50 01..03`) are never produced and are rejected with [`MagicError::Compressed`] on receive so the
//! caller can drop and count them; an unexpected marker gives [`MagicError::BadMarker`] (OpenVPN drops
//! those too). Empty payloads pass through unchanged in every mode, like OpenVPN.
//!
//! Invariants: framing works in place inside the caller's buffer (no allocation); no input panics.

use std::ops::Range;

use thiserror::Error;

/// Keepalive ping payload (exactly these 16 bytes).
pub const PING_PAYLOAD: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];
/// OCC message prefix.
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];
/// OCC opcode: request options string.
pub const OCC_REQUEST: u8 = 0;
/// OCC opcode: options string reply.
pub const OCC_REPLY: u8 = 1;
/// OCC opcode: MTU load request.
pub const OCC_MTU_LOAD_REQUEST: u8 = 2;
/// OCC opcode: MTU load.
pub const OCC_MTU_LOAD: u8 = 3;
/// OCC opcode: MTU request.
pub const OCC_MTU_REQUEST: u8 = 4;
/// OCC opcode: MTU reply.
pub const OCC_MTU_REPLY: u8 = 5;
/// OCC opcode: peer exiting.
pub const OCC_EXIT: u8 = 6;

/// `comp-lzo`/`compress` v1 "not compressed" byte.
pub const NO_COMPRESS_BYTE: u8 = 0xFA;
/// v1 "not compressed" byte with first/last byte swap.
pub const NO_COMPRESS_BYTE_SWAP: u8 = 0xFB;
/// v1 LZO-compressed marker.
pub const LZO_COMPRESS_BYTE: u8 = 0x66;
/// v1 LZ4-compressed marker.
pub const LZ4_COMPRESS_BYTE: u8 = 0x69;
/// v2 indicator byte.
pub const COMP_V2_INDICATOR: u8 = 0x50;
/// v2 "uncompressed" byte after the indicator.
pub const COMP_V2_UNCOMPRESSED: u8 = 0x00;

/// Errors of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MagicError {
    /// The peer sent an actually compressed packet (we never decompress): drop and count it.
    #[error("compressed data packet (marker {0:#04x}) dropped: compression is not supported")]
    Compressed(u8),
    /// The framing byte is not what the negotiated mode requires: drop.
    #[error("unexpected compression framing byte {0:#04x}")]
    BadMarker(u8),
    /// The caller's buffer lacks the headroom/tailroom needed or the range is invalid.
    #[error("framing needs {need} more bytes of buffer space around the payload")]
    NoRoom {
        /// Bytes missing.
        need: usize,
    },
    /// An OCC options string to send contains a NUL byte.
    #[error("OCC options string contains a NUL byte")]
    EmbeddedNul,
}

/// Meaning of a decrypted, de-framed data payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic<'a> {
    /// Keepalive ping: never written to the tun.
    Ping,
    /// OCC message: never written to the tun.
    Occ(OccMessage<'a>),
    /// Ordinary tunnel packet.
    None,
}

/// A parsed OCC message (`occ.c:process_received_occ_msg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OccMessage<'a> {
    /// OCC_REQUEST: peer asks for our options string.
    Request,
    /// OCC_REPLY: the peer's options string (up to the first NUL).
    Reply(&'a [u8]),
    /// OCC_MTU_LOAD_REQUEST with the requested size (`None` if missing).
    MtuLoadRequest(Option<u16>),
    /// OCC_MTU_LOAD (filler).
    MtuLoad,
    /// OCC_MTU_REQUEST.
    MtuRequest,
    /// OCC_MTU_REPLY (`None` fields if missing).
    MtuReply {
        /// Peer's max receive size.
        max_recv: Option<u16>,
        /// Peer's max send size.
        max_send: Option<u16>,
    },
    /// OCC_EXIT: the peer is exiting; free the session.
    Exit,
    /// Unknown opcode or no opcode byte (OpenVPN ignores these).
    Unknown(Option<u8>),
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Classifies a payload: exactly [`PING_PAYLOAD`] is a ping; anything starting with [`OCC_MAGIC`] is
/// OCC; everything else is tunnel traffic.
pub fn classify(payload: &[u8]) -> Magic<'_> {
    if payload == PING_PAYLOAD {
        return Magic::Ping;
    }
    let Some(body) = payload.strip_prefix(&OCC_MAGIC[..]) else {
        return Magic::None;
    };
    let Some((&op, rest)) = body.split_first() else {
        return Magic::Occ(OccMessage::Unknown(None));
    };
    let msg = match op {
        OCC_REQUEST => OccMessage::Request,
        OCC_REPLY => {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            OccMessage::Reply(&rest[..end])
        }
        OCC_MTU_LOAD_REQUEST => OccMessage::MtuLoadRequest(read_u16(rest, 0)),
        OCC_MTU_LOAD => OccMessage::MtuLoad,
        OCC_MTU_REQUEST => OccMessage::MtuRequest,
        OCC_MTU_REPLY => OccMessage::MtuReply {
            max_recv: read_u16(rest, 0),
            max_send: read_u16(rest, 2),
        },
        OCC_EXIT => OccMessage::Exit,
        other => OccMessage::Unknown(Some(other)),
    };
    Magic::Occ(msg)
}

/// OCC_EXIT payload (17 bytes).
pub fn occ_exit() -> [u8; 17] {
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(&OCC_MAGIC);
    out[16] = OCC_EXIT;
    out
}

/// OCC_MTU_REPLY payload (21 bytes).
pub fn occ_mtu_reply(max_recv: u16, max_send: u16) -> [u8; 21] {
    let mut out = [0u8; 21];
    out[..16].copy_from_slice(&OCC_MAGIC);
    out[16] = OCC_MTU_REPLY;
    out[17..19].copy_from_slice(&max_recv.to_be_bytes());
    out[19..21].copy_from_slice(&max_send.to_be_bytes());
    out
}

/// Appends an OCC_REPLY payload (magic, opcode, NUL-terminated options string) to `out`.
pub fn occ_reply(options: &str, out: &mut Vec<u8>) -> Result<(), MagicError> {
    if options.as_bytes().contains(&0) {
        return Err(MagicError::EmbeddedNul);
    }
    out.extend_from_slice(&OCC_MAGIC);
    out.push(OCC_REPLY);
    out.extend_from_slice(options.as_bytes());
    out.push(0);
    Ok(())
}

/// Compression framing used with one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CompressionFraming {
    /// No framing (default 2.6 clients).
    #[default]
    None,
    /// `compress stub-v2`: raw packets, leading 0x50 escaped.
    StubV2,
    /// `comp-lzo no` / LZO stub: 0xFA prefix.
    StubV1,
    /// `compress` / `compress stub`: 0xFB + first byte moved to the end.
    StubV1Swap,
}

impl CompressionFraming {
    /// What a 2.6 server in `compress migrate` mode does: clients whose OCC string shows `,comp-lzo,`
    /// get `compress stub-v2` if they announce IV_COMP_STUBv2=1, else `comp-lzo no`; everyone else gets
    /// no framing.
    pub fn for_client(occ_uses_compression: bool, iv_comp_stub_v2: bool) -> Self {
        match (occ_uses_compression, iv_comp_stub_v2) {
            (false, _) => CompressionFraming::None,
            (true, true) => CompressionFraming::StubV2,
            (true, false) => CompressionFraming::StubV1,
        }
    }

    /// The option to push for this mode (appended to the global push list, before per-client items).
    pub fn push_option(self) -> Option<&'static str> {
        match self {
            CompressionFraming::None => None,
            CompressionFraming::StubV2 => Some("compress stub-v2"),
            CompressionFraming::StubV1 => Some("comp-lzo no"),
            CompressionFraming::StubV1Swap => Some("compress stub"),
        }
    }

    /// Bytes [`CompressionFraming::encode`] may need in front of the payload.
    pub fn headroom(self) -> usize {
        match self {
            CompressionFraming::None | CompressionFraming::StubV1Swap => 0,
            CompressionFraming::StubV1 => 1,
            CompressionFraming::StubV2 => 2,
        }
    }

    /// Bytes [`CompressionFraming::encode`] may need after the payload.
    pub fn tailroom(self) -> usize {
        match self {
            CompressionFraming::StubV1Swap => 1,
            _ => 0,
        }
    }

    /// Removes the framing from `buf[range]` (in place) and returns the payload's range.
    pub fn decode(self, buf: &mut [u8], range: Range<usize>) -> Result<Range<usize>, MagicError> {
        if range.start > range.end || range.end > buf.len() {
            return Err(MagicError::NoRoom {
                need: range.end.saturating_sub(buf.len()),
            });
        }
        if range.is_empty() {
            return Ok(range);
        }
        let first = buf[range.start];
        match self {
            CompressionFraming::None => Ok(range),
            CompressionFraming::StubV1 => match first {
                NO_COMPRESS_BYTE => Ok(range.start + 1..range.end),
                LZO_COMPRESS_BYTE | LZ4_COMPRESS_BYTE => Err(MagicError::Compressed(first)),
                other => Err(MagicError::BadMarker(other)),
            },
            CompressionFraming::StubV1Swap => match first {
                NO_COMPRESS_BYTE_SWAP => {
                    let last = range.end - 1;
                    buf[range.start] = buf[last];
                    Ok(range.start..last)
                }
                LZO_COMPRESS_BYTE | LZ4_COMPRESS_BYTE => Err(MagicError::Compressed(first)),
                other => Err(MagicError::BadMarker(other)),
            },
            CompressionFraming::StubV2 => {
                if first != COMP_V2_INDICATOR {
                    return Ok(range);
                }
                match buf.get(range.start + 1).filter(|_| range.len() >= 2) {
                    None => Ok(range.end..range.end),
                    Some(&COMP_V2_UNCOMPRESSED) => Ok(range.start + 2..range.end),
                    Some(&b @ 1..=3) => Err(MagicError::Compressed(b)),
                    Some(&b) => Err(MagicError::BadMarker(b)),
                }
            }
        }
    }

    /// Adds the framing around `buf[range]` (in place) and returns the framed range. Needs
    /// [`CompressionFraming::headroom`] bytes before and [`CompressionFraming::tailroom`] after.
    pub fn encode(self, buf: &mut [u8], range: Range<usize>) -> Result<Range<usize>, MagicError> {
        if range.start > range.end || range.end > buf.len() {
            return Err(MagicError::NoRoom {
                need: range.end.saturating_sub(buf.len()),
            });
        }
        if range.is_empty() {
            return Ok(range);
        }
        match self {
            CompressionFraming::None => Ok(range),
            CompressionFraming::StubV1 => {
                let start = range
                    .start
                    .checked_sub(1)
                    .ok_or(MagicError::NoRoom { need: 1 })?;
                buf[start] = NO_COMPRESS_BYTE;
                Ok(start..range.end)
            }
            CompressionFraming::StubV1Swap => {
                if range.end >= buf.len() {
                    return Err(MagicError::NoRoom { need: 1 });
                }
                buf[range.end] = buf[range.start];
                buf[range.start] = NO_COMPRESS_BYTE_SWAP;
                Ok(range.start..range.end + 1)
            }
            CompressionFraming::StubV2 => {
                if buf[range.start] != COMP_V2_INDICATOR {
                    return Ok(range);
                }
                let start = range
                    .start
                    .checked_sub(2)
                    .ok_or(MagicError::NoRoom { need: 2 })?;
                buf[start] = COMP_V2_INDICATOR;
                buf[start + 1] = COMP_V2_UNCOMPRESSED;
                Ok(start..range.end)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ALL: [CompressionFraming; 4] = [
        CompressionFraming::None,
        CompressionFraming::StubV2,
        CompressionFraming::StubV1,
        CompressionFraming::StubV1Swap,
    ];

    #[test]
    fn ping_and_occ_classification() {
        assert_eq!(classify(&PING_PAYLOAD), Magic::Ping);
        let mut longer = PING_PAYLOAD.to_vec();
        longer.push(0);
        assert_eq!(classify(&longer), Magic::None);
        assert_eq!(classify(&occ_exit()), Magic::Occ(OccMessage::Exit));
        assert_eq!(classify(&OCC_MAGIC), Magic::Occ(OccMessage::Unknown(None)));
        assert_eq!(
            classify(&occ_mtu_reply(1400, 1300)),
            Magic::Occ(OccMessage::MtuReply {
                max_recv: Some(1400),
                max_send: Some(1300)
            })
        );
        let mut short = OCC_MAGIC.to_vec();
        short.extend([OCC_MTU_REPLY, 5]);
        assert_eq!(
            classify(&short),
            Magic::Occ(OccMessage::MtuReply {
                max_recv: None,
                max_send: None
            })
        );
        let mut r = Vec::new();
        occ_reply("V4,dev-type tun", &mut r).unwrap();
        assert_eq!(
            classify(&r),
            Magic::Occ(OccMessage::Reply(b"V4,dev-type tun"))
        );
        assert!(occ_reply("a\0", &mut r).is_err());
        let mut req = OCC_MAGIC.to_vec();
        req.push(OCC_REQUEST);
        assert_eq!(classify(&req), Magic::Occ(OccMessage::Request));
        assert_eq!(classify(&[0x45, 0, 0, 20]), Magic::None);
        assert_eq!(classify(&[]), Magic::None);
    }

    #[test]
    fn migrate_decision() {
        assert_eq!(
            CompressionFraming::for_client(false, true),
            CompressionFraming::None
        );
        assert_eq!(
            CompressionFraming::for_client(true, true),
            CompressionFraming::StubV2
        );
        assert_eq!(
            CompressionFraming::for_client(true, false),
            CompressionFraming::StubV1
        );
        assert_eq!(
            CompressionFraming::StubV2.push_option(),
            Some("compress stub-v2")
        );
        assert_eq!(
            CompressionFraming::StubV1.push_option(),
            Some("comp-lzo no")
        );
        assert_eq!(CompressionFraming::None.push_option(), None);
    }

    #[test]
    fn wire_forms() {
        let ip = [0x45u8, 0x00, 0x00, 0x14, 0xaa];
        let mut buf = [0u8; 16];
        buf[4..9].copy_from_slice(&ip);
        let r = CompressionFraming::StubV1.encode(&mut buf, 4..9).unwrap();
        assert_eq!(&buf[r], &[0xfa, 0x45, 0x00, 0x00, 0x14, 0xaa]);

        let mut buf = [0u8; 16];
        buf[4..9].copy_from_slice(&ip);
        let r = CompressionFraming::StubV1Swap
            .encode(&mut buf, 4..9)
            .unwrap();
        assert_eq!(&buf[r], &[0xfb, 0x00, 0x00, 0x14, 0xaa, 0x45]);

        let mut buf = [0u8; 16];
        buf[4..9].copy_from_slice(&ip);
        let r = CompressionFraming::StubV2.encode(&mut buf, 4..9).unwrap();
        assert_eq!(&buf[r], &ip);
        buf[4] = 0x50;
        let r = CompressionFraming::StubV2.encode(&mut buf, 4..9).unwrap();
        assert_eq!(&buf[r], &[0x50, 0x00, 0x50, 0x00, 0x00, 0x14, 0xaa]);
    }

    #[test]
    fn roundtrip_all_modes() {
        for mode in ALL {
            for first in [0x45u8, 0x60, 0x50, 0xfa, 0xfb, 0x66] {
                let payload = [first, 1, 2, 3, 4, 5];
                let mut buf = [0u8; 32];
                buf[8..14].copy_from_slice(&payload);
                let r = mode.encode(&mut buf, 8..14).unwrap();
                let d = mode.decode(&mut buf, r).unwrap();
                assert_eq!(&buf[d], &payload, "{mode:?} {first:#x}");
            }
            // empty payloads pass through
            let mut buf = [0u8; 4];
            assert_eq!(mode.encode(&mut buf, 2..2).unwrap(), 2..2);
            assert_eq!(mode.decode(&mut buf, 2..2).unwrap(), 2..2);
        }
    }

    #[test]
    fn compressed_and_bad_markers() {
        let mut b = [0x66u8, 1, 2];
        assert_eq!(
            CompressionFraming::StubV1.decode(&mut b, 0..3),
            Err(MagicError::Compressed(0x66))
        );
        let mut b = [0x45u8, 1, 2];
        assert_eq!(
            CompressionFraming::StubV1.decode(&mut b, 0..3),
            Err(MagicError::BadMarker(0x45))
        );
        let mut b = [0x69u8, 1, 2];
        assert_eq!(
            CompressionFraming::StubV1Swap.decode(&mut b, 0..3),
            Err(MagicError::Compressed(0x69))
        );
        let mut b = [0x50u8, 0x01, 2];
        assert_eq!(
            CompressionFraming::StubV2.decode(&mut b, 0..3),
            Err(MagicError::Compressed(1))
        );
        let mut b = [0x50u8, 0x07, 2];
        assert_eq!(
            CompressionFraming::StubV2.decode(&mut b, 0..3),
            Err(MagicError::BadMarker(7))
        );
        let mut b = [0x50u8];
        assert_eq!(
            CompressionFraming::StubV2.decode(&mut b, 0..1).unwrap(),
            1..1
        );
        // no framing: a 0x66 packet is just data
        let mut b = [0x66u8, 1];
        assert_eq!(CompressionFraming::None.decode(&mut b, 0..2).unwrap(), 0..2);
    }

    #[test]
    fn room_checks() {
        let mut b = [0x45u8, 1, 2];
        assert_eq!(
            CompressionFraming::StubV1.encode(&mut b, 0..3),
            Err(MagicError::NoRoom { need: 1 })
        );
        assert_eq!(
            CompressionFraming::StubV1Swap.encode(&mut b, 0..3),
            Err(MagicError::NoRoom { need: 1 })
        );
        let mut b = [0x50u8, 1, 2];
        assert_eq!(
            CompressionFraming::StubV2.encode(&mut b, 0..3),
            Err(MagicError::NoRoom { need: 2 })
        );
        assert!(CompressionFraming::None.decode(&mut b, 2..9).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64), a in 0usize..70, b in 0usize..70) {
            let _ = classify(&bytes);
            for mode in ALL {
                let mut buf = bytes.clone();
                let _ = mode.decode(&mut buf, a..b);
                let mut buf = bytes.clone();
                let _ = mode.encode(&mut buf, a..b);
            }
        }
    }
}
