//! The broker's view of the rest of Bulwark: a request/response interface.
//!
//! The broker never touches the tunnel itself. Every management command that needs data or an
//! action from the daemon becomes one [`Request`], answered with one [`Response`] (or a
//! [`BackendError`]). The interface is the object-safe trait [`Backend`] (boxed futures, so the
//! engine can hold an `Arc<dyn Backend>`). Two implementations are provided:
//!
//! * [`ChannelBackend`] — forwards each request over a tokio `mpsc` channel together with a
//!   `oneshot` reply sender ([`BackendCall`]). The integrator drains the receiving end and maps
//!   each call onto the broker↔parent IPC channel.
//! * [`fake::FakeBackend`] — in-memory, scriptable, used by the tests (values taken from the
//!   OpenVPN fixtures).
//!
//! Invariants: requests carry already-validated arguments (the command layer parsed them);
//! [`BackendError::Unavailable`] means "the command is not supported in the current daemon
//! state" and is rendered exactly as OpenVPN's not-supported error.

use crate::model::StatusSnapshot;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

pub use bulwark_ipc::msg::mgmt::{
    AuthRetry, BackendError, MgmtSignal, Request, Response, SignalOutcome,
};

/// Boxed future returned by [`Backend::call`].
pub type BackendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response, BackendError>> + Send + 'a>>;

/// The daemon as seen by the broker.
pub trait Backend: Send + Sync + 'static {
    /// Execute one request.
    fn call(&self, req: Request) -> BackendFuture<'_>;
}

/// A [`Backend`] that answers `Request::Status` from a snapshot at most `max_age` old and lets
/// concurrent status requests share one fetch (the others wait for it). Every `status` command,
/// status file, SIGUSR2 dump and metrics scrape is one round trip to the worker, which also runs
/// the data path: twenty management clients polling `status 3` every 50 ms would otherwise cost
/// the worker hundreds of status walks a second. Other requests pass through unchanged and clear
/// the cache (a `kill` is visible in the next `status`), as does [`CachedStatus::invalidate`], which
/// the broker calls for every `>CLIENT:` event (an established client is in the next answer); a
/// client that ended without a `>CLIENT:DISCONNECT` (no `management-client-auth`) may still be listed
/// for up to `max_age`.
pub struct CachedStatus<B> {
    inner: B,
    max_age: std::time::Duration,
    /// Bumped by every other request; a snapshot taken before is stale.
    generation: std::sync::atomic::AtomicU64,
    slot: tokio::sync::Mutex<Option<(std::time::Instant, u64, Response)>>,
}

impl<B: Backend> CachedStatus<B> {
    /// Wrap `inner`; status answers are reused for `max_age`.
    pub fn new(inner: B, max_age: std::time::Duration) -> Self {
        CachedStatus {
            inner,
            max_age,
            generation: std::sync::atomic::AtomicU64::new(0),
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// Makes the next status request fetch a new snapshot (a client was established or ended).
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl<B: Backend> Backend for CachedStatus<B> {
    fn call(&self, req: Request) -> BackendFuture<'_> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            if !matches!(req, Request::Status) {
                let r = self.inner.call(req).await;
                // A kill, client-kill or signal may have changed what status shows. Never
                // waits for the slot: a status fetch in progress must not delay other commands.
                self.generation.fetch_add(1, Ordering::SeqCst);
                return r;
            }
            // INVARIANT: the lock is held across the fetch, so concurrent status callers wait
            // for it and then find the fresh snapshot instead of fetching again; only status
            // requests ever take the lock.
            let mut slot = self.slot.lock().await;
            let gen = self.generation.load(Ordering::SeqCst);
            if let Some((at, g, r)) = slot.as_ref() {
                if *g == gen && at.elapsed() <= self.max_age {
                    return Ok(r.clone());
                }
            }
            let r = self.inner.call(Request::Status).await?;
            *slot = Some((std::time::Instant::now(), gen, r.clone()));
            Ok(r)
        })
    }
}

/// One forwarded call: the request and where to send the answer.
#[derive(Debug)]
pub struct BackendCall {
    /// The request.
    pub request: Request,
    /// Reply sender; dropping it yields [`BackendError::Disconnected`] to the caller.
    pub reply: oneshot::Sender<Result<Response, BackendError>>,
}

/// A [`Backend`] that forwards calls over a channel (drained by the integrator's IPC task).
#[derive(Debug, Clone)]
pub struct ChannelBackend {
    tx: mpsc::Sender<BackendCall>,
}

impl ChannelBackend {
    /// Create the backend and the receiving end of its call channel.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<BackendCall>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ChannelBackend { tx }, rx)
    }
}

impl Backend for ChannelBackend {
    fn call(&self, request: Request) -> BackendFuture<'_> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(BackendCall { request, reply })
                .await
                .map_err(|_| BackendError::Disconnected)?;
            rx.await.map_err(|_| BackendError::Disconnected)?
        })
    }
}

pub mod fake {
    //! An in-memory backend for tests, holding values taken from the OpenVPN fixtures.
    //!
    //! Every request is recorded in [`FakeState::log`]; results come from the state fields.
    //! Events the real daemon would emit are injected by the test itself (`Hub::ingest`).

    use super::*;
    use std::sync::Mutex;

    /// Mutable state of the fake daemon.
    #[derive(Debug, Clone)]
    pub struct FakeState {
        /// pid.
        pub pid: u32,
        /// title.
        pub title: String,
        /// Status snapshot.
        pub snapshot: StatusSnapshot,
        /// (nclients, bytes in, bytes out).
        pub load: (u32, u64, u64),
        /// Per-client counters returned by `ByteCounts`, consumed front to back (each call
        /// pops one entry; the last one repeats).
        pub bytecounts: Vec<Vec<(u64, u64, u64)>>,
        /// verb.
        pub verb: u32,
        /// mute.
        pub mute: u32,
        /// hold flag.
        pub hold: bool,
        /// In a hold right now (signals SIGHUP/SIGUSR1 ignored).
        pub holding: bool,
        /// auth-retry.
        pub auth_retry: AuthRetry,
        /// Known (live) client ids.
        pub cids: Vec<u64>,
        /// Client ids with a pending key state (client-pending-auth accepted).
        pub pending_cids: Vec<u64>,
        /// `Unavailable` for everything tunnel-related (initial hold).
        pub unavailable: bool,
        /// Requests received, in order.
        pub log: Vec<Request>,
    }

    /// The fake backend.
    #[derive(Debug)]
    pub struct FakeBackend {
        /// State (lock to inspect from tests).
        pub state: Mutex<FakeState>,
    }

    impl FakeBackend {
        /// Create a fake backend.
        pub fn new(state: FakeState) -> Self {
            FakeBackend {
                state: Mutex::new(state),
            }
        }

        fn handle(&self, req: Request) -> Result<Response, BackendError> {
            let mut st = self.state.lock().map_err(|_| BackendError::Disconnected)?;
            st.log.push(req.clone());
            let tunnel_req = matches!(
                req,
                Request::Status
                    | Request::KillCommonName(_)
                    | Request::KillAddress { .. }
                    | Request::NClients
                    | Request::ClientKill { .. }
            );
            if st.unavailable && tunnel_req {
                return Err(BackendError::Unavailable);
            }
            Ok(match req {
                Request::Info => Response::Info {
                    pid: st.pid,
                    title: st.title.clone(),
                },
                Request::Status => Response::Status(Box::new(st.snapshot.clone())),
                Request::LoadStats => Response::LoadStats {
                    nclients: st.load.0,
                    bytes_in: st.load.1,
                    bytes_out: st.load.2,
                },
                Request::NClients => Response::Count(st.load.0),
                Request::ByteCounts => {
                    let v = if st.bytecounts.len() > 1 {
                        st.bytecounts.remove(0)
                    } else {
                        st.bytecounts.first().cloned().unwrap_or_default()
                    };
                    Response::ByteCounts(v)
                }
                Request::KillCommonName(cn) => {
                    let before = st.snapshot.clients.len();
                    st.snapshot
                        .clients
                        .retain(|c| c.common_name.as_deref() != Some(cn.as_str()));
                    Response::Count((before - st.snapshot.clients.len()) as u32)
                }
                Request::KillAddress { ip, port } => {
                    let before = st.snapshot.clients.len();
                    st.snapshot.clients.retain(|c| {
                        !(c.real_address.addr.ip() == std::net::IpAddr::V4(ip)
                            && c.real_address.addr.port() == port)
                    });
                    Response::Count((before - st.snapshot.clients.len()) as u32)
                }
                Request::ClientKill { cid, .. } => {
                    let found = st.cids.contains(&cid);
                    st.cids.retain(|c| *c != cid);
                    Response::Done(found)
                }
                Request::Signal(sig) => {
                    if st.holding && matches!(sig, MgmtSignal::Hup | MgmtSignal::Usr1) {
                        Response::Signal(SignalOutcome::IgnoredInHold)
                    } else {
                        Response::Signal(SignalOutcome::Thrown(sig.name().to_string()))
                    }
                }
                Request::GetVerb => Response::Number(st.verb),
                Request::SetVerb(v) => {
                    st.verb = u32::from(v);
                    Response::Done(true)
                }
                Request::GetMute => Response::Number(st.mute),
                Request::SetMute(m) => {
                    st.mute = m;
                    Response::Done(true)
                }
                Request::GetHold => Response::Flag(st.hold),
                Request::SetHold(h) => {
                    st.hold = h;
                    Response::Done(true)
                }
                Request::HoldRelease => {
                    st.holding = false;
                    Response::Done(true)
                }
                Request::GetAuthRetry => Response::AuthRetry(st.auth_retry),
                Request::SetAuthRetry(a) => {
                    st.auth_retry = a;
                    Response::Done(true)
                }
                Request::ForgetPasswords => Response::Done(true),
                Request::ClientAuth { cid, .. }
                | Request::ClientAuthNt { cid, .. }
                | Request::ClientDeny { cid, .. } => Response::Done(st.cids.contains(&cid)),
                Request::ClientPendingAuth { cid, .. } => {
                    Response::Done(st.pending_cids.contains(&cid))
                }
            })
        }
    }

    impl Backend for FakeBackend {
        fn call(&self, req: Request) -> BackendFuture<'_> {
            let r = self.handle(req);
            Box::pin(async move { r })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_answers_are_shared_and_expire() {
        let (b, mut rx) = ChannelBackend::new(16);
        let cached =
            std::sync::Arc::new(CachedStatus::new(b, std::time::Duration::from_millis(200)));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let f2 = fetches.clone();
        tokio::spawn(async move {
            while let Some(call) = rx.recv().await {
                let n = f2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let resp = match call.request {
                    Request::Status => Response::Count(u32::try_from(n).unwrap()),
                    _ => Response::Done(true),
                };
                let _ = call.reply.send(Ok(resp));
            }
        });
        // ten concurrent status requests: one fetch
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let c = cached.clone();
            tasks.push(tokio::spawn(async move { c.call(Request::Status).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Response::Count(0));
        }
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        // other requests are never cached
        cached.call(Request::NClients).await.unwrap();
        cached.call(Request::NClients).await.unwrap();
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 3);
        // ... and they clear the cache
        assert_eq!(
            cached.call(Request::Status).await.unwrap(),
            Response::Count(3)
        );
        // a status fetch that never returns does not hold up other requests
        let (b2, mut rx2) = ChannelBackend::new(16);
        let stuck =
            std::sync::Arc::new(CachedStatus::new(b2, std::time::Duration::from_millis(200)));
        let s2 = stuck.clone();
        let pending = tokio::spawn(async move { s2.call(Request::Status).await });
        let first = rx2.recv().await.unwrap(); // the status call, never answered
        let s3 = stuck.clone();
        let other = tokio::spawn(async move { s3.call(Request::NClients).await });
        let call = rx2.recv().await.unwrap();
        assert_eq!(call.request, Request::NClients);
        call.reply.send(Ok(Response::Count(1))).unwrap();
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(1), other)
                .await
                .expect("not blocked by the status fetch")
                .unwrap()
                .unwrap(),
            Response::Count(1)
        );
        drop(first);
        assert!(pending.await.unwrap().is_err());
        // after max_age a new fetch
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        assert_eq!(
            cached.call(Request::Status).await.unwrap(),
            Response::Count(4)
        );
    }

    #[tokio::test]
    async fn channel_backend_round_trip_and_disconnect() {
        let (b, mut rx) = ChannelBackend::new(4);
        let server = tokio::spawn(async move {
            let call = rx.recv().await.unwrap();
            assert_eq!(call.request, Request::GetVerb);
            call.reply.send(Ok(Response::Number(3))).unwrap();
            let call = rx.recv().await.unwrap();
            drop(call.reply);
        });
        assert_eq!(b.call(Request::GetVerb).await, Ok(Response::Number(3)));
        assert_eq!(
            b.call(Request::GetMute).await,
            Err(BackendError::Disconnected)
        );
        server.await.unwrap();
        assert_eq!(
            b.call(Request::GetMute).await,
            Err(BackendError::Disconnected)
        );
    }

    #[test]
    fn signal_and_auth_retry_names() {
        for s in ["SIGHUP", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT"] {
            assert_eq!(MgmtSignal::parse(s).unwrap().name(), s);
        }
        assert!(MgmtSignal::parse("sigterm").is_none());
        assert!(MgmtSignal::parse("SIGFOO").is_none());
        assert_eq!(AuthRetry::parse("nointeract"), Some(AuthRetry::NoInteract));
        assert!(AuthRetry::parse("bogus").is_none());
    }
}
