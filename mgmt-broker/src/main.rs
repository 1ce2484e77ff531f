#![deny(unsafe_code)]
//! `bulwark-mgmt`: the management broker child process (faces local management clients).
//!
//! Bootstrap (single-threaded, in this order): claim the inherited channel ends on their fixed fds
//! (each checked to be a unix seqpacket socket), Hello/version exchange with the parent, receive
//! `Init` and its descriptors (the management listeners) and check each one's kind against the
//! roles `Init` declares (sockets by `SO_DOMAIN`/`SO_TYPE`/`SO_ACCEPTCONN`), demote (chroot, ids, capabilities,
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
    BrokerInit, BrokerToParent, LogOrigin, LogRecord, ParentToBroker, Severity,
};
use bulwark_ipc::{BrokerChannels, BrokerControl, ChildLog, PROTOCOL_VERSION};
use bulwark_policy::{DemotePlan, Identity};

/// How long the bootstrap waits for each parent message.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptors the worker may have open after demotion, beyond those it was handed.
const NOFILE_HEADROOM: u64 = 64;

/// Errors of the broker process.
#[derive(Debug, thiserror::Error)]
enum BrokerError {
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
    #[error("parent speaks IPC protocol version {0}, this broker {PROTOCOL_VERSION}")]
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
    /// The seccomp filter could not be installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
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
            let rec = LogRecord::new(LogOrigin::Broker, *seq, verb, severity, text);
            let _ = chan.send(&rec, &[]);
        }
    }
}

/// The bootstrap result: what the serving part gets.
struct Bootstrapped {
    control: BrokerControl,
    init: BrokerInit,
    fds: Vec<OwnedFd>,
}

fn main() -> ExitCode {
    let parent = nix::unistd::getppid().as_raw();
    let chans = match BrokerChannels::from_inherited() {
        Ok(c) => c,
        Err(e) => {
            // No channel: stderr is all there is.
            eprintln!("bulwark-mgmt: {}", chain(&BrokerError::Channels(e)));
            return ExitCode::FAILURE;
        }
    };
    let BrokerChannels { control, log } = chans;
    let log = LogForwarder {
        chan: Mutex::new((log, 0)),
    };
    let mut control = control;
    match bootstrap(&mut control, parent) {
        Ok((init, fds)) => {
            let boot = Bootstrapped { control, init, fds };
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

fn fatal(control: Option<&BrokerControl>, log: &LogForwarder, e: &BrokerError) {
    let reason = chain(e);
    log.log(Severity::Fatal, 1, &format!("broker: {reason}"));
    if let Some(c) = control {
        let mut r = reason;
        r.truncate(bulwark_ipc::msg::MAX_REASON_LEN);
        while !r.is_char_boundary(r.len()) {
            r.pop();
        }
        let _ = c.send(&BrokerToParent::Fatal { reason: r }, &[]);
    }
}

/// Single-threaded bootstrap up to and including the privilege drop.
fn bootstrap(
    control: &mut BrokerControl,
    parent: i32,
) -> Result<(BrokerInit, Vec<OwnedFd>), BrokerError> {
    let ipc = |step| move |source| BrokerError::Ipc { step, source };
    control
        .set_recv_timeout(Some(BOOTSTRAP_TIMEOUT))
        .map_err(ipc("set timeout"))?;
    let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    control
        .send(
            &BrokerToParent::Hello {
                version: PROTOCOL_VERSION,
                pid,
            },
            &[],
        )
        .map_err(ipc("hello"))?;
    let (hello, _) = control.recv().map_err(ipc("hello"))?.into_parts();
    match hello {
        ParentToBroker::Hello { version } if version == PROTOCOL_VERSION => {}
        ParentToBroker::Hello { version } => return Err(BrokerError::Version(version)),
        other => {
            return Err(BrokerError::Unexpected {
                expected: "Hello",
                got: other_name(&other),
            })
        }
    }
    let (init, fds) = control.recv().map_err(ipc("init"))?.into_parts();
    let init = match init {
        ParentToBroker::Init(init) => init,
        other => {
            return Err(BrokerError::Unexpected {
                expected: "Init",
                got: other_name(&other),
            })
        }
    };
    // INVARIANT: every descriptor's kind is checked against the declared roles before any use.
    init.check_fds(&fds).map_err(BrokerError::Fds)?;
    let plan = DemotePlan {
        identity: Identity {
            uid: init.config.uid,
            gid: init.config.gid,
        },
        chroot_dir: init.config.chroot_dir.clone(),
        expected_parent: Some(parent),
        nofile: NOFILE_HEADROOM + fds.len() as u64,
    };
    // INVARIANT: demote before the runtime exists (single-threaded) and before any input from the
    // network is read.
    bulwark_policy::demote(&plan).map_err(BrokerError::Demote)?;
    control
        .set_recv_timeout(None)
        .map_err(ipc("clear timeout"))?;
    Ok((init, fds))
}

fn other_name(m: &ParentToBroker) -> &'static str {
    bulwark_ipc::Message::name(m)
}

/// Builds the runtime, reports Ready, serves.
fn run(boot: Bootstrapped, log: &LogForwarder) -> Result<(), (Option<BrokerControl>, BrokerError)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (None, BrokerError::Runtime(e)))?;
    let Bootstrapped { control, init, fds } = boot;
    // INVARIANT: the seccomp filter is installed on every thread (TSYNC) after the runtime exists and
    // before Ready; nothing from a management client has been read yet.
    let mode = match init.config.seccomp {
        bulwark_ipc::msg::SeccompMode::Kill => bulwark_policy::seccomp::Mode::Kill,
        bulwark_ipc::msg::SeccompMode::Trap => bulwark_policy::seccomp::Mode::Trap,
        bulwark_ipc::msg::SeccompMode::Log => bulwark_policy::seccomp::Mode::Log,
        bulwark_ipc::msg::SeccompMode::Off => bulwark_policy::seccomp::Mode::Off,
    };
    if let Err(e) = bulwark_policy::seccomp::install(bulwark_policy::seccomp::Role::Broker, mode) {
        return Err((Some(control), BrokerError::Seccomp(e.to_string())));
    }
    if let Err(source) = control.send(&BrokerToParent::Ready, &[]) {
        return Err((
            None,
            BrokerError::Ipc {
                step: "ready",
                source,
            },
        ));
    }
    log.log(
        Severity::Info,
        3,
        &format!(
            "broker ready (uid {}, gid {}, {} descriptors)",
            init.config.uid,
            init.config.gid,
            fds.len()
        ),
    );
    rt.block_on(serve(control, init, fds, log))
}

// ==== INTEGRATION POINT ======================================================================
// `serve` is the broker's serving part; it is replaced by the management engineer's serving
// function (`bulwark_mgmt`) once that exists: accept on the listeners in `fds` (order of
// `init.fds`), check peer credentials, speak the management protocol. Until then it holds the
// listeners and waits for Shutdown on the control channel; it serves no management clients and
// says so in the log.
// =============================================================================================
async fn serve(
    control: BrokerControl,
    init: BrokerInit,
    fds: Vec<OwnedFd>,
    log: &LogForwarder,
) -> Result<(), (Option<BrokerControl>, BrokerError)> {
    log.log(
        Severity::Warning,
        1,
        "broker: the management interface is not wired into this build; holding listeners, serving no clients",
    );
    let _held: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let _ = &init;
    let mut control = control.into_async().map_err(|source| {
        (
            None,
            BrokerError::Ipc {
                step: "async control",
                source,
            },
        )
    })?;
    loop {
        match control.recv().await {
            Ok(r) => match r.into_parts().0 {
                ParentToBroker::Shutdown => {
                    log.log(Severity::Info, 3, "broker: shutdown requested");
                    return Ok(());
                }
                ParentToBroker::SetVerb { level } => {
                    log.log(
                        Severity::Info,
                        3,
                        &format!("broker: verb {level} requested"),
                    );
                }
                other @ (ParentToBroker::Hello { .. } | ParentToBroker::Init(_)) => {
                    let e = BrokerError::Unexpected {
                        expected: "Shutdown/SetVerb",
                        got: other_name(&other),
                    };
                    return Err((control.into_blocking().ok(), e));
                }
            },
            Err(bulwark_ipc::ChannelError::PeerClosed) => return Ok(()),
            Err(source) => {
                return Err((
                    None,
                    BrokerError::Ipc {
                        step: "serve",
                        source,
                    },
                ))
            }
        }
    }
}
