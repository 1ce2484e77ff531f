//! Replay of the OpenVPN 2.6.14 management captures against the engine with the fake backend.
//!
//! Every `.raw` in `mgmt-server/`, `mgmt-server-tcp/`, `mgmt-server-udp6/`, `mgmt-server-tap/`
//! and the server-side `sessions/` is replayed on a fresh in-memory connection; the output is
//! compared byte for byte after [`normalize`], which only masks values that legitimately differ
//! between runs (status `Updated`/`TIME` stamps and the timestamps of the broker's own
//! `MANAGEMENT: CMD` / `Client connected` log lines).

use crate::access::{ListenerKind, ListenerPolicy, Peer, Role};
use crate::backend::fake::{FakeBackend, FakeState};
use crate::backend::AuthRetry;
use crate::capture::commands_from_name;
use crate::golden_status_tests::{client, route, s1, snap, t, TITLE};
use crate::hub::{BrokerOutput, EngineConfig, Hub};
use crate::model::*;
use crate::session::run_session;
use crate::status::{render_lines, StatusVersion};
use crate::testutil::{fixture, fixture_root, fixture_text};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// Mask run-dependent values (see module doc).
pub(crate) fn normalize(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out = String::new();
    for line in s.split_inclusive('\n') {
        let eol_at = line.find(['\r', '\n']).unwrap_or(line.len());
        let (body, eol) = line.split_at(eol_at);
        let masked = if body.starts_with("Updated,") {
            "Updated,<T>".to_string()
        } else if body.starts_with("TIME,") || body.starts_with("TIME\t") {
            "TIME<T>".to_string()
        } else {
            let (prefix, rest) = match body.strip_prefix(">LOG:") {
                Some(r) => (">LOG:", r),
                None => ("", body),
            };
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 10
                && (rest.contains(",MANAGEMENT: CMD '")
                    || rest.contains(",MANAGEMENT: Client connected from"))
            {
                format!("{prefix}<T>{}", &rest[10..])
            } else {
                body.to_string()
            }
        };
        out.push_str(&masked);
        out.push_str(eol);
    }
    out
}

pub(crate) struct Setup {
    pub state: FakeState,
    pub policy: ListenerPolicy,
    pub peer: Peer,
    pub cfg: EngineConfig,
    pub clock: i64,
    pub preload: Vec<MgmtEvent>,
    pub env_filter: i32,
}

pub(crate) fn s1_state() -> FakeState {
    FakeState {
        pid: 7893,
        title: TITLE.into(),
        snapshot: s1(t(7, 50, 0)),
        load: (1, 3035, 2981),
        bytecounts: vec![],
        verb: 3,
        mute: 0,
        hold: false,
        holding: false,
        auth_retry: AuthRetry::None,
        cids: vec![0, 1, 2],
        pending_cids: vec![],
        unavailable: false,
        log: vec![],
    }
}

pub(crate) fn s1_setup() -> Setup {
    let mut cfg = EngineConfig::default();
    cfg.verb = 3;
    Setup {
        state: s1_state(),
        policy: ListenerPolicy::openvpn_compatible(
            ListenerKind::Unix("/run/ovpn-lab/s1.sock".into()),
            None,
        ),
        peer: Peer::Unix {
            uid: 0,
            gid: 0,
            pid: Some(1234),
        },
        cfg,
        clock: 1_795_333_900,
        preload: history_events("mgmt-server/state_all.raw"),
        env_filter: 0,
    }
}

pub(crate) struct Harness {
    pub hub: Arc<Hub>,
    pub backend: Arc<FakeBackend>,
    pub io: DuplexStream,
    pub out: Vec<u8>,
    pub eof: bool,
    pub outputs: mpsc::Receiver<BrokerOutput>,
    pub task: tokio::task::JoinHandle<()>,
}

const IDLE: Duration = Duration::from_millis(200);

impl Harness {
    pub async fn start(setup: Setup) -> Harness {
        let backend = Arc::new(FakeBackend::new(setup.state));
        let clock_val = setup.clock;
        let (hub, outputs) = Hub::new(setup.cfg, backend.clone(), Arc::new(move || clock_val));
        hub.set_env_filter(setup.env_filter);
        for e in setup.preload {
            hub.ingest(e);
        }
        let (io, server) = tokio::io::duplex(1 << 22);
        let task = tokio::spawn(run_session(
            hub.clone(),
            server,
            setup.peer,
            Arc::new(setup.policy),
        ));
        let mut h = Harness {
            hub,
            backend,
            io,
            out: Vec::new(),
            eof: false,
            outputs,
            task,
        };
        h.settle().await;
        h
    }

    /// Read until the session has been idle for [`IDLE`] (or EOF).
    pub async fn settle(&mut self) {
        self.settle_for(IDLE).await
    }

    pub async fn settle_for(&mut self, idle: Duration) {
        let mut buf = vec![0u8; 65536];
        while !self.eof {
            match tokio::time::timeout(idle, self.io.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if self.io.write_all(bytes).await.is_err() {
            self.eof = true;
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
        self.settle().await;
    }

    pub async fn inject(&mut self, ev: MgmtEvent) {
        self.hub.ingest(ev);
        self.settle().await;
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Fixture parsing helpers (test-only).

fn parse_flags(s: &str) -> LogFlags {
    LogFlags {
        info: s.contains('I'),
        fatal: s.contains('F'),
        nonfatal: s.contains('N'),
        warn: s.contains('W'),
        debug: s.contains('D'),
    }
}

pub(crate) fn parse_log_line(l: &str) -> LogRecord {
    let mut it = l.splitn(3, ',');
    let time = it.next().unwrap().parse().unwrap();
    let flags = parse_flags(it.next().unwrap());
    LogRecord {
        time,
        flags,
        message: it.next().unwrap_or("").to_string(),
    }
}

fn addr_pair(a: &str, p: &str) -> Option<SocketAddr> {
    if a.is_empty() {
        None
    } else {
        Some(SocketAddr::new(a.parse().unwrap(), p.parse().unwrap()))
    }
}

pub(crate) fn parse_state_line(l: &str) -> StateEntry {
    let f: Vec<&str> = l.split(',').collect();
    StateEntry {
        time: f[0].parse().unwrap(),
        name: f[1].into(),
        detail: f[2].into(),
        tun_v4: (!f[3].is_empty()).then(|| f[3].parse().unwrap()),
        remote: addr_pair(f[4], f[5]),
        local: addr_pair(f[6], f[7]),
        tun_v6: f
            .get(8)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap()),
    }
}

/// State history entries of a `state ...` reply fixture (lines before `END`).
fn history_events(rel: &str) -> Vec<MgmtEvent> {
    fixture_text(rel)
        .split("\r\n")
        .skip(1)
        .take_while(|l| *l != "END")
        .map(|l| MgmtEvent::State(parse_state_line(l)))
        .collect()
}

/// Incremental parser of notification lines into events.
#[derive(Default)]
struct EventParser {
    cur: Option<(u64, ClientEventKind, u32, EnvBlock)>,
}

impl EventParser {
    /// Feed one line (without CRLF); returns a completed event if any.
    fn feed(&mut self, l: &str) -> Option<MgmtEvent> {
        if let Some(rest) = l.strip_prefix(">CLIENT:ENV,") {
            let (cid, kind, mut n, mut env) = self.cur.take().expect("ENV outside block");
            if rest == "END" {
                return Some(MgmtEvent::Client {
                    cid,
                    kind,
                    n_clients: n,
                    env,
                });
            }
            let (k, v) = rest.split_once('=').unwrap();
            if k == "n_clients" {
                n = v.parse().unwrap();
            } else {
                env.vars.push((k.into(), v.into()));
            }
            self.cur = Some((cid, kind, n, env));
            return None;
        }
        if let Some(rest) = l.strip_prefix(">CLIENT:") {
            let f: Vec<&str> = rest.splitn(4, ',').collect();
            let cid: u64 = f[1].parse().unwrap();
            let kind = match f[0] {
                "CONNECT" => ClientEventKind::Connect {
                    kid: f[2].parse().unwrap(),
                },
                "REAUTH" => ClientEventKind::Reauth {
                    kid: f[2].parse().unwrap(),
                },
                "ESTABLISHED" => ClientEventKind::Established,
                "DISCONNECT" => ClientEventKind::Disconnect,
                "CR_RESPONSE" => ClientEventKind::CrResponse {
                    kid: f[2].parse().unwrap(),
                    response: f[3].into(),
                },
                "ADDRESS" => {
                    return Some(MgmtEvent::ClientAddress {
                        cid,
                        addr: f[2].into(),
                        primary: f[3] == "1",
                    })
                }
                other => panic!("unknown client event {other}"),
            };
            self.cur = Some((cid, kind, 0, EnvBlock::default()));
            return None;
        }
        if let Some(r) = l.strip_prefix(">NOTIFY:") {
            return Some(MgmtEvent::Notify(r.into()));
        }
        if let Some(r) = l.strip_prefix(">STATE:") {
            return Some(MgmtEvent::State(parse_state_line(r)));
        }
        if let Some(r) = l.strip_prefix(">FATAL:") {
            return Some(MgmtEvent::Fatal(r.into()));
        }
        if let Some(r) = l.strip_prefix(">HOLD:Waiting for hold release:") {
            return Some(MgmtEvent::Hold {
                wait_secs: r.parse().unwrap(),
            });
        }
        if let Some(r) = l.strip_prefix(">LOG:") {
            let rec = parse_log_line(r);
            // The broker produces its own MANAGEMENT lines; only daemon lines are events.
            if rec.message.starts_with("MANAGEMENT: ") {
                return None;
            }
            return Some(MgmtEvent::Log(rec));
        }
        None
    }
}

/// All events contained in a raw capture (in order).
fn events_in_raw(rel: &str) -> Vec<MgmtEvent> {
    let mut p = EventParser::default();
    fixture_text(rel)
        .split("\r\n")
        .filter_map(|l| p.feed(l))
        .collect()
}

enum Step {
    Send(String),
    Event(MgmtEvent),
}

/// Steps of a `.transcript`: sent lines and the notifications to inject, in order. A `>HOLD`
/// before the first sent line is returned separately (it is the pending prompt).
fn transcript_steps(rel: &str) -> (Vec<MgmtEvent>, Vec<Step>) {
    let mut p = EventParser::default();
    let mut pre = Vec::new();
    let mut steps = Vec::new();
    let mut sent_any = false;
    for l in fixture_text(rel).lines() {
        if let Some(c) = l.strip_prefix("<<< ") {
            sent_any = true;
            steps.push(Step::Send(c.to_string()));
        } else if let Some(o) = l.strip_prefix(">>> ") {
            // `ENTER PASSWORD:` is glued to the next line in transcripts.
            let o = o.trim_start_matches("ENTER PASSWORD:");
            if let Some(ev) = p.feed(o) {
                if !sent_any && matches!(ev, MgmtEvent::Hold { .. }) {
                    pre.push(ev);
                } else {
                    steps.push(Step::Event(ev));
                }
            }
        }
    }
    (pre, steps)
}

async fn run_transcript(rel_transcript: &str, rel_raw: &str, mut setup: Setup) {
    let (pre, steps) = transcript_steps(rel_transcript);
    setup.preload.extend(pre);
    let mut h = Harness::start(setup).await;
    for s in steps {
        match s {
            Step::Send(c) => h.send(&c).await,
            Step::Event(e) => h.inject(e).await,
        }
    }
    assert_eq!(
        normalize(&h.out),
        normalize(&fixture(rel_raw)),
        "replay of {rel_raw}"
    );
}

// ---------------------------------------------------------------------------------------
// mgmt-server/: one command (or `+`-separated commands) per file.

/// History lines of a `log ...` reply (between the SUCCESS/greeting and `END`), minus the last
/// two (the connect and CMD lines the broker produces itself).
fn log_preload(rel: &str) -> Vec<MgmtEvent> {
    let text = fixture_text(rel);
    let lines: Vec<&str> = text
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.starts_with("SUCCESS"))
        .take_while(|l| *l != "END")
        .collect();
    lines[..lines.len() - 2]
        .iter()
        .map(|l| MgmtEvent::Log(parse_log_line(l)))
        .collect()
}

fn reconnect_snapshot() -> StatusSnapshot {
    let r = "172.31.254.2:42337";
    snap(
        t(7, 53, 38),
        vec![client(
            "client1",
            r,
            Some("10.98.0.2"),
            Some("fd00:98::1000"),
            5649,
            5377,
            t(7, 52, 13),
            None,
            1,
            0,
        )],
        vec![
            route("fd00:98::1000", "client1", r, t(7, 52, 13)),
            route("10.98.0.2", "client1", r, t(7, 53, 20)),
        ],
        1,
    )
}

fn sigusr2_dump_snapshot() -> StatusSnapshot {
    let r = "172.31.254.2:52432";
    snap(
        t(7, 54, 34),
        vec![client(
            "client1",
            r,
            Some("10.98.0.2"),
            Some("fd00:98::1000"),
            2780,
            2732,
            t(7, 54, 13),
            None,
            0,
            0,
        )],
        vec![
            route("fd00:98::1000", "client1", r, t(7, 54, 13)),
            route("10.98.0.2", "client1", r, t(7, 54, 19)),
        ],
        1,
    )
}

async fn replay_mgmt_server(file: &str) {
    let rel = format!("mgmt-server/{file}");
    let stem = file.trim_end_matches(".raw");
    let cmds = commands_from_name(stem);
    let mut setup = s1_setup();
    let mut after: Vec<MgmtEvent> = Vec::new();
    let mut wait = Duration::ZERO;
    match stem {
        "status_2__no-clients" => setup.state.snapshot = snap(t(7, 49, 33), vec![], vec![], 0),
        "status_3__after-reconnect" => setup.state.snapshot = reconnect_snapshot(),
        "log_all" | "log_on_all+pid" => setup.preload.extend(log_preload(&rel)),
        "log_3" => setup.preload.push(MgmtEvent::Log(parse_log_line(
            "1795333866,,MANAGEMENT: Client disconnected",
        ))),
        "log_on+signal_SIGUSR2" => {
            // The parent answers SIGUSR2 by logging the configured status (v1) at M_INFO.
            for l in render_lines(&sigusr2_dump_snapshot(), StatusVersion::V1) {
                after.push(MgmtEvent::Log(LogRecord {
                    time: 1_795_334_074,
                    flags: LogFlags {
                        info: true,
                        ..LogFlags::default()
                    },
                    message: l,
                }));
            }
        }
        "bytecount_1" => {
            setup.state.bytecounts = vec![
                vec![(0, 3975, 3707)],
                vec![(0, 4083, 3815)],
                vec![(0, 4299, 4031)],
            ];
            wait = Duration::from_millis(3400);
        }
        "client-kill_1__with-unsolicited-ESTABLISHED-env-filter-2" => {
            // env-filter 2 was set by an earlier session (process-wide, persistent).
            setup.env_filter = 2;
            let mut evs =
                events_in_raw("mgmt-server/no-command__unsolicited-CLIENT-ESTABLISHED.raw");
            if let Some(MgmtEvent::Client { cid, .. }) = evs.first_mut() {
                *cid = 2;
            }
            after.extend(evs);
        }
        "no-command__unsolicited-CLIENT-ESTABLISHED" => after.extend(events_in_raw(&rel)),
        "management-client-user-mismatch__rejected" => {
            setup.policy.required_uid = Some(65534);
        }
        _ => {}
    }
    let mut h = Harness::start(setup).await;
    for c in &cmds {
        h.send(c).await;
    }
    for e in after {
        h.inject(e).await;
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
        h.settle().await;
    }
    assert_eq!(
        normalize(&h.out),
        normalize(&fixture(&rel)),
        "replay of {rel}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_every_mgmt_server_fixture() {
    let dir = fixture_root().join("mgmt-server");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".raw"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 70,
        "expected the full capture set, found {}",
        files.len()
    );
    let mut tasks = Vec::new();
    for f in files {
        tasks.push((
            f.clone(),
            tokio::spawn(async move { replay_mgmt_server(&f).await }),
        ));
    }
    let mut failures = Vec::new();
    for (f, t) in tasks {
        if let Err(e) = t.await {
            failures.push(format!("{f}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "failed replays:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// mgmt-server-tcp/ (password-protected TCP, status-version 3).

fn tcp_setup(snapshot: StatusSnapshot, pid: u32) -> Setup {
    let mut s = s1_setup();
    s.state.pid = pid;
    s.state.snapshot = snapshot;
    s.cfg.status_version = StatusVersion::V3;
    s.policy = ListenerPolicy::openvpn_compatible(ListenerKind::Tcp, Some("mgmtpw".into()));
    s.peer = Peer::Tcp("127.0.0.1:58188".parse().unwrap());
    s.preload = vec![];
    s
}

fn s3_snapshot() -> StatusSnapshot {
    let r = "172.31.254.2:50971";
    snap(
        t(7, 58, 16),
        vec![client(
            "client1",
            r,
            Some("10.96.0.2"),
            Some("fd00:96::1000"),
            2707,
            2693,
            t(7, 58, 9),
            None,
            0,
            0,
        )],
        vec![
            route("fd00:96::1000", "client1", r, t(7, 58, 9)),
            route("10.96.0.2", "client1", r, t(7, 58, 13)),
        ],
        1,
    )
}

#[tokio::test]
async fn replay_tcp_password_status() {
    run_transcript(
        "mgmt-server-tcp/password+status+status_1+status_2.transcript",
        "mgmt-server-tcp/password+status+status_1+status_2.raw",
        tcp_setup(s3_snapshot(), 26484),
    )
    .await;
}

#[tokio::test]
async fn replay_tcp_password_ok_pid_quit() {
    let mut h = Harness::start(tcp_setup(s3_snapshot(), 26484)).await;
    for c in ["mgmtpw", "pid", "quit"] {
        h.send(c).await;
    }
    assert!(h.eof, "quit must close the connection");
    assert_eq!(h.out, fixture("mgmt-server-tcp/password-ok+pid+quit.raw"));
}

#[tokio::test]
async fn replay_tcp_password_wrong_x3() {
    let mut h = Harness::start(tcp_setup(s3_snapshot(), 26484)).await;
    for c in ["wrong1", "help", "wrong3"] {
        h.send(c).await;
    }
    assert!(h.eof, "three wrong passwords must close the connection");
    assert_eq!(h.out, fixture("mgmt-server-tcp/password-wrong-x3.raw"));
    assert!(h
        .hub
        .log_history(None)
        .iter()
        .any(|r| r.message == "MAN: client connection rejected after 3 failed password attempts"));
}

#[tokio::test]
async fn replay_tcp_state_signals_hold() {
    let mut s = tcp_setup(s3_snapshot(), 26484);
    for l in [
        "1795334283,CONNECTING,,,,,,",
        "1795334283,ASSIGN_IP,,10.96.0.1,,,,,fd00:96::1",
        "1795334283,CONNECTED,SUCCESS,10.96.0.1,,,172.31.254.1,1194,fd00:96::1",
    ] {
        s.preload.push(MgmtEvent::State(parse_state_line(l)));
    }
    run_transcript(
        "mgmt-server-tcp/state_on+signal_SIGHUP+state_all+signal_SIGUSR1+hold.transcript",
        "mgmt-server-tcp/state_on+signal_SIGHUP+state_all+signal_SIGUSR1+hold.raw",
        s,
    )
    .await;
}

#[tokio::test]
async fn replay_tcp_status_kill_by_address() {
    let r = "172.31.254.2:53971";
    let snapshot = snap(
        t(8, 2, 8),
        vec![client(
            "client1",
            r,
            Some("10.96.0.3"),
            Some("fd00:96::1001"),
            2383,
            2295,
            t(8, 2, 3),
            None,
            5,
            0,
        )],
        vec![
            route("fd00:96::1001", "client1", r, t(8, 2, 3)),
            route("10.96.0.3", "client1", r, t(8, 2, 3)),
        ],
        2,
    );
    run_transcript(
        "mgmt-server-tcp/status_2+kill_IP-port+kill_IP-port.transcript",
        "mgmt-server-tcp/status_2+kill_IP-port+kill_IP-port.raw",
        tcp_setup(snapshot, 26484),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// mgmt-server-udp6/ and mgmt-server-tap/.

fn udp6_snapshot() -> StatusSnapshot {
    let c2 = "[::ffff:172.31.254.2]:45118";
    let c1 = "[fd00:254::2]:1194";
    snap(
        t(8, 2, 38),
        vec![
            client(
                "client2",
                c2,
                Some("10.94.0.3"),
                Some("fd00:94::1001"),
                2386,
                2368,
                t(8, 2, 32),
                None,
                1,
                1,
            ),
            client(
                "client1",
                c1,
                Some("10.94.0.2"),
                Some("fd00:94::1000"),
                2384,
                2368,
                t(8, 2, 32),
                None,
                0,
                0,
            ),
        ],
        vec![
            route("10.94.0.3", "client2", c2, t(8, 2, 32)),
            route("10.94.0.2", "client1", c1, t(8, 2, 32)),
            route("fd00:94::1001", "client2", c2, t(8, 2, 32)),
            route("fd00:94::1000", "client1", c1, t(8, 2, 32)),
        ],
        2,
    )
}

async fn replay_simple(rel: &str, setup: Setup, cmds: &[&str]) {
    let mut h = Harness::start(setup).await;
    for c in cmds {
        h.send(c).await;
    }
    assert_eq!(
        normalize(&h.out),
        normalize(&fixture(rel)),
        "replay of {rel}"
    );
}

#[tokio::test]
async fn replay_udp6() {
    let mk = || {
        let mut s = s1_setup();
        s.state.snapshot = udp6_snapshot();
        s.preload = history_events("mgmt-server-udp6/state_all.raw");
        s
    };
    replay_simple("mgmt-server-udp6/status_1.raw", mk(), &["status 1"]).await;
    replay_simple("mgmt-server-udp6/status_2.raw", mk(), &["status 2"]).await;
    replay_simple("mgmt-server-udp6/state_all.raw", mk(), &["state all"]).await;
    // The IPv4 client is stored v4-mapped on the dual-stack socket: not found by address.
    replay_simple(
        "mgmt-server-udp6/kill_v4-client-IP-port__not-found.raw",
        mk(),
        &["kill 172.31.254.2:45118"],
    )
    .await;
}

#[tokio::test]
async fn replay_tap() {
    let mk = || {
        let r = "172.31.254.2:51311";
        let mut s = s1_setup();
        s.state.snapshot = snap(
            t(8, 11, 38),
            vec![client(
                "client1",
                r,
                Some("10.92.0.2"),
                None,
                3427,
                3032,
                t(8, 11, 31),
                None,
                0,
                0,
            )],
            vec![route("da:8d:d4:cd:75:57@0", "client1", r, t(8, 11, 37))],
            1,
        );
        s.preload = vec![MgmtEvent::State(parse_state_line(
            "1795335090,CONNECTED,SUCCESS,10.92.0.1,,,172.31.254.1,1194",
        ))];
        s
    };
    replay_simple("mgmt-server-tap/status_1.raw", mk(), &["status 1"]).await;
    replay_simple("mgmt-server-tap/status_2.raw", mk(), &["status 2"]).await;
    replay_simple("mgmt-server-tap/status_3.raw", mk(), &["status 3"]).await;
    replay_simple("mgmt-server-tap/state.raw", mk(), &["state"]).await;
}

// ---------------------------------------------------------------------------------------
// sessions/ that apply to a server.

#[tokio::test]
async fn replay_session_server_client_auth() {
    let mut s = s1_setup();
    s.state.pid = 22637;
    s.state.cids = vec![0, 1];
    s.state.pending_cids = vec![1];
    s.state.snapshot = snap(t(7, 57, 25), vec![], vec![], 1);
    s.cfg.status_version = StatusVersion::V2;
    s.preload = vec![];
    // Only the `auth` role sees the cleartext password, as the capture shows.
    s.policy.default_role = Role::Auth;
    run_transcript(
        "sessions/server-management-client-auth.transcript",
        "sessions/server-management-client-auth.raw",
        s,
    )
    .await;
}

#[tokio::test]
async fn replay_session_server_hold_release_fatal() {
    let mut s = s1_setup();
    s.clock = 1_795_334_323;
    s.state.holding = true;
    s.preload = vec![];
    let rel = "sessions/server-management-hold__hold_release__FATAL.raw";
    let (pre, steps) =
        transcript_steps("sessions/server-management-hold__hold_release__FATAL.transcript");
    s.preload.extend(pre);
    let mut h = Harness::start(s).await;
    for st in steps {
        match st {
            Step::Send(c) => h.send(&c).await,
            Step::Event(e) => h.inject(e).await,
        }
    }
    // Byte-exact, including the broker's own MANAGEMENT lines (fixed clock).
    assert_eq!(h.text(), fixture_text(rel));
    assert!(h.eof, ">FATAL must close the session");
}
