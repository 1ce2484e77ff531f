//! Client certificate verification with OpenVPN's semantics and log lines.
//!
//! [`VerifierCore`] holds what is shared by all handshakes (trust anchors, CA-bundle intermediates,
//! the replaceable CRL set, the peer-certificate policy). Each TLS session gets its own
//! [`SessionVerifier`] (a `rustls::server::danger::ClientCertVerifier`) bound to a [`VerifyLog`],
//! the per-connection slot in which the verifier records OpenVPN-worded [`VerifyEvent`]s and, on
//! success, the [`PeerIdentity`]. The proto module never logs by itself: the session drains the slot.
//!
//! Order of checks (as OpenSSL + OpenVPN 2.6 do them):
//! 1. chain building to a trust anchor from the `ca` bundle (rustls-webpki; client EKU must allow
//!    clientAuth if present), validity dates, CRL (`crl-verify`: every certificate of the chain that
//!    has a CRL from its issuer; a certificate without a matching CRL passes, an expired CRL fails as in
//!    OpenSSL), then the trust anchor's own validity dates (OpenSSL checks them, webpki does not).
//!    Failure: `VERIFY ERROR: depth=N, error=<OpenSSL reason>: <subject>, serial=<decimal>`.
//! 2. per certificate from the anchor down to depth 0: subject extraction, username extraction (fatal
//!    only at depth 0), and at depth 0 OpenVPN's `verify_peer_cert`: keyUsage (`remote-cert-ku`,
//!    or "present" for `remote-cert-tls`), EKU (`remote-cert-eku`/`remote-cert-tls`),
//!    `verify-x509-name`. Each passing certificate logs `VERIFY OK: depth=N, <subject>`.
//!
//! webpki is stricter than OpenSSL at security level 1: RSA keys < 2048 bits, SHA-1/MD5 signatures,
//! v1 end-entity certificates and CA:TRUE client certificates are rejected.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use sha2::Digest as _;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::time::ASN1Time;

use super::settings::{PeerCertPolicy, VerifyClientCert, X509NameKind, KU_REQUIRED};
use super::x509::{
    eku_long_name, eku_oids, extract_username, format_subject, key_usage_value, parse_cert,
    CertInfo, PeerIdentity,
};

/// OpenVPN's `MAX_CERT_DEPTH`.
const MAX_CERT_DEPTH: usize = 16;
/// Upper bound of events recorded per handshake (a chain is at most a handful of certificates).
const MAX_EVENTS: usize = 128;

/// Errors loading the CA bundle or a CRL.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The CA bundle contains no certificate or a malformed PEM block.
    #[error("cannot load CA certificates: {reason}")]
    CaBundle {
        /// Why.
        reason: String,
    },
    /// A CRL could not be parsed.
    #[error("cannot load CRL: {reason}")]
    Crl {
        /// Why.
        reason: String,
    },
}

/// Log severity of a verification event, as the OpenVPN `verb` level at which it is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventLevel {
    /// `D_TLS_ERRORS` (verb >= 1): `VERIFY ERROR`, missing key usage, ...
    Error,
    /// `D_HANDSHAKE` (verb >= 2): `VERIFY OK`, `VERIFY KU OK`, EKU details, ...
    Handshake,
    /// `D_TLS_DEBUG_LOW` (verb >= 3): `VERIFY WARNING: ... unable to get certificate CRL`.
    Debug,
}

impl EventLevel {
    /// The engine's log class: printed from the `verb` at which OpenVPN prints this event
    /// ([`crate::proto::io::LogClass::verb`]).
    pub fn log_class(self) -> crate::proto::io::LogClass {
        use crate::proto::io::LogClass;
        match self {
            Self::Error => LogClass::Error,
            Self::Handshake => LogClass::Handshake,
            Self::Debug => LogClass::Info,
        }
    }
}

/// One OpenVPN-worded verification log line (without timestamp or client prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyEvent {
    /// Severity.
    pub level: EventLevel,
    /// The message, e.g. `VERIFY OK: depth=1, CN=TestCA`.
    pub message: String,
}

#[derive(Debug, Default)]
struct VerifyRecord {
    events: Vec<VerifyEvent>,
    identity: Option<PeerIdentity>,
}

/// Per-connection slot written by the verifier and read by the session.
#[derive(Clone, Debug, Default)]
pub struct VerifyLog(Arc<Mutex<VerifyRecord>>);

impl VerifyLog {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, VerifyRecord> {
        // A panic while holding this lock cannot leave the record inconsistent (plain pushes).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes and returns the events recorded so far (oldest first).
    pub fn take_events(&self) -> Vec<VerifyEvent> {
        std::mem::take(&mut self.lock().events)
    }

    /// The identity recorded by a successful verification.
    pub fn identity(&self) -> Option<PeerIdentity> {
        self.lock().identity.clone()
    }

    fn push(&self, level: EventLevel, message: String) {
        let mut r = self.lock();
        if r.events.len() < MAX_EVENTS {
            r.events.push(VerifyEvent { level, message });
        }
    }

    fn set_identity(&self, id: PeerIdentity) {
        self.lock().identity = Some(id);
    }

    fn clear_identity(&self) {
        self.lock().identity = None;
    }
}

/// A parsed set of CRLs (the `crl-verify` file).
struct CrlSet {
    ders: Vec<Vec<u8>>,
    lists: Vec<CertRevocationList<'static>>,
}

fn parse_crls(bytes: &[u8]) -> Result<CrlSet, VerifyError> {
    let mut ders = Vec::new();
    let looks_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if looks_pem {
        for item in CertificateRevocationListDer::pem_slice_iter(bytes) {
            let der = item.map_err(|e| VerifyError::Crl {
                reason: format!("PEM: {e:?}"),
            })?;
            ders.push(der.as_ref().to_vec());
        }
        if ders.is_empty() {
            return Err(VerifyError::Crl {
                reason: "no 'X509 CRL' PEM block found".into(),
            });
        }
    } else {
        ders.push(bytes.to_vec());
    }
    let mut lists = Vec::with_capacity(ders.len());
    for der in &ders {
        let owned = OwnedCertRevocationList::from_der(der).map_err(|e| VerifyError::Crl {
            reason: format!("{e}"),
        })?;
        lists.push(CertRevocationList::Owned(owned));
    }
    Ok(CrlSet { ders, lists })
}

/// Shared verification state (one per server configuration).
pub struct VerifierCore {
    anchors: Vec<TrustAnchor<'static>>,
    anchor_ders: Vec<Vec<u8>>,
    bundle_intermediates: Vec<CertificateDer<'static>>,
    root_hints: Vec<DistinguishedName>,
    crls: RwLock<Option<Arc<CrlSet>>>,
    policy: PeerCertPolicy,
    mode: VerifyClientCert,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for VerifierCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierCore")
            .field("anchors", &self.anchors.len())
            .field("bundle_intermediates", &self.bundle_intermediates.len())
            .field("policy", &self.policy)
            .field("mode", &self.mode)
            .finish()
    }
}

impl VerifierCore {
    /// Loads the CA bundle (PEM), the optional CRL, and the policy.
    pub fn new(
        ca_pem: &[u8],
        crl: Option<&[u8]>,
        policy: PeerCertPolicy,
        mode: VerifyClientCert,
        algs: WebPkiSupportedAlgorithms,
    ) -> Result<Self, VerifyError> {
        let mut anchors = Vec::new();
        let mut anchor_ders = Vec::new();
        let mut bundle_intermediates = Vec::new();
        let mut root_hints = Vec::new();
        for item in CertificateDer::pem_slice_iter(ca_pem) {
            let der = item.map_err(|e| VerifyError::CaBundle {
                reason: format!("PEM: {e:?}"),
            })?;
            let der = der.into_owned();
            let parsed = parse_cert(der.as_ref()).map_err(|e| VerifyError::CaBundle {
                reason: e.to_string(),
            })?;
            root_hints.push(DistinguishedName::from(parsed.subject().as_raw().to_vec()));
            let self_issued = parsed.subject().as_raw() == parsed.issuer().as_raw();
            if self_issued {
                let ta = webpki::anchor_from_trusted_cert(&der)
                    .map_err(|e| VerifyError::CaBundle {
                        reason: format!("unusable CA certificate: {e}"),
                    })?
                    .to_owned();
                anchors.push(ta);
                anchor_ders.push(der.as_ref().to_vec());
            } else {
                bundle_intermediates.push(der);
            }
        }
        // INVARIANT: without trust anchors the only accepted clients are those whose certificate
        // fingerprint is configured (`peer-fingerprint` without `ca`); a bundle that has
        // certificates but no self-signed root is an error either way.
        let fingerprint_only = root_hints.is_empty() && !policy.fingerprints.is_empty();
        if anchors.is_empty() && !fingerprint_only {
            return Err(VerifyError::CaBundle {
                reason: "no self-signed CA certificate found in the ca bundle".into(),
            });
        }
        let crls = match crl {
            Some(b) => Some(Arc::new(parse_crls(b)?)),
            None => None,
        };
        Ok(Self {
            anchors,
            anchor_ders,
            bundle_intermediates,
            root_hints,
            crls: RwLock::new(crls),
            policy,
            mode,
            algs,
        })
    }

    /// Replaces the CRL set (`None` disables CRL checking). New handshakes use the new set; on error
    /// the previous set stays in force.
    pub fn set_crl(&self, crl: Option<&[u8]>) -> Result<(), VerifyError> {
        let new = match crl {
            Some(b) => Some(Arc::new(parse_crls(b)?)),
            None => None,
        };
        let mut slot = self.crls.write().unwrap_or_else(|p| p.into_inner());
        *slot = new;
        Ok(())
    }

    fn current_crls(&self) -> Option<Arc<CrlSet>> {
        self.crls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The signature algorithms accepted from clients.
    pub fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algs
    }

    /// Verifies a client chain, recording events (and the identity on success) in `log`.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        log: &VerifyLog,
    ) -> Result<(), rustls::Error> {
        log.clear_identity();
        if self.anchors.is_empty() {
            // peer-fingerprint without a CA: OpenSSL's verdict is ignored, OpenVPN's checks run on
            // the client certificate alone, including the fingerprint match.
            return self.openvpn_checks(&[end_entity.as_ref().to_vec()], now, log, false);
        }
        let presented: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
            .chain(intermediates.iter().map(|c| c.as_ref()))
            .collect();

        let ee = match EndEntityCert::try_from(end_entity) {
            Ok(ee) => ee,
            Err(e) => {
                log.push(
                    EventLevel::Error,
                    format!("VERIFY ERROR: depth=0, error=unable to parse certificate ({e})"),
                );
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::BadEncoding,
                ));
            }
        };
        let mut pool: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect();
        pool.extend(
            self.bundle_intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_ref())),
        );
        let crls = self.current_crls();
        let crl_refs: Vec<&CertRevocationList<'_>> = match &crls {
            Some(set) => set.lists.iter().collect(),
            None => Vec::new(),
        };
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(ExpirationPolicy::Enforce)
                .build()
        });
        let result = ee.verify_for_usage(
            self.algs.all,
            &self.anchors,
            &pool,
            now,
            KeyUsage::client_auth(),
            revocation,
            None,
        );
        let path = match result {
            Ok(p) => p,
            Err(e) => {
                let (reason, depth, cert_err) =
                    self.describe_failure(&e, &presented, now, crls.as_deref());
                let time_error = matches!(
                    e,
                    webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }
                );
                if time_error {
                    // OpenSSL checks dates top-down after the chain is built and trusted: the
                    // certificates above the failing one have already been reported as OK.
                    let chain = self.name_chain(&presented);
                    let depth =
                        time_depth(&chain, now, matches!(e, webpki::Error::CertExpired { .. }));
                    for k in (depth + 1..chain.len()).rev() {
                        let subject = parse_cert(chain[k])
                            .ok()
                            .and_then(|c| format_subject(c.subject()).ok())
                            .unwrap_or_default();
                        log.push(
                            EventLevel::Handshake,
                            format!("VERIFY OK: depth={k}, {subject}"),
                        );
                    }
                    log.push(EventLevel::Error, verify_error_line(depth, &reason, &chain));
                } else {
                    log.push(
                        EventLevel::Error,
                        verify_error_line(depth, &reason, &presented),
                    );
                }
                return Err(rustls::Error::InvalidCertificate(cert_err));
            }
        };

        // The chain as OpenSSL sees it: depth 0 = client certificate ... depth n = trust anchor.
        let mut chain: Vec<Vec<u8>> = vec![end_entity.as_ref().to_vec()];
        for c in path.intermediate_certificates() {
            chain.push(c.der().as_ref().to_vec());
        }
        let anchor_idx = self
            .anchors
            .iter()
            .position(|a| std::ptr::eq(a, path.anchor()));
        let Some(anchor_idx) = anchor_idx else {
            log.push(
                EventLevel::Error,
                "VERIFY ERROR: depth=0, error=unable to get local issuer certificate".into(),
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        chain.push(self.anchor_ders[anchor_idx].clone());
        if let Some(set) = crls.as_deref() {
            crl_missing_warnings(&chain, set, log);
        }
        self.openvpn_checks(&chain, now, log, true)
    }

    /// The chain by issuer/subject names from the client certificate through the presented and
    /// bundle intermediates to a trust anchor (as far as it goes).
    fn name_chain<'a>(&'a self, presented: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let Some(first) = presented.first() else {
            return Vec::new();
        };
        let candidates: Vec<&[u8]> = presented[1..]
            .iter()
            .copied()
            .chain(self.bundle_intermediates.iter().map(|c| c.as_ref()))
            .chain(self.anchor_ders.iter().map(|c| c.as_slice()))
            .collect();
        let mut chain = vec![*first];
        while chain.len() < MAX_CERT_DEPTH {
            let Some(Ok(cur)) = chain.last().map(|d| parse_cert(d)) else {
                break;
            };
            if cur.subject().as_raw() == cur.issuer().as_raw() {
                break;
            }
            let next = candidates.iter().copied().find(|cand| {
                !chain.contains(cand)
                    && parse_cert(cand).is_ok_and(|c| c.subject().as_raw() == cur.issuer().as_raw())
            });
            match next {
                Some(n) => chain.push(n),
                None => break,
            }
        }
        chain
    }

    /// OpenVPN's `verify_cert` for every depth (anchor first), then the identity.
    fn openvpn_checks(
        &self,
        chain: &[Vec<u8>],
        now: UnixTime,
        log: &VerifyLog,
        check_anchor_dates: bool,
    ) -> Result<(), rustls::Error> {
        let fail =
            || rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        let mut infos: Vec<CertInfo> = Vec::with_capacity(chain.len());
        let mut common_name = String::new();
        for depth in (0..chain.len()).rev() {
            let der = &chain[depth];
            let Ok(cert) = parse_cert(der) else {
                log.push(
                    EventLevel::Error,
                    format!(
                        "VERIFY ERROR: depth={depth}, could not extract X509 subject string from certificate"
                    ),
                );
                return Err(fail());
            };
            // The anchor's validity is not checked by webpki; OpenSSL checks it.
            if check_anchor_dates && depth == chain.len() - 1 {
                let t = ASN1Time::from_timestamp(now.as_secs() as i64).ok();
                let v = cert.validity();
                let reason = match t {
                    Some(t) if t > v.not_after => Some("certificate has expired"),
                    Some(t) if t < v.not_before => Some("certificate is not yet valid"),
                    _ => None,
                };
                if let Some(reason) = reason {
                    let presented: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
                    log.push(
                        EventLevel::Error,
                        verify_error_line(depth, reason, &presented),
                    );
                    return Err(rustls::Error::InvalidCertificate(
                        if t.is_some_and(|t| t > v.not_after) {
                            CertificateError::Expired
                        } else {
                            CertificateError::NotValidYet
                        },
                    ));
                }
            }
            let subject = match format_subject(cert.subject()) {
                Ok(s) => s,
                Err(_) => {
                    log.push(
                        EventLevel::Error,
                        format!(
                            "VERIFY ERROR: depth={depth}, could not extract X509 subject string from certificate"
                        ),
                    );
                    return Err(fail());
                }
            };
            match extract_username(&cert, &self.policy.username_fields, &subject) {
                Ok(u) => {
                    if depth == 0 {
                        common_name = u;
                    }
                }
                Err(e) => {
                    if depth == 0 {
                        log.push(EventLevel::Error, format!("VERIFY ERROR: {e}"));
                        return Err(fail());
                    }
                }
            }
            if depth >= MAX_CERT_DEPTH {
                log.push(
                    EventLevel::Error,
                    format!(
                        "TLS Error: Convoluted certificate chain detected with depth [{depth}] greater than {MAX_CERT_DEPTH}"
                    ),
                );
                return Err(fail());
            }
            if depth == 0 && !self.policy.fingerprints.is_empty() {
                let fp: [u8; 32] = sha2::Sha256::digest(der).into();
                if !self.policy.fingerprints.contains(&fp) {
                    log.push(
                        EventLevel::Error,
                        format!(
                            "TLS Error: --tls-verify/--peer-fingerprint certificate hash verification \
                             failed. (got certificate fingerprint: {})",
                            super::x509::colon_hex(&fp)
                        ),
                    );
                    return Err(fail());
                }
            }
            let info = match CertInfo::from_parsed(&cert, der, depth as u32) {
                Ok(i) => i,
                Err(e) => {
                    log.push(
                        EventLevel::Error,
                        format!("VERIFY ERROR: depth={depth}, {e}"),
                    );
                    return Err(fail());
                }
            };
            if depth == 0 && !self.verify_peer_cert(&cert, &subject, &common_name, log) {
                return Err(fail());
            }
            log.push(
                EventLevel::Handshake,
                format!("VERIFY OK: depth={depth}, {subject}"),
            );
            infos.push(info);
        }
        infos.reverse();
        log.set_identity(PeerIdentity {
            common_name,
            chain: infos,
        });
        Ok(())
    }

    /// OpenVPN's `verify_peer_cert` (KU, EKU, X509 name) on the client certificate.
    fn verify_peer_cert(
        &self,
        cert: &X509Certificate<'_>,
        subject: &str,
        common_name: &str,
        log: &VerifyLog,
    ) -> bool {
        let p = &self.policy;
        if !p.ku.is_empty() {
            if check_ku(cert, &p.ku, log) {
                log.push(EventLevel::Handshake, "VERIFY KU OK".into());
            } else {
                log.push(EventLevel::Handshake, "VERIFY KU ERROR".into());
                return false;
            }
        }
        if let Some(expected) = &p.eku {
            if check_eku(cert, expected, log) {
                log.push(EventLevel::Handshake, "VERIFY EKU OK".into());
            } else {
                log.push(EventLevel::Handshake, "VERIFY EKU ERROR".into());
                return false;
            }
        }
        if let Some(x) = &p.x509_name {
            let ok = match x.kind {
                X509NameKind::Subject => x.name == subject,
                X509NameKind::Name => x.name == common_name,
                X509NameKind::NamePrefix => common_name.starts_with(x.name.as_str()),
            };
            if ok {
                log.push(
                    EventLevel::Handshake,
                    format!("VERIFY X509NAME OK: {subject}"),
                );
            } else {
                log.push(
                    EventLevel::Handshake,
                    format!("VERIFY X509NAME ERROR: {subject}, must be {}", x.name),
                );
                return false;
            }
        }
        true
    }

    /// Maps a webpki failure to OpenSSL's reason string, the failing depth and a rustls error.
    fn describe_failure(
        &self,
        e: &webpki::Error,
        presented: &[&[u8]],
        now: UnixTime,
        crls: Option<&CrlSet>,
    ) -> (String, usize, CertificateError) {
        use webpki::Error as W;
        #[allow(deprecated)]
        match e {
            W::UnknownIssuer => {
                let (depth, reason) = unknown_issuer_depth(presented);
                (reason.into(), depth, CertificateError::UnknownIssuer)
            }
            W::CertRevoked => (
                "certificate revoked".into(),
                revoked_depth(presented, crls),
                CertificateError::Revoked,
            ),
            W::CertExpired { .. } => (
                "certificate has expired".into(),
                time_depth(presented, now, true),
                CertificateError::Expired,
            ),
            W::CertNotValidYet { .. } => (
                "certificate is not yet valid".into(),
                time_depth(presented, now, false),
                CertificateError::NotValidYet,
            ),
            W::InvalidSignatureForPublicKey => (
                "certificate signature failure".into(),
                0,
                CertificateError::BadSignature,
            ),
            W::UnsupportedSignatureAlgorithm
            | W::UnsupportedSignatureAlgorithmContext(_)
            | W::UnsupportedSignatureAlgorithmForPublicKey
            | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => (
                "certificate signature algorithm not supported".into(),
                0,
                CertificateError::BadSignature,
            ),
            W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) | W::CaUsedAsEndEntity => (
                "unsupported certificate purpose".into(),
                0,
                CertificateError::InvalidPurpose,
            ),
            W::EndEntityUsedAsCa => (
                "invalid CA certificate".into(),
                1,
                CertificateError::Other(OtherError(Arc::new(e.clone()))),
            ),
            W::PathLenConstraintViolated => (
                "path length constraint exceeded".into(),
                1,
                CertificateError::Other(OtherError(Arc::new(e.clone()))),
            ),
            W::MaximumPathDepthExceeded => (
                "certificate chain too long".into(),
                0,
                CertificateError::Other(OtherError(Arc::new(e.clone()))),
            ),
            W::CrlExpired { .. } => (
                "CRL has expired".into(),
                0,
                CertificateError::ExpiredRevocationList,
            ),
            W::InvalidCrlSignatureForPublicKey => (
                "CRL signature failure".into(),
                0,
                CertificateError::Other(OtherError(Arc::new(e.clone()))),
            ),
            W::UnsupportedCriticalExtension => (
                "unhandled critical extension".into(),
                0,
                CertificateError::UnhandledCriticalExtension,
            ),
            W::NameConstraintViolation => (
                "permitted subtree violation".into(),
                0,
                CertificateError::Other(OtherError(Arc::new(e.clone()))),
            ),
            W::BadDer
            | W::BadDerTime
            | W::TrailingData(_)
            | W::MalformedExtensions
            | W::ExtensionValueInvalid
            | W::InvalidCertValidity
            | W::UnsupportedCertVersion
            | W::InvalidSerialNumber => (
                format!("certificate parse error ({e})"),
                0,
                CertificateError::BadEncoding,
            ),
            other => (
                format!("certificate verify failed ({other})"),
                0,
                CertificateError::Other(OtherError(Arc::new(other.clone()))),
            ),
        }
    }
}

/// `VERIFY ERROR: depth=N, error=<reason>: <subject>, serial=<serial>`.
fn verify_error_line(depth: usize, reason: &str, chain: &[&[u8]]) -> String {
    let (subject, serial) = match chain.get(depth).map(|d| parse_cert(d)) {
        Some(Ok(c)) => (
            format_subject(c.subject())
                .unwrap_or_else(|_| "(Failed to retrieve certificate subject)".into()),
            c.tbs_certificate.serial.to_string(),
        ),
        _ => (
            "(Failed to retrieve certificate subject)".into(),
            "<not available>".into(),
        ),
    };
    format!("VERIFY ERROR: depth={depth}, error={reason}: {subject}, serial={serial}")
}

/// Follows the presented certificates by issuer name to find where the chain breaks.
fn unknown_issuer_depth(presented: &[&[u8]]) -> (usize, &'static str) {
    let parsed: Vec<Option<X509Certificate<'_>>> =
        presented.iter().map(|d| parse_cert(d).ok()).collect();
    let mut used = vec![false; parsed.len()];
    let mut cur = 0usize;
    for _ in 0..parsed.len() {
        let Some(Some(c)) = parsed.get(cur) else {
            break;
        };
        used[cur] = true;
        if c.subject().as_raw() == c.issuer().as_raw() {
            return if cur == 0 {
                (0, "self-signed certificate")
            } else {
                (cur, "self-signed certificate in certificate chain")
            };
        }
        let next = parsed.iter().enumerate().position(|(j, p)| {
            !used[j]
                && p.as_ref()
                    .is_some_and(|p| p.subject().as_raw() == c.issuer().as_raw())
        });
        match next {
            Some(j) => cur = j,
            None => break,
        }
    }
    (cur, "unable to get local issuer certificate")
}

/// OpenSSL (`X509_V_FLAG_CRL_CHECK_ALL`) reports every chain certificate whose issuer has no CRL as
/// `unable to get certificate CRL`; OpenVPN logs that as a warning and continues.
fn crl_missing_warnings(chain: &[Vec<u8>], set: &CrlSet, log: &VerifyLog) {
    let issuers: Vec<Vec<u8>> = set
        .ders
        .iter()
        .filter_map(|d| CertificateRevocationList::from_der(d).ok())
        .map(|(_, c)| c.issuer().as_raw().to_vec())
        .collect();
    for (depth, der) in chain.iter().enumerate() {
        let Ok(cert) = parse_cert(der) else { continue };
        if !issuers
            .iter()
            .any(|i| i.as_slice() == cert.issuer().as_raw())
        {
            let subject = format_subject(cert.subject())
                .unwrap_or_else(|_| "(Failed to retrieve certificate subject)".into());
            log.push(
                EventLevel::Debug,
                format!("VERIFY WARNING: depth={depth}, unable to get certificate CRL: {subject}"),
            );
        }
    }
}

/// The lowest depth whose (issuer, serial) is listed in a CRL from that issuer.
fn revoked_depth(presented: &[&[u8]], crls: Option<&CrlSet>) -> usize {
    let Some(set) = crls else { return 0 };
    let parsed_crls: Vec<CertificateRevocationList<'_>> = set
        .ders
        .iter()
        .filter_map(|d| CertificateRevocationList::from_der(d).ok().map(|(_, c)| c))
        .collect();
    for (depth, der) in presented.iter().enumerate() {
        let Ok(cert) = parse_cert(der) else { continue };
        let hit = parsed_crls.iter().any(|crl| {
            crl.issuer().as_raw() == cert.issuer().as_raw()
                && crl
                    .iter_revoked_certificates()
                    .any(|r| r.user_certificate == cert.tbs_certificate.serial)
        });
        if hit {
            return depth;
        }
    }
    0
}

/// The highest presented depth that is expired (`expired`) or not yet valid.
fn time_depth(presented: &[&[u8]], now: UnixTime, expired: bool) -> usize {
    let Ok(t) = ASN1Time::from_timestamp(now.as_secs() as i64) else {
        return 0;
    };
    let mut found = 0;
    for (depth, der) in presented.iter().enumerate() {
        let Ok(cert) = parse_cert(der) else { continue };
        let v = cert.validity();
        let bad = if expired {
            t > v.not_after
        } else {
            t < v.not_before
        };
        if bad {
            found = depth;
        }
    }
    found
}

/// OpenVPN's `x509_verify_cert_ku`.
fn check_ku(cert: &X509Certificate<'_>, expected: &[u16], log: &VerifyLog) -> bool {
    let nku = match key_usage_value(cert) {
        Ok(Some(v)) => v,
        Ok(None) | Err(_) => {
            log.push(
                EventLevel::Error,
                "Certificate does not have key usage extension".into(),
            );
            return false;
        }
    };
    if expected.first() == Some(&KU_REQUIRED) {
        return true;
    }
    log.push(
        EventLevel::Handshake,
        "Validating certificate key usage".into(),
    );
    let found = expected.iter().any(|&e| e != 0 && nku & e == e);
    if !found {
        log.push(
            EventLevel::Error,
            format!("ERROR: Certificate has key usage {nku:04x}, expected one of:"),
        );
        for e in expected.iter().take_while(|e| **e != 0) {
            log.push(EventLevel::Error, format!(" * {e:04x}"));
        }
    }
    found
}

/// OpenVPN's `x509_verify_cert_eku`: each EKU is compared by long name, then by dotted OID.
fn check_eku(cert: &X509Certificate<'_>, expected: &str, log: &VerifyLog) -> bool {
    let oids = match eku_oids(cert) {
        Ok(Some(o)) => o,
        Ok(None) | Err(_) => {
            log.push(
                EventLevel::Handshake,
                "Certificate does not have extended key usage extension".into(),
            );
            return false;
        }
    };
    log.push(
        EventLevel::Handshake,
        "Validating certificate extended key usage".into(),
    );
    for oid in &oids {
        let text = eku_long_name(oid).unwrap_or(oid.as_str());
        log.push(
            EventLevel::Handshake,
            format!("++ Certificate has EKU (str) {text}, expects {expected}"),
        );
        if text == expected {
            return true;
        }
        log.push(
            EventLevel::Handshake,
            format!("++ Certificate has EKU (oid) {oid}, expects {expected}"),
        );
        if oid == expected {
            return true;
        }
    }
    false
}

/// The per-session `ClientCertVerifier` handed to rustls.
pub struct SessionVerifier {
    core: Arc<VerifierCore>,
    log: VerifyLog,
}

impl SessionVerifier {
    /// Binds the shared core to one session's log slot.
    pub fn new(core: Arc<VerifierCore>, log: VerifyLog) -> Self {
        Self { core, log }
    }
}

impl fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionVerifier")
            .field("core", &self.core)
            .finish()
    }
}

impl ClientCertVerifier for SessionVerifier {
    fn offer_client_auth(&self) -> bool {
        self.core.mode != VerifyClientCert::None
    }

    fn client_auth_mandatory(&self) -> bool {
        self.core.mode == VerifyClientCert::Require
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.core.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.core
            .verify(end_entity, intermediates, now, &self.log)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.core.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.core.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core.algs.supported_schemes()
    }
}

/// Certificate signature algorithms allowed under `tls-cert-profile suiteb`.
pub static SUITE_B_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[
                webpki::ring::ECDSA_P384_SHA384,
                webpki::ring::ECDSA_P256_SHA384,
            ],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[
                webpki::ring::ECDSA_P256_SHA256,
                webpki::ring::ECDSA_P384_SHA256,
            ],
        ),
    ],
};
