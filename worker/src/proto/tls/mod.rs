//! The TLS server side of the control channel, on rustls 0.23 with the *ring* crypto provider
//! (chosen over aws-lc-rs for build time; `docs/architecture.md` still names aws-lc-rs).
//!
//! API (what the session/server code calls):
//! ```text
//! let server = TlsServer::new(&settings, signer)?;   // settings: ServerTlsSettings (from IPC)
//!                                                    // signer: Arc<dyn KeySigner> (IPC to the parent)
//! let mut tls = server.new_session()?;               // one per key_state (key_id), fresh handshake
//! tls.feed_ciphertext(&bytes)?;                      // TLS bytes from P_CONTROL packets, in order
//! tls.take_ciphertext(&mut out);                     // TLS bytes to send (chop into P_CONTROL)
//! for ev in tls.take_verify_events() { log(ev) }     // "VERIFY OK: depth=1, CN=TestCA", ...
//! if !tls.is_handshaking() {
//!     log(tls.control_channel_line());               // "Control Channel: TLSv1.3, cipher ..."
//!     let id = tls.peer_identity();                  // CN/username, tls_serial_0, X509_0_*, ...
//!     tls.read_plaintext(&mut buf);                  // key-method-2 + text messages
//!     tls.write_plaintext(msg)?;                     // one message = one record (<= 2048 bytes)
//!     let key2: [u8; 256] = tls.export_keying_material(b"EXPORTER-OpenVPN-datakeys")?;
//! }
//! server.set_crl(Some(&new_crl_bytes))?;             // CRL reload: applies to new handshakes
//! ```
//!
//! Invariants:
//! - The server private key never enters this module: [`RemoteSigningKey`] forwards every signature
//!   to a [`KeySigner`]. The certificate chain PEM is rejected if it contains a private key.
//! - No session resumption: no session cache, no ticketer, `send_tls13_tickets = 0`; every key_state
//!   is a full handshake (as OpenVPN does), so per-session TLS state is bounded.
//! - No SNI or ALPN dependence: the certificate resolver always returns the one server chain.
//! - Server cipher preference (`SSL_OP_CIPHER_SERVER_PREFERENCE` in OpenVPN).
//! - Each session gets its own `ServerConfig` so that its verifier writes into that session's
//!   [`VerifyLog`]; the expensive parts (trust anchors, CRLs, signing key, provider) are shared.
//! - Randomness: rustls draws from the ring provider's system RNG (`getrandom`); time for
//!   certificate validity comes from the rustls `TimeProvider` (system clock by default, injectable
//!   with [`TlsServer::with_time_provider`]).

pub mod session;
pub mod settings;
pub mod signer;
pub mod verify;
pub mod x509;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::time_provider::{DefaultTimeProvider, TimeProvider};
use rustls::{ServerConfig, ServerConnection, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;

pub use session::{SessionError, TlsSession, MAX_PLAINTEXT_MESSAGE};
pub use settings::{
    CertProfile, RemoteCertTls, ServerTlsSettings, SettingsError, TlsVersion, TlsVersionMin,
    VerifyClientCert, VerifyX509Name, X509NameKind,
};
pub use signer::{KeySigner, KeyTypeError, RemoteSigningKey, SignError};
pub use verify::{EventLevel, VerifyError, VerifyEvent, VerifyLog};
pub use x509::{CertInfo, PeerIdentity};

/// OpenVPN's EKM label for data-channel keys (256 bytes, no context).
pub const EKM_LABEL_DATAKEYS: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// EKM label for the dynamic tls-crypt key (256 bytes, no context).
pub const EKM_LABEL_DYNAMIC_TLS_CRYPT: &[u8] = b"EXPORTER-OpenVPN-dynamic-tls-crypt";

/// Errors building the TLS server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Invalid TLS option values.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The server certificate chain PEM is empty or malformed.
    #[error("cannot load the server certificate chain: {reason}")]
    ServerCertificate {
        /// Why.
        reason: String,
    },
    /// The certificate PEM given to the worker contains a private key.
    #[error("the server certificate PEM contains a private key; the key must stay in the parent")]
    PrivateKeyInCertificate,
    /// The server key type is unusable or does not match the signer.
    #[error(transparent)]
    KeyType(#[from] KeyTypeError),
    /// `tls-cert-profile suiteb` with a key that is not ECDSA P-256/P-384.
    #[error("tls-cert-profile suiteb requires an ECDSA P-256 or P-384 server key")]
    SuiteBKey,
    /// CA bundle or CRL problems.
    #[error(transparent)]
    Verifier(#[from] VerifyError),
    /// rustls rejected the configuration.
    #[error("rustls rejected the configuration ({what}): {source}")]
    Rustls {
        /// Which step.
        what: &'static str,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
}

/// Always returns the server chain (no SNI dependence).
#[derive(Debug)]
struct FixedCertResolver(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Shared, immutable-after-build server TLS state; cheap to clone.
#[derive(Clone)]
pub struct TlsServer {
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
    resolver: Arc<FixedCertResolver>,
    core: Arc<verify::VerifierCore>,
    time: Arc<dyn TimeProvider>,
    warnings: Arc<Vec<String>>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("versions", &self.versions)
            .field("suites", &self.provider.cipher_suites)
            .field("core", &self.core)
            .finish()
    }
}

impl TlsServer {
    /// Validates the settings, loads CA/CRL/chain, binds the signer to the server certificate.
    pub fn new(settings: &ServerTlsSettings, signer: Arc<dyn KeySigner>) -> Result<Self, TlsError> {
        let resolved = settings.resolve()?;
        let policy = settings.peer_cert_policy()?;

        let chain = load_chain(&settings.cert_chain_pem)?;
        let leaf = chain.first().ok_or_else(|| TlsError::ServerCertificate {
            reason: "no certificate found".into(),
        })?;
        let mut key = RemoteSigningKey::new(signer, leaf.as_ref())?;
        if resolved.suite_b
            && !key.restrict(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384,
            ])
        {
            return Err(TlsError::SuiteBKey);
        }
        let warnings = server_cert_warnings(leaf.as_ref());
        let certified = CertifiedKey::new(chain, Arc::new(key));

        let base = rustls::crypto::ring::default_provider();
        let algs = if resolved.suite_b {
            verify::SUITE_B_ALGORITHMS
        } else {
            base.signature_verification_algorithms
        };
        let provider = Arc::new(CryptoProvider {
            cipher_suites: resolved.suites.clone(),
            kx_groups: resolved.kx_groups.clone(),
            signature_verification_algorithms: algs,
            ..base
        });
        let core = verify::VerifierCore::new(
            &settings.ca_pem,
            settings.crl.as_deref(),
            policy,
            settings.verify_client_cert,
            algs,
        )?;
        let server = Self {
            provider,
            versions: resolved.versions,
            resolver: Arc::new(FixedCertResolver(Arc::new(certified))),
            core: Arc::new(core),
            time: Arc::new(DefaultTimeProvider),
            warnings: Arc::new(warnings),
        };
        // Build once so that configuration errors surface here, not at the first handshake.
        server.server_config(VerifyLog::new())?;
        Ok(server)
    }

    /// Uses `time` for certificate/CRL validity checks instead of the system clock.
    pub fn with_time_provider(mut self, time: Arc<dyn TimeProvider>) -> Self {
        self.time = time;
        self
    }

    /// A rustls `ServerConfig` whose client-certificate verifier records into `log`.
    pub fn server_config(&self, log: VerifyLog) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = Arc::new(verify::SessionVerifier::new(Arc::clone(&self.core), log));
        let mut cfg =
            ServerConfig::builder_with_details(Arc::clone(&self.provider), Arc::clone(&self.time))
                .with_protocol_versions(&self.versions)
                .map_err(|source| TlsError::Rustls {
                    what: "protocol versions",
                    source,
                })?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(Arc::clone(&self.resolver) as Arc<dyn ResolvesServerCert>);
        cfg.ignore_client_order = true;
        cfg.session_storage = Arc::new(NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        cfg.alpn_protocols = Vec::new();
        cfg.max_early_data_size = 0;
        Ok(Arc::new(cfg))
    }

    /// A new server-side TLS session (one per key_state).
    pub fn new_session(&self) -> Result<TlsSession, TlsError> {
        let log = VerifyLog::new();
        let cfg = self.server_config(log.clone())?;
        let conn = ServerConnection::new(cfg).map_err(|source| TlsError::Rustls {
            what: "new connection",
            source,
        })?;
        Ok(TlsSession::new(conn, log))
    }

    /// Replaces the CRL (`None`: no CRL checking). Sessions created afterwards use the new list;
    /// on error the previous CRL stays in force.
    pub fn set_crl(&self, crl: Option<&[u8]>) -> Result<(), TlsError> {
        self.core.set_crl(crl).map_err(TlsError::from)
    }

    /// Problems of the server certificate that make stock OpenVPN clients reject it (no CN, CN
    /// longer than 64 characters, no keyUsage, EKU without serverAuth for `remote-cert-tls server`).
    pub fn server_cert_warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Builds a rustls `ServerConfig` for `settings` with the key behind `signer`; its client verifier
/// records into `log`. [`TlsServer`] is the usual entry point (one config per session).
pub fn build_server_config(
    settings: &ServerTlsSettings,
    signer: Arc<dyn KeySigner>,
    log: VerifyLog,
) -> Result<Arc<ServerConfig>, TlsError> {
    TlsServer::new(settings, signer)?.server_config(log)
}

fn load_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if pem.windows(16).any(|w| w == b"PRIVATE KEY-----") {
        return Err(TlsError::PrivateKeyInCertificate);
    }
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| TlsError::ServerCertificate {
            reason: format!("PEM: {e:?}"),
        })?;
        chain.push(der.into_owned());
    }
    if chain.is_empty() {
        return Err(TlsError::ServerCertificate {
            reason: "no CERTIFICATE block found".into(),
        });
    }
    for c in &chain {
        x509::parse_cert(c.as_ref()).map_err(|e| TlsError::ServerCertificate {
            reason: e.to_string(),
        })?;
    }
    Ok(chain)
}

fn server_cert_warnings(der: &[u8]) -> Vec<String> {
    let mut w = Vec::new();
    let Ok(cert) = x509::parse_cert(der) else {
        return w;
    };
    let subject = x509::format_subject(cert.subject()).unwrap_or_default();
    match x509::extract_username(&cert, &["CN".to_string()], &subject) {
        Ok(cn) if cn.is_empty() => w.push("server certificate has an empty CN".into()),
        Ok(_) => {}
        Err(_) => w.push(
            "server certificate has no CN of at most 64 characters; OpenVPN clients reject it"
                .into(),
        ),
    }
    if !matches!(x509::key_usage_value(&cert), Ok(Some(_))) {
        w.push(
            "server certificate has no keyUsage extension; clients with 'remote-cert-tls server' reject it"
                .into(),
        );
    }
    match x509::eku_oids(&cert) {
        Ok(Some(oids)) if oids.iter().any(|o| o == "1.3.6.1.5.5.7.3.1") => {}
        _ => w.push(
            "server certificate lacks EKU serverAuth; clients with 'remote-cert-tls server' reject it"
                .into(),
        ),
    }
    w
}
