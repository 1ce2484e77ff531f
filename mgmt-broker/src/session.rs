//! One management client session: authentication, line handling, notifications, limits.
//!
//! [`run_session`] drives one connection over any `AsyncRead + AsyncWrite` stream (unix, TCP, or
//! an in-memory duplex in tests):
//! 1. admission ([`crate::access::admit`]): a rejected peer is closed without a single byte;
//! 2. session cap ([`Limits::max_clients`]): over the cap the peer gets one `ERROR:` line;
//! 3. with a pw-file: `ENTER PASSWORD:` (no newline), constant-time comparison, all output muted
//!    until the password is right, closed after 3 wrong lines; otherwise straight to
//! 4. the greeting `>INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info`
//!    followed by the pending prompt (`>HOLD:...`), then commands and notifications.
//!
//! Interleaving invariant (as in single-threaded OpenVPN): a command's reply is produced
//! completely before any notification is written, so multi-line replies are never split; the
//! broker's own `>LOG:...MANAGEMENT: CMD '...'` line precedes the reply.
//!
//! Containment: input lines are bounded by the 1024-byte framer; lines with NUL bytes or invalid
//! UTF-8 are rejected; commands are rate limited ([`TokenBucket`], back-pressure, not drop); an
//! unauthenticated connection is closed after [`Limits::unauth_timeout`]; a reply larger than
//! [`Limits::max_output_bytes`] closes the session; a write that does not complete within
//! [`Limits::write_timeout`] or a session that falls behind the notification backlog is dropped.
//! None of this blocks other sessions: each session is its own task.

use crate::access::{
    admit, redact_command, required_role, AuditOutcome, AuditRecord, ListenerPolicy, Peer, Role,
};
use crate::backend::Request;
use crate::cmdline::{tokenize, FramedLine, LineFramer};
use crate::hub::{Hub, D_MANAGEMENT_LEVEL};
use crate::model::{LogFlags, MgmtEvent};
use crate::notify::{bytecount_cli_line, push_line, render_event, AfterEvent, SessionView};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The greeting line (without CRLF).
pub const GREETING: &str =
    ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info";
/// The password prompt (sent without line ending).
pub const PASSWORD_PROMPT: &str = "ENTER PASSWORD:";

/// Resource limits of the management service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum concurrent sessions.
    pub max_clients: usize,
    /// Maximum bytes of one reply/notification batch before the session is closed.
    pub max_output_bytes: usize,
    /// Maximum time one write may take before the (slow) reader is dropped.
    pub write_timeout: Duration,
    /// Time an unauthenticated (password pending) connection may stay open.
    pub unauth_timeout: Duration,
    /// Sustained commands per second per session.
    pub commands_per_sec: u32,
    /// Command burst per session.
    pub command_burst: u32,
    /// Notifications a session may lag behind before it is dropped.
    pub notification_backlog: usize,
    /// Maximum lines in a `client-auth` block.
    pub max_block_lines: usize,
    /// Wrong password lines before the connection is closed (OpenVPN: 3).
    pub password_attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 16,
            max_output_bytes: 16 << 20,
            write_timeout: Duration::from_secs(10),
            unauth_timeout: Duration::from_secs(60),
            commands_per_sec: 50,
            command_burst: 200,
            notification_backlog: 4096,
            max_block_lines: 1024,
            password_attempts: 3,
        }
    }
}

/// Token bucket used for the per-session command rate limit.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            rate: f64::from(rate_per_sec.max(1)),
            last: now,
        }
    }

    /// Take one token at `now`; returns how long to wait first if the bucket is empty.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / self.rate))
        }
    }
}

/// A pending multi-line input block.
#[derive(Debug)]
pub(crate) enum Block {
    /// `client-auth CID KID` config lines until `END`.
    ClientAuth {
        cid: u64,
        kid: u32,
        lines: Vec<String>,
        overflow: bool,
    },
}

/// The protocol state of one management connection (I/O free; output accumulates in `out`).
pub struct Session {
    pub(crate) hub: Arc<Hub>,
    pub(crate) role: Role,
    peer: Peer,
    pub(crate) log_on: bool,
    pub(crate) state_on: bool,
    pub(crate) echo_on: bool,
    pub(crate) bytecount: u32,
    password: Option<String>,
    authenticated: bool,
    pw_failures: u32,
    pub(crate) block: Option<Block>,
    pub(crate) out: Vec<u8>,
    pub(crate) closing: bool,
    rx: broadcast::Receiver<Arc<MgmtEvent>>,
    lagged: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

impl Session {
    /// Create a session (subscribes to the hub's notifications immediately).
    pub fn new(hub: Arc<Hub>, role: Role, peer: Peer, password: Option<String>) -> Self {
        let rx = hub.subscribe();
        Session {
            hub,
            role,
            peer,
            log_on: false,
            state_on: false,
            echo_on: false,
            bytecount: 0,
            authenticated: password.is_none(),
            password,
            pw_failures: 0,
            block: None,
            out: Vec::new(),
            closing: false,
            rx,
            lagged: false,
        }
    }

    /// Whether the session is past the password stage.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether the session must be closed after flushing its output.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Take the accumulated output bytes.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub(crate) fn line(&mut self, s: &str) {
        push_line(&mut self.out, s);
    }

    fn welcome(&mut self) {
        self.line(GREETING);
        if let Some(p) = self.hub.pending_prompt() {
            self.line(&p);
        }
    }

    /// Produce the first bytes of the connection.
    pub fn start(&mut self) {
        if self.authenticated {
            self.welcome();
        } else {
            self.out.extend_from_slice(PASSWORD_PROMPT.as_bytes());
        }
    }

    fn view(&self) -> SessionView {
        SessionView {
            log_on: self.log_on,
            state_on: self.state_on,
            echo_on: self.echo_on,
            role: self.role,
        }
    }

    /// Render one notification for this session.
    pub fn on_event(&mut self, ev: &MgmtEvent) {
        if !self.authenticated {
            return;
        }
        let view = self.view();
        let level = self.hub.env_filter();
        if render_event(ev, &view, level, &mut self.out) == AfterEvent::Close {
            self.closing = true;
        }
    }

    /// Render every notification already queued for this session.
    pub fn drain_events(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => self.on_event(&ev),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.lagged = true;
                    self.closing = true;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Wait for the next notification (`None`: hub gone or this session lagged behind).
    pub async fn next_event(&mut self) -> Option<Arc<MgmtEvent>> {
        match self.rx.recv().await {
            Ok(ev) => Some(ev),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.lagged = true;
                None
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Whether the session was dropped for falling behind the notification backlog.
    pub fn lagged(&self) -> bool {
        self.lagged
    }

    async fn audit(&self, command: String, outcome: AuditOutcome) {
        self.hub
            .audit(AuditRecord {
                time: self.hub.now(),
                peer: self.peer.clone(),
                role: self.role,
                command,
                outcome,
            })
            .await;
    }

    fn password_line(&mut self, text: &str) {
        let ok = match &self.password {
            Some(pw) => constant_time_eq(text.as_bytes(), pw.as_bytes()),
            None => true,
        };
        if ok {
            self.authenticated = true;
            self.line("SUCCESS: password is correct");
            self.welcome();
        } else {
            self.pw_failures += 1;
            let max = self.hub.config().limits.password_attempts;
            if self.pw_failures >= max {
                self.hub.log_local(
                    D_MANAGEMENT_LEVEL,
                    LogFlags::default(),
                    format!("MAN: client connection rejected after {max} failed password attempts"),
                );
                self.closing = true;
            } else {
                self.out.extend_from_slice(PASSWORD_PROMPT.as_bytes());
            }
        }
    }

    fn reply_is_error(&self, start: usize) -> bool {
        self.out
            .get(start..)
            .map(|s| s.starts_with(b"ERROR"))
            .unwrap_or(false)
    }

    /// Handle one framed input line.
    pub async fn on_line(&mut self, line: FramedLine) {
        if !self.authenticated {
            if line.binary {
                self.pw_failures += 1;
            }
            self.password_line(&line.text);
            return;
        }
        if self.block.is_some() {
            self.block_line(line).await;
            return;
        }
        if line.binary {
            self.line("ERROR: binary input (NUL byte or invalid UTF-8) rejected");
            self.audit("<binary input>".into(), AuditOutcome::Rejected)
                .await;
            return;
        }
        let parsed = tokenize(&line.text);
        let first = parsed.as_ref().ok().and_then(|p| p.first().cloned());
        if let Err(e) = &parsed {
            self.line(&format!("ERROR: {e}"));
        }
        match first.as_deref() {
            Some("load-stats") => {}
            Some("password") => self.log_cmd("password [...]".to_string()),
            Some(_) => self.log_cmd(line.text.clone()),
            None if parsed.is_err() => self.log_cmd(line.text.clone()),
            None => {}
        }
        let p = match parsed {
            Ok(p) => p,
            Err(_) => {
                self.audit(
                    crate::access::redact_command(&[line.text.chars().take(64).collect()]),
                    AuditOutcome::Rejected,
                )
                .await;
                return;
            }
        };
        if p.is_empty() {
            return;
        }
        let redacted = redact_command(&p);
        let needed = required_role(&p);
        if !self.role.allows(needed) {
            self.line(&format!(
                "ERROR: permission denied: '{}' requires the {} role, this connection has the {} role",
                p[0],
                needed.name(),
                self.role.name()
            ));
            self.audit(redacted, AuditOutcome::Denied).await;
            return;
        }
        let start = self.out.len();
        self.dispatch(&p).await;
        let ok = !self.reply_is_error(start);
        self.audit(redacted, AuditOutcome::Executed { ok }).await;
        if self.out.len() > self.hub.config().limits.max_output_bytes {
            self.out.truncate(start);
            self.line("ERROR: reply exceeds the management output limit; closing session");
            self.closing = true;
        }
    }

    fn log_cmd(&mut self, text: String) {
        self.hub.log_local(
            D_MANAGEMENT_LEVEL,
            LogFlags {
                debug: true,
                ..LogFlags::default()
            },
            format!("MANAGEMENT: CMD '{text}'"),
        );
        // INVARIANT: our own CMD log line is rendered before the command's reply.
        self.drain_events();
    }

    async fn block_line(&mut self, line: FramedLine) {
        let max = self.hub.config().limits.max_block_lines;
        if line.text != "END" {
            if let Some(Block::ClientAuth {
                lines, overflow, ..
            }) = &mut self.block
            {
                if line.binary || lines.len() >= max {
                    *overflow = true;
                } else {
                    lines.push(line.text);
                }
            }
            return;
        }
        let Some(Block::ClientAuth {
            cid,
            kid,
            lines,
            overflow,
        }) = self.block.take()
        else {
            return;
        };
        let n = lines.len();
        let ok = if overflow {
            false
        } else {
            matches!(
                self.hub
                    .backend()
                    .call(Request::ClientAuth {
                        cid,
                        kid,
                        config: lines,
                    })
                    .await,
                Ok(crate::backend::Response::Done(true))
            )
        };
        if ok {
            self.line("SUCCESS: client-auth command succeeded");
        } else {
            self.line("ERROR: client-auth command failed");
        }
        self.audit(
            format!("client-auth {cid} {kid} ({n} config lines)"),
            AuditOutcome::Executed { ok },
        )
        .await;
    }
}

/// Description of a connection for the `Client connected from ...` log line.
pub fn describe_peer(policy: &ListenerPolicy, peer: &Peer) -> String {
    match (&policy.kind, peer) {
        (_, Peer::Tcp(sa)) => match sa {
            std::net::SocketAddr::V4(_) => format!("[AF_INET]{sa}"),
            std::net::SocketAddr::V6(_) => format!("[AF_INET6]{sa}"),
        },
        (crate::access::ListenerKind::Unix(path), _) => path.clone(),
        (crate::access::ListenerKind::Tcp, _) => "unknown".to_string(),
    }
}

async fn flush<W: AsyncWrite + Unpin>(w: &mut W, s: &mut Session, timeout: Duration) -> bool {
    let out = s.take_output();
    if out.is_empty() {
        return true;
    }
    matches!(
        tokio::time::timeout(timeout, async {
            w.write_all(&out).await?;
            w.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}

struct Registration(Arc<Hub>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.unregister_session();
    }
}

async fn bytecount_tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Serve one management connection until it ends.
pub async fn run_session<S>(hub: Arc<Hub>, stream: S, peer: Peer, policy: Arc<ListenerPolicy>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let limits = hub.config().limits.clone();
    let (mut rd, mut wr) = tokio::io::split(stream);
    // INVARIANT: admission runs before any byte is sent; a rejected peer gets nothing.
    let role = match admit(&policy, &peer) {
        Ok(r) => r,
        Err(e) => {
            hub.log_local(D_MANAGEMENT_LEVEL, LogFlags::default(), e.to_string());
            return;
        }
    };
    if !hub.try_register_session() {
        let msg = format!(
            "ERROR: too many management clients connected (limit {})\r\n",
            limits.max_clients
        );
        let _ = tokio::time::timeout(limits.write_timeout, wr.write_all(msg.as_bytes())).await;
        hub.log_local(
            D_MANAGEMENT_LEVEL,
            LogFlags::default(),
            "MANAGEMENT: connection refused: too many management clients".into(),
        );
        return;
    }
    let _registration = Registration(hub.clone());
    hub.log_local(
        D_MANAGEMENT_LEVEL,
        LogFlags::default(),
        format!(
            "MANAGEMENT: Client connected from {}",
            describe_peer(&policy, &peer)
        ),
    );
    let mut s = Session::new(hub.clone(), role, peer, policy.password.clone());
    s.start();
    let mut ok = flush(&mut wr, &mut s, limits.write_timeout).await;
    let mut framer = LineFramer::new();
    let mut bucket = TokenBucket::new(
        limits.commands_per_sec,
        limits.command_burst,
        Instant::now(),
    );
    let unauth_deadline = Instant::now() + limits.unauth_timeout;
    let mut timer: Option<tokio::time::Interval> = None;
    let mut timer_period = 0u32;
    let mut buf = vec![0u8; 4096];
    let mut lines = Vec::new();
    while ok && !s.closing() {
        tokio::select! {
            biased;
            r = rd.read(&mut buf) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                lines.clear();
                framer.feed(&buf[..n], &mut lines);
                for line in lines.drain(..) {
                    if let Some(wait) = bucket.take(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                    s.on_line(line).await;
                    ok = flush(&mut wr, &mut s, limits.write_timeout).await;
                    if !ok || s.closing() { break; }
                }
            }
            ev = s.next_event() => {
                match ev {
                    Some(ev) => { s.on_event(&ev); ok = flush(&mut wr, &mut s, limits.write_timeout).await; }
                    None => break,
                }
            }
            _ = tokio::time::sleep_until(unauth_deadline), if !s.authenticated() => break,
            _ = bytecount_tick(&mut timer) => {
                if let Ok(crate::backend::Response::ByteCounts(v)) = hub.backend().call(Request::ByteCounts).await {
                    // As OpenVPN 2.6: every established client, every interval, changed or not.
                    for (cid, bin, bout) in v {
                        s.line(&bytecount_cli_line(cid, bin, bout));
                    }
                    ok = flush(&mut wr, &mut s, limits.write_timeout).await;
                }
            }
        }
        if s.bytecount != timer_period {
            timer_period = s.bytecount;
            timer = if timer_period > 0 {
                let period = Duration::from_secs(u64::from(timer_period));
                let mut t = tokio::time::interval_at(Instant::now() + period, period);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(t)
            } else {
                None
            };
        }
    }
    if ok {
        let _ = flush(&mut wr, &mut s, limits.write_timeout).await;
    }
    let _ = wr.shutdown().await;
    if s.state_on {
        hub.state_listener(false);
    }
    if s.lagged() || !ok {
        hub.log_local(
            D_MANAGEMENT_LEVEL,
            LogFlags::default(),
            "MANAGEMENT: dropping slow management client (output not consumed)".into(),
        );
    }
    if s.authenticated() {
        hub.log_local(
            D_MANAGEMENT_LEVEL,
            LogFlags::default(),
            "MANAGEMENT: Client disconnected".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), None);
        let w = b.take(t0).unwrap();
        assert!(w > Duration::from_millis(90) && w <= Duration::from_millis(100));
        // After a second the bucket is full again (capped at the burst).
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.take(t1), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"mgmtpw", b"mgmtpw"));
        assert!(!constant_time_eq(b"mgmtpw", b"mgmtpx"));
        assert!(!constant_time_eq(b"mgmtpw", b"mgmtpw2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
