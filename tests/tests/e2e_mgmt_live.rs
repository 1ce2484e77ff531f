//! The management interface of a running Bulwark daemon with stock OpenVPN 2.6 clients connected:
//! the broker process serves the socket, commands that need the tunnel travel broker → parent →
//! worker and back, client events reach the notification stream, status files are rendered by the
//! broker and written by the parent, `management-hold` holds the worker back until `hold release`,
//! `signal SIGUSR2` prints the status to the log.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

struct Rig {
    _p: Privileged,
    dir: TestDir,
    net: NetPair,
    setup: ServerSetup,
    server: Proc,
    sock: PathBuf,
}

fn start(test: &str, extra: &[String], wait_init: bool) -> Option<Rig> {
    let p = require_privileged(test)?;
    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, "mg").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(2), opts).expect("server dir");
    let sock = dir.path().join("mgmt.sock");
    let mut lines = vec![
        format!("management {} unix", sock.display()),
        format!("status {} 1", dir.path().join("status.txt").display()),
    ];
    lines.extend(extra.iter().map(|l| {
        l.replace(
            "STATUSJSON",
            &dir.path().join("status.json").display().to_string(),
        )
        .replace(
            "MONSOCK",
            &dir.path().join("monitor.sock").display().to_string(),
        )
        .replace(
            "AUDITFILE",
            &dir.path().join("audit.log").display().to_string(),
        )
    }));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start bulwark");
    if wait_init {
        server
            .wait_for_line(INIT_COMPLETE, SERVER_UP)
            .expect("bulwark up");
    }
    Some(Rig {
        _p: p,
        dir,
        net,
        setup,
        server,
        sock,
    })
}

impl Rig {
    fn client(&self, cn: &str) -> Proc {
        start_stock_client(
            &self.dir,
            self.net.client_ns(),
            cn,
            self.setup.profile(cn).expect("profile"),
            &ClientOverrides::default(),
        )
        .expect("start stock client")
    }
}

/// The rows of a status-version 2/3 text whose first field is `tag`.
fn rows<'a>(text: &'a str, tag: &str, sep: char) -> Vec<Vec<&'a str>> {
    text.lines()
        .map(|l| l.trim_end_matches('\r').split(sep).collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&tag))
        .collect()
}

#[test]
fn status_kill_client_kill_bytecount_and_status_file() {
    let Some(mut rig) = start("mgmt_live_status_kill", &["status-version 3".into()], true) else {
        return;
    };
    let status_path = rig.dir.path().join("status.txt");
    let mut c1 = rig.client("client1");
    c1.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client1 up");
    ping(rig.net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("ping");

    let mut m = MgmtClient::connect(&rig.sock);
    let v = m.cmd("version", Some("END"));
    assert!(v.contains("OpenVPN Version: OpenVPN 2.6.14 "), "{v}");
    assert!(v.contains("Management Version: 5"), "{v}");
    let st = m.cmd("status 3", Some("END"));
    let clients = rows(&st, "CLIENT_LIST", '\t');
    let c = clients
        .iter()
        .find(|r| r.get(1) == Some(&"client1"))
        .unwrap_or_else(|| panic!("client1 in status 3: {st}"));
    assert_eq!(c[3], "10.8.0.2", "virtual address: {st}");
    assert!(c[2].starts_with(&rig.net.client_addr.to_string()), "{st}");
    let cid = c[10].to_string();
    assert!(rows(&st, "ROUTING_TABLE", '\t')
        .iter()
        .any(|r| r[1] == "10.8.0.2" && r[2] == "client1"));
    let ls = m.cmd("load-stats", None);
    assert!(ls.starts_with("SUCCESS: nclients=1,bytesin="), "{ls}");
    let state = m.cmd("state all", Some("END"));
    assert!(state.contains(",CONNECTED,SUCCESS,10.8.0.1,"), "{state}");
    assert_eq!(
        m.cmd("bytecount 1", None),
        "SUCCESS: bytecount interval changed\r\n"
    );
    // traffic makes the per-client counter tick
    ping(rig.net.client_ns(), "10.8.0.1", 3, Duration::from_secs(10)).expect("ping");
    let tick = m.notification(&format!(">BYTECOUNT_CLI:{cid},"), Duration::from_secs(10));
    assert!(tick.split(',').count() == 3, "{tick}");
    m.cmd("bytecount 0", None);

    // the status file is rewritten by the parent from the broker's rendering
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&status_path).unwrap_or_default();
        if rows(&text, "CLIENT_LIST", '\t')
            .iter()
            .any(|r| r.get(1) == Some(&"client1"))
        {
            assert!(text.starts_with("TITLE\t"), "{text}");
            assert!(text.ends_with("END\n"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status file never listed client1: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // client-kill with RESTART (the default) on a second client: it is told and comes back with
    // a new CID; then HALT: the stock client exits
    let mut c2 = rig.client("client2");
    c2.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client2 up");
    let cid_of = |m: &mut MgmtClient, cn: &str| {
        let st = m.cmd("status 2", Some("END"));
        rows(&st, "CLIENT_LIST", ',')
            .iter()
            .find(|r| r.get(1) == Some(&cn))
            .map(|r| r[10].to_string())
            .unwrap_or_else(|| panic!("{cn} in {st}"))
    };
    let cid2 = cid_of(&mut m, "client2");
    let r = m.cmd(&format!("client-kill {cid2}"), None);
    assert_eq!(r, "SUCCESS: client-kill command succeeded\r\n");
    c2.wait_for_nth(INIT_COMPLETE, 2, CLIENT_UP)
        .expect("client2 reconnects after client-kill RESTART");
    assert!(
        c2.log().contains("server-pushed-connection-reset"),
        "{}",
        tail(&c2.log(), 20)
    );
    let cid2b = cid_of(&mut m, "client2");
    assert_ne!(cid2b, cid2);
    let r = m.cmd(&format!("client-kill {cid2b} HALT"), None);
    assert_eq!(r, "SUCCESS: client-kill command succeeded\r\n");
    let ex = c2.wait_timeout(Duration::from_secs(15));
    assert!(
        ex.is_ok(),
        "client exits after HALT: {}",
        tail(&c2.log(), 20)
    );
    assert!(
        c2.log().contains("SIGTERM[soft,server-pushed-halt]"),
        "{}",
        tail(&c2.log(), 20)
    );
    // kill by common name: as OpenVPN 2.6, the instance is closed at once and the client is not
    // told (it would notice by ping-restart)
    let k = m.cmd("kill client1", None);
    assert_eq!(
        k,
        "SUCCESS: common name 'client1' found, 1 client(s) killed\r\n"
    );
    let st = m.cmd("status 3", Some("END"));
    assert!(
        !rows(&st, "CLIENT_LIST", '\t')
            .iter()
            .any(|r| r.get(10) == Some(&cid.as_str())),
        "client1's instance is gone: {st}"
    );
    assert_eq!(
        m.cmd("kill client1", None),
        "ERROR: common name 'client1' not found\r\n"
    );
    let _ = &mut c1;
    let unknown = m.cmd("client-kill 999999", None);
    assert!(unknown.starts_with("ERROR:"), "{unknown}");
    assert!(
        rig.server.try_wait().unwrap().is_none(),
        "daemon still running"
    );
}

#[test]
fn hold_until_release_then_sigusr2_prints_status() {
    let Some(mut rig) = start("mgmt_live_hold", &["management-hold".into()], false) else {
        return;
    };
    rig.server
        .wait_for_line("Need hold release from management interface", SERVER_UP)
        .expect("daemon holds");
    let mut m = MgmtClient::connect(&rig.sock);
    m.notification(">HOLD:Waiting for hold release:0", Duration::from_secs(5));
    // nothing serves clients while held
    let mut c = rig.client("client1");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.count_lines(INIT_COMPLETE), 0, "no tunnel while held");
    assert!(rig.server.log().matches(INIT_COMPLETE).count() == 0);
    assert_eq!(
        m.cmd("hold release", None),
        "SUCCESS: hold release succeeded\r\n"
    );
    rig.server
        .wait_for_line(INIT_COMPLETE, SERVER_UP)
        .expect("serving after release");
    c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client connects after release");
    let r = m.cmd("signal SIGUSR2", None);
    assert_eq!(r, "SUCCESS: signal SIGUSR2 thrown\r\n");
    rig.server
        .wait_for_line("OpenVPN CLIENT LIST", Duration::from_secs(10))
        .expect("SIGUSR2 status lines in the log");
    // the state history shows the start-up sequence (no ADD_ROUTES: no `route` directives)
    let state = m.cmd("state all", Some("END"));
    for s in [",CONNECTING,", ",ASSIGN_IP,", ",CONNECTED,SUCCESS,"] {
        assert!(state.contains(s), "{s} in {state}");
    }
    assert!(!state.contains(",ADD_ROUTES,"), "{state}");
}

#[test]
fn log_history_and_realtime_log_and_verb() {
    let Some(rig) = start("mgmt_live_log", &[], true) else {
        return;
    };
    let mut m = MgmtClient::connect(&rig.sock);
    // the start-up lines are in the log cache, in OpenVPN's >LOG form
    let hist = m.cmd("log all", Some("END"));
    assert!(
        hist.lines()
            .any(|l| l.ends_with(",I,Initialization Sequence Completed")),
        "{hist}"
    );
    assert_eq!(
        m.cmd("log on", None),
        "SUCCESS: real-time log notification set to ON\r\n"
    );
    let mut c = rig.client("client1");
    c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client up");
    let l = m.notification(">LOG:", Duration::from_secs(10));
    assert!(l.split(',').count() >= 3, "{l}");
    m.notification(">LOG:", Duration::from_secs(10));
    let peer = m.notification(">LOG:", Duration::from_secs(10));
    let _ = peer;
    assert_eq!(m.cmd("verb", None), "SUCCESS: verb=3\r\n");
    assert_eq!(m.cmd("verb 4", None), "SUCCESS: verb level changed\r\n");
    assert_eq!(m.cmd("verb", None), "SUCCESS: verb=4\r\n");
}

#[test]
fn management_client_auth_approves_one_client_and_denies_another() {
    let Some(rig) = start(
        "mgmt_live_client_auth",
        &["management-client-auth".into()],
        true,
    ) else {
        return;
    };
    let mut m = MgmtClient::connect(&rig.sock);
    let mut c1 = rig.client("client1");
    // CONNECT + ENV block for client1
    let connect = m.notification(">CLIENT:CONNECT,", Duration::from_secs(30));
    let parts: Vec<&str> = connect
        .trim_start_matches(">CLIENT:CONNECT,")
        .split(',')
        .collect();
    let (cid, kid) = (parts[0].to_string(), parts[1].to_string());
    let mut env = Vec::new();
    loop {
        let l = m.notification(">CLIENT:ENV,", Duration::from_secs(5));
        if l == ">CLIENT:ENV,END" {
            break;
        }
        env.push(l);
    }
    assert!(
        env.iter().any(|l| l == ">CLIENT:ENV,common_name=client1"),
        "{env:?}"
    );
    assert!(
        env.iter().any(|l| l.starts_with(">CLIENT:ENV,IV_VER=")),
        "{env:?}"
    );
    assert!(
        env.iter()
            .any(|l| l.starts_with(">CLIENT:ENV,untrusted_ip=")),
        "{env:?}"
    );
    // approve with a pushed route, as a client-connect config line
    m.s.write_all(
        format!("client-auth {cid} {kid}\r\npush \"route 10.66.0.0 255.255.0.0\"\r\nEND\r\n")
            .as_bytes(),
    )
    .expect("send client-auth");
    assert_eq!(m.reply(None), "SUCCESS: client-auth command succeeded\r\n");
    c1.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("approved client connects");
    assert!(c1.log().contains("10.66.0.0"), "{}", tail(&c1.log(), 30));
    let est = m.notification(
        &format!(">CLIENT:ESTABLISHED,{cid}"),
        Duration::from_secs(10),
    );
    assert!(!est.is_empty());

    // deny the second client with a reason for the client
    let mut c2 = rig.client("client2");
    let connect = m.notification(">CLIENT:CONNECT,", Duration::from_secs(30));
    let parts: Vec<&str> = connect
        .trim_start_matches(">CLIENT:CONNECT,")
        .split(',')
        .collect();
    let r = m.cmd(
        &format!(
            "client-deny {} {} \"not on the list\" \"go away\"",
            parts[0], parts[1]
        ),
        None,
    );
    assert_eq!(r, "SUCCESS: client-deny command succeeded\r\n");
    c2.wait_for_line("AUTH_FAILED", CLIENT_UP)
        .expect("denied client sees AUTH_FAILED");
    assert_eq!(c2.count_lines(INIT_COMPLETE), 0);
    // the broker knows no such waiting client any more
    let again = m.cmd(&format!("client-auth-nt {} {}", parts[0], parts[1]), None);
    assert!(again.starts_with("ERROR:"), "{again}");
    ping(rig.net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("client1 traffic");
}

#[test]
fn json_status_file_with_mode_and_group() {
    use std::os::unix::fs::MetadataExt;
    let Some(rig) = start(
        "mgmt_live_status_json",
        &[
            "status-json STATUSJSON 1".into(),
            "status-file-mode 0640".into(),
            "status-file-group nogroup".into(),
        ],
        true,
    ) else {
        return;
    };
    let mut c = rig.client("client1");
    c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client up");
    let json = rig.dir.path().join("status.json");
    let text_path = rig.dir.path().join("status.txt");
    let deadline = Instant::now() + Duration::from_secs(10);
    let doc = loop {
        let t = std::fs::read_to_string(&json).unwrap_or_default();
        if t.contains("client1") {
            break t;
        }
        assert!(Instant::now() < deadline, "JSON status lists client1: {t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let v: serde_json::Value = serde_json::from_str(&doc).expect("valid JSON");
    assert_eq!(v["schema"], "bulwark.status.v1");
    assert_eq!(v["snapshot"]["clients"][0]["common_name"], "client1");
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .expect("group db")
        .expect("nogroup exists")
        .gid
        .as_raw();
    for p in [&json, &text_path] {
        let m = std::fs::metadata(p).expect("metadata");
        assert_eq!(m.mode() & 0o7777, 0o640, "{}", p.display());
        assert_eq!(m.gid(), nogroup, "{}", p.display());
    }
}

#[test]
fn read_only_monitor_socket_and_audit_file() {
    let Some(rig) = start(
        "mgmt_live_monitor_audit",
        &[
            "management-monitor-socket MONSOCK".into(),
            "management-audit AUDITFILE".into(),
        ],
        true,
    ) else {
        return;
    };
    let mon = rig.dir.path().join("monitor.sock");
    let audit = rig.dir.path().join("audit.log");
    let mut m = MgmtClient::connect(&mon);
    let st = m.cmd("status 3", Some("END"));
    assert!(st.contains("TITLE\t"), "{st}");
    let denied = m.cmd("kill client1", None);
    assert!(
        denied.starts_with("ERROR:"),
        "monitor role cannot kill: {denied}"
    );
    let denied = m.cmd("signal SIGTERM", None);
    assert!(denied.starts_with("ERROR:"), "{denied}");
    let mut admin = MgmtClient::connect(&rig.sock);
    assert_eq!(admin.cmd("verb", None), "SUCCESS: verb=3\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = std::fs::read_to_string(&audit).unwrap_or_default();
        if t.contains("signal SIGTERM") && t.contains("verb") {
            break t;
        }
        assert!(Instant::now() < deadline, "audit records: {t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let kill = text
        .lines()
        .find(|l| l.contains("kill client1"))
        .expect("kill audited");
    assert!(
        kill.contains("role=monitor") && kill.contains("outcome=denied"),
        "{kill}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("role=admin") && l.contains("outcome=ok")),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit)
        .expect("audit file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(rig
        .server
        .log()
        .contains("Initialization Sequence Completed"));
}
