//! Hostile management clients against a live daemon (TCP management listener with a password
//! file, as many deployments run it): three wrong passwords (closed after the third prompt, as
//! OpenVPN 2.6.14 — fixture `mgmt-server-tcp/password-wrong-x3.raw`), a 1 MiB line without a
//! newline, NUL bytes and binary input, and 10,000 commands a second. Each time the broker stays
//! the same process with bounded memory, a well-behaved session keeps answering, and the tunnel
//! keeps passing traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);
const PASSWORD: &str = "s3cret pass";

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    s
}

/// Reads until `want` appears, EOF, or `timeout`; returns what arrived and whether EOF was seen.
fn read_until(s: &mut TcpStream, want: &str, timeout: Duration) -> (String, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut b = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
        }
        if !want.is_empty() && String::from_utf8_lossy(&out).contains(want) {
            break;
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

/// A logged-in session.
fn login(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    let (t, _) = read_until(&mut s, "ENTER PASSWORD:", Duration::from_secs(5));
    assert!(t.starts_with("ENTER PASSWORD:"), "{t:?}");
    s.write_all(format!("{PASSWORD}\r\n").as_bytes())
        .expect("password");
    let (t, _) = read_until(&mut s, ">INFO:", Duration::from_secs(5));
    assert!(t.contains("SUCCESS: password is correct"), "{t:?}");
    s
}

/// `pid` on a logged-in session answers within `within`.
fn answers(s: &mut TcpStream, within: Duration) -> bool {
    let _ = read_until(s, "", Duration::from_millis(50));
    if s.write_all(b"pid\r\n").is_err() {
        return false;
    }
    let (t, _) = read_until(s, "SUCCESS: pid=", within);
    t.contains("SUCCESS: pid=")
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn hostile_management_clients_are_contained() {
    let Some(p) = require_privileged("mgmt_abuse") else {
        return;
    };
    let dir = TestDir::new("mgmt_abuse").expect("test dir");
    let net = NetPair::new(&p, "ma").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let pw = dir.path().join("mgmt.pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("pw file");
    let extra = [format!("management 127.0.0.1 7505 {}", pw.display())];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
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
    let broker = child_named(server.pid(), "bulwark-mgmt").expect("broker process");
    let rss_before = vm_rss_kib(broker);
    let addr: SocketAddr = "127.0.0.1:7505".parse().expect("addr");

    let report = in_netns(net.server_ns(), move || {
        let mut good = login(addr);
        let mut rss_max = 0;
        let mut notes = Vec::new();

        // Three wrong passwords: a prompt after each, then the connection is closed.
        let mut s = connect(addr);
        let _ = read_until(&mut s, "ENTER PASSWORD:", Duration::from_secs(5));
        for w in ["wrong1", "help", "wrong3"] {
            let _ = s.write_all(format!("{w}\r\n").as_bytes());
        }
        let (t, eof) = read_until(&mut s, "", Duration::from_secs(5));
        assert_eq!(
            t, "ENTER PASSWORD:ENTER PASSWORD:",
            "after three wrong passwords"
        );
        assert!(eof, "closed after the third wrong password");
        assert!(answers(&mut good, Duration::from_secs(3)));

        // A 1 MiB line: as OpenVPN's 1024-byte command buffer, an over-long line restarts the
        // buffer (memory stays bounded) and only its tail reaches the parser.
        let mut s = login(addr);
        let mut blob = vec![b'A'; 1 << 20];
        blob.extend_from_slice(b"\r\n");
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        s.write_all(&blob)
            .expect("the broker keeps reading a 1 MiB line");
        let (t, eof) = read_until(&mut s, "\r\n", Duration::from_secs(5));
        notes.push(format!(
            "1 MiB line: {} bytes of reply, closed {eof}",
            t.len()
        ));
        assert_eq!(
            t,
            "ERROR: unknown command, enter 'help' for more options\r\n"
        );
        assert!(
            t.len() < 1200,
            "only the buffered tail is echoed: {} bytes",
            t.len()
        );
        assert!(
            answers(&mut s, Duration::from_secs(3)),
            "the session still works"
        );
        assert!(answers(&mut good, Duration::from_secs(3)));
        rss_max = rss_max.max(vm_rss_kib(broker));

        // NUL bytes and binary input.
        let mut s = login(addr);
        let _ = s.write_all(b"pid\0\r\n\xff\xfe\x00binary\r\n");
        let (t, _) = read_until(&mut s, "rejected", Duration::from_secs(5));
        assert!(
            t.contains("ERROR: binary input (NUL byte or invalid UTF-8) rejected"),
            "{t:?}"
        );
        assert!(
            !t.contains("SUCCESS: pid="),
            "the NUL line did not run: {t:?}"
        );
        assert!(
            answers(&mut s, Duration::from_secs(3)),
            "the session still works"
        );

        // 10,000 commands in one second from one connection, while another session is polled.
        let mut flood = login(addr);
        let _ = flood.set_write_timeout(Some(Duration::from_secs(2)));
        let start = Instant::now();
        let mut sent = 0u32;
        let mut slowest = Duration::ZERO;
        while sent < 10_000 && start.elapsed() < Duration::from_secs(3) {
            let batch = b"pid\r\n".repeat(500);
            if flood.write_all(&batch).is_err() {
                break;
            }
            sent += 500;
            let _ = read_until(&mut flood, "", Duration::from_millis(1));
            let t = Instant::now();
            assert!(
                answers(&mut good, Duration::from_secs(3)),
                "good session during the flood"
            );
            slowest = slowest.max(t.elapsed());
            rss_max = rss_max.max(vm_rss_kib(broker));
        }
        let (t, _) = read_until(&mut flood, "", Duration::from_secs(2));
        notes.push(format!(
            "flood: {sent} commands in {:?}; slowest good answer {slowest:?}; flood session got {} SUCCESS lines, {} ERROR lines",
            start.elapsed(),
            t.matches("SUCCESS: pid=").count(),
            t.matches("ERROR").count()
        ));
        rss_max = rss_max.max(vm_rss_kib(broker));
        assert!(answers(&mut good, Duration::from_secs(3)));
        (rss_max, notes)
    });
    let (rss_max, notes) = report;
    eprintln!("broker VmRSS {rss_before} KiB before, max {rss_max} KiB during; {notes:#?}");
    assert!(
        rss_max < 64 * 1024,
        "broker memory stays bounded: {rss_max} KiB"
    );
    assert_eq!(
        child_named(server.pid(), "bulwark-mgmt"),
        Some(broker),
        "the broker is the same process"
    );
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("tunnel unaffected");
    assert_eq!(
        c.count_lines(INIT_COMPLETE),
        1,
        "the client never reconnected"
    );
    assert!(server.try_wait().expect("wait").is_none());
}
