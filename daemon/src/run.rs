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
            Err(Failure::Config(mut errors)) => {
                errors.push("Options error: configuration has errors, exiting".to_owned());
                for e in &errors {
                    eprintln!("{e}");
                }
                // OpenVPN opens syslog while it parses `syslog`/`daemon`, so its option errors
                // reach syslog; here they go there as well as to standard error
                if let Some(ident) = config_input::syslog_hint(&opts.config, &opts.directives) {
                    if let Err(e) = crate::logging::syslog_errors(&ident, &errors) {
                        eprintln!("bulwark: {e}");
                    }
                }
                ExitCode::FAILURE
            }
            Err(Failure::Logged(e)) => {
                tracing::error!(fatal = true, "{}", error_chain(&e));
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
        line_prefix,
        warnings,
        config,
    } = config_input::load(&opts.config, &opts.directives).map_err(Failure::Config)?;
    // options the parser accepts but this build does not implement: fail loudly, never silently
    let (engine_cfg, key, nyi_warn) = prepare_engine(&config).map_err(Failure::Config)?;
    let key = std::sync::Arc::new(std::sync::Mutex::new(key));
    if let Some(cd) = &settings.cd {
        std::env::set_current_dir(cd).map_err(|source| {
            Failure::Early(RunError::Cd {
                path: cd.clone(),
                source,
            })
        })?;
    }
    let log_gid = match &config.logging.log_file_group {
        Some(g) => Some(
            crate::mgmt_setup::gid_of("log-file-group", g)
                .map_err(|e| Failure::Config(vec![e.to_string()]))?,
        ),
        None => None,
    };
    let sink = match (&settings.log, &settings.syslog) {
        (Some((path, append)), _) => Sink::File {
            path: path.clone(),
            append: *append,
            mode: config.logging.log_file_mode.unwrap_or(0o600),
            gid: log_gid,
        },
        (None, Some(ident)) => Sink::Syslog(ident.clone()),
        (None, None) => Sink::Stdout {
            errors_to_stderr: settings.errors_to_stderr,
        },
    };
    logging::init(&sink, verb, offset, line_prefix).map_err(|e| Failure::Early(e.into()))?;
    logging::set_mute(config.logging.mute.unwrap_or(0));
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
    let broker_ident = bulwark_policy::resolve_broker(&ident).map_err(|e| l(e.into()))?;
    if let Some(note) = &broker_ident.note {
        tracing::warn!("{note}");
    }
    let sandbox = opts
        .sandbox_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SANDBOX_DIR));
    prepare_sandbox_dir(&sandbox).map_err(l)?;

    let tun = TunDevice::create(&settings).map_err(|e| l(e.into()))?;
    tracing::info!("TUN/TAP device {} opened", tun.name());
    // INVARIANT: one UDP socket per TUN queue the device really has (a single-queue device gets one):
    // a socket of the SO_REUSEPORT group that no thread reads would swallow its share of clients.
    let transport = match bind_transport(&settings, tun.queues().len()) {
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
    if let Some(note) = tun.queue_note() {
        tracing::warn!("{note}");
    }
    let threads = 1 + transport.more.len();
    if threads > 1 {
        tracing::info!("data path: {threads} threads (SO_REUSEPORT sockets, TUN queues)");
    }
    let mut mgmt = Vec::new();
    let mut policies = Vec::new();
    // The read-only monitor socket (`management-monitor-socket`) is one more listener whose
    // policy makes every connection `monitor`.
    let monitor = crate::mgmt_setup::monitor_listener(&config);
    for m in settings.management.iter().chain(monitor.iter()) {
        match crate::mgmt_setup::listener_policy(&config, m) {
            Ok(p) => policies.push(p),
            Err(e) => {
                finish_tun(tun, false);
                return Err(Failure::Config(vec![e.to_string()]));
            }
        }
        match bind_management(m) {
            Ok(s) => mgmt.push(s),
            Err(e) => {
                finish_tun(tun, false);
                return Err(l(e.into()));
            }
        }
    }
    // The metrics endpoint (`metrics-listen`), served read-only by the broker.
    let metrics = match &config.metrics {
        None => None,
        Some(spec) => {
            let gid = match spec {
                bulwark_config::MetricsListen::Unix { group: Some(g), .. } => {
                    match crate::mgmt_setup::gid_of("metrics-listen", g) {
                        Ok(g) => Some(g),
                        Err(e) => {
                            finish_tun(tun, false);
                            return Err(Failure::Config(vec![e.to_string()]));
                        }
                    }
                }
                _ => None,
            };
            match crate::sockets::bind_metrics(spec, gid) {
                Ok(m) => Some(m),
                Err(e) => {
                    finish_tun(tun, false);
                    return Err(l(e.into()));
                }
            }
        }
    };
    // INVARIANT: the audit file is opened while the parent is still root, before any child exists.
    let audit_sink = match crate::audit::AuditSink::from_config(&config) {
        Ok(a) => a,
        Err(e) => {
            finish_tun(tun, false);
            return Err(Failure::Config(vec![e.to_string()]));
        }
    };
    let (mgmt_settings, status_targets) = match crate::mgmt_setup::settings(&config) {
        Ok(v) => v,
        Err(e) => {
            finish_tun(tun, false);
            return Err(Failure::Config(vec![e.to_string()]));
        }
    };
    let mgmt_client_auth = config.management.as_ref().is_some_and(|m| m.client_auth);
    let env_base = daemon_env(&config, &settings, &transport, tun.name(), &engine_cfg.pool);
    // INVARIANT: scripts run as the unprivileged identity resolved above, never as root.
    let hooks = match crate::client_hooks::ClientHooks::from_config(
        &config,
        ident.identity.uid,
        ident.identity.gid,
        env_base.clone(),
    ) {
        Ok(h) => std::sync::Arc::new(h),
        Err(e) => {
            finish_tun(tun, false);
            return Err(Failure::Config(vec![e.to_string()]));
        }
    };
    let mut engine_cfg = engine_cfg;
    engine_cfg.defer_auth = mgmt_client_auth || hooks.needs_defer();
    let router_cfg = crate::router::RouterConfig {
        defer_auth: engine_cfg.defer_auth,
        mgmt_client_auth,
        pool: engine_cfg.pool.clone(),
        utc_offset_secs: offset.whole_seconds(),
        daemon_env: env_base,
        verb,
        mute: config.logging.mute.unwrap_or(0),
        hold: config.management.as_ref().is_some_and(|m| m.hold),
    };

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

    let (viol_tx, viol_rx) = tokio::sync::mpsc::unbounded_channel();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
        .and_then(|rt| {
            let ctx = Ctx {
                audit: &audit_sink,
                signer_violations: viol_tx,
                hooks: &hooks,
                opts,
                config: &config,
                bins: &bins,
                tun: &tun,
                transport: &transport,
                mgmt: &mgmt,
                metrics: metrics.as_ref(),
                policies: &policies,
                mgmt_settings: &mgmt_settings,
                status_targets: &status_targets,
                router_cfg: &router_cfg,
                has_v4_routes: settings.routes.iter().any(|r| r.dst.is_ipv4()),
                identity: ident.identity,
                broker_identity: broker_ident.identity,
                sandbox: &sandbox,
                verb,
                policy: opts.on_security_event,
                notifier: &notifier,
                watchdog,
                engine: &engine_cfg,
                seccomp: opts.seccomp,
                key: &key,
            };
            rt.block_on(supervise(&ctx, viol_rx))
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

/// The variables every client environment ends with (as OpenVPN's env set inherited from the
/// daemon), in emission order.
fn daemon_env(
    config: &bulwark_config::Config,
    settings: &crate::settings::Settings,
    transport: &TransportSocket,
    dev: &str,
    pool: &bulwark_ipc::msg::engine::PoolData,
) -> Vec<(String, String)> {
    let mut v = vec![
        (
            "remote_port_1".to_string(),
            transport.addr.port().to_string(),
        ),
        (
            "local_port_1".to_string(),
            transport.addr.port().to_string(),
        ),
    ];
    if !transport.addr.ip().is_unspecified() {
        v.push(("local_1".to_string(), transport.addr.ip().to_string()));
    }
    v.push((
        "proto_1".to_string(),
        if transport.tcp { "tcp-server" } else { "udp" }.to_string(),
    ));
    v.push(("daemon_pid".to_string(), std::process::id().to_string()));
    v.push((
        "daemon_start_time".to_string(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string(),
    ));
    v.push((
        "daemon_log_redirect".to_string(),
        u8::from(settings.log.is_some()).to_string(),
    ));
    v.push((
        "daemon".to_string(),
        u8::from(settings.daemon.is_some()).to_string(),
    ));
    v.push(("verb".to_string(), config.logging.verb.to_string()));
    if let Some(f) = config.files.first() {
        v.push(("config".to_string(), f.display().to_string()));
    }
    // The tunnel's own addresses, as OpenVPN's `--ifconfig`/`--ifconfig-ipv6` set them.
    v.push(("ifconfig_local".to_string(), pool.server_ip.to_string()));
    if pool.subnet {
        v.push(("ifconfig_netmask".to_string(), pool.netmask.to_string()));
    } else {
        let remote = std::net::Ipv4Addr::from(u32::from(pool.server_ip).wrapping_add(1));
        v.push(("ifconfig_remote".to_string(), remote.to_string()));
    }
    if let Some((local6, bits, _)) = pool.ipv6 {
        let remote6 = std::net::Ipv6Addr::from(u128::from(local6).wrapping_add(1));
        v.push(("ifconfig_ipv6_local".to_string(), local6.to_string()));
        v.push(("ifconfig_ipv6_netbits".to_string(), bits.to_string()));
        v.push(("ifconfig_ipv6_remote".to_string(), remote6.to_string()));
    }
    v.push(("script_context".to_string(), "init".to_string()));
    v.push(("tun_mtu".to_string(), settings.mtu.to_string()));
    v.push(("dev".to_string(), dev.to_string()));
    v.push(("dev_type".to_string(), "tun".to_string()));
    // The server's own --redirect-gateway (a client option): never set on a server.
    v.push(("redirect_gateway".to_string(), "0".to_string()));
    v
}

/// The checks and the engine's share of a configuration, at start-up and on SIGHUP: refused
/// unimplemented options, the engine configuration with every key/certificate file read and
/// checked, and the server key for the signer. Returns the start-up warnings of options that are
/// accepted but not implemented.
fn prepare_engine(
    config: &bulwark_config::Config,
) -> Result<
    (
        bulwark_ipc::msg::engine::EngineConfig,
        crate::signer::ServerKeySigner,
        Vec<String>,
    ),
    Vec<String>,
> {
    let (fatal, warn) = crate::engine::unimplemented_options(config);
    if !fatal.is_empty() {
        return Err(fatal);
    }
    let engine = crate::engine::build(config).map_err(|e| vec![e.to_string()])?;
    // INVARIANT: the private key is loaded here and stays in the parent; the worker signs through
    // the signer channel.
    let key = crate::engine::load_key_signer(config).map_err(|e| vec![e.to_string()])?;
    crate::engine::check(&engine, key.algorithm()).map_err(|e| vec![e.to_string()])?;
    Ok((engine, key, warn))
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
    /// Where management audit records go (`management-audit`).
    audit: &'a crate::audit::AuditSink,
    /// Where signer threads report channel violations of their worker.
    signer_violations: tokio::sync::mpsc::UnboundedSender<crate::signer_service::SignerViolation>,
    /// Scripts, CCD and pool persistence.
    hooks: &'a std::sync::Arc<crate::client_hooks::ClientHooks>,
    /// `--config` and command-line directives, for SIGHUP reloads.
    opts: &'a RunOptions,
    /// The configuration at start-up.
    config: &'a bulwark_config::Config,
    bins: &'a ChildBinaries,
    tun: &'a TunDevice,
    transport: &'a TransportSocket,
    mgmt: &'a [ManagementSocket],
    /// The metrics endpoint's listener and whether it is a unix socket.
    metrics: Option<&'a (std::os::fd::OwnedFd, bool)>,
    policies: &'a [bulwark_ipc::msg::mgmt::ListenerPolicy],
    mgmt_settings: &'a bulwark_ipc::msg::MgmtSettings,
    status_targets: &'a [crate::mgmt_setup::StatusTarget],
    router_cfg: &'a crate::router::RouterConfig,
    /// IPv4 `route` directives exist (OpenVPN reports ADD_ROUTES only then).
    has_v4_routes: bool,
    /// The worker's (and the scripts') identity.
    identity: bulwark_policy::Identity,
    /// The management broker's identity (`bulwark-mgmt` when it exists).
    broker_identity: bulwark_policy::Identity,
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
    fn worker_res<'e>(
        &'e self,
        engine: &'e bulwark_ipc::msg::engine::EngineConfig,
    ) -> WorkerResources<'e> {
        WorkerResources {
            lanes: self
                .tun
                .queues()
                .into_iter()
                .zip(std::iter::once(&self.transport.fd).chain(&self.transport.more))
                .map(|(t, s)| (t, s.as_fd()))
                .collect(),
            tcp: self.transport.tcp,
            identity: self.identity,
            chroot_dir: self.sandbox,
            verb: self.verb,
            engine,
            seccomp: self.seccomp,
        }
    }

    /// Starts the worker and the thread that answers its signature requests.
    async fn start_worker(
        &self,
        engine: &bulwark_ipc::msg::engine::EngineConfig,
    ) -> Result<RunningWorker, ChildError> {
        let mut w = start_worker(self.bins, &self.worker_res(engine)).await?;
        if let Some(chan) = w.signer.take() {
            if let Err(e) = crate::signer_service::spawn(
                chan,
                std::sync::Arc::clone(self.key),
                w.proc.pid,
                self.signer_violations.clone(),
            ) {
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
                .zip(self.policies)
                .map(|(m, p)| {
                    let role = match m.spec {
                        Management::Unix(_) => FdRole::UnixListener,
                        Management::Tcp(..) => FdRole::TcpListener,
                    };
                    (m.fd.as_fd(), role, p.clone())
                })
                .collect(),
            metrics: self.metrics.map(|(fd, unix)| {
                (
                    fd.as_fd(),
                    if *unix {
                        FdRole::UnixListener
                    } else {
                        FdRole::TcpListener
                    },
                )
            }),
            mgmt: self.mgmt_settings.clone(),
            identity: self.broker_identity,
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

    fn empty(name: &'static str) -> Self {
        Slot {
            name,
            running: None,
            ctl_open: false,
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

/// A management decision about a client waiting for `client-auth`.
#[derive(Debug)]
enum MgmtDecision {
    /// `client-auth` (with config lines) / `client-auth-nt` (none).
    Accept(Vec<String>),
    /// `client-deny`.
    Deny {
        reason: String,
        client_reason: Option<String>,
    },
    /// `client-pending-auth`.
    Pending { extra: String, timeout: u32 },
}

/// Clients waiting for a management decision, by (cid, kid).
type MgmtWaits = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<(u64, u32), tokio::sync::mpsc::UnboundedSender<MgmtDecision>>,
    >,
>;

/// What authorisation tasks send back to the loop.
#[derive(Debug)]
enum AuthMsg {
    /// A verdict for the worker.
    Verdict {
        cid: u64,
        kid: u32,
        verdict: bulwark_ipc::msg::clients::AuthVerdict,
        /// Configured by `client-auth` lines or a `client-connect` script (see
        /// `Router::auth_decided`).
        readdress: bool,
    },
    /// An event for the broker (`>CLIENT:CONNECT` ...).
    Broker(ParentToBroker),
}

/// What the supervision loop does next after a signal (OS or management).
enum SignalAction {
    Exit(&'static str),
    Continue,
}

struct Sup<'c, 'a> {
    ctx: &'c Ctx<'a>,
    worker: Slot<RunningWorker>,
    broker: Slot<BrokerProc>,
    router: crate::router::Router,
    waits: MgmtWaits,
    auth_tx: tokio::sync::mpsc::UnboundedSender<AuthMsg>,
    status_failed: Vec<bool>,
    /// A deliberate worker restart (SIGUSR1) is in progress: its exit is not a crash.
    worker_restart: bool,
    /// The engine configuration the worker runs with (replaced by a SIGHUP reload).
    engine: bulwark_ipc::msg::engine::EngineConfig,
    /// The configuration in effect.
    config: bulwark_config::Config,
    /// The broker's share of the last SIGHUP reload, sent again to a restarted broker (which
    /// starts from the start-up policies).
    broker_reconfigure: Option<bulwark_ipc::msg::BrokerReconfigure>,
}

async fn supervise(
    ctx: &Ctx<'_>,
    mut signer_violations: tokio::sync::mpsc::UnboundedReceiver<
        crate::signer_service::SignerViolation,
    >,
) -> Result<&'static str, RunError> {
    let sig = |k| signal(k).map_err(RunError::Signal);
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let mut sigusr1 = sig(SignalKind::user_defined1())?;
    let mut sigusr2 = sig(SignalKind::user_defined2())?;
    let mut sigchld = sig(SignalKind::child())?;

    let (auth_tx, mut auth_rx) = tokio::sync::mpsc::unbounded_channel::<AuthMsg>();
    // Every line the parent logs also goes to the management log cache and `>LOG:`.
    let mut log_tap = logging::take_forwarder();
    let mut sup = Sup {
        ctx,
        worker: Slot::empty("worker"),
        broker: Slot::empty("broker"),
        router: crate::router::Router::new(ctx.router_cfg.clone(), std::process::id()),
        waits: MgmtWaits::default(),
        auth_tx,
        status_failed: vec![false; ctx.status_targets.len()],
        worker_restart: false,
        engine: ctx.engine.clone(),
        config: ctx.config.clone(),
        broker_reconfigure: None,
    };
    // INVARIANT: the broker starts first, so that `management-hold` can hold the worker back and
    // the management interface reports the start-up states.
    match start_broker(ctx.bins, &ctx.broker_res()).await {
        Ok(broker) => {
            tracing::info!("management broker process {} ready", broker.pid);
            sup.broker = Slot::new("broker", broker);
        }
        Err(e) if e.is_protocol_violation() => {
            let what = error_chain(&e);
            tracing::error!(
                "SECURITY: broker violated the IPC protocol during start-up: {what}; killing it"
            );
            schedule_restart(
                &mut sup.broker,
                Some(format!("violated the IPC protocol during start-up: {what}")),
                ctx.policy,
            )?;
        }
        Err(e) => return Err(e.into()),
    }
    sup.state("CONNECTING", "").await;
    if sup.router.holding() {
        sup.send_broker(ParentToBroker::Event(Box::new(
            bulwark_ipc::msg::mgmt::MgmtEvent::Hold { wait_secs: 0 },
        )))
        .await;
        tracing::info!("Need hold release from management interface, waiting...");
    } else if let Err(e) = sup.start_worker_now().await {
        // A worker that breaks the start-up protocol is a security event like one that breaks
        // it later: labelled, and `--on-security-event` decides (stop, or restart it).
        let outcome = if e.is_protocol_violation() {
            let what = error_chain(&e);
            tracing::error!(
                "SECURITY: worker violated the IPC protocol during start-up: {what}; killing it"
            );
            schedule_restart(
                &mut sup.worker,
                Some(format!("violated the IPC protocol during start-up: {what}")),
                ctx.policy,
            )
        } else {
            Err(e.into())
        };
        if let Err(e) = outcome {
            stop_children(None, sup.broker.running.take()).await;
            return Err(e);
        }
    }
    let mut watchdog = ctx
        .watchdog
        .filter(|_| ctx.notifier.enabled())
        .map(tokio::time::interval);

    let outcome: Result<&'static str, RunError> = loop {
        let next = [sup.worker.restart_at, sup.broker.restart_at]
            .into_iter()
            .flatten()
            .min();
        let action = tokio::select! {
            _ = sigterm.recv() => SignalAction::Exit("SIGTERM"),
            _ = sigint.recv() => SignalAction::Exit("SIGINT"),
            _ = sighup.recv() => sup.on_signal(bulwark_ipc::msg::mgmt::MgmtSignal::Hup).await,
            _ = sigusr1.recv() => sup.on_signal(bulwark_ipc::msg::mgmt::MgmtSignal::Usr1).await,
            _ = sigusr2.recv() => sup.on_signal(bulwark_ipc::msg::mgmt::MgmtSignal::Usr2).await,
            _ = watchdog_tick(&mut watchdog) => {
                if let Err(e) = ctx.notifier.notify("WATCHDOG=1") {
                    tracing::warn!("{}", error_chain(&e));
                }
                SignalAction::Continue
            }
            _ = sigchld.recv() => {
                let had_worker = sup.worker.running.is_some();
                if sup.worker_restart {
                    if let Some(w) = &sup.worker.running {
                        if exited(w.pid()) {
                            tracing::info!("worker process {} stopped for the restart", w.pid());
                            sup.worker.running = None;
                            sup.worker.ctl_open = false;
                            sup.worker_restart = false;
                            sup.worker.restart_at = Some(Instant::now());
                        }
                    }
                } else if let Err(e) = reap(&mut sup.worker, ctx.policy) { break Err(e); }
                if had_worker && sup.worker.running.is_none() {
                    let fx = sup.router.worker_gone();
                    sup.apply(fx).await;
                }
                if let Err(e) = reap(&mut sup.broker, ctx.policy) { break Err(e); }
                SignalAction::Continue
            }
            m = recv_worker(&mut sup.worker) => sup.on_worker_message(m).await,
            m = recv_broker(&mut sup.broker) => sup.on_broker_message(m).await,
            Some(line) = async {
                match log_tap.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                // Quietly: a failure to deliver must not log (that line would come back here).
                sup.send_broker_quiet(ParentToBroker::Event(Box::new(
                    bulwark_ipc::msg::mgmt::MgmtEvent::Log(bulwark_ipc::msg::mgmt::LogRecord {
                        time: line.time,
                        flags: line.flags,
                        message: line.message,
                    }),
                )))
                .await;
                SignalAction::Continue
            }
            Some(v) = signer_violations.recv() => {
                // Only the worker that owns that signer channel is concerned.
                if sup.worker.running.as_ref().is_some_and(|w| w.proc.pid == v.pid) {
                    violation(&mut sup.worker, v.what);
                }
                SignalAction::Continue
            }
            Some(m) = auth_rx.recv() => {
                match m {
                    AuthMsg::Verdict { cid, kid, verdict, readdress } => {
                        let decision = match &verdict {
                            bulwark_ipc::msg::clients::AuthVerdict::Accept(o) => format!(
                                "accept (ifconfig-push {}, {} iroute(s), {} pushed option(s))",
                                o.ifconfig_push.map(|(a, _)| a.to_string()).unwrap_or_else(|| "none".into()),
                                o.iroutes.len() + o.iroutes_v6.len(),
                                o.push.len()
                            ),
                            bulwark_ipc::msg::clients::AuthVerdict::Deny { reason, .. } => format!("deny ({reason})"),
                            bulwark_ipc::msg::clients::AuthVerdict::Pending { timeout_secs, .. } => format!("pending ({timeout_secs} s)"),
                        };
                        tracing::info!(verb = 3u8, "AUDIT: client authorisation cid={cid} kid={kid}: {decision}");
                        match &verdict {
                            bulwark_ipc::msg::clients::AuthVerdict::Accept(_) => sup.router.counters.auth_accepted += 1,
                            bulwark_ipc::msg::clients::AuthVerdict::Deny { .. } => sup.router.counters.auth_denied += 1,
                            bulwark_ipc::msg::clients::AuthVerdict::Pending { .. } => {}
                        }
                        let fx = sup.router.auth_decided(cid, kid, verdict, readdress);
                        sup.apply(fx).await;
                    }
                    AuthMsg::Broker(msg) => sup.send_broker(msg).await,
                }
                SignalAction::Continue
            }
            _ = sleep_until_opt(next) => {
                let now = Instant::now();
                if sup.worker.restart_at.is_some_and(|t| t <= now) {
                    sup.worker.restart_at = None;
                    match sup.ctx.start_worker(&sup.engine).await {
                        Ok(w) => {
                            tracing::info!("worker process {} restarted and ready", w.proc.pid);
                            sup.router.counters.worker_restarts += 1;
                            sup.worker.running = Some(w);
                            sup.worker.ctl_open = true;
                            sup.router.worker_started();
                            // As OpenVPN's restart: ASSIGN_IP (and ADD_ROUTES) before CONNECTED.
                            sup_state_assign(&mut sup).await;
                            sup.state("CONNECTED", "SUCCESS").await;
                        }
                        Err(e) => {
                            tracing::error!("worker restart failed: {}", error_chain(&e));
                            if let Err(e) = schedule_restart(&mut sup.worker, e.is_protocol_violation().then(|| error_chain(&e)), ctx.policy) {
                                break Err(e);
                            }
                        }
                    }
                }
                if sup.broker.restart_at.is_some_and(|t| t <= now) {
                    sup.broker.restart_at = None;
                    match start_broker(ctx.bins, &ctx.broker_res()).await {
                        Ok(b) => {
                            tracing::info!("management broker process {} restarted and ready", b.pid);
                            sup.broker.running = Some(b);
                            sup.broker.ctl_open = true;
                            if let Some(r) = sup.broker_reconfigure.clone() {
                                sup.send_broker(ParentToBroker::Reconfigure(Box::new(r))).await;
                            }
                        }
                        Err(e) => {
                            tracing::error!("broker restart failed: {}", error_chain(&e));
                            if let Err(e) = schedule_restart(&mut sup.broker, e.is_protocol_violation().then(|| error_chain(&e)), ctx.policy) {
                                break Err(e);
                            }
                        }
                    }
                }
                SignalAction::Continue
            }
        };
        match action {
            SignalAction::Exit(name) => {
                sup.state("EXITING", name).await;
                break Ok(name);
            }
            SignalAction::Continue => {}
        }
    };
    stop_children(sup.worker.running.take(), sup.broker.running.take()).await;
    ctx.hooks.flush_persist();
    outcome
}

impl Sup<'_, '_> {
    /// Starts the worker for the first time (after start-up or `hold release`).
    async fn start_worker_now(&mut self) -> Result<(), ChildError> {
        sup_state_assign(self).await;
        let worker = self.ctx.start_worker(&self.engine).await?;
        tracing::info!("worker process {} ready", worker.proc.pid);
        self.worker = Slot::new("worker", worker);
        self.router.worker_started();
        if let Err(e) = self.ctx.notifier.notify("READY=1") {
            tracing::warn!("{}", error_chain(&e));
        }
        tracing::info!("Initialization Sequence Completed");
        self.state("CONNECTED", "SUCCESS").await;
        Ok(())
    }

    /// SIGHUP: reopen the log file, re-read the configuration and, if it is valid, restart the
    /// worker with it (clients reconnect, as with OpenVPN's SIGHUP). Options bound to what the
    /// parent created at start-up (sockets, TUN device, addresses, routes, management, status,
    /// identities) keep their running values until the daemon itself is restarted; each such
    /// change is reported. A broken configuration is rejected and the running one stays.
    async fn reload(&mut self) {
        if self.reload_config().await {
            self.router.counters.reloads += 1;
        } else {
            self.router.counters.reloads_rejected += 1;
        }
    }

    /// The body of [`Self::reload`]: `false` when the new configuration was rejected.
    async fn reload_config(&mut self) -> bool {
        if let Err(e) = logging::reopen() {
            tracing::error!("SIGHUP: cannot reopen the log file: {}", error_chain(&e));
        }
        tracing::info!("SIGHUP[hard,] received, process reloading");
        let reject = |errs: Vec<String>| {
            tracing::error!(
                "SIGHUP: configuration rejected, the running configuration stays in effect: {}",
                errs.join("; ")
            );
            false
        };
        let loaded = match config_input::load(&self.ctx.opts.config, &self.ctx.opts.directives) {
            Ok(l) => l,
            Err(errs) => return reject(errs),
        };
        let new = loaded.config;
        let (mut engine, key, _) = match prepare_engine(&new) {
            Ok(v) => v,
            Err(errs) => return reject(errs),
        };
        let running_key = match self.ctx.key.lock() {
            Ok(k) => k.algorithm(),
            Err(_) => return reject(vec!["the signer's key lock is poisoned".into()]),
        };
        let plan = crate::reload_plan::plan(
            &self.config,
            &new,
            &self.engine,
            &engine,
            running_key,
            key.algorithm(),
        );
        // The broker's share, computed (and checked: password file, users, groups) before
        // anything changes.
        use crate::reload_plan::LiveChange;
        let broker_live = plan.live.contains(&LiveChange::ManagementAccess)
            || plan.live.contains(&LiveChange::StatusInterval);
        let reconfigure = if broker_live {
            let mut policies = Vec::new();
            for m in self.ctx.mgmt {
                match crate::mgmt_setup::listener_policy(&new, &m.spec) {
                    Ok(p) => policies.push(p),
                    Err(e) => return reject(vec![e.to_string()]),
                }
            }
            let status_intervals = match crate::mgmt_setup::settings(&new) {
                Ok((s, _)) => s.status_files.iter().map(|f| f.interval_secs).collect(),
                Err(e) => return reject(vec![e.to_string()]),
            };
            Some(bulwark_ipc::msg::BrokerReconfigure {
                policies,
                status_intervals,
            })
        } else {
            None
        };
        for what in &plan.restart_only {
            tracing::warn!(
                "SIGHUP: {what} changed; it takes effect when bulwark itself is restarted (the running value stays)"
            );
        }
        // What is bound to start-up state keeps its running value.
        engine.transport = self.engine.transport;
        engine.pool = self.engine.pool.clone();
        engine.defer_auth = self.engine.defer_auth;
        // INVARIANT: the key is swapped before the worker gets the matching certificate (SetTls
        // below, or the restarted worker's Init): from here on the parent signs with the new key.
        // A handshake in flight during the swap fails and the client retries.
        match self.ctx.key.lock() {
            Ok(mut k) => *k = key,
            Err(_) => return reject(vec!["the signer's key lock is poisoned".into()]),
        }
        // As OpenVPN's SIGHUP: the configured verbosity applies again, also after a management
        // `verb` command changed it.
        let verb = u8::try_from(new.logging.verb).unwrap_or(11).min(11);
        let mute = new.logging.mute.unwrap_or(0);
        logging::set_verb(verb);
        logging::set_mute(mute);
        self.router.set_logging(verb, mute);
        self.send_broker(ParentToBroker::SetVerb { level: verb })
            .await;
        self.send_worker(ParentToWorker::SetVerb { level: verb })
            .await;
        self.engine = engine;
        self.config = *new;
        if let Some(r) = reconfigure {
            self.broker_reconfigure = Some(r.clone());
            self.send_broker(ParentToBroker::Reconfigure(Box::new(r)))
                .await;
        }
        if plan.worker_restart.is_empty() {
            for change in &plan.live {
                match change {
                    LiveChange::Verb
                    | LiveChange::ManagementAccess
                    | LiveChange::StatusInterval => {}
                    LiveChange::Push => {
                        let push = self.engine.push.clone();
                        self.send_worker(ParentToWorker::SetPush { push }).await;
                    }
                    LiveChange::Crl => {
                        if let Some(pem) = self.engine.tls.crl.clone() {
                            self.send_worker(ParentToWorker::CrlUpdate { pem }).await;
                        }
                    }
                    LiveChange::Tls => {
                        let tls = Box::new(self.engine.tls.clone());
                        self.send_worker(ParentToWorker::SetTls { tls }).await;
                    }
                }
            }
            tracing::info!("SIGHUP: configuration reloaded without disconnecting clients");
            return true;
        }
        tracing::info!(
            "SIGHUP: {} changed; restarting the worker (clients reconnect)",
            plan.worker_restart.join(", ")
        );
        self.state("RECONNECTING", "SIGHUP").await;
        if self.worker.running.is_some() {
            self.worker_restart = true;
            self.send_worker(ParentToWorker::Shutdown).await;
        }
        true
    }

    /// Records a state transition for the management interface.
    async fn state(&mut self, name: &str, detail: &str) {
        let tun_v4 = self.ctx.router_cfg.pool.server_ip;
        let local = Some(self.ctx.transport.addr).filter(|a| !a.ip().is_unspecified());
        let entry = bulwark_ipc::msg::mgmt::StateEntry {
            time: i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            )
            .unwrap_or(0),
            name: name.to_string(),
            detail: detail.to_string(),
            // As OpenVPN's server: the tunnel addresses on ASSIGN_IP and CONNECTED, the bound
            // address on CONNECTED only, nothing on the others.
            tun_v4: matches!(name, "ASSIGN_IP" | "CONNECTED").then_some(tun_v4),
            remote: None,
            local: if name == "CONNECTED" { local } else { None },
            tun_v6: self
                .ctx
                .router_cfg
                .pool
                .ipv6
                .map(|(server6, _, _)| server6)
                .filter(|_| matches!(name, "ASSIGN_IP" | "CONNECTED")),
        };
        self.send_broker(ParentToBroker::Event(Box::new(
            bulwark_ipc::msg::mgmt::MgmtEvent::State(entry),
        )))
        .await;
    }

    async fn send_broker(&mut self, msg: ParentToBroker) {
        if let (Some(b), true) = (&self.broker.running, self.broker.ctl_open) {
            if let Err(e) = b.control.send(&msg, &[]).await {
                tracing::warn!(
                    "management broker: cannot deliver {}: {}",
                    msg.name(),
                    error_chain(&e)
                );
            }
        }
    }

    async fn send_broker_quiet(&mut self, msg: ParentToBroker) {
        if let (Some(b), true) = (&self.broker.running, self.broker.ctl_open) {
            let _ = b.control.send(&msg, &[]).await;
        }
    }

    async fn send_worker(&mut self, msg: ParentToWorker) {
        if let (Some(w), true) = (&self.worker.running, self.worker.ctl_open) {
            if let Err(e) = w.proc.control.send(&msg, &[]).await {
                tracing::warn!("worker: cannot deliver {}: {}", msg.name(), error_chain(&e));
            }
        }
    }

    /// Delivers what the router produced and acts on it.
    async fn apply(&mut self, fx: crate::router::Effects) {
        let crate::router::Effects {
            out,
            signal,
            verb,
            mute,
            hold_released,
            auth,
            gone,
            established,
        } = fx;
        for rec in established {
            let h = std::sync::Arc::clone(self.ctx.hooks);
            tokio::spawn(async move { h.established(&rec).await });
        }
        for (rec, bin, bout, secs) in gone {
            let h = std::sync::Arc::clone(self.ctx.hooks);
            tokio::spawn(async move { h.disconnected(&rec, bin, bout, secs).await });
        }
        for o in out {
            match o {
                crate::router::Out::Worker(m) => self.send_worker(m).await,
                crate::router::Out::Broker(m) => self.send_broker(m).await,
            }
        }
        if let Some(m) = mute {
            logging::set_mute(m);
        }
        if let Some(v) = verb {
            logging::set_verb(v);
            self.send_worker(ParentToWorker::SetVerb { level: v }).await;
            self.send_broker(ParentToBroker::SetVerb { level: v }).await;
        }
        for req in auth {
            self.spawn_auth(req);
        }
        if hold_released && self.worker.running.is_none() && self.worker.restart_at.is_none() {
            tracing::info!("Hold released, starting");
            if let Err(e) = self.start_worker_now().await {
                tracing::error!("worker start failed: {}", error_chain(&e));
                let _ = schedule_restart(&mut self.worker, None, self.ctx.policy);
            }
        }
        if let Some(sig) = signal {
            // Management-thrown signals act as the OS signal would; exits are delivered through
            // the loop by raising the real signal (so the exit path is the same).
            let raw = match sig {
                bulwark_ipc::msg::mgmt::MgmtSignal::Term => libc::SIGTERM,
                bulwark_ipc::msg::mgmt::MgmtSignal::Int => libc::SIGINT,
                bulwark_ipc::msg::mgmt::MgmtSignal::Hup => libc::SIGHUP,
                bulwark_ipc::msg::mgmt::MgmtSignal::Usr1 => libc::SIGUSR1,
                bulwark_ipc::msg::mgmt::MgmtSignal::Usr2 => libc::SIGUSR2,
            };
            if let Err(e) = nix::sys::signal::raise(
                nix::sys::signal::Signal::try_from(raw)
                    .unwrap_or(nix::sys::signal::Signal::SIGTERM),
            ) {
                tracing::error!("cannot raise {}: {e}", sig.name());
            }
        }
    }

    /// Runs the authorisation of one client (hooks, management client-auth) in a task; the
    /// verdict comes back through the loop.
    fn spawn_auth(&mut self, req: bulwark_ipc::msg::clients::ClientAuthRequest) {
        let env = self.router.connect_env(&req);
        let n_clients = u32::try_from(self.router.nclients()).unwrap_or(u32::MAX);
        let mgmt = self.ctx.router_cfg.mgmt_client_auth;
        let hand_window = Duration::from_secs(u64::from(self.ctx.engine.hand_window));
        let waits = std::sync::Arc::clone(&self.waits);
        let tx = self.auth_tx.clone();
        let hooks = std::sync::Arc::clone(self.ctx.hooks);
        tokio::spawn(async move {
            authorize(req, env, n_clients, mgmt, hand_window, waits, tx, hooks).await;
        });
    }

    async fn on_signal(&mut self, sig: bulwark_ipc::msg::mgmt::MgmtSignal) -> SignalAction {
        use bulwark_ipc::msg::mgmt::MgmtSignal;
        match sig {
            MgmtSignal::Term => SignalAction::Exit("SIGTERM"),
            MgmtSignal::Int => SignalAction::Exit("SIGINT"),
            MgmtSignal::Usr2 => {
                if self.broker.running.is_some() {
                    self.send_broker(ParentToBroker::DumpStatus).await;
                } else {
                    tracing::warn!(
                        "SIGUSR2: the management broker is restarting; no status to print"
                    );
                }
                SignalAction::Continue
            }
            MgmtSignal::Usr1 => {
                // OpenVPN's server soft restart: every client instance ends (clients are told and
                // reconnect), the configuration stays; the TUN device and routes are kept.
                tracing::info!("SIGUSR1[hard,] received, process restarting");
                self.state("RECONNECTING", "SIGUSR1").await;
                if self.worker.running.is_some() {
                    self.worker_restart = true;
                    self.send_worker(ParentToWorker::Shutdown).await;
                }
                SignalAction::Continue
            }
            MgmtSignal::Hup => {
                self.reload().await;
                SignalAction::Continue
            }
        }
    }

    async fn on_worker_message(&mut self, m: Result<WorkerToParent, ChannelError>) -> SignalAction {
        let res = match m {
            Ok(WorkerToParent::Fatal { reason }) => {
                tracing::error!("worker fatal error: {reason}");
                return SignalAction::Continue;
            }
            Ok(WorkerToParent::Reply { id, reply }) => self.router.on_worker_reply(id, reply),
            Ok(WorkerToParent::AuthRequest(req)) => self.router.on_auth_request(*req),
            Ok(WorkerToParent::Client(ev)) => self.router.on_client_event(ev),
            Ok(other) => Err(crate::router::RouterError::Worker(format!(
                "unexpected {} after start-up",
                other.name()
            ))),
            Err(e) => {
                channel_failure(&mut self.worker, e);
                return SignalAction::Continue;
            }
        };
        match res {
            Ok(fx) => self.apply(fx).await,
            Err(e) => violation(&mut self.worker, e.to_string()),
        }
        SignalAction::Continue
    }

    async fn on_broker_message(&mut self, m: Result<BrokerToParent, ChannelError>) -> SignalAction {
        match m {
            Ok(BrokerToParent::Fatal { reason }) => {
                tracing::error!("management broker fatal error: {reason}")
            }
            Ok(BrokerToParent::Request { id, request }) => {
                if let Some(result) = self.client_auth_command(&request) {
                    self.send_broker(ParentToBroker::Response {
                        id,
                        result: Ok(bulwark_ipc::msg::mgmt::Response::Done(result)),
                    })
                    .await;
                } else {
                    let fx = self.router.on_broker_request(id, request);
                    self.apply(fx).await;
                }
            }
            Ok(BrokerToParent::Audit(rec)) => self.ctx.audit.record(&rec),
            Ok(BrokerToParent::StatusFile { index, text }) => self.write_status(index, &text),
            Ok(BrokerToParent::StatusDump { text }) => {
                // As OpenVPN's SIGUSR2: each status line logged at M_INFO.
                for line in text.lines() {
                    tracing::info!("{line}");
                }
            }
            Ok(other) => violation(
                &mut self.broker,
                format!("unexpected {} after start-up", other.name()),
            ),
            Err(e) => channel_failure(&mut self.broker, e),
        }
        SignalAction::Continue
    }

    /// The client-auth family: delivered to the waiting authorisation, if any.
    fn client_auth_command(&mut self, req: &bulwark_ipc::msg::mgmt::Request) -> Option<bool> {
        use bulwark_ipc::msg::mgmt::Request;
        let (key, decision, last) = match req {
            Request::ClientAuth { cid, kid, config } => {
                ((*cid, *kid), MgmtDecision::Accept(config.clone()), true)
            }
            Request::ClientAuthNt { cid, kid } => {
                ((*cid, *kid), MgmtDecision::Accept(Vec::new()), true)
            }
            Request::ClientDeny {
                cid,
                kid,
                reason,
                client_reason,
            } => (
                (*cid, *kid),
                MgmtDecision::Deny {
                    reason: reason.clone(),
                    client_reason: client_reason.clone(),
                },
                true,
            ),
            Request::ClientPendingAuth {
                cid,
                kid,
                extra,
                timeout,
            } => (
                (*cid, *kid),
                MgmtDecision::Pending {
                    extra: extra.clone(),
                    timeout: *timeout,
                },
                false,
            ),
            _ => return None,
        };
        let deny_log = match &decision {
            MgmtDecision::Deny {
                reason,
                client_reason,
            } => Some(format!(
                "MULTI: connection rejected: {reason}, client-reason: {}",
                client_reason.as_deref().unwrap_or("(null)")
            )),
            _ => None,
        };
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let delivered = match if last {
            waits.remove(&key)
        } else {
            waits.get(&key).cloned()
        } {
            Some(tx) => tx.send(decision).is_ok(),
            None => false,
        };
        if !delivered && last && !self.ctx.router_cfg.mgmt_client_auth {
            // As OpenVPN 2.6 without --management-client-auth: the command finds the client's
            // key and succeeds, but nothing waits for a verdict, so it changes nothing. (OpenVPN
            // also checks the key id against the client's live TLS sessions; Bulwark does not
            // track key ids of clients it did not defer and accepts any.)
            let known = self.router.is_established(key.0);
            if let (true, Some(line)) = (known, deny_log) {
                tracing::debug!("{line}");
            }
            return Some(known);
        }
        Some(delivered)
    }

    /// Writes a status file the broker rendered: temporary file in the same directory, then
    /// rename, so a reader never sees a torn file. A failure is reported once until it works
    /// again; it never stops the daemon.
    fn write_status(&mut self, index: u8, text: &str) {
        let Some(t) = self.ctx.status_targets.get(usize::from(index)) else {
            violation(
                &mut self.broker,
                format!("StatusFile for index {index}, which does not exist"),
            );
            return;
        };
        let res = write_atomic_with(&t.path, text.as_bytes(), t.mode, t.gid);
        let failed = &mut self.status_failed[usize::from(index)];
        match res {
            Ok(()) => {
                if *failed {
                    tracing::info!("status file {} written again", t.path.display());
                }
                *failed = false;
            }
            Err(e) => {
                self.router.counters.status_write_errors += 1;
                if !*failed {
                    tracing::error!("cannot write status file {}: {e}", t.path.display());
                }
                *failed = true;
            }
        }
    }
}

/// The ASSIGN_IP/ADD_ROUTES states of the start-up sequence (the TUN was configured before the
/// runtime existed; the states are reported when the management interface can see them).
/// ADD_ROUTES only when there are IPv4 routes to add, as OpenVPN.
async fn sup_state_assign(sup: &mut Sup<'_, '_>) {
    sup.state("ASSIGN_IP", "").await;
    if sup.ctx.has_v4_routes {
        sup.state("ADD_ROUTES", "").await;
    }
}

/// Writes a file atomically (mode 0644, owner unchanged): a temporary file in the same directory,
/// then rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, bytes, 0o644, None)
}

/// Writes a file atomically with this mode and group owner: a temporary file in the same
/// directory (mode and group set before the content is visible), then rename, so a reader never
/// sees a torn file or a moment of wrong permissions.
pub(crate) fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    gid: Option<u32>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "status".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        if let Some(g) = gid {
            nix::unistd::fchown(&f, None, Some(nix::unistd::Gid::from_raw(g)))
                .map_err(std::io::Error::from)?;
        }
        // fchmod after fchown: the mode is not subject to the umask this way
        nix::sys::stat::fchmod(&f, nix::sys::stat::Mode::from_bits_truncate(mode))
            .map_err(std::io::Error::from)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// One client's authorisation, in OpenVPN's order: `auth-user-pass-verify`, then management
/// `client-auth` when configured, then the client-connect stage (CCD file, client-connect
/// script, the `client-auth` config lines, the persisted address). The verdict goes back to the
/// loop, which forwards it to the worker.
#[allow(clippy::too_many_arguments)]
async fn authorize(
    req: bulwark_ipc::msg::clients::ClientAuthRequest,
    env: bulwark_ipc::msg::mgmt::EnvBlock,
    n_clients: u32,
    mgmt: bool,
    hand_window: Duration,
    waits: MgmtWaits,
    tx: tokio::sync::mpsc::UnboundedSender<AuthMsg>,
    hooks: std::sync::Arc<crate::client_hooks::ClientHooks>,
) {
    use bulwark_ipc::msg::clients::AuthVerdict;
    use bulwark_ipc::msg::mgmt::{ClientEventKind, MgmtEvent};
    let (cid, kid) = (req.cid, req.kid);
    let verdict = |verdict| AuthMsg::Verdict {
        cid,
        kid,
        verdict,
        readdress: false,
    };
    let denied = |d: crate::client_hooks::Deny| AuthVerdict::Deny {
        reason: d.reason,
        client_reason: d.client_reason,
    };
    if let Err(d) = hooks.authenticate(&req).await {
        let _ = tx.send(verdict(denied(d)));
        return;
    }
    let mut lines = Vec::new();
    if mgmt {
        let (dtx, mut drx) = tokio::sync::mpsc::unbounded_channel();
        waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((cid, kid), dtx);
        let kind = if req.reauth {
            ClientEventKind::Reauth { kid }
        } else {
            ClientEventKind::Connect { kid }
        };
        let _ = tx.send(AuthMsg::Broker(ParentToBroker::Event(Box::new(
            MgmtEvent::Client {
                cid,
                kind,
                n_clients,
                env,
            },
        ))));
        let deadline = tokio::time::Instant::now() + hand_window;
        let decided = loop {
            match tokio::time::timeout_at(deadline, drx.recv()).await {
                Ok(Some(MgmtDecision::Accept(l))) => break Some(l),
                Ok(Some(MgmtDecision::Deny {
                    reason,
                    client_reason,
                })) => {
                    let _ = tx.send(verdict(AuthVerdict::Deny {
                        reason,
                        client_reason,
                    }));
                    break None;
                }
                Ok(Some(MgmtDecision::Pending { extra, timeout })) => {
                    let _ = tx.send(verdict(AuthVerdict::Pending {
                        extra,
                        timeout_secs: timeout,
                    }));
                }
                // The worker applies hand-window itself; nothing more to wait for.
                Ok(None) | Err(_) => break None,
            }
        };
        waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(cid, kid));
        match decided {
            Some(l) => lines = l,
            None => return,
        }
    }
    match hooks.connect(&req, &lines).await {
        Ok(o) => {
            let _ = tx.send(AuthMsg::Verdict {
                cid,
                kid,
                verdict: AuthVerdict::Accept(Box::new(o)),
                readdress: !lines.is_empty() || hooks.has_client_connect(),
            });
        }
        Err(d) => {
            let _ = tx.send(verdict(denied(d)));
        }
    }
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
