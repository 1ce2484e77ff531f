//! "A parent that trusts nothing": a fake worker (`tests/src/bin/fake-worker.rs`, installed as
//! `bulwark-worker` in a `--libexec-dir` next to the real broker) completes the start-up protocol
//! and then sends one out-of-policy message. The parent must log a security event naming the
//! violation, kill that worker, and (default policy) stop; with `--on-security-event restart` it
//! stays up and restarts the worker.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

fn install(dir: &Path, scenario: &str) -> std::path::PathBuf {
    let lib = dir.join("libexec");
    std::fs::create_dir_all(&lib).expect("libexec dir");
    std::fs::copy(
        workspace_bin("fake-worker").expect("fake-worker"),
        lib.join("bulwark-worker"),
    )
    .expect("install fake worker");
    std::fs::copy(mgmt_bin().expect("broker"), lib.join("bulwark-mgmt")).expect("install broker");
    std::fs::write(lib.join("scenario"), scenario).expect("scenario");
    lib
}

fn run_scenario(scenario: &str, expect: &str, restart: bool) {
    let test = format!("compromised_{}", scenario.replace('-', "_"));
    let Some(p) = require_privileged(&test) else {
        return;
    };
    let dir = TestDir::new(&test).expect("test dir");
    let net = NetPair::new(&p, "cw").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let sock = dir.path().join("mgmt.sock");
    let conf = dir.path().join("server.conf");
    let mut text = std::fs::read_to_string(setup.server_conf()).expect("conf");
    text.push_str(&format!("management {} unix\n", sock.display()));
    std::fs::write(&conf, text).expect("write conf");
    let lib = install(dir.path(), scenario);
    let mut args: Vec<String> = vec![
        "--config".into(),
        conf.display().to_string(),
        "--libexec-dir".into(),
        lib.display().to_string(),
    ];
    if restart {
        args.push("--on-security-event".into());
        args.push("restart".into());
    }
    let mut server = Proc::spawn(
        &dir,
        "bulwark",
        Some(net.server_ns()),
        bulwark_bin().expect("bulwark"),
        &args,
    )
    .expect("start");
    server
        .wait_for_line(INIT_COMPLETE, Duration::from_secs(20))
        .expect("start-up completes with the fake worker");
    if scenario == "wrong-reply-kind" {
        // The generated configuration writes a status file: its first render asks the worker
        // for a status at once. A management command does the same if that has not happened
        // yet (the daemon may already have stopped and removed the socket: that is fine).
        assert!(
            std::fs::read_to_string(&conf)
                .expect("conf")
                .lines()
                .any(|l| l.starts_with("status ")),
            "the scenario relies on a status file"
        );
        if let Ok(mut s) = UnixStream::connect(&sock) {
            let _ = s.write_all(b"status\r\n");
        }
    }
    let line = server
        .wait_for_line("violated the IPC protocol", Duration::from_secs(15))
        .expect("the violation is reported");
    assert!(line.contains("SECURITY"), "{line}");
    assert!(line.contains(expect), "{expect:?} in {line}");
    if restart {
        server
            .wait_for_line("restarting worker", Duration::from_secs(15))
            .expect("the worker is restarted under the restart policy");
        assert!(
            server.try_wait().expect("wait").is_none(),
            "parent stays up"
        );
    } else {
        let st = server
            .wait_timeout(Duration::from_secs(15))
            .expect("the parent stops on a security event by default");
        assert!(!st.success(), "non-zero exit: {st:?}");
        assert!(
            server.log().contains("security event"),
            "{}",
            tail(&server.log(), 10)
        );
    }
}

#[test]
fn reply_with_an_unknown_id() {
    run_scenario("unknown-reply", "answers no outstanding query", false);
}

#[test]
fn reply_of_the_wrong_kind() {
    run_scenario("wrong-reply-kind", "has the wrong kind", false);
}

#[test]
fn auth_request_without_defer_auth() {
    run_scenario("auth-without-defer", "without defer_auth", false);
}

#[test]
fn established_outside_the_pool() {
    run_scenario("established-outside-pool", "outside the pool", false);
}

#[test]
fn established_twice() {
    run_scenario("established-twice", "established twice", true);
}

#[test]
fn iroute_nobody_granted() {
    run_scenario(
        "iroute-not-granted",
        "iroutes although no hook granted",
        false,
    );
}

#[test]
fn hello_after_start_up() {
    run_scenario("hello-again", "unexpected WorkerToParent::Hello", false);
}
