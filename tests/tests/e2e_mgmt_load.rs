//! The management interface of a running daemon under load: 20 concurrent management clients —
//! one that never reads (and fills its socket with `status 3` replies), one streaming `log on all`,
//! `bytecount 1` and `state on`, eighteen polling `status 3` — while stock clients connect and
//! disconnect and traffic crosses the tunnel. The pollers keep getting complete, well-formed
//! answers; the stalled client is dropped (the broker says so) without holding anyone up; the
//! streamer sees its notifications; the 21st connection over `management-max-clients` is refused
//! with an `ERROR:` line; the tunnel loses nothing. Bounded: about 20 s of load.
//!
//! The throughput figure with and without this load is measured by `bench/mgmt-load.sh`, not here.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);
const LOAD: Duration = Duration::from_secs(16);

/// What one poller saw.
#[derive(Debug, Default)]
struct PollStats {
    answers: u32,
    worst: Duration,
    malformed: Vec<String>,
}

#[test]
fn twenty_management_clients_while_clients_connect() {
    let Some(p) = require_privileged("mgmt_load") else {
        return;
    };
    let dir = TestDir::new("mgmt_load").expect("test dir");
    let net = NetPair::new(&p, "ml").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(3), opts).expect("server dir");
    let sock = dir.path().join("mgmt.sock");
    let extra = [
        format!("management {} unix", sock.display()),
        "management-max-clients 20".to_string(),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let client = |cn: &str| {
        start_stock_client(
            &dir,
            net.client_ns(),
            cn,
            setup.profile(cn).expect("profile"),
            &ClientOverrides::default(),
        )
        .expect("client")
    };
    let mut c1 = client("client1");
    c1.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client1 up");

    let stop = Arc::new(AtomicBool::new(false));

    // 1. the client that never reads: asks for much output and then sits on it
    let mut stalled = UnixStream::connect(&sock).expect("connect stalled");
    stalled
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let _ = stalled.write_all(b"log on all\r\nstate on\r\nbytecount 1\r\n");
    for _ in 0..190 {
        if stalled.write_all(b"status 3\r\n").is_err() {
            break;
        }
    }

    // 2. the streamer
    let streamer = {
        let stop = Arc::clone(&stop);
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut m = MgmtClient::connect(&sock);
            m.cmd("log on all", Some("END"));
            m.cmd("state on", None);
            m.cmd("bytecount 1", None);
            let (mut bytecount, mut logs) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                match m.try_line(Instant::now() + Duration::from_millis(500)) {
                    Ok(l) if l.starts_with(">BYTECOUNT_CLI:") => bytecount += 1,
                    Ok(l) if l.starts_with(">LOG:") => logs += 1,
                    Ok(_) => {}
                    Err(e) if e.starts_with("no complete line") => {}
                    Err(e) => panic!("streamer: {e}"),
                }
            }
            (bytecount, logs)
        })
    };

    // 3. eighteen pollers
    let pollers: Vec<_> = (0..18)
        .map(|i| {
            let stop = Arc::clone(&stop);
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut m = MgmtClient::connect(&sock);
                let mut st = PollStats::default();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = m.cmd("status 3", Some("END"));
                    st.worst = st.worst.max(t.elapsed());
                    let ok = r.starts_with("TITLE\t")
                        && r.contains("\r\nHEADER\tCLIENT_LIST\t")
                        && r.contains("\r\nGLOBAL_STATS\t")
                        && r.ends_with("END\r\n");
                    if ok {
                        st.answers += 1;
                    } else if st.malformed.len() < 3 {
                        st.malformed.push(format!("poller {i}: {r:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                st
            })
        })
        .collect();

    // The 21st session is over the cap.
    std::thread::sleep(Duration::from_secs(1));
    let mut over = UnixStream::connect(&sock).expect("connect over the cap");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut refusal = String::new();
    let _ = over.read_to_string(&mut refusal);
    assert!(
        refusal.starts_with("ERROR:") && refusal.contains("management"),
        "over-cap refusal: {refusal:?}"
    );

    // Clients come and go, traffic flows.
    let start = Instant::now();
    let mut c2 = client("client2");
    c2.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client2 up");
    let flood = run(
        Some(net.client_ns()),
        "ping",
        &[
            "-n", "-q", "-i", "0.01", "-c", "500", "-w", "20", "10.8.0.1",
        ],
        Duration::from_secs(30),
    )
    .expect("ping");
    let flood_text = String::from_utf8_lossy(&flood.stdout).into_owned();
    assert!(
        flood.status.success() && flood_text.contains(" 0% packet loss"),
        "tunnel traffic during the load: {flood_text}"
    );
    c2.stop().expect("stop client2");
    let mut c3 = client("client3");
    c3.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client3 up");
    if let Some(rest) = LOAD.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for h in pollers {
        let st = h.join().expect("poller");
        assert!(st.malformed.is_empty(), "{:?}", st.malformed);
        assert!(st.answers >= 20, "a poller got only {} answers", st.answers);
        assert!(
            st.worst < Duration::from_secs(5),
            "a status answer took {:?}",
            st.worst
        );
        total += st.answers;
    }
    let (bytecount, logs) = streamer.join().expect("streamer");
    assert!(bytecount >= 5, "bytecount notifications: {bytecount}");
    assert!(logs >= 1, "log notifications: {logs}");
    eprintln!("status 3 answers: {total} in {:?}", LOAD);

    // The stalled client was dropped: its socket reaches EOF once drained.
    server
        .wait_for_line(
            "MANAGEMENT: dropping slow management client",
            Duration::from_secs(20),
        )
        .expect("the broker drops the stalled client");
    stalled
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut b = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("stalled client socket: {e}"),
        }
        assert!(Instant::now() < deadline, "stalled client never closed");
    }

    // Everyone else is fine: a new management session answers, the tunnel works, nobody
    // reconnected, the broker is the same process.
    let mut m = MgmtClient::connect(&sock);
    let st = m.cmd("status 3", Some("END"));
    assert!(st.contains("CLIENT_LIST\tclient1\t"), "{st}");
    assert!(st.contains("CLIENT_LIST\tclient3\t"), "{st}");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("tunnel");
    assert_eq!(
        c1.count_lines(INIT_COMPLETE),
        1,
        "client1 never reconnected"
    );
    assert!(server.try_wait().expect("wait").is_none());
    assert_eq!(
        server.count_lines("broker process"),
        1,
        "the broker never restarted"
    );
}
