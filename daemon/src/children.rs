//! Spawning the sandboxed children and running their start-up protocol.
//!
//! [`ChildBinaries::open`] opens `bulwark-worker` and `bulwark-mgmt` once at start-up (`O_PATH |
//! O_CLOEXEC`), so a restart executes exactly the file that was checked then. [`start_worker`] /
//! [`start_broker`] create the channel pairs, fork + exec the binary by fd with the child ends on
//! the fixed numbers of `bulwark_ipc::layout` and an empty environment, then run the start-up
//! protocol with a timeout on every step: child `Hello` (version, pid) → parent `Hello` → parent
//! `Init` + descriptors → child `Ready` (or `Fatal`). Anything else is a protocol violation.
//! The child's log channel is drained by a task that re-emits its records through the parent's sink.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_ipc::msg::{
    BrokerConfig, BrokerInit, BrokerToParent, FdRole, LogRecord, ParentToBroker, ParentToWorker,
    WorkerConfig, WorkerInit, WorkerToParent,
};
use bulwark_ipc::{
    AsyncChannel, Channel, ChannelError, Message, NoMessage, ParentSigner, PROTOCOL_VERSION,
};
use bulwark_policy::Identity;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::sys::spawn::{spawn, ExecSpec};

/// Time allowed for each start-up step of a child.
pub const STARTUP_STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// The worker binary's file name.
pub const WORKER_BIN: &str = "bulwark-worker";
/// The broker binary's file name.
pub const BROKER_BIN: &str = "bulwark-mgmt";
/// The system location of the child binaries.
pub const SYSTEM_LIBEXEC: &str = "/usr/libexec/bulwark";

/// Errors of starting a child.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// No directory holds both child binaries.
    #[error("cannot find {WORKER_BIN} and {BROKER_BIN} (looked in: {looked})")]
    BinariesNotFound {
        /// The directories tried.
        looked: String,
    },
    /// A binary could not be opened.
    #[error("cannot open {path}: {source}")]
    OpenBinary {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// A channel could not be created or used.
    #[error("{child}: IPC during {step}: {source}")]
    Ipc {
        /// Which child.
        child: &'static str,
        /// The step.
        step: &'static str,
        /// The error.
        #[source]
        source: ChannelError,
    },
    /// fork/exec failed.
    #[error("{child}: cannot execute: {source}")]
    Spawn {
        /// Which child.
        child: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A start-up step timed out.
    #[error("{child}: no answer during {step} within {secs} s")]
    Timeout {
        /// Which child.
        child: &'static str,
        /// The step.
        step: &'static str,
        /// The timeout.
        secs: u64,
    },
    /// The child sent something the start-up protocol does not allow.
    #[error("{child}: IPC protocol violation during {step}: {what}")]
    Protocol {
        /// Which child.
        child: &'static str,
        /// The step.
        step: &'static str,
        /// What happened.
        what: String,
    },
    /// The child reported a fatal error.
    #[error("{child}: start-up failed: {reason}")]
    Fatal {
        /// Which child.
        child: &'static str,
        /// The child's reason.
        reason: String,
    },
    /// The child binary speaks another IPC protocol version: it belongs to another build.
    #[error("{child}: {path} speaks IPC protocol version {found}, this bulwark {PROTOCOL_VERSION}: the binaries are from different builds (the child binaries are taken from bulwark's own directory if both are there, else {SYSTEM_LIBEXEC}, or from --libexec-dir)")]
    Version {
        /// Which child.
        child: &'static str,
        /// The binary.
        path: PathBuf,
        /// Its version.
        found: u16,
    },
    /// A descriptor could not be duplicated for the child.
    #[error("{child}: cannot duplicate descriptor: {source}")]
    Dup {
        /// Which child.
        child: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ChildError {
    /// A child that fails the first exchange with another IPC protocol version is a binary of
    /// another build (a stale `/usr/libexec/bulwark` beside a new `bulwark`, say), not an attack: a
    /// freshly executed child has read nothing from the network yet. Such an error becomes
    /// [`ChildError::Version`], naming the binary; any other error is returned as it is.
    fn at_binary(self, path: PathBuf) -> ChildError {
        use bulwark_ipc::{ProtocolError, ValidationError};
        match self {
            ChildError::Ipc {
                child,
                step: "hello",
                source: ChannelError::Protocol(ProtocolError::UnsupportedVersion { found }),
            }
            | ChildError::Ipc {
                child,
                step: "hello",
                source:
                    ChannelError::Protocol(ProtocolError::Invalid {
                        source: ValidationError::VersionMismatch { found, .. },
                        ..
                    }),
            } => ChildError::Version { child, path, found },
            other => other,
        }
    }

    /// Whether this error is an IPC protocol violation by the child (a security event).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, ChildError::Protocol { .. })
            || matches!(
                self,
                ChildError::Ipc {
                    source: ChannelError::Protocol(_),
                    ..
                }
            )
    }
}

/// The opened child binaries.
#[derive(Debug)]
pub struct ChildBinaries {
    worker: OwnedFd,
    broker: OwnedFd,
    /// The directory they were found in.
    pub dir: PathBuf,
}

impl ChildBinaries {
    /// Opens both binaries from `dir` if given, else from the directory of `/proc/self/exe`, else
    /// from [`SYSTEM_LIBEXEC`].
    pub fn open(dir: Option<&Path>) -> Result<Self, ChildError> {
        let candidates: Vec<PathBuf> = match dir {
            Some(d) => vec![d.to_owned()],
            None => {
                let mut v = Vec::new();
                if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
                    if let Some(p) = exe.parent() {
                        v.push(p.to_owned());
                    }
                }
                v.push(PathBuf::from(SYSTEM_LIBEXEC));
                v
            }
        };
        for d in &candidates {
            let w = d.join(WORKER_BIN);
            let b = d.join(BROKER_BIN);
            if w.is_file() && b.is_file() {
                let o = |p: &Path| {
                    open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
                        ChildError::OpenBinary {
                            path: p.to_owned(),
                            source,
                        }
                    })
                };
                return Ok(ChildBinaries {
                    worker: o(&w)?,
                    broker: o(&b)?,
                    dir: d.clone(),
                });
            }
        }
        let looked = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(ChildError::BinariesNotFound { looked })
    }
}

/// A started, Ready child.
#[derive(Debug)]
pub struct Running<Tx, Rx> {
    /// The child's pid.
    pub pid: i32,
    /// A pidfd for signalling.
    pub pidfd: OwnedFd,
    /// The parent's end of the control channel.
    pub control: AsyncChannel<Tx, Rx>,
    /// The task re-emitting the child's log records; it ends when the child's log channel closes.
    pub log_task: tokio::task::JoinHandle<()>,
}

/// A Ready worker: the control channel plus the parent's end of the signer channel (served by the
/// signer module).
#[derive(Debug)]
pub struct RunningWorker {
    /// Process and control channel.
    pub proc: Running<ParentToWorker, WorkerToParent>,
    /// The parent's end of the worker's signer channel.
    pub signer: Option<ParentSigner>,
}

/// What the worker is handed.
pub struct WorkerResources<'a> {
    /// The data-plane threads' descriptors: (TUN queue, transport socket) per thread, the first
    /// first; exactly one with a TCP listener.
    pub lanes: Vec<(BorrowedFd<'a>, BorrowedFd<'a>)>,
    /// Whether the transport is a TCP listener.
    pub tcp: bool,
    /// Identity to demote to.
    pub identity: Identity,
    /// The empty chroot directory.
    pub chroot_dir: &'a Path,
    /// `verb`.
    pub verb: u8,
    /// The engine configuration.
    pub engine: &'a bulwark_ipc::msg::engine::EngineConfig,
    /// Seccomp enforcement.
    pub seccomp: bulwark_ipc::msg::SeccompMode,
}

/// What the broker is handed.
pub struct BrokerResources<'a> {
    /// The management listeners with their roles and access policies.
    pub listeners: Vec<(
        BorrowedFd<'a>,
        FdRole,
        bulwark_ipc::msg::mgmt::ListenerPolicy,
    )>,
    /// The metrics endpoint's listener (passed after the management listeners).
    pub metrics: Option<(BorrowedFd<'a>, FdRole)>,
    /// Management settings.
    pub mgmt: bulwark_ipc::msg::MgmtSettings,
    /// Identity to demote to.
    pub identity: Identity,
    /// The empty chroot directory.
    pub chroot_dir: &'a Path,
    /// `verb`.
    pub verb: u8,
    /// Seccomp enforcement.
    pub seccomp: bulwark_ipc::msg::SeccompMode,
}

async fn step<T>(
    child: &'static str,
    step: &'static str,
    fut: impl std::future::Future<Output = Result<T, ChannelError>>,
) -> Result<T, ChildError> {
    match tokio::time::timeout(STARTUP_STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(ChildError::Ipc {
            child,
            step,
            source,
        }),
        Err(_) => Err(ChildError::Timeout {
            child,
            step,
            secs: STARTUP_STEP_TIMEOUT.as_secs(),
        }),
    }
}

fn exec_child(
    child: &'static str,
    exe: BorrowedFd<'_>,
    fds: Vec<(BorrowedFd<'_>, i32)>,
) -> Result<crate::sys::spawn::Spawned, ChildError> {
    let argv0 = std::ffi::CString::new(child).map_err(|_| ChildError::Spawn {
        child,
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    // INVARIANT: the child's stdin/stdout/stderr are /dev/null, never the parent's terminal (a tty
    // descriptor would let a compromised child inject input with TIOCSTI); it logs over IPC.
    let devnull =
        open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
            ChildError::Spawn {
                child,
                source: e.into(),
            }
        })?;
    let mut fds: Vec<(BorrowedFd<'_>, i32)> = fds;
    fds.extend([
        (devnull.as_fd(), 0),
        (devnull.as_fd(), 1),
        (devnull.as_fd(), 2),
    ]);
    let spec = ExecSpec {
        exe,
        argv: vec![argv0],
        envp: Vec::new(),
        fds,
    };
    spawn(&spec).map_err(|source| ChildError::Spawn { child, source })
}

fn drain_logs(
    chan: Channel<NoMessage, LogRecord>,
    child: &'static str,
) -> Result<tokio::task::JoinHandle<()>, ChildError> {
    let mut chan = chan.into_async().map_err(|source| ChildError::Ipc {
        child,
        step: "log channel",
        source,
    })?;
    Ok(tokio::spawn(async move {
        loop {
            match chan.recv().await {
                Ok(r) => crate::logging::emit_child_record(&r.msg),
                Err(ChannelError::PeerClosed) => break,
                Err(e) => {
                    tracing::error!("SECURITY: {child} log channel: {}", crate::error_chain(&e));
                    break;
                }
            }
        }
    }))
}

/// Starts the worker and waits until it is Ready.
pub async fn start_worker(
    bins: &ChildBinaries,
    res: &WorkerResources<'_>,
) -> Result<RunningWorker, ChildError> {
    const C: &str = "worker";
    let ipc = |step| {
        move |source| ChildError::Ipc {
            child: C,
            step,
            source,
        }
    };
    let (parent_ctl, child_ctl) =
        Channel::<ParentToWorker, WorkerToParent>::pair().map_err(ipc("channel"))?;
    let (parent_log, child_log) =
        Channel::<NoMessage, LogRecord>::pair().map_err(ipc("channel"))?;
    let (parent_sig, child_sig) = ParentSigner::pair().map_err(ipc("channel"))?;
    let spawned = {
        let fds = vec![
            (child_ctl.as_fd(), bulwark_ipc::CONTROL_FD),
            (child_log.as_fd(), bulwark_ipc::LOG_FD),
            (child_sig.as_fd(), bulwark_ipc::SIGNER_FD),
        ];
        exec_child(WORKER_BIN, bins.worker.as_fd(), fds)?
    };
    // The child has its copies; ours must go so that EOF signals the child's death.
    drop((child_ctl, child_log, child_sig));
    let log_task = drain_logs(parent_log, C)?;
    let mut ctl = parent_ctl.into_async().map_err(ipc("control channel"))?;
    let proc_ = handshake_worker(&mut ctl, spawned.pid, res).await;
    match proc_ {
        Ok(()) => Ok(RunningWorker {
            proc: Running {
                pid: spawned.pid,
                pidfd: spawned.pidfd,
                control: ctl,
                log_task,
            },
            signer: Some(parent_sig),
        }),
        Err(e) => {
            kill_and_reap(spawned.pid, &spawned.pidfd);
            Err(e.at_binary(bins.dir.join(WORKER_BIN)))
        }
    }
}

async fn handshake_worker(
    ctl: &mut AsyncChannel<ParentToWorker, WorkerToParent>,
    pid: i32,
    res: &WorkerResources<'_>,
) -> Result<(), ChildError> {
    const C: &str = "worker";
    let proto = |step, what: String| ChildError::Protocol {
        child: C,
        step,
        what,
    };
    match step(C, "hello", ctl.recv()).await?.into_parts().0 {
        WorkerToParent::Hello { version, pid: p } if version == PROTOCOL_VERSION && p == pid => {}
        WorkerToParent::Hello { version, pid: p } => {
            return Err(proto(
                "hello",
                format!("version {version} pid {p}, expected {PROTOCOL_VERSION} / {pid}"),
            ))
        }
        WorkerToParent::Fatal { reason } => return Err(ChildError::Fatal { child: C, reason }),
        other => return Err(proto("hello", format!("got {}", other.name()))),
    }
    step(
        C,
        "hello",
        ctl.send(
            &ParentToWorker::Hello {
                version: PROTOCOL_VERSION,
            },
            &[],
        ),
    )
    .await?;
    let transport_role = if res.tcp {
        FdRole::TcpListener
    } else {
        FdRole::UdpSocket
    };
    let init = WorkerInit {
        config: WorkerConfig {
            uid: res.identity.uid,
            gid: res.identity.gid,
            chroot_dir: res.chroot_dir.to_owned(),
            verb: res.verb,
            seccomp: res.seccomp,
            engine: res.engine.clone(),
        },
        fds: res
            .lanes
            .iter()
            .flat_map(|_| [FdRole::Tun, transport_role])
            .collect(),
    };
    let fds: Vec<BorrowedFd<'_>> = res.lanes.iter().flat_map(|(t, s)| [*t, *s]).collect();
    step(
        C,
        "init",
        ctl.send(&ParentToWorker::Init(Box::new(init)), &fds),
    )
    .await?;
    match step(C, "ready", ctl.recv()).await?.into_parts().0 {
        WorkerToParent::Ready => Ok(()),
        WorkerToParent::Fatal { reason } => Err(ChildError::Fatal { child: C, reason }),
        other => Err(proto("ready", format!("got {}", other.name()))),
    }
}

/// Starts the broker and waits until it is Ready.
pub async fn start_broker(
    bins: &ChildBinaries,
    res: &BrokerResources<'_>,
) -> Result<Running<ParentToBroker, BrokerToParent>, ChildError> {
    const C: &str = "broker";
    let ipc = |step| {
        move |source| ChildError::Ipc {
            child: C,
            step,
            source,
        }
    };
    let (parent_ctl, child_ctl) =
        Channel::<ParentToBroker, BrokerToParent>::pair().map_err(ipc("channel"))?;
    let (parent_log, child_log) =
        Channel::<NoMessage, LogRecord>::pair().map_err(ipc("channel"))?;
    let spawned = {
        let fds = vec![
            (child_ctl.as_fd(), bulwark_ipc::CONTROL_FD),
            (child_log.as_fd(), bulwark_ipc::LOG_FD),
        ];
        exec_child(BROKER_BIN, bins.broker.as_fd(), fds)?
    };
    drop((child_ctl, child_log));
    let log_task = drain_logs(parent_log, C)?;
    let mut ctl = parent_ctl.into_async().map_err(ipc("control channel"))?;
    match handshake_broker(&mut ctl, spawned.pid, res).await {
        Ok(()) => Ok(Running {
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            control: ctl,
            log_task,
        }),
        Err(e) => {
            kill_and_reap(spawned.pid, &spawned.pidfd);
            Err(e.at_binary(bins.dir.join(BROKER_BIN)))
        }
    }
}

async fn handshake_broker(
    ctl: &mut AsyncChannel<ParentToBroker, BrokerToParent>,
    pid: i32,
    res: &BrokerResources<'_>,
) -> Result<(), ChildError> {
    const C: &str = "broker";
    let proto = |step, what: String| ChildError::Protocol {
        child: C,
        step,
        what,
    };
    match step(C, "hello", ctl.recv()).await?.into_parts().0 {
        BrokerToParent::Hello { version, pid: p } if version == PROTOCOL_VERSION && p == pid => {}
        BrokerToParent::Hello { version, pid: p } => {
            return Err(proto(
                "hello",
                format!("version {version} pid {p}, expected {PROTOCOL_VERSION} / {pid}"),
            ))
        }
        BrokerToParent::Fatal { reason } => return Err(ChildError::Fatal { child: C, reason }),
        other => return Err(proto("hello", format!("got {}", other.name()))),
    }
    step(
        C,
        "hello",
        ctl.send(
            &ParentToBroker::Hello {
                version: PROTOCOL_VERSION,
            },
            &[],
        ),
    )
    .await?;
    let init = BrokerInit {
        config: BrokerConfig {
            uid: res.identity.uid,
            gid: res.identity.gid,
            chroot_dir: res.chroot_dir.to_owned(),
            verb: res.verb,
            seccomp: res.seccomp,
            mgmt: res.mgmt.clone(),
        },
        fds: res
            .listeners
            .iter()
            .map(|(_, r, _)| *r)
            .chain(res.metrics.map(|(_, r)| r))
            .collect(),
        policies: res.listeners.iter().map(|(_, _, p)| p.clone()).collect(),
    };
    let fds: Vec<BorrowedFd<'_>> = res
        .listeners
        .iter()
        .map(|(f, _, _)| *f)
        .chain(res.metrics.map(|(f, _)| f))
        .collect();
    step(C, "init", ctl.send(&ParentToBroker::Init(init), &fds)).await?;
    match step(C, "ready", ctl.recv()).await?.into_parts().0 {
        BrokerToParent::Ready => Ok(()),
        BrokerToParent::Fatal { reason } => Err(ChildError::Fatal { child: C, reason }),
        other => Err(proto("ready", format!("got {}", other.name()))),
    }
}

/// SIGKILLs the child through its pidfd and reaps it (blocking; the child is gone at once).
pub fn kill_and_reap(pid: i32, pidfd: &OwnedFd) {
    // ESRCH (already dead) is fine; the reap below collects it either way.
    let _ = crate::sys::spawn::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}
