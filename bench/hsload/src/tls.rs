//! The TLS client configuration of a generated session: rustls with the *ring* provider, the client
//! certificate and key from the bench PKI, the server chain checked against the CA like a stock 2.6
//! client with `remote-cert-tls server` (chain + serverAuth EKU, no host name: OpenVPN checks none,
//! and the bench server certificate has no subject alternative name), no SNI, no session resumption
//! (OpenVPN never resumes, so every generated handshake is a full one, as a stock client's is).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// Errors building the client TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds no certificate.
    #[error("{path}: cannot read certificates: {reason}")]
    Certificates {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key file could not be read.
    #[error("{path}: cannot read the private key: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A CA certificate was refused by the root store.
    #[error("{path}: CA certificate not usable: {source}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the configuration (e.g. the key does not match a supported type).
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::Certificates {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Builds the shared client configuration from the CA, client certificate (chain) and key files.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c).map_err(|source| TlsSetupError::Ca {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    build_client_config(roots, chain, key)
}

/// The client configuration from parsed material (see the module documentation for its settings).
pub fn build_client_config(
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(ChainVerifier {
        roots: Arc::new(roots),
        provider: provider.clone(),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    // as the stock client: no SNI, no resumption (a full handshake every time)
    cfg.enable_sni = false;
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// The server name rustls needs for a connection: the server's address (not sent: SNI is off and
/// never sent for addresses; not checked: see [`ChainVerifier`]).
pub fn server_name(server: &SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(server.ip().into())
}

/// Checks the server certificate chain to the CA and the serverAuth extended key usage (rustls'
/// server verification without the name check), and the handshake signatures.
#[derive(Debug)]
struct ChainVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
