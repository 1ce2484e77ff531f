//! Faults with a stock client connected: the broker killed (the tunnel never notices, management
//! is back within 2 s) and a full disk under the status file (traffic continues, the failure is
//! reported once, the recovery once).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

struct Rig {
    _p: Privileged,
    dir: TestDir,
    net: NetPair,
    server: Proc,
    client: Proc,
    sock: PathBuf,
}

fn start(test: &str, extra: &[String]) -> Option<Rig> {
    start_logging_to(test, extra, None)
}

/// Waits until `needle` is in the file at `path` (the daemon's `log` file).
fn wait_in_file(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// As [`start`]; with `log_file`, the daemon logs there (`log FILE`) and start-up is awaited in it.
fn start_logging_to(test: &str, extra: &[String], log_file: Option<&Path>) -> Option<Rig> {
    let p = require_privileged(test)?;
    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, "ft").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let sock = dir.path().join("mgmt.sock");
    let mut lines = vec![format!("management {} unix", sock.display())];
    lines.extend(extra.iter().cloned());
    if let Some(l) = log_file {
        lines.push(format!("log {}", l.display()));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    match log_file {
        Some(l) => assert!(wait_in_file(l, INIT_COMPLETE, SERVER_UP), "up"),
        None => {
            server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
        }
    }
    let mut client = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("client");
    client
        .wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client up");
    Some(Rig {
        _p: p,
        dir,
        net,
        server,
        client,
        sock,
    })
}

#[test]
fn broker_killed_tunnel_unaffected_management_back_quickly() {
    let Some(rig) = start("faults_broker_killed", &[]) else {
        return;
    };
    assert!(mgmt_pid(&rig.sock).is_some(), "management answers before");
    let broker = child_named(rig.server.pid(), "bulwark-mgmt").expect("broker pid");
    // a bounded fast ping through the tunnel while the broker dies
    let flood = std::thread::spawn({
        let ns = rig.net.client_ns().to_string();
        move || {
            run(
                Some(&ns),
                "ping",
                &["-q", "-i", "0.01", "-c", "400", "-W", "1", "10.8.0.1"],
                Duration::from_secs(30),
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(broker).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill broker");
    let mut back = None;
    while killed_at.elapsed() < Duration::from_secs(5) {
        if let Some(l) = mgmt_pid(&rig.sock) {
            back = Some((killed_at.elapsed(), l));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (after, line) = back.expect("management answers again");
    assert!(
        after <= Duration::from_secs(2) + Duration::from_millis(600),
        "management back after {after:?}"
    );
    assert_eq!(line, format!("SUCCESS: pid={}", rig.server.pid()));
    let out = flood.join().expect("ping thread").expect("ping ran");
    assert!(
        out.contains(" 0% packet loss"),
        "no packet lost while the broker was down: {out}"
    );
    assert_eq!(
        rig.client.count_lines(INIT_COMPLETE),
        1,
        "client never noticed"
    );
    let _ = &rig.dir;
}

/// A tiny tmpfs at `dir/full`, unmounted on drop.
fn tiny_tmpfs(dir: &TestDir) -> (PathBuf, Mount) {
    let full = dir.path().join("full");
    std::fs::create_dir(&full).expect("mkdir");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(ok.success(), "mount tmpfs");
    (full.clone(), Mount(full))
}

/// Fills the file system holding `dir` with `dir/filler`.
fn fill(dir: &Path) {
    let _ = run(
        None,
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", dir.join("filler").display()),
            "bs=1k",
        ],
        Duration::from_secs(10),
    );
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_disk_for_the_status_file_is_reported_once() {
    let test = "faults_full_disk";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let _ = p;
    // the tmpfs lives in the test dir; mounted before the daemon starts
    let pre = TestDir::new("faults_full_disk_mnt").expect("dir");
    let full = pre.path().join("full");
    std::fs::create_dir(&full).expect("mkdir");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(ok.success(), "mount tmpfs");
    let _m = Mount(full.clone());
    let status = full.join("status.txt");
    let Some(mut rig) = start(test, &[format!("status {} 1", status.display())]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&status)
        .unwrap_or_default()
        .contains("client1")
    {
        assert!(Instant::now() < deadline, "status file written");
        std::thread::sleep(Duration::from_millis(100));
    }
    // fill the file system
    let _ = run(
        None,
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", full.join("filler").display()),
            "bs=4k",
        ],
        Duration::from_secs(10),
    );
    rig.server
        .wait_for_line("cannot write status file", Duration::from_secs(10))
        .expect("failure reported");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rig.server.count_lines("cannot write status file"),
        1,
        "reported once, not every second"
    );
    ping(rig.net.client_ns(), "10.8.0.1", 3, Duration::from_secs(10)).expect("tunnel unaffected");
    std::fs::remove_file(full.join("filler")).expect("free space");
    rig.server
        .wait_for_line("written again", Duration::from_secs(10))
        .expect("recovery reported");
    assert!(rig.server.try_wait().expect("wait").is_none());
}

/// The log file and the status file on a full disk: traffic continues and the parent stays up;
/// lines written meanwhile are lost (the failure cannot be reported in the log that is full: the
/// test prints what reached stderr), and logging resumes once space is free.
#[test]
fn full_disk_for_the_log_file_keeps_the_tunnel_up() {
    let test = "faults_full_log";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let _ = p;
    let pre = TestDir::new("faults_full_log_mnt").expect("dir");
    let (full, _m) = tiny_tmpfs(&pre);
    let log = full.join("bulwark.log");
    let status = full.join("status.txt");
    let Some(mut rig) = start_logging_to(
        test,
        &[format!("status {} 1", status.display()), "verb 3".into()],
        Some(&log),
    ) else {
        return;
    };
    let parent = nix::unistd::Pid::from_raw(i32::try_from(rig.server.pid()).expect("pid"));
    fill(&full);
    let before = std::fs::metadata(&log).expect("log").len();
    // SIGUSR2 prints the status into the log: lines that cannot be written
    // (a few go into the slack of the file's last page; the rest are lost)
    for _ in 0..15 {
        nix::sys::signal::kill(parent, nix::sys::signal::Signal::SIGUSR2).expect("SIGUSR2");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run(
        Some(rig.net.client_ns()),
        "ping",
        &["-q", "-i", "0.05", "-c", "40", "-W", "1", "10.8.0.1"],
        Duration::from_secs(20),
    )
    .expect("ping");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains(" 0% packet loss"), "tunnel unaffected: {out}");
    assert!(rig.server.try_wait().expect("wait").is_none(), "parent up");
    assert!(mgmt_pid(&rig.sock).is_some(), "management answers");
    let after = std::fs::metadata(&log).expect("log").len();
    let stderr = rig.server.log();
    let lists = |t: &str| t.matches("CLIENT LIST").count();
    let listed_while_full = lists(&std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        listed_while_full < 16,
        "lines are lost while the disk is full ({listed_while_full} status prints reached it)"
    );
    let enospc = stderr.matches("No space left on device").count();
    eprintln!(
        "log file {before} -> {after} bytes while full; {enospc} ENOSPC reports on the parent's \
         stderr:\n{}",
        tail(&stderr, 4)
    );
    assert_eq!(enospc, 1, "the write failure is reported once on stderr");
    // space again: logging resumes
    std::fs::remove_file(full.join("filler")).expect("free space");
    nix::sys::signal::kill(parent, nix::sys::signal::Signal::SIGUSR2).expect("SIGUSR2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lists(&std::fs::read_to_string(&log).unwrap_or_default()) <= listed_while_full {
        assert!(
            Instant::now() < deadline,
            "the status printed after the disk has space again reaches the log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("log writes resumed;") && text.contains("line(s) were lost"),
        "the recovery and the number of lost lines are reported in the log"
    );
    eprintln!(
        "status prints in the log: {listed_while_full} of 15 while full, then logging resumed"
    );
    assert!(rig.server.try_wait().expect("wait").is_none(), "parent up");
}
