//! The `bulwark` process model, checked from the outside.
//!
//! Privileged (skips without root unless `BULWARK_REQUIRE_PRIVILEGED=1`): `bulwark` runs inside a
//! fresh network namespace on a configuration from `bulwark init`; from `/proc` the test asserts three
//! processes, the children's ids, empty capability sets, `NoNewPrivs`, their chroot, the worker's TUN
//! and UDP descriptors; the TUN device's address; a `kill -9` of the worker yields a new worker while
//! the TUN device (ifindex, address) stays; SIGTERM ends everything with status 0 and removes the TUN.
//!
//! Unprivileged: `--help`, `--version`, argument errors, and `check-config` error output (file:line).
//! All tests need the workspace binaries built (`cargo build --workspace --bins`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulwark_tests::*;
use nix::sys::signal::Signal;

const UP: Duration = Duration::from_secs(20);
const SANDBOX_DIR: &str = "/run/bulwark/empty";

/// Fields of `/proc/PID/status`.
fn status(pid: i32) -> HashMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// `(pid, comm)` of every process whose parent is `ppid`.
fn children_of(ppid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // comm is in parentheses and may contain spaces: split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid)
            && rest.first() != Some(&"Z")
        {
            out.push((pid, comm));
        }
    }
    out.sort();
    out
}

fn child_named(ppid: i32, name: &str) -> Option<i32> {
    children_of(ppid)
        .into_iter()
        .find(|(_, c)| c == name)
        .map(|(p, _)| p)
}

fn fd_targets(pid: i32) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                v.push(t.to_string_lossy().into_owned());
            }
        }
    }
    v
}

/// Socket inodes bound to UDP `port` in the namespace of `pid` (`/proc/PID/net/udp{,6}`).
fn udp_inodes(pid: i32, port: u16) -> Vec<String> {
    let mut v = Vec::new();
    for f in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = cols.get(1) else { continue };
            let Some(p) = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            if p == port {
                if let Some(inode) = cols.get(9) {
                    v.push((*inode).to_string());
                }
            }
        }
    }
    v
}

fn assert_sandboxed(pid: i32, what: &str) {
    let st = status(pid);
    for key in ["Uid", "Gid"] {
        let ids: Vec<&str> = st
            .get(key)
            .map(|s| s.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(ids.len(), 4, "{what}: {key} = {:?}", st.get(key));
        assert!(
            ids.iter().all(|i| *i != "0"),
            "{what}: {key} contains 0: {ids:?}"
        );
    }
    assert_eq!(
        st.get("Groups").map(String::as_str),
        Some(""),
        "{what}: supplementary groups"
    );
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            st.get(key).map(String::as_str),
            Some("0000000000000000"),
            "{what}: {key}"
        );
    }
    assert_eq!(
        st.get("NoNewPrivs").map(String::as_str),
        Some("1"),
        "{what}: NoNewPrivs"
    );
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("readlink root");
    assert_eq!(root, PathBuf::from(SANDBOX_DIR), "{what}: chroot");
}

fn tun_link(ns: &str) -> Option<(String, String)> {
    let link = run(
        None,
        "ip",
        &["-n", ns, "-o", "link", "show", "dev", "tun0"],
        Duration::from_secs(5),
    )
    .ok()?;
    if !link.status.success() {
        return None;
    }
    let index = String::from_utf8_lossy(&link.stdout)
        .split(':')
        .next()?
        .trim()
        .to_string();
    let addr = run(
        None,
        "ip",
        &["-n", ns, "-o", "-4", "addr", "show", "dev", "tun0"],
        Duration::from_secs(5),
    )
    .ok()?;
    Some((index, String::from_utf8_lossy(&addr.stdout).into_owned()))
}

fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn processes_are_sandboxed_restarted_and_stopped() {
    let test = "e2e_processes";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("test dir");
    let ns = Netns::new(&p, "proc").expect("namespace");
    let srv = dir.path().join("server");
    let bulwark = bulwark_bin().expect("bulwark binary");
    run_ok(
        None,
        &bulwark,
        &["init".as_ref(), srv.as_os_str()],
        Duration::from_secs(60),
    )
    .expect("bulwark init");
    let conf = srv.join("server.conf");

    let mut server =
        start_bulwark_server(&dir, ns.name(), "bulwark", &conf, &[]).expect("start bulwark");
    server.wait_for_line(INIT_COMPLETE, UP).expect("bulwark up");
    let parent = i32::try_from(server.pid()).expect("pid");

    // Three processes: the parent (root) and its two sandboxed children.
    let kids = children_of(parent);
    let mut names: Vec<&str> = kids.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec!["bulwark-mgmt", "bulwark-worker"],
        "children: {kids:?}"
    );
    let worker = child_named(parent, "bulwark-worker").expect("worker process");
    let broker = child_named(parent, "bulwark-mgmt").expect("broker process");
    assert_eq!(
        status(parent)
            .get("Uid")
            .map(|s| s.split_whitespace().next() == Some("0")),
        Some(true)
    );
    assert_sandboxed(worker, "worker");
    assert_sandboxed(broker, "broker");

    // The worker holds the TUN device and the UDP socket bound to port 1194.
    let fds = fd_targets(worker);
    assert!(
        fds.iter().any(|t| t == "/dev/net/tun"),
        "worker fds: {fds:?}"
    );
    let inodes = udp_inodes(worker, 1194);
    assert!(
        !inodes.is_empty(),
        "no UDP socket on port 1194 in the namespace"
    );
    assert!(
        inodes
            .iter()
            .any(|i| fds.contains(&format!("socket:[{i}]"))),
        "worker does not hold the UDP socket (inodes {inodes:?}, fds {fds:?})"
    );
    // The broker holds neither.
    let bfds = fd_targets(broker);
    assert!(
        !bfds.iter().any(|t| t == "/dev/net/tun"),
        "broker fds: {bfds:?}"
    );

    let (ifindex, addr) = tun_link(ns.name()).expect("tun0 exists");
    assert!(addr.contains("inet 10.8.0.1/24"), "tun0 address: {addr}");

    // kill -9 of the worker: a new worker appears, the TUN device is untouched.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGKILL)
        .expect("kill worker");
    let new_worker = wait_until(Duration::from_secs(15), || {
        child_named(parent, "bulwark-worker").filter(|p| {
            *p != worker
                && !fd_targets(*p).is_empty()
                && status(*p).get("NoNewPrivs").map(String::as_str) == Some("1")
        })
    })
    .expect("a new worker process");
    server
        .wait_for_line("restarted and ready", UP)
        .expect("restart logged");
    assert_sandboxed(new_worker, "restarted worker");
    assert!(fd_targets(new_worker).iter().any(|t| t == "/dev/net/tun"));
    let (ifindex2, addr2) = tun_link(ns.name()).expect("tun0 still exists");
    assert_eq!(ifindex, ifindex2, "TUN ifindex changed");
    assert_eq!(addr, addr2, "TUN address changed");

    // SIGTERM: everything gone, TUN removed, exit status 0.
    server.kill(Signal::SIGTERM).expect("SIGTERM");
    let st = server
        .wait_timeout(Duration::from_secs(15))
        .expect("bulwark exits");
    assert!(st.success(), "exit status {st:?}\n{}", server.log());
    assert!(
        !Path::new(&format!("/proc/{new_worker}")).exists(),
        "worker survived"
    );
    assert!(
        !Path::new(&format!("/proc/{broker}")).exists(),
        "broker survived"
    );
    assert!(tun_link(ns.name()).is_none(), "tun0 still exists");
    assert!(
        server
            .log()
            .contains("SIGTERM[hard,] received, process exiting"),
        "{}",
        server.log()
    );
}

fn bulwark(args: &[&str]) -> std::process::Output {
    let bin = bulwark_bin().expect("bulwark binary (build with cargo build --workspace --bins)");
    run(None, bin, args, Duration::from_secs(30)).expect("run bulwark")
}

#[test]
fn help_version_and_argument_errors() {
    let out = bulwark(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Usage:") && text.contains("check-config") && text.contains("init DIR"),
        "{text}"
    );

    let out = bulwark(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("bulwark "));

    for args in [
        &["--config"][..],
        &["init"][..],
        &["init", "/nonexistent-x", "--rsa", "1024"][..],
        &[][..],
    ] {
        let out = bulwark(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("bulwark: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn check_config_reports_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = dir.path().join("srv");
    let out = bulwark(&["init", srv.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = srv.join("server.conf");
    let out = bulwark(&["check-config", "--config", good.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    let bad = dir.path().join("bad.conf");
    let text = std::fs::read_to_string(&good).expect("read server.conf");
    std::fs::write(
        &bad,
        format!("{text}no-such-directive 1\nport not-a-number\n"),
    )
    .expect("write bad.conf");
    let n = text.lines().count();
    let out = bulwark(&["check-config", "--config", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let b = bad.display().to_string();
    assert!(err.contains(&format!("{b}:{}:", n + 1)), "{err}");
    assert!(err.contains(&format!("{b}:{}:", n + 2)), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // The run command refuses the same file before touching anything (no root needed to get there).
    let out = bulwark(&["--config", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{b}:{}:", n + 1)));
}

/// A child killed by SIGSYS (what a seccomp violation looks like) is a security event: by default
/// the daemon stops with an error (TUN removed); with `--on-security-event restart` the child is
/// restarted instead.
#[test]
fn sigsys_is_a_security_event() {
    let test = "e2e_processes_sigsys";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("test dir");
    let ns = Netns::new(&p, "sys").expect("namespace");
    let srv = dir.path().join("server");
    let bulwark = bulwark_bin().expect("bulwark binary");
    run_ok(
        None,
        &bulwark,
        &["init".as_ref(), srv.as_os_str()],
        Duration::from_secs(60),
    )
    .expect("bulwark init");
    let conf = srv.join("server.conf");
    let conf_s = conf.to_str().expect("utf-8 path");

    // Default policy: stop.
    let mut server = Proc::spawn(
        &dir,
        "stop",
        Some(ns.name()),
        &bulwark,
        &["--config", conf_s],
    )
    .expect("start");
    server.wait_for_line(INIT_COMPLETE, UP).expect("bulwark up");
    let parent = i32::try_from(server.pid()).expect("pid");
    let worker = child_named(parent, "bulwark-worker").expect("worker");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGSYS).expect("SIGSYS");
    let st = server
        .wait_timeout(Duration::from_secs(15))
        .expect("bulwark exits");
    assert!(
        !st.success(),
        "daemon should fail after a security event\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("SECURITY EVENT: worker process") && log.contains("SIGSYS"),
        "{log}"
    );
    assert!(tun_link(ns.name()).is_none(), "tun0 still exists");

    // --on-security-event restart: the worker comes back.
    let mut server = Proc::spawn(
        &dir,
        "restart",
        Some(ns.name()),
        &bulwark,
        &["--config", conf_s, "--on-security-event", "restart"],
    )
    .expect("start");
    server.wait_for_line(INIT_COMPLETE, UP).expect("bulwark up");
    let parent = i32::try_from(server.pid()).expect("pid");
    let worker = child_named(parent, "bulwark-worker").expect("worker");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGSYS).expect("SIGSYS");
    server
        .wait_for_line("restarted and ready", UP)
        .expect("worker restarted");
    assert!(server.log().contains("SECURITY EVENT"));
    server.kill(Signal::SIGTERM).expect("SIGTERM");
    assert!(server
        .wait_timeout(Duration::from_secs(15))
        .expect("exit")
        .success());
}
