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

/// A listener's access policy, replaceable while the listener runs (SIGHUP reload of the
/// management access rules): every connection takes the policy current when it is accepted and
/// keeps it for its lifetime.
#[derive(Debug, Clone)]
pub struct PolicySlot(Arc<std::sync::RwLock<Arc<ListenerPolicy>>>);

impl PolicySlot {
    /// A slot holding `policy`.
    pub fn new(policy: ListenerPolicy) -> Self {
        PolicySlot(Arc::new(std::sync::RwLock::new(Arc::new(policy))))
    }

    /// The current policy.
    pub fn current(&self) -> Arc<ListenerPolicy> {
        // A poisoned lock still holds a complete Arc (the write is a single assignment).
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the policy for connections accepted from now on.
    pub fn replace(&self, policy: ListenerPolicy) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }
}

/// A listening socket and its access policy.
#[derive(Debug)]
pub enum Listener {
    /// Unix stream socket.
    Unix {
        /// The socket.
        listener: tokio::net::UnixListener,
        /// Policy.
        policy: PolicySlot,
    },
    /// TCP socket.
    Tcp {
        /// The socket.
        listener: tokio::net::TcpListener,
        /// Policy.
        policy: PolicySlot,
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
        let policy = PolicySlot::new(policy);
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

    /// The listener's policy slot (kept by the caller to replace the policy on reload).
    pub fn policy_slot(&self) -> PolicySlot {
        match self {
            Listener::Unix { policy, .. } | Listener::Tcp { policy, .. } => policy.clone(),
        }
    }

    fn announce(&self, hub: &Hub) {
        match self {
            Listener::Unix { policy, .. } => {
                let path = match &policy.current().kind {
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
                if policy.current().password.is_none() {
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
                    let policy = policy.current();
                    let peer = match stream.peer_cred() {
                        Ok(c) => Peer::Unix {
                            uid: c.uid(),
                            gid: c.gid(),
                            pid: c.pid(),
                        },
                        Err(_) => Peer::UnixUnknown,
                    };
                    // Group rules match primary and supplementary groups: the policy is
                    // specialised to this peer's groups. If SO_PEERGROUPS cannot be read,
                    // only the primary gid counts (never more access than the kernel proves).
                    let policy = match &peer {
                        Peer::Unix { gid, .. } => match peer_groups::read(stream.as_raw_fd()) {
                            Ok(groups) => {
                                Arc::new(crate::access::for_peer_groups(&policy, *gid, &groups))
                            }
                            Err(e) => {
                                tracing::warn!(
                                    "MANAGEMENT: cannot read supplementary groups of socket peer: {e}"
                                );
                                Arc::new(crate::access::for_peer_groups(&policy, *gid, &[]))
                            }
                        },
                        _ => policy.clone(),
                    };
                    tokio::spawn(run_session(hub.clone(), stream, peer, policy));
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
                        policy.current(),
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

/// Periodically render the `--status` file content (LF line endings) and hand it to `sink`
/// (the integrator forwards it to the parent, which writes it atomically).
///
/// Every `every`, asks the backend for a [`crate::backend::Request::Status`] snapshot and
/// renders it in `version`. Ends when `sink` is closed. A backend error skips that tick (the
/// previous file content stays in place) and is logged.
pub async fn status_file_task(
    hub: Arc<Hub>,
    version: crate::status::StatusVersion,
    every: Duration,
    sink: tokio::sync::mpsc::Sender<String>,
) {
    let mut timer = tokio::time::interval(every.max(Duration::from_secs(1)));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first write happens on the first tick after start, as in OpenVPN.
    timer.tick().await;
    loop {
        timer.tick().await;
        match hub.backend().call(crate::backend::Request::Status).await {
            Ok(crate::backend::Response::Status(snap)) => {
                let text = crate::status::render(&snap, version, crate::status::LineEnding::Lf);
                if sink.send(text).await.is_err() {
                    return;
                }
            }
            Ok(_) => tracing::warn!("status file: unexpected backend response"),
            Err(e) => tracing::warn!("status file: snapshot unavailable: {e}"),
        }
        if sink.is_closed() {
            return;
        }
    }
}

/// `SO_PEERGROUPS`: the supplementary groups of a unix stream socket's peer, as the kernel
/// recorded them at `connect()` time.
#[allow(unsafe_code)]
mod peer_groups {
    use std::os::fd::RawFd;

    /// Upper bound of groups read (Linux `NGROUPS_MAX` is 65536).
    const MAX_GROUPS: usize = 65536;

    /// The peer's supplementary gids.
    pub(super) fn read(fd: RawFd) -> std::io::Result<Vec<u32>> {
        let mut buf: Vec<libc::gid_t> = vec![0; 64];
        loop {
            let mut len = libc::socklen_t::try_from(buf.len() * std::mem::size_of::<libc::gid_t>())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?;
            // SAFETY: `buf` is a live, writable allocation of exactly `len` bytes; the kernel
            // writes at most `len` bytes into it and stores the needed/used size in `len`,
            // which is a valid `socklen_t` we own. `fd` is borrowed from a live socket.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_PEERGROUPS,
                    buf.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let n = len as usize / std::mem::size_of::<libc::gid_t>();
            if rc == 0 {
                buf.truncate(n.min(buf.len()));
                return Ok(buf);
            }
            let err = std::io::Error::last_os_error();
            // ERANGE: the buffer was too small and `len` holds the size needed.
            if err.raw_os_error() == Some(libc::ERANGE) && n > buf.len() && n <= MAX_GROUPS {
                buf.resize(n, 0);
                continue;
            }
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::backend::fake::FakeBackend;
    use crate::hub::EngineConfig;
    use crate::replay_tests::s1_state;
    use std::os::fd::OwnedFd;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn unique_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "bulwark-mgmt-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    struct DirGuard(std::path::PathBuf);
    impl Drop for DirGuard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut s))
            .await
            .unwrap()
            .unwrap();
        s
    }

    #[tokio::test]
    async fn serves_unix_and_tcp_concurrently_with_peer_roles() {
        let dir = unique_dir();
        let _g = DirGuard(dir.clone());
        let path = dir.join("mgmt.sock");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let mut cfg = EngineConfig::default();
        cfg.verb = 3;
        let (hub, mut outputs) = Hub::new(
            cfg,
            Arc::new(FakeBackend::new(s1_state())),
            crate::hub::system_clock(),
        );
        let me = nix::unistd::getuid().as_raw();
        let mut upol = ListenerPolicy::openvpn_compatible(
            ListenerKind::Unix(path.display().to_string()),
            None,
        );
        upol.default_role = Role::Admin;
        upol.uid_roles = vec![(me, Role::Monitor)];
        let tpol = ListenerPolicy::openvpn_compatible(ListenerKind::Tcp, Some("pw".into()));
        let listeners = vec![
            Listener::from_fd(OwnedFd::from(unix), upol).unwrap(),
            Listener::from_fd(OwnedFd::from(tcp), tpol).unwrap(),
        ];
        let (ev_tx, ev_rx) = broadcast::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(hub.clone(), listeners, ev_rx, stop_rx));

        // Two unix clients at once, each with its own greeting.
        let a = tokio::net::UnixStream::connect(&path).await.unwrap();
        let b = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (ar, mut aw) = a.into_split();
        let (br, _bw) = b.into_split();
        let mut ar = BufReader::new(ar);
        let mut br = BufReader::new(br);
        assert!(read_line(&mut ar)
            .await
            .starts_with(">INFO:OpenVPN Management Interface Version 5"));
        assert!(read_line(&mut br)
            .await
            .starts_with(">INFO:OpenVPN Management Interface Version 5"));
        // Our uid maps to monitor: kill is refused.
        aw.write_all(b"kill client1\n").await.unwrap();
        assert!(read_line(&mut ar)
            .await
            .starts_with("ERROR: permission denied: 'kill'"));
        aw.write_all(b"state on\n").await.unwrap();
        assert_eq!(
            read_line(&mut ar).await,
            "SUCCESS: real-time state notification set to ON\r\n"
        );
        // Events from the parent reach the sessions.
        ev_tx
            .send(MgmtEvent::State(crate::replay_tests::parse_state_line(
                "1795334328,RECONNECTING,SIGHUP,,,,,",
            )))
            .unwrap();
        assert_eq!(
            read_line(&mut ar).await,
            ">STATE:1795334328,RECONNECTING,SIGHUP,,,,,\r\n"
        );

        // TCP with password.
        let t = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
        let (tr, mut tw) = t.into_split();
        let mut tr = BufReader::new(tr);
        tw.write_all(b"pw\npid\n").await.unwrap();
        assert_eq!(
            read_line(&mut tr).await,
            "ENTER PASSWORD:SUCCESS: password is correct\r\n"
        );
        assert!(read_line(&mut tr).await.starts_with(">INFO:"));
        assert_eq!(read_line(&mut tr).await, "SUCCESS: pid=7893\r\n");

        // Audit records carry the unix peer credentials.
        let mut saw = false;
        while let Ok(o) = outputs.try_recv() {
            if let crate::hub::BrokerOutput::Audit(r) = o {
                if r.command == "kill client1" {
                    assert!(matches!(r.peer, Peer::Unix { uid, .. } if uid == me));
                    saw = true;
                }
            }
        }
        assert!(saw);
        let hist = hub.log_history(None);
        assert!(hist.iter().any(|r| r
            .message
            .starts_with("MANAGEMENT: unix domain socket listening on")));
        assert!(hist.iter().any(
            |r| r.message == format!("MANAGEMENT: TCP Socket listening on [AF_INET]{tcp_addr}")
        ));
        stop_tx.send(true).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn tcp_without_password_warns_and_bad_fds_are_refused() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (hub, _o) = Hub::new(
            EngineConfig::default(),
            Arc::new(FakeBackend::new(s1_state())),
            crate::hub::system_clock(),
        );
        let l = Listener::from_fd(
            OwnedFd::from(tcp),
            ListenerPolicy::openvpn_compatible(ListenerKind::Tcp, None),
        )
        .unwrap();
        l.announce(&hub);
        assert!(hub.log_history(None).iter().any(|r| r.flags.warn
            && r.message
                == "WARNING: Using --management on a TCP port WITHOUT passwords is STRONGLY discouraged and considered insecure"));
        // A UDP socket and a connected-but-not-listening stream are refused.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            Listener::from_fd(
                OwnedFd::from(udp),
                ListenerPolicy::openvpn_compatible(ListenerKind::Tcp, None)
            ),
            Err(ServeError::WrongKind { .. })
        ));
        let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            Listener::from_fd(
                OwnedFd::from(s1),
                ListenerPolicy::openvpn_compatible(ListenerKind::Tcp, None)
            ),
            Err(ServeError::WrongKind { .. })
        ));
        // The status file task renders the snapshot with LF endings.
        let (stx, mut srx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(status_file_task(
            hub.clone(),
            crate::status::StatusVersion::V2,
            Duration::from_secs(1),
            stx,
        ));
        let text = tokio::time::timeout(Duration::from_secs(5), srx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(text.starts_with("TITLE,OpenVPN 2.6.14"));
        assert!(text.ends_with("GLOBAL_STATS,dco_enabled,0\nEND\n"));
        assert!(!text.contains('\r'));
        drop(srx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let (_t, r) = watch::channel(false);
        let (_e, er) = broadcast::channel(1);
        assert!(matches!(
            serve(hub, vec![], er, r).await,
            Err(ServeError::NoListener)
        ));
    }

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = super::peer_groups::read(a.as_raw_fd()).unwrap();
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        want.dedup();
        got.dedup();
        assert_eq!(got, want);
        // Not a socket: an error, not a panic.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(super::peer_groups::read(f.as_raw_fd()).is_err());
    }
}
