//! SIGHUP on a running daemon with stock clients connected: a changed push list and a new CRL
//! apply without disconnecting anyone (new clients get the new route, the revoked client is
//! refused), a broken configuration is rejected and the running one stays, and log rotation
//! (rename + SIGHUP) loses and duplicates no line. A rotated server certificate and key apply
//! to new handshakes AND to renegotiations of connected clients without disconnecting anyone.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;
use nix::sys::signal::Signal;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

#[test]
fn sighup_applies_push_and_crl_live_and_rejects_a_broken_config() {
    let Some(p) = require_privileged("reload_push_crl") else {
        return;
    };
    let dir = TestDir::new("reload_push_crl").expect("test dir");
    let net = NetPair::new(&p, "rl").expect("namespaces");
    let init = InitOptions {
        revoked_clients: vec!["client2".into()],
        ..InitOptions::with_clients(3)
    };
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &init, opts).expect("server dir");
    // start without the CRL; the reload adds it
    let original = std::fs::read_to_string(setup.server_conf()).expect("read conf");
    let crl_line = original
        .lines()
        .find(|l| l.starts_with("crl-verify "))
        .expect("generated config verifies a CRL")
        .to_string();
    let conf = dir.path().join("reload.conf");
    let without_crl: String = original
        .lines()
        .filter(|l| !l.starts_with("crl-verify "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&conf, &without_crl).expect("write conf");
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", &conf, &[]).expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let client = |name: &str| {
        start_stock_client(
            &dir,
            net.client_ns(),
            name,
            setup.profile(name).expect("profile"),
            &ClientOverrides::default(),
        )
        .expect("client")
    };
    let mut c1 = client("client1");
    c1.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client1 up");

    // new push + CRL, then SIGHUP
    std::fs::write(
        &conf,
        format!("{without_crl}push \"route 10.77.0.0 255.255.0.0\"\n{crl_line}\n"),
    )
    .expect("rewrite conf");
    server.kill(Signal::SIGHUP).expect("SIGHUP");
    server
        .wait_for_line(
            "configuration reloaded without disconnecting clients",
            SERVER_UP,
        )
        .expect("live reload");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10))
        .expect("client1 still passes traffic");
    assert_eq!(
        c1.count_lines(INIT_COMPLETE),
        1,
        "client1 was not reconnected"
    );

    let mut c3 = client("client3");
    c3.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client3 up");
    assert!(
        c3.log().contains("10.77.0.0"),
        "client3 got the new route: {}",
        tail(&c3.log(), 30)
    );
    assert!(
        !c1.log().contains("10.77.0.0"),
        "client1 keeps what it was pushed"
    );

    let mut c2 = client("client2");
    let line = server
        .wait_for_line("VERIFY ERROR", CLIENT_UP)
        .expect("revoked client refused after the reload");
    assert!(line.contains("CN=client2"), "{line}");
    c2.stop().expect("stop client2");
    assert_eq!(c2.count_lines(INIT_COMPLETE), 0);

    // a broken configuration is rejected; the running one stays
    std::fs::write(&conf, format!("{without_crl}no-such-directive-bulwark\n")).expect("break conf");
    server.kill(Signal::SIGHUP).expect("SIGHUP");
    let l = server
        .wait_for_line("SIGHUP: configuration rejected", SERVER_UP)
        .expect("rejected");
    assert!(l.contains("no-such-directive-bulwark"), "{l}");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("still serving");
    assert!(
        server.try_wait().expect("wait").is_none(),
        "daemon still running"
    );
    assert_eq!(c1.count_lines(INIT_COMPLETE), 1);
}

#[test]
fn log_rotation_by_rename_and_sighup_loses_nothing() {
    let Some(p) = require_privileged("reload_log_rotation") else {
        return;
    };
    let dir = TestDir::new("reload_log_rotation").expect("test dir");
    let net = NetPair::new(&p, "lr").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let log = dir.path().join("bulwark.log");
    let sock = dir.path().join("mgmt.sock");
    let extra = [
        format!("log-append {}", log.display()),
        format!("management {} unix", sock.display()),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    wait_file_contains(&log, INIT_COMPLETE, SERVER_UP).expect("file line");
    let mut c = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("client");
    c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client up");

    // sequence-numbered lines: every management command is written to the audit log line
    let mut m = UnixStream::connect(&sock).expect("connect management");
    m.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut send = |n: u32| {
        m.write_all(format!("kill rotation-seq-{n:04}\r\n").as_bytes())
            .expect("send");
        let mut b = [0u8; 4096];
        let _ = m.read(&mut b);
    };
    for n in 0..50 {
        send(n);
    }
    wait_file_contains(&log, "rotation-seq-0049", Duration::from_secs(10)).expect("file line");
    let rotated = dir.path().join("bulwark.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    server.kill(Signal::SIGHUP).expect("SIGHUP");
    wait_file_contains(&log, "reopened", Duration::from_secs(10)).expect("file line");
    for n in 50..100 {
        send(n);
    }
    wait_file_contains(&log, "rotation-seq-0099", Duration::from_secs(10)).expect("file line");
    let all = format!(
        "{}{}",
        std::fs::read_to_string(&rotated).expect("old"),
        std::fs::read_to_string(&log).expect("new")
    );
    for n in 0..100 {
        let needle = format!("rotation-seq-{n:04}\"");
        assert_eq!(all.matches(&needle).count(), 1, "{needle} exactly once");
    }
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("tunnel unaffected");
    assert_eq!(c.count_lines(INIT_COMPLETE), 1, "nobody disconnected");
}

#[test]
fn sighup_rotates_the_server_certificate_for_new_clients_and_renegotiations() {
    let Some(p) = require_privileged("reload_cert") else {
        return;
    };
    let dir = TestDir::new("reload_cert").expect("test dir");
    let net = NetPair::new(&p, "rc").expect("namespaces");
    let init = InitOptions::with_clients(2);
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &init, opts).expect("server dir");
    // a short renegotiation period (server side), so client1 renegotiates after the rotation
    let conf = dir.path().join("cert.conf");
    let base = std::fs::read_to_string(setup.server_conf()).expect("read conf");
    std::fs::write(&conf, format!("{base}reneg-sec 15\n")).expect("write conf");
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", &conf, &[]).expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let client = |name: &str| {
        start_stock_client(
            &dir,
            net.client_ns(),
            name,
            setup.profile(name).expect("profile"),
            &ClientOverrides::default(),
        )
        .expect("client")
    };
    let mut c1 = client("client1");
    c1.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client1 up");
    assert!(c1.log().contains("CN=server"), "{}", tail(&c1.log(), 20));

    // Rotate: a new certificate (another CN, same CA) and a new key in place, then SIGHUP.
    let new = setup.pki.issue_server("server2", 30).expect("issue");
    let paths = &setup.written.paths;
    std::fs::write(&paths.cert, &new.cert_pem).expect("write cert");
    std::fs::write(&paths.key, new.key_pem()).expect("write key");
    server.kill(Signal::SIGHUP).expect("SIGHUP");
    server
        .wait_for_line(
            "configuration reloaded without disconnecting clients",
            SERVER_UP,
        )
        .expect("live reload");
    server
        .wait_for_line("TLS settings reloaded", SERVER_UP)
        .expect("the worker took the new TLS settings");

    // A new client sees the new certificate.
    let mut c2 = client("client2");
    c2.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client2 up");
    assert!(
        c2.log().contains("CN=server2"),
        "client2 verified the new certificate: {}",
        tail(&c2.log(), 30)
    );
    // client1 renegotiates (reneg-sec 15) with the new certificate and key and stays connected.
    c1.wait_for_line("CN=server2", Duration::from_secs(45))
        .expect("client1 renegotiated against the new certificate");
    std::thread::sleep(Duration::from_secs(2));
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10))
        .expect("client1 still passes traffic");
    assert_eq!(
        c1.count_lines(INIT_COMPLETE),
        1,
        "client1 was not reconnected: {}",
        tail(&c1.log(), 30)
    );
    assert!(
        !c1.log().contains("TLS Error"),
        "renegotiation failed: {}",
        tail(&c1.log(), 30)
    );
}

/// Sends one management command on a fresh connection and returns what arrives within `wait`.
fn mgmt_once(sock: &Path, cmd: &str, wait: Duration) -> (UnixStream, String) {
    let mut m = UnixStream::connect(sock).expect("connect management");
    m.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    m.write_all(format!("{cmd}\r\n").as_bytes()).expect("send");
    let out = mgmt_read(&mut m, wait);
    (m, out)
}

fn mgmt_read(m: &mut UnixStream, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while Instant::now() < deadline {
        match m.read(&mut b) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
        if out.windows(2).filter(|w| w == b"\r\n").count() >= 2 {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn sighup_applies_management_roles_and_status_interval_live() {
    let Some(p) = require_privileged("reload_mgmt") else {
        return;
    };
    let dir = TestDir::new("reload_mgmt").expect("test dir");
    let net = NetPair::new(&p, "rm").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let sock = dir.path().join("mgmt.sock");
    let status = dir.path().join("status.log");
    let base = std::fs::read_to_string(setup.server_conf()).expect("read conf");
    let base: String = base
        .lines()
        .filter(|l| !l.starts_with("status "))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = dir.path().join("mgmt.conf");
    let write_conf = |role: &str, interval: u32| {
        std::fs::write(
            &conf,
            format!(
                "{base}management {} unix\nmanagement-default-role {role}\nstatus {} {interval}\n",
                sock.display(),
                status.display()
            ),
        )
        .expect("write conf")
    };
    write_conf("monitor", 3600);
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", &conf, &[]).expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let mut c = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("client");
    c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client up");

    // monitor: kill is refused
    let (mut old_session, out) = mgmt_once(&sock, "kill nosuchcn", Duration::from_secs(3));
    assert!(
        out.contains("ERROR: permission denied"),
        "monitor may not kill: {out:?}"
    );
    // the status file is written at start and then only hourly
    let first = std::fs::metadata(&status)
        .and_then(|m| m.modified())
        .expect("status file written at start");

    write_conf("admin", 1);
    server.kill(Signal::SIGHUP).expect("SIGHUP");
    server
        .wait_for_line(
            "configuration reloaded without disconnecting clients",
            SERVER_UP,
        )
        .expect("live reload");
    server
        .wait_for_line(
            "management access rules and status intervals reloaded",
            SERVER_UP,
        )
        .expect("the broker took the new rules");

    // a new connection gets the new default role: kill runs (and finds no such client)
    let (_, out) = mgmt_once(&sock, "kill nosuchcn", Duration::from_secs(3));
    assert!(
        out.contains("ERROR: common name 'nosuchcn' not found"),
        "admin runs kill: {out:?}"
    );
    // the session opened before the reload keeps the role it was given
    old_session
        .write_all(b"kill nosuchcn\r\n")
        .expect("send on the old session");
    let out = mgmt_read(&mut old_session, Duration::from_secs(3));
    assert!(out.contains("ERROR: permission denied"), "{out:?}");

    // the status file is now rewritten every second
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(&status)
            .and_then(|m| m.modified())
            .expect("status file");
        if now > first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status file not rewritten after the reload"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("tunnel unaffected");
    assert_eq!(c.count_lines(INIT_COMPLETE), 1, "nobody disconnected");
}
