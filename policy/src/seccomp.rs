//! Seccomp confinement of the sandboxed children.
//!
//! The policies are commented JSON files (`policy/seccomp/worker.json`, `broker.json`, seccompiler's
//! format) compiled to BPF at build time by `build.rs` for each [`Mode`]. Each role installs three
//! filters on all of its threads (TSYNC):
//! 1. the allowlist: listed syscalls are allowed, anything else gets the mode's action (kill the process,
//!    trap with SIGSYS, or log); `mmap`/`mprotect` are allowed only without `PROT_EXEC`;
//! 2. an overlay answering `open`/`openat` with `EACCES` (the process has no filesystem; libraries that
//!    probe files get a clean error instead of a kill);
//! 3. an overlay answering `clone3` with `ENOSYS` (glibc then falls back to `clone`, which the allowlist
//!    kills: no thread may be created after the filter).
//!
//! The kernel applies the most restrictive result of all filters, so an overlay can only turn an
//! allowed call into an error, never allow a forbidden one.
//!
//! [`install`] is the last step before a child's event loop; see the `INVARIANT:` at its call sites.

use std::fmt;

use seccompiler::{apply_filter_all_threads, sock_filter};

include!(concat!(env!("OUT_DIR"), "/filters.rs"));

/// Which process is being confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `bulwark-worker` (faces the internet).
    Worker,
    /// `bulwark-mgmt` (faces local management clients).
    Broker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Broker => "broker",
        }
    }
}

/// Enforcement mode (`bulwark --seccomp MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// A forbidden syscall kills the process (the default).
    Kill,
    /// A forbidden syscall raises SIGSYS; the handler reports it and the process exits.
    Trap,
    /// Forbidden syscalls are allowed and logged by the kernel (audit). Not a sandbox.
    Log,
    /// No filter. Not a sandbox.
    Off,
}

impl Mode {
    /// Parses `kill|trap|log|off`.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "kill" => Mode::Kill,
            "trap" => Mode::Trap,
            "log" => Mode::Log,
            "off" => Mode::Off,
            _ => return None,
        })
    }

    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kill => "kill",
            Mode::Trap => "trap",
            Mode::Log => "log",
            Mode::Off => "off",
        }
    }

    /// True for the modes that do not confine (`log`, `off`): callers print a loud warning.
    pub fn is_unconfined(self) -> bool {
        matches!(self, Mode::Log | Mode::Off)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Installing a filter failed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The kernel refused a filter.
    #[error("cannot install the {role} seccomp filter ({which}): {source}")]
    Install {
        /// role
        role: &'static str,
        /// which of the three filters
        which: &'static str,
        /// cause
        #[source]
        source: seccompiler::Error,
    },
    /// The SIGSYS handler could not be installed (trap mode).
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[source] nix::Error),
}

/// One compiled BPF program as `(code, jt, jf, k)` instructions.
type RawProgram = &'static [(u16, u8, u8, u32)];

fn program(raw: RawProgram) -> Vec<sock_filter> {
    raw.iter()
        .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
        .collect()
}

fn filters(role: Role, mode: Mode) -> Option<[(&'static str, RawProgram); 3]> {
    Some(match (role, mode) {
        (_, Mode::Off) => return None,
        (Role::Worker, Mode::Kill) => [
            ("allowlist", WORKER_KILL),
            ("open overlay", WORKER_OVERLAY_KILL),
            ("clone3 overlay", WORKER_CLONE3_KILL),
        ],
        (Role::Worker, Mode::Trap) => [
            ("allowlist", WORKER_TRAP),
            ("open overlay", WORKER_OVERLAY_TRAP),
            ("clone3 overlay", WORKER_CLONE3_TRAP),
        ],
        (Role::Worker, Mode::Log) => [
            ("allowlist", WORKER_LOG),
            ("open overlay", WORKER_OVERLAY_LOG),
            ("clone3 overlay", WORKER_CLONE3_LOG),
        ],
        (Role::Broker, Mode::Kill) => [
            ("allowlist", BROKER_KILL),
            ("open overlay", BROKER_OVERLAY_KILL),
            ("clone3 overlay", BROKER_CLONE3_KILL),
        ],
        (Role::Broker, Mode::Trap) => [
            ("allowlist", BROKER_TRAP),
            ("open overlay", BROKER_OVERLAY_TRAP),
            ("clone3 overlay", BROKER_CLONE3_TRAP),
        ],
        (Role::Broker, Mode::Log) => [
            ("allowlist", BROKER_LOG),
            ("open overlay", BROKER_OVERLAY_LOG),
            ("clone3 overlay", BROKER_CLONE3_LOG),
        ],
    })
}

/// Installs the role's filters on every thread of the calling process. `no_new_privs` must already be
/// set (the demote step does that). In [`Mode::Trap`] a SIGSYS handler is installed first.
pub fn install(role: Role, mode: Mode) -> Result<(), SeccompError> {
    let Some(set) = filters(role, mode) else {
        return Ok(());
    };
    if mode == Mode::Trap {
        crate::sys::install_sigsys_reporter(role == Role::Worker).map_err(SeccompError::Handler)?;
    }
    // Overlays first: each filter installed later is evaluated too, and the most restrictive result
    // wins, so the order only matters for readability.
    for (which, raw) in set.iter().rev() {
        apply_filter_all_threads(&program(raw)).map_err(|source| SeccompError::Install {
            role: role.name(),
            which,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_has_compiled_filters() {
        for role in [Role::Worker, Role::Broker] {
            for mode in [Mode::Kill, Mode::Trap, Mode::Log] {
                let set = filters(role, mode).unwrap();
                assert!(set[0].1.len() > 40, "allowlist compiled");
                assert!(!set[1].1.is_empty() && !set[2].1.is_empty());
            }
            assert!(filters(role, Mode::Off).is_none());
        }
        assert_ne!(WORKER_KILL, WORKER_TRAP);
        assert_eq!(Mode::parse("kill"), Some(Mode::Kill));
        assert_eq!(Mode::parse("KILL"), None);
        assert!(
            Mode::Off.is_unconfined() && Mode::Log.is_unconfined() && !Mode::Kill.is_unconfined()
        );
    }
}
