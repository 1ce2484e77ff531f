//! [`SignerClient`]: the worker's side of the signer channel, shareable between threads (what a
//! rustls `SigningKey`/`Signer` implementation needs: `Send + Sync`, blocking).
//!
//! API: [`SignerClient::new`] wraps the worker's [`WorkerSigner`] end with a per-request timeout;
//! [`SignerClient::sign`] sends one [`SignRequest`] and waits for the [`SignResponse`] with the same
//! id. Requests are serialized by a mutex (one outstanding request at a time).
//!
//! Invariant: a response is only ever returned for the request with the same id. After a
//! timed-out request its late response may still arrive; the next call recognises it by its older
//! id and discards it (at most [`MAX_STALE_RESPONSES`] per call, so a misbehaving parent cannot
//! keep a worker thread looping).

use std::sync::Mutex;
use std::time::Duration;

use crate::channel::ChannelError;
use crate::layout::WorkerSigner;
#[cfg(doc)]
use crate::msg::SignResponse;
use crate::msg::{SignFailure, SignRequest};

/// Most stale responses one [`SignerClient::sign`] call discards before giving up.
pub const MAX_STALE_RESPONSES: usize = 8;

/// Signing over IPC failed.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// Setting the receive timeout failed.
    #[error("configuring the signer channel")]
    Setup(#[source] ChannelError),
    /// Sending the request failed (includes an invalid request: unsupported scheme, empty or
    /// oversized message).
    #[error("sending sign request {id}")]
    Send {
        /// The request id.
        id: u64,
        /// Why.
        #[source]
        source: ChannelError,
    },
    /// Receiving the response failed (includes a timeout and a closed parent).
    #[error("receiving the response to sign request {id}")]
    Recv {
        /// The request id.
        id: u64,
        /// Why.
        #[source]
        source: ChannelError,
    },
    /// The parent answered with an id that was never asked for.
    #[error("signer answered id {got} while request {id} was outstanding")]
    UnexpectedId {
        /// The outstanding request.
        id: u64,
        /// The id in the response.
        got: u64,
    },
    /// Too many stale responses arrived before the right one.
    #[error("more than {MAX_STALE_RESPONSES} stale signer responses before the answer to {id}")]
    TooManyStale {
        /// The outstanding request.
        id: u64,
    },
    /// The parent declined to sign.
    #[error("signer refused request {id}: {failure:?}")]
    Refused {
        /// The request id.
        id: u64,
        /// Its reason.
        failure: SignFailure,
    },
}

#[derive(Debug)]
struct State {
    channel: WorkerSigner,
    next_id: u64,
}

/// Blocking, thread-safe client for the parent's signer.
#[derive(Debug)]
pub struct SignerClient {
    state: Mutex<State>,
}

impl SignerClient {
    /// Wrap the worker's signer channel end; every response must arrive within `timeout`.
    pub fn new(channel: WorkerSigner, timeout: Duration) -> Result<Self, SignerError> {
        channel
            .set_recv_timeout(Some(timeout))
            .map_err(SignerError::Setup)?;
        Ok(SignerClient {
            state: Mutex::new(State {
                channel,
                next_id: 1,
            }),
        })
    }

    /// Ask the parent to sign `message` with TLS signature scheme `scheme` (wire value).
    pub fn sign(&self, scheme: u16, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        // A panic while holding the lock leaves at worst an unanswered request behind, which the
        // id check below copes with, so a poisoned lock is safe to keep using.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        let request = SignRequest {
            id,
            scheme,
            message: message.to_vec(),
        };
        state
            .channel
            .send(&request, &[])
            .map_err(|source| SignerError::Send { id, source })?;
        for _ in 0..=MAX_STALE_RESPONSES {
            let response = state
                .channel
                .recv()
                .map_err(|source| SignerError::Recv { id, source })?
                .msg;
            if response.id == id {
                return response
                    .result
                    .map_err(|failure| SignerError::Refused { id, failure });
            }
            if response.id > id {
                return Err(SignerError::UnexpectedId {
                    id,
                    got: response.id,
                });
            }
            // an older id: the late answer to a request that timed out; drop it
        }
        Err(SignerError::TooManyStale { id })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::layout::ParentSigner;
    use crate::msg::SignResponse;
    use crate::Channel;
    use std::sync::Arc;

    fn pair() -> (WorkerSigner, ParentSigner) {
        Channel::pair().unwrap()
    }

    fn reverse(m: &[u8]) -> Vec<u8> {
        m.iter().rev().copied().collect()
    }

    #[test]
    fn concurrent_callers_get_their_own_answers() {
        let (w, mut p) = pair();
        let client = Arc::new(SignerClient::new(w, Duration::from_secs(10)).unwrap());
        let server = std::thread::spawn(move || {
            for _ in 0..40 {
                let req = p.recv().unwrap().msg;
                p.send(
                    &SignResponse {
                        id: req.id,
                        result: Ok(reverse(&req.message)),
                    },
                    &[],
                )
                .unwrap();
            }
        });
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let c = Arc::clone(&client);
                std::thread::spawn(move || {
                    for i in 0..10u8 {
                        let msg = vec![t, i, 0xaa];
                        assert_eq!(c.sign(0x0804, &msg).unwrap(), reverse(&msg));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        server.join().unwrap();
    }

    #[test]
    fn late_answer_is_discarded_and_refusal_reported() {
        let (w, mut p) = pair();
        let client = SignerClient::new(w, Duration::from_millis(100)).unwrap();
        // first request: no answer in time
        assert!(matches!(
            client.sign(0x0804, b"one"),
            Err(SignerError::Recv {
                id: 1,
                source: ChannelError::TimedOut
            })
        ));
        let first = p.recv().unwrap().msg;
        // its late answer arrives, then the answer to the second request
        p.send(
            &SignResponse {
                id: first.id,
                result: Ok(b"late".to_vec()),
            },
            &[],
        )
        .unwrap();
        p.send(
            &SignResponse {
                id: 2,
                result: Err(SignFailure::Refused),
            },
            &[],
        )
        .unwrap();
        assert!(matches!(
            client.sign(0x0804, b"two"),
            Err(SignerError::Refused {
                id: 2,
                failure: SignFailure::Refused
            })
        ));
        assert_eq!(p.recv().unwrap().msg.id, 2);
        // an answer from the future is an error
        p.send(
            &SignResponse {
                id: 77,
                result: Ok(b"x".to_vec()),
            },
            &[],
        )
        .unwrap();
        assert!(matches!(
            client.sign(0x0804, b"three"),
            Err(SignerError::UnexpectedId { id: 3, got: 77 })
        ));
        // an invalid request never leaves the worker
        assert!(matches!(
            client.sign(0x0201, b"sha1"),
            Err(SignerError::Send { .. })
        ));
        drop(p);
        assert!(matches!(
            client.sign(0x0804, b"four"),
            Err(SignerError::Send {
                source: ChannelError::PeerClosed,
                ..
            }) | Err(SignerError::Recv {
                source: ChannelError::PeerClosed,
                ..
            })
        ));
    }

    #[test]
    fn endless_stale_answers_are_bounded() {
        let (w, p) = pair();
        let client = SignerClient::new(w, Duration::from_secs(5)).unwrap();
        // as if 99 earlier requests had timed out and their answers now trickle in
        {
            let mut s = client.state.lock().unwrap();
            s.next_id = 100;
        }
        for id in 0..=(MAX_STALE_RESPONSES as u64) {
            p.send(
                &SignResponse {
                    id,
                    result: Ok(vec![1]),
                },
                &[],
            )
            .unwrap();
        }
        assert!(matches!(
            client.sign(0x0804, b"x"),
            Err(SignerError::TooManyStale { id: 100 })
        ));
    }
}
