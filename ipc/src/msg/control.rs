//! The worker control channel: parent ↔ worker.
//!
//! Start-up protocol (the worker is still single-threaded and uses the blocking channel):
//! 1. parent → `Hello { version }`, worker → `Hello { version, pid }` (either side aborts on a
//!    version mismatch: `validate()` rejects a Hello whose version differs from
//!    [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION));
//! 2. parent → `Init(WorkerInit)` with the TUN fd(s) and transport sockets, in the order of
//!    [`WorkerInit::fds`]; the worker checks each fd with [`WorkerInit::check_fds`];
//! 3. the worker sandboxes itself, builds its runtime, converts the channel to async and sends
//!    `Ready` (or `Fatal { reason }` at any point, then exits).
//!
//! After start-up the parent may send `SetVerb`, `CrlUpdate`, `Shutdown`, `Query` (answered by
//! exactly one `Reply` with the same id) and `AuthVerdict` (answering an `AuthRequest`); the
//! worker may send `Reply`, `AuthRequest` (only when the engine was configured with
//! `defer_auth`) and `Client` events. See [`super::clients`].

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::clients::{AuthVerdict, ClientAuthRequest, ClientEvent, WorkerQuery, WorkerReply};
use super::common::{check_pid, check_reason, check_roles, check_version, FdRole};
use super::worker_config::WorkerConfig;
use crate::fdcheck::{self, FdCheckError};
use crate::message::Message;
use crate::validate::{check_len, check_verb, ValidationError};
use crate::MAX_BODY_SIZE;

/// Largest CRL (PEM bytes) that fits in one `CrlUpdate` (the body cap minus the enum tag and the
/// length prefix).
pub const MAX_CRL_PEM_LEN: usize = MAX_BODY_SIZE - 16;

const CRL_PEM_BEGIN: &str = "-----BEGIN X509 CRL-----";

/// `ParentToWorker::Hello`.
pub const KIND_P2W_HELLO: u16 = 0x0101;
/// `ParentToWorker::Init`.
pub const KIND_P2W_INIT: u16 = 0x0102;
/// `ParentToWorker::Shutdown`.
pub const KIND_P2W_SHUTDOWN: u16 = 0x0103;
/// `ParentToWorker::SetVerb`.
pub const KIND_P2W_SET_VERB: u16 = 0x0104;
/// `ParentToWorker::CrlUpdate`.
pub const KIND_P2W_CRL_UPDATE: u16 = 0x0105;
/// `ParentToWorker::Query`.
pub const KIND_P2W_QUERY: u16 = 0x0106;
/// `ParentToWorker::AuthVerdict`.
pub const KIND_P2W_AUTH_VERDICT: u16 = 0x0107;
/// `ParentToWorker::SetPush`.
pub const KIND_P2W_SET_PUSH: u16 = 0x0108;
/// `ParentToWorker::SetTls`.
pub const KIND_P2W_SET_TLS: u16 = 0x0109;
/// `WorkerToParent::Reply`.
pub const KIND_W2P_REPLY: u16 = 0x0184;
/// `WorkerToParent::AuthRequest`.
pub const KIND_W2P_AUTH_REQUEST: u16 = 0x0185;
/// `WorkerToParent::Client`.
pub const KIND_W2P_CLIENT: u16 = 0x0186;
/// `WorkerToParent::Hello`.
pub const KIND_W2P_HELLO: u16 = 0x0181;
/// `WorkerToParent::Ready`.
pub const KIND_W2P_READY: u16 = 0x0182;
/// `WorkerToParent::Fatal`.
pub const KIND_W2P_FATAL: u16 = 0x0183;

/// Messages from the parent to the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToWorker {
    /// First message: the parent's IPC protocol version.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        version: u16,
    },
    /// The worker's configuration and descriptors (fds: one per entry of `WorkerInit::fds`).
    Init(Box<WorkerInit>),
    /// Stop: close every session and exit.
    Shutdown,
    /// Change the `verb` level (0..=11).
    SetVerb {
        /// New level.
        level: u8,
    },
    /// A new CRL (the contents of the `crl-verify` file, PEM).
    CrlUpdate {
        /// PEM text holding at least one `X509 CRL` block.
        pem: Vec<u8>,
    },
    /// A query for the management interface; answered by `WorkerToParent::Reply` with this id.
    Query {
        /// Correlation id (chosen by the parent, unique among outstanding queries).
        id: u64,
        /// The query.
        query: WorkerQuery,
    },
    /// A new global push list for clients that authenticate from now on (SIGHUP reload).
    SetPush {
        /// The options, in order (each as `EngineConfig::push` allows).
        push: Vec<String>,
    },
    /// New TLS settings (certificate chain, CA, CRL, TLS options) for handshakes from now on,
    /// renegotiations of connected clients included (SIGHUP reload; the parent already signs with
    /// the matching key, whose algorithm did not change).
    SetTls {
        /// The settings, as in `EngineConfig::tls`.
        tls: Box<super::engine::TlsConfigData>,
    },
    /// The parent's decision about an `AuthRequest`.
    AuthVerdict {
        /// Client id of the request.
        cid: u64,
        /// Key id of the request.
        kid: u32,
        /// The decision.
        verdict: AuthVerdict,
    },
}

/// The worker's start-up payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInit {
    /// The configuration.
    pub config: WorkerConfig,
    /// What each passed descriptor is, in order: one pair per data-plane thread, a
    /// [`FdRole::Tun`] queue followed by its transport socket — one to eight pairs of `Tun`,
    /// [`FdRole::UdpSocket`], or exactly one pair of `Tun`, [`FdRole::TcpListener`];
    /// [`FdRole::UnixListener`] is not allowed.
    pub fds: Vec<FdRole>,
}

impl WorkerInit {
    const ALLOWED: [FdRole; 3] = [FdRole::Tun, FdRole::UdpSocket, FdRole::TcpListener];

    /// Check the configuration and the role list.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.config.validate()?;
        check_roles("WorkerInit", &self.fds, 2, &Self::ALLOWED)?;
        if !self.fds.contains(&FdRole::Tun) {
            return Err(ValidationError::FdRoleMissing {
                role: FdRole::Tun.name(),
                message: "WorkerInit",
            });
        }
        if !self
            .fds
            .iter()
            .any(|r| matches!(r, FdRole::UdpSocket | FdRole::TcpListener))
        {
            return Err(ValidationError::FdRoleMissing {
                role: "UdpSocket|TcpListener",
                message: "WorkerInit",
            });
        }
        // the data-plane threads' pairs: TUN queue k, then its socket
        let paired = self.fds.chunks(2).all(|p| {
            matches!(p, [FdRole::Tun, FdRole::UdpSocket])
                || (self.fds.len() == 2 && matches!(p, [FdRole::Tun, FdRole::TcpListener]))
        });
        if !paired {
            return Err(ValidationError::Field {
                field: "fds",
                why: "not pairs of Tun and UdpSocket (one per data-plane thread), or one Tun and one TcpListener".into(),
            });
        }
        Ok(())
    }

    /// Check that the received descriptors are what [`WorkerInit::fds`] says, position by
    /// position (`fstat`/`getsockopt`, see [`crate::fdcheck`]).
    pub fn check_fds(&self, fds: &[OwnedFd]) -> Result<(), FdCheckError> {
        fdcheck::check_fds(&self.fds, fds)
    }
}

impl Message for ParentToWorker {
    fn kind(&self) -> u16 {
        match self {
            ParentToWorker::Hello { .. } => KIND_P2W_HELLO,
            ParentToWorker::Init(_) => KIND_P2W_INIT,
            ParentToWorker::Shutdown => KIND_P2W_SHUTDOWN,
            ParentToWorker::SetVerb { .. } => KIND_P2W_SET_VERB,
            ParentToWorker::CrlUpdate { .. } => KIND_P2W_CRL_UPDATE,
            ParentToWorker::Query { .. } => KIND_P2W_QUERY,
            ParentToWorker::AuthVerdict { .. } => KIND_P2W_AUTH_VERDICT,
            ParentToWorker::SetPush { .. } => KIND_P2W_SET_PUSH,
            ParentToWorker::SetTls { .. } => KIND_P2W_SET_TLS,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ParentToWorker::Hello { .. } => "ParentToWorker::Hello",
            ParentToWorker::Init(_) => "ParentToWorker::Init",
            ParentToWorker::Shutdown => "ParentToWorker::Shutdown",
            ParentToWorker::SetVerb { .. } => "ParentToWorker::SetVerb",
            ParentToWorker::CrlUpdate { .. } => "ParentToWorker::CrlUpdate",
            ParentToWorker::Query { .. } => "ParentToWorker::Query",
            ParentToWorker::AuthVerdict { .. } => "ParentToWorker::AuthVerdict",
            ParentToWorker::SetPush { .. } => "ParentToWorker::SetPush",
            ParentToWorker::SetTls { .. } => "ParentToWorker::SetTls",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            ParentToWorker::Init(init) => init.fds.len(),
            ParentToWorker::Hello { .. }
            | ParentToWorker::Shutdown
            | ParentToWorker::SetVerb { .. }
            | ParentToWorker::CrlUpdate { .. }
            | ParentToWorker::Query { .. }
            | ParentToWorker::AuthVerdict { .. }
            | ParentToWorker::SetPush { .. }
            | ParentToWorker::SetTls { .. } => 0,
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ParentToWorker::Hello { version } => check_version(*version),
            ParentToWorker::Init(init) => init.validate(),
            ParentToWorker::Shutdown => Ok(()),
            ParentToWorker::SetVerb { level } => check_verb(*level),
            ParentToWorker::CrlUpdate { pem } => check_crl_pem(pem),
            ParentToWorker::Query { query, .. } => query.validate(),
            ParentToWorker::AuthVerdict { verdict, .. } => verdict.validate(),
            ParentToWorker::SetPush { push } => super::engine::check_push(push),
            ParentToWorker::SetTls { tls } => tls.validate(),
        }
    }
}

/// A CRL update: non-empty, capped, no NUL byte, holds an `X509 CRL` PEM block.
fn check_crl_pem(pem: &[u8]) -> Result<(), ValidationError> {
    check_len("pem", pem.len(), 1, MAX_CRL_PEM_LEN)?;
    if pem.contains(&0) {
        return Err(ValidationError::NulByte { field: "pem" });
    }
    let begin = CRL_PEM_BEGIN.as_bytes();
    if !pem.windows(begin.len()).any(|w| w == begin) {
        return Err(ValidationError::MissingPemBlock {
            field: "pem",
            label: CRL_PEM_BEGIN,
        });
    }
    Ok(())
}

/// Messages from the worker to the parent.
// Client events are rare control messages (one per connect/disconnect); their size in memory
// does not matter, boxing them would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerToParent {
    /// Reply to the parent's Hello.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        version: u16,
        /// The worker's pid as it sees it (> 0).
        pid: i32,
    },
    /// The worker is sandboxed, its runtime and seccomp filter are in place.
    Ready,
    /// The worker cannot continue and is about to exit.
    Fatal {
        /// Why (1..=1024 bytes, no control characters).
        reason: String,
    },
    /// The answer to `ParentToWorker::Query` with the same id.
    Reply {
        /// The query's id.
        id: u64,
        /// The answer.
        reply: WorkerReply,
    },
    /// A client waits for the parent's decision (`ParentToWorker::AuthVerdict`).
    AuthRequest(Box<ClientAuthRequest>),
    /// A client lifecycle event.
    Client(ClientEvent),
}

impl Message for WorkerToParent {
    fn kind(&self) -> u16 {
        match self {
            WorkerToParent::Hello { .. } => KIND_W2P_HELLO,
            WorkerToParent::Ready => KIND_W2P_READY,
            WorkerToParent::Fatal { .. } => KIND_W2P_FATAL,
            WorkerToParent::Reply { .. } => KIND_W2P_REPLY,
            WorkerToParent::AuthRequest(_) => KIND_W2P_AUTH_REQUEST,
            WorkerToParent::Client(_) => KIND_W2P_CLIENT,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            WorkerToParent::Hello { .. } => "WorkerToParent::Hello",
            WorkerToParent::Ready => "WorkerToParent::Ready",
            WorkerToParent::Fatal { .. } => "WorkerToParent::Fatal",
            WorkerToParent::Reply { .. } => "WorkerToParent::Reply",
            WorkerToParent::AuthRequest(_) => "WorkerToParent::AuthRequest",
            WorkerToParent::Client(_) => "WorkerToParent::Client",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            WorkerToParent::Hello { .. }
            | WorkerToParent::Ready
            | WorkerToParent::Fatal { .. }
            | WorkerToParent::Reply { .. }
            | WorkerToParent::AuthRequest(_)
            | WorkerToParent::Client(_) => 0,
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            WorkerToParent::Hello { version, pid } => {
                check_version(*version)?;
                check_pid(*pid)
            }
            WorkerToParent::Ready => Ok(()),
            WorkerToParent::Fatal { reason } => check_reason(reason),
            WorkerToParent::Reply { reply, .. } => reply.validate(),
            WorkerToParent::AuthRequest(r) => r.validate(),
            WorkerToParent::Client(e) => e.validate(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::msg::MAX_REASON_LEN;
    use crate::PROTOCOL_VERSION;
    use std::path::PathBuf;

    fn config() -> WorkerConfig {
        WorkerConfig {
            uid: 65534,
            gid: 65534,
            chroot_dir: PathBuf::from("/var/empty"),
            engine: crate::msg::engine::EngineConfig::minimal_for_tests(),
            verb: 3,
            seccomp: crate::msg::SeccompMode::Kill,
        }
    }

    #[test]
    fn init_validation() {
        let ok = WorkerInit {
            config: config(),
            fds: vec![FdRole::Tun, FdRole::UdpSocket],
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ParentToWorker::Init(Box::new(ok.clone())).fd_count(), 2);
        let mut no_tun = ok.clone();
        no_tun.fds = vec![FdRole::UdpSocket, FdRole::UdpSocket];
        assert!(matches!(
            no_tun.validate(),
            Err(ValidationError::FdRoleMissing { role: "Tun", .. })
        ));
        let mut no_transport = ok.clone();
        no_transport.fds = vec![FdRole::Tun, FdRole::Tun];
        assert!(no_transport.validate().is_err());
        let mut unix = ok.clone();
        unix.fds.push(FdRole::UnixListener);
        assert!(matches!(
            unix.validate(),
            Err(ValidationError::FdRoleNotAllowed { .. })
        ));
        let mut lanes = ok.clone();
        lanes.fds = [FdRole::Tun, FdRole::UdpSocket].repeat(8);
        assert!(lanes.validate().is_ok());
        for bad in [
            vec![FdRole::Tun, FdRole::UdpSocket, FdRole::Tun],
            vec![
                FdRole::Tun,
                FdRole::UdpSocket,
                FdRole::UdpSocket,
                FdRole::Tun,
            ],
            vec![
                FdRole::Tun,
                FdRole::TcpListener,
                FdRole::Tun,
                FdRole::TcpListener,
            ],
            vec![
                FdRole::Tun,
                FdRole::TcpListener,
                FdRole::Tun,
                FdRole::UdpSocket,
            ],
            vec![FdRole::UdpSocket, FdRole::Tun],
        ] {
            lanes.fds = bad.clone();
            assert!(
                matches!(
                    lanes.validate(),
                    Err(ValidationError::Field { field: "fds", .. })
                ),
                "{bad:?}"
            );
        }
        let mut too_many = ok.clone();
        too_many.fds = vec![FdRole::Tun; 17];
        assert!(matches!(
            too_many.validate(),
            Err(ValidationError::FdRoleCount { count: 17, .. })
        ));
        let mut root = ok.clone();
        root.config.uid = 0;
        assert!(root.validate().is_err());
        let mut rel = ok;
        rel.config.chroot_dir = PathBuf::from("empty");
        assert!(rel.validate().is_err());
    }

    #[test]
    fn scalar_validation() {
        assert!(ParentToWorker::Hello {
            version: PROTOCOL_VERSION
        }
        .validate()
        .is_ok());
        assert!(matches!(
            ParentToWorker::Hello {
                version: PROTOCOL_VERSION + 1
            }
            .validate(),
            Err(ValidationError::VersionMismatch { .. })
        ));
        assert!(ParentToWorker::SetVerb { level: 11 }.validate().is_ok());
        assert!(ParentToWorker::SetVerb { level: 12 }.validate().is_err());
        assert!(WorkerToParent::Hello {
            version: PROTOCOL_VERSION,
            pid: 0
        }
        .validate()
        .is_err());
        assert!(WorkerToParent::Fatal {
            reason: String::new()
        }
        .validate()
        .is_err());
        assert!(WorkerToParent::Fatal {
            reason: "x\ny".into()
        }
        .validate()
        .is_err());
        assert!(WorkerToParent::Fatal {
            reason: "x".repeat(MAX_REASON_LEN + 1)
        }
        .validate()
        .is_err());
    }

    #[test]
    fn crl_validation() {
        let pem = b"-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n".to_vec();
        assert!(ParentToWorker::CrlUpdate { pem: pem.clone() }
            .validate()
            .is_ok());
        assert!(ParentToWorker::CrlUpdate { pem: vec![] }
            .validate()
            .is_err());
        let mut nul = pem.clone();
        nul.push(0);
        assert!(ParentToWorker::CrlUpdate { pem: nul }.validate().is_err());
        assert!(ParentToWorker::CrlUpdate {
            pem: b"-----BEGIN CERTIFICATE-----".to_vec()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn kinds_are_distinct() {
        let all = [
            KIND_P2W_HELLO,
            KIND_P2W_INIT,
            KIND_P2W_SHUTDOWN,
            KIND_P2W_SET_VERB,
            KIND_P2W_CRL_UPDATE,
            KIND_P2W_QUERY,
            KIND_P2W_AUTH_VERDICT,
            KIND_P2W_SET_PUSH,
            KIND_P2W_SET_TLS,
            KIND_W2P_HELLO,
            KIND_W2P_READY,
            KIND_W2P_FATAL,
            KIND_W2P_REPLY,
            KIND_W2P_AUTH_REQUEST,
            KIND_W2P_CLIENT,
        ];
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
    }
}
