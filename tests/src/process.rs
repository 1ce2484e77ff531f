//! Per-test scratch directories, long-running processes with captured logs, and run-to-completion
//! commands with a timeout.
//!
//! API:
//! - [`TestDir::new`]`(test_name)`: a fresh temporary directory (mode 0755, so daemons that drop to
//!   `nobody` can still read their CRL). On drop while the thread is panicking it prints every log
//!   registered with it (tail of each) to stderr; with `BULWARK_KEEP_TEST_DIRS=1` it is kept.
//! - [`Proc::spawn`]: start a program, optionally inside a network namespace (`ip netns exec NS`), in
//!   its own process group, with stdout+stderr appended to `DIR/<name>.log`.
//!   [`Proc::wait_for_line`] / [`Proc::wait_for_nth`] poll that log for a substring with a timeout and
//!   fail at once, with the log tail, if the process exits first. Dropping a `Proc` stops it
//!   (SIGTERM to the group, SIGKILL after 3 s).
//! - [`run`] / [`run_ok`]: run a command to completion with a timeout, capturing its output.
//!
//! Invariants: every wait is bounded by a caller-supplied timeout; a process the harness started is
//! always reaped (no zombies, no strays) when its `Proc` goes away.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Lines of each log printed when a test fails.
const DUMP_TAIL_LINES: usize = 300;
/// Poll interval of log waits.
const POLL: Duration = Duration::from_millis(50);

/// Errors of processes and commands.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Creating or preparing the per-test directory failed.
    #[error("creating the test directory for {test}: {source}")]
    TestDir {
        /// Test name.
        test: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Opening a log file failed.
    #[error("opening log {path}: {source}")]
    Log {
        /// Log path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Starting a program failed.
    #[error("starting {what}: {source}")]
    Spawn {
        /// Command line.
        what: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Waiting on a child failed.
    #[error("waiting for {what}: {source}")]
    Wait {
        /// Command line.
        what: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A log line did not appear in time.
    #[error("{what}: {needle:?} (occurrence {nth}) not seen within {secs:.1}s; log tail:\n{tail}")]
    Timeout {
        /// Process name.
        what: String,
        /// Awaited substring.
        needle: String,
        /// Awaited occurrence.
        nth: usize,
        /// Timeout in seconds.
        secs: f64,
        /// Last lines of the log.
        tail: String,
    },
    /// The process exited before the awaited line appeared.
    #[error("{what} exited ({status}) before printing {needle:?}; log tail:\n{tail}")]
    ExitedEarly {
        /// Process name.
        what: String,
        /// Exit status.
        status: ExitStatus,
        /// Awaited substring.
        needle: String,
        /// Last lines of the log.
        tail: String,
    },
    /// A process did not exit in time.
    #[error("{what} did not exit within {secs:.1}s")]
    NoExit {
        /// Process name.
        what: String,
        /// Timeout in seconds.
        secs: f64,
    },
    /// Sending a signal failed.
    #[error("sending {signal:?} to {what}: {source}")]
    Signal {
        /// Process name.
        what: String,
        /// The signal.
        signal: Signal,
        /// errno.
        source: nix::errno::Errno,
    },
    /// A run-to-completion command timed out (it was killed).
    #[error("{what} timed out after {secs:.1}s (killed); stdout: {stdout}; stderr: {stderr}")]
    CommandTimeout {
        /// Command line.
        what: String,
        /// Timeout.
        secs: f64,
        /// Captured stdout.
        stdout: String,
        /// Captured stderr.
        stderr: String,
    },
    /// A command exited unsuccessfully.
    #[error("{what} failed ({status}); stdout: {stdout}; stderr: {stderr}")]
    CommandFailed {
        /// Command line.
        what: String,
        /// Exit status.
        status: ExitStatus,
        /// Captured stdout.
        stdout: String,
        /// Captured stderr.
        stderr: String,
    },
}

/// A per-test scratch directory that dumps the registered logs if the test panics.
pub struct TestDir {
    name: String,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    logs: Arc<Mutex<Vec<(String, PathBuf)>>>,
}

impl TestDir {
    /// Creates `/tmp/bulwark-<test>-XXXX` with mode 0755.
    pub fn new(test_name: &str) -> Result<Self, ProcError> {
        let err = |source| ProcError::TestDir {
            test: test_name.to_string(),
            source,
        };
        let safe: String = test_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("bulwark-{safe}-"))
            .tempdir()
            .map_err(err)?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).map_err(err)?;
        let path = dir.path().to_path_buf();
        Ok(Self {
            name: test_name.to_string(),
            dir: Some(dir),
            path,
            logs: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The test name given to [`TestDir::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers a file to be dumped if the test fails (processes' logs are registered automatically).
    pub fn register_log(&self, label: &str, path: &Path) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push((label.to_string(), path.to_path_buf()));
        }
    }

    /// Prints the tail of every registered log to stderr.
    pub fn dump_logs(&self) {
        let logs = match self.logs.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        };
        eprintln!(
            "===== logs of {} (dir {}) =====",
            self.name,
            self.path.display()
        );
        for (label, path) in logs {
            let text = fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("<unreadable: {e}>"));
            eprintln!("----- {label} ({}) -----", path.display());
            eprintln!("{}", tail(&text, DUMP_TAIL_LINES));
        }
        eprintln!("===== end of logs of {} =====", self.name);
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if std::env::var_os("BULWARK_KEEP_TEST_DIRS").is_some_and(|v| v == "1") {
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                eprintln!("kept test directory {}", kept.display());
            }
        }
    }
}

/// Polls the file at `path` (every 100 ms) until it contains `needle` and returns its whole text;
/// a file that does not exist yet counts as empty. On timeout the error carries the last 30 lines.
pub fn wait_file_contains(
    path: &Path,
    needle: &str,
    timeout: Duration,
) -> Result<String, ProcError> {
    let start = Instant::now();
    loop {
        let text = fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        if start.elapsed() >= timeout {
            return Err(ProcError::Timeout {
                what: path.display().to_string(),
                needle: needle.to_string(),
                nth: 1,
                secs: timeout.as_secs_f64(),
                tail: tail(&text, 30),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

fn describe(program: &OsStr, args: &[OsString]) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn command_in(ns: Option<&str>, program: &OsStr, args: &[OsString]) -> (Command, String) {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.arg("netns").arg("exec").arg(ns).arg(program).args(args);
            (c, format!("[netns {ns}] {}", describe(program, args)))
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            (c, describe(program, args))
        }
    }
}

fn os_args<S: AsRef<OsStr>>(args: &[S]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// A long-running child process with its output in a log file.
pub struct Proc {
    name: String,
    what: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args` (inside `ns` if given) with stdout+stderr appended to `DIR/<name>.log`.
    pub fn spawn<S: AsRef<OsStr>>(
        dir: &TestDir,
        name: &str,
        ns: Option<&str>,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Result<Self, ProcError> {
        let args = os_args(args);
        let (mut cmd, what) = command_in(ns, program.as_ref(), &args);
        let log = dir.path().join(format!("{name}.log"));
        let log_err = |source| ProcError::Log {
            path: log.clone(),
            source,
        };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        dir.register_log(name, &log);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd.spawn().map_err(|source| ProcError::Spawn {
            what: what.clone(),
            source,
        })?;
        Ok(Self {
            name: name.to_string(),
            what,
            child,
            log,
            exited: None,
        })
    }

    /// The process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far (lossy UTF-8; empty if unreadable).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Non-blocking exit check.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcError> {
        if let Some(s) = self.exited {
            return Ok(Some(s));
        }
        let s = self.child.try_wait().map_err(|source| ProcError::Wait {
            what: self.what.clone(),
            source,
        })?;
        self.exited = s;
        Ok(s)
    }

    /// Waits until `needle` appears in the log; returns the first matching line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, ProcError> {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits until the log holds at least `nth` lines containing `needle`; returns the `nth` one.
    pub fn wait_for_nth(
        &mut self,
        needle: &str,
        nth: usize,
        timeout: Duration,
    ) -> Result<String, ProcError> {
        let nth = nth.max(1);
        let deadline = Instant::now() + timeout;
        loop {
            // Check exit first, then read: a line printed just before exiting is still seen.
            let exited = self.try_wait()?;
            let text = self.log();
            if let Some(line) = text.lines().filter(|l| l.contains(needle)).nth(nth - 1) {
                return Ok(line.to_string());
            }
            if let Some(status) = exited {
                return Err(ProcError::ExitedEarly {
                    what: self.name.clone(),
                    status,
                    needle: needle.to_string(),
                    tail: tail(&text, 40),
                });
            }
            if Instant::now() >= deadline {
                return Err(ProcError::Timeout {
                    what: self.name.clone(),
                    needle: needle.to_string(),
                    nth,
                    secs: timeout.as_secs_f64(),
                    tail: tail(&text, 40),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Number of log lines containing `needle` right now.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Sends `signal` to the process group (nothing if the process has already been reaped).
    pub fn kill(&mut self, signal: Signal) -> Result<(), ProcError> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pgid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        killpg(Pid::from_raw(pgid), signal).map_err(|source| ProcError::Signal {
            what: self.name.clone(),
            signal,
            source,
        })
    }

    /// Waits for exit with a timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, ProcError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(ProcError::NoExit {
                    what: self.name.clone(),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then SIGKILL after 3 s; always reaps. Returns the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus, ProcError> {
        self.kill(Signal::SIGTERM)?;
        match self.wait_timeout(Duration::from_secs(3)) {
            Ok(s) => Ok(s),
            Err(_) => {
                self.kill(Signal::SIGKILL)?;
                self.wait_timeout(Duration::from_secs(5))
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The group is only signalled while its leader is unreaped, so its id cannot have been
        // reused by an unrelated process. Stragglers of a leader that exited on its own are left to
        // the namespace teardown (`Netns` kills everything inside).
        if let Err(e) = self.stop() {
            eprintln!("harness: stopping {}: {e}", self.name);
        }
    }
}

fn read_pipe<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `program args` (inside `ns` if given) to completion; kills it after `timeout`.
/// A non-zero exit is not an error here (see [`run_ok`]).
pub fn run<S: AsRef<OsStr>>(
    ns: Option<&str>,
    program: impl AsRef<OsStr>,
    args: &[S],
    timeout: Duration,
) -> Result<Output, ProcError> {
    let args = os_args(args);
    let (mut cmd, what) = command_in(ns, program.as_ref(), &args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| ProcError::Spawn {
        what: what.clone(),
        source,
    })?;
    let out = read_pipe(child.stdout.take());
    let err = read_pipe(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProcError::Wait { what, source });
            }
        }
    };
    let status = match status {
        Some(s) => s,
        None => {
            let pgid = i32::try_from(child.id()).unwrap_or(i32::MAX);
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
            let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
            return Err(ProcError::CommandTimeout {
                what,
                secs: timeout.as_secs_f64(),
                stdout,
                stderr,
            });
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Like [`run`], but a non-zero exit (or death by signal) is an error carrying the output.
pub fn run_ok<S: AsRef<OsStr>>(
    ns: Option<&str>,
    program: impl AsRef<OsStr>,
    args: &[S],
    timeout: Duration,
) -> Result<Output, ProcError> {
    let program = program.as_ref();
    let out = run(ns, program, args, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        let (_, what) = command_in(ns, program, &os_args(args));
        Err(ProcError::CommandFailed {
            what,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// True if the status says the process was killed by `signal`.
pub fn killed_by(status: &ExitStatus, signal: Signal) -> bool {
    status.signal() == Some(signal as i32)
}

/// Opens a file for reading, for helpers that parse status files etc.
pub fn read_file(path: &Path) -> Result<String, ProcError> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|source| ProcError::Log {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(s)
}

/// The children of `pid`'s main thread (`/proc/PID/task/PID/children`); the daemon spawns its
/// children from its main thread.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The first child of `pid` whose command name starts with `name` (e.g. `bulwark-worker`).
pub fn child_named(pid: u32, name: &str) -> Option<u32> {
    children_of(pid).into_iter().find(|k| {
        std::fs::read_to_string(format!("/proc/{k}/comm"))
            .map(|c| c.starts_with(name))
            .unwrap_or(false)
    })
}

/// Sends `pid` on a management unix socket; the `SUCCESS: pid=N` line, or `None` when nothing
/// answers within 2 s (used to check that the management interface is reachable).
pub fn mgmt_pid(sock: &Path) -> Option<String> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"pid\r\n").ok()?;
    let mut got = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut b = [0u8; 1024];
    while std::time::Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => {
                got.push_str(&String::from_utf8_lossy(&b[..n]));
                if let Some(l) = got.lines().find(|l| l.starts_with("SUCCESS: pid=")) {
                    return Some(l.to_string());
                }
            }
            Err(_) => {}
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_line_sees_output_and_early_exit() {
        let dir = TestDir::new("proc_selftest").unwrap();
        let mut p = Proc::spawn(
            &dir,
            "echoer",
            None,
            "sh",
            &["-c", "echo one; echo two >&2; echo two again; sleep 30"],
        )
        .unwrap();
        assert_eq!(
            p.wait_for_line("one", Duration::from_secs(5)).unwrap(),
            "one"
        );
        assert_eq!(
            p.wait_for_nth("two", 2, Duration::from_secs(5)).unwrap(),
            "two again"
        );
        assert!(matches!(
            p.wait_for_line("never", Duration::from_millis(200)),
            Err(ProcError::Timeout { .. })
        ));
        let status = p.stop().unwrap();
        assert!(killed_by(&status, Signal::SIGTERM));

        let mut q = Proc::spawn(&dir, "quitter", None, "sh", &["-c", "echo bye; exit 3"]).unwrap();
        match q.wait_for_line("never", Duration::from_secs(10)) {
            Err(ProcError::ExitedEarly { status, tail, .. }) => {
                assert_eq!(status.code(), Some(3));
                assert!(tail.contains("bye"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn run_reports_failure_and_timeout() {
        let out = run_ok(None, "sh", &["-c", "echo hi"], Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert!(matches!(
            run_ok(None, "sh", &["-c", "echo no >&2; exit 1"], Duration::from_secs(5)),
            Err(ProcError::CommandFailed { stderr, .. }) if stderr == "no\n"
        ));
        let t0 = Instant::now();
        assert!(matches!(
            run(None, "sleep", &["30"], Duration::from_millis(300)),
            Err(ProcError::CommandTimeout { .. })
        ));
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn test_dir_is_world_readable() {
        let dir = TestDir::new("mode check").unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        assert!(dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("bulwark-mode_check-"));
    }
}
