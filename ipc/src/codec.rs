//! The one place where the IPC body encoding (bincode 1.3) is configured.
//!
//! API: [`encode`] turns a message body into bytes, [`decode`] turns bytes back into a value.
//!
//! Configuration (the wire format of every IPC body, so changing it is a protocol-version bump):
//! - **fixint** encoding, little endian: every integer has its natural width and sequence/string
//!   lengths are `u64`. Chosen over varint because sizes are predictable (the byte cost of a message
//!   is easy to reason about against [`MAX_BODY_SIZE`]) and the decoder has fewer branches.
//! - an explicit byte limit of [`MAX_BODY_SIZE`] for both directions: bincode checks the limit
//!   before it allocates for a length prefix, so a forged length cannot make the receiver allocate.
//! - trailing bytes after the value are rejected.
//!
//! bincode is unmaintained upstream (RUSTSEC-2025-0141); keeping it behind these two functions means
//! it can be swapped without touching any other module.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::MAX_BODY_SIZE;

/// A failure of the body codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized (e.g. it exceeds [`MAX_BODY_SIZE`] or holds a non-UTF-8 path).
    #[error("encoding IPC message body")]
    Encode(#[source] bincode::Error),
    /// The bytes are not a valid encoding of the expected type (malformed, over the limit, or
    /// followed by trailing bytes).
    #[error("decoding IPC message body")]
    Decode(#[source] bincode::Error),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_BODY_SIZE as u64)
        .reject_trailing_bytes()
}

/// Serialize `value` into a fresh buffer of at most [`MAX_BODY_SIZE`] bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    options().serialize(value).map_err(CodecError::Encode)
}

/// Deserialize exactly one `T` from `bytes`; any byte left over is an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    options().deserialize(bytes).map_err(CodecError::Decode)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fixint_layout() {
        let v: (u32, Vec<u8>) = (7, vec![1, 2, 3]);
        let bytes = encode(&v).unwrap();
        // u32 (4) + u64 length (8) + 3 bytes
        assert_eq!(bytes.len(), 4 + 8 + 3);
        assert_eq!(&bytes[..4], &7u32.to_le_bytes());
        let back: (u32, Vec<u8>) = decode(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode(&5u32).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<u32>(&bytes), Err(CodecError::Decode(_))));
    }

    #[test]
    fn rejects_truncated_input() {
        let bytes = encode(&(1u64, 2u64)).unwrap();
        assert!(decode::<(u64, u64)>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn rejects_forged_huge_length_without_allocating() {
        // a Vec<u8> whose length prefix claims 2^62 bytes
        let mut bytes = (1u64 << 62).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        let mut bytes = ((MAX_BODY_SIZE as u64) + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert!(decode::<String>(&bytes).is_err());
    }

    #[test]
    fn encode_refuses_values_over_the_limit() {
        let big = vec![0u8; MAX_BODY_SIZE];
        assert!(matches!(encode(&big), Err(CodecError::Encode(_))));
    }
}
