//! The management service: accept loops over the listeners the parent handed over, one task
//! per client, and the event pump from the parent into the [`Hub`].
//!
//! API:
//! * [`Listener::from_fd`] adopts a listening socket fd (unix stream or TCP), checking that it
//!   really is a listening stream socket of that family.
//! * [`serve`] runs until `shutdown` turns `true` (or its sender is dropped): it forwards every
//!   [`MgmtEvent`] from `events` into the hub, accepts connections on every listener, reads
//!   unix peer credentials (`SO_PEERCRED`) and spawns [`run_session`] per connection.
//!
//! Start-up log lines mirror OpenVPN (`MANAGEMENT: unix domain socket listening on <path>`,
//! `MANAGEMENT: TCP Socket listening on [AF_INET]<addr>`), including the warning for a TCP
//! listener without a password.
//!
//! Invariant: a failing `accept()` (e.g. EMFILE) never ends the service; it is logged and
//! retried after a short pause.

use crate::access::{ListenerKind, ListenerPolicy, Peer};
use crate::hub::{Hub, D_MANAGEMENT_LEVEL};
use crate::model::{LogFlags, MgmtEvent};
use crate::session::run_session;
use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{broadcast, watch};

/// Errors of the management service.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The fd is not a socket or its options cannot be read.
    #[error("management listener fd {fd}: cannot inspect socket: {source}")]
    Inspect {
        /// Raw fd number.
        fd: i32,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// The fd is a socket of the wrong kind.
    #[error("management listener fd {fd}: {what}")]
    WrongKind {
        /// Raw fd number.
        fd: i32,
        /// What is wrong.
        what: String,
    },
    /// Registering the socket with tokio failed.
    #[error("management listener fd {fd}: cannot register with the runtime: {source}")]
    Register {
        /// Raw fd number.
        fd: i32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No listener was given.
    #[error("no management listener given")]
    NoListener,
}

/// A listening socket and its access policy.
#[derive(Debug)]
pub enum Listener {
    /// Unix stream socket.
    Unix {
        /// The socket.
        listener: tokio::net::UnixListener,
        /// Policy.
        policy: Arc<ListenerPolicy>,
    },
    /// TCP socket.
    Tcp {
        /// The socket.
        listener: tokio::net::TcpListener,
        /// Policy.
        policy: Arc<ListenerPolicy>,
    },
}

impl Listener {
    /// Adopt a listening socket fd. Must be called inside a tokio runtime.
    pub fn from_fd(fd: OwnedFd, policy: ListenerPolicy) -> Result<Self, ServeError> {
        let raw = fd.as_raw_fd();
        let ty = getsockopt(&fd, sockopt::SockType)
            .map_err(|source| ServeError::Inspect { fd: raw, source })?;
        if ty != SockType::Stream {
            return Err(ServeError::WrongKind {
                fd: raw,
                what: format!("socket type {ty:?}, expected a stream socket"),
            });
        }
        let listening = getsockopt(&fd, sockopt::AcceptConn)
            .map_err(|source| ServeError::Inspect { fd: raw, source })?;
        if !listening {
            return Err(ServeError::WrongKind {
                fd: raw,
                what: "socket is not listening".into(),
            });
        }
        let addr: SockaddrStorage =
            getsockname(raw).map_err(|source| ServeError::Inspect { fd: raw, source })?;
        let policy = Arc::new(policy);
        match addr.family() {
            Some(AddressFamily::Unix) => {
                let std_l = std::os::unix::net::UnixListener::from(fd);
                std_l
                    .set_nonblocking(true)
                    .map_err(|source| ServeError::Register { fd: raw, source })?;
                let listener = tokio::net::UnixListener::from_std(std_l)
                    .map_err(|source| ServeError::Register { fd: raw, source })?;
                Ok(Listener::Unix { listener, policy })
            }
            Some(AddressFamily::Inet) | Some(AddressFamily::Inet6) => {
                let std_l = std::net::TcpListener::from(fd);
                std_l
                    .set_nonblocking(true)
                    .map_err(|source| ServeError::Register { fd: raw, source })?;
                let listener = tokio::net::TcpListener::from_std(std_l)
                    .map_err(|source| ServeError::Register { fd: raw, source })?;
                Ok(Listener::Tcp { listener, policy })
            }
            other => Err(ServeError::WrongKind {
                fd: raw,
                what: format!("address family {other:?}, expected unix or inet"),
            }),
        }
    }

    fn announce(&self, hub: &Hub) {
        match self {
            Listener::Unix { policy, .. } => {
                let path = match &policy.kind {
                    ListenerKind::Unix(p) => p.clone(),
                    ListenerKind::Tcp => "?".into(),
                };
                hub.log_local(
                    D_MANAGEMENT_LEVEL,
                    LogFlags::default(),
                    format!("MANAGEMENT: unix domain socket listening on {path}"),
                );
            }
            Listener::Tcp { listener, policy } => {
                if let Ok(a) = listener.local_addr() {
                    let fam = if a.is_ipv4() { "AF_INET" } else { "AF_INET6" };
                    hub.log_local(
                        D_MANAGEMENT_LEVEL,
                        LogFlags::default(),
                        format!("MANAGEMENT: TCP Socket listening on [{fam}]{a}"),
                    );
                }
                if policy.password.is_none() {
                    hub.log_local(
                        0,
                        LogFlags {
                            warn: true,
                            ..LogFlags::default()
                        },
                        "WARNING: Using --management on a TCP port WITHOUT passwords is STRONGLY discouraged and considered insecure".into(),
                    );
                }
            }
        }
    }
}

async fn accept_loop(hub: Arc<Hub>, listener: Listener) {
    loop {
        match &listener {
            Listener::Unix { listener, policy } => match listener.accept().await {
                Ok((stream, _)) => {
                    let peer = match stream.peer_cred() {
                        Ok(c) => Peer::Unix {
                            uid: c.uid(),
                            gid: c.gid(),
                            pid: c.pid(),
                        },
                        Err(_) => Peer::UnixUnknown,
                    };
                    tokio::spawn(run_session(hub.clone(), stream, peer, policy.clone()));
                }
                Err(e) => accept_failed(&hub, e).await,
            },
            Listener::Tcp { listener, policy } => match listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(run_session(
                        hub.clone(),
                        stream,
                        Peer::Tcp(addr),
                        policy.clone(),
                    ));
                }
                Err(e) => accept_failed(&hub, e).await,
            },
        }
    }
}

async fn accept_failed(hub: &Hub, e: std::io::Error) {
    hub.log_local(
        0,
        LogFlags {
            nonfatal: true,
            ..LogFlags::default()
        },
        format!("MANAGEMENT: accept() failed: {e}"),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serve the management interface until `shutdown` becomes `true` or its sender is dropped.
pub async fn serve(
    hub: Arc<Hub>,
    listeners: Vec<Listener>,
    mut events: broadcast::Receiver<MgmtEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    if listeners.is_empty() {
        return Err(ServeError::NoListener);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        l.announce(&hub);
        tasks.spawn(accept_loop(hub.clone(), l));
    }
    let pump_hub = hub.clone();
    tasks.spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => pump_hub.ingest(ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("management broker lost {n} events from the parent");
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The parent's event source is gone; keep serving history and commands.
                    std::future::pending::<()>().await;
                }
            }
        }
    });
    loop {
        if *shutdown.borrow() {
            break;
        }
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    tasks.abort_all();
    Ok(())
}
