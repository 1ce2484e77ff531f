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

use std::os::fd::OwnedFd;
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
    /// The management service could not be set up.
    #[error("management service: {0}")]
    Serve(String),
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

/// Serves the management interface: the listeners from `fds` (with the policies of `init`), the
/// requests of management commands forwarded to the parent, the parent's events fed into the
/// notification hub, audit records and rendered status files sent to the parent.
///
/// One loop owns the control channel: everything that goes to the parent passes through it, so
/// messages are never interleaved mid-frame and the order of audit records is preserved.
async fn serve(
    control: BrokerControl,
    init: BrokerInit,
    fds: Vec<OwnedFd>,
    log: &LogForwarder,
) -> Result<(), (Option<BrokerControl>, BrokerError)> {
    use bulwark_ipc::msg::mgmt::{MgmtEvent, Response};
    use bulwark_ipc::msg::StatusFileSpec;
    use bulwark_mgmt::backend::{BackendCall, BackendError, ChannelBackend};
    use bulwark_mgmt::hub::{system_clock, BrokerOutput, EngineConfig, Hub};
    use bulwark_mgmt::serve::Listener;
    use bulwark_mgmt::session::Limits;
    use bulwark_mgmt::status::StatusVersion;
    use std::collections::HashMap;
    use std::sync::Arc;
    use tokio::sync::{broadcast, mpsc, oneshot, watch};

    let ipc_err = |step| move |source| (None, BrokerError::Ipc { step, source });
    let mut control = control.into_async().map_err(ipc_err("async control"))?;
    let m = &init.config.mgmt;
    let status_version = StatusVersion::from_number(u32::from(m.status_version))
        .map_err(|e| (None, BrokerError::Serve(e.to_string())))?;
    let cfg = EngineConfig {
        log_cache: m.log_cache as usize,
        status_version,
        verb: init.config.verb,
        limits: Limits {
            max_clients: m.max_sessions as usize,
            ..Limits::default()
        },
    };
    let (backend, mut calls) = ChannelBackend::new(256);
    // Status snapshots are shared for 100 ms (see CachedStatus): pollers cannot load the worker.
    let backend = Arc::new(bulwark_mgmt::backend::CachedStatus::new(
        backend,
        Duration::from_millis(100),
    ));
    let (hub, mut outputs) = Hub::new(cfg, backend.clone(), system_clock());
    // The metrics listener, if configured, is the last descriptor (BrokerInit::validate checked
    // the count).
    let mut fds = fds;
    let metrics_counters = Arc::new(bulwark_mgmt::metrics::BrokerCounters::default());
    if let Some(ms) = &m.metrics {
        let unix = init.fds.last() == Some(&bulwark_ipc::msg::FdRole::UnixListener);
        let Some(fd) = fds.pop() else {
            return Err((None, BrokerError::Serve("metrics listener missing".into())));
        };
        let listener = bulwark_mgmt::metrics::MetricsListener::from_fd(fd, unix)
            .map_err(|e| (None, BrokerError::Serve(e.to_string())))?;
        let cfg = bulwark_mgmt::metrics::MetricsConfig {
            status_path: ms.status_path.clone(),
            per_client: ms.per_client,
        };
        let (h, counters) = (hub.clone(), Arc::clone(&metrics_counters));
        let render: bulwark_mgmt::metrics::RenderFn = Arc::new(move || {
            let (h, counters, cfg) = (h.clone(), Arc::clone(&counters), cfg.clone());
            Box::pin(async move {
                use bulwark_ipc::msg::mgmt::Request;
                // The same worker query as the status file: the numbers agree.
                let snap = match h.backend().call(Request::Status).await {
                    Ok(Response::Status(s)) => Some(s),
                    _ => None,
                };
                bulwark_mgmt::metrics::render(&cfg, snap.as_deref(), &counters, h.session_count())
            })
        });
        tokio::spawn(bulwark_mgmt::metrics::serve(listener, render));
    }
    let mut listeners = Vec::new();
    for (fd, policy) in fds.into_iter().zip(init.policies.iter().cloned()) {
        let l =
            Listener::from_fd(fd, policy).map_err(|e| (None, BrokerError::Serve(e.to_string())))?;
        listeners.push(l);
    }
    // Kept to apply the access rules of a SIGHUP reload (ParentToBroker::Reconfigure).
    let policy_slots: Vec<_> = listeners.iter().map(|l| l.policy_slot()).collect();
    let (ev_tx, ev_rx) = broadcast::channel::<MgmtEvent>(4096);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if !listeners.is_empty() {
        let h = hub.clone();
        tasks.spawn(async move {
            if let Err(e) = bulwark_mgmt::serve::serve(h, listeners, ev_rx, stop_rx).await {
                tracing::error!("management service: {e}");
            }
        });
    } else {
        drop(ev_rx);
    }
    // Status files: rendered here (the broker owns the formats), written by the parent.
    let (file_tx, mut file_rx) = mpsc::channel::<BrokerToParent>(8);
    let mut status_specs = m.status_files.clone();
    let mut status_loops = Vec::new();
    for (index, spec) in status_specs.iter().enumerate() {
        let StatusFileSpec {
            format,
            interval_secs,
        } = *spec;
        let Ok(index) = u8::try_from(index) else {
            break;
        };
        let h = hub.clone();
        let tx = file_tx.clone();
        status_loops.push(tasks.spawn(async move {
            status_file_loop(h, index, format, interval_secs, tx).await;
        }));
    }
    let status_tx = file_tx.clone();
    let dump_tx = file_tx.clone();
    drop(file_tx);

    let mut pending: HashMap<u64, oneshot::Sender<Result<Response, BackendError>>> = HashMap::new();
    let mut next_id: u64 = 0;
    let outcome = loop {
        tokio::select! {
            msg = control.recv() => match msg {
                Ok(r) => match r.into_parts().0 {
                    ParentToBroker::Shutdown => {
                        log.log(Severity::Info, 3, "broker: shutdown requested");
                        break Ok(());
                    }
                    ParentToBroker::SetVerb { level } => hub.set_verb(level),
                    ParentToBroker::Reconfigure(r) => {
                        // The parent sends one entry per running listener and status file; a
                        // mismatch is its bug: keep everything as it is and say so.
                        if r.policies.len() != policy_slots.len() || r.status_intervals.len() != status_specs.len() {
                            log.log(Severity::Error, 1, &format!(
                                "broker: reconfiguration ignored: {} policies for {} listeners, {} intervals for {} status files",
                                r.policies.len(), policy_slots.len(), r.status_intervals.len(), status_specs.len()
                            ));
                        } else {
                            for (slot, policy) in policy_slots.iter().zip(r.policies) {
                                slot.replace(policy);
                            }
                            for (index, interval) in r.status_intervals.into_iter().enumerate() {
                                let (Some(spec), Ok(i)) = (status_specs.get_mut(index), u8::try_from(index)) else {
                                    break;
                                };
                                if spec.interval_secs == interval {
                                    continue;
                                }
                                spec.interval_secs = interval;
                                if let Some(old) = status_loops.get(index) {
                                    old.abort();
                                }
                                let (h, tx, format) = (hub.clone(), status_tx.clone(), spec.format);
                                let handle = tasks.spawn(async move {
                                    status_file_loop(h, i, format, interval, tx).await;
                                });
                                if let Some(slot) = status_loops.get_mut(index) {
                                    *slot = handle;
                                }
                            }
                            log.log(Severity::Info, 3, "broker: management access rules and status intervals reloaded");
                        }
                    }
                    ParentToBroker::DumpStatus => {
                        let h = hub.clone();
                        let tx = dump_tx.clone();
                        tokio::spawn(async move {
                            if let Some(text) = render_status(&h, None).await {
                                let _ = tx.send(BrokerToParent::StatusDump { text }).await;
                            }
                        });
                    }
                    ParentToBroker::Response { id, result } => match pending.remove(&id) {
                        // The session may have gone away meanwhile: nothing to deliver then.
                        Some(tx) => { let _ = tx.send(result); }
                        None => {
                            let e = BrokerError::Unexpected { expected: "Response to an outstanding request", got: "Response with an unknown id" };
                            break Err((control.into_blocking().ok(), e));
                        }
                    },
                    ParentToBroker::Event(ev) => {
                        // A client that is reported connected must be in the next status answer.
                        if matches!(*ev, MgmtEvent::Client { .. } | MgmtEvent::ClientAddress { .. }) {
                            backend.invalidate();
                        }
                        // No receiver only means no listener is configured; histories still matter.
                        if ev_tx.send(*ev.clone()).is_err() {
                            hub.ingest(*ev);
                        }
                    }
                    other @ (ParentToBroker::Hello { .. } | ParentToBroker::Init(_)) => {
                        let e = BrokerError::Unexpected {
                            expected: "Shutdown/SetVerb/Response/Event/DumpStatus/Reconfigure",
                            got: other_name(&other),
                        };
                        break Err((control.into_blocking().ok(), e));
                    }
                },
                Err(bulwark_ipc::ChannelError::PeerClosed) => break Ok(()),
                Err(source) => break Err((None, BrokerError::Ipc { step: "serve", source })),
            },
            Some(BackendCall { request, reply }) = calls.recv() => {
                next_id += 1;
                let id = next_id;
                if let Err(source) = control.send(&BrokerToParent::Request { id, request }, &[]).await {
                    break Err((None, BrokerError::Ipc { step: "request", source }));
                }
                pending.insert(id, reply);
            }
            Some(out) = outputs.recv() => match out {
                BrokerOutput::Audit(rec) => {
                    metrics_counters.command(rec.role, &rec.outcome);
                    if let Err(source) = control.send(&BrokerToParent::Audit(rec), &[]).await {
                        break Err((None, BrokerError::Ipc { step: "audit", source }));
                    }
                }
                BrokerOutput::Log(rec) => {
                    let sev = if rec.flags.fatal {
                        Severity::Fatal
                    } else if rec.flags.nonfatal {
                        Severity::Error
                    } else if rec.flags.warn {
                        Severity::Warning
                    } else if rec.flags.debug {
                        Severity::Debug
                    } else {
                        Severity::Info
                    };
                    log.log(sev, 3, &rec.message);
                }
            },
            Some(msg) = file_rx.recv() => {
                if let Err(source) = control.send(&msg, &[]).await {
                    break Err((None, BrokerError::Ipc { step: "status file", source }));
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    tasks.abort_all();
    outcome
}

/// Renders the current status in `format` (`None`: the configured status-version), or `None`
/// when no snapshot is available (the worker may be restarting).
async fn render_status(
    hub: &bulwark_mgmt::hub::Hub,
    format: Option<bulwark_ipc::msg::StatusFormat>,
) -> Option<String> {
    use bulwark_ipc::msg::mgmt::{Request, Response};
    use bulwark_ipc::msg::StatusFormat;
    use bulwark_mgmt::status::{render, LineEnding, StatusVersion};
    let snap = match hub.backend().call(Request::Status).await {
        Ok(Response::Status(s)) => s,
        Ok(_) | Err(_) => return None,
    };
    let version = match format {
        None => hub.config().status_version,
        Some(StatusFormat::V1) => StatusVersion::V1,
        Some(StatusFormat::V2) => StatusVersion::V2,
        Some(StatusFormat::V3) => StatusVersion::V3,
        Some(StatusFormat::Json) => {
            let mut j = bulwark_mgmt::model::StatusJson::encode(&snap).ok()?;
            j.push('\n');
            return Some(j);
        }
    };
    Some(render(&snap, version, LineEnding::Lf))
}

/// Renders one status file every `interval_secs` and hands it to the control loop.
async fn status_file_loop(
    hub: std::sync::Arc<bulwark_mgmt::hub::Hub>,
    index: u8,
    format: bulwark_ipc::msg::StatusFormat,
    interval_secs: u32,
    tx: tokio::sync::mpsc::Sender<BrokerToParent>,
) {
    let mut timer = tokio::time::interval(Duration::from_secs(u64::from(interval_secs.max(1))));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        // No snapshot (worker restarting): keep the previous file, try again next tick.
        let Some(text) = render_status(&hub, Some(format)).await else {
            continue;
        };
        if tx
            .send(BrokerToParent::StatusFile { index, text })
            .await
            .is_err()
        {
            return;
        }
    }
}
