//! Engine tests beyond the raw replays: parser edge cases, initial hold, access control,
//! redaction, audit, persistence across sessions, and hostile clients.

use crate::access::{AuditOutcome, ListenerKind, ListenerPolicy, Peer, Role};
use crate::backend::Request;
use crate::hub::BrokerOutput;
use crate::model::*;
use crate::replay_tests::{parse_state_line, s1_setup, Harness, Setup};
use crate::session::{run_session, Limits};
use crate::testutil::fixture_text;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn lines(h: &Harness) -> Vec<String> {
    h.text().split("\r\n").map(String::from).collect()
}

/// Start a second session on the same hub as `h`.
async fn second(h: &Harness, policy: ListenerPolicy, peer: Peer) -> Harness {
    let (io, server) = tokio::io::duplex(1 << 22);
    let task = tokio::spawn(run_session(h.hub.clone(), server, peer, Arc::new(policy)));
    let (_tx, outputs) = tokio::sync::mpsc::channel(1);
    let mut s = Harness {
        hub: h.hub.clone(),
        backend: h.backend.clone(),
        io,
        out: Vec::new(),
        eof: false,
        outputs,
        task,
    };
    s.settle().await;
    s
}

fn drain_audit(h: &mut Harness) -> Vec<crate::access::AuditRecord> {
    let mut v = Vec::new();
    while let Ok(o) = h.outputs.try_recv() {
        if let BrokerOutput::Audit(a) = o {
            v.push(a);
        }
    }
    v
}

#[tokio::test]
async fn parser_edge_cases() {
    let mut h = Harness::start(s1_setup()).await;
    h.out.clear();
    h.send(&format!("echo {}", "x".repeat(300))).await;
    assert_eq!(
        h.text(),
        format!(
            "ERROR: Options error: Parameter at TCP:0 is too long (256 chars max): {}\r\n",
            "x".repeat(256)
        )
    );
    h.out.clear();
    h.send(&"a".repeat(1100)).await;
    assert_eq!(
        h.text(),
        "ERROR: unknown command, enter 'help' for more options\r\n"
    );
    h.out.clear();
    h.send("state \"unterminated").await;
    assert_eq!(
        h.text(),
        "ERROR: Options error: No closing quotation (\") in TCP:0\r\n"
    );
    h.out.clear();
    h.send("help me please with many args a b c d e f g h i j k l m n o p q")
        .await;
    assert!(h
        .text()
        .starts_with("Management Interface for OpenVPN 2.6.14"));
    assert!(h.text().ends_with("version [n]            : Set client's version to n or show current version of daemon.\r\nEND\r\n"));
    h.out.clear();
    h.send("\tpid").await;
    assert_eq!(h.text(), "SUCCESS: pid=7893\r\n");
    h.out.clear();
    h.send("PID").await;
    assert_eq!(
        h.text(),
        "ERROR: unknown command, enter 'help' for more options\r\n"
    );
    h.out.clear();
    h.send("   ").await;
    assert_eq!(h.text(), "");
    h.send("log on all extra").await;
    let t = h.text();
    assert!(t.starts_with("SUCCESS: real-time log notification set to ON\r\n"));
    assert!(t.ends_with("END\r\n"));
    h.out.clear();
    h.send("echo on on").await;
    // verb 3: our own CMD line is logged (and shown, log is on) before the reply.
    assert_eq!(
        normalize_cmd(&h.text()),
        ">LOG:<T>,D,MANAGEMENT: CMD 'echo on on'\r\n\
         SUCCESS: real-time echo notification set to ON\r\n\
         SUCCESS: real-time echo notification set to ON\r\n"
    );
    h.out.clear();
    h.send("version 3").await;
    // With log on, only our own CMD line appears; `version N` itself is silent.
    assert_eq!(
        normalize_cmd(&h.text()),
        ">LOG:<T>,D,MANAGEMENT: CMD 'version 3'\r\n"
    );
    assert_eq!(h.hub.client_version(), 3);
}

fn normalize_cmd(s: &str) -> String {
    crate::replay_tests::normalize(s.as_bytes())
}

#[tokio::test]
async fn initial_hold_transcript() {
    // Server in its initial --management-hold: tunnel commands unavailable, SIGHUP/SIGUSR1
    // ignored with the prompt re-sent.
    let mut s = s1_setup();
    s.state.holding = true;
    s.state.unavailable = true;
    s.state.load = (0, 0, 0);
    s.preload = vec![
        MgmtEvent::State(parse_state_line("1795334930,CONNECTING,,,,,,")),
        MgmtEvent::Hold { wait_secs: 0 },
    ];
    let mut h = Harness::start(s).await;
    let text = fixture_text(
        "sessions/initial-management-hold__signals-ignored__commands-unavailable.transcript",
    );
    let mut expected = Vec::new();
    for l in text.lines() {
        match l.strip_prefix("<<< ") {
            Some(c) => h.send(c).await,
            None => expected.push(l.to_string()),
        }
    }
    let mut got = lines(&h);
    assert_eq!(got.pop().as_deref(), Some(""));
    assert_eq!(got, expected);
}

#[tokio::test]
async fn client_auth_bad_cid_does_not_enter_block_mode() {
    let mut s = s1_setup();
    s.policy.default_role = Role::Auth;
    let mut h = Harness::start(s).await;
    h.out.clear();
    h.send("client-auth abc 1").await;
    h.send("pid").await;
    h.send("client-auth 0 x").await;
    h.send("client-auth 0 1").await;
    h.send("pid").await; // swallowed by the block
    h.send("END").await;
    assert_eq!(
        h.text(),
        "ERROR: cannot parse CID\r\nSUCCESS: pid=7893\r\nERROR: cannot parse KID\r\nSUCCESS: client-auth command succeeded\r\n"
    );
    let st = h.backend.state.lock().unwrap();
    assert!(st.log.contains(&Request::ClientAuth {
        cid: 0,
        kid: 1,
        config: vec!["pid".into()]
    }));
}

#[tokio::test]
async fn roles_deny_without_running_anything() {
    let mut s = s1_setup();
    s.policy.default_role = Role::Monitor;
    let mut h = Harness::start(s).await;
    h.out.clear();
    h.send("kill client1").await;
    h.send("signal SIGUSR2").await;
    h.send("client-deny 0 0 x").await;
    h.send("status 2").await;
    let t = h.text();
    assert!(t.starts_with(
        "ERROR: permission denied: 'kill' requires the operator role, this connection has the monitor role\r\n\
         ERROR: permission denied: 'signal' requires the operator role, this connection has the monitor role\r\n\
         ERROR: permission denied: 'client-deny' requires the auth role, this connection has the monitor role\r\n\
         TITLE,"
    ));
    {
        let st = h.backend.state.lock().unwrap();
        assert!(!st.log.iter().any(|r| matches!(
            r,
            Request::KillCommonName(_) | Request::Signal(_) | Request::ClientDeny { .. }
        )));
    }
    let audit = drain_audit(&mut h);
    let outcomes: Vec<_> = audit
        .iter()
        .map(|a| (a.command.as_str(), &a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("kill client1", &AuditOutcome::Denied),
            ("signal SIGUSR2", &AuditOutcome::Denied),
            ("client-deny 0 0 x", &AuditOutcome::Denied),
            ("status 2", &AuditOutcome::Executed { ok: true }),
        ]
    );
    assert!(audit.iter().all(|a| a.role == Role::Monitor
        && a.peer
            == Peer::Unix {
                uid: 0,
                gid: 0,
                pid: Some(1234)
            }));
}

#[tokio::test]
async fn operator_role_and_uid_mapping() {
    let mut s = s1_setup();
    s.policy.default_role = Role::Monitor;
    s.policy.uid_roles = vec![(0, Role::Operator)];
    let mut h = Harness::start(s).await;
    h.out.clear();
    h.send("signal SIGUSR2").await;
    h.send("signal SIGTERM").await;
    h.send("hold release").await;
    h.send("hold on").await;
    assert_eq!(
        h.text(),
        "SUCCESS: signal SIGUSR2 thrown\r\n\
         ERROR: permission denied: 'signal' requires the admin role, this connection has the operator role\r\n\
         SUCCESS: hold release succeeded\r\n\
         ERROR: permission denied: 'hold' requires the admin role, this connection has the operator role\r\n"
    );
}

#[tokio::test]
async fn read_only_listener_forces_monitor() {
    let mut s = s1_setup();
    s.policy.read_only = true;
    let mut h = Harness::start(s).await;
    h.out.clear();
    h.send("verb 5").await;
    assert!(h
        .text()
        .starts_with("ERROR: permission denied: 'verb' requires the admin role"));
    assert_eq!(h.backend.state.lock().unwrap().verb, 3);
}

fn connect_event() -> Vec<MgmtEvent> {
    // CONNECT (with password) and ESTABLISHED from the client-auth capture.
    let text = fixture_text("sessions/server-management-client-auth.raw");
    let mut evs = Vec::new();
    let mut cur: Option<(ClientEventKind, u32, EnvBlock)> = None;
    for l in text.split("\r\n") {
        if l == ">CLIENT:CONNECT,0,1" {
            cur = Some((ClientEventKind::Connect { kid: 1 }, 0, EnvBlock::default()));
        } else if l == ">CLIENT:ESTABLISHED,0" {
            cur = Some((ClientEventKind::Established, 0, EnvBlock::default()));
        } else if let Some(r) = l.strip_prefix(">CLIENT:ENV,") {
            if let Some((kind, n, mut env)) = cur.take() {
                if r == "END" {
                    evs.push(MgmtEvent::Client {
                        cid: 0,
                        kind,
                        n_clients: n,
                        env,
                    });
                } else {
                    let (k, v) = r.split_once('=').unwrap();
                    let mut n = n;
                    if k == "n_clients" {
                        n = v.parse().unwrap();
                    } else {
                        env.vars.push((k.into(), v.into()));
                    }
                    cur = Some((kind, n, env));
                }
            }
        }
    }
    evs
}

#[tokio::test]
async fn secrets_only_for_auth_role() {
    let evs = connect_event();
    assert_eq!(evs.len(), 2);
    let mut s = s1_setup();
    s.policy.default_role = Role::Auth;
    let mut auth = Harness::start(s).await;
    let admin_policy = ListenerPolicy::openvpn_compatible(
        ListenerKind::Unix("/run/ovpn-lab/s1.sock".into()),
        None,
    );
    let mut admin = second(
        &auth,
        admin_policy.clone(),
        Peer::Unix {
            uid: 0,
            gid: 0,
            pid: None,
        },
    )
    .await;
    let mut mon_policy = admin_policy;
    mon_policy.default_role = Role::Monitor;
    let mut mon = second(
        &auth,
        mon_policy,
        Peer::Unix {
            uid: 0,
            gid: 0,
            pid: None,
        },
    )
    .await;
    for e in &evs {
        auth.inject(e.clone()).await;
    }
    admin.settle().await;
    mon.settle().await;
    assert!(auth.text().contains(">CLIENT:ENV,password=s3cret pass\r\n"));
    assert!(auth.text().contains(">CLIENT:CONNECT,0,1\r\n"));
    assert!(admin.text().contains(">CLIENT:CONNECT,0,1\r\n"));
    assert!(!admin.text().contains("password="));
    assert!(
        !mon.text().contains(">CLIENT:CONNECT"),
        "monitor must not get auth requests"
    );
    assert!(mon
        .text()
        .contains(">CLIENT:ESTABLISHED,0\r\n>CLIENT:ENV,n_clients=1\r\n"));
    assert!(!mon.text().contains("password="));
}

#[tokio::test]
async fn env_filter_persists_across_sessions_and_flags_do_not() {
    let mut h1 = Harness::start(s1_setup()).await;
    h1.send("env-filter 3").await;
    h1.send("log on").await;
    h1.send("quit").await;
    assert!(h1.eof);
    let mut h2 = Harness::start(s1_setup()).await;
    // A fresh hub would reset; reuse h1's hub for the persistence check.
    let policy = ListenerPolicy::openvpn_compatible(
        ListenerKind::Unix("/run/ovpn-lab/s1.sock".into()),
        None,
    );
    let mut h3 = second(&h1, policy, Peer::UnixUnknown).await;
    h3.out.clear();
    h3.inject(connect_event().remove(1)).await;
    assert_eq!(h3.text(), ">CLIENT:ESTABLISHED,0\r\n>CLIENT:ENV,END\r\n");
    // Real-time flags are per session: h3 never said `log on`.
    h3.out.clear();
    h3.inject(MgmtEvent::Log(LogRecord {
        time: 1,
        flags: LogFlags::default(),
        message: "x".into(),
    }))
    .await;
    assert_eq!(h3.text(), "");
    h2.send("env-filter").await;
    assert!(h2.text().ends_with("SUCCESS: env_filter_level=0\r\n"));
}

#[tokio::test]
async fn password_is_redacted_in_log_and_audit() {
    let mut h = Harness::start(s1_setup()).await;
    h.send("password Auth hunter2").await;
    assert!(h
        .text()
        .ends_with("ERROR: no password is currently needed at this time\r\n"));
    let hist = h.hub.log_history(None);
    assert!(hist
        .iter()
        .any(|r| r.message == "MANAGEMENT: CMD 'password [...]'"));
    assert!(!hist.iter().any(|r| r.message.contains("hunter2")));
    let audit = drain_audit(&mut h);
    assert_eq!(audit.last().unwrap().command, "password Auth [redacted]");
    assert_eq!(
        audit.last().unwrap().outcome,
        AuditOutcome::Executed { ok: false }
    );
}

#[tokio::test]
async fn hold_prompt_after_greeting_and_fatal_closes() {
    let mut s = s1_setup();
    s.preload.push(MgmtEvent::Hold { wait_secs: 7 });
    let mut h = Harness::start(s).await;
    assert!(h.text().ends_with(
        ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n>HOLD:Waiting for hold release:7\r\n"
    ));
    h.inject(MgmtEvent::HoldReleased).await;
    assert_eq!(h.hub.pending_prompt(), None);
    h.inject(MgmtEvent::Fatal("boom".into())).await;
    assert!(h.text().ends_with(">FATAL:boom\r\n"));
    assert!(h.eof);
}

// ---------------------------------------------------------------------------------------
// Hostile clients.

fn limited(f: impl FnOnce(&mut Limits)) -> Setup {
    let mut s = s1_setup();
    f(&mut s.cfg.limits);
    s
}

#[tokio::test]
async fn one_mib_line_and_nul_bytes() {
    let mut h = Harness::start(s1_setup()).await;
    h.out.clear();
    let mut big = vec![b'z'; 1 << 20];
    big.extend_from_slice(b"\npid\npi\0d\n\xff\xfe\npid\n");
    h.send_raw(&big).await;
    h.settle().await;
    assert_eq!(
        h.text(),
        "ERROR: unknown command, enter 'help' for more options\r\n\
         SUCCESS: pid=7893\r\n\
         ERROR: binary input (NUL byte or invalid UTF-8) rejected\r\n\
         ERROR: binary input (NUL byte or invalid UTF-8) rejected\r\n\
         SUCCESS: pid=7893\r\n"
    );
    let audit = drain_audit(&mut h);
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.outcome == AuditOutcome::Rejected)
            .count(),
        2
    );
}

#[tokio::test]
async fn flood_is_rate_limited_and_others_stay_responsive() {
    let mut h = Harness::start(limited(|l| {
        l.commands_per_sec = 100;
        l.command_burst = 50;
    }))
    .await;
    h.out.clear();
    let policy = ListenerPolicy::openvpn_compatible(
        ListenerKind::Unix("/run/ovpn-lab/s1.sock".into()),
        None,
    );
    let mut other = second(&h, policy, Peer::UnixUnknown).await;
    let flood = "pid\n".repeat(250);
    let start = Instant::now();
    h.send_raw(flood.as_bytes()).await;
    // While the flood is being (slowly) served, the other session answers at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.out.clear();
    let t0 = Instant::now();
    other.send("pid").await;
    assert_eq!(other.text(), "SUCCESS: pid=7893\r\n");
    assert!(t0.elapsed() < Duration::from_secs(1));
    while h.text().matches("SUCCESS: pid=").count() < 250
        && start.elapsed() < Duration::from_secs(10)
    {
        h.settle().await;
    }
    assert_eq!(h.text().matches("SUCCESS: pid=").count(), 250);
    // 200 commands beyond the burst at 100/s take at least ~2 s.
    assert!(
        start.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn slow_reader_is_dropped_without_blocking_others() {
    let s = limited(|l| {
        l.write_timeout = Duration::from_millis(300);
        l.notification_backlog = 64;
    });
    let mut fast = Harness::start(s).await;
    // A slow client: tiny pipe, never reads.
    let (slow_io, server) = tokio::io::duplex(256);
    let policy = Arc::new(ListenerPolicy::openvpn_compatible(
        ListenerKind::Unix("/x".into()),
        None,
    ));
    let mut slow_io = slow_io;
    let slow_task = tokio::spawn(run_session(
        fast.hub.clone(),
        server,
        Peer::UnixUnknown,
        policy,
    ));
    slow_io.write_all(b"echo on\n").await.unwrap();
    fast.send("echo on").await;
    let before = fast.hub.session_count();
    assert_eq!(before, 2);
    for i in 0..500 {
        fast.hub.ingest(MgmtEvent::Echo(EchoEntry {
            time: i,
            text: format!("message {i} {}", "y".repeat(100)),
        }));
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    fast.settle().await;
    assert_eq!(fast.text().matches(">ECHO:").count(), 500);
    tokio::time::timeout(Duration::from_secs(5), slow_task)
        .await
        .expect("slow session must be dropped")
        .unwrap();
    assert_eq!(fast.hub.session_count(), 1);
    assert!(fast
        .hub
        .log_history(None)
        .iter()
        .any(|r| r.message.contains("dropping slow management client")));
    drop(slow_io);
}

#[tokio::test]
async fn unauthenticated_timeout() {
    let mut s = limited(|l| l.unauth_timeout = Duration::from_millis(300));
    s.policy = ListenerPolicy::openvpn_compatible(ListenerKind::Tcp, Some("pw".into()));
    s.peer = Peer::Tcp("127.0.0.1:5000".parse().unwrap());
    let start = Instant::now();
    let mut h = Harness::start(s).await;
    while !h.eof && start.elapsed() < Duration::from_secs(3) {
        h.settle().await;
    }
    assert!(h.eof);
    assert_eq!(h.text(), "ENTER PASSWORD:");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn notifications_muted_until_password() {
    let mut s = s1_setup();
    s.policy = ListenerPolicy::openvpn_compatible(ListenerKind::Tcp, Some("pw".into()));
    s.peer = Peer::Tcp("127.0.0.1:5000".parse().unwrap());
    s.preload.push(MgmtEvent::Hold { wait_secs: 0 });
    let mut h = Harness::start(s).await;
    h.inject(MgmtEvent::Notify("info,remote-exit,EXIT".into()))
        .await;
    assert_eq!(h.text(), "ENTER PASSWORD:");
    // Pipelined password + command (Tunnelblick style).
    h.send_raw(b"pw\r\npid\r\n").await;
    h.settle().await;
    assert_eq!(
        h.text(),
        "ENTER PASSWORD:SUCCESS: password is correct\r\n\
         >INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n\
         >HOLD:Waiting for hold release:0\r\n\
         SUCCESS: pid=7893\r\n"
    );
}

#[tokio::test]
async fn session_cap() {
    let h = Harness::start(limited(|l| l.max_clients = 1)).await;
    let policy = ListenerPolicy::openvpn_compatible(
        ListenerKind::Unix("/run/ovpn-lab/s1.sock".into()),
        None,
    );
    let h2 = second(&h, policy, Peer::UnixUnknown).await;
    assert!(h2.eof);
    assert_eq!(
        h2.text(),
        "ERROR: too many management clients connected (limit 1)\r\n"
    );
}

#[tokio::test]
async fn output_cap_closes_session() {
    let mut h = Harness::start(limited(|l| l.max_output_bytes = 10_000)).await;
    h.out.clear();
    h.send("test 100000").await;
    assert!(h.eof);
    assert_eq!(
        h.text(),
        "ERROR: reply exceeds the management output limit; closing session\r\n"
    );
}

#[tokio::test]
async fn bytecount_off_stops_notifications() {
    let mut s = s1_setup();
    s.state.bytecounts = vec![vec![(0, 1, 1)], vec![(0, 2, 2)], vec![(0, 3, 3)]];
    let mut h = Harness::start(s).await;
    h.out.clear();
    h.send("bytecount 1").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h.settle().await;
    h.send("bytecount 0").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h.settle().await;
    assert_eq!(
        h.text(),
        "SUCCESS: bytecount interval changed\r\n>BYTECOUNT_CLI:0,1,1\r\nSUCCESS: bytecount interval changed\r\n"
    );
}

#[tokio::test]
async fn raw_duplex_eof_ends_session() {
    let h = Harness::start(s1_setup()).await;
    assert_eq!(h.hub.session_count(), 1);
    let Harness {
        mut io, task, hub, ..
    } = h;
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = io.read_to_end(&mut rest).await;
    task.await.unwrap();
    assert_eq!(hub.session_count(), 0);
    assert!(hub
        .log_history(None)
        .iter()
        .any(|r| r.message == "MANAGEMENT: Client disconnected"));
}

#[tokio::test]
async fn garbage_input_never_kills_the_session() {
    let mut s = s1_setup();
    s.cfg.limits.commands_per_sec = 100_000;
    s.cfg.limits.command_burst = 100_000;
    // monitor: garbage cannot accidentally run anything with side effects.
    s.policy.default_role = Role::Monitor;
    let mut h = Harness::start(s).await;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..64 {
        let mut chunk = Vec::with_capacity(2048);
        for _ in 0..2048 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.push((x >> 24) as u8);
        }
        h.send_raw(&chunk).await;
    }
    h.send_raw(b"\n").await;
    h.settle().await;
    assert!(!h.eof);
    h.out.clear();
    h.send("pid").await;
    assert!(h.text().ends_with("SUCCESS: pid=7893\r\n"), "{}", h.text());
    let st = h.backend.state.lock().unwrap();
    assert!(!st.log.iter().any(|r| matches!(
        r,
        Request::KillCommonName(_) | Request::Signal(_) | Request::SetVerb(_)
    )));
}
