#![deny(unsafe_code)]
//! `bulwark-worker`: the internet-facing child process.
//!
//! Bootstrap (single-threaded, in this order): claim the inherited channel ends on their fixed fds
//! (each checked to be a unix seqpacket socket), Hello/version exchange with the parent, receive
//! `Init` and its descriptors and check each one's kind against the roles `Init` declares (TUN =
//! char device 10:200, sockets by `SO_DOMAIN`/`SO_TYPE`), demote (chroot, ids, capabilities,
//! no_new_privs, ...; see `bulwark_policy::demote`), then build the tokio runtime, report Ready and
//! serve. Any bootstrap failure is reported to the parent as `Fatal` (when the channel still works)
//! and the process exits with status 1.
//!
//! Logging: records go to the parent over the log channel (fd 4); the parent is the only sink.

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use bulwark_ipc::msg::{
    LogOrigin, LogRecord, ParentToWorker, Severity, WorkerInit, WorkerToParent,
};
use bulwark_ipc::{ChildLog, WorkerChannels, WorkerControl, WorkerSigner, PROTOCOL_VERSION};
use bulwark_policy::{DemotePlan, Identity};

/// How long the bootstrap waits for each parent message.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptors the worker may have open after demotion, beyond those it was handed.
const NOFILE_HEADROOM: u64 = 64;
/// Extra descriptors for a TCP server: one per client connection (OpenVPN's default
/// `max-clients` is 1024).
const NOFILE_TCP_CLIENTS: u64 = 1024;

/// Errors of the worker process.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    /// The inherited channel ends are missing or wrong.
    #[error("cannot take the inherited IPC channels: {0}")]
    Channels(#[source] bulwark_ipc::LayoutError),
    /// A bootstrap IPC step failed.
    #[error("IPC during {step}: {source}")]
    Ipc {
        /// The step.
        step: &'static str,
        /// The error.
        #[source]
        source: bulwark_ipc::ChannelError,
    },
    /// The parent sent something else than the bootstrap protocol allows.
    #[error("protocol violation: expected {expected}, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// The parent speaks another protocol version.
    #[error("parent speaks IPC protocol version {0}, this worker {PROTOCOL_VERSION}")]
    Version(u16),
    /// A received descriptor is not what Init declared.
    #[error("received descriptors: {0}")]
    Fds(#[source] bulwark_ipc::FdCheckError),
    /// The privilege drop failed.
    #[error("privilege drop: {0}")]
    Demote(#[source] bulwark_policy::DemoteError),
    /// The runtime could not be built.
    #[error("cannot build the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Sends log lines to the parent over the log channel; the parent is the only log sink.
struct LogForwarder {
    chan: Mutex<(ChildLog, u64)>,
}

impl LogForwarder {
    fn log(&self, severity: Severity, verb: u8, text: &str) {
        // A poisoned lock or a dead parent leaves nowhere to log to: drop the record.
        if let Ok(mut guard) = self.chan.lock() {
            let (chan, seq) = &mut *guard;
            *seq += 1;
            let rec = LogRecord::new(LogOrigin::Worker, *seq, verb, severity, text);
            let _ = chan.send(&rec, &[]);
        }
    }
}

/// The bootstrap result: what the serving part gets.
struct Bootstrapped {
    control: WorkerControl,
    signer: WorkerSigner,
    init: WorkerInit,
    fds: Vec<OwnedFd>,
}

fn main() -> ExitCode {
    let parent = nix::unistd::getppid().as_raw();
    let chans = match WorkerChannels::from_inherited() {
        Ok(c) => c,
        Err(e) => {
            // No channel: stderr is all there is.
            eprintln!("bulwark-worker: {}", chain(&WorkerError::Channels(e)));
            return ExitCode::FAILURE;
        }
    };
    let WorkerChannels {
        control,
        log,
        signer,
    } = chans;
    let log = LogForwarder {
        chan: Mutex::new((log, 0)),
    };
    let mut control = control;
    match bootstrap(&mut control, parent) {
        Ok((init, fds)) => {
            let boot = Bootstrapped {
                control,
                signer,
                init,
                fds,
            };
            match run(boot, &log) {
                Ok(()) => ExitCode::SUCCESS,
                Err((ctl, e)) => {
                    fatal(ctl.as_ref(), &log, &e);
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            fatal(Some(&control), &log, &e);
            ExitCode::FAILURE
        }
    }
}

fn fatal(control: Option<&WorkerControl>, log: &LogForwarder, e: &WorkerError) {
    let reason = chain(e);
    log.log(Severity::Fatal, 1, &format!("worker: {reason}"));
    if let Some(c) = control {
        let mut r = reason;
        r.truncate(bulwark_ipc::msg::MAX_REASON_LEN);
        while !r.is_char_boundary(r.len()) {
            r.pop();
        }
        let _ = c.send(&WorkerToParent::Fatal { reason: r }, &[]);
    }
}

/// Single-threaded bootstrap up to and including the privilege drop.
fn bootstrap(
    control: &mut WorkerControl,
    parent: i32,
) -> Result<(WorkerInit, Vec<OwnedFd>), WorkerError> {
    let ipc = |step| move |source| WorkerError::Ipc { step, source };
    control
        .set_recv_timeout(Some(BOOTSTRAP_TIMEOUT))
        .map_err(ipc("set timeout"))?;
    let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    control
        .send(
            &WorkerToParent::Hello {
                version: PROTOCOL_VERSION,
                pid,
            },
            &[],
        )
        .map_err(ipc("hello"))?;
    let (hello, _) = control.recv().map_err(ipc("hello"))?.into_parts();
    match hello {
        ParentToWorker::Hello { version } if version == PROTOCOL_VERSION => {}
        ParentToWorker::Hello { version } => return Err(WorkerError::Version(version)),
        other => {
            return Err(WorkerError::Unexpected {
                expected: "Hello",
                got: other_name(&other),
            })
        }
    }
    let (init, fds) = control.recv().map_err(ipc("init"))?.into_parts();
    let init = match init {
        ParentToWorker::Init(init) => init,
        other => {
            return Err(WorkerError::Unexpected {
                expected: "Init",
                got: other_name(&other),
            })
        }
    };
    // INVARIANT: every descriptor's kind is checked against the declared roles before any use.
    init.check_fds(&fds).map_err(WorkerError::Fds)?;
    let plan = DemotePlan {
        identity: Identity {
            uid: init.config.uid,
            gid: init.config.gid,
        },
        chroot_dir: init.config.chroot_dir.clone(),
        expected_parent: Some(parent),
        nofile: NOFILE_HEADROOM
            + fds.len() as u64
            + if init.fds.contains(&bulwark_ipc::msg::FdRole::TcpListener) {
                NOFILE_TCP_CLIENTS
            } else {
                0
            },
    };
    // INVARIANT: demote before the runtime exists (single-threaded) and before any input from the
    // network is read.
    bulwark_policy::demote(&plan).map_err(WorkerError::Demote)?;
    control
        .set_recv_timeout(None)
        .map_err(ipc("clear timeout"))?;
    Ok((init, fds))
}

fn other_name(m: &ParentToWorker) -> &'static str {
    bulwark_ipc::Message::name(m)
}

/// Builds the runtime, reports Ready, serves.
fn run(boot: Bootstrapped, log: &LogForwarder) -> Result<(), (Option<WorkerControl>, WorkerError)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (None, WorkerError::Runtime(e)))?;
    let Bootstrapped {
        control,
        signer,
        init,
        fds,
    } = boot;
    if let Err(source) = control.send(&WorkerToParent::Ready, &[]) {
        return Err((
            None,
            WorkerError::Ipc {
                step: "ready",
                source,
            },
        ));
    }
    log.log(
        Severity::Info,
        3,
        &format!(
            "worker ready (uid {}, gid {}, {} descriptors)",
            init.config.uid,
            init.config.gid,
            fds.len()
        ),
    );
    rt.block_on(serve(control, signer, init, fds, log))
}

// ==== INTEGRATION POINT ======================================================================
// `serve` is the worker's serving part. The integrator replaces its body with the OpenVPN engine
// (driving `bulwark_worker::proto` over the TUN and transport descriptors in `fds`, in the order
// of `init.fds`, and signing through `signer`). Until then it holds the descriptors (so the
// privilege and sandbox properties can be tested) and waits for Shutdown on the control channel;
// it serves no VPN traffic and says so in the log.
// =============================================================================================
async fn serve(
    control: WorkerControl,
    signer: WorkerSigner,
    init: WorkerInit,
    fds: Vec<OwnedFd>,
    log: &LogForwarder,
) -> Result<(), (Option<WorkerControl>, WorkerError)> {
    log.log(
        Severity::Warning,
        1,
        "worker: the OpenVPN engine is not wired into this build; holding descriptors, serving no traffic",
    );
    let _held: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let _ = (&signer, &init);
    let mut control = control.into_async().map_err(|source| {
        (
            None,
            WorkerError::Ipc {
                step: "async control",
                source,
            },
        )
    })?;
    loop {
        match control.recv().await {
            Ok(r) => match r.into_parts().0 {
                ParentToWorker::Shutdown => {
                    log.log(Severity::Info, 3, "worker: shutdown requested");
                    return Ok(());
                }
                ParentToWorker::SetVerb { level } => {
                    log.log(
                        Severity::Info,
                        3,
                        &format!("worker: verb {level} requested"),
                    );
                }
                ParentToWorker::CrlUpdate { .. } => {
                    log.log(
                        Severity::Warning,
                        1,
                        "worker: CRL update received but no engine to apply it to",
                    );
                }
                other @ (ParentToWorker::Hello { .. } | ParentToWorker::Init(_)) => {
                    let e = WorkerError::Unexpected {
                        expected: "Shutdown/SetVerb/CrlUpdate",
                        got: other_name(&other),
                    };
                    return Err((control.into_blocking().ok(), e));
                }
            },
            Err(bulwark_ipc::ChannelError::PeerClosed) => return Ok(()),
            Err(source) => {
                return Err((
                    None,
                    WorkerError::Ipc {
                        step: "serve",
                        source,
                    },
                ))
            }
        }
    }
}
