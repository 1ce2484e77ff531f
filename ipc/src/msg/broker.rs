//! The broker control channel: parent ↔ management broker (`bulwark-mgmt`).
//!
//! Start-up protocol, as for the worker: `Hello` both ways (versions must match), then
//! `Init(BrokerInit)` with the management listeners (0..=16: the broker also runs without a
//! management interface, to render status files), then `Ready` or `Fatal`. Afterwards the parent
//! may send `SetVerb`, `Shutdown`, `Response` (answering a broker `Request` with the same id) and
//! `Event` (log lines, states, `>CLIENT:` events for the notification streams). The broker sends
//! `Request` (one per management command that needs the daemon), `Audit` (one per command line)
//! and `StatusFile` (rendered status file content for the parent to write).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::{check_pid, check_reason, check_roles, check_sandbox, check_version, FdRole};
use super::mgmt::{AuditRecord, BackendError, ListenerPolicy, MgmtEvent, Request, Response};
use crate::fdcheck::{self, FdCheckError};
use crate::message::Message;
use crate::validate::{check_verb, ValidationError};

/// `ParentToBroker::Hello`.
pub const KIND_P2B_HELLO: u16 = 0x0201;
/// `ParentToBroker::Init`.
pub const KIND_P2B_INIT: u16 = 0x0202;
/// `ParentToBroker::Shutdown`.
pub const KIND_P2B_SHUTDOWN: u16 = 0x0203;
/// `ParentToBroker::SetVerb`.
pub const KIND_P2B_SET_VERB: u16 = 0x0204;
/// `ParentToBroker::Response`.
pub const KIND_P2B_RESPONSE: u16 = 0x0205;
/// `ParentToBroker::Event`.
pub const KIND_P2B_EVENT: u16 = 0x0206;
/// `ParentToBroker::DumpStatus`.
pub const KIND_P2B_DUMP_STATUS: u16 = 0x0207;
/// `ParentToBroker::Reconfigure`.
pub const KIND_P2B_RECONFIGURE: u16 = 0x0208;
/// `BrokerToParent::StatusDump`.
pub const KIND_B2P_STATUS_DUMP: u16 = 0x0287;
/// `BrokerToParent::Request`.
pub const KIND_B2P_REQUEST: u16 = 0x0284;
/// `BrokerToParent::Audit`.
pub const KIND_B2P_AUDIT: u16 = 0x0285;
/// `BrokerToParent::StatusFile`.
pub const KIND_B2P_STATUS_FILE: u16 = 0x0286;
/// `BrokerToParent::Hello`.
pub const KIND_B2P_HELLO: u16 = 0x0281;
/// `BrokerToParent::Ready`.
pub const KIND_B2P_READY: u16 = 0x0282;
/// `BrokerToParent::Fatal`.
pub const KIND_B2P_FATAL: u16 = 0x0283;

/// The broker's configuration. The integrator extends it; every added field gets a check in
/// [`BrokerConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerConfig {
    /// User id the broker drops to (never 0).
    pub uid: u32,
    /// Group id the broker drops to (never 0).
    pub gid: u32,
    /// Empty directory the broker chroots into (absolute, no `..`).
    pub chroot_dir: PathBuf,
    /// OpenVPN `verb` level (0..=11).
    pub verb: u8,
    /// Seccomp enforcement.
    pub seccomp: super::worker_config::SeccompMode,
    /// Management interface settings.
    pub mgmt: MgmtSettings,
}

/// Format of a rendered status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusFormat {
    /// `status-version 1`.
    V1,
    /// `status-version 2`.
    V2,
    /// `status-version 3`.
    V3,
    /// The versioned JSON document (`bulwark.status.v1`).
    Json,
}

/// One status file the broker renders periodically (the parent knows the path by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFileSpec {
    /// Format.
    pub format: StatusFormat,
    /// Seconds between renders (≥ 1).
    pub interval_secs: u32,
}

/// Management settings of the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MgmtSettings {
    /// `management-log-cache` (1..=1_000_000).
    pub log_cache: u32,
    /// `status-version` used by `status` without argument (1..=3).
    pub status_version: u8,
    /// Concurrent management sessions (1..=1024).
    pub max_sessions: u32,
    /// Status files to render, in the parent's order.
    pub status_files: Vec<StatusFileSpec>,
    /// The Prometheus endpoint (`metrics-listen`); its listener is the last descriptor of
    /// `BrokerInit::fds`.
    pub metrics: Option<MetricsSettings>,
}

/// The broker's metrics endpoint settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSettings {
    /// The `status_path` label of the openvpn_exporter-compatible series.
    pub status_path: String,
    /// Per-client series for at most this many clients (0: none).
    pub per_client: u32,
}

impl Default for MgmtSettings {
    /// OpenVPN's defaults: log cache 250, status-version 1; 16 sessions; no status files.
    fn default() -> Self {
        MgmtSettings {
            log_cache: 250,
            status_version: 1,
            max_sessions: 16,
            status_files: Vec::new(),
            metrics: None,
        }
    }
}

impl BrokerConfig {
    /// Check every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_sandbox(self.uid, self.gid, &self.chroot_dir)?;
        check_verb(self.verb)?;
        let m = &self.mgmt;
        let bad = |field, why: &str| ValidationError::Field {
            field,
            why: why.to_string(),
        };
        if !(1..=1_000_000).contains(&m.log_cache) {
            return Err(bad("mgmt.log_cache", "outside 1..=1000000"));
        }
        if !(1..=3).contains(&m.status_version) {
            return Err(bad("mgmt.status_version", "outside 1..=3"));
        }
        if !(1..=1024).contains(&m.max_sessions) {
            return Err(bad("mgmt.max_sessions", "outside 1..=1024"));
        }
        if m.status_files.len() > 8 || m.status_files.iter().any(|f| f.interval_secs == 0) {
            return Err(bad("mgmt.status_files", "at most 8, intervals ≥ 1 s"));
        }
        if let Some(x) = &m.metrics {
            crate::validate::check_text("mgmt.metrics.status_path", &x.status_path, 4096)?;
            if x.per_client > 10_000 {
                return Err(bad("mgmt.metrics.per_client", "at most 10000"));
            }
        }
        Ok(())
    }
}

/// The broker's start-up payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInit {
    /// The configuration.
    pub config: BrokerConfig,
    /// What each passed descriptor is, in order: 0..=16 management listeners
    /// ([`FdRole::TcpListener`] or [`FdRole::UnixListener`]).
    pub fds: Vec<FdRole>,
    /// The access policy of each listener, in the order of `fds`.
    pub policies: Vec<ListenerPolicy>,
}

impl BrokerInit {
    const ALLOWED: [FdRole; 2] = [FdRole::TcpListener, FdRole::UnixListener];

    /// Check the configuration and the role list.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.config.validate()?;
        check_roles("BrokerInit", &self.fds, 0, &Self::ALLOWED)?;
        let metrics = usize::from(self.config.mgmt.metrics.is_some());
        if self.policies.len() + metrics != self.fds.len() {
            return Err(ValidationError::Field {
                field: "BrokerInit.policies",
                why: format!(
                    "{} policies for {} listeners",
                    self.policies.len(),
                    self.fds.len()
                ),
            });
        }
        self.policies.iter().try_for_each(ListenerPolicy::validate)
    }

    /// Check that the received descriptors are what [`BrokerInit::fds`] says.
    pub fn check_fds(&self, fds: &[OwnedFd]) -> Result<(), FdCheckError> {
        fdcheck::check_fds(&self.fds, fds)
    }
}

/// Messages from the parent to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToBroker {
    /// First message: the parent's IPC protocol version.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        version: u16,
    },
    /// Configuration and management listeners (fds: one per entry of `BrokerInit::fds`).
    Init(BrokerInit),
    /// Stop: close every management session and exit.
    Shutdown,
    /// Change the `verb` level (0..=11).
    SetVerb {
        /// New level.
        level: u8,
    },
    /// The answer to `BrokerToParent::Request` with the same id.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        result: Result<Response, BackendError>,
    },
    /// A real-time event for the notification streams and histories.
    Event(Box<MgmtEvent>),
    /// Render the status in the configured `status-version` for the log (SIGUSR2); answered by
    /// `BrokerToParent::StatusDump`.
    DumpStatus,
    /// New access rules and status intervals after a SIGHUP reload (same listeners, same status
    /// files): connections accepted from now on get the new policies; running sessions keep theirs.
    Reconfigure(Box<BrokerReconfigure>),
}

/// The part of the broker's configuration a SIGHUP reload can change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerReconfigure {
    /// The access policy of each listener, in the order of `BrokerInit::fds`.
    pub policies: Vec<ListenerPolicy>,
    /// The interval of each status file, in the order of `MgmtSettings::status_files`.
    pub status_intervals: Vec<u32>,
}

impl BrokerReconfigure {
    /// Checks every policy and interval (the counts are checked by the broker against what it runs).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.policies.len() > 16 || self.status_intervals.len() > 8 {
            return Err(ValidationError::Field {
                field: "BrokerReconfigure",
                why: "at most 16 listeners and 8 status files".into(),
            });
        }
        if self.status_intervals.contains(&0) {
            return Err(ValidationError::Field {
                field: "BrokerReconfigure.status_intervals",
                why: "intervals ≥ 1 s".into(),
            });
        }
        self.policies.iter().try_for_each(ListenerPolicy::validate)
    }
}

impl Message for ParentToBroker {
    fn kind(&self) -> u16 {
        match self {
            ParentToBroker::Hello { .. } => KIND_P2B_HELLO,
            ParentToBroker::Init(_) => KIND_P2B_INIT,
            ParentToBroker::Shutdown => KIND_P2B_SHUTDOWN,
            ParentToBroker::SetVerb { .. } => KIND_P2B_SET_VERB,
            ParentToBroker::Response { .. } => KIND_P2B_RESPONSE,
            ParentToBroker::Event(_) => KIND_P2B_EVENT,
            ParentToBroker::DumpStatus => KIND_P2B_DUMP_STATUS,
            ParentToBroker::Reconfigure(_) => KIND_P2B_RECONFIGURE,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ParentToBroker::Hello { .. } => "ParentToBroker::Hello",
            ParentToBroker::Init(_) => "ParentToBroker::Init",
            ParentToBroker::Shutdown => "ParentToBroker::Shutdown",
            ParentToBroker::SetVerb { .. } => "ParentToBroker::SetVerb",
            ParentToBroker::Response { .. } => "ParentToBroker::Response",
            ParentToBroker::Event(_) => "ParentToBroker::Event",
            ParentToBroker::DumpStatus => "ParentToBroker::DumpStatus",
            ParentToBroker::Reconfigure(_) => "ParentToBroker::Reconfigure",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            ParentToBroker::Init(init) => init.fds.len(),
            ParentToBroker::Hello { .. }
            | ParentToBroker::Shutdown
            | ParentToBroker::SetVerb { .. }
            | ParentToBroker::Response { .. }
            | ParentToBroker::Event(_)
            | ParentToBroker::DumpStatus
            | ParentToBroker::Reconfigure(_) => 0,
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ParentToBroker::Hello { version } => check_version(*version),
            ParentToBroker::Init(init) => init.validate(),
            ParentToBroker::Shutdown => Ok(()),
            ParentToBroker::SetVerb { level } => check_verb(*level),
            ParentToBroker::Response { result, .. } => match result {
                Ok(r) => r.validate(),
                Err(_) => Ok(()),
            },
            ParentToBroker::Event(e) => e.validate(),
            ParentToBroker::DumpStatus => Ok(()),
            ParentToBroker::Reconfigure(r) => r.validate(),
        }
    }
}

/// Messages from the broker to the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerToParent {
    /// Reply to the parent's Hello.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        version: u16,
        /// The broker's pid as it sees it (> 0).
        pid: i32,
    },
    /// The broker is sandboxed and serving.
    Ready,
    /// The broker cannot continue and is about to exit.
    Fatal {
        /// Why (1..=1024 bytes, no control characters).
        reason: String,
    },
    /// A management command needs the daemon; answered by `ParentToBroker::Response`.
    Request {
        /// Correlation id (unique among the broker's outstanding requests).
        id: u64,
        /// The request.
        request: Request,
    },
    /// One audit record (one per management command line).
    Audit(AuditRecord),
    /// The status rendered for the log (answer to `ParentToBroker::DumpStatus`).
    StatusDump {
        /// The lines, `\n`-separated.
        text: String,
    },
    /// Rendered content of the status file with this index (`MgmtSettings::status_files`).
    StatusFile {
        /// Index into `status_files`.
        index: u8,
        /// The file's content.
        text: String,
    },
}

impl Message for BrokerToParent {
    fn kind(&self) -> u16 {
        match self {
            BrokerToParent::Hello { .. } => KIND_B2P_HELLO,
            BrokerToParent::Ready => KIND_B2P_READY,
            BrokerToParent::Fatal { .. } => KIND_B2P_FATAL,
            BrokerToParent::Request { .. } => KIND_B2P_REQUEST,
            BrokerToParent::Audit(_) => KIND_B2P_AUDIT,
            BrokerToParent::StatusFile { .. } => KIND_B2P_STATUS_FILE,
            BrokerToParent::StatusDump { .. } => KIND_B2P_STATUS_DUMP,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            BrokerToParent::Hello { .. } => "BrokerToParent::Hello",
            BrokerToParent::Ready => "BrokerToParent::Ready",
            BrokerToParent::Fatal { .. } => "BrokerToParent::Fatal",
            BrokerToParent::Request { .. } => "BrokerToParent::Request",
            BrokerToParent::Audit(_) => "BrokerToParent::Audit",
            BrokerToParent::StatusFile { .. } => "BrokerToParent::StatusFile",
            BrokerToParent::StatusDump { .. } => "BrokerToParent::StatusDump",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            BrokerToParent::Hello { .. }
            | BrokerToParent::Ready
            | BrokerToParent::Fatal { .. }
            | BrokerToParent::Request { .. }
            | BrokerToParent::Audit(_)
            | BrokerToParent::StatusFile { .. }
            | BrokerToParent::StatusDump { .. } => 0,
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            BrokerToParent::Hello { version, pid } => {
                check_version(*version)?;
                check_pid(*pid)
            }
            BrokerToParent::Ready => Ok(()),
            BrokerToParent::Fatal { reason } => check_reason(reason),
            BrokerToParent::Request { request, .. } => request.validate(),
            BrokerToParent::Audit(a) => a.validate(),
            BrokerToParent::StatusDump { text } => check_multiline(text),
            BrokerToParent::StatusFile { index, text } => {
                if *index >= 8 {
                    return Err(ValidationError::Field {
                        field: "StatusFile.index",
                        why: format!("{index} out of range"),
                    });
                }
                check_multiline(text)
            }
        }
    }
}

/// Status text: no NUL, no control characters but newlines and TAB (status-version 3).
fn check_multiline(text: &str) -> Result<(), ValidationError> {
    match text
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        Some((offset, c)) => Err(ValidationError::ControlCharacter {
            field: "StatusFile.text",
            code: u32::from(c),
            offset,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn init(fds: Vec<FdRole>) -> BrokerInit {
        BrokerInit {
            config: BrokerConfig {
                uid: 998,
                gid: 998,
                chroot_dir: PathBuf::from("/run/bulwark/empty"),
                verb: 4,
                seccomp: crate::msg::SeccompMode::Kill,
                mgmt: MgmtSettings {
                    log_cache: 250,
                    status_version: 1,
                    max_sessions: 16,
                    status_files: vec![],
                    metrics: None,
                },
            },
            policies: fds
                .iter()
                .map(|_| {
                    ListenerPolicy::openvpn_compatible(super::super::mgmt::ListenerKind::Tcp, None)
                })
                .collect(),
            fds,
        }
    }

    #[test]
    fn init_validation() {
        assert!(init(vec![]).validate().is_ok());
        assert!(init(vec![FdRole::TcpListener, FdRole::UnixListener])
            .validate()
            .is_ok());
        assert!(init(vec![FdRole::Tun]).validate().is_err());
        assert!(init(vec![FdRole::UdpSocket]).validate().is_err());
        assert!(init(vec![FdRole::UnixListener; 17]).validate().is_err());
        let mut bad = init(vec![]);
        bad.config.gid = 0;
        assert!(bad.validate().is_err());
        let mut bad = init(vec![]);
        bad.config.verb = 200;
        assert!(bad.validate().is_err());
        assert_eq!(
            ParentToBroker::Init(init(vec![FdRole::TcpListener])).fd_count(),
            1
        );
    }
}
