//! Log line formats of a running daemon with a stock client connecting, against OpenVPN 2.6.14's
//! captures in `shared/fixtures/openvpn-2.6/logging/`: `machine-readable-output` (every line
//! `SECONDS.MICROSECONDS FLAGS message`, flags in hex as OpenVPN prints them) and
//! `suppress-timestamps` (the message alone), with the messages people match on where the
//! fixtures have them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/openvpn-2.6/logging")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// `(flags, message)` of a machine-readable line, or `None` if it does not have the shape.
fn machine_line(l: &str) -> Option<(u32, &str)> {
    let (ts, rest) = l.split_once(' ')?;
    let (flags, msg) = rest.split_once(' ')?;
    let (secs, us) = ts.split_once('.')?;
    (secs.len() >= 10
        && secs.bytes().all(|b| b.is_ascii_digit())
        && us.len() == 6
        && us.bytes().all(|b| b.is_ascii_digit()))
    .then_some(())?;
    Some((u32::from_str_radix(flags, 16).ok()?, msg))
}

/// Runs the daemon with `directive` and a log file, connects a stock client, stops the daemon and
/// returns the log and the file's permission bits and group.
fn run_with(test: &str, tag: &str, directive: &str) -> Option<(String, u32, u32)> {
    run_at(test, tag, directive, 3, false)
}

/// [`run_with`] at `verb`, optionally pinging the server through the tunnel.
fn run_at(
    test: &str,
    tag: &str,
    directive: &str,
    verb: u8,
    traffic: bool,
) -> Option<(String, u32, u32)> {
    let p = require_privileged(test)?;
    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, tag).expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let log = dir.path().join("server.log");
    let extra = [
        directive.to_string(),
        format!("log {}", log.display()),
        format!("verb {verb}"),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    wait_file_contains(&log, INIT_COMPLETE, SERVER_UP).expect("up");
    let mut c = connect_client1(&dir, net.client_ns(), &setup, CLIENT_UP).expect("client up");
    wait_file_contains(
        &log,
        "Peer Connection Initiated with",
        Duration::from_secs(10),
    )
    .expect("peer line");
    if traffic {
        ping(net.client_ns(), "10.8.0.1", 3, Duration::from_secs(10)).expect("ping");
    }
    c.stop().expect("stop client");
    server
        .kill(nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    server.wait_timeout(Duration::from_secs(20)).expect("exit");
    let meta = std::fs::metadata(&log).expect("log metadata");
    Some((
        std::fs::read_to_string(&log).expect("log"),
        meta.permissions().mode() & 0o7777,
        meta.gid(),
    ))
}

#[test]
fn machine_readable_output_lines_have_openvpns_form() {
    let Some((text, mode, _)) = run_with("logfmt_mro", "lm", "machine-readable-output") else {
        return;
    };
    assert_eq!(mode, 0o600, "the log file's default mode");
    // the fixture itself has exactly this shape (sanity check of the parser)
    for l in fixture("server-verb3-machine-readable-output.stdout").lines() {
        assert!(machine_line(l).is_some(), "fixture line {l:?}");
    }
    let mut init = None;
    for l in text.lines() {
        let (flags, msg) =
            machine_line(l).unwrap_or_else(|| panic!("not machine-readable: {l:?}\n{text}"));
        assert!(
            [0x1, 0x3, 0x4, 0x7, 0x21, 0x40].contains(&flags),
            "flags {flags:x}: {l}"
        );
        if msg == INIT_COMPLETE {
            init = Some(flags);
        }
    }
    // the fixture prints Initialization Sequence Completed and the exit line with flags 1
    assert_eq!(init, Some(1), "{text}");
    let exit = text
        .lines()
        .find(|l| l.ends_with("SIGTERM[hard,] received, process exiting"))
        .unwrap_or_else(|| panic!("exit line:\n{text}"));
    assert_eq!(machine_line(exit).map(|(f, _)| f), Some(1), "{exit}");
    assert!(text.contains("Peer Connection Initiated with [AF_INET]"));
}

#[test]
fn suppress_timestamps_prints_the_message_alone() {
    // with a monitoring group allowed to read the log
    let Some((text, mode, gid)) = run_with(
        "logfmt_nots",
        "ln",
        "suppress-timestamps\nlog-file-mode 0640\nlog-file-group 65534",
    ) else {
        return;
    };
    assert_eq!((mode, gid), (0o640, 65534), "log-file-mode/log-file-group");
    let fixture = fixture("server-verb3-suppress-timestamps.stdout");
    for line in [INIT_COMPLETE, "SIGTERM[hard,] received, process exiting"] {
        assert!(fixture.lines().any(|l| l == line), "fixture has {line:?}");
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} alone on its line:\n{text}"
        );
    }
    for l in text.lines() {
        let dated = l.len() > 19
            && l.as_bytes()[4] == b'-'
            && l.as_bytes()[7] == b'-'
            && l.as_bytes()[10] == b' '
            && l.as_bytes()[13] == b':';
        assert!(!dated, "timestamp printed: {l}");
        assert!(machine_line(l).is_none(), "machine-readable form: {l}");
    }
}

/// `mute 3`: a flood of control packets that fail authentication (one OpenVPN mute category, TLS
/// errors) prints three lines, then `NOTE: --mute triggered...`; the first line of another
/// category (the stock client connecting) is preceded by the count of what was suppressed, in
/// the fixture's words (`server-verb4-mute6--log.log`).
#[test]
fn mute_cuts_a_run_of_one_category_and_counts_it() {
    const FLOOD: u64 = 20;
    const CUTOFF: usize = 3;
    let test = "logfmt_mute";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let fixture = fixture("server-verb4-mute6--log.log");
    assert!(fixture
        .lines()
        .any(|l| l.ends_with(" NOTE: --mute triggered...")));
    assert!(fixture
        .lines()
        .any(|l| l.ends_with(" 297 variation(s) on previous 6 message(s) suppressed by --mute")));

    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, "lmu").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let port = opts.port;
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let log = dir.path().join("server.log");
    let extra = [
        format!("mute {CUTOFF}"),
        format!("log {}", log.display()),
        "verb 3".to_string(),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    wait_file_contains(&log, INIT_COMPLETE, SERVER_UP).expect("up");

    let target = std::net::SocketAddr::from((net.server_addr, port));
    send_unauthenticated_resets(net.client_ns(), target, FLOOD);
    wait_file_contains(&log, "NOTE: --mute triggered...", Duration::from_secs(10))
        .expect("mute notice");

    let mut c = connect_client1(&dir, net.client_ns(), &setup, CLIENT_UP).expect("client up");
    wait_file_contains(&log, "suppressed by --mute", Duration::from_secs(10))
        .expect("variations line");
    c.stop().expect("stop client");
    server
        .kill(nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    server.wait_timeout(Duration::from_secs(20)).expect("exit");
    let text = std::fs::read_to_string(&log).expect("log");

    let lines: Vec<&str> = text.lines().collect();
    let is_auth_error =
        |l: &str| l.contains("TLS Error: tls-crypt unwrapping failed from [AF_INET]");
    let first = lines
        .iter()
        .position(|l| is_auth_error(l))
        .unwrap_or_else(|| panic!("no authentication error logged:\n{text}"));
    for (k, l) in lines[first..first + CUTOFF].iter().enumerate() {
        assert!(is_auth_error(l), "line {k} of the run: {l}\n{text}");
    }
    assert!(
        lines[first + CUTOFF].ends_with(" NOTE: --mute triggered..."),
        "after {CUTOFF} lines: {}\n{text}",
        lines[first + CUTOFF]
    );
    assert_eq!(
        lines.iter().filter(|l| is_auth_error(l)).count(),
        CUTOFF,
        "{text}"
    );
    let want = format!(
        " {} variation(s) on previous {CUTOFF} message(s) suppressed by --mute",
        FLOOD - CUTOFF as u64
    );
    let v = lines
        .iter()
        .position(|l| l.ends_with(&want))
        .unwrap_or_else(|| panic!("no line ending {want:?}:\n{text}"));
    assert_eq!(v, first + CUTOFF + 1, "{text}");
    // the line that ended the run follows, and the client's connection was logged in full
    assert!(!is_auth_error(lines[v + 1]), "{text}");
    assert!(
        text.contains("Peer Connection Initiated with [AF_INET]"),
        "{text}"
    );
}

/// `verb 5`: OpenVPN's packet characters (`R`/`W` link read/write, `r`/`w` TUN read/write) go to
/// the log file as they are, between the lines; at `verb 4` there are none.
#[test]
fn verb5_writes_openvpns_packet_characters() {
    let Some((text, _, _)) = run_at("logfmt_rw", "lrw", "", 5, true) else {
        return;
    };
    // the characters end up in front of the next line's timestamp: "RwrW2026-12-07 ..."
    let runs: String = text
        .lines()
        .map(|l| l.split(|c: char| c.is_ascii_digit()).next().unwrap_or(""))
        .filter(|p| !p.is_empty() && p.chars().all(|c| matches!(c, 'R' | 'W' | 'r' | 'w')))
        .collect();
    for c in ['R', 'W', 'r', 'w'] {
        assert!(
            runs.contains(c),
            "no {c:?} in the packet characters {runs:?}:\n{text}"
        );
    }
    // the link was read at least once per ping request and written once per reply
    assert!(
        runs.matches('R').count() >= 3 && runs.matches('W').count() >= 3,
        "{runs}"
    );
    let Some((text4, _, _)) = run_at("logfmt_rw4", "lr4", "", 4, true) else {
        return;
    };
    for l in text4.lines() {
        assert!(
            l.as_bytes().first().is_some_and(u8::is_ascii_digit),
            "verb 4 line not starting with its time: {l:?}"
        );
    }
}
