//! [`WorkerConfig`]: everything the worker needs from the configuration, sent in
//! [`ParentToWorker::Init`](super::ParentToWorker::Init).
//!
//! The integrator extends this struct with the worker's share of the OpenVPN options; every
//! added field gets a check in [`WorkerConfig::validate`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::check_sandbox;
use crate::validate::{check_verb, ValidationError};

/// Seccomp enforcement mode of a sandboxed child (`bulwark --seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompMode {
    /// forbidden syscalls kill the process
    Kill,
    /// forbidden syscalls raise SIGSYS, reported then fatal
    Trap,
    /// forbidden syscalls are only logged (no confinement)
    Log,
    /// no filter (no confinement)
    Off,
}

impl SeccompMode {
    /// Parses `kill|trap|log|off`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "kill" => SeccompMode::Kill,
            "trap" => SeccompMode::Trap,
            "log" => SeccompMode::Log,
            "off" => SeccompMode::Off,
            _ => return None,
        })
    }

    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Kill => "kill",
            SeccompMode::Trap => "trap",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        }
    }
}

/// The worker's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// User id the worker drops to (never 0).
    pub uid: u32,
    /// Group id the worker drops to (never 0); it keeps no supplementary groups.
    pub gid: u32,
    /// Empty directory the worker chroots into (absolute, no `..`).
    pub chroot_dir: PathBuf,
    /// OpenVPN `verb` level (0..=11): records above it are not sent to the parent.
    pub verb: u8,
    /// The protocol engine's configuration.
    pub engine: super::engine::EngineConfig,
    /// Seccomp enforcement.
    pub seccomp: SeccompMode,
}

impl WorkerConfig {
    /// Check every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_sandbox(self.uid, self.gid, &self.chroot_dir)?;
        check_verb(self.verb)?;
        self.engine.validate()
    }
}
