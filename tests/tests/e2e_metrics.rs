//! The Prometheus endpoint of a running daemon (`metrics-listen`, served by the broker) with stock
//! OpenVPN 2.6 clients connected: the scrape parses as the text exposition format, the
//! openvpn_exporter-compatible series agree with the status file written in the same run (each
//! per-client byte counter lies between two status files read before and after it), Bulwark's
//! counters move, other paths get 404, the unix-socket form works with its mode, and a
//! non-loopback address is refused at configuration load with file:line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_mgmt::metrics::check_exposition;
use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

fn exchange(mut s: impl Read + Write, request: &str) -> String {
    s.write_all(request.as_bytes()).expect("send request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP request to `addr` from inside the network namespace `ns` (the daemon's loopback is
/// the namespace's own).
fn http_in_ns(ns: &str, addr: SocketAddr, request: &str) -> String {
    let request = request.to_string();
    in_netns(ns, move || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        exchange(s, &request)
    })
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n")
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

fn sample(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `(updated, bytes received, bytes sent)` of `cn` in a status-version 2 file.
fn status_row(text: &str, cn: &str) -> Option<(u64, u64, u64)> {
    let updated = text
        .lines()
        .find_map(|l| l.strip_prefix("TIME,"))
        .and_then(|r| r.rsplit(',').next())
        .and_then(|v| v.parse().ok())?;
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with(&format!("CLIENT_LIST,{cn},")))?
        .split(',')
        .collect();
    Some((updated, row[5].parse().ok()?, row[6].parse().ok()?))
}

fn read_status(path: &Path, cn: &str) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| status_row(&t, cn))
        {
            return r;
        }
        assert!(Instant::now() < deadline, "{cn} not in {}", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scrape_matches_the_status_file_and_parses() {
    let Some(p) = require_privileged("metrics") else {
        return;
    };
    let dir = TestDir::new("metrics").expect("test dir");
    let net = NetPair::new(&p, "mx").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(2), opts).expect("server dir");
    let status = dir.path().join("status.log");
    let sock = dir.path().join("metrics.sock");
    let base = std::fs::read_to_string(setup.server_conf()).expect("conf");
    let base: String = base
        .lines()
        .filter(|l| !l.starts_with("status"))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = dir.path().join("metrics.conf");
    std::fs::write(
        &conf,
        format!(
            "{base}status {} 1\nstatus-version 2\nmetrics-listen 127.0.0.1 9176\nmetrics-per-client 10\n",
            status.display()
        ),
    )
    .expect("write conf");
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", &conf, &[]).expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let mut clients = Vec::new();
    for cn in ["client1", "client2"] {
        let mut c = start_stock_client(
            &dir,
            net.client_ns(),
            cn,
            setup.profile(cn).expect("profile"),
            &ClientOverrides::default(),
        )
        .expect("client");
        c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
            .expect("client up");
        clients.push(c);
    }
    ping(net.client_ns(), "10.8.0.1", 5, Duration::from_secs(15)).expect("traffic");
    let addr: SocketAddr = "127.0.0.1:9176".parse().expect("addr");

    // status file before, scrape, status file after (a newer render)
    let before = read_status(&status, "client1");
    let resp = http_in_ns(net.server_ns(), addr, &get("/metrics"));
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.contains("Content-Type: text/plain; version=0.0.4"),
        "{resp}"
    );
    let text = body(&resp).to_string();
    let n = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(n > 20, "{text}");
    let scraped_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let a = read_status(&status, "client1");
        if a.0 > scraped_at {
            break a;
        }
        assert!(Instant::now() < deadline, "status file not re-rendered");
        std::thread::sleep(Duration::from_millis(200));
    };
    let sp = format!("status_path=\"{}\"", status.display());
    assert_eq!(sample(&text, &format!("openvpn_up{{{sp}}}")), Some(1));
    assert_eq!(
        sample(&text, &format!("openvpn_server_connected_clients{{{sp}}}")),
        Some(2),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("openvpn_openvpn_server_connected_clients{{{sp}}}")
        ),
        Some(2)
    );
    let rx = sample(
        &text,
        "openvpn_server_client_received_bytes_total{common_name=\"client1\",",
    )
    .expect("client1 received bytes");
    let tx = sample(
        &text,
        "openvpn_server_client_sent_bytes_total{common_name=\"client1\",",
    )
    .expect("client1 sent bytes");
    assert!(
        before.1 <= rx && rx <= after.1,
        "received {rx} outside the status files' {} ..= {}",
        before.1,
        after.1
    );
    assert!(
        before.2 <= tx && tx <= after.2,
        "sent {tx} outside the status files' {} ..= {}",
        before.2,
        after.2
    );
    assert!(rx > 0 && tx > 0);
    assert!(
        sample(&text, "bulwark_handshakes_completed_total").is_some_and(|v| v >= 2),
        "{text}"
    );
    assert_eq!(sample(&text, "bulwark_build_info{"), Some(1));

    // only GET /metrics
    let resp = http_in_ns(net.server_ns(), addr, &get("/"));
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    let resp = http_in_ns(
        net.server_ns(),
        addr,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    let resp = http_in_ns(net.server_ns(), addr, "\x16\x03\x01 binary\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // the daemon and the tunnel are unaffected
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("tunnel");
    assert!(server.try_wait().expect("wait").is_none());

    // no unix socket was configured
    assert!(!sock.exists());
}

#[test]
fn unix_socket_endpoint_and_loopback_only_configuration() {
    let Some(p) = require_privileged("metrics_unix") else {
        return;
    };
    let dir = TestDir::new("metrics_unix").expect("test dir");
    let net = NetPair::new(&p, "mu").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let base = std::fs::read_to_string(setup.server_conf()).expect("conf");

    // A non-loopback address is refused at load, naming the line.
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, format!("{base}metrics-listen 0.0.0.0 9176\n")).expect("write");
    let out = std::process::Command::new(bulwark_bin().expect("bulwark binary"))
        .arg("check-config")
        .arg("--config")
        .arg(&bad)
        .output()
        .expect("run bulwark");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let line = base.lines().count() + 1;
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("not a loopback address") && text.contains(&format!("bad.conf:{line}")),
        "{text}"
    );

    let sock = dir.path().join("metrics.sock");
    let conf = dir.path().join("unix.conf");
    std::fs::write(
        &conf,
        format!("{base}metrics-listen {} unix nogroup\n", sock.display()),
    )
    .expect("write conf");
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
    let meta = std::fs::metadata(&sock).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .expect("group lookup")
        .map(|g| g.gid.as_raw());
    if let Some(g) = nogroup {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.gid(), g);
    }
    // The client prints "Initialization Sequence Completed" when the PUSH_REPLY arrives; the
    // server's report of the connect reaches the broker a moment later (CI saw 0 once): scrape until
    // the client is counted, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        let s = UnixStream::connect(&sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let resp = exchange(s, &get("/metrics"));
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        let counted = sample(body(&resp), "openvpn_server_connected_clients{status_path=");
        if counted == Some(1) || Instant::now() > deadline {
            break resp;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = body(&resp);
    check_exposition(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // no per-client series without metrics-per-client
    assert_eq!(
        sample(text, "openvpn_server_connected_clients{status_path="),
        Some(1),
        "{text}"
    );
    assert!(!text.contains("common_name="), "{text}");
}
