//! Out-of-process tests of `bulwark_policy::demote` (custom harness: each scenario runs in a fresh,
//! single-threaded copy of this binary, because a demotion is irreversible and must run single-threaded).
//! Needs root; skips (and says so) otherwise, unless BULWARK_REQUIRE_PRIVILEGED=1 makes that a failure.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use bulwark_policy::procstatus::ProcStatus;
use bulwark_policy::{demote, DemoteError, DemotePlan, Identity};

const NOBODY: Identity = Identity {
    uid: 65534,
    gid: 65534,
};

fn plan(dir: &Path, identity: Identity) -> DemotePlan {
    DemotePlan {
        identity,
        chroot_dir: dir.to_owned(),
        expected_parent: Some(nix::unistd::getppid().as_raw()),
        nofile: 64,
    }
}

/// Runs inside the spawned child. Returns Err(message) on a failed expectation.
fn scenario(name: &str, dir: &Path) -> Result<(), String> {
    match name {
        "full" => {
            demote(&plan(dir, NOBODY)).map_err(|e| format!("demote failed: {e}"))?;
            // Independent checks on top of demote's own verification.
            if nix::unistd::setresuid(0.into(), 0.into(), 0.into()).is_ok() {
                return Err("setresuid(0) succeeded".into());
            }
            if std::fs::read_dir("/")
                .map_err(|e| e.to_string())?
                .next()
                .is_some()
            {
                return Err("/ not empty".into());
            }
            if std::path::Path::new("/proc").exists() {
                return Err("/proc visible".into());
            }
            let (soft, _) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE)
                    .map_err(|e| e.to_string())?;
            if soft != 0 {
                return Err("RLIMIT_CORE not 0".into());
            }
            // A runtime with threads must still be possible after the drop (no RLIMIT_NPROC trap).
            let t = std::thread::spawn(|| 7)
                .join()
                .map_err(|_| "thread failed".to_string())?;
            if t != 7 {
                return Err("thread result".into());
            }
            // Wait for the parent to inspect /proc/<pid>/status from outside.
            println!("READY");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        "root-uid" => match demote(&plan(dir, Identity { uid: 0, gid: 65534 })) {
            Err(DemoteError::RootUid) => Ok(()),
            other => Err(format!("expected RootUid, got {other:?}")),
        },
        "root-gid" => match demote(&plan(dir, Identity { uid: 65534, gid: 0 })) {
            Err(DemoteError::RootGid) => Ok(()),
            other => Err(format!("expected RootGid, got {other:?}")),
        },
        "threads" => {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let h = std::thread::spawn(move || rx.recv().ok());
            let r = demote(&plan(dir, NOBODY));
            drop(tx);
            let _ = h.join();
            match r {
                Err(DemoteError::MultiThreaded(2)) => Ok(()),
                other => Err(format!("expected MultiThreaded, got {other:?}")),
            }
        }
        "wrong-parent" => {
            let mut p = plan(dir, NOBODY);
            p.expected_parent = Some(1);
            match demote(&p) {
                Err(DemoteError::ParentGone { .. }) => Ok(()),
                other => Err(format!("expected ParentGone, got {other:?}")),
            }
        }
        "unsafe-dir" => match demote(&plan(dir, NOBODY)) {
            Err(DemoteError::ChrootUnsafe { .. }) => {
                // Nothing was changed: still root.
                if nix::unistd::geteuid().is_root() {
                    Ok(())
                } else {
                    Err("identity changed despite the error".into())
                }
            }
            other => Err(format!("expected ChrootUnsafe, got {other:?}")),
        },
        other => Err(format!("unknown scenario {other}")),
    }
}

fn run_child(name: &str, dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["--scenario", name])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scenario {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn run_full(dir: &Path) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["--scenario", "full"])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| e.to_string())?;
    let check = (|| -> Result<(), String> {
        if line.trim() != "READY" {
            return Err(format!("child said {line:?}"));
        }
        let st = ProcStatus::read_pid(pid).map_err(|e| e.to_string())?;
        if st.uids != [65534; 4] || st.gids != [65534; 4] || !st.groups.is_empty() {
            return Err(format!("ids: {st:?}"));
        }
        if st.cap_inh | st.cap_prm | st.cap_eff | st.cap_bnd | st.cap_amb != 0 {
            return Err(format!("capabilities remain: {st:?}"));
        }
        if !st.no_new_privs {
            return Err("NoNewPrivs not set".into());
        }
        let root = std::fs::read_link(format!("/proc/{pid}/root")).map_err(|e| e.to_string())?;
        let want = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
        if root != want {
            return Err(format!("root is {root:?}, expected {want:?}"));
        }
        Ok(())
    })();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"done\n");
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    check?;
    if !status.success() {
        return Err(format!("full scenario exited with {status}"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--scenario" {
        return match scenario(&args[2], Path::new(&args[3])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(m) => {
                eprintln!("{m}");
                ExitCode::FAILURE
            }
        };
    }
    // Top level (libtest-style flags such as --nocapture are ignored).
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("BULWARK_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            eprintln!("demote tests need root (BULWARK_REQUIRE_PRIVILEGED=1)");
            return ExitCode::FAILURE;
        }
        println!("demote tests skipped: not root");
        return ExitCode::SUCCESS;
    }
    let empty = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failures = 0;
    let set_mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let mut results = Vec::new();
    if let Err(e) = set_mode(empty.path(), 0o755) {
        eprintln!("chmod: {e}");
        return ExitCode::FAILURE;
    }
    results.push(("full", run_full(empty.path())));
    for name in ["root-uid", "root-gid", "threads", "wrong-parent"] {
        results.push((name, run_child(name, empty.path())));
    }
    // Unsafe directories: world-writable, not empty, not root-owned.
    let ww = tempfile::tempdir().ok();
    let nonempty = tempfile::tempdir().ok();
    let foreign = tempfile::tempdir().ok();
    match (&ww, &nonempty, &foreign) {
        (Some(ww), Some(ne), Some(fo)) => {
            let prep = (|| -> std::io::Result<()> {
                set_mode(ww.path(), 0o777)?;
                set_mode(ne.path(), 0o755)?;
                std::fs::write(ne.path().join("file"), b"x")?;
                set_mode(fo.path(), 0o755)?;
                std::os::unix::fs::chown(fo.path(), Some(65534), Some(65534))?;
                Ok(())
            })();
            if let Err(e) = prep {
                results.push(("unsafe-dir setup", Err(e.to_string())));
            } else {
                results.push((
                    "unsafe-dir world-writable",
                    run_child("unsafe-dir", ww.path()),
                ));
                results.push(("unsafe-dir not-empty", run_child("unsafe-dir", ne.path())));
                results.push((
                    "unsafe-dir not-root-owned",
                    run_child("unsafe-dir", fo.path()),
                ));
            }
        }
        _ => results.push(("unsafe-dir setup", Err("tempdir failed".into()))),
    }
    for (name, r) in results {
        match r {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failures += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
