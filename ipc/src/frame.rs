//! The fixed frame header and the packet → message decoding pipeline.
//!
//! Wire layout of one packet (one `SOCK_SEQPACKET` datagram), all integers little endian:
//!
//! | offset | size | field                                            |
//! |--------|------|--------------------------------------------------|
//! | 0      | 4    | magic `b"BLWK"` ([`MAGIC`])                      |
//! | 4      | 2    | protocol version ([`PROTOCOL_VERSION`])          |
//! | 6      | 2    | message kind ([`Message::kind`])                 |
//! | 8      | 4    | body length in bytes                             |
//! | 12     | 2    | number of fds in the `SCM_RIGHTS` control message|
//! | 14     | 2    | reserved, must be 0                              |
//! | 16     | n    | body: the message, encoded by [`crate::codec`]   |
//!
//! API: [`Header`] (encode/parse, public so tests can craft malformed frames), [`ProtocolError`]
//! (every way an incoming packet can be wrong), [`decode_frame`] (the decoder, for fuzzing). Decoding order, each step fatal:
//! kernel flags (`MSG_TRUNC`, `MSG_CTRUNC`, foreign control messages) → header (length, magic,
//! version, reserved, body length, fd count vs. received) → body decode (limit, trailing bytes) →
//! kind cross-check → declared fd count vs. received → `validate()`.

use std::os::fd::OwnedFd;

use crate::codec::{self, CodecError};
use crate::message::{Message, Received};
use crate::sys::RawPacket;
use crate::validate::ValidationError;
use crate::{MAX_BODY_SIZE, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_SIZE, PROTOCOL_VERSION};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"BLWK";

/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;

/// The fixed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u16,
    /// Message kind.
    pub kind: u16,
    /// Body length in bytes.
    pub body_len: u32,
    /// Number of descriptors sent with the frame.
    pub fd_count: u16,
}

/// An incoming packet that violates the protocol. The channel that produced it should be
/// considered compromised or broken: the receiving side treats every variant as fatal for the
/// peer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The packet was longer than [`MAX_MESSAGE_SIZE`] (`MSG_TRUNC`).
    #[error("packet of {len} bytes exceeds the maximum of {MAX_MESSAGE_SIZE}")]
    Truncated {
        /// Its real length.
        len: usize,
    },
    /// The kernel truncated the control data (`MSG_CTRUNC`); descriptors were lost.
    #[error("control data truncated (MSG_CTRUNC)")]
    ControlTruncated,
    /// A control message other than `SCM_RIGHTS` arrived.
    #[error("unexpected control message level {level} type {cmsg_type}")]
    ForeignControlMessage {
        /// `cmsg_level`.
        level: i32,
        /// `cmsg_type`.
        cmsg_type: i32,
    },
    /// Shorter than the header.
    #[error("frame of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    ShortFrame {
        /// The frame length.
        len: usize,
    },
    /// Wrong magic.
    #[error("bad frame magic {found:02x?}")]
    BadMagic {
        /// What was found.
        found: [u8; 4],
    },
    /// A protocol version this side does not speak.
    #[error("unsupported protocol version {found} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
    },
    /// Reserved header bits were set.
    #[error("reserved header field is {value:#06x}, must be 0")]
    ReservedBits {
        /// The reserved field's value.
        value: u16,
    },
    /// The header's body length says more than [`MAX_BODY_SIZE`].
    #[error("header announces a {body_len}-byte body, maximum is {MAX_BODY_SIZE}")]
    Oversize {
        /// The announced length.
        body_len: u32,
    },
    /// The header's body length disagrees with the packet.
    #[error("header announces a {header}-byte body, packet holds {actual}")]
    BodyLengthMismatch {
        /// The announced length.
        header: u32,
        /// Bytes present after the header.
        actual: usize,
    },
    /// The header announces more descriptors than any message may carry.
    #[error("header announces {count} fds, maximum is {MAX_FDS_PER_MESSAGE}")]
    TooManyFds {
        /// The announced count.
        count: u16,
    },
    /// The header's fd count disagrees with the descriptors received.
    #[error("header announces {header} fds, {received} arrived")]
    HeaderFdCount {
        /// The announced count.
        header: u16,
        /// The count received.
        received: usize,
    },
    /// The body does not decode as this channel's message type.
    #[error("undecodable body for kind {kind:#06x}")]
    Body {
        /// The kind in the header.
        kind: u16,
        /// The codec error.
        #[source]
        source: CodecError,
    },
    /// The header's kind disagrees with the decoded message.
    #[error("header kind {header:#06x} but body decodes as {name} ({body:#06x})")]
    KindMismatch {
        /// Kind in the header.
        header: u16,
        /// Kind of the decoded message.
        body: u16,
        /// Name of the decoded message.
        name: &'static str,
    },
    /// The message declares a different number of descriptors than arrived.
    #[error("{name} declares {declared} fds, {received} arrived")]
    DeclaredFdCount {
        /// The message.
        name: &'static str,
        /// What the message declares.
        declared: usize,
        /// What arrived.
        received: usize,
    },
    /// The message's values failed [`Message::validate`].
    #[error("invalid {name}")]
    Invalid {
        /// The message.
        name: &'static str,
        /// Why.
        #[source]
        source: ValidationError,
    },
}

impl Header {
    /// The header for `body_len` bytes of body and `fd_count` descriptors of message `kind`, at
    /// this side's protocol version.
    pub fn new(kind: u16, body_len: u32, fd_count: u16) -> Self {
        Header {
            version: PROTOCOL_VERSION,
            kind,
            body_len,
            fd_count,
        }
    }

    /// The 16 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.kind.to_le_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out[12..14].copy_from_slice(&self.fd_count.to_le_bytes());
        // 14..16 reserved, zero
        out
    }

    /// Parse and check a header at the start of `frame` (magic, version, reserved bits, body
    /// length cap and agreement with the frame length, fd count cap).
    pub fn parse(frame: &[u8]) -> Result<Header, ProtocolError> {
        let Some(bytes) = frame.get(..HEADER_LEN) else {
            return Err(ProtocolError::ShortFrame { len: frame.len() });
        };
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic { found: magic });
        }
        let version = u16_at(4);
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion { found: version });
        }
        let reserved = u16_at(14);
        if reserved != 0 {
            return Err(ProtocolError::ReservedBits { value: reserved });
        }
        let body_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if body_len as usize > MAX_BODY_SIZE {
            return Err(ProtocolError::Oversize { body_len });
        }
        let actual = frame.len() - HEADER_LEN;
        if body_len as usize != actual {
            return Err(ProtocolError::BodyLengthMismatch {
                header: body_len,
                actual,
            });
        }
        let fd_count = u16_at(12);
        if fd_count as usize > MAX_FDS_PER_MESSAGE {
            return Err(ProtocolError::TooManyFds { count: fd_count });
        }
        Ok(Header {
            version,
            kind: u16_at(6),
            body_len,
            fd_count,
        })
    }
}

/// Build the packet for `body` (already encoded, at most [`MAX_BODY_SIZE`] bytes — the codec
/// limit guarantees it).
pub(crate) fn build_packet(kind: u16, fd_count: u16, body: &[u8]) -> Vec<u8> {
    // body.len() <= MAX_BODY_SIZE < u32::MAX, enforced by the codec's byte limit
    let header = Header::new(kind, body.len() as u32, fd_count).encode();
    let mut packet = Vec::with_capacity(HEADER_LEN + body.len());
    packet.extend_from_slice(&header);
    packet.extend_from_slice(body);
    packet
}

/// Turn one received packet into a checked message. `frame` is the packet's bytes (the whole
/// packet unless `raw.truncated`). On any error the descriptors in `raw` are dropped (closed).
pub(crate) fn decode_packet<M: Message>(
    raw: RawPacket,
    frame: &[u8],
) -> Result<Received<M>, ProtocolError> {
    let RawPacket {
        len,
        truncated,
        control_truncated,
        foreign_control,
        fds,
    } = raw;
    if truncated {
        return Err(ProtocolError::Truncated { len });
    }
    if control_truncated {
        return Err(ProtocolError::ControlTruncated);
    }
    if let Some((level, cmsg_type)) = foreign_control {
        return Err(ProtocolError::ForeignControlMessage { level, cmsg_type });
    }
    decode_frame(frame, fds)
}

/// Decode a complete frame whose descriptors are `fds` (every check after the kernel flags).
/// Public so fuzz targets can drive the decoder without a socket.
pub fn decode_frame<M: Message>(
    frame: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Received<M>, ProtocolError> {
    let header = Header::parse(frame)?;
    if header.fd_count as usize != fds.len() {
        return Err(ProtocolError::HeaderFdCount {
            header: header.fd_count,
            received: fds.len(),
        });
    }
    let msg: M = codec::decode(&frame[HEADER_LEN..]).map_err(|source| ProtocolError::Body {
        kind: header.kind,
        source,
    })?;
    if msg.kind() != header.kind {
        return Err(ProtocolError::KindMismatch {
            header: header.kind,
            body: msg.kind(),
            name: msg.name(),
        });
    }
    if msg.fd_count() != fds.len() {
        return Err(ProtocolError::DeclaredFdCount {
            name: msg.name(),
            declared: msg.fd_count(),
            received: fds.len(),
        });
    }
    msg.validate().map_err(|source| ProtocolError::Invalid {
        name: msg.name(),
        source,
    })?;
    Ok(Received { msg, fds })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header::new(0x0102, 3, 2);
        let mut frame = h.encode().to_vec();
        frame.extend_from_slice(&[1, 2, 3]);
        assert_eq!(&frame[..4], b"BLWK");
        assert_eq!(Header::parse(&frame).unwrap(), h);
    }

    #[test]
    fn header_rejections() {
        let good = {
            let mut f = Header::new(1, 0, 0).encode().to_vec();
            f.truncate(HEADER_LEN);
            f
        };
        assert!(Header::parse(&good).is_ok());
        assert!(matches!(
            Header::parse(&good[..15]),
            Err(ProtocolError::ShortFrame { len: 15 })
        ));
        let mut f = good.clone();
        f[0] = b'X';
        assert!(matches!(
            Header::parse(&f),
            Err(ProtocolError::BadMagic { .. })
        ));
        let mut f = good.clone();
        f[4] = 9;
        assert!(matches!(
            Header::parse(&f),
            Err(ProtocolError::UnsupportedVersion { found: 9 })
        ));
        let mut f = good.clone();
        f[15] = 1;
        assert!(matches!(
            Header::parse(&f),
            Err(ProtocolError::ReservedBits { .. })
        ));
        let mut f = good.clone();
        f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Header::parse(&f),
            Err(ProtocolError::Oversize { .. })
        ));
        let mut f = good.clone();
        f[8] = 1;
        assert!(matches!(
            Header::parse(&f),
            Err(ProtocolError::BodyLengthMismatch {
                header: 1,
                actual: 0
            })
        ));
        let mut f = good.clone();
        f.push(0);
        assert!(matches!(
            Header::parse(&f),
            Err(ProtocolError::BodyLengthMismatch {
                header: 0,
                actual: 1
            })
        ));
        let mut f = good;
        f[12] = (MAX_FDS_PER_MESSAGE + 1) as u8;
        assert!(matches!(
            Header::parse(&f),
            Err(ProtocolError::TooManyFds { .. })
        ));
    }
}
