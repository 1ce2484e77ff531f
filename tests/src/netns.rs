//! Privilege gate and throw-away network namespaces.
//!
//! API:
//! - [`require_privileged`]`(test_name) -> Option<Privileged>`: `None` (after printing
//!   `SKIP <test>: needs root and network namespaces (<reason>)`) when the test cannot run here;
//!   with `BULWARK_REQUIRE_PRIVILEGED=1` it panics with that message instead (a skip is a CI failure).
//! - [`Netns::new`]: one uniquely named namespace (`bw-<tag>-<pid>-<counter>`) with `lo` up.
//! - [`NetPair::new`]: two namespaces joined by a veth pair, `10.99.<n>.1/24` on the server side and
//!   `.2` on the client side.
//! - [`ping`]: `ping` from inside a namespace, bounded.
//!
//! Invariants: every interface and address lives only inside namespaces the test created (the veth
//! pair is created inside the server namespace with its peer placed directly into the client
//! namespace, so nothing ever appears in the host namespace and interface names cannot collide);
//! dropping a [`Netns`] — also during a panic — kills every process still inside it and deletes it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::{run, run_ok, ProcError};

/// Timeout of each `ip` invocation.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Errors of namespace management.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// An `ip` command failed.
    #[error("network namespace setup: {0}")]
    Command(#[from] ProcError),
    /// `ping` did not get the expected replies.
    #[error("ping {addr} from netns {ns} failed ({status}):\n{output}")]
    Ping {
        /// Namespace.
        ns: String,
        /// Target.
        addr: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// ping's output.
        output: String,
    },
}

/// Proof that the process may create namespaces and TUN devices (see [`require_privileged`]).
#[derive(Debug, Clone, Copy)]
pub struct Privileged {
    _private: (),
}

fn probe() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    let name = format!("bw-probe-{}", std::process::id());
    let add = run(None, "ip", &["netns", "add", &name], IP_TIMEOUT)
        .map_err(|e| format!("`ip netns add` unusable: {e}"))?;
    if !add.status.success() {
        return Err(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&add.stderr).trim()
        ));
    }
    let exec = run(Some(&name), "ip", &["link", "set", "lo", "up"], IP_TIMEOUT);
    let _ = run(None, "ip", &["netns", "del", &name], IP_TIMEOUT);
    match exec {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`ip netns exec` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("`ip netns exec` unusable: {e}")),
    }
}

/// Returns a [`Privileged`] token if this process is root and network namespaces work; otherwise
/// prints a SKIP line and returns `None`, or panics when `BULWARK_REQUIRE_PRIVILEGED=1`.
pub fn require_privileged(test_name: &str) -> Option<Privileged> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    match PROBE.get_or_init(probe) {
        Ok(()) => Some(Privileged { _private: () }),
        Err(reason) => {
            let msg = format!("SKIP {test_name}: needs root and network namespaces ({reason})");
            if std::env::var_os("BULWARK_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
                panic!("{msg} [BULWARK_REQUIRE_PRIVILEGED=1 makes this a failure]");
            }
            eprintln!("{msg}");
            None
        }
    }
}

fn sanitize(tag: &str) -> String {
    let s: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    if s.is_empty() {
        "t".into()
    } else {
        s
    }
}

/// A network namespace deleted (with everything inside killed) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `bw-<tag>-<pid>-<counter>` and brings `lo` up inside.
    pub fn new(_p: &Privileged, tag: &str) -> Result<Self, NetnsError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("bw-{}-{}-{}", sanitize(tag), std::process::id(), n);
        run_ok(None, "ip", &["netns", "add", &name], IP_TIMEOUT)?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NS ARGS...` and fails on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok(None, "ip", &full, IP_TIMEOUT)?;
        Ok(())
    }

    /// Pids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        run(None, "ip", &["netns", "pids", &self.name], IP_TIMEOUT)
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // INVARIANT: nothing a test started may outlive its namespace: kill first, then delete.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(e) = run_ok(None, "ip", &["netns", "del", &self.name], IP_TIMEOUT) {
            eprintln!("harness: deleting netns {}: {e}", self.name);
        }
    }
}

/// Two namespaces joined by a veth pair.
#[derive(Debug)]
pub struct NetPair {
    /// Server side (`veth-s`, `server_addr`).
    pub server: Netns,
    /// Client side (`veth-c`, `client_addr`).
    pub client: Netns,
    /// Server-side address on the veth link.
    pub server_addr: Ipv4Addr,
    /// Client-side address on the veth link.
    pub client_addr: Ipv4Addr,
}

/// Interface name of the server end of the veth pair (inside the server namespace).
pub const SERVER_IF: &str = "veth-s";
/// Interface name of the client end of the veth pair (inside the client namespace).
pub const CLIENT_IF: &str = "veth-c";

impl NetPair {
    /// Creates both namespaces, the veth pair and the addresses; everything is up.
    pub fn new(p: &Privileged, tag: &str) -> Result<Self, NetnsError> {
        let n = (COUNTER.load(Ordering::Relaxed) % 250 + 1) as u8;
        Self::with_addrs(
            p,
            tag,
            Ipv4Addr::new(10, 99, n, 1),
            Ipv4Addr::new(10, 99, n, 2),
        )
    }

    /// As [`NetPair::new`] with chosen link addresses (a /24 both must share). The namespaces
    /// are private to the test, so any addresses may be used — e.g. the ones of a capture.
    pub fn with_addrs(
        p: &Privileged,
        tag: &str,
        server_addr: Ipv4Addr,
        client_addr: Ipv4Addr,
    ) -> Result<Self, NetnsError> {
        let server = Netns::new(p, &format!("{}s", sanitize(tag)))?;
        let client = Netns::new(p, &format!("{}c", sanitize(tag)))?;
        server.ip(&[
            "link",
            "add",
            SERVER_IF,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            client.name(),
        ])?;
        server.ip(&[
            "addr",
            "add",
            &format!("{server_addr}/24"),
            "dev",
            SERVER_IF,
        ])?;
        client.ip(&[
            "addr",
            "add",
            &format!("{client_addr}/24"),
            "dev",
            CLIENT_IF,
        ])?;
        server.ip(&["link", "set", SERVER_IF, "up"])?;
        client.ip(&["link", "set", CLIENT_IF, "up"])?;
        Ok(Self {
            server,
            client,
            server_addr,
            client_addr,
        })
    }

    /// Name of the server namespace.
    pub fn server_ns(&self) -> &str {
        self.server.name()
    }

    /// Name of the client namespace.
    pub fn client_ns(&self) -> &str {
        self.client.name()
    }
}

/// Pings `addr` from inside `ns`; succeeds once `count` replies arrived within `timeout`.
pub fn ping(ns: &str, addr: &str, count: u32, timeout: Duration) -> Result<(), NetnsError> {
    let secs = timeout.as_secs().max(1).to_string();
    let count_s = count.to_string();
    let out = run(
        Some(ns),
        "ping",
        &[
            "-n", "-c", &count_s, "-i", "0.2", "-W", "2", "-w", &secs, addr,
        ],
        timeout + Duration::from_secs(5),
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // With both -c and -w, ping exits 0 only once `count` replies have arrived.
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ping {
            ns: ns.to_string(),
            addr: addr.to_string(),
            status: out.status,
            output: text,
        })
    }
}

/// Runs `f` on a thread that has joined the network namespace `ns` (setns affects only the
/// calling thread), e.g. to connect to a daemon's loopback-only listener from a test.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
