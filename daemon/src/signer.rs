//! Key custody, parent side: the server's private key lives only here. The worker's rustls
//! `SigningKey` asks over IPC (`SignRequest { id, scheme, message }`); the parent answers with
//! [`ServerKeySigner::sign`].
//!
//! Because the worker faces the internet and may be compromised, the parent does not sign whatever
//! it is asked to:
//! - the scheme must be one rustls (ring provider) would use with this key type;
//! - the message must have the shape of a *server* handshake signature input: a TLS 1.3 server
//!   CertificateVerify content (64 spaces, `TLS 1.3, server CertificateVerify`, NUL, a 32/48/64-byte
//!   transcript hash; RSA-PKCS#1 is refused there as RFC 8446 forbids it) or a TLS 1.2 ECDHE
//!   ServerKeyExchange (two 32-byte randoms, named curve, point of the curve's length);
//! - a token bucket limits the rate (default burst 64, 20 per second), so a compromised worker cannot
//!   use the parent as a signing oracle at will.
//!
//! Keys: PEM PKCS#8, PKCS#1 RSA or SEC1 EC; encrypted keys are refused with a clear error. The key
//! must match the certificate (public key comparison). Signing uses rustls' ring provider
//! (`any_supported_type`), i.e. RSA (PSS/PKCS#1 SHA-256/384/512), ECDSA P-256/P-384, Ed25519.
//! Time comes in as a parameter (`Instant`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// Errors of the key holder.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The key file could not be read.
    #[error("cannot read private key {path}: {source}")]
    ReadKey {
        /// Path.
        path: PathBuf,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file could not be read.
    #[error("cannot read certificate {path}: {source}")]
    ReadCert {
        /// Path.
        path: PathBuf,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Password-protected key.
    #[error("encrypted private keys are not supported yet")]
    EncryptedKey,
    /// No private key block in the PEM.
    #[error("no private key found (expected PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoKey,
    /// The key could not be parsed or is of an unsupported type.
    #[error("unusable private key: {reason}")]
    BadKey {
        /// Why.
        reason: String,
    },
    /// The certificate PEM could not be parsed.
    #[error("unusable certificate: {reason}")]
    BadCertificate {
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// A rate limit of zero burst.
    #[error("invalid signing rate limit: burst must be at least 1")]
    InvalidRateLimit,
    /// The scheme is not one this key can sign with.
    #[error("signature scheme 0x{scheme:04x} is not valid for this {algorithm:?} key")]
    SchemeNotForKey {
        /// Requested scheme code.
        scheme: u16,
        /// Key type.
        algorithm: SignatureAlgorithm,
    },
    /// The message is not a server handshake signature input.
    #[error("refusing to sign: {reason}")]
    MessageRejected {
        /// Why.
        reason: &'static str,
    },
    /// Too many requests.
    #[error("signing rate limit exceeded")]
    RateLimited,
    /// The crypto library failed.
    #[error("signing failed: {reason}")]
    SignFailed {
        /// Why.
        reason: String,
    },
}

/// Token-bucket parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size (signatures that may be requested back to back).
    pub burst: u32,
    /// Refill rate, signatures per second (0: no refill).
    pub per_second: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 64,
            per_second: 20,
        }
    }
}

const NANOS_PER_TOKEN: u128 = 1_000_000_000;

/// Token bucket in nano-tokens (integer arithmetic, deterministic).
#[derive(Debug)]
struct TokenBucket {
    capacity: u128,
    tokens: u128,
    per_second: u128,
    last: Instant,
}

impl TokenBucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        let capacity = u128::from(limit.burst) * NANOS_PER_TOKEN;
        Self {
            capacity,
            tokens: capacity,
            per_second: u128::from(limit.per_second),
            last: now,
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_nanos();
            self.tokens = self
                .tokens
                .saturating_add(elapsed.saturating_mul(self.per_second))
                .min(self.capacity);
            self.last = now;
        }
        if self.tokens >= NANOS_PER_TOKEN {
            self.tokens -= NANOS_PER_TOKEN;
            true
        } else {
            false
        }
    }
}

/// Counters for audit/metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignerStats {
    /// Signatures produced.
    pub signed: u64,
    /// Requests refused (scheme, shape, rate).
    pub refused: u64,
    /// Of which refused by the rate limit.
    pub rate_limited: u64,
}

/// The server's private key and the policy for using it.
pub struct ServerKeySigner {
    key: Arc<dyn SigningKey>,
    schemes: Vec<SignatureScheme>,
    bucket: TokenBucket,
    stats: SignerStats,
}

impl std::fmt::Debug for ServerKeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeySigner")
            .field("algorithm", &self.key.algorithm())
            .field("schemes", &self.schemes)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Every scheme the ring provider can sign with, in its preference order.
const ALL_SCHEMES: [SignatureScheme; 9] = [
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

impl ServerKeySigner {
    /// Reads the key and certificate files (`key`, `cert` options) and builds the signer.
    pub fn load(
        key_path: &Path,
        cert_path: &Path,
        limit: RateLimit,
        now: Instant,
    ) -> Result<Self, SignerError> {
        let key = std::fs::read(key_path).map_err(|source| SignerError::ReadKey {
            path: key_path.to_path_buf(),
            source,
        })?;
        let cert = std::fs::read(cert_path).map_err(|source| SignerError::ReadCert {
            path: cert_path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&key, &cert, limit, now)
    }

    /// Builds the signer from PEM bytes; checks the key matches the chain's first certificate.
    pub fn from_pem(
        key_pem: &[u8],
        cert_chain_pem: &[u8],
        limit: RateLimit,
        now: Instant,
    ) -> Result<Self, SignerError> {
        if limit.burst == 0 {
            return Err(SignerError::InvalidRateLimit);
        }
        if contains(key_pem, b"ENCRYPTED PRIVATE KEY-----")
            || contains(key_pem, b"Proc-Type: 4,ENCRYPTED")
        {
            return Err(SignerError::EncryptedKey);
        }
        let der = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(d) => d,
            Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(SignerError::NoKey),
            Err(e) => {
                return Err(SignerError::BadKey {
                    reason: format!("PEM: {e:?}"),
                })
            }
        };
        let key = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| {
            SignerError::BadKey {
                reason: e.to_string(),
            }
        })?;
        drop(der);

        let mut chain = Vec::new();
        for item in CertificateDer::pem_slice_iter(cert_chain_pem) {
            let c = item.map_err(|e| SignerError::BadCertificate {
                reason: format!("PEM: {e:?}"),
            })?;
            chain.push(c.into_owned());
        }
        if chain.is_empty() {
            return Err(SignerError::BadCertificate {
                reason: "no CERTIFICATE block found".into(),
            });
        }
        match CertifiedKey::new(chain, Arc::clone(&key)).keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(SignerError::KeyMismatch)
            }
            Err(e) => {
                return Err(SignerError::BadCertificate {
                    reason: e.to_string(),
                })
            }
        }
        let schemes: Vec<SignatureScheme> = ALL_SCHEMES
            .iter()
            .copied()
            .filter(|s| key.choose_scheme(&[*s]).is_some())
            .collect();
        if schemes.is_empty() {
            return Err(SignerError::BadKey {
                reason: "the key supports no TLS signature scheme".into(),
            });
        }
        Ok(Self {
            key,
            schemes,
            bucket: TokenBucket::new(limit, now),
            stats: SignerStats::default(),
        })
    }

    /// The key type.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.key.algorithm()
    }

    /// The schemes this key may be asked for (TLS code points), in preference order.
    pub fn schemes(&self) -> Vec<u16> {
        self.schemes.iter().map(|s| u16::from(*s)).collect()
    }

    /// Counters.
    pub fn stats(&self) -> SignerStats {
        self.stats
    }

    /// Signs a server handshake message with `scheme` (TLS code point) if policy allows.
    pub fn sign(&mut self, scheme: u16, msg: &[u8], now: Instant) -> Result<Vec<u8>, SignerError> {
        match self.check_and_sign(scheme, msg, now) {
            Ok(sig) => {
                self.stats.signed += 1;
                Ok(sig)
            }
            Err(e) => {
                self.stats.refused += 1;
                if matches!(e, SignerError::RateLimited) {
                    self.stats.rate_limited += 1;
                }
                Err(e)
            }
        }
    }

    fn check_and_sign(
        &mut self,
        scheme_code: u16,
        msg: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, SignerError> {
        let scheme = SignatureScheme::from(scheme_code);
        let not_for_key = || SignerError::SchemeNotForKey {
            scheme: scheme_code,
            algorithm: self.key.algorithm(),
        };
        if !self.schemes.contains(&scheme) {
            return Err(not_for_key());
        }
        let kind = classify_message(msg)?;
        if kind == MessageKind::Tls13CertificateVerify
            && matches!(
                scheme,
                SignatureScheme::RSA_PKCS1_SHA256
                    | SignatureScheme::RSA_PKCS1_SHA384
                    | SignatureScheme::RSA_PKCS1_SHA512
            )
        {
            return Err(SignerError::MessageRejected {
                reason: "RSA PKCS#1 is not allowed for a TLS 1.3 CertificateVerify",
            });
        }
        // INVARIANT: the rate limit is charged only for requests that passed every check above, and
        // before any private-key operation.
        if !self.bucket.try_take(now) {
            return Err(SignerError::RateLimited);
        }
        let signer = self.key.choose_scheme(&[scheme]).ok_or_else(not_for_key)?;
        signer.sign(msg).map_err(|e| SignerError::SignFailed {
            reason: e.to_string(),
        })
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[derive(Debug, PartialEq, Eq)]
enum MessageKind {
    Tls13CertificateVerify,
    Tls12ServerKeyExchange,
}

const TLS13_SERVER_CONTEXT: &[u8] = b"TLS 1.3, server CertificateVerify\x00";

/// Accepts only the two message shapes a TLS server signs.
fn classify_message(msg: &[u8]) -> Result<MessageKind, SignerError> {
    if msg.len() > 64 && msg[..64].iter().all(|&b| b == 0x20) {
        let rest = &msg[64..];
        if let Some(hash) = rest.strip_prefix(TLS13_SERVER_CONTEXT) {
            if matches!(hash.len(), 32 | 48 | 64) {
                return Ok(MessageKind::Tls13CertificateVerify);
            }
            return Err(SignerError::MessageRejected {
                reason: "TLS 1.3 CertificateVerify with a bad transcript hash length",
            });
        }
        return Err(SignerError::MessageRejected {
            reason: "not a TLS 1.3 server CertificateVerify context",
        });
    }
    // TLS 1.2: client_random[32] server_random[32] ECParameters{curve_type=3, NamedGroup} point<1..255>
    if msg.len() >= 68 && msg[64] == 3 {
        let group = u16::from_be_bytes([msg[65], msg[66]]);
        let len = usize::from(msg[67]);
        let expected = match group {
            0x001d => 32,  // x25519
            0x0017 => 65,  // secp256r1
            0x0018 => 97,  // secp384r1
            0x0019 => 133, // secp521r1
            0x001e => 56,  // x448
            _ => {
                return Err(SignerError::MessageRejected {
                    reason: "TLS 1.2 ServerKeyExchange with an unknown group",
                })
            }
        };
        if len == expected && msg.len() == 68 + len {
            return Ok(MessageKind::Tls12ServerKeyExchange);
        }
        return Err(SignerError::MessageRejected {
            reason: "malformed TLS 1.2 ServerKeyExchange parameters",
        });
    }
    Err(SignerError::MessageRejected {
        reason: "not a server handshake signature input",
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RSA_PKCS8: &[u8] = include_bytes!("../../worker/src/proto/tls/testdata/rsa2048.pem");
    const RSA_PKCS1: &[u8] =
        include_bytes!("../../worker/src/proto/tls/testdata/rsa2048-pkcs1.pem");
    const EC_SEC1: &[u8] = include_bytes!("../../worker/src/proto/tls/testdata/ec256-sec1.pem");
    const EC_PKCS8: &[u8] = include_bytes!("../../worker/src/proto/tls/testdata/ec256.pem");
    const ENC_PKCS8: &[u8] = include_bytes!("../../worker/src/proto/tls/testdata/rsa-enc.pem");
    const ENC_LEGACY: &[u8] =
        include_bytes!("../../worker/src/proto/tls/testdata/rsa-enc-legacy.pem");

    /// A self-signed certificate for the key (rcgen reads PKCS#8 only: map to the PKCS#8 twin).
    fn cert_for(key_pem: &[u8]) -> String {
        let key_pem = if key_pem == RSA_PKCS1 {
            RSA_PKCS8
        } else if key_pem == EC_SEC1 {
            EC_PKCS8
        } else {
            key_pem
        };
        let kp = rcgen::KeyPair::from_pem(std::str::from_utf8(key_pem).unwrap()).unwrap();
        let params = rcgen::CertificateParams::new(vec!["server".to_string()]).unwrap();
        params.self_signed(&kp).unwrap().pem()
    }

    fn generated(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["server".to_string()]).unwrap();
        let cert = params.self_signed(&kp).unwrap().pem();
        (kp.serialize_pem(), cert)
    }

    fn tls13_msg(hash_len: usize) -> Vec<u8> {
        let mut m = vec![0x20u8; 64];
        m.extend_from_slice(TLS13_SERVER_CONTEXT);
        m.extend(std::iter::repeat_n(7u8, hash_len));
        m
    }

    fn tls12_msg() -> Vec<u8> {
        let mut m = vec![1u8; 64];
        m.extend_from_slice(&[3, 0x00, 0x1d, 32]);
        m.extend_from_slice(&[9u8; 32]);
        m
    }

    fn verify(cert_pem: &str, scheme: SignatureScheme, msg: &[u8], sig: &[u8]) {
        use ring::signature as rs;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
        let pk = parsed.public_key().subject_public_key.data.to_vec();
        let alg: &dyn rs::VerificationAlgorithm = match scheme {
            SignatureScheme::RSA_PSS_SHA256 => &rs::RSA_PSS_2048_8192_SHA256,
            SignatureScheme::RSA_PSS_SHA512 => &rs::RSA_PSS_2048_8192_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256 => &rs::RSA_PKCS1_2048_8192_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256 => &rs::ECDSA_P256_SHA256_ASN1,
            SignatureScheme::ECDSA_NISTP384_SHA384 => &rs::ECDSA_P384_SHA384_ASN1,
            SignatureScheme::ED25519 => &rs::ED25519,
            other => panic!("no verifier for {other:?}"),
        };
        rs::UnparsedPublicKey::new(alg, &pk)
            .verify(msg, sig)
            .unwrap();
    }

    #[test]
    fn loads_all_key_formats_and_signs() {
        let now = Instant::now();
        for (key, scheme) in [
            (RSA_PKCS8, SignatureScheme::RSA_PSS_SHA256),
            (RSA_PKCS1, SignatureScheme::RSA_PSS_SHA512),
            (EC_SEC1, SignatureScheme::ECDSA_NISTP256_SHA256),
        ] {
            let cert = cert_for(key);
            let mut s =
                ServerKeySigner::from_pem(key, cert.as_bytes(), RateLimit::default(), now).unwrap();
            let msg = tls13_msg(32);
            let sig = s.sign(u16::from(scheme), &msg, now).unwrap();
            verify(&cert, scheme, &msg, &sig);
            assert_eq!(s.stats().signed, 1);
        }
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let (key, cert) = generated(alg);
            let mut s = ServerKeySigner::from_pem(
                key.as_bytes(),
                cert.as_bytes(),
                RateLimit::default(),
                now,
            )
            .unwrap();
            assert_eq!(s.schemes().len(), 1);
            let scheme = SignatureScheme::from(s.schemes()[0]);
            let msg = tls13_msg(48);
            let sig = s.sign(u16::from(scheme), &msg, now).unwrap();
            verify(&cert, scheme, &msg, &sig);
        }
    }

    #[test]
    fn rsa_schemes_and_refusals() {
        let now = Instant::now();
        let cert = cert_for(RSA_PKCS8);
        let mut s =
            ServerKeySigner::from_pem(RSA_PKCS8, cert.as_bytes(), RateLimit::default(), now)
                .unwrap();
        assert_eq!(s.algorithm(), SignatureAlgorithm::RSA);
        assert_eq!(s.schemes().len(), 6);
        // ECDSA scheme with an RSA key
        assert!(matches!(
            s.sign(
                u16::from(SignatureScheme::ECDSA_NISTP256_SHA256),
                &tls13_msg(32),
                now
            ),
            Err(SignerError::SchemeNotForKey { .. })
        ));
        // unknown code point
        assert!(matches!(
            s.sign(0xfefe, &tls13_msg(32), now),
            Err(SignerError::SchemeNotForKey { .. })
        ));
        // PKCS#1 for a TLS 1.3 CertificateVerify
        assert!(matches!(
            s.sign(
                u16::from(SignatureScheme::RSA_PKCS1_SHA256),
                &tls13_msg(32),
                now
            ),
            Err(SignerError::MessageRejected { .. })
        ));
        // ... but fine for TLS 1.2 ServerKeyExchange
        s.sign(
            u16::from(SignatureScheme::RSA_PKCS1_SHA256),
            &tls12_msg(),
            now,
        )
        .unwrap();
        // arbitrary data, client context, bad lengths
        for bad in [
            b"arbitrary data to sign".to_vec(),
            {
                let mut m = vec![0x20u8; 64];
                m.extend_from_slice(b"TLS 1.3, client CertificateVerify\x00");
                m.extend_from_slice(&[0u8; 32]);
                m
            },
            tls13_msg(31),
            {
                let mut m = tls12_msg();
                m.push(0);
                m
            },
            Vec::new(),
        ] {
            assert!(matches!(
                s.sign(u16::from(SignatureScheme::RSA_PSS_SHA256), &bad, now),
                Err(SignerError::MessageRejected { .. })
            ));
        }
        assert_eq!(s.stats().signed, 1);
        assert_eq!(s.stats().refused, 8);
    }

    #[test]
    fn rate_limit_refuses_a_flood_and_refills() {
        let t0 = Instant::now();
        let (key, cert) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let limit = RateLimit {
            burst: 5,
            per_second: 2,
        };
        let mut s = ServerKeySigner::from_pem(key.as_bytes(), cert.as_bytes(), limit, t0).unwrap();
        let scheme = u16::from(SignatureScheme::ECDSA_NISTP256_SHA256);
        let msg = tls13_msg(32);
        let ok = (0..100)
            .filter(|_| s.sign(scheme, &msg, t0).is_ok())
            .count();
        assert_eq!(ok, 5);
        assert_eq!(s.stats().rate_limited, 95);
        assert!(matches!(
            s.sign(scheme, &msg, t0 + Duration::from_millis(400)),
            Err(SignerError::RateLimited)
        ));
        // 0.5 s refills one token at 2/s
        s.sign(scheme, &msg, t0 + Duration::from_millis(500))
            .unwrap();
        assert!(s
            .sign(scheme, &msg, t0 + Duration::from_millis(500))
            .is_err());
        // a long pause refills at most `burst`
        let later = t0 + Duration::from_secs(3600);
        let ok = (0..20)
            .filter(|_| s.sign(scheme, &msg, later).is_ok())
            .count();
        assert_eq!(ok, 5);
        // time going backwards never adds tokens
        assert!(s.sign(scheme, &msg, t0).is_err());
        assert!(matches!(
            ServerKeySigner::from_pem(
                key.as_bytes(),
                cert.as_bytes(),
                RateLimit {
                    burst: 0,
                    per_second: 1
                },
                t0
            ),
            Err(SignerError::InvalidRateLimit)
        ));
    }

    #[test]
    fn key_loading_errors() {
        let now = Instant::now();
        let cert = cert_for(RSA_PKCS8);
        for enc in [ENC_PKCS8, ENC_LEGACY] {
            let e = ServerKeySigner::from_pem(enc, cert.as_bytes(), RateLimit::default(), now)
                .unwrap_err();
            assert!(matches!(e, SignerError::EncryptedKey));
            assert_eq!(
                e.to_string(),
                "encrypted private keys are not supported yet"
            );
        }
        assert!(matches!(
            ServerKeySigner::from_pem(cert.as_bytes(), cert.as_bytes(), RateLimit::default(), now),
            Err(SignerError::NoKey)
        ));
        // key of another certificate
        let (other_key, _) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ec_cert = cert_for(EC_SEC1);
        assert!(matches!(
            ServerKeySigner::from_pem(
                other_key.as_bytes(),
                ec_cert.as_bytes(),
                RateLimit::default(),
                now
            ),
            Err(SignerError::KeyMismatch)
        ));
        assert!(matches!(
            ServerKeySigner::from_pem(RSA_PKCS8, b"", RateLimit::default(), now),
            Err(SignerError::BadCertificate { .. })
        ));
        assert!(matches!(
            ServerKeySigner::from_pem(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                cert.as_bytes(),
                RateLimit::default(),
                now
            ),
            Err(SignerError::BadKey { .. })
        ));
        let e = ServerKeySigner::load(
            Path::new("/nonexistent/key.pem"),
            Path::new("/nonexistent/cert.pem"),
            RateLimit::default(),
            now,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/key.pem"));
    }

    #[test]
    fn load_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let kp = dir.path().join("server.key");
        let cp = dir.path().join("server.crt");
        std::fs::write(&kp, EC_SEC1).unwrap();
        std::fs::write(&cp, cert_for(EC_SEC1)).unwrap();
        let s = ServerKeySigner::load(&kp, &cp, RateLimit::default(), Instant::now()).unwrap();
        assert_eq!(s.algorithm(), SignatureAlgorithm::ECDSA);
        assert_eq!(
            s.schemes(),
            vec![u16::from(SignatureScheme::ECDSA_NISTP256_SHA256)]
        );
    }
}
