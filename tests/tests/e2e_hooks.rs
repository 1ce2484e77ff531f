//! The parent's client hooks with stock OpenVPN 2.6 clients: client-config-dir (static address,
//! per-client push, `disable`), auth-user-pass-verify (accept / refuse), learn-address and
//! client-disconnect scripts, ifconfig-pool-persist. Scripts run as the unprivileged `user`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

fn open_dir(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

#[test]
fn ccd_scripts_and_pool_persist() {
    let Some(p) = require_privileged("hooks_ccd_scripts") else {
        return;
    };
    let dir = TestDir::new("hooks_ccd_scripts").expect("test dir");
    open_dir(dir.path());
    let net = NetPair::new(&p, "hk").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(3), opts).expect("server dir");
    let ccd = dir.path().join("ccd");
    std::fs::create_dir(&ccd).expect("ccd");
    std::fs::write(
        ccd.join("client1"),
        "ifconfig-push 10.8.0.77 255.255.255.0\npush \"route 10.55.0.0 255.255.0.0\"\n",
    )
    .expect("ccd client1");
    std::fs::write(ccd.join("client2"), "disable\n").expect("ccd client2");
    let events = dir.path().join("events.log");
    let learn = script(
        dir.path(),
        "learn.sh",
        &format!("echo \"learn $* uid=$(id -u)\" >> {}", events.display()),
    );
    let disc = script(
        dir.path(),
        "disconnect.sh",
        &format!(
            "echo \"disconnect $common_name bytes_received=$bytes_received time_duration=$time_duration\" >> {}",
            events.display()
        ),
    );
    let persist = dir.path().join("ipp.txt");
    let extra = [
        format!("client-config-dir {}", ccd.display()),
        "script-security 2".to_string(),
        format!("learn-address {}", learn.display()),
        format!("client-disconnect {}", disc.display()),
        format!("ifconfig-pool-persist {} 1", persist.display()),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let client = |name: &str| {
        start_stock_client(
            &dir,
            net.client_ns(),
            name,
            setup.profile(name).expect("profile"),
            &ClientOverrides {
                // the session ends at once when the client stops
                extra_lines: vec!["explicit-exit-notify 1".into()],
                ..Default::default()
            },
        )
        .expect("client")
    };
    let mut c1 = client("client1");
    c1.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client1 up");
    let log = c1.log();
    assert!(
        log.contains("10.8.0.77"),
        "static address pushed: {}",
        tail(&log, 30)
    );
    assert!(
        log.contains("10.55.0.0"),
        "per-client route pushed: {}",
        tail(&log, 30)
    );
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("traffic");
    let ev = wait_file_contains(
        &events,
        "learn add 10.8.0.77 client1",
        Duration::from_secs(10),
    )
    .expect("file line");
    assert!(ev.contains("uid=65534"), "scripts run unprivileged: {ev}");

    let mut c2 = client("client2");
    c2.wait_for_line("AUTH_FAILED", CLIENT_UP)
        .expect("disabled client refused");
    assert_eq!(c2.count_lines(INIT_COMPLETE), 0);
    c2.stop().expect("stop client2");

    let mut c3 = client("client3");
    c3.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client3 up");
    let t = wait_file_contains(&persist, "client3,10.8.0.", Duration::from_secs(10))
        .expect("file line");
    assert!(t.lines().any(|l| l.starts_with("client1,10.8.0.77")), "{t}");

    c1.stop().expect("stop client1");
    let ev = wait_file_contains(&events, "learn delete 10.8.0.77", Duration::from_secs(20))
        .expect("file line");
    assert!(ev.contains("disconnect client1 bytes_received="), "{ev}");
    let line = ev
        .lines()
        .find(|l| l.starts_with("disconnect client1"))
        .expect("line");
    assert!(!line.contains("bytes_received= "), "{line}");
}

#[test]
fn auth_user_pass_verify_accepts_and_refuses() {
    let Some(p) = require_privileged("hooks_user_pass") else {
        return;
    };
    let dir = TestDir::new("hooks_user_pass").expect("test dir");
    open_dir(dir.path());
    let net = NetPair::new(&p, "up").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(2), opts).expect("server dir");
    let verify = script(
        dir.path(),
        "verify.sh",
        "[ \"$username\" = alice ] && [ \"$password\" = 'correct horse' ]",
    );
    let extra = [
        "script-security 2".to_string(),
        format!("auth-user-pass-verify {} via-env", verify.display()),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let creds = |name: &str, user: &str, pass: &str| {
        let f = dir.path().join(format!("{name}.creds"));
        std::fs::write(&f, format!("{user}\n{pass}\n")).expect("creds");
        start_stock_client(
            &dir,
            net.client_ns(),
            name,
            setup.profile(name).expect("profile"),
            &ClientOverrides {
                extra_lines: vec![format!("auth-user-pass {}", f.display())],
                ..Default::default()
            },
        )
        .expect("client")
    };
    let mut good = creds("client1", "alice", "correct horse");
    good.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("alice accepted");
    let mut bad = creds("client2", "alice", "wrong");
    bad.wait_for_line("AUTH_FAILED", CLIENT_UP)
        .expect("wrong password refused");
    server
        .wait_for_line(
            "TLS Auth Error: Auth Username/Password verification failed for peer",
            Duration::from_secs(10),
        )
        .expect("fail2ban-visible line");
    assert!(
        !server.log().contains("correct horse"),
        "no password in the log"
    );
    assert!(!server.log().contains("wrong\n"), "no password in the log");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("alice's traffic");
}

#[test]
fn inactive_ends_an_idle_session() {
    let Some(p) = require_privileged("hooks_inactive") else {
        return;
    };
    let dir = TestDir::new("hooks_inactive").expect("test dir");
    let net = NetPair::new(&p, "ia").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let mut server = start_bulwark_server(
        &dir,
        net.server_ns(),
        "bulwark",
        setup.server_conf(),
        &["inactive 3 100000"],
    )
    .expect("start");
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
    let l = server
        .wait_for_line(
            "Inactivity timeout (--inactive), exiting",
            Duration::from_secs(15),
        )
        .expect("idle session ended");
    assert!(l.contains("client1/"), "{l}");
}

#[test]
fn connect_freq_limits_new_sessions() {
    let Some(p) = require_privileged("hooks_connect_freq") else {
        return;
    };
    let dir = TestDir::new("hooks_connect_freq").expect("test dir");
    let net = NetPair::new(&p, "cf").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(2), opts).expect("server dir");
    let mut server = start_bulwark_server(
        &dir,
        net.server_ns(),
        "bulwark",
        setup.server_conf(),
        &["connect-freq 1 60", "verb 4"],
    )
    .expect("start");
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
        .expect("first session allowed");
    let c2 = client("client2");
    server
        .wait_for_line("--connect-freq", Duration::from_secs(15))
        .expect("second session refused by the rate limit");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c2.count_lines(INIT_COMPLETE), 0);
}
