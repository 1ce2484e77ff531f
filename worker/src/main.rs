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

use std::os::fd::OwnedFd;
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
    /// The protocol engine could not be built or failed.
    #[error("engine: {0}")]
    Engine(String),
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
        ParentToWorker::Init(init) => *init,
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

/// Serves VPN traffic: builds the engine from `init.config.engine`, signs through the parent, and
/// runs the driver over the TUN and transport descriptors until Shutdown (or the parent goes away).
async fn serve(
    control: WorkerControl,
    signer: WorkerSigner,
    init: WorkerInit,
    fds: Vec<OwnedFd>,
    log: &LogForwarder,
) -> Result<(), (Option<WorkerControl>, WorkerError)> {
    use bulwark_ipc::msg::{FdRole, SeccompMode};
    use bulwark_worker::driver::{self, DriverCommand, Transport};
    use bulwark_worker::proto::io::{EngineEvent, LogClass};
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;

    let engine_err = |e: String| (None, WorkerError::Engine(e));
    // The descriptors come as the data-plane threads' pairs: TUN queue k goes with UDP socket k
    // (`WorkerInit::validate` checked the counts); a TCP server has one TUN queue and the listener.
    let mut tuns = Vec::new();
    let mut udps = Vec::new();
    let mut tcp = None;
    for (role, fd) in init.fds.iter().zip(fds) {
        match role {
            FdRole::Tun => tuns.push(fd),
            FdRole::UdpSocket => udps.push(fd),
            FdRole::TcpListener => tcp = Some(fd),
            _ => {}
        }
    }
    let mut tuns = tuns.into_iter();
    let transport = match tcp {
        Some(fd) => Some(Transport::Tcp(fd)),
        None if !udps.is_empty() => Some(Transport::Udp(udps.remove(0))),
        None => None,
    };
    let (Some(tun), Some(transport)) = (tuns.next(), transport) else {
        return Err(engine_err(
            "Init lacks the TUN or the transport descriptor".into(),
        ));
    };
    let lanes: Vec<(OwnedFd, OwnedFd)> = udps.into_iter().zip(tuns).collect();
    let ec = &init.config.engine;
    let key = bulwark_worker::ipc_signer::IpcSigner::new(signer, &ec.tls.cert_chain_pem)
        .map_err(|e| engine_err(e.to_string()))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| engine_err(format!("randomness: {e}")))?;
    let rng = Box::new(|b: &mut [u8]| {
        // INVARIANT: never continue with weak randomness; the OS generator does not fail after boot.
        if getrandom::fill(b).is_err() {
            std::process::abort();
        }
    });
    let key: Arc<dyn bulwark_worker::proto::tls::KeySigner> = Arc::new(key);
    let engine = bulwark_worker::setup::build(ec, Arc::clone(&key), secret, rng)
        .map_err(|e| engine_err(e.to_string()))?;
    let verb = Arc::new(AtomicU8::new(init.config.verb));
    // INVARIANT: the seccomp filter is installed on every thread (TSYNC) as the last step before the
    // event loop: the engine, the signer client, the runtime and the data-plane threads exist, no
    // packet has been read yet.
    // Only after that does the worker report Ready.
    let mode = match init.config.seccomp {
        SeccompMode::Kill => bulwark_policy::seccomp::Mode::Kill,
        SeccompMode::Trap => bulwark_policy::seccomp::Mode::Trap,
        SeccompMode::Log => bulwark_policy::seccomp::Mode::Log,
        SeccompMode::Off => bulwark_policy::seccomp::Mode::Off,
    };
    let coalesce = Duration::from_micros(u64::from(ec.coalesce_usecs));
    // The moderation hold is a few tens of µs; prctl is not in the seccomp allowlist: set the timer
    // slack here, for this thread (the primary); each lane sets its own.
    if let Err(e) = driver::set_timer_slack(coalesce) {
        tracing::warn!("cannot set the timer slack for coalesce-usecs: {e}");
    }
    // INVARIANT: the lane threads are created here, before the seccomp filter (which forbids
    // creating threads); they read nothing before `driver::run` starts them.
    let plane = driver::DataPlane::new(engine, lanes, Arc::clone(&verb), coalesce)
        .map_err(|e| engine_err(e.to_string()))?;
    bulwark_policy::seccomp::install(bulwark_policy::seccomp::Role::Worker, mode)
        .map_err(|e| engine_err(e.to_string()))?;
    if let Err(source) = control.send(&WorkerToParent::Ready, &[]) {
        return Err((
            None,
            WorkerError::Ipc {
                step: "ready",
                source,
            },
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<DriverCommand>(16);
    let mut control = control.into_async().map_err(|source| {
        (
            None,
            WorkerError::Ipc {
                step: "async control",
                source,
            },
        )
    })?;
    let verb_ev = Arc::clone(&verb);
    // Everything for the parent goes through the loop below, which owns the control channel.
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<WorkerToParent>();
    let up_ev = up_tx.clone();
    let on_event = move |ev: EngineEvent| {
        if let Some(ce) = bulwark_worker::queries::client_event(&ev) {
            let _ = up_ev.send(WorkerToParent::Client(ce));
        }
        match ev {
            EngineEvent::AuthRequest(req) => {
                let _ = up_ev.send(WorkerToParent::AuthRequest(req));
            }
            EngineEvent::Log { class, line } => {
                let sev = match class {
                    LogClass::Error => Severity::Error,
                    LogClass::Notice | LogClass::Handshake | LogClass::Info | LogClass::Detail => {
                        Severity::Info
                    }
                    LogClass::Debug => Severity::Debug,
                    LogClass::PacketTrace => Severity::PacketTrace,
                };
                let level = class.verb();
                // verbosity is applied at the source; the packet characters only at exactly 5,
                // as OpenVPN's (at 6 and above its packet lines replace them)
                let v = verb_ev.load(Ordering::Relaxed);
                let shown = match class {
                    LogClass::PacketTrace => v == 5,
                    _ => level <= v,
                };
                if shown {
                    log.log(sev, level, &line);
                }
            }
            // Reported to the parent above; the engine already logged them in OpenVPN's words.
            EngineEvent::ClientConnected(_)
            | EngineEvent::ClientDisconnected { .. }
            | EngineEvent::ClientFloated { .. }
            | EngineEvent::ExitAnnounced { .. }
            | EngineEvent::CrResponse { .. } => {}
            EngineEvent::CloseTcp { .. } => {}
        }
    };
    let drive = driver::run(plane, transport, tun, rx, on_event);
    tokio::pin!(drive);
    let mut control_open = true;
    loop {
        tokio::select! {
            res = &mut drive => {
                return match res {
                    Ok(_) => Ok(()),
                    Err(e) => Err((control.into_blocking().ok(), WorkerError::Engine(e.to_string()))),
                };
            }
            Some(up) = up_rx.recv() => {
                if let Err(source) = control.send(&up, &[]).await {
                    return Err((None, WorkerError::Ipc { step: "report", source }));
                }
            }
            msg = control.recv(), if control_open => match msg {
                Ok(r) => match r.into_parts().0 {
                    ParentToWorker::Shutdown => {
                        log.log(Severity::Info, 3, "worker: shutdown requested");
                        let _ = tx.send(DriverCommand::Shutdown).await;
                    }
                    ParentToWorker::SetVerb { level } => verb.store(level, Ordering::Relaxed),
                    ParentToWorker::CrlUpdate { pem } => {
                        let _ = tx
                            .send(DriverCommand::Engine(Box::new(move |s, _, out| {
                                match s.set_crl(Some(&pem)) {
                                    Ok(()) => out.log(LogClass::Info, "CRL reloaded; new handshakes use it"),
                                    Err(e) => out.log(LogClass::Error, format!("CRL update rejected, keeping the previous one: {e}")),
                                }
                            })))
                            .await;
                    }
                    ParentToWorker::SetTls { tls } => {
                        // Built here, outside the engine loop: parsing certificates is not
                        // per-packet work, and a failure keeps the running TLS server.
                        match bulwark_worker::setup::tls_server(&tls, Arc::clone(&key)) {
                            Ok(server) => {
                                let server = Arc::new(server);
                                let _ = tx
                                    .send(DriverCommand::Engine(Box::new(move |s, _, out| {
                                        s.set_tls(server);
                                        out.log(LogClass::Info, "TLS settings reloaded (certificate, CA, CRL); handshakes from now on use them");
                                    })))
                                    .await;
                            }
                            Err(e) => log.log(
                                Severity::Error,
                                1,
                                &format!("TLS settings update rejected, keeping the running ones: {e}"),
                            ),
                        }
                    }
                    ParentToWorker::SetPush { push } => {
                        let _ = tx
                            .send(DriverCommand::Engine(Box::new(move |s, _, out| {
                                s.set_push(push);
                                out.log(LogClass::Info, "push list reloaded; clients that connect from now on get it");
                            })))
                            .await;
                    }
                    ParentToWorker::Query { id, query } => {
                        let up = up_tx.clone();
                        let _ = tx
                            .send(DriverCommand::Engine(Box::new(move |s, now, out| {
                                let now_unix = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_secs())
                                    .unwrap_or(0);
                                let reply = bulwark_worker::queries::answer(s, query, now, now_unix, out);
                                let _ = up.send(WorkerToParent::Reply { id, reply });
                            })))
                            .await;
                    }
                    ParentToWorker::AuthVerdict { cid, kid, verdict } => {
                        let _ = tx
                            .send(DriverCommand::Engine(Box::new(move |s, now, out| {
                                let now_unix = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_secs())
                                    .unwrap_or(0);
                                s.auth_verdict(cid, kid, verdict, now, now_unix, out);
                            })))
                            .await;
                    }
                    other @ (ParentToWorker::Hello { .. } | ParentToWorker::Init(_)) => {
                        let e = WorkerError::Unexpected {
                            expected: "Shutdown/SetVerb/CrlUpdate/SetPush/SetTls/Query/AuthVerdict",
                            got: other_name(&other),
                        };
                        return Err((control.into_blocking().ok(), e));
                    }
                },
                Err(bulwark_ipc::ChannelError::PeerClosed) => {
                    control_open = false;
                    let _ = tx.send(DriverCommand::Shutdown).await;
                }
                Err(source) => {
                    return Err((
                        None,
                        WorkerError::Ipc {
                            step: "serve",
                            source,
                        },
                    ))
                }
            },
        }
    }
}
