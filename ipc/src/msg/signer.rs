//! The signer channel: worker ↔ parent, blocking request/response.
//!
//! The worker's rustls `SigningKey` sends a [`SignRequest`] (a channel typed
//! `Channel<SignRequest, SignResponse>`) and blocks for the [`SignResponse`] with the same `id`.
//! The parent (`Channel<SignResponse, SignRequest>`) signs with the server key, which never
//! leaves it. Responses carry no free text: a failure is one of [`SignFailure`].

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::validate::{check_len, ValidationError};

/// Longest message the worker may ask to have signed. TLS 1.3 `CertificateVerify` input is
/// about 130 bytes, TLS 1.2 `ServerKeyExchange` input a few hundred (up to ~1 KiB for FFDHE).
pub const MAX_SIGN_MESSAGE_LEN: usize = 8192;

/// Longest signature (RSA-16384 is 2048 bytes).
pub const MAX_SIGNATURE_LEN: usize = 2048;

/// TLS `SignatureScheme` wire values a request may name: RSA PKCS#1 v1.5 and PSS with
/// SHA-256/384/512, ECDSA P-256/P-384/P-521 with their hashes, Ed25519. (No SHA-1 schemes.)
pub const SUPPORTED_SIGNATURE_SCHEMES: [u16; 10] = [
    0x0401, // rsa_pkcs1_sha256
    0x0501, // rsa_pkcs1_sha384
    0x0601, // rsa_pkcs1_sha512
    0x0403, // ecdsa_secp256r1_sha256
    0x0503, // ecdsa_secp384r1_sha384
    0x0603, // ecdsa_secp521r1_sha512
    0x0804, // rsa_pss_rsae_sha256
    0x0805, // rsa_pss_rsae_sha384
    0x0806, // rsa_pss_rsae_sha512
    0x0807, // ed25519
];

/// `SignRequest`.
pub const KIND_SIGN_REQUEST: u16 = 0x0401;
/// `SignResponse`.
pub const KIND_SIGN_RESPONSE: u16 = 0x0402;

/// Worker → parent: sign `message` with `scheme`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRequest {
    /// Request id, echoed in the response.
    pub id: u64,
    /// rustls `SignatureScheme` wire value; must be in [`SUPPORTED_SIGNATURE_SCHEMES`].
    pub scheme: u16,
    /// The bytes to sign (1..=[`MAX_SIGN_MESSAGE_LEN`]).
    pub message: Vec<u8>,
}

/// Why the parent did not sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SignFailure {
    /// The server key cannot produce this scheme.
    UnsupportedScheme,
    /// No key is loaded (e.g. during a reload).
    NoKey,
    /// The signing operation itself failed.
    Failed,
    /// The parent's policy refused the request (rate limit, state machine).
    Refused,
}

/// Parent → worker: the answer to the request with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignResponse {
    /// The request's id.
    pub id: u64,
    /// The signature (1..=[`MAX_SIGNATURE_LEN`] bytes) or why there is none.
    pub result: Result<Vec<u8>, SignFailure>,
}

impl Message for SignRequest {
    fn kind(&self) -> u16 {
        KIND_SIGN_REQUEST
    }

    fn name(&self) -> &'static str {
        "SignRequest"
    }

    fn fd_count(&self) -> usize {
        0
    }

    fn validate(&self) -> Result<(), ValidationError> {
        if !SUPPORTED_SIGNATURE_SCHEMES.contains(&self.scheme) {
            return Err(ValidationError::UnsupportedSignatureScheme {
                scheme: self.scheme,
            });
        }
        check_len("message", self.message.len(), 1, MAX_SIGN_MESSAGE_LEN)
    }
}

impl Message for SignResponse {
    fn kind(&self) -> u16 {
        KIND_SIGN_RESPONSE
    }

    fn name(&self) -> &'static str {
        "SignResponse"
    }

    fn fd_count(&self) -> usize {
        0
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match &self.result {
            Ok(signature) => check_len("signature", signature.len(), 1, MAX_SIGNATURE_LEN),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_validation() {
        let ok = SignRequest {
            id: 1,
            scheme: 0x0804,
            message: vec![1; 100],
        };
        assert!(ok.validate().is_ok());
        let mut sha1 = ok.clone();
        sha1.scheme = 0x0201;
        assert!(matches!(
            sha1.validate(),
            Err(ValidationError::UnsupportedSignatureScheme { scheme: 0x0201 })
        ));
        let mut empty = ok.clone();
        empty.message.clear();
        assert!(empty.validate().is_err());
        let mut big = ok;
        big.message = vec![0; MAX_SIGN_MESSAGE_LEN + 1];
        assert!(big.validate().is_err());
    }

    #[test]
    fn response_validation() {
        assert!(SignResponse {
            id: 1,
            result: Ok(vec![1; 256])
        }
        .validate()
        .is_ok());
        assert!(SignResponse {
            id: 1,
            result: Err(SignFailure::Refused)
        }
        .validate()
        .is_ok());
        assert!(SignResponse {
            id: 1,
            result: Ok(vec![])
        }
        .validate()
        .is_err());
        assert!(SignResponse {
            id: 1,
            result: Ok(vec![0; MAX_SIGNATURE_LEN + 1])
        }
        .validate()
        .is_err());
    }
}
