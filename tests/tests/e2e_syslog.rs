//! `syslog NAME`: the daemon's lines (its own and its children's) arrive as syslog datagrams in the
//! form OpenVPN 2.6.14's reach syslog (`shared/fixtures/openvpn-2.6/logging/syslog-datagrams.txt`):
//! `<PRI>Mmm dd hh:mm:ss NAME[PID]: message`, facility daemon, LOG_ERR for errors, LOG_WARNING for
//! warnings, LOG_NOTICE for everything else, no timestamp in the message.
//!
//! The daemon runs in a private mount namespace whose `/dev` is a tmpfs holding the device nodes
//! it needs (bind-mounted from the real `/dev`) and a `/dev/log` symlink to the test's own datagram
//! socket, so nothing reaches (or needs) the machine's syslog daemon.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

fn fixture() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/openvpn-2.6/logging/syslog-datagrams.txt");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A datagram taken apart: `(priority, ident, pid, message)`; `None` if it lacks the shape.
fn parse(d: &str) -> Option<(u16, &str, u32, &str)> {
    let rest = d.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    let pri: u16 = pri.parse().ok()?;
    // "Mmm dd hh:mm:ss " — 16 bytes, the day space-padded
    let (stamp, rest) = (rest.get(..16)?, rest.get(16..)?);
    let b = stamp.as_bytes();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let shape = months.contains(&&stamp[..3])
        && b[3] == b' '
        && (b[4] == b' ' || b[4].is_ascii_digit())
        && b[5].is_ascii_digit()
        && b[6] == b' '
        && b[9] == b':'
        && b[12] == b':'
        && b[15] == b' '
        && [7, 8, 10, 11, 13, 14]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !shape {
        return None;
    }
    let (tag, msg) = rest.split_once(": ")?;
    let (ident, pid) = tag.strip_suffix(']')?.split_once('[')?;
    Some((pri, ident, pid.parse().ok()?, msg))
}

/// Receives datagrams into `got` until one contains `needle`.
fn receive_until(
    sock: &UnixDatagram,
    got: &mut Vec<String>,
    needle: &str,
    timeout: Duration,
) -> Result<(), String> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if got.iter().any(|d| d.contains(needle)) {
            return Ok(());
        }
        let mut buf = [0u8; 8192];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err(format!(
        "no datagram containing {needle:?} within {timeout:?}; got:\n{}",
        got.join("\n")
    ))
}

/// The test's syslog socket (`/dev/log` inside the daemon's mount namespace), with a short read
/// timeout, and its path.
fn syslog_socket(dir: &TestDir) -> (std::path::PathBuf, UnixDatagram) {
    let path = dir.path().join("syslog.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the test syslog socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    (path, sock)
}

/// The generated `server.conf` plus `extra`, written to `name` in the test directory.
fn conf_with(dir: &TestDir, setup: &ServerSetup, extra: &str, name: &str) -> std::path::PathBuf {
    let mut conf = std::fs::read_to_string(setup.server_conf()).expect("server.conf");
    conf.push_str(extra);
    let path = dir.path().join(name);
    std::fs::write(&path, conf).expect("write conf");
    path
}

/// Runs `command` (a shell command line) in a private mount namespace whose `/dev` is a tmpfs with
/// the device nodes a server needs (bind-mounted from the real `/dev`) and `/dev/log` → `sock`.
fn spawn_with_private_dev_log(dir: &TestDir, sock: &Path, command: &str) -> Proc {
    let olddev = dir.path().join("olddev");
    std::fs::create_dir(&olddev).expect("mkdir");
    let script = format!(
        "set -e\n\
         mount --bind /dev '{old}'\n\
         mount -t tmpfs -o mode=0755 tmpfs /dev\n\
         for n in null zero full random urandom; do touch /dev/$n; mount --bind '{old}'/$n /dev/$n; done\n\
         mkdir /dev/net; touch /dev/net/tun; mount --bind '{old}'/net/tun /dev/net/tun\n\
         ln -s '{sock}' /dev/log\n\
         exec {command}\n",
        old = olddev.display(),
        sock = sock.display(),
    );
    Proc::spawn(
        dir,
        "bulwark",
        None,
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    )
    .expect("start")
}

/// A configuration with `syslog NAME` and an error: the errors (file:line) and the closing
/// `Options error:` line reach syslog as LOG_ERR with that ident — OpenVPN opens syslog while it
/// parses the option, so its option errors go there — and standard error as well; nothing starts.
#[test]
fn configuration_errors_reach_syslog() {
    let test = "syslog_conferr";
    let Some(_p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("test dir");
    let setup = prepare_server(
        &dir,
        &InitOptions::with_clients(1),
        ServerConfOptions::default(),
    )
    .expect("server dir");
    let (sock_path, sock) = syslog_socket(&dir);
    let conf_path = conf_with(
        &dir,
        &setup,
        "syslog bulwark-test\nbogus-directive 1\n",
        "broken.conf",
    );
    let bad_line = std::fs::read_to_string(&conf_path)
        .expect("conf")
        .lines()
        .count();
    let bin = bulwark_bin().expect("bulwark binary");
    let mut server = spawn_with_private_dev_log(
        &dir,
        &sock_path,
        &format!("'{}' --config '{}'", bin.display(), conf_path.display()),
    );
    let status = server
        .wait_timeout(Duration::from_secs(20))
        .expect("the server exits");
    assert!(!status.success(), "a broken configuration must not start");
    let mut got = Vec::new();
    let last = "Options error: configuration has errors, exiting";
    receive_until(&sock, &mut got, last, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\nserver output:\n{}", server.log()));
    let where_ = format!("{}:{bad_line}:", conf_path.display());
    let parsed: Vec<(u16, &str, u32, &str)> = got
        .iter()
        .map(|d| parse(d).unwrap_or_else(|| panic!("not a syslog datagram: {d:?}")))
        .collect();
    assert!(
        parsed.iter().any(|(pri, ident, _, m)| *pri == 27
            && *ident == "bulwark-test"
            && m.starts_with(&where_)
            && m.contains("bogus-directive")),
        "{got:#?}"
    );
    assert!(
        parsed
            .iter()
            .all(|(pri, ident, _, _)| *pri == 27 && *ident == "bulwark-test"),
        "{got:#?}"
    );
    let out = server.log();
    assert!(out.contains(&where_) && out.contains(last), "{out}");
}

#[test]
fn syslog_datagrams_have_openvpns_form_priorities_and_ident() {
    let test = "syslog_dgram";
    let Some(p) = require_privileged(test) else {
        return;
    };
    // the parser accepts every fixture datagram, and the fixture has the three priorities
    let fx = fixture();
    let mut fx_pris = Vec::new();
    for l in fx.lines() {
        let (pri, _, _, _) = parse(l).unwrap_or_else(|| panic!("fixture datagram {l:?}"));
        fx_pris.push(pri);
    }
    for pri in [27, 28, 29] {
        assert!(fx_pris.contains(&pri), "fixture has <{pri}>");
    }

    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, "slg").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let port = opts.port;
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let (sock_path, sock) = syslog_socket(&dir);
    let conf_path = conf_with(&dir, &setup, "syslog bulwark-test\nverb 3\n", "syslog.conf");

    let bin = bulwark_bin().expect("bulwark binary");
    let mut server = spawn_with_private_dev_log(
        &dir,
        &sock_path,
        &format!(
            "ip netns exec '{ns}' '{bin}' --config '{conf}'",
            ns = net.server_ns(),
            bin = bin.display(),
            conf = conf_path.display(),
        ),
    );

    let mut got: Vec<String> = Vec::new();
    let wait = |got: &mut Vec<String>, server: &Proc, needle: &str, timeout: Duration| {
        if let Err(e) = receive_until(&sock, got, needle, timeout) {
            panic!("{e}; server output:\n{}", server.log());
        }
    };
    wait(&mut got, &server, INIT_COMPLETE, SERVER_UP);

    // a control packet that fails authentication: an error line from the worker
    let target = std::net::SocketAddr::from((net.server_addr, port));
    send_unauthenticated_resets(net.client_ns(), target, 1);
    wait(
        &mut got,
        &server,
        "TLS Error: tls-crypt unwrapping failed from [AF_INET]",
        Duration::from_secs(10),
    );

    let mut c = connect_client1(&dir, net.client_ns(), &setup, CLIENT_UP).expect("client up");
    wait(
        &mut got,
        &server,
        "Peer Connection Initiated with",
        Duration::from_secs(10),
    );
    c.stop().expect("stop client");
    server
        .kill(nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    wait(
        &mut got,
        &server,
        "SIGTERM[hard,] received, process exiting",
        Duration::from_secs(20),
    );
    server.wait_timeout(Duration::from_secs(20)).expect("exit");
    let all = got.join("\n");

    let parsed: Vec<(u16, &str, u32, &str)> = got
        .iter()
        .map(|d| parse(d).unwrap_or_else(|| panic!("not a syslog datagram: {d:?}\n{all}")))
        .collect();
    let pid = parsed[0].2;
    for (pri, ident, p, msg) in &parsed {
        assert_eq!(*ident, "bulwark-test", "{all}");
        // one writer: the parent sends its children's lines too
        assert_eq!(*p, pid, "{all}");
        assert!([27, 28, 29].contains(pri), "<{pri}> {msg}");
        let dated = msg.len() > 19 && msg.as_bytes()[4] == b'-' && msg.as_bytes()[13] == b':';
        assert!(!dated, "timestamp inside the message: {msg}");
    }
    let pri_of = |needle: &str| {
        parsed
            .iter()
            .find(|(_, _, _, m)| m.contains(needle))
            .map(|(p, ..)| *p)
            .unwrap_or_else(|| panic!("{needle:?} not received:\n{all}"))
    };
    // OpenVPN: M_INFO lines are LOG_NOTICE, D_TLS_ERRORS (non-fatal errors) LOG_ERR
    assert_eq!(pri_of(INIT_COMPLETE), 29);
    assert_eq!(pri_of("Peer Connection Initiated with [AF_INET]"), 29);
    assert_eq!(pri_of("SIGTERM[hard,] received, process exiting"), 29);
    assert_eq!(
        pri_of("TLS Error: tls-crypt unwrapping failed from [AF_INET]"),
        27
    );
}
