//! The broker control channel: parent ↔ management broker (`bulwark-mgmt`).
//!
//! Start-up protocol, as for the worker: `Hello` both ways (versions must match), then
//! `Init(BrokerInit)` with the management listeners (0..=16: the broker also runs without a
//! management interface, to render status files), then `Ready` or `Fatal`. Afterwards the parent
//! may send `SetVerb` and `Shutdown`.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::{check_pid, check_reason, check_roles, check_sandbox, check_version, FdRole};
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
}

impl BrokerConfig {
    /// Check every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_sandbox(self.uid, self.gid, &self.chroot_dir)?;
        check_verb(self.verb)
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
}

impl BrokerInit {
    const ALLOWED: [FdRole; 2] = [FdRole::TcpListener, FdRole::UnixListener];

    /// Check the configuration and the role list.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.config.validate()?;
        check_roles("BrokerInit", &self.fds, 0, &Self::ALLOWED)
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
}

impl Message for ParentToBroker {
    fn kind(&self) -> u16 {
        match self {
            ParentToBroker::Hello { .. } => KIND_P2B_HELLO,
            ParentToBroker::Init(_) => KIND_P2B_INIT,
            ParentToBroker::Shutdown => KIND_P2B_SHUTDOWN,
            ParentToBroker::SetVerb { .. } => KIND_P2B_SET_VERB,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ParentToBroker::Hello { .. } => "ParentToBroker::Hello",
            ParentToBroker::Init(_) => "ParentToBroker::Init",
            ParentToBroker::Shutdown => "ParentToBroker::Shutdown",
            ParentToBroker::SetVerb { .. } => "ParentToBroker::SetVerb",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            ParentToBroker::Init(init) => init.fds.len(),
            ParentToBroker::Hello { .. }
            | ParentToBroker::Shutdown
            | ParentToBroker::SetVerb { .. } => 0,
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ParentToBroker::Hello { version } => check_version(*version),
            ParentToBroker::Init(init) => init.validate(),
            ParentToBroker::Shutdown => Ok(()),
            ParentToBroker::SetVerb { level } => check_verb(*level),
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
}

impl Message for BrokerToParent {
    fn kind(&self) -> u16 {
        match self {
            BrokerToParent::Hello { .. } => KIND_B2P_HELLO,
            BrokerToParent::Ready => KIND_B2P_READY,
            BrokerToParent::Fatal { .. } => KIND_B2P_FATAL,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            BrokerToParent::Hello { .. } => "BrokerToParent::Hello",
            BrokerToParent::Ready => "BrokerToParent::Ready",
            BrokerToParent::Fatal { .. } => "BrokerToParent::Fatal",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            BrokerToParent::Hello { .. } | BrokerToParent::Ready | BrokerToParent::Fatal { .. } => {
                0
            }
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
        }
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
            },
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
