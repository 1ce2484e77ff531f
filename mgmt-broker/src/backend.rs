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
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Errors of a backend call.
#[derive(Debug, Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendError {
    /// The daemon cannot serve this request in its current state (e.g. initial hold).
    #[error("not available in the current daemon state")]
    Unavailable,
    /// The daemon side is gone (channel closed).
    #[error("backend disconnected")]
    Disconnected,
    /// The daemon returned a response of the wrong kind for the request.
    #[error("unexpected backend response to {request}")]
    UnexpectedResponse {
        /// Name of the request.
        request: &'static str,
    },
}

/// Signals the management interface may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MgmtSignal {
    /// SIGHUP (restart, re-read config).
    Hup,
    /// SIGTERM (exit).
    Term,
    /// SIGUSR1 (soft restart).
    Usr1,
    /// SIGUSR2 (status dump to log).
    Usr2,
    /// SIGINT (exit).
    Int,
}

impl MgmtSignal {
    /// Parse the exact upper-case OpenVPN names.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SIGHUP" => MgmtSignal::Hup,
            "SIGTERM" => MgmtSignal::Term,
            "SIGUSR1" => MgmtSignal::Usr1,
            "SIGUSR2" => MgmtSignal::Usr2,
            "SIGINT" => MgmtSignal::Int,
            _ => return None,
        })
    }

    /// The OpenVPN name.
    pub fn name(self) -> &'static str {
        match self {
            MgmtSignal::Hup => "SIGHUP",
            MgmtSignal::Term => "SIGTERM",
            MgmtSignal::Usr1 => "SIGUSR1",
            MgmtSignal::Usr2 => "SIGUSR2",
            MgmtSignal::Int => "SIGINT",
        }
    }
}

/// `--auth-retry` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRetry {
    /// `none`.
    None,
    /// `interact`.
    Interact,
    /// `nointeract`.
    NoInteract,
}

impl AuthRetry {
    /// Parse an auth-retry keyword.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => AuthRetry::None,
            "interact" => AuthRetry::Interact,
            "nointeract" => AuthRetry::NoInteract,
            _ => return None,
        })
    }

    /// Keyword.
    pub fn name(self) -> &'static str {
        match self {
            AuthRetry::None => "none",
            AuthRetry::Interact => "interact",
            AuthRetry::NoInteract => "nointeract",
        }
    }
}

/// A request from the broker to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Static facts: pid and title string. → [`Response::Info`]
    Info,
    /// Current status snapshot. → [`Response::Status`]
    Status,
    /// Global load statistics. → [`Response::LoadStats`]
    LoadStats,
    /// Number of authenticated clients. → [`Response::Count`]
    NClients,
    /// Per-client link byte counters of established clients. → [`Response::ByteCounts`]
    ByteCounts,
    /// Kill every instance with this common name. → [`Response::Count`] (killed)
    KillCommonName(String),
    /// Kill the instance(s) at this IPv4 address and port. → [`Response::Count`]
    KillAddress {
        /// Address.
        ip: Ipv4Addr,
        /// Port.
        port: u16,
    },
    /// Send a control message (`RESTART`, `HALT`, ...) and schedule the client's exit.
    /// → [`Response::Done`]
    ClientKill {
        /// Client id.
        cid: u64,
        /// Control message.
        message: String,
    },
    /// Throw a signal. → [`Response::Signal`]
    Signal(MgmtSignal),
    /// Current verb. → [`Response::Number`]
    GetVerb,
    /// Set verb (0..=15 already checked). → [`Response::Done`]
    SetVerb(u8),
    /// Current mute. → [`Response::Number`]
    GetMute,
    /// Set mute (≥0 already checked). → [`Response::Done`]
    SetMute(u32),
    /// Hold flag. → [`Response::Flag`]
    GetHold,
    /// Set hold flag. → [`Response::Done`]
    SetHold(bool),
    /// Release the current hold. → [`Response::Done`]
    HoldRelease,
    /// Current auth-retry. → [`Response::AuthRetry`]
    GetAuthRetry,
    /// Set auth-retry. → [`Response::Done`]
    SetAuthRetry(AuthRetry),
    /// Forget cached passwords. → [`Response::Done`]
    ForgetPasswords,
    /// Accept a client with client-connect config lines (`client-auth`). → [`Response::Done`]
    ClientAuth {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
        /// Config lines (`push ...`, `ifconfig-push ...`).
        config: Vec<String>,
    },
    /// Accept a client without config (`client-auth-nt`). → [`Response::Done`]
    ClientAuthNt {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
    },
    /// Deny a client. → [`Response::Done`]
    ClientDeny {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
        /// Reason for the log.
        reason: String,
        /// Reason sent to the client.
        client_reason: Option<String>,
    },
    /// Pending auth. → [`Response::Done`]
    ClientPendingAuth {
        /// Client id.
        cid: u64,
        /// Key id.
        kid: u32,
        /// Extra (`WEB_AUTH:...`, `CR_TEXT:...`).
        extra: String,
        /// Timeout in seconds.
        timeout: u32,
    },
}

impl Request {
    /// Short name for errors and audit.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Info => "Info",
            Request::Status => "Status",
            Request::LoadStats => "LoadStats",
            Request::NClients => "NClients",
            Request::ByteCounts => "ByteCounts",
            Request::KillCommonName(_) => "KillCommonName",
            Request::KillAddress { .. } => "KillAddress",
            Request::ClientKill { .. } => "ClientKill",
            Request::Signal(_) => "Signal",
            Request::GetVerb => "GetVerb",
            Request::SetVerb(_) => "SetVerb",
            Request::GetMute => "GetMute",
            Request::SetMute(_) => "SetMute",
            Request::GetHold => "GetHold",
            Request::SetHold(_) => "SetHold",
            Request::HoldRelease => "HoldRelease",
            Request::GetAuthRetry => "GetAuthRetry",
            Request::SetAuthRetry(_) => "SetAuthRetry",
            Request::ForgetPasswords => "ForgetPasswords",
            Request::ClientAuth { .. } => "ClientAuth",
            Request::ClientAuthNt { .. } => "ClientAuthNt",
            Request::ClientDeny { .. } => "ClientDeny",
            Request::ClientPendingAuth { .. } => "ClientPendingAuth",
        }
    }
}

/// Outcome of a signal request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalOutcome {
    /// Thrown; the name is the one after `--remap-usr1`.
    Thrown(String),
    /// Ignored because the daemon is in a management hold (SIGHUP/SIGUSR1).
    IgnoredInHold,
}

/// A response from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Static facts.
    Info {
        /// Daemon pid.
        pid: u32,
        /// Title string.
        title: String,
    },
    /// Status snapshot.
    Status(Box<StatusSnapshot>),
    /// Load statistics.
    LoadStats {
        /// Authenticated clients.
        nclients: u32,
        /// Link bytes read (process-wide).
        bytes_in: u64,
        /// Link bytes written (process-wide).
        bytes_out: u64,
    },
    /// A count.
    Count(u32),
    /// `(cid, bytes_in, bytes_out)` of established clients.
    ByteCounts(Vec<(u64, u64, u64)>),
    /// Signal outcome.
    Signal(SignalOutcome),
    /// A number (verb, mute).
    Number(u32),
    /// A flag (hold).
    Flag(bool),
    /// auth-retry mode.
    AuthRetry(AuthRetry),
    /// Success (`true`) or failure (`false`) of an action.
    Done(bool),
}

/// Boxed future returned by [`Backend::call`].
pub type BackendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response, BackendError>> + Send + 'a>>;

/// The daemon as seen by the broker.
pub trait Backend: Send + Sync + 'static {
    /// Execute one request.
    fn call(&self, req: Request) -> BackendFuture<'_>;
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
