//! The irreversible privilege drop a sandboxed child performs on itself.
//!
//! [`demote`] must be called while the process is still single-threaded (before the tokio runtime is
//! built): `setresuid`/`setresgid` and capability changes are per-thread at the kernel level, and a
//! second thread would keep the old credentials. It refuses to run otherwise.
//!
//! Order (each step is an `INVARIANT:` in the code): parent-death signal + parent check; chroot into an
//! empty, root-owned, not group/other-writable directory + `chdir("/")`; `setgroups([])`;
//! `setresgid(g,g,g)`; drop the capability bounding set, the inheritable and the ambient sets (needs
//! CAP_SETPCAP, i.e. while still uid 0); `setresuid(u,u,u)` (the kernel clears permitted/effective);
//! clear the remaining sets explicitly; re-arm the parent-death signal (a credential change clears it);
//! `PR_SET_NO_NEW_PRIVS`; `PR_SET_DUMPABLE 0`; rlimits (`RLIMIT_CORE 0`, `RLIMIT_FSIZE 0`,
//! `RLIMIT_NOFILE` small). `RLIMIT_NPROC` is deliberately not set: it counts every process of the
//! target user system-wide (e.g. `nobody`) and would break the runtime's thread creation.
//! Finally a verification pass: every id is the target, no supplementary groups, every capability set
//! empty, `setuid(0)`/`setgid(0)` fail, `no_new_privs` set, not dumpable, `/` is the empty directory.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use caps::CapSet;
use nix::fcntl::{open, OFlag};
use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::identity::Identity;
use crate::procstatus::ProcStatus;

/// Everything [`demote`] needs; built by the child from the parent's Init message.
#[derive(Debug, Clone)]
pub struct DemotePlan {
    /// Target uid/gid (both non-zero).
    pub identity: Identity,
    /// The empty, root-owned directory to chroot into.
    pub chroot_dir: PathBuf,
    /// The pid the parent is expected to have (`getppid()` must equal it). `None`: only require that
    /// the parent is not init (i.e. has not died already).
    pub expected_parent: Option<i32>,
    /// `RLIMIT_NOFILE` (soft and hard) after the drop.
    pub nofile: u64,
}

/// Errors of the privilege drop. Any of them leaves the process in an undefined, partially demoted
/// state: the caller must exit at once.
#[derive(Debug, thiserror::Error)]
pub enum DemoteError {
    /// The target uid is 0.
    #[error("refusing to demote to uid 0")]
    RootUid,
    /// The target gid is 0.
    #[error("refusing to demote to gid 0")]
    RootGid,
    /// The process status could not be read (before the chroot).
    #[error("cannot read own process status: {0}")]
    Status(#[source] crate::procstatus::ProcStatusError),
    /// More than one thread exists.
    #[error("demote must run single-threaded, but the process has {0} threads")]
    MultiThreaded(u32),
    /// `PR_SET_PDEATHSIG` failed.
    #[error("cannot set the parent-death signal: {0}")]
    Pdeathsig(#[source] nix::Error),
    /// The parent is not the expected process (it died, or we were re-parented).
    #[error("parent process is gone (getppid() = {actual}, expected {expected})")]
    ParentGone {
        /// What getppid() returned.
        actual: i32,
        /// What was expected (`!1` when only "not init" was required).
        expected: String,
    },
    /// The chroot directory could not be opened.
    #[error("cannot open chroot directory {path}: {source}")]
    ChrootOpen {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// The chroot directory could not be inspected.
    #[error("cannot inspect chroot directory {path}: {source}")]
    ChrootInspect {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The chroot directory is unsafe (not a directory, not root-owned, writable by others, not empty).
    #[error("unsafe chroot directory {path}: {reason}")]
    ChrootUnsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `fchdir`/`chroot`/`chdir` failed.
    #[error("cannot chroot into {path}: {source}")]
    Chroot {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// `setgroups([])` failed.
    #[error("cannot clear supplementary groups: {0}")]
    Setgroups(#[source] nix::Error),
    /// `setresgid` failed.
    #[error("cannot set gid {gid}: {source}")]
    Setresgid {
        /// The target gid.
        gid: u32,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// `setresuid` failed.
    #[error("cannot set uid {uid}: {source}")]
    Setresuid {
        /// The target uid.
        uid: u32,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// Dropping a capability from the bounding set failed.
    #[error("cannot drop capability {cap} from the bounding set: {source}")]
    Bounding {
        /// The capability index.
        cap: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Clearing a capability set failed.
    #[error("cannot clear capability set {set}: {reason}")]
    ClearCaps {
        /// The set.
        set: &'static str,
        /// The caps crate's message.
        reason: String,
    },
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),
    /// `PR_SET_DUMPABLE` failed.
    #[error("cannot clear the dumpable flag: {0}")]
    Dumpable(#[source] nix::Error),
    /// `setrlimit` failed.
    #[error("cannot set {resource}: {source}")]
    Rlimit {
        /// The limit.
        resource: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// The verification pass found a privilege that survived.
    #[error("privilege drop verification failed: {0}")]
    Verify(String),
}

/// Applies `plan` to the calling process. See the module documentation for the exact order.
pub fn demote(plan: &DemotePlan) -> Result<(), DemoteError> {
    let Identity { uid, gid } = plan.identity;
    if uid == 0 {
        return Err(DemoteError::RootUid);
    }
    if gid == 0 {
        return Err(DemoteError::RootGid);
    }
    // INVARIANT: single-threaded. Credentials and capabilities are per-thread in the kernel; another
    // thread would keep root. /proc is still reachable here (before the chroot).
    let status = ProcStatus::read_self().map_err(DemoteError::Status)?;
    if status.threads != 1 {
        return Err(DemoteError::MultiThreaded(status.threads));
    }

    // INVARIANT: first arm the parent-death signal, THEN check the parent is alive: if the parent died
    // before the prctl, getppid() no longer matches; if it dies after, we get SIGKILL.
    arm_pdeathsig(plan.expected_parent)?;

    // INVARIANT: chroot while still root (needs CAP_SYS_CHROOT), into a directory verified through the
    // very fd we fchdir to (no path race), then chdir("/") so no reference outside the root remains.
    enter_chroot(&plan.chroot_dir)?;

    // INVARIANT: groups before gid before uid: after setresuid we no longer have CAP_SETGID.
    nix::unistd::setgroups(&[]).map_err(DemoteError::Setgroups)?;
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(|source| DemoteError::Setresgid { gid, source })?;

    // INVARIANT: the bounding set is dropped BEFORE setresuid: PR_CAPBSET_DROP needs CAP_SETPCAP in
    // the effective set, which the uid change removes. Inheritable and ambient go with it.
    drop_bounding_set()?;
    clear_set(CapSet::Inheritable, "inheritable")?;
    clear_set(CapSet::Ambient, "ambient")?;

    // INVARIANT: all three uids at once; with keep-caps off (never set here) the kernel clears the
    // permitted and effective sets when every uid leaves 0.
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(|source| DemoteError::Setresuid { uid, source })?;
    clear_set(CapSet::Effective, "effective")?;
    clear_set(CapSet::Permitted, "permitted")?;

    // INVARIANT: the credential change above cleared the parent-death signal; re-arm and re-check.
    arm_pdeathsig(plan.expected_parent)?;

    // INVARIANT: no_new_privs after the uid change (it would not stop it, but it must be in place
    // before anything else runs); dumpable 0 after the uid change, which resets it to suid_dumpable.
    prctl::set_no_new_privs().map_err(DemoteError::NoNewPrivs)?;
    prctl::set_dumpable(false).map_err(DemoteError::Dumpable)?;

    set_limit(Resource::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    set_limit(Resource::RLIMIT_FSIZE, 0, "RLIMIT_FSIZE")?;
    set_limit(Resource::RLIMIT_NOFILE, plan.nofile, "RLIMIT_NOFILE")?;

    verify(plan)
}

fn arm_pdeathsig(expected: Option<i32>) -> Result<(), DemoteError> {
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(DemoteError::Pdeathsig)?;
    let actual = nix::unistd::getppid().as_raw();
    match expected {
        Some(e) if e != actual => Err(DemoteError::ParentGone {
            actual,
            expected: e.to_string(),
        }),
        None if actual == 1 || actual == 0 => Err(DemoteError::ParentGone {
            actual,
            expected: "!1".into(),
        }),
        _ => Ok(()),
    }
}

/// Checks that `path` is a directory owned by root, not writable by group or others, and empty.
pub fn check_chroot_dir(path: &Path) -> Result<(), DemoteError> {
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| DemoteError::ChrootOpen {
        path: path.to_owned(),
        source,
    })?;
    check_dir_fd(path, fd.as_fd())
}

fn check_dir_fd(path: &Path, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), DemoteError> {
    let unsafe_dir = |reason: String| DemoteError::ChrootUnsafe {
        path: path.to_owned(),
        reason,
    };
    let st = nix::sys::stat::fstat(fd).map_err(|e| DemoteError::ChrootInspect {
        path: path.to_owned(),
        source: e.into(),
    })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(unsafe_dir("not a directory".into()));
    }
    if st.st_uid != 0 {
        return Err(unsafe_dir(format!("owned by uid {}, not root", st.st_uid)));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:o} is writable by group or others",
            st.st_mode & 0o7777
        )));
    }
    let proc_path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ));
    let mut entries =
        std::fs::read_dir(&proc_path).map_err(|source| DemoteError::ChrootInspect {
            path: path.to_owned(),
            source,
        })?;
    if let Some(entry) = entries.next() {
        let name = entry
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .map_err(|source| DemoteError::ChrootInspect {
                path: path.to_owned(),
                source,
            })?;
        return Err(unsafe_dir(format!("not empty (contains '{name}')")));
    }
    Ok(())
}

fn enter_chroot(path: &Path) -> Result<(), DemoteError> {
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| DemoteError::ChrootOpen {
        path: path.to_owned(),
        source,
    })?;
    check_dir_fd(path, fd.as_fd())?;
    let err = |source| DemoteError::Chroot {
        path: path.to_owned(),
        source,
    };
    nix::unistd::fchdir(&fd).map_err(err)?;
    nix::unistd::chroot(".").map_err(err)?;
    nix::unistd::chdir("/").map_err(err)?;
    Ok(())
}

fn drop_bounding_set() -> Result<(), DemoteError> {
    // Walk every index the kernel may know (cap_last_cap can exceed what the caps crate lists); the
    // kernel answers EINVAL past the last one.
    for cap in 0u32..64 {
        match crate::sys::capbset_drop(cap) {
            Ok(true) => {}
            Ok(false) => break,
            Err(source) => return Err(DemoteError::Bounding { cap, source }),
        }
    }
    Ok(())
}

fn clear_set(set: CapSet, name: &'static str) -> Result<(), DemoteError> {
    caps::clear(None, set).map_err(|e| DemoteError::ClearCaps {
        set: name,
        reason: e.to_string(),
    })
}

fn set_limit(resource: Resource, value: u64, name: &'static str) -> Result<(), DemoteError> {
    setrlimit(resource, value, value).map_err(|source| DemoteError::Rlimit {
        resource: name,
        source,
    })
}

fn verify(plan: &DemotePlan) -> Result<(), DemoteError> {
    let fail = |m: String| Err(DemoteError::Verify(m));
    let Identity { uid, gid } = plan.identity;
    let r = nix::unistd::getresuid().map_err(|e| DemoteError::Verify(format!("getresuid: {e}")))?;
    if [r.real, r.effective, r.saved]
        .iter()
        .any(|x| x.as_raw() != uid)
    {
        return fail(format!(
            "uids are {}/{}/{}, expected {uid}",
            r.real, r.effective, r.saved
        ));
    }
    let g = nix::unistd::getresgid().map_err(|e| DemoteError::Verify(format!("getresgid: {e}")))?;
    if [g.real, g.effective, g.saved]
        .iter()
        .any(|x| x.as_raw() != gid)
    {
        return fail(format!(
            "gids are {}/{}/{}, expected {gid}",
            g.real, g.effective, g.saved
        ));
    }
    let groups =
        nix::unistd::getgroups().map_err(|e| DemoteError::Verify(format!("getgroups: {e}")))?;
    if !groups.is_empty() {
        return fail(format!("supplementary groups remain: {groups:?}"));
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return fail("setuid(0) succeeded".into());
    }
    if nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
        return fail("setgid(0) succeeded".into());
    }
    for (set, name) in [
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Bounding, "bounding"),
    ] {
        let have =
            caps::read(None, set).map_err(|e| DemoteError::Verify(format!("read {name}: {e}")))?;
        if !have.is_empty() {
            return fail(format!("{name} capability set is not empty: {have:?}"));
        }
    }
    for cap in 0u32..64 {
        // Indices the caps crate does not know: the kernel answers EINVAL past cap_last_cap.
        match crate::sys::capbset_read(cap) {
            Ok(Some(true)) => return fail(format!("capability {cap} still in the bounding set")),
            Ok(Some(false)) => {}
            Ok(None) => break,
            Err(e) => return fail(format!("PR_CAPBSET_READ {cap}: {e}")),
        }
    }
    match prctl::get_no_new_privs() {
        Ok(true) => {}
        Ok(false) => return fail("no_new_privs is not set".into()),
        Err(e) => return fail(format!("PR_GET_NO_NEW_PRIVS: {e}")),
    }
    match prctl::get_dumpable() {
        Ok(false) => {}
        Ok(true) => return fail("process is still dumpable".into()),
        Err(e) => return fail(format!("PR_GET_DUMPABLE: {e}")),
    }
    match prctl::get_pdeathsig() {
        Ok(Some(Signal::SIGKILL)) => {}
        Ok(other) => return fail(format!("parent-death signal is {other:?}, not SIGKILL")),
        Err(e) => return fail(format!("PR_GET_PDEATHSIG: {e}")),
    }
    let mut root =
        std::fs::read_dir("/").map_err(|e| DemoteError::Verify(format!("read_dir(/): {e}")))?;
    if root.next().is_some() {
        return fail("the root directory is not empty: chroot not effective".into());
    }
    Ok(())
}
