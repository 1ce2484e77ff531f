//! The broker's shared engine state: history buffers, process-wide management settings, the
//! notification fan-out and the output channel to the parent.
//!
//! * [`Hub::ingest`] takes one [`MgmtEvent`] from the parent, records it in the matching history
//!   (log cache = `--management-log-cache`, default 250; state and echo 100 each) and broadcasts
//!   it to every session. A slow session that falls behind the broadcast buffer is dropped by
//!   its own task; it never blocks the hub or other sessions.
//! * [`Hub::log_local`] records a log line produced by the broker itself (`MANAGEMENT: CMD ...`,
//!   `Client connected from ...`): it enters the log cache, is broadcast to sessions, and is
//!   sent to the parent as [`BrokerOutput::Log`] for the log file. INVARIANT for the
//!   integrator: the parent must NOT forward these records back to the broker (they would be
//!   duplicated).
//! * Persistent (process-lifetime) management settings live here, as in OpenVPN: `env-filter`
//!   level, management client version, the pending prompt (`>HOLD:` line) re-sent after every
//!   greeting.
//! * Audit records go to the parent as [`BrokerOutput::Audit`] with back-pressure.

use crate::access::AuditRecord;
use crate::backend::Backend;
use crate::model::{EchoEntry, LogFlags, LogRecord, MgmtEvent, StateEntry};
use crate::notify::hold_line;
use crate::session::Limits;
use crate::status::StatusVersion;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc};

/// Source of the current Unix time (injectable for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `--management-log-cache` (≥ 1, default 250).
    pub log_cache: usize,
    /// Configured `--status-version` used by `status` / `status 0`.
    pub status_version: StatusVersion,
    /// Current `--verb` (filters the broker's own D_MANAGEMENT log lines, level 3).
    pub verb: u8,
    /// Resource limits.
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            log_cache: 250,
            status_version: StatusVersion::V1,
            verb: 1,
            limits: Limits::default(),
        }
    }
}

/// Values the broker sends to the parent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BrokerOutput {
    /// One audit record per command line.
    Audit(AuditRecord),
    /// A log record produced by the broker (to be written by the parent's log sink).
    Log(LogRecord),
}

const STATE_CACHE: usize = 100;
const ECHO_CACHE: usize = 100;
/// Verb level of D_MANAGEMENT / D_MANAGEMENT_DEBUG messages.
pub const D_MANAGEMENT_LEVEL: u8 = 3;

#[derive(Debug)]
struct HubState {
    log: VecDeque<LogRecord>,
    state: VecDeque<StateEntry>,
    echo: VecDeque<EchoEntry>,
    pending_prompt: Option<String>,
    env_filter: i32,
    client_version: i32,
    verb: u8,
}

/// Shared engine state (one per broker process).
pub struct Hub {
    cfg: EngineConfig,
    backend: Arc<dyn Backend>,
    clock: Clock,
    inner: Mutex<HubState>,
    tx: broadcast::Sender<Arc<MgmtEvent>>,
    out: mpsc::Sender<BrokerOutput>,
    sessions: AtomicUsize,
    state_listeners: AtomicUsize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn push_capped<T>(q: &mut VecDeque<T>, cap: usize, v: T) {
    while q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(v);
}

fn tail<T: Clone>(q: &VecDeque<T>, n: Option<usize>) -> Vec<T> {
    let skip = match n {
        Some(n) => q.len().saturating_sub(n),
        None => 0,
    };
    q.iter().skip(skip).cloned().collect()
}

impl Hub {
    /// Create the hub. Returns the receiver of [`BrokerOutput`] values for the integrator.
    pub fn new(
        cfg: EngineConfig,
        backend: Arc<dyn Backend>,
        clock: Clock,
    ) -> (Arc<Hub>, mpsc::Receiver<BrokerOutput>) {
        let (tx, _) = broadcast::channel(cfg.limits.notification_backlog.max(16));
        let (out, out_rx) = mpsc::channel(1024);
        let verb = cfg.verb;
        let hub = Hub {
            cfg,
            backend,
            clock,
            inner: Mutex::new(HubState {
                log: VecDeque::new(),
                state: VecDeque::new(),
                echo: VecDeque::new(),
                pending_prompt: None,
                env_filter: 0,
                client_version: 1,
                verb,
            }),
            tx,
            out,
            sessions: AtomicUsize::new(0),
            state_listeners: AtomicUsize::new(0),
        };
        (Arc::new(hub), out_rx)
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A poisoned lock only means a panic elsewhere; the data (histories) stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Engine configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Current Unix time from the hub's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Subscribe to the notification fan-out.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<MgmtEvent>> {
        self.tx.subscribe()
    }

    /// Take one event from the parent: record history, update prompt state, fan out.
    pub fn ingest(&self, ev: MgmtEvent) {
        {
            let mut st = self.lock();
            match &ev {
                MgmtEvent::Log(r) => push_capped(&mut st.log, self.cfg.log_cache, r.clone()),
                MgmtEvent::State(s) => push_capped(&mut st.state, STATE_CACHE, s.clone()),
                MgmtEvent::Echo(e) => push_capped(&mut st.echo, ECHO_CACHE, e.clone()),
                MgmtEvent::Hold { wait_secs } => st.pending_prompt = Some(hold_line(*wait_secs)),
                MgmtEvent::HoldReleased => st.pending_prompt = None,
                _ => {}
            }
        }
        if let MgmtEvent::State(s) = &ev {
            // OpenVPN logs every state change while real-time state notification is on.
            if self.state_listeners.load(Ordering::SeqCst) > 0 {
                self.log_local(
                    D_MANAGEMENT_LEVEL,
                    LogFlags::default(),
                    format!("MANAGEMENT: >STATE:{}", s.line()),
                );
            }
        }
        // No receivers is fine: nobody is connected, the event is only kept in history.
        let _ = self.tx.send(Arc::new(ev));
    }

    /// Record and fan out a broker-originated log line if `level` passes the current verb.
    pub fn log_local(&self, level: u8, flags: LogFlags, message: String) {
        let rec = {
            let mut st = self.lock();
            if level > st.verb {
                return;
            }
            let rec = LogRecord {
                time: self.now(),
                flags,
                message,
            };
            push_capped(&mut st.log, self.cfg.log_cache, rec.clone());
            rec
        };
        if self.out.try_send(BrokerOutput::Log(rec.clone())).is_err() {
            tracing::warn!("broker log record dropped: parent output channel full or closed");
        }
        let _ = self.tx.send(Arc::new(MgmtEvent::Log(rec)));
    }

    /// Ship an audit record to the parent (waits if the channel is full).
    pub async fn audit(&self, rec: AuditRecord) {
        if self.out.send(BrokerOutput::Audit(rec)).await.is_err() {
            tracing::error!("audit record could not be delivered: parent output channel closed");
        }
    }

    /// Log history (last `n` or all).
    pub fn log_history(&self, n: Option<usize>) -> Vec<LogRecord> {
        tail(&self.lock().log, n)
    }

    /// State history (last `n` or all).
    pub fn state_history(&self, n: Option<usize>) -> Vec<StateEntry> {
        tail(&self.lock().state, n)
    }

    /// Echo history (last `n` or all).
    pub fn echo_history(&self, n: Option<usize>) -> Vec<EchoEntry> {
        tail(&self.lock().echo, n)
    }

    /// Pending prompt line (e.g. `>HOLD:Waiting for hold release:0`).
    pub fn pending_prompt(&self) -> Option<String> {
        self.lock().pending_prompt.clone()
    }

    /// Process-wide env-filter level.
    pub fn env_filter(&self) -> i32 {
        self.lock().env_filter
    }

    /// Set the env-filter level.
    pub fn set_env_filter(&self, level: i32) {
        self.lock().env_filter = level;
    }

    /// Management client version (`version N`).
    pub fn client_version(&self) -> i32 {
        self.lock().client_version
    }

    /// Set the management client version.
    pub fn set_client_version(&self, v: i32) {
        self.lock().client_version = v;
    }

    /// Update the verb used to filter the broker's own log lines.
    pub fn set_verb(&self, verb: u8) {
        self.lock().verb = verb;
    }

    /// Try to register a new session; `false` if the cap is reached.
    pub fn try_register_session(&self) -> bool {
        let cap = self.cfg.limits.max_clients;
        self.sessions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                if n < cap {
                    Some(n + 1)
                } else {
                    None
                }
            })
            .is_ok()
    }

    /// Unregister a session.
    pub fn unregister_session(&self) {
        self.sessions.fetch_sub(1, Ordering::SeqCst);
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// A session switched `state on` (`true`) or off (`false`).
    pub fn state_listener(&self, on: bool) {
        if on {
            self.state_listeners.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state_listeners.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
