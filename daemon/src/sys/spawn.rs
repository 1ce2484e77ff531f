//! fork + exec-by-fd of a child binary with a fixed descriptor layout.
//!
//! Between `fork` and `execveat` the child runs only async-signal-safe system calls on data prepared
//! before the fork (the parent may be multi-threaded): reset the signal mask and dispositions, move
//! its own process group, dup the mapped descriptors high, dup2 them onto their fixed numbers, mark
//! every other descriptor close-on-exec, and `execveat(exe, "", argv, envp, AT_EMPTY_PATH)`. An exec
//! failure is reported through a close-on-exec pipe (errno, 4 bytes); EOF on that pipe means the exec
//! happened.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What to execute and which descriptors the child gets.
pub struct ExecSpec<'a> {
    /// The binary, opened `O_PATH | O_CLOEXEC`.
    pub exe: BorrowedFd<'a>,
    /// `argv` (argv[0] first).
    pub argv: Vec<CString>,
    /// The complete environment (`NAME=value`).
    pub envp: Vec<CString>,
    /// `(descriptor in the parent, number in the child)`; every target must be >= 0 and distinct.
    pub fds: Vec<(BorrowedFd<'a>, RawFd)>,
}

/// A started child.
pub struct Spawned {
    /// Its pid.
    pub pid: i32,
    /// A pidfd for it (for race-free signalling and readiness polling).
    pub pidfd: OwnedFd,
}

/// Forks and execs `spec`. Returns once the exec succeeded (or with its errno).
pub fn spawn(spec: &ExecSpec<'_>) -> std::io::Result<Spawned> {
    let mut targets: Vec<RawFd> = spec.fds.iter().map(|&(_, t)| t).collect();
    targets.sort_unstable();
    targets.dedup();
    if targets.len() != spec.fds.len() || targets.first().is_some_and(|&t| t < 0) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let max_target = targets.last().copied().unwrap_or(2).max(2);
    let max_src = spec
        .fds
        .iter()
        .map(|(s, _)| s.as_raw_fd())
        .max()
        .unwrap_or(0);
    let base = max_target.max(max_src).max(spec.exe.as_raw_fd()) + 1;

    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let srcs: Vec<RawFd> = spec.fds.iter().map(|(s, _)| s.as_raw_fd()).collect();
    let dsts: Vec<RawFd> = spec.fds.iter().map(|&(_, t)| t).collect();
    let mut tmp: Vec<RawFd> = vec![-1; srcs.len()];
    let exe = spec.exe.as_raw_fd();
    let empty = c"";
    // Read before the fork: the child only runs raw system calls.
    let sigrtmin = libc::SIGRTMIN();

    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let err_w_raw = err_w.as_raw_fd();

    // SAFETY: fork() itself has no memory-safety preconditions; the child branch below only performs
    // async-signal-safe raw system calls on memory prepared before the fork (no allocation, no locks)
    // and ends in execveat or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: child of fork; see the module documentation. Every pointer passed refers to data
        // owned by the parent's stack/heap image, which the child has a private copy of.
        unsafe {
            let fail = |w: RawFd| -> ! {
                let e = *libc::__errno_location();
                let b = e.to_ne_bytes();
                libc::write(w, b.as_ptr().cast(), b.len());
                libc::_exit(127)
            };
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            for sig in 1..sigrtmin {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            // Own process group: a terminal's Ctrl-C goes to the parent only, which stops the children.
            libc::setpgid(0, 0);
            // The error pipe must not land on a target number: move it high first.
            let w = libc::fcntl(err_w_raw, libc::F_DUPFD_CLOEXEC, base);
            if w < 0 {
                fail(err_w_raw);
            }
            let exe_high = libc::fcntl(exe, libc::F_DUPFD_CLOEXEC, base);
            if exe_high < 0 {
                fail(w);
            }
            for i in 0..srcs.len() {
                let t = libc::fcntl(srcs[i], libc::F_DUPFD_CLOEXEC, base);
                if t < 0 {
                    fail(w);
                }
                tmp[i] = t;
            }
            for i in 0..dsts.len() {
                // dup2 clears FD_CLOEXEC on the new descriptor.
                if libc::dup2(tmp[i], dsts[i]) < 0 {
                    fail(w);
                }
            }
            let first = u32::try_from(max_target + 1).unwrap_or(u32::MAX);
            if libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) < 0 {
                fail(w);
            }
            // Descriptors 0..=max_target not in the map (other than 0..2) are closed outright.
            let mut fd = 0;
            while fd <= max_target {
                let mapped = dsts.contains(&fd);
                if !mapped && fd > 2 {
                    libc::close(fd);
                }
                fd += 1;
            }
            libc::syscall(
                libc::SYS_execveat,
                exe_high,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            fail(w);
        }
    }
    drop(err_w);
    let mut buf = [0u8; 4];
    let mut file = std::fs::File::from(err_r);
    let mut got = 0;
    loop {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == 4 {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 4 {
        // The child reported an exec failure and exits 127: reap it.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
    }
    // SAFETY: pidfd_open takes a pid and flags; the pid is our own unreaped child, so it cannot have
    // been recycled.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let pidfd =
        RawFd::try_from(pidfd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned { pid, pidfd })
}

/// `pidfd_send_signal(pidfd, sig)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> std::io::Result<()> {
    // SAFETY: integer arguments and a null siginfo pointer, which the syscall accepts.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::fd::AsFd;

    #[test]
    fn exec_by_fd_with_fixed_layout_and_empty_env() {
        let sh = nix::fcntl::open(
            "/bin/sh",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // A descriptor that must NOT reach the child (not close-on-exec in the parent).
        let leak = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        // The descriptors are read from outside once the child has become `sleep`: a listing
        // made by the shell itself would also show the pipes and saved descriptors the shell
        // holds for a moment while it runs a pipeline or a redirection.
        let script = "echo \"[${FOO-unset}]\" >&5; exec sleep 30";
        let spec = ExecSpec {
            exe: sh.as_fd(),
            argv: vec![c"sh".into(), c"-c".into(), CString::new(script).unwrap()],
            envp: vec![c"PATH=/usr/bin:/bin".into()],
            fds: vec![(w.as_fd(), 5)],
        };
        let child = spawn(&spec).unwrap();
        drop(w);
        drop(leak);
        let mut line = String::new();
        std::io::BufReader::new(std::fs::File::from(r))
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "[unset]\n");
        let proc_dir = format!("/proc/{}", child.pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(format!("{proc_dir}/comm")).unwrap() != "sleep\n" {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never became sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut fds: Vec<i32> = std::fs::read_dir(format!("{proc_dir}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        fds.sort_unstable();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child.pid), None).unwrap();
        assert_eq!(
            st,
            nix::sys::wait::WaitStatus::Signaled(
                nix::unistd::Pid::from_raw(child.pid),
                nix::sys::signal::Signal::SIGKILL,
                false
            )
        );
        assert_eq!(fds, [0, 1, 2, 5]);
    }

    #[test]
    fn exec_failure_is_reported() {
        let f = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let spec = ExecSpec {
            exe: f.as_fd(),
            argv: vec![c"x".into()],
            envp: vec![],
            fds: vec![],
        };
        assert!(spawn(&spec).is_err());
    }
}
