//! The `bulwark` program: command dispatch, start-up sequence, supervision loop, shutdown.
//!
//! Start-up order (architecture.md §Start-up), each step an `INVARIANT:` below: sanitize (close
//! inherited fds, take `$NOTIFY_SOCKET`, clear the environment) → parse the configuration (every
//! error reported with file:line before anything is touched) → open the child binaries → resolve
//! the sandbox identity → prepare the empty chroot directory → create the TUN device and its
//! addresses/routes → bind transport and management sockets → `daemon` → `writepid` → build the
//! (single-threaded) runtime → spawn and start both children → `READY=1`.
//!
//! Supervision: a crashed child is restarted with exponential backoff within a budget
//! ([`crate::supervise`]); the TUN device and its routes stay in place meanwhile. A security event
//! (seccomp kill, IPC protocol violation) stops the daemon unless `--on-security-event restart`.
//! SIGTERM/SIGINT stop the children, remove the TUN device (as OpenVPN, `persist-tun` only
//! applies to in-process restarts, which do not exist yet), and exit 0;
//! SIGHUP/SIGUSR1/SIGUSR2 are logged (their OpenVPN behaviour comes with the logging issue).
//! Under systemd with `WatchdogSec=`, the supervision loop sends `WATCHDOG=1` every half interval.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bulwark_ipc::msg::{BrokerToParent, FdRole, ParentToBroker, ParentToWorker, WorkerToParent};
use bulwark_ipc::{ChannelError, Message};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::children::{
    kill_and_reap, start_broker, start_worker, BrokerResources, ChildBinaries, ChildError, Running,
    RunningWorker, WorkerResources,
};
use crate::cli::{self, Command, RunOptions, SecurityEventPolicy};
use crate::config_input::{self, Loaded};
use crate::error_chain;
use crate::logging::{self, Sink};
use crate::notify::Notifier;
use crate::settings::Management;
use crate::sockets::{bind_management, bind_transport, ManagementSocket, TransportSocket};
use crate::supervise::{ExitKind, RestartBudget};
use crate::tun::TunDevice;

/// Default location of the empty chroot directory.
pub const DEFAULT_SANDBOX_DIR: &str = "/run/bulwark/empty";
/// How long children get to exit after Shutdown before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Errors that end the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Start-up sanitizing failed.
    #[error("start-up sanitizing: {0}")]
    Sanitize(#[source] bulwark_policy::sanitize::SanitizeError),
    /// `cd DIR` failed.
    #[error("cannot change directory to {path}: {source}")]
    Cd {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Logging could not be set up.
    #[error(transparent)]
    Logging(#[from] logging::LoggingError),
    /// The sandbox identity could not be resolved.
    #[error(transparent)]
    Identity(#[from] bulwark_policy::IdentityError),
    /// A child could not be started.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// The sandbox directory is missing or unsafe.
    #[error("sandbox directory {path}: {reason}")]
    Sandbox {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TUN set-up failed.
    #[error(transparent)]
    Tun(#[from] crate::tun::TunError),
    /// Socket set-up failed.
    #[error(transparent)]
    Socket(#[from] crate::sockets::SocketError),
    /// `daemon` failed.
    #[error("cannot daemonize: {0}")]
    Daemonize(#[source] std::io::Error),
    /// `writepid` failed.
    #[error("cannot write pid file {path}: {source}")]
    WritePid {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not be built.
    #[error("cannot build the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    /// A child kept crashing.
    #[error("{child} exited {count} times within {secs} s; giving up")]
    RestartBudget {
        /// Which child.
        child: &'static str,
        /// Restarts allowed.
        count: usize,
        /// The window.
        secs: u64,
    },
    /// A child exited because of a security event and the policy says stop.
    #[error("{child} {what}: security event, stopping (use --on-security-event restart to restart instead)")]
    SecurityEvent {
        /// Which child.
        child: &'static str,
        /// What happened.
        what: String,
    },
}

/// Entry point of the `bulwark` binary (arguments without the program name).
pub fn main_with_args(args: &[String]) -> ExitCode {
    match cli::parse(args) {
        Err(e) => {
            eprintln!("bulwark: {e}");
            eprintln!("Try 'bulwark --help' for usage.");
            ExitCode::FAILURE
        }
        Ok(Command::Version) => {
            print!("{}", cli::version_text());
            ExitCode::SUCCESS
        }
        Ok(Command::Help) => {
            print!("{}{}", cli::version_text(), cli::HELP);
            ExitCode::SUCCESS
        }
        Ok(Command::Init(a)) => crate::initcmd::run(&a),
        Ok(Command::CheckConfig { config, directives }) => check_config(&config, &directives),
        Ok(Command::Run(opts)) => match run_server(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Early(e)) => {
                eprintln!("bulwark: {}", error_chain(&e));
                ExitCode::FAILURE
            }
            Err(Failure::Config(errors)) => {
                for e in errors {
                    eprintln!("{e}");
                }
                eprintln!("Options error: configuration has errors, exiting");
                ExitCode::FAILURE
            }
            Err(Failure::Logged(e)) => {
                tracing::error!("{}", error_chain(&e));
                tracing::error!("Exiting due to fatal error");
                ExitCode::FAILURE
            }
        },
    }
}

/// Everything the server checks before it touches the system: the parse, options not implemented
/// yet, the key files and the engine configuration (TLS options, ciphers, keys, pool).
fn deep_check(loaded: &Loaded) -> Result<Vec<String>, Vec<String>> {
    let (fatal, mut warn) = crate::engine::unimplemented_options(&loaded.config);
    if !fatal.is_empty() {
        return Err(fatal);
    }
    let ec = crate::engine::build(&loaded.config).map_err(|e| vec![e.to_string()])?;
    let key = crate::engine::load_key_signer(&loaded.config).map_err(|e| vec![e.to_string()])?;
    crate::engine::check(&ec, key.algorithm()).map_err(|e| vec![e.to_string()])?;
    warn.extend(loaded.warnings.iter().cloned());
    Ok(warn)
}

fn check_config(config: &Path, directives: &[String]) -> ExitCode {
    match config_input::load(config, directives).and_then(|l| deep_check(&l)) {
        Ok(warnings) => {
            for w in &warnings {
                eprintln!("WARNING: {w}");
            }
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            let n = errors.len();
            eprintln!("{n} error{} found", if n == 1 { "" } else { "s" });
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// Before logging was set up: printed to stderr.
    Early(RunError),
    /// Configuration errors, one line each.
    Config(Vec<String>),
    /// After logging was set up: logged.
    Logged(RunError),
}

/// Ensures `dir` exists (created root-owned, 0755, if missing) and is a safe chroot target.
pub fn prepare_sandbox_dir(dir: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| RunError::Sandbox {
                path: dir.to_owned(),
                reason: e.to_string(),
            })?;
    }
    bulwark_policy::demote::check_chroot_dir(dir).map_err(|e| RunError::Sandbox {
        path: dir.to_owned(),
        reason: error_chain(&e),
    })
}

fn run_server(opts: &RunOptions) -> Result<(), Failure> {
    // INVARIANT: first, while single-threaded and before anything is opened: close every inherited
    // descriptor above 2, take NOTIFY_SOCKET, clear the environment (children get none).
    bulwark_policy::sanitize::close_inherited_fds(&[])
        .map_err(|e| Failure::Early(RunError::Sanitize(e)))?;
    let notifier = Notifier::from_env();
    let watchdog = watchdog_interval();
    bulwark_policy::sanitize::clear_environment(&["TZ"]);
    let offset = logging::local_offset();

    // INVARIANT: the whole configuration is parsed and validated before any system state changes.
    let Loaded {
        settings,
        verb,
        suppress_timestamps,
        warnings,
        config,
    } = config_input::load(&opts.config, &opts.directives).map_err(Failure::Config)?;
    // options the parser accepts but this build does not implement: fail loudly, never silently
    let (nyi_fatal, nyi_warn) = crate::engine::unimplemented_options(&config);
    if !nyi_fatal.is_empty() {
        return Err(Failure::Config(nyi_fatal));
    }
    // the engine's share of the configuration, with every key/certificate file read and checked
    let engine_cfg =
        crate::engine::build(&config).map_err(|e| Failure::Config(vec![e.to_string()]))?;
    // INVARIANT: the private key is loaded here and stays in the parent; the worker signs through
    // the signer channel.
    let key = crate::engine::load_key_signer(&config)
        .map_err(|e| Failure::Config(vec![e.to_string()]))?;
    crate::engine::check(&engine_cfg, key.algorithm())
        .map_err(|e| Failure::Config(vec![e.to_string()]))?;
    let key = std::sync::Arc::new(std::sync::Mutex::new(key));
    if let Some(cd) = &settings.cd {
        std::env::set_current_dir(cd).map_err(|source| {
            Failure::Early(RunError::Cd {
                path: cd.clone(),
                source,
            })
        })?;
    }
    let sink = match (&settings.log, &settings.daemon) {
        (Some((path, append)), _) => Sink::File {
            path: path.clone(),
            append: *append,
        },
        (None, Some(ident)) => Sink::Syslog(ident.clone()),
        (None, None) => Sink::Stderr,
    };
    logging::init(&sink, verb, offset, suppress_timestamps)
        .map_err(|e| Failure::Early(e.into()))?;
    tracing::info!("bulwark {} starting", env!("CARGO_PKG_VERSION"));
    for w in warnings {
        tracing::warn!("{w}");
    }
    for w in nyi_warn {
        tracing::warn!("WARNING: {w}");
    }
    match opts.seccomp {
        bulwark_ipc::msg::SeccompMode::Off | bulwark_ipc::msg::SeccompMode::Log => tracing::warn!(
            "WARNING: --seccomp {}: the worker and the broker run WITHOUT a syscall allowlist; this is not a sandbox",
            opts.seccomp.as_str()
        ),
        _ => {}
    }
    let l = Failure::Logged;

    let bins = ChildBinaries::open(opts.libexec_dir.as_deref()).map_err(|e| l(e.into()))?;
    // INVARIANT: identities are resolved here, in the parent; children receive only numbers.
    let ident = bulwark_policy::resolve(settings.user.as_deref(), settings.group.as_deref())
        .map_err(|e| l(e.into()))?;
    if let Some(note) = &ident.note {
        tracing::warn!("{note}");
    }
    let sandbox = opts
        .sandbox_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SANDBOX_DIR));
    prepare_sandbox_dir(&sandbox).map_err(l)?;

    let tun = TunDevice::create(&settings).map_err(|e| l(e.into()))?;
    tracing::info!("TUN/TAP device {} opened", tun.name());
    let transport = match bind_transport(&settings) {
        Ok(t) => t,
        Err(e) => {
            finish_tun(tun, false);
            return Err(l(e.into()));
        }
    };
    tracing::info!(
        "{} link local (bound): {}",
        if transport.tcp { "TCP" } else { "UDP" },
        transport.addr
    );
    let mut mgmt = Vec::new();
    for m in &settings.management {
        match bind_management(m) {
            Ok(s) => mgmt.push(s),
            Err(e) => {
                finish_tun(tun, false);
                return Err(l(e.into()));
            }
        }
    }

    if settings.daemon.is_some() {
        // INVARIANT: daemonize while still single-threaded (before the runtime exists).
        if let Err(e) = crate::sys::daemonize() {
            finish_tun(tun, false);
            return Err(l(RunError::Daemonize(e)));
        }
    }
    if let Some(p) = &settings.writepid {
        if let Err(source) = std::fs::write(p, format!("{}\n", std::process::id())) {
            finish_tun(tun, false);
            return Err(l(RunError::WritePid {
                path: p.clone(),
                source,
            }));
        }
    }

    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
        .and_then(|rt| {
            let ctx = Ctx {
                bins: &bins,
                tun: &tun,
                transport: &transport,
                mgmt: &mgmt,
                identity: ident.identity,
                sandbox: &sandbox,
                verb,
                policy: opts.on_security_event,
                notifier: &notifier,
                watchdog,
                engine: &engine_cfg,
                seccomp: opts.seccomp,
                key: &key,
            };
            rt.block_on(supervise(&ctx))
        });

    for m in &mgmt {
        if let Management::Unix(p) = &m.spec {
            let _ = std::fs::remove_file(p);
        }
    }
    if let Some(p) = &settings.writepid {
        let _ = std::fs::remove_file(p);
    }
    // As OpenVPN: `persist-tun` keeps the device across SIGUSR1/ping-restart restarts (not
    // implemented yet), never past the process's exit.
    finish_tun(tun, false);
    match result {
        Ok(sig) => {
            tracing::info!("{sig}[hard,] received, process exiting");
            Ok(())
        }
        Err(e) => Err(l(e)),
    }
}

fn finish_tun(tun: TunDevice, persist: bool) {
    let name = tun.name().to_owned();
    match tun.finish(persist) {
        Ok(()) if persist => tracing::info!("TUN/TAP device {name} kept (persist-tun)"),
        Ok(()) => tracing::info!("Closing TUN/TAP interface {name}"),
        Err(e) => tracing::error!("{}", error_chain(&e)),
    }
}

struct Ctx<'a> {
    bins: &'a ChildBinaries,
    tun: &'a TunDevice,
    transport: &'a TransportSocket,
    mgmt: &'a [ManagementSocket],
    identity: bulwark_policy::Identity,
    sandbox: &'a Path,
    verb: u8,
    policy: SecurityEventPolicy,
    notifier: &'a Notifier,
    /// How often to send `WATCHDOG=1` (half of systemd's `WatchdogSec=`), if at all.
    watchdog: Option<Duration>,
    engine: &'a bulwark_ipc::msg::engine::EngineConfig,
    seccomp: bulwark_ipc::msg::SeccompMode,
    key: &'a std::sync::Arc<std::sync::Mutex<crate::signer::ServerKeySigner>>,
}

impl Ctx<'_> {
    fn worker_res(&self) -> WorkerResources<'_> {
        WorkerResources {
            tun: self.tun.fd(),
            transport: self.transport.fd.as_fd(),
            tcp: self.transport.tcp,
            identity: self.identity,
            chroot_dir: self.sandbox,
            verb: self.verb,
            engine: self.engine,
            seccomp: self.seccomp,
        }
    }

    /// Starts the worker and the thread that answers its signature requests.
    async fn start_worker(&self) -> Result<RunningWorker, ChildError> {
        let mut w = start_worker(self.bins, &self.worker_res()).await?;
        if let Some(chan) = w.signer.take() {
            if let Err(e) = crate::signer_service::spawn(chan, std::sync::Arc::clone(self.key)) {
                tracing::error!("{}", error_chain(&e));
            }
        }
        Ok(w)
    }

    fn broker_res(&self) -> BrokerResources<'_> {
        BrokerResources {
            listeners: self
                .mgmt
                .iter()
                .map(|m| {
                    let role = match m.spec {
                        Management::Unix(_) => FdRole::UnixListener,
                        Management::Tcp(..) => FdRole::TcpListener,
                    };
                    (m.fd.as_fd(), role)
                })
                .collect(),
            identity: self.identity,
            chroot_dir: self.sandbox,
            verb: self.verb,
            seccomp: self.seccomp,
        }
    }
}

/// One supervised child.
struct Slot<T> {
    name: &'static str,
    running: Option<T>,
    ctl_open: bool,
    violation: Option<String>,
    budget: RestartBudget,
    restart_at: Option<Instant>,
}

impl<T> Slot<T> {
    fn new(name: &'static str, running: T) -> Self {
        Slot {
            name,
            running: Some(running),
            ctl_open: true,
            violation: None,
            budget: RestartBudget::default(),
            restart_at: None,
        }
    }
}

trait Child {
    fn pid(&self) -> i32;
    fn pidfd(&self) -> &std::os::fd::OwnedFd;
}

impl Child for RunningWorker {
    fn pid(&self) -> i32 {
        self.proc.pid
    }
    fn pidfd(&self) -> &std::os::fd::OwnedFd {
        &self.proc.pidfd
    }
}

impl Child for Running<ParentToBroker, BrokerToParent> {
    fn pid(&self) -> i32 {
        self.pid
    }
    fn pidfd(&self) -> &std::os::fd::OwnedFd {
        &self.pidfd
    }
}

type BrokerProc = Running<ParentToBroker, BrokerToParent>;

async fn supervise(ctx: &Ctx<'_>) -> Result<&'static str, RunError> {
    let sig = |k| signal(k).map_err(RunError::Signal);
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let mut sigusr1 = sig(SignalKind::user_defined1())?;
    let mut sigusr2 = sig(SignalKind::user_defined2())?;
    let mut sigchld = sig(SignalKind::child())?;

    let worker = ctx.start_worker().await?;
    tracing::info!("worker process {} ready", worker.proc.pid);
    let mut worker = Slot::new("worker", worker);
    let broker = match start_broker(ctx.bins, &ctx.broker_res()).await {
        Ok(b) => b,
        Err(e) => {
            stop_children(worker.running.take(), None).await;
            return Err(e.into());
        }
    };
    tracing::info!("management broker process {} ready", broker.pid);
    let mut broker = Slot::new("broker", broker);
    if let Err(e) = ctx.notifier.notify("READY=1") {
        tracing::warn!("{}", error_chain(&e));
    }
    tracing::info!("Initialization Sequence Completed");
    let mut watchdog = ctx
        .watchdog
        .filter(|_| ctx.notifier.enabled())
        .map(tokio::time::interval);

    let outcome: Result<&'static str, RunError> = loop {
        let next = [worker.restart_at, broker.restart_at]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sighup.recv() => tracing::info!("SIGHUP received: reload is not implemented yet, ignored"),
            _ = sigusr1.recv() => tracing::info!("SIGUSR1 received: soft restart is not implemented yet, ignored"),
            _ = sigusr2.recv() => tracing::info!("SIGUSR2 received: statistics output is not implemented yet, ignored"),
            _ = watchdog_tick(&mut watchdog) => {
                if let Err(e) = ctx.notifier.notify("WATCHDOG=1") {
                    tracing::warn!("{}", error_chain(&e));
                }
            }
            _ = sigchld.recv() => {
                if let Err(e) = reap(&mut worker, ctx.policy) { break Err(e); }
                if let Err(e) = reap(&mut broker, ctx.policy) { break Err(e); }
            }
            m = recv_worker(&mut worker) => on_worker_message(&mut worker, m),
            m = recv_broker(&mut broker) => on_broker_message(&mut broker, m),
            _ = sleep_until_opt(next) => {
                let now = Instant::now();
                if worker.restart_at.is_some_and(|t| t <= now) {
                    worker.restart_at = None;
                    match ctx.start_worker().await {
                        Ok(w) => {
                            tracing::info!("worker process {} restarted and ready", w.proc.pid);
                            worker.running = Some(w);
                            worker.ctl_open = true;
                        }
                        Err(e) => {
                            tracing::error!("worker restart failed: {}", error_chain(&e));
                            if let Err(e) = schedule_restart(&mut worker, e.is_protocol_violation().then(|| error_chain(&e)), ctx.policy) {
                                break Err(e);
                            }
                        }
                    }
                }
                if broker.restart_at.is_some_and(|t| t <= now) {
                    broker.restart_at = None;
                    match start_broker(ctx.bins, &ctx.broker_res()).await {
                        Ok(b) => {
                            tracing::info!("management broker process {} restarted and ready", b.pid);
                            broker.running = Some(b);
                            broker.ctl_open = true;
                        }
                        Err(e) => {
                            tracing::error!("broker restart failed: {}", error_chain(&e));
                            if let Err(e) = schedule_restart(&mut broker, e.is_protocol_violation().then(|| error_chain(&e)), ctx.policy) {
                                break Err(e);
                            }
                        }
                    }
                }
            }
        }
    };
    stop_children(worker.running.take(), broker.running.take()).await;
    outcome
}

/// Half of systemd's watchdog timeout (`$WATCHDOG_USEC`), unless `$WATCHDOG_PID` names another
/// process. Read before the environment is cleared.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    // tokio's interval panics on a zero period
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

async fn watchdog_tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

async fn recv_worker(slot: &mut Slot<RunningWorker>) -> Result<WorkerToParent, ChannelError> {
    match &mut slot.running {
        Some(w) if slot.ctl_open => w.proc.control.recv().await.map(|r| r.into_parts().0),
        _ => std::future::pending().await,
    }
}

async fn recv_broker(slot: &mut Slot<BrokerProc>) -> Result<BrokerToParent, ChannelError> {
    match &mut slot.running {
        Some(b) if slot.ctl_open => b.control.recv().await.map(|r| r.into_parts().0),
        _ => std::future::pending().await,
    }
}

fn on_worker_message(slot: &mut Slot<RunningWorker>, m: Result<WorkerToParent, ChannelError>) {
    match m {
        Ok(WorkerToParent::Fatal { reason }) => tracing::error!("worker fatal error: {reason}"),
        Ok(other) => violation(slot, format!("unexpected {} after start-up", other.name())),
        Err(e) => channel_failure(slot, e),
    }
}

fn on_broker_message(slot: &mut Slot<BrokerProc>, m: Result<BrokerToParent, ChannelError>) {
    match m {
        Ok(BrokerToParent::Fatal { reason }) => {
            tracing::error!("management broker fatal error: {reason}")
        }
        Ok(other) => violation(slot, format!("unexpected {} after start-up", other.name())),
        Err(e) => channel_failure(slot, e),
    }
}

fn channel_failure<T: Child>(slot: &mut Slot<T>, e: ChannelError) {
    match e {
        // The child is exiting; SIGCHLD follows.
        ChannelError::PeerClosed => slot.ctl_open = false,
        ChannelError::Protocol(p) => violation(slot, error_chain(&p)),
        other => {
            tracing::error!("{} control channel: {}", slot.name, error_chain(&other));
            slot.ctl_open = false;
            if let Some(c) = &slot.running {
                let _ = crate::sys::spawn::pidfd_send_signal(c.pidfd().as_fd(), libc::SIGKILL);
            }
        }
    }
}

fn violation<T: Child>(slot: &mut Slot<T>, what: String) {
    tracing::error!(
        "SECURITY: {} violated the IPC protocol: {what}; killing it",
        slot.name
    );
    slot.violation = Some(what);
    slot.ctl_open = false;
    if let Some(c) = &slot.running {
        let _ = crate::sys::spawn::pidfd_send_signal(c.pidfd().as_fd(), libc::SIGKILL);
    }
}

fn reap<T: Child>(slot: &mut Slot<T>, policy: SecurityEventPolicy) -> Result<(), RunError> {
    let Some(c) = &slot.running else {
        return Ok(());
    };
    let pid = c.pid();
    let st = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => return Ok(()),
        Ok(st) => st,
        Err(e) => {
            tracing::error!("waitpid({pid}): {e}");
            return Ok(());
        }
    };
    let Some(mut kind) = ExitKind::from_wait(st) else {
        return Ok(());
    };
    if let Some(v) = slot.violation.take() {
        kind = ExitKind::ProtocolViolation(v);
    }
    slot.running = None;
    slot.ctl_open = false;
    if kind.is_security_event() {
        tracing::error!(
            "SECURITY EVENT: {} process {pid} {}",
            slot.name,
            kind.describe()
        );
    } else {
        tracing::error!("{} process {pid} {}", slot.name, kind.describe());
    }
    schedule_restart(
        slot,
        kind.is_security_event().then(|| kind.describe()),
        policy,
    )
}

fn schedule_restart<T>(
    slot: &mut Slot<T>,
    security: Option<String>,
    policy: SecurityEventPolicy,
) -> Result<(), RunError> {
    if let Some(what) = security {
        if policy == SecurityEventPolicy::Exit {
            return Err(RunError::SecurityEvent {
                child: slot.name,
                what,
            });
        }
    }
    match slot.budget.next_delay(Instant::now()) {
        Some(d) => {
            tracing::warn!("restarting {} in {} ms", slot.name, d.as_millis());
            slot.restart_at = Some(Instant::now() + d);
            Ok(())
        }
        None => Err(RunError::RestartBudget {
            child: slot.name,
            count: crate::supervise::RESTART_LIMIT,
            secs: crate::supervise::RESTART_WINDOW.as_secs(),
        }),
    }
}

async fn stop_children(worker: Option<RunningWorker>, broker: Option<BrokerProc>) {
    if let Some(w) = &worker {
        let _ = w.proc.control.send(&ParentToWorker::Shutdown, &[]).await;
    }
    if let Some(b) = &broker {
        let _ = b.control.send(&ParentToBroker::Shutdown, &[]).await;
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut w_done = worker.is_none();
    let mut b_done = broker.is_none();
    while !(w_done && b_done) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        w_done = w_done || worker.as_ref().is_some_and(|w| exited(w.pid()));
        b_done = b_done || broker.as_ref().is_some_and(|b| exited(b.pid()));
    }
    if let (Some(w), false) = (&worker, w_done) {
        tracing::warn!(
            "worker process {} did not stop in time; killing it",
            w.pid()
        );
        kill_and_reap(w.pid(), w.pidfd());
    }
    if let (Some(b), false) = (&broker, b_done) {
        tracing::warn!(
            "management broker process {} did not stop in time; killing it",
            b.pid()
        );
        kill_and_reap(b.pid(), b.pidfd());
    }
    // Let the log drains print what the children said last (their channels are closed now).
    let tasks = [worker.map(|w| w.proc.log_task), broker.map(|b| b.log_task)];
    for t in tasks.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
}

/// Reaps `pid` if it has exited; true when it is gone.
fn exited(pid: i32) -> bool {
    !matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::StillAlive)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sandbox_dir_created_and_checked() {
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = base.path().join("a/empty");
        if nix::unistd::geteuid().is_root() {
            prepare_sandbox_dir(&d).unwrap();
            assert!(d.is_dir());
            std::fs::write(d.join("x"), b"x").unwrap();
            assert!(matches!(
                prepare_sandbox_dir(&d),
                Err(RunError::Sandbox { .. })
            ));
        } else {
            // Created by a non-root user: not root-owned, refused.
            assert!(matches!(
                prepare_sandbox_dir(&d),
                Err(RunError::Sandbox { .. })
            ));
        }
    }
}
