//! Interop of the Bulwark daemon (parent + sandboxed worker + broker) with the stock OpenVPN 2.6 client.
//!
//! Server in one network namespace, stock `/usr/sbin/openvpn` client(s) in the other, joined by a veth
//! pair. Covers every transport, control-channel wrapping, data cipher and key type at least once, IPv6
//! inside the tunnel, bulk transfers with checksums (also across client-initiated renegotiations),
//! client-to-client, CRL / foreign CA / wrong tls-crypt key refusals, a `comp-lzo` client, and keepalive
//! expiry of a killed client.

use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, KeyKind, Proto, ServerConfOptions, WrapMode};
use bulwark_tests::*;
use nix::sys::signal::Signal;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

struct Rig {
    p: Privileged,
    dir: TestDir,
    net: NetPair,
    setup: ServerSetup,
    server: Proc,
}

impl Rig {
    fn start(
        test: &str,
        init: InitOptions,
        mut opts: ServerConfOptions,
        extra_server: &[&str],
    ) -> Option<Self> {
        let p = require_privileged(test)?;
        let dir = TestDir::new(test).expect("test dir");
        let net = NetPair::new(&p, "io").expect("namespaces");
        opts.remote_host = net.server_addr.to_string();
        let setup = prepare_server(&dir, &init, opts).expect("server directory");
        let mut server = start_bulwark_server(
            &dir,
            net.server_ns(),
            "bulwark",
            setup.server_conf(),
            extra_server,
        )
        .expect("start bulwark");
        server
            .wait_for_line(INIT_COMPLETE, SERVER_UP)
            .expect("bulwark up");
        Some(Rig {
            p,
            dir,
            net,
            setup,
            server,
        })
    }

    fn client(&self, cn: &str, name: &str, ov: &ClientOverrides) -> Proc {
        start_stock_client(
            &self.dir,
            self.net.client_ns(),
            name,
            self.setup.profile(cn).expect("profile"),
            ov,
        )
        .expect("start stock client")
    }

    fn connect(&self, cn: &str, ov: &ClientOverrides) -> Proc {
        let mut c = self.client(cn, cn, ov);
        c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
            .expect("client reaches Initialization Sequence Completed");
        c
    }
}

fn ping_server(rig: &Rig) {
    ping(rig.net.client_ns(), "10.8.0.1", 3, Duration::from_secs(15))
        .expect("ping through the tunnel");
}

fn connect_and_ping(
    test: &str,
    kind: KeyKind,
    wrap: WrapMode,
    proto: Proto,
    data_ciphers: Option<&str>,
    extra: &[&str],
    client_extra: &[&str],
) {
    let init = InitOptions {
        key_kind: kind,
        ..InitOptions::with_clients(1)
    };
    let mut opts = ServerConfOptions {
        wrap,
        proto,
        ..Default::default()
    };
    if let Some(dc) = data_ciphers {
        opts.data_ciphers = dc.to_string();
    }
    let Some(rig) = Rig::start(test, init, opts, extra) else {
        return;
    };
    let ov = ClientOverrides {
        data_ciphers: data_ciphers.map(str::to_string),
        extra_lines: client_extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let _c = rig.connect("client1", &ov);
    ping_server(&rig);
}

#[test]
fn udp_tls_crypt_aes256gcm_ec() {
    connect_and_ping(
        "udp_tls_crypt_aes256gcm_ec",
        KeyKind::EcP256,
        WrapMode::TlsCrypt,
        Proto::Udp,
        None,
        &[],
        &[],
    );
}

#[test]
fn tcp_tls_crypt_ec() {
    connect_and_ping(
        "tcp_tls_crypt_ec",
        KeyKind::EcP256,
        WrapMode::TlsCrypt,
        Proto::Tcp,
        None,
        &[],
        &[],
    );
}

#[test]
fn udp_tls_auth_rsa() {
    connect_and_ping(
        "udp_tls_auth_rsa",
        KeyKind::Rsa2048,
        WrapMode::TlsAuth,
        Proto::Udp,
        None,
        &[],
        &[],
    );
}

#[test]
fn udp_tls_crypt_v2() {
    connect_and_ping(
        "udp_tls_crypt_v2",
        KeyKind::EcP256,
        WrapMode::TlsCryptV2,
        Proto::Udp,
        None,
        &[],
        &[],
    );
}

#[test]
fn tcp_no_wrapping_aes128gcm() {
    connect_and_ping(
        "tcp_no_wrapping_aes128gcm",
        KeyKind::EcP256,
        WrapMode::None,
        Proto::Tcp,
        Some("AES-128-GCM"),
        &[],
        &[],
    );
}

#[test]
fn udp_chacha20_poly1305() {
    connect_and_ping(
        "udp_chacha20_poly1305",
        KeyKind::EcP256,
        WrapMode::TlsCrypt,
        Proto::Udp,
        Some("CHACHA20-POLY1305"),
        &[],
        &[],
    );
}

#[test]
fn udp_aes256cbc_sha256() {
    connect_and_ping(
        "udp_aes256cbc_sha256",
        KeyKind::EcP256,
        WrapMode::TlsCrypt,
        Proto::Udp,
        Some("AES-256-CBC"),
        &["auth SHA256"],
        &["auth SHA256"],
    );
}

#[test]
fn comp_lzo_client_passes_traffic() {
    connect_and_ping(
        "comp_lzo_client_passes_traffic",
        KeyKind::EcP256,
        WrapMode::TlsCrypt,
        Proto::Udp,
        None,
        &[],
        &["comp-lzo"],
    );
}

#[test]
fn ipv4_and_ipv6_inside_the_tunnel() {
    let Some(rig) = Rig::start(
        "ipv4_and_ipv6_inside_the_tunnel",
        InitOptions::with_clients(1),
        ServerConfOptions::default(),
        &["server-ipv6 fd00:1::/64"],
    ) else {
        return;
    };
    let c = rig.connect("client1", &ClientOverrides::default());
    ping_server(&rig);
    run_ok(
        Some(rig.net.client_ns()),
        "ping",
        &["-6", "-c", "3", "-W", "5", "fd00:1::1"],
        Duration::from_secs(20),
    )
    .expect("ping6 through the tunnel");
    assert!(
        c.log().contains("fd00:1::1000"),
        "client got the first IPv6 pool address"
    );
}

/// Sends `size_mb` MiB of random data through the tunnel in the given direction and compares SHA-256.
fn transfer(rig: &Rig, size_mb: u32, client_to_server: bool, tag: &str) -> Duration {
    let data = rig.dir.path().join(format!("{tag}.bin"));
    let recv = rig.dir.path().join(format!("{tag}.recv"));
    run_ok(
        None,
        "sh",
        &[
            "-c",
            &format!("head -c {}M /dev/urandom > {}", size_mb, data.display()),
        ],
        Duration::from_secs(60),
    )
    .expect("make test data");
    // receiver listens on the side that receives; the sender connects to the tunnel address
    let (recv_ns, send_ns, dst) = if client_to_server {
        (rig.net.server_ns(), rig.net.client_ns(), "10.8.0.1")
    } else {
        (rig.net.client_ns(), rig.net.server_ns(), "10.8.0.2")
    };
    let mut receiver = Proc::spawn(
        &rig.dir,
        &format!("{tag}-recv"),
        Some(recv_ns),
        "sh",
        &[
            "-c",
            &format!(
                "socat -u TCP-LISTEN:5001,reuseaddr OPEN:{},creat,trunc",
                recv.display()
            ),
        ],
    )
    .expect("receiver");
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    run_ok(
        Some(send_ns),
        "socat",
        &[
            "-u",
            &format!("OPEN:{}", data.display()),
            &format!("TCP:{dst}:5001"),
        ],
        Duration::from_secs(180),
    )
    .expect("send through the tunnel within 180 s");
    receiver
        .wait_timeout(Duration::from_secs(60))
        .expect("receiver finished");
    let took = t0.elapsed();
    assert_eq!(sha256(&data), sha256(&recv), "data arrived intact ({tag})");
    took
}

fn sha256(p: &Path) -> String {
    let out =
        run_ok(None, "sha256sum", &[p.as_os_str()], Duration::from_secs(60)).expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn bulk_100mb_both_directions_and_across_renegotiation() {
    let Some(rig) = Rig::start(
        "bulk_100mb_both_directions_and_across_renegotiation",
        InitOptions::with_clients(1),
        ServerConfOptions::default(),
        &[],
    ) else {
        return;
    };
    let c = rig.connect("client1", &ClientOverrides::default());
    let up = transfer(&rig, 100, true, "up");
    let down = transfer(&rig, 100, false, "down");
    eprintln!("100 MiB client->server in {up:?}, server->client in {down:?}");
    drop(c);

    // a client renegotiating every 3 s during a transfer: nothing lost, nothing corrupted
    let mut c = rig.client(
        "client1",
        "client1-reneg",
        &ClientOverrides {
            extra_lines: vec!["reneg-sec 3".into()],
            ..Default::default()
        },
    );
    c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client reconnects");
    let before = c.count_lines("Control Channel: TLS");
    let t0 = Instant::now();
    let mut rounds = 0;
    // keep transferring until the transfers spanned at least two renegotiations (bounded)
    while c.count_lines("Control Channel: TLS") < before + 2 && rounds < 6 {
        transfer(&rig, 100, rounds % 2 == 0, &format!("reneg{rounds}"));
        rounds += 1;
    }
    let renegs = c.count_lines("Control Channel: TLS") - before;
    assert!(
        renegs >= 2,
        "expected at least two renegotiations during the transfers, saw {renegs} in {:?}",
        t0.elapsed()
    );
    ping_server(&rig);
    assert_eq!(
        rig.server.count_lines("TLS Error"),
        0,
        "no TLS errors on the server:\n{}",
        rig.server.log()
    );
}

#[test]
fn two_clients_with_client_to_client() {
    let Some(rig) = Rig::start(
        "two_clients_with_client_to_client",
        InitOptions::with_clients(2),
        ServerConfOptions::default(),
        &["client-to-client"],
    ) else {
        return;
    };
    // the second client lives in a namespace of its own (a ping between two tunnels of one namespace
    // would stay local), linked to the server namespace by a second veth pair
    let c2 = Netns::new(&rig.p, "c2x").expect("third namespace");
    let n = (std::process::id() % 200 + 20) as u8;
    rig.net
        .server
        .ip(&[
            "link",
            "add",
            "veth-s2",
            "type",
            "veth",
            "peer",
            "name",
            "veth-c2",
            "netns",
            c2.name(),
        ])
        .expect("veth");
    rig.net
        .server
        .ip(&["addr", "add", &format!("10.98.{n}.1/24"), "dev", "veth-s2"])
        .expect("addr");
    c2.ip(&["addr", "add", &format!("10.98.{n}.2/24"), "dev", "veth-c2"])
        .expect("addr");
    rig.net
        .server
        .ip(&["link", "set", "veth-s2", "up"])
        .expect("up");
    c2.ip(&["link", "set", "veth-c2", "up"]).expect("up");
    c2.ip(&["link", "set", "lo", "up"]).expect("lo");
    let _a = rig.connect("client1", &ClientOverrides::default());
    let mut b = start_stock_client(
        &rig.dir,
        c2.name(),
        "client2",
        rig.setup.profile("client2").expect("profile"),
        &ClientOverrides {
            remote: Some((format!("10.98.{n}.1"), 1194)),
            ..Default::default()
        },
    )
    .expect("client2");
    b.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("second client up");
    // each pings the other's tunnel address; the packets cross the server (client-to-client)
    run_ok(
        Some(rig.net.client_ns()),
        "ping",
        &["-c", "3", "-W", "5", "10.8.0.3"],
        Duration::from_secs(20),
    )
    .expect("client1 -> client2 through the server");
    run_ok(
        Some(c2.name()),
        "ping",
        &["-c", "3", "-W", "5", "10.8.0.2"],
        Duration::from_secs(20),
    )
    .expect("client2 -> client1 through the server");
    drop(b);
}

#[test]
fn refusals_revoked_foreign_ca_wrong_tls_crypt_key() {
    let init = InitOptions {
        revoked_clients: vec!["client2".into()],
        ..InitOptions::with_clients(2)
    };
    let Some(mut rig) = Rig::start(
        "refusals_revoked_foreign_ca_wrong_tls_crypt_key",
        init,
        ServerConfOptions::default(),
        &[],
    ) else {
        return;
    };
    // revoked
    let mut revoked = rig.client("client2", "revoked", &ClientOverrides::default());
    let line = rig
        .server
        .wait_for_line("VERIFY ERROR", CLIENT_UP)
        .expect("VERIFY ERROR for the revoked client");
    assert!(line.contains("CN=client2"), "{line}");
    revoked.stop().expect("stop");
    assert_eq!(revoked.count_lines(INIT_COMPLETE), 0);

    // a certificate from another CA (same tls-crypt key, so the TLS layer is reached)
    let other = bulwark_pki::generate(&InitOptions::with_clients(1)).expect("other PKI");
    let profile =
        std::fs::read_to_string(rig.setup.profile("client1").expect("profile")).expect("read");
    let foreign = replace_block(
        &replace_block(&profile, "cert", &other.clients[0].cert_pem),
        "key",
        other.clients[0].key_pem(),
    );
    let fpath = rig.dir.path().join("foreign.ovpn");
    std::fs::write(&fpath, foreign).expect("write");
    let before = rig.server.count_lines("VERIFY ERROR");
    let mut f = start_stock_client(
        &rig.dir,
        rig.net.client_ns(),
        "foreign",
        &fpath,
        &ClientOverrides::default(),
    )
    .expect("foreign client");
    rig.server
        .wait_for_nth("VERIFY ERROR", before + 1, CLIENT_UP)
        .expect("VERIFY ERROR for the foreign CA");
    f.stop().expect("stop");
    assert_eq!(f.count_lines(INIT_COMPLETE), 0);

    // a wrong tls-crypt key: the server creates no state and says so
    let wrong = replace_block(
        &profile,
        "tls-crypt",
        &bulwark_pki::StaticKey::generate()
            .expect("key")
            .to_file_string(),
    );
    let wpath = rig.dir.path().join("wrongkey.ovpn");
    std::fs::write(&wpath, wrong).expect("write");
    let peers_before = rig.server.count_lines("Peer Connection Initiated");
    let mut w = start_stock_client(
        &rig.dir,
        rig.net.client_ns(),
        "wrongkey",
        &wpath,
        &ClientOverrides::default(),
    )
    .expect("wrong-key client");
    rig.server
        .wait_for_line(
            "TLS Error: tls-crypt unwrapping failed from [AF_INET]",
            CLIENT_UP,
        )
        .expect("server logs the unauthenticated packet");
    std::thread::sleep(Duration::from_secs(2));
    w.stop().expect("stop");
    assert_eq!(
        rig.server.count_lines("Peer Connection Initiated"),
        peers_before
    );
    assert_eq!(
        rig.server.count_lines("VERIFY OK"),
        0,
        "no TLS handshake started for bad keys"
    );

    // and the server still serves a good client
    let _good = rig.connect("client1", &ClientOverrides::default());
    ping_server(&rig);
}

fn replace_block(profile: &str, tag: &str, content: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let (Some(a), Some(b)) = (profile.find(&open), profile.find(&close)) else {
        panic!("profile has no <{tag}> block");
    };
    format!(
        "{}{}\n{}\n{}",
        &profile[..a],
        open,
        content.trim_end(),
        &profile[b..]
    )
}

#[test]
fn killed_client_is_dropped_after_ping_restart() {
    let opts = ServerConfOptions {
        keepalive: Some((2, 10)),
        ..Default::default()
    };
    let Some(mut rig) = Rig::start(
        "killed_client_is_dropped_after_ping_restart",
        InitOptions::with_clients(1),
        opts,
        &[],
    ) else {
        return;
    };
    let mut c = rig.connect("client1", &ClientOverrides::default());
    ping_server(&rig);
    let t0 = Instant::now();
    c.kill(Signal::SIGKILL).expect("SIGKILL the client");
    // server-side ping-restart is twice the keepalive timeout (20 s), as OpenVPN's server does
    let line = rig
        .server
        .wait_for_line(
            "Inactivity timeout (--ping-restart)",
            Duration::from_secs(40),
        )
        .expect("server drops the silent client");
    assert!(line.contains("client1"), "{line}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(15),
        "dropped too early: {took:?}"
    );
}

#[test]
fn server_initiated_renegotiation_keeps_traffic_flowing() {
    let Some(rig) = Rig::start(
        "server_initiated_renegotiation_keeps_traffic_flowing",
        InitOptions::with_clients(1),
        ServerConfOptions::default(),
        &["reneg-sec 4 3"],
    ) else {
        return;
    };
    let mut c = rig.connect("client1", &ClientOverrides::default());
    // at least two server-initiated renegotiations (the client logs each new TLS session)
    c.wait_for_nth("Control Channel: TLS", 3, Duration::from_secs(30))
        .expect("two renegotiations started by the server");
    transfer(&rig, 50, false, "after-reneg");
    ping_server(&rig);
    assert_eq!(
        rig.server.count_lines("TLS Error"),
        0,
        "{}",
        rig.server.log()
    );
}

#[test]
fn tcp_server_with_several_concurrent_clients() {
    let opts = ServerConfOptions {
        proto: Proto::Tcp,
        ..Default::default()
    };
    let Some(rig) = Rig::start(
        "tcp_server_with_several_concurrent_clients",
        InitOptions::with_clients(4),
        opts,
        &[],
    ) else {
        return;
    };
    let mut clients = Vec::new();
    for i in 1..=4 {
        clients.push(rig.client(
            &format!("client{i}"),
            &format!("client{i}"),
            &ClientOverrides {
                drop_directives: vec!["dev".into()],
                extra_lines: vec![format!("dev tun{}", 10 + i)],
                ..Default::default()
            },
        ));
    }
    for c in &mut clients {
        c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
            .expect("every TCP client connects");
    }
    // every client reaches the server through its own tunnel device (tun11 .. tun14)
    for i in 3..=6 {
        run_ok(
            Some(rig.net.client_ns()),
            "ping",
            &[
                "-c",
                "2",
                "-W",
                "5",
                "-I",
                &format!("tun{}", 8 + i),
                "10.8.0.1",
            ],
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("ping through tun{}: {e}", 8 + i));
    }
}

#[test]
fn client_exit_notification_ends_the_session_after_openvpns_delay() {
    let Some(mut rig) = Rig::start(
        "client_exit_notification_ends_the_session_at_once",
        InitOptions::with_clients(1),
        ServerConfOptions::default(),
        &[],
    ) else {
        return;
    };
    let mut c = rig.connect(
        "client1",
        &ClientOverrides {
            extra_lines: vec!["explicit-exit-notify 1".into()],
            ..Default::default()
        },
    );
    ping_server(&rig);
    c.kill(Signal::SIGTERM).expect("SIGTERM the client");
    // the 2.6 client sends EXIT on the control channel (cc-exit was negotiated); the server ends the
    // session within its linger time instead of waiting for ping-restart
    let line = rig
        .server
        .wait_for_line(
            "CC-EEN exit message received by peer",
            Duration::from_secs(15),
        )
        .expect("server sees the client's exit notification");
    assert!(line.contains("client1/"), "{line}");
    // as OpenVPN 2.6: the instance lingers five seconds for retransmits, then goes
    let line = rig
        .server
        .wait_for_line(
            "SIGTERM[soft,delayed-exit] received, client-instance exiting",
            Duration::from_secs(15),
        )
        .expect("the instance ends after the delay");
    assert!(line.contains("client1/"), "{line}");
}

/// CPU time (ns, `/proc/PID/task/TID/schedstat`) of the thread of `pid` named `comm`, and its id.
fn thread_runtime(pid: u32, comm: &str) -> Option<(u32, u64)> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let tid: u32 = t.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if name.trim_end() == comm {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            return Some((tid, stat.split_whitespace().next()?.parse().ok()?));
        }
    }
    None
}

/// `data-threads 2`: the worker serves UDP with two threads, each with its own `SO_REUSEPORT`
/// socket and TUN queue. The kernel spreads clients over the sockets by a hash of their address and
/// port, so stock clients connect one after another (each from a new source port) until one of them
/// was carried by the second thread — seen as that thread's CPU time growing while the client
/// exchanges 300 pings with the server; every client must pass its traffic. (The chance that 16
/// clients in a row all land on the first socket is 2⁻¹⁶.)
#[test]
fn udp_data_threads_carry_clients_on_the_second_thread() {
    let Some(rig) = Rig::start(
        "udp_data_threads_carry_clients_on_the_second_thread",
        InitOptions::with_clients(1),
        ServerConfOptions::default(),
        &["data-threads 2", "duplicate-cn"],
    ) else {
        return;
    };
    let worker = child_named(rig.server.pid(), "bulwark-worker").expect("worker process");
    assert!(
        thread_runtime(worker, "bulwark-dp1").is_some(),
        "the worker has a second data-plane thread"
    );
    assert!(
        thread_runtime(worker, "bulwark-dp2").is_none(),
        "and no third one"
    );
    // two sockets on the server port in the server's namespace (the worker's view of it)
    let sockets: usize = ["udp", "udp6"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("/proc/{worker}/net/{f}"))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.ends_with(":04AA"))
                })
                .count()
        })
        .sum();
    assert_eq!(
        sockets, 2,
        "one UDP socket per data-plane thread on port 1194"
    );
    let mut carried = None;
    for attempt in 1..=16 {
        let (_, before) = thread_runtime(worker, "bulwark-dp1").expect("lane thread");
        // a log of its own per client (`connect` waits for its line in that log)
        let mut c = rig.client(
            "client1",
            &format!("client1-{attempt}"),
            &ClientOverrides::default(),
        );
        c.wait_for_line(INIT_COMPLETE, CLIENT_UP)
            .expect("client reaches Initialization Sequence Completed");
        run_ok(
            Some(rig.net.client_ns()),
            "ping",
            &[
                "-n", "-q", "-c", "300", "-i", "0.002", "-W", "2", "10.8.0.1",
            ],
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("client {attempt}: 300 pings through the tunnel: {e}"));
        let (_, after) = thread_runtime(worker, "bulwark-dp1").expect("lane thread");
        c.kill(Signal::SIGTERM).expect("SIGTERM client");
        c.wait_timeout(Duration::from_secs(10))
            .expect("client exit");
        // the handshake and 600 packets through the thread cost tens of milliseconds (measured
        // 42-84 ms in a test build); a thread that did not carry the client wakes at most for a
        // stray packet of the device (measured 0-0.3 ms)
        if after.saturating_sub(before) > 10_000_000 {
            carried = Some(attempt);
            break;
        }
    }
    assert!(
        carried.is_some(),
        "no client out of 16 was carried by the second data-plane thread"
    );
}
