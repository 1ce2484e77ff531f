//! Faults with a stock client connected: the broker killed (the tunnel never notices, management
//! is back within 2 s) and a full disk under the status file (traffic continues, the failure is
//! reported once, the recovery once).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn child_named(pid: u32, name: &str) -> Option<u32> {
    children_of(pid).into_iter().find(|k| {
        std::fs::read_to_string(format!("/proc/{k}/comm"))
            .map(|c| c.starts_with(name))
            .unwrap_or(false)
    })
}

/// `pid` over the management socket; `None` if no answer.
fn mgmt_pid(sock: &Path) -> Option<String> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"pid\r\n").ok()?;
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut b = [0u8; 1024];
    while Instant::now() < deadline {
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

struct Rig {
    _p: Privileged,
    dir: TestDir,
    net: NetPair,
    server: Proc,
    client: Proc,
    sock: PathBuf,
}

fn start(test: &str, extra: &[String]) -> Option<Rig> {
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
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
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
