//! Serving the worker's signer channel: the parent answers TLS signature requests with the server key,
//! which never leaves this process.
//!
//! One blocking thread per worker incarnation reads [`SignRequest`]s (already validated by the IPC
//! layer: known scheme, bounded size), lets [`ServerKeySigner`] check and rate-limit them, and answers.
//! Every refusal is logged as a security-relevant event; a channel error ends the thread (the worker
//! died or is being replaced).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulwark_ipc::msg::{SignFailure, SignResponse};
use bulwark_ipc::{ChannelError, ParentSigner};

use crate::error_chain;
use crate::signer::{ServerKeySigner, SignerError};

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
pub enum SignerServiceError {
    /// The thread could not be created.
    #[error("cannot start the signer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

fn failure_of(e: &SignerError) -> SignFailure {
    match e {
        SignerError::SchemeNotForKey { .. } => SignFailure::UnsupportedScheme,
        SignerError::RateLimited | SignerError::MessageRejected { .. } => SignFailure::Refused,
        _ => SignFailure::Failed,
    }
}

/// Starts the thread that serves `channel` with `key`.
pub fn spawn(
    mut channel: ParentSigner,
    key: Arc<Mutex<ServerKeySigner>>,
) -> Result<std::thread::JoinHandle<()>, SignerServiceError> {
    std::thread::Builder::new()
        .name("signer".into())
        .spawn(move || loop {
            let req = match channel.recv() {
                Ok(r) => r.msg,
                Err(ChannelError::PeerClosed) => return,
                Err(e) => {
                    tracing::error!(
                        "SECURITY: worker signer channel protocol error, closing it: {}",
                        error_chain(&e)
                    );
                    return;
                }
            };
            let result = match key.lock() {
                Ok(mut k) => k.sign(req.scheme, &req.message, Instant::now()),
                Err(_) => Err(SignerError::SignFailed {
                    reason: "signer state poisoned".into(),
                }),
            };
            let result = result.map_err(|e| {
                tracing::warn!(
                    "SECURITY: refused a signature request from the worker: {}",
                    error_chain(&e)
                );
                failure_of(&e)
            });
            if let Err(e) = channel.send(&SignResponse { id: req.id, result }, &[]) {
                tracing::debug!("signer channel closed: {}", error_chain(&e));
                return;
            }
        })
        .map_err(SignerServiceError::Spawn)
}
