#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
//! Privilege-drop toolkit shared by the `bulwark` parent and its sandboxed children.
//!
//! API overview:
//! - [`sanitize`]: [`sanitize::close_inherited_fds`] closes every inherited descriptor above 2 except a
//!   keep-list; [`sanitize::clear_environment`] removes every environment variable not on an allowlist.
//!   Both are meant for process start-up, while the process is still single-threaded.
//! - [`identity`]: resolves the configured `user`/`group` names to numeric ids in the PARENT
//!   ([`identity::resolve`]); never yields root. The child only ever sees numbers ([`Identity`]).
//! - [`demote`]: the irreversible, ordered privilege drop a child runs on itself while single-threaded:
//!   pdeathsig, chroot into an empty root-owned directory, groups, gid, capability bounding set, uid,
//!   every capability set, `no_new_privs`, not dumpable, rlimits, then a verification pass.
//! - [`peercred`]: `SO_PEERCRED` / `SO_PEERGROUPS` of a connected unix socket (for the management broker).
//! - [`procstatus`]: parsing `/proc/<pid>/status` fields (capabilities, ids, `NoNewPrivs`), used by the
//!   verification pass and by tests that inspect other processes.
//!
//! Invariants: nothing in this crate ever returns success for a partially applied privilege drop; any
//! failure of [`demote::demote`] is returned as an error and the caller must exit.
//! - [`seccomp`]: the build-time compiled seccomp policies of the worker and the broker and their
//!   installation (TSYNC) in `kill`, `trap` or `log` mode.

pub mod demote;
pub mod identity;
pub mod peercred;
pub mod procstatus;
pub mod sanitize;
pub mod seccomp;
mod sys;

pub use demote::{demote, DemoteError, DemotePlan};
pub use identity::{resolve, resolve_broker, Identity, IdentityError, ResolvedIdentity};
