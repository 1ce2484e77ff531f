//! Serving the worker's signer channel: the parent answers TLS signature requests with the server key,
//! which never leaves this process.
//!
//! One blocking thread per worker incarnation reads [`SignRequest`]s (already validated by the IPC
//! layer: known scheme, bounded size), lets [`ServerKeySigner`] check and rate-limit them, and answers.
//! Refusals are logged as security-relevant events, the first at once and then at most one summary
//! line per second with the count (a compromised worker must not be able to flood the log). A
//! protocol error on the channel (garbage, wrong fd counts, ...) is a violation: it is reported to
//! the supervision loop, which kills that worker as for any other IPC violation; the channel
//! closing ends the thread (the worker died or is being replaced).

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

/// A signer-channel violation of the worker with this pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerViolation {
    /// The worker's pid.
    pub pid: i32,
    /// What happened.
    pub what: String,
}

/// Starts the thread that serves `channel` (of the worker `pid`) with `key`; violations are
/// reported on `violations`.
pub fn spawn(
    mut channel: ParentSigner,
    key: Arc<Mutex<ServerKeySigner>>,
    pid: i32,
    violations: tokio::sync::mpsc::UnboundedSender<SignerViolation>,
) -> Result<std::thread::JoinHandle<()>, SignerServiceError> {
    std::thread::Builder::new()
        .name("signer".into())
        .spawn(move || {
            let mut refused_since_report: u64 = 0;
            let mut last_report: Option<Instant> = None;
            let (mut signed, mut refused) = (0u64, 0u64);
            loop {
            let req = match channel.recv() {
                Ok(r) => r.msg,
                Err(ChannelError::PeerClosed) => {
                    tracing::info!(
                        "AUDIT: signer for worker {pid} closed: {signed} signature(s) made, {refused} refused"
                    );
                    return;
                }
                Err(e) => {
                    let what = format!("signer channel: {}", error_chain(&e));
                    let _ = violations.send(SignerViolation { pid, what });
                    return;
                }
            };
            let result = match key.lock() {
                Ok(mut k) => k.sign(req.scheme, &req.message, Instant::now()),
                Err(_) => Err(SignerError::SignFailed {
                    reason: "signer state poisoned".into(),
                }),
            };
            match &result {
                Ok(_) => signed += 1,
                Err(_) => refused += 1,
            }
            let result = result.map_err(|e| {
                refused_since_report += 1;
                let now = Instant::now();
                let due = last_report
                    .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1));
                if due {
                    tracing::warn!(
                        "SECURITY: refused {} signature request(s) from the worker since the last report; latest: {}",
                        refused_since_report,
                        error_chain(&e)
                    );
                    refused_since_report = 0;
                    last_report = Some(now);
                }
                failure_of(&e)
            });
            if let Err(e) = channel.send(&SignResponse { id: req.id, result }, &[]) {
                tracing::debug!("signer channel closed: {}", error_chain(&e));
                return;
            }
            }
        })
        .map_err(SignerServiceError::Spawn)
}
