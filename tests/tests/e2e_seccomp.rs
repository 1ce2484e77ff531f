//! Seccomp confinement, tested from outside the process (firecracker style): a helper binary installs
//! each role's real filter and then runs a harmless workload, a forbidden syscall or a panic; and the
//! running daemon's worker and broker show `Seccomp: 2` on every thread while a stock client passes
//! traffic.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

fn probe(role: &str, mode: &str, action: &str) -> std::process::Output {
    let bin = workspace_bin("seccomp-probe").expect("seccomp-probe (cargo build --bins)");
    // children run with an empty environment (no RUST_BACKTRACE: a panic must not read /proc)
    Command::new(bin)
        .env_clear()
        .args([role, mode, action])
        .output()
        .expect("run seccomp-probe")
}

const SIGSYS: i32 = 31;
const SIGABRT: i32 = 6;

#[test]
fn filters_allow_the_workload_and_kill_forbidden_syscalls() {
    for role in ["worker", "broker"] {
        let ok = probe(role, "kill", "harmless");
        assert!(ok.status.success(), "{role} harmless: {ok:?}");
        let open = probe(role, "kill", "open");
        assert!(
            open.status.success(),
            "{role}: file opens answer EACCES: {open:?}"
        );
        assert!(String::from_utf8_lossy(&open.stdout).contains("EACCES"));
        for action in ["socket", "execve", "ptrace", "thread", "mmap-exec"] {
            let o = probe(role, "kill", action);
            assert_eq!(
                o.status.signal(),
                Some(SIGSYS),
                "{role} {action} must be killed by SIGSYS: {o:?}"
            );
        }
        let p = probe(role, "kill", "panic");
        assert_eq!(
            p.status.signal(),
            Some(SIGABRT),
            "{role}: a panic aborts cleanly under the filter: {p:?}"
        );
        // trap mode names the syscall (41 = socket on x86_64) and the role, then exits
        let t = probe(role, "trap", "socket");
        let err = String::from_utf8_lossy(&t.stderr);
        assert_eq!(t.status.code(), Some(159), "{t:?}");
        assert!(
            err.contains("seccomp violation: forbidden syscall 41"),
            "{err}"
        );
        // off really is off
        let off = probe(role, "off", "socket");
        assert_eq!(off.status.code(), Some(12), "{off:?}");
    }
}

fn status_field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn running_children_are_confined_on_every_thread() {
    let test = "running_children_are_confined_on_every_thread";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("dir");
    let net = NetPair::new(&p, "sc").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("setup");
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &[])
            .expect("start");
    server
        .wait_for_line(INIT_COMPLETE, Duration::from_secs(20))
        .expect("up");
    let mut client = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("client");
    client
        .wait_for_line(INIT_COMPLETE, Duration::from_secs(40))
        .expect("client up");
    ping(net.client_ns(), "10.8.0.1", 3, Duration::from_secs(15)).expect("ping under seccomp");
    // the daemon is spawned by `ip netns exec`, which execs into it: the Proc pid is the parent
    let kids = children_of(server.pid());
    assert_eq!(kids.len(), 2, "worker and broker: {kids:?}");
    for kid in kids {
        let tasks = std::fs::read_dir(format!("/proc/{kid}/task")).expect("tasks");
        let mut n = 0;
        for t in tasks {
            let t = t.expect("task").file_name();
            let st =
                std::fs::read_to_string(format!("/proc/{kid}/task/{}/status", t.to_string_lossy()))
                    .expect("status");
            n += 1;
            assert_eq!(
                status_field(&st, "Seccomp"),
                "2",
                "pid {kid} task {t:?}:\n{st}"
            );
            assert_eq!(status_field(&st, "Seccomp_filters"), "3", "{st}");
            assert_eq!(status_field(&st, "NoNewPrivs"), "1", "{st}");
            for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                assert_eq!(status_field(&st, cap), "0000000000000000", "{cap}: {st}");
            }
            let uid = status_field(&st, "Uid");
            assert!(!uid.split_whitespace().any(|u| u == "0"), "non-root: {uid}");
            assert_eq!(status_field(&st, "Groups"), "", "no supplementary groups");
        }
        assert!(n >= 1);
    }
    // The worker and the broker are separate users when the package's `bulwark-mgmt` user
    // exists; otherwise they share one and the daemon says so at start-up.
    let uid_of = |comm: &str| -> String {
        let kid = child_named(server.pid(), comm).unwrap_or_else(|| panic!("no {comm}"));
        let st = std::fs::read_to_string(format!("/proc/{kid}/status")).expect("status");
        status_field(&st, "Uid")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let (worker_uid, broker_uid) = (uid_of("bulwark-worker"), uid_of("bulwark-mgmt"));
    match nix::unistd::User::from_name("bulwark-mgmt").expect("passwd lookup") {
        Some(u) => {
            assert_eq!(broker_uid, u.uid.to_string(), "broker runs as bulwark-mgmt");
            assert_ne!(worker_uid, broker_uid, "worker and broker separated");
        }
        None => {
            assert_eq!(worker_uid, broker_uid);
            assert_eq!(server.count_lines("no 'bulwark-mgmt' user exists"), 1);
        }
    }
    assert_eq!(server.count_lines("seccomp violation"), 0);
}

#[test]
fn killed_worker_is_replaced_and_clients_reconnect() {
    let test = "killed_worker_is_replaced_and_clients_reconnect";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("dir");
    let net = NetPair::new(&p, "wk").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        keepalive: Some((2, 8)),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("setup");
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &[])
            .expect("start");
    server
        .wait_for_line(INIT_COMPLETE, Duration::from_secs(20))
        .expect("up");
    let mut client = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("client");
    client
        .wait_for_line(INIT_COMPLETE, Duration::from_secs(40))
        .expect("client up");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("ping");
    let tun_before =
        std::fs::read_to_string(format!("/proc/{}/net/dev", server.pid())).unwrap_or_default();
    let worker = child_named(server.pid(), "bulwark-worker").expect("worker pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill worker");
    server
        .wait_for_line("restarted and ready", Duration::from_secs(30))
        .expect("the parent restarts the worker");
    // the client notices the dead session through its ping-restart and reconnects to the new worker
    client
        .wait_for_nth(INIT_COMPLETE, 2, Duration::from_secs(60))
        .expect("client reconnects");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("ping after reconnect");
    let tun_after =
        std::fs::read_to_string(format!("/proc/{}/net/dev", server.pid())).unwrap_or_default();
    assert!(
        tun_before.contains("tun0") && tun_after.contains("tun0"),
        "TUN kept across the restart"
    );
}
