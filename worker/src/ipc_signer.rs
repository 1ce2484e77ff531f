//! The worker's [`KeySigner`]: every TLS signature is a blocking round trip to the parent, which holds
//! the server's private key. The worker never sees the key.

use std::time::Duration;

use bulwark_ipc::{SignerClient, WorkerSigner};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::proto::tls::{signer::key_type_of_cert, KeySigner, SignError};

/// How long one signature may take before the handshake fails.
pub const SIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors setting up the IPC signer.
#[derive(Debug, thiserror::Error)]
pub enum IpcSignerError {
    /// The certificate chain has no usable first certificate.
    #[error("server certificate: {0}")]
    Certificate(String),
    /// The signer channel could not be configured.
    #[error("signer channel: {0}")]
    Channel(String),
}

/// Signs through the parent.
#[derive(Debug)]
pub struct IpcSigner {
    client: SignerClient,
    algorithm: SignatureAlgorithm,
}

impl IpcSigner {
    /// Wraps the signer channel; the key algorithm is read from the leaf certificate of `chain_pem`.
    pub fn new(channel: WorkerSigner, chain_pem: &[u8]) -> Result<Self, IpcSignerError> {
        let leaf = CertificateDer::pem_slice_iter(chain_pem)
            .next()
            .ok_or_else(|| IpcSignerError::Certificate("no certificate".into()))?
            .map_err(|e| IpcSignerError::Certificate(format!("{e:?}")))?;
        let kt = key_type_of_cert(leaf.as_ref())
            .map_err(|e| IpcSignerError::Certificate(e.to_string()))?;
        let client = SignerClient::new(channel, SIGN_TIMEOUT)
            .map_err(|e| IpcSignerError::Channel(e.to_string()))?;
        Ok(Self {
            client,
            algorithm: kt.algorithm,
        })
    }
}

impl KeySigner for IpcSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn sign(&self, scheme: SignatureScheme, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        self.client
            .sign(u16::from(scheme), msg)
            .map_err(|e| match e {
                bulwark_ipc::signer_client::SignerError::Refused { failure, .. } => {
                    SignError::Refused {
                        reason: format!("{failure:?}"),
                    }
                }
                other => SignError::Transport {
                    reason: other.to_string(),
                },
            })
    }
}
