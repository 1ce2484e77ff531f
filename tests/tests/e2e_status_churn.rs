//! Status file atomicity: a reader parsing the status file in a tight loop while 50 stock clients
//! connect and disconnect (twice) never sees a partial or torn file, and the file has the
//! configured mode and group (`status-file-mode 0640`, `status-file-group`). The parent writes a
//! temporary file and renames it over the old one; a reader sees the old or the new file whole.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENTS: usize = 50;
/// The group the status file is given (nogroup's number, present on every Debian system).
const GID: u32 = 65534;

/// Checks one read of a version-1 status file; returns the number of authenticated clients listed.
fn check_v1(text: &str) -> Result<usize, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let want_fixed = [
        "OpenVPN CLIENT LIST\n",
        "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n",
    ];
    if lines.first() != Some(&want_fixed[0]) {
        return Err("does not start with the header".into());
    }
    if !lines.get(1).is_some_and(|l| l.starts_with("Updated,")) {
        return Err("no Updated line".into());
    }
    if lines.get(2) != Some(&want_fixed[1]) {
        return Err("no client list header".into());
    }
    if lines.last() != Some(&"END\n") {
        return Err("does not end with END".into());
    }
    let routing = lines
        .iter()
        .position(|l| *l == "ROUTING TABLE\n")
        .ok_or("no ROUTING TABLE")?;
    let global = lines
        .iter()
        .position(|l| *l == "GLOBAL STATS\n")
        .ok_or("no GLOBAL STATS")?;
    if !(routing > 2 && global > routing) {
        return Err("sections out of order".into());
    }
    let mut connected = 0;
    for l in &lines[3..routing] {
        // a client still in its handshake is listed as UNDEF, as OpenVPN does
        let known = l.starts_with("client1,");
        if l.trim_end_matches('\n').split(',').count() != 5 || !(known || l.starts_with("UNDEF,")) {
            return Err(format!("bad client line {l:?}"));
        }
        connected += usize::from(known);
    }
    if lines.get(routing + 1) != Some(&"Virtual Address,Common Name,Real Address,Last Ref\n") {
        return Err("no routing header".into());
    }
    for l in &lines[routing + 2..global] {
        if l.trim_end_matches('\n').split(',').count() != 4 {
            return Err(format!("bad route line {l:?}"));
        }
    }
    Ok(connected)
}

struct Reader {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, Vec<String>)>,
    clients: Arc<std::sync::atomic::AtomicUsize>,
}

/// Reads and checks `path` in a tight loop until stopped; returns (reads, failures).
fn start_reader(path: PathBuf) -> Reader {
    let stop = Arc::new(AtomicBool::new(false));
    let clients = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s, c) = (Arc::clone(&stop), Arc::clone(&clients));
    let handle = std::thread::spawn(move || {
        let mut reads = 0u64;
        let mut failures = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    reads += 1;
                    match check_v1(&text) {
                        Ok(n) => c.store(n, Ordering::Relaxed),
                        Err(e) if failures.len() < 5 => failures.push(format!("{e}:\n{text}")),
                        Err(_) => {}
                    }
                }
                Err(e) if failures.len() < 5 => failures.push(format!("read: {e}")),
                Err(_) => {}
            }
        }
        (reads, failures)
    });
    Reader {
        stop,
        handle,
        clients,
    }
}

/// Waits until the listed client count satisfies `want`; returns how long that took.
fn wait_clients(
    r: &Reader,
    want: impl Fn(usize) -> bool,
    what: &str,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    let end = start + timeout;
    while Instant::now() < end {
        if want(r.clients.load(Ordering::Relaxed)) {
            eprintln!("{what}: after {:.1}s", start.elapsed().as_secs_f64());
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what}: the status file lists {} client(s) after {timeout:?}",
        r.clients.load(Ordering::Relaxed)
    );
}

fn no_temporaries(dir: &Path, status: &Path) {
    let name = status.file_name().and_then(|n| n.to_str()).unwrap_or("");
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        assert!(
            f == name || !f.starts_with(&format!(".{name}")) && !f.starts_with(&format!("{name}.")),
            "temporary status file left behind: {f}"
        );
    }
}

#[test]
fn status_file_is_never_torn_while_50_clients_churn() {
    let test = "status_churn";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, "stc").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let status_dir = dir.path().join("status");
    std::fs::create_dir(&status_dir).expect("mkdir");
    let status = status_dir.join("openvpn-status.log");
    let extra = [
        format!("status {} 1", status.display()),
        "status-version 1".to_string(),
        "status-file-mode 0640".to_string(),
        format!("status-file-group {GID}"),
        "duplicate-cn".to_string(),
        "max-clients 100".to_string(),
        "verb 1".to_string(),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    server
        .wait_for_line(INIT_COMPLETE, SERVER_UP)
        .expect("server up");
    let end = Instant::now() + Duration::from_secs(10);
    while !status.exists() {
        assert!(Instant::now() < end, "no status file written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reader = start_reader(status.clone());
    let profile = setup.profile("client1").expect("profile");
    let ov = ClientOverrides {
        extra_lines: vec!["explicit-exit-notify 1".into(), "verb 1".into()],
        ..Default::default()
    };
    // 50 clients, then rounds of 25 for about 20 s (the file is rewritten every second): the
    // reader sees every rewrite of a file whose size changes with the clients listed
    let churn = Instant::now();
    let rounds = [
        CLIENTS,
        CLIENTS / 2,
        CLIENTS / 2,
        CLIENTS / 2,
        CLIENTS / 2,
        CLIENTS / 2,
    ];
    for (round, n) in rounds.into_iter().enumerate() {
        if round >= 2 && churn.elapsed() > Duration::from_secs(20) {
            break;
        }
        let mut clients = Vec::new();
        for i in 0..n {
            clients.push(
                start_stock_client(
                    &dir,
                    net.client_ns(),
                    &format!("r{round}c{i}"),
                    profile,
                    &ov,
                )
                .expect("client"),
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_clients(
            &reader,
            |c| c == n,
            &format!("round {round}: {n} clients connected"),
            Duration::from_secs(120),
        );
        for c in &mut clients {
            c.kill(nix::sys::signal::Signal::SIGTERM)
                .expect("SIGTERM client");
        }
        for mut c in clients {
            c.wait_timeout(Duration::from_secs(15))
                .expect("client exit");
        }
        let gone = wait_clients(
            &reader,
            |c| c == 0,
            &format!("round {round}: all gone"),
            Duration::from_secs(60),
        );
        // as OpenVPN: a client that announced its exit stays listed by name until its instance
        // closes five seconds later
        assert!(
            gone >= Duration::from_millis(1500),
            "round {round}: exiting clients vanished from the status after {gone:?}"
        );
    }
    reader.stop.store(true, Ordering::Relaxed);
    let (reads, failures) = reader.handle.join().expect("reader");
    assert!(
        failures.is_empty(),
        "{} torn or partial reads out of {reads}:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
    assert!(reads > 1000, "only {reads} reads: the loop did not run");
    eprintln!("{reads} reads of the status file, none torn");

    let meta = std::fs::metadata(&status).expect("metadata");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o640,
        "status-file-mode"
    );
    assert_eq!(meta.gid(), GID, "status-file-group");
    no_temporaries(&status_dir, &status);
    server
        .kill(nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    server.wait_timeout(Duration::from_secs(20)).expect("exit");
}
