//! Key custody, worker side: the server's private key never enters the worker. rustls asks a
//! [`rustls::sign::SigningKey`] to sign the handshake; ours ([`RemoteSigningKey`]) forwards the
//! request to a [`KeySigner`], which the worker implements as a blocking IPC round trip to the
//! parent (`daemon::signer`). The schemes offered are derived from the *certificate's* public key
//! (the worker has the certificate, not the key), in the order rustls' ring provider uses:
//! - RSA: RSA-PSS SHA-512/384/256, then PKCS#1 SHA-512/384/256;
//! - ECDSA P-256: `ecdsa_secp256r1_sha256`; P-384: `ecdsa_secp384r1_sha384` (the curve's hash);
//! - Ed25519: `ed25519`.
//!
//! P-521 and Ed448 keys cannot be used with the ring provider (error at build time).

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::x509::{oid_to_string, parse_cert};

/// Error returned by a [`KeySigner`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The key holder refused the request (scheme not valid for the key, rate limit, malformed
    /// message).
    #[error("signing refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// The request could not be delivered or answered (IPC failure, timeout).
    #[error("signing transport failed: {reason}")]
    Transport {
        /// Why.
        reason: String,
    },
}

/// Something that holds the server's private key and signs on request.
pub trait KeySigner: Send + Sync + fmt::Debug {
    /// The key type.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// Signs `msg` (unhashed) with `scheme`. Blocking.
    fn sign(&self, scheme: SignatureScheme, msg: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Errors determining the server key's type from its certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyTypeError {
    /// The server certificate cannot be parsed.
    #[error("cannot parse the server certificate: {reason}")]
    Certificate {
        /// Parser message.
        reason: String,
    },
    /// The key type is not usable with rustls' ring provider.
    #[error("server key type {what} is not supported by rustls with the ring provider")]
    Unsupported {
        /// Description of the key.
        what: String,
    },
    /// The signer's key type differs from the certificate's.
    #[error("the signer holds a {signer:?} key but the certificate has a {cert:?} key")]
    Mismatch {
        /// Signer's algorithm.
        signer: SignatureAlgorithm,
        /// Certificate's algorithm.
        cert: SignatureAlgorithm,
    },
}

/// The key type of a certificate, and the schemes usable with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyType {
    /// rustls' algorithm family.
    pub algorithm: SignatureAlgorithm,
    /// Schemes in preference order.
    pub schemes: Vec<SignatureScheme>,
    /// The certificate's SubjectPublicKeyInfo (DER).
    pub spki: Vec<u8>,
}

const RSA_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// Determines the key type and usable schemes from a DER certificate.
pub fn key_type_of_cert(cert_der: &[u8]) -> Result<KeyType, KeyTypeError> {
    let cert = parse_cert(cert_der).map_err(|e| KeyTypeError::Certificate {
        reason: e.to_string(),
    })?;
    let spki = cert.public_key();
    let alg = oid_to_string(spki.algorithm.algorithm.as_bytes()).unwrap_or_default();
    let (algorithm, schemes) = match alg.as_str() {
        "1.2.840.113549.1.1.1" => (SignatureAlgorithm::RSA, RSA_SCHEMES.to_vec()),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .filter(|p| p.tag().0 == 6)
                .and_then(|p| oid_to_string(p.data))
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => (
                    SignatureAlgorithm::ECDSA,
                    vec![SignatureScheme::ECDSA_NISTP256_SHA256],
                ),
                "1.3.132.0.34" => (
                    SignatureAlgorithm::ECDSA,
                    vec![SignatureScheme::ECDSA_NISTP384_SHA384],
                ),
                other => {
                    return Err(KeyTypeError::Unsupported {
                        what: format!("EC curve {other}"),
                    })
                }
            }
        }
        "1.3.101.112" => (SignatureAlgorithm::ED25519, vec![SignatureScheme::ED25519]),
        other => {
            return Err(KeyTypeError::Unsupported {
                what: format!("public key algorithm {other}"),
            })
        }
    };
    Ok(KeyType {
        algorithm,
        schemes,
        spki: spki.raw.to_vec(),
    })
}

/// A rustls signing key whose private half lives behind a [`KeySigner`].
pub struct RemoteSigningKey {
    signer: Arc<dyn KeySigner>,
    key_type: KeyType,
}

impl fmt::Debug for RemoteSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSigningKey")
            .field("algorithm", &self.key_type.algorithm)
            .field("schemes", &self.key_type.schemes)
            .finish()
    }
}

impl RemoteSigningKey {
    /// Binds `signer` to the server certificate `cert_der`; fails when the key types differ.
    pub fn new(signer: Arc<dyn KeySigner>, cert_der: &[u8]) -> Result<Self, KeyTypeError> {
        let key_type = key_type_of_cert(cert_der)?;
        if signer.algorithm() != key_type.algorithm {
            return Err(KeyTypeError::Mismatch {
                signer: signer.algorithm(),
                cert: key_type.algorithm,
            });
        }
        Ok(Self { signer, key_type })
    }

    /// Keeps only the given schemes (e.g. Suite B); returns `false` if none remain.
    pub fn restrict(&mut self, allowed: &[SignatureScheme]) -> bool {
        self.key_type.schemes.retain(|s| allowed.contains(s));
        !self.key_type.schemes.is_empty()
    }

    /// The schemes this key offers, in preference order.
    pub fn schemes(&self) -> &[SignatureScheme] {
        &self.key_type.schemes
    }
}

impl SigningKey for RemoteSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        self.key_type
            .schemes
            .iter()
            .find(|s| offered.contains(s))
            .map(|&scheme| {
                Box::new(RemoteSigner {
                    signer: Arc::clone(&self.signer),
                    scheme,
                }) as Box<dyn Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.key_type.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.key_type.algorithm
    }
}

struct RemoteSigner {
    signer: Arc<dyn KeySigner>,
    scheme: SignatureScheme,
}

impl fmt::Debug for RemoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSigner")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Signer for RemoteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.signer
            .sign(self.scheme, message)
            .map_err(|e| rustls::Error::General(format!("remote signer: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
