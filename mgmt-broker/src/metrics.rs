//! The Prometheus metrics endpoint (`metrics-listen`): rendering and a minimal, strict HTTP server.
//!
//! [`render`] turns a status snapshot (the same data, from the same worker query, as the status
//! file) plus the broker's own counters into the Prometheus text exposition format 0.0.4:
//!
//! - the names and labels of the widely used kumina `openvpn_exporter`, so existing dashboards
//!   keep working: `openvpn_up`, `openvpn_status_update_time_seconds`,
//!   `openvpn_openvpn_server_connected_clients` (kumina's name, double prefix included) and
//!   `openvpn_server_connected_clients`, and — only with `metrics-per-client N`, for at most N
//!   clients — `openvpn_server_client_received_bytes_total`,
//!   `openvpn_server_client_sent_bytes_total` and
//!   `openvpn_server_route_last_reference_time_seconds`, all with kumina's `status_path` label;
//! - Bulwark's own `bulwark_*` series: handshakes, packet drops by reason, renegotiations, link
//!   bytes, client authorisations, management commands by role and outcome, management sessions,
//!   reloads, status/log write errors, worker restarts, build info.
//!
//! Label values are escaped (`\`, `"`, newline): common names are chosen by clients.
//!
//! [`serve`] answers `GET /metrics` and nothing else: one request per connection (`Connection:
//! close`), the request head capped at [`MAX_REQUEST`] bytes and [`REQUEST_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] at once (more get `503`). Other paths get `404`, other methods `405`,
//! malformed requests `400`. It never accepts a body and has no side effects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_ipc::msg::mgmt::{AuditOutcome, Role, StatusSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest request head accepted.
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent connections served; more get `503`.
pub const MAX_CONNECTIONS: usize = 8;

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listening descriptor is not a listening stream socket.
    #[error("metrics listener: {0}")]
    Listener(String),
}

/// What the endpoint needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The `status_path` label value of the kumina series.
    pub status_path: String,
    /// Per-client series for at most this many clients (0: none).
    pub per_client: u32,
}

/// Counters the broker keeps itself.
#[derive(Debug, Default)]
pub struct BrokerCounters {
    commands: Mutex<BTreeMap<(Role, &'static str), u64>>,
}

impl BrokerCounters {
    /// Counts one audited management command.
    pub fn command(&self, role: Role, outcome: &AuditOutcome) {
        let o = match outcome {
            AuditOutcome::Executed { ok: true } => "ok",
            AuditOutcome::Executed { ok: false } => "error",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Rejected => "rejected",
        };
        let mut m = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((role, o)).or_insert(0) += 1;
    }

    fn commands(&self) -> Vec<((Role, &'static str), u64)> {
        let m = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Monitor => "monitor",
        Role::Operator => "operator",
        Role::Auth => "auth",
        Role::Admin => "admin",
    }
}

/// Escapes a label value for the text format.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders the exposition text. `snapshot` is `None` when no status could be obtained (worker
/// restarting): then `openvpn_up` is 0 and only the broker's own series follow.
pub fn render(
    cfg: &MetricsConfig,
    snapshot: Option<&StatusSnapshot>,
    broker: &BrokerCounters,
    mgmt_sessions: usize,
) -> String {
    let mut o = Out(String::new());
    let sp = || ("status_path", cfg.status_path.clone());
    o.family(
        "openvpn_up",
        "gauge",
        "Whether scraping OpenVPN's metrics was successful.",
    );
    o.sample("openvpn_up", &[sp()], u8::from(snapshot.is_some()));
    if let Some(s) = snapshot {
        o.family(
            "openvpn_status_update_time_seconds",
            "gauge",
            "UNIX timestamp at which the OpenVPN statistics were updated.",
        );
        o.sample("openvpn_status_update_time_seconds", &[sp()], s.updated);
        // Established clients: the status file's CLIENT_LIST rows with a common name.
        let clients: Vec<_> = s
            .clients
            .iter()
            .filter(|c| c.common_name.is_some())
            .collect();
        for name in [
            "openvpn_openvpn_server_connected_clients",
            "openvpn_server_connected_clients",
        ] {
            o.family(name, "gauge", "Number Of Connected Clients");
            o.sample(name, &[sp()], clients.len());
        }
        let cap = usize::try_from(cfg.per_client).unwrap_or(usize::MAX);
        if cap > 0 {
            let shown = &clients[..clients.len().min(cap)];
            let labels = |c: &bulwark_ipc::msg::mgmt::ClientEntry| {
                vec![
                    ("common_name", c.common_name.clone().unwrap_or_default()),
                    ("connection_time", c.connected_since.to_string()),
                    ("real_address", c.real_address.status_form()),
                    sp(),
                    (
                        "username",
                        c.username.clone().unwrap_or_else(|| "UNDEF".into()),
                    ),
                    (
                        "virtual_address",
                        c.virtual_v4.map(|a| a.to_string()).unwrap_or_default(),
                    ),
                ]
            };
            o.family(
                "openvpn_server_client_received_bytes_total",
                "counter",
                "Amount of data received over a connection on the VPN server, in bytes.",
            );
            for c in shown {
                o.sample(
                    "openvpn_server_client_received_bytes_total",
                    &labels(c),
                    c.bytes_received,
                );
            }
            o.family(
                "openvpn_server_client_sent_bytes_total",
                "counter",
                "Amount of data sent over a connection on the VPN server, in bytes.",
            );
            for c in shown {
                o.sample(
                    "openvpn_server_client_sent_bytes_total",
                    &labels(c),
                    c.bytes_sent,
                );
            }
            o.family(
                "openvpn_server_route_last_reference_time_seconds",
                "gauge",
                "Time at which a route was last referenced, in seconds.",
            );
            for r in &s.routes {
                let Some(cn) = &r.common_name else { continue };
                if !shown.iter().any(|c| c.common_name.as_ref() == Some(cn)) {
                    continue;
                }
                let virt = r.key.to_string();
                o.sample(
                    "openvpn_server_route_last_reference_time_seconds",
                    &[
                        ("common_name", cn.clone()),
                        ("real_address", r.real_address.status_form()),
                        sp(),
                        ("virtual_address", virt),
                    ],
                    r.last_ref,
                );
            }
            o.single(
                "bulwark_metrics_clients_omitted",
                "gauge",
                "Connected clients without per-client series (beyond metrics-per-client).",
                (clients.len() - shown.len()) as u64,
            );
        }
        let e = &s.counters.engine;
        let p = &s.counters.parent;
        o.single(
            "bulwark_handshakes_started_total",
            "counter",
            "Client sessions created (first packets that passed the control-channel checks).",
            e.handshakes_started,
        );
        o.single(
            "bulwark_handshakes_completed_total",
            "counter",
            "Clients that completed the handshake and authentication.",
            e.handshakes_completed,
        );
        o.single(
            "bulwark_handshakes_failed_total",
            "counter",
            "Client sessions that ended before authentication completed.",
            e.handshakes_failed,
        );
        o.single(
            "bulwark_renegotiations_total",
            "counter",
            "TLS renegotiations started by either side.",
            e.renegotiations,
        );
        o.family(
            "bulwark_packets_dropped_total",
            "counter",
            "Packets dropped by the worker, by reason.",
        );
        for (reason, v) in [
            ("malformed", e.malformed),
            ("control_auth", e.control_auth_failures),
            ("cookie", e.cookie_failures),
            ("rate_limited", e.rate_limited),
            ("unknown_peer", e.unknown_data),
            ("no_route", e.no_route),
            ("spoofed_source", e.spoofed),
            ("replay", e.replay_drops),
            ("decrypt", e.decrypt_failures),
        ] {
            o.sample(
                "bulwark_packets_dropped_total",
                &[("reason", reason.to_string())],
                v,
            );
        }
        o.single(
            "bulwark_link_received_bytes_total",
            "counter",
            "Bytes read from connected clients' transport (sessions still open).",
            s.counters.link_bytes_in,
        );
        o.single(
            "bulwark_link_sent_bytes_total",
            "counter",
            "Bytes written to connected clients' transport (sessions still open).",
            s.counters.link_bytes_out,
        );
        o.family(
            "bulwark_client_authorisations_total",
            "counter",
            "Decisions of the hooks and management client-auth about waiting clients.",
        );
        o.sample(
            "bulwark_client_authorisations_total",
            &[("verdict", "accepted".into())],
            p.auth_accepted,
        );
        o.sample(
            "bulwark_client_authorisations_total",
            &[("verdict", "denied".into())],
            p.auth_denied,
        );
        o.family(
            "bulwark_reloads_total",
            "counter",
            "SIGHUP reloads, by result.",
        );
        o.sample(
            "bulwark_reloads_total",
            &[("result", "applied".into())],
            p.reloads,
        );
        o.sample(
            "bulwark_reloads_total",
            &[("result", "rejected".into())],
            p.reloads_rejected,
        );
        o.single(
            "bulwark_status_write_errors_total",
            "counter",
            "Status file writes that failed.",
            p.status_write_errors,
        );
        o.single(
            "bulwark_log_lines_lost_total",
            "counter",
            "Log lines that could not be written to the log file.",
            p.log_lines_lost,
        );
        o.single(
            "bulwark_worker_restarts_total",
            "counter",
            "Restarts of the worker process.",
            p.worker_restarts,
        );
    }
    o.single(
        "bulwark_management_sessions",
        "gauge",
        "Open management interface sessions.",
        mgmt_sessions as u64,
    );
    o.family(
        "bulwark_management_commands_total",
        "counter",
        "Management commands, by role of the connection and outcome.",
    );
    for ((role, outcome), v) in broker.commands() {
        o.sample(
            "bulwark_management_commands_total",
            &[
                ("outcome", outcome.to_string()),
                ("role", role_name(role).to_string()),
            ],
            v,
        );
    }
    o.family("bulwark_build_info", "gauge", "Bulwark version.");
    o.sample(
        "bulwark_build_info",
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
        1,
    );
    o.0
}

/// The outcome of parsing a request head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// `GET /metrics` (a query string is ignored).
    Metrics,
    /// Another path.
    NotFound,
    /// Another method.
    Method,
    /// Not HTTP/1.x.
    Bad,
}

fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Bad;
    };
    let Some(line) = text.split("\r\n").next() else {
        return Head::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Bad;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Head::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Head::Method;
    }
    match target.split('?').next() {
        Some("/metrics") => Head::Metrics,
        _ => Head::NotFound,
    }
}

fn response(status: &str, body: &str, head_only: bool) -> Vec<u8> {
    let ctype = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// Where [`serve`] gets the text of a scrape.
pub type RenderFn = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

async fn handle<S>(mut stream: S, render: RenderFn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
            if buf.len() >= MAX_REQUEST {
                return false;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_REQUEST - buf.len())]),
            }
        }
    };
    let complete = matches!(
        tokio::time::timeout(REQUEST_TIMEOUT, read_head).await,
        Ok(true)
    );
    let head_only = buf.starts_with(b"HEAD ");
    let reply = if !complete {
        response("400 Bad Request", "bad request\n", false)
    } else {
        match parse_head(&buf) {
            Head::Metrics => response("200 OK", &render().await, head_only),
            Head::NotFound => response("404 Not Found", "not found; try /metrics\n", head_only),
            Head::Method => response("405 Method Not Allowed", "only GET\n", false),
            Head::Bad => response("400 Bad Request", "bad request\n", false),
        }
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&reply)).await;
    let _ = stream.shutdown().await;
}

/// The listening socket of the endpoint.
#[derive(Debug)]
pub enum MetricsListener {
    /// Loopback TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix stream socket.
    Unix(tokio::net::UnixListener),
}

impl MetricsListener {
    /// Adopts a listening socket handed over by the parent. Must be called inside a runtime.
    pub fn from_fd(fd: std::os::fd::OwnedFd, unix: bool) -> Result<Self, MetricsError> {
        let e = |x: std::io::Error| MetricsError::Listener(x.to_string());
        if unix {
            let l = std::os::unix::net::UnixListener::from(fd);
            l.set_nonblocking(true).map_err(e)?;
            Ok(MetricsListener::Unix(
                tokio::net::UnixListener::from_std(l).map_err(e)?,
            ))
        } else {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true).map_err(e)?;
            Ok(MetricsListener::Tcp(
                tokio::net::TcpListener::from_std(l).map_err(e)?,
            ))
        }
    }
}

/// Serves the endpoint until the task is dropped.
pub async fn serve(listener: MetricsListener, render: RenderFn) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted: Result<Box<dyn Conn>, std::io::Error> = match &listener {
            MetricsListener::Tcp(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Conn>),
            MetricsListener::Unix(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Conn>),
        };
        let mut stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics: accept() failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let busy = response("503 Service Unavailable", "busy\n", false);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&busy)).await;
            });
            continue;
        }
        let (render, active) = (Arc::clone(&render), Arc::clone(&active));
        tokio::spawn(async move {
            handle(stream, render).await;
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A strict check of the Prometheus text format 0.0.4 (used by the tests, here and end to end): every sample belongs to the family declared by
/// the HELP/TYPE lines before it, names and label names are valid, label values are quoted
/// with only the three escapes, values parse as numbers, no family is declared twice. Returns the
/// number of samples.
pub fn check_exposition(text: &str) -> Result<usize, String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut declared = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = 0;
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| Err(format!("line {}: {m}: {line}", n + 1));
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !name_ok(name) || !declared.insert(name.to_string()) {
                return err("bad or repeated HELP");
            }
            current = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            if current.as_deref() != Some(name)
                || !["counter", "gauge", "untyped", "summary", "histogram"].contains(&kind)
            {
                return err("TYPE does not follow its HELP");
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return err("unexpected comment or empty line");
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return err("no value"),
        };
        if current.as_deref() != Some(name) || !name_ok(name) {
            return err("sample outside its family");
        }
        let value = if let Some(labels) = rest.strip_prefix('{') {
            let mut chars = labels.chars().peekable();
            loop {
                let mut lname = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '=' {
                        break;
                    }
                    lname.push(c);
                    chars.next();
                }
                if !name_ok(&lname) || chars.next() != Some('=') || chars.next() != Some('"') {
                    return err("bad label");
                }
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('\\' | '"' | 'n') => {}
                            _ => return err("bad escape"),
                        },
                        Some('"') => break,
                        Some('\n') | None => return err("unterminated label value"),
                        Some(_) => {}
                    }
                }
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => return err("bad label separator"),
                }
            }
            chars.collect::<String>()
        } else {
            rest.to_string()
        };
        let v = value.strip_prefix(' ').unwrap_or("");
        if v.parse::<f64>().is_err() {
            return err("value is not a number");
        }
        samples += 1;
    }
    Ok(samples)
}

/// A connected stream of either kind.
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden_status_tests::s1;

    fn cfg(per_client: u32) -> MetricsConfig {
        MetricsConfig {
            status_path: "/run/openvpn-server/status-s.log".into(),
            per_client,
        }
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| l[series.len() + 1..].to_string())
    }

    #[test]
    fn renders_kumina_names_and_bulwark_counters_in_valid_exposition_format() {
        let mut snap = s1(1_700_000_000);
        snap.counters.engine.handshakes_started = 7;
        snap.counters.engine.replay_drops = 3;
        snap.counters.parent.reloads = 2;
        let broker = BrokerCounters::default();
        broker.command(Role::Admin, &AuditOutcome::Executed { ok: true });
        broker.command(Role::Monitor, &AuditOutcome::Denied);
        let text = render(&cfg(10), Some(&snap), &broker, 3);
        let n = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(n > 20, "{text}");
        let sp = "status_path=\"/run/openvpn-server/status-s.log\"";
        assert_eq!(
            value(&text, &format!("openvpn_up{{{sp}}}")).as_deref(),
            Some("1")
        );
        let connected = snap
            .clients
            .iter()
            .filter(|c| c.common_name.is_some())
            .count();
        assert_eq!(
            value(&text, &format!("openvpn_server_connected_clients{{{sp}}}")),
            Some(connected.to_string())
        );
        assert_eq!(
            value(
                &text,
                &format!("openvpn_openvpn_server_connected_clients{{{sp}}}")
            ),
            Some(connected.to_string())
        );
        let c = &snap.clients[0];
        let rx = format!(
            "openvpn_server_client_received_bytes_total{{common_name=\"{}\",connection_time=\"{}\",real_address=\"{}\",{sp},username=\"UNDEF\",virtual_address=\"{}\"}}",
            c.common_name.as_deref().unwrap_or_default(),
            c.connected_since,
            c.real_address.status_form(),
            c.virtual_v4.map(|a| a.to_string()).unwrap_or_default()
        );
        assert_eq!(
            value(&text, &rx),
            Some(c.bytes_received.to_string()),
            "{text}"
        );
        assert_eq!(
            value(&text, "bulwark_handshakes_started_total").as_deref(),
            Some("7")
        );
        assert_eq!(
            value(&text, "bulwark_packets_dropped_total{reason=\"replay\"}").as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&text, "bulwark_reloads_total{result=\"applied\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(
                &text,
                "bulwark_management_commands_total{outcome=\"denied\",role=\"monitor\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "bulwark_management_sessions").as_deref(),
            Some("3")
        );
    }

    #[test]
    fn per_client_series_are_opt_in_and_capped() {
        let snap = s1(1_700_000_000);
        let none = render(&cfg(0), Some(&snap), &BrokerCounters::default(), 0);
        check_exposition(&none).unwrap();
        assert!(!none.contains("openvpn_server_client_received_bytes_total"));
        assert!(!none.contains("common_name="));
        let one = render(&cfg(1), Some(&snap), &BrokerCounters::default(), 0);
        check_exposition(&one).unwrap();
        assert_eq!(
            one.lines()
                .filter(|l| l.starts_with("openvpn_server_client_sent_bytes_total{"))
                .count(),
            1
        );
        let connected = snap
            .clients
            .iter()
            .filter(|c| c.common_name.is_some())
            .count();
        assert_eq!(
            value(&one, "bulwark_metrics_clients_omitted"),
            Some((connected - 1).to_string())
        );
    }

    #[test]
    fn label_values_chosen_by_clients_are_escaped() {
        let mut snap = s1(1_700_000_000);
        snap.clients[0].common_name = Some("evil\"} 1\nopenvpn_up{x=\"\\".into());
        let text = render(&cfg(5), Some(&snap), &BrokerCounters::default(), 0);
        check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(text.contains("common_name=\"evil\\\"} 1\\nopenvpn_up{x=\\\"\\\\\""));
    }

    #[test]
    fn without_a_snapshot_openvpn_up_is_zero() {
        let text = render(&cfg(5), None, &BrokerCounters::default(), 1);
        check_exposition(&text).unwrap();
        assert!(text.contains("openvpn_up{status_path=\"/run/openvpn-server/status-s.log\"} 0"));
        assert!(!text.contains("openvpn_server_connected_clients"));
    }

    #[test]
    fn the_checker_rejects_broken_exposition() {
        for bad in [
            "x 1\n",
            "# HELP a h\n# TYPE a gauge\nb 1\n",
            "# HELP a h\n# TYPE a gauge\na{l=\"v} 1\n",
            "# HELP a h\n# TYPE a gauge\na one\n",
            "# HELP a h\n# TYPE a gauge\n# HELP a h\n# TYPE a gauge\n",
        ] {
            assert!(check_exposition(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_heads() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Metrics
        );
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Head::Metrics
        );
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n\r\n"), Head::NotFound);
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"), Head::Method);
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), Head::Bad);
        assert_eq!(parse_head(b"GET metrics HTTP/1.1\r\n\r\n"), Head::Bad);
        assert_eq!(parse_head(b"\xff\xfe\r\n\r\n"), Head::Bad);
    }

    #[tokio::test]
    async fn serves_get_metrics_only() {
        let render: RenderFn = Arc::new(|| Box::pin(async { "# HELP a h\n".to_string() }));
        for (req, want) in [
            (&b"GET /metrics HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 200 OK"),
            (b"GET /other HTTP/1.1\r\n\r\n", "HTTP/1.1 404"),
            (b"DELETE /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405"),
            (b"garbage\r\n\r\n", "HTTP/1.1 400"),
        ] {
            let (mut a, b) = tokio::io::duplex(65536);
            let task = tokio::spawn(handle(b, Arc::clone(&render)));
            a.write_all(req).await.unwrap();
            let mut out = Vec::new();
            a.read_to_end(&mut out).await.unwrap();
            task.await.unwrap();
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with(want), "{req:?}: {text}");
        }
        // an endless head is cut at MAX_REQUEST and refused
        let (mut a, b) = tokio::io::duplex(MAX_REQUEST * 4);
        let task = tokio::spawn(handle(b, Arc::clone(&render)));
        a.write_all(&vec![b'A'; MAX_REQUEST * 2]).await.unwrap();
        let mut out = Vec::new();
        a.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    }
}
