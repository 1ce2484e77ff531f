//! Command dispatch: every management command in server mode with OpenVPN 2.6.14's exact
//! replies and error texts.
//!
//! Entry point: `Session::dispatch(&mut self, p: &[String])` (crate-internal), called by the
//! session after tokenising, CMD logging and the access check. Replies are appended to the
//! session's output buffer. Numeric arguments follow OpenVPN's C parsing: [`atoi`] (leading
//! whitespace, sign, digits, else 0) and [`scan_unsigned`] (`sscanf("%lu")`-like: leading
//! digits required).
//!
//! Client-mode-only commands answer exactly as 2.6.14 does in server mode (not-supported,
//! "not currently available", "no ... is currently needed at this time", ...).

use crate::backend::{AuthRetry, BackendError, MgmtSignal, Request, Response, SignalOutcome};
use crate::session::{Block, Session};
use crate::status::{render, LineEnding, StatusVersion};

/// Management interface version announced in the greeting and `version`.
pub const MANAGEMENT_VERSION: u32 = 5;

/// Lines of the `help` reply between the title line and `END` (byte-exact 2.6.14, PKCS#11 build).
pub const HELP_LINES: &[&str] = &[
    "Commands:",
    "auth-retry t           : Auth failure retry mode (none,interact,nointeract).",
    "bytecount n            : Show bytes in/out, update every n secs (0=off).",
    "echo [on|off] [N|all]  : Like log, but only show messages in echo buffer.",
    "cr-response response   : Send a challenge response answer via CR_RESPONSE to server",
    "exit|quit              : Close management session.",
    "forget-passwords       : Forget passwords entered so far.",
    "help                   : Print this message.",
    "hold [on|off|release]  : Set/show hold flag to on/off state, or",
    "                         release current hold and start tunnel.",
    "kill cn                : Kill the client instance(s) having common name cn.",
    "kill IP:port           : Kill the client instance connecting from IP:port.",
    "load-stats             : Show global server load stats.",
    "log [on|off] [N|all]   : Turn on/off realtime log display",
    "                         + show last N lines or 'all' for entire history.",
    "mute [n]               : Set log mute level to n, or show level if n is absent.",
    "needok type action     : Enter confirmation for NEED-OK request of 'type',",
    "                         where action = 'ok' or 'cancel'.",
    "needstr type action    : Enter confirmation for NEED-STR request of 'type',",
    "                         where action is reply string.",
    "net                    : (Windows only) Show network info and routing table.",
    "password type p        : Enter password p for a queried OpenVPN password.",
    "remote type [host port] : Override remote directive, type=ACCEPT|MOD|SKIP.",
    "remote-entry-count     : Get number of available remote entries.",
    "remote-entry-get  i|all [j]: Get remote entry at index = i to to j-1 or all.",
    "proxy type [host port flags] : Enter dynamic proxy server info.",
    "pid                    : Show process ID of the current OpenVPN process.",
    "pkcs11-id-count        : Get number of available PKCS#11 identities.",
    "pkcs11-id-get index    : Get PKCS#11 identity at index.",
    "client-auth CID KID    : Authenticate client-id/key-id CID/KID (MULTILINE)",
    "client-auth-nt CID KID : Authenticate client-id/key-id CID/KID",
    "client-deny CID KID R [CR] : Deny auth client-id/key-id CID/KID with log reason",
    "                             text R and optional client reason text CR",
    "client-pending-auth CID KID MSG timeout : Instruct OpenVPN to send AUTH_PENDING and INFO_PRE msg",
    "                                      to the client and wait for a final client-auth/client-deny",
    "client-kill CID [M]    : Kill client instance CID with message M (def=RESTART)",
    "env-filter [level]     : Set env-var filter level",
    "rsa-sig                : Enter a signature in response to >RSA_SIGN challenge",
    "                         Enter signature base64 on subsequent lines followed by END",
    "pk-sig                 : Enter a signature in response to >PK_SIGN challenge",
    "                         Enter signature base64 on subsequent lines followed by END",
    "certificate            : Enter a client certificate in response to >NEED-CERT challenge",
    "                         Enter certificate base64 on subsequent lines followed by END",
    "signal s               : Send signal s to daemon,",
    "                         s = SIGHUP|SIGTERM|SIGUSR1|SIGUSR2.",
    "state [on|off] [N|all] : Like log, but show state history.",
    "status [n]             : Show current daemon status info using format #n.",
    "test n                 : Produce n lines of output for testing/debugging.",
    "username type u        : Enter username u for a queried OpenVPN username.",
    "verb [n]               : Set log verbosity level to n, or show if n is absent.",
    "version [n]            : Set client's version to n or show current version of daemon.",
];

/// C `atoi`: optional leading whitespace and sign, then digits; anything else yields 0.
/// Saturates instead of overflowing.
pub fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for b in rest.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}

/// `sscanf("%lu")`-like: optional whitespace, then at least one digit; trailing text ignored.
pub fn scan_unsigned(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let s = s.strip_prefix('+').unwrap_or(s);
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}

fn need(s: &mut Session, p: &[String], n: usize, at_least: bool) -> bool {
    if p.len() > n {
        return true;
    }
    s.line(&format!(
        "ERROR: the '{}' command requires {}{} parameter{}",
        p[0],
        if at_least { "at least " } else { "" },
        n,
        if n > 1 { "s" } else { "" }
    ));
    false
}

fn unsupported(s: &mut Session, name: &str) {
    s.line(&format!(
        "ERROR: The '{name}' command is not supported by the current daemon mode"
    ));
}

/// Which history a `state`/`log`/`echo` command addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum History {
    State,
    Log,
    Echo,
}

impl History {
    fn name(self) -> &'static str {
        match self {
            History::State => "state",
            History::Log => "log",
            History::Echo => "echo",
        }
    }
}

impl Session {
    /// Call the backend; on error write the matching `ERROR:` line and return `None`.
    async fn call(&mut self, req: Request, cmd: &str) -> Option<Response> {
        match self.hub.backend().call(req).await {
            Ok(r) => Some(r),
            Err(BackendError::Unavailable) => {
                unsupported(self, cmd);
                None
            }
            Err(e) => {
                self.line(&format!("ERROR: '{cmd}' failed: {e}"));
                None
            }
        }
    }

    fn unexpected(&mut self, cmd: &str) {
        self.line(&format!(
            "ERROR: '{cmd}' failed: unexpected response from the daemon"
        ));
    }

    fn history(&mut self, which: History, arg: &str) {
        let set = |s: &mut Session, on: bool| {
            match which {
                History::State => {
                    if s.state_on != on {
                        s.hub.state_listener(on);
                    }
                    s.state_on = on;
                }
                History::Log => s.log_on = on,
                History::Echo => s.echo_on = on,
            }
            s.line(&format!(
                "SUCCESS: real-time {} notification set to {}",
                which.name(),
                if on { "ON" } else { "OFF" }
            ));
        };
        let n = match arg {
            "on" => return set(self, true),
            "off" => return set(self, false),
            "all" => None,
            other => {
                let n = atoi(other);
                if n <= 0 {
                    self.line(&format!(
                        "ERROR: {} parameter must be 'on' or 'off' or some number n or 'all'",
                        which.name()
                    ));
                    return;
                }
                Some(usize::try_from(n).unwrap_or(usize::MAX))
            }
        };
        let lines: Vec<String> = match which {
            History::State => self.hub.state_history(n).iter().map(|e| e.line()).collect(),
            History::Log => self.hub.log_history(n).iter().map(|e| e.line()).collect(),
            History::Echo => self.hub.echo_history(n).iter().map(|e| e.line()).collect(),
        };
        for l in lines {
            self.line(&l);
        }
        self.line("END");
    }

    async fn kill(&mut self, arg: &str) {
        let split = arg.split_once(':');
        if let Some((a, b)) = split {
            if !a.is_empty() && !b.is_empty() {
                if a.len() >= 128 || b.len() >= 128 {
                    self.line("ERROR: kill parse");
                    return;
                }
                let port_str = b.split(':').next().unwrap_or("");
                let port = atoi(port_str);
                let Ok(ip) = a.parse::<std::net::Ipv4Addr>() else {
                    self.line(&format!("ERROR: error parsing IP address: {a}"));
                    return;
                };
                let Ok(port) = u16::try_from(port) else {
                    self.line(&format!("ERROR: port number is out of range: {port_str}"));
                    return;
                };
                if let Some(r) = self.call(Request::KillAddress { ip, port }, "kill").await {
                    match r {
                        Response::Count(n) if n > 0 => self.line(&format!(
                            "SUCCESS: {n} client(s) at address {ip}:{port} killed"
                        )),
                        Response::Count(_) => {
                            self.line(&format!("ERROR: client at address {ip}:{port} not found"))
                        }
                        _ => self.unexpected("kill"),
                    }
                }
                return;
            }
        }
        if let Some(r) = self
            .call(Request::KillCommonName(arg.to_string()), "kill")
            .await
        {
            match r {
                Response::Count(n) if n > 0 => self.line(&format!(
                    "SUCCESS: common name '{arg}' found, {n} client(s) killed"
                )),
                Response::Count(_) => self.line(&format!("ERROR: common name '{arg}' not found")),
                _ => self.unexpected("kill"),
            }
        }
    }

    async fn done(&mut self, req: Request, cmd: &str, ok: &str, err: &str) {
        if let Some(r) = self.call(req, cmd).await {
            match r {
                Response::Done(true) => self.line(ok),
                Response::Done(false) => self.line(err),
                _ => self.unexpected(cmd),
            }
        }
    }

    fn cid_kid(&mut self, cid: &str, kid: &str) -> Option<(u64, u32)> {
        let Some(c) = scan_unsigned(cid) else {
            self.line("ERROR: cannot parse CID");
            return None;
        };
        let Some(k) = scan_unsigned(kid) else {
            self.line("ERROR: cannot parse KID");
            return None;
        };
        Some((c, u32::try_from(k).unwrap_or(u32::MAX)))
    }

    /// Execute one tokenised command (access already checked).
    pub(crate) async fn dispatch(&mut self, p: &[String]) {
        let cmd = p[0].as_str();
        let arg = |i: usize| p.get(i).map(String::as_str);
        match cmd {
            "exit" | "quit" => self.closing = true,
            "help" => {
                let title = match self.call(Request::Info, "help").await {
                    Some(Response::Info { title, .. }) => title,
                    Some(_) => return self.unexpected("help"),
                    None => return,
                };
                self.line(&format!("Management Interface for {title}"));
                for l in HELP_LINES {
                    self.line(l);
                }
                self.line("END");
            }
            "version" => {
                if let Some(v) = arg(1) {
                    let v = i32::try_from(atoi(v)).unwrap_or(i32::MAX);
                    self.hub.set_client_version(v);
                } else {
                    match self.call(Request::Info, "version").await {
                        Some(Response::Info { title, .. }) => {
                            self.line(&format!("OpenVPN Version: {title}"));
                            self.line(&format!("Management Version: {MANAGEMENT_VERSION}"));
                            self.line("END");
                        }
                        Some(_) => self.unexpected("version"),
                        None => {}
                    }
                }
            }
            "pid" => match self.call(Request::Info, "pid").await {
                Some(Response::Info { pid, .. }) => self.line(&format!("SUCCESS: pid={pid}")),
                Some(_) => self.unexpected("pid"),
                None => {}
            },
            "nclients" => match self.call(Request::NClients, "nclients").await {
                Some(Response::Count(n)) => self.line(&format!("SUCCESS: nclients={n}")),
                Some(_) => self.unexpected("nclients"),
                None => {}
            },
            "load-stats" => match self.call(Request::LoadStats, "load-stats").await {
                Some(Response::LoadStats {
                    nclients,
                    bytes_in,
                    bytes_out,
                }) => self.line(&format!(
                    "SUCCESS: nclients={nclients},bytesin={bytes_in},bytesout={bytes_out}"
                )),
                Some(_) => self.unexpected("load-stats"),
                None => {}
            },
            "env-filter" => {
                let level = arg(1).map(atoi).unwrap_or(0);
                let level =
                    i32::try_from(level).unwrap_or(if level < 0 { i32::MIN } else { i32::MAX });
                self.hub.set_env_filter(level);
                self.line(&format!("SUCCESS: env_filter_level={level}"));
            }
            "signal" => {
                if !need(self, p, 1, false) {
                    return;
                }
                let name = p[1].as_str();
                let Some(sig) = MgmtSignal::parse(name) else {
                    self.line(&format!(
                        "ERROR: signal '{name}' is not a known signal type"
                    ));
                    return;
                };
                match self.call(Request::Signal(sig), "signal").await {
                    Some(Response::Signal(SignalOutcome::Thrown(n))) => {
                        self.line(&format!("SUCCESS: signal {n} thrown"))
                    }
                    Some(Response::Signal(SignalOutcome::IgnoredInHold)) => {
                        self.line(&format!("ERROR: signal '{name}' is currently ignored"));
                        if let Some(prompt) = self.hub.pending_prompt() {
                            self.line(&prompt);
                        }
                    }
                    Some(_) => self.unexpected("signal"),
                    None => {}
                }
            }
            "status" => {
                let n = arg(1).map(atoi).unwrap_or(0);
                let version = if n == 0 {
                    self.hub.config().status_version
                } else {
                    match u32::try_from(n)
                        .ok()
                        .and_then(|n| StatusVersion::from_number(n).ok())
                    {
                        Some(v) => v,
                        None => {
                            self.line("ERROR: bad status format version number");
                            return;
                        }
                    }
                };
                match self.call(Request::Status, "status").await {
                    Some(Response::Status(snap)) => {
                        let text = render(&snap, version, LineEnding::CrLf);
                        self.out.extend_from_slice(text.as_bytes());
                    }
                    Some(_) => self.unexpected("status"),
                    None => {}
                }
            }
            "kill" => {
                if need(self, p, 1, false) {
                    let a = p[1].clone();
                    self.kill(&a).await;
                }
            }
            "verb" => match arg(1) {
                Some(v) => {
                    let level = atoi(v);
                    match u8::try_from(level).ok().filter(|l| *l <= 15) {
                        Some(l) => {
                            if let Some(r) = self.call(Request::SetVerb(l), "verb").await {
                                if r == Response::Done(true) {
                                    self.hub.set_verb(l);
                                    self.line("SUCCESS: verb level changed");
                                } else {
                                    self.line("ERROR: verb level is out of range");
                                }
                            }
                        }
                        None => self.line("ERROR: verb level is out of range"),
                    }
                }
                None => match self.call(Request::GetVerb, "verb").await {
                    Some(Response::Number(n)) => self.line(&format!("SUCCESS: verb={n}")),
                    Some(_) => self.unexpected("verb"),
                    None => {}
                },
            },
            "mute" => match arg(1) {
                Some(v) => match u32::try_from(atoi(v)) {
                    Ok(m) => {
                        if let Some(r) = self.call(Request::SetMute(m), "mute").await {
                            if r == Response::Done(true) {
                                self.line("SUCCESS: mute level changed");
                            } else {
                                self.line("ERROR: mute level is out of range");
                            }
                        }
                    }
                    Err(_) => self.line("ERROR: mute level is out of range"),
                },
                None => match self.call(Request::GetMute, "mute").await {
                    Some(Response::Number(n)) => self.line(&format!("SUCCESS: mute={n}")),
                    Some(_) => self.unexpected("mute"),
                    None => {}
                },
            },
            "auth-retry" => match arg(1) {
                Some(v) => match AuthRetry::parse(v) {
                    Some(a) => {
                        self.done(
                            Request::SetAuthRetry(a),
                            "auth-retry",
                            "SUCCESS: auth-retry parameter changed",
                            "ERROR: bad auth-retry parameter",
                        )
                        .await
                    }
                    None => {
                        self.line(
                            "--auth-retry method must be 'interact', 'nointeract', or 'none'",
                        );
                        self.line("ERROR: bad auth-retry parameter");
                    }
                },
                None => match self.call(Request::GetAuthRetry, "auth-retry").await {
                    Some(Response::AuthRetry(a)) => {
                        self.line(&format!("SUCCESS: auth-retry={}", a.name()))
                    }
                    Some(_) => self.unexpected("auth-retry"),
                    None => {}
                },
            },
            "state" => match arg(1) {
                None => self.history(History::State, "1"),
                Some(a) => {
                    let a = a.to_string();
                    self.history(History::State, &a);
                    if let Some(b) = arg(2) {
                        let b = b.to_string();
                        self.history(History::State, &b);
                    }
                }
            },
            "log" | "echo" => {
                if !need(self, p, 1, true) {
                    return;
                }
                let which = if cmd == "log" {
                    History::Log
                } else {
                    History::Echo
                };
                self.history(which, &p[1]);
                if let Some(b) = arg(2) {
                    let b = b.to_string();
                    self.history(which, &b);
                }
            }
            "username" => {
                if need(self, p, 2, false) {
                    self.line("ERROR: no username is currently needed at this time");
                }
            }
            "password" => {
                if need(self, p, 2, false) {
                    self.line("ERROR: no password is currently needed at this time");
                }
            }
            "needok" => {
                if need(self, p, 2, false) {
                    self.line("ERROR: no needok-confirmation is currently needed at this time");
                }
            }
            "needstr" => {
                if need(self, p, 2, false) {
                    self.line("ERROR: no needstr-string is currently needed at this time");
                }
            }
            "forget-passwords" => {
                self.done(
                    Request::ForgetPasswords,
                    "forget-passwords",
                    "SUCCESS: Passwords were forgotten",
                    "ERROR: forget-passwords failed",
                )
                .await
            }
            "cr-response" => {
                if need(self, p, 1, false) {
                    // 2.6.14 misspells the command name in this error.
                    unsupported(self, "cr-repsonse");
                }
            }
            "net" => {
                self.line("ERROR: Sorry, this command is currently only implemented on Windows")
            }
            "hold" => match arg(1) {
                None => match self.call(Request::GetHold, "hold").await {
                    Some(Response::Flag(h)) => {
                        self.line(&format!("SUCCESS: hold={}", if h { 1 } else { 0 }))
                    }
                    Some(_) => self.unexpected("hold"),
                    None => {}
                },
                Some("on") => {
                    self.done(
                        Request::SetHold(true),
                        "hold",
                        "SUCCESS: hold flag set to ON",
                        "ERROR: bad hold command parameter",
                    )
                    .await
                }
                Some("off") => {
                    self.done(
                        Request::SetHold(false),
                        "hold",
                        "SUCCESS: hold flag set to OFF",
                        "ERROR: bad hold command parameter",
                    )
                    .await
                }
                Some("release") => {
                    self.done(
                        Request::HoldRelease,
                        "hold",
                        "SUCCESS: hold release succeeded",
                        "ERROR: hold release failed",
                    )
                    .await;
                    // The pending `>HOLD:` prompt is no longer re-sent to new sessions.
                    if self.out.ends_with(b"SUCCESS: hold release succeeded\r\n") {
                        self.hub.ingest(crate::model::MgmtEvent::HoldReleased);
                    }
                }
                Some(_) => self.line("ERROR: bad hold command parameter"),
            },
            "bytecount" => {
                if need(self, p, 1, false) {
                    let n = atoi(&p[1]);
                    self.bytecount = u32::try_from(n).unwrap_or(0);
                    self.line("SUCCESS: bytecount interval changed");
                }
            }
            "client-kill" => {
                if !need(self, p, 1, true) {
                    return;
                }
                let Some(cid) = scan_unsigned(&p[1]) else {
                    self.line("ERROR: cannot parse CID");
                    return;
                };
                let message = arg(2).unwrap_or("RESTART").to_string();
                self.done(
                    Request::ClientKill { cid, message },
                    "client-kill",
                    "SUCCESS: client-kill command succeeded",
                    "ERROR: client-kill command failed",
                )
                .await
            }
            "client-deny" => {
                if !need(self, p, 3, true) {
                    return;
                }
                let Some((cid, kid)) = self.cid_kid(&p[1], &p[2]) else {
                    return;
                };
                let req = Request::ClientDeny {
                    cid,
                    kid,
                    reason: p[3].clone(),
                    client_reason: arg(4).map(String::from),
                };
                self.done(
                    req,
                    "client-deny",
                    "SUCCESS: client-deny command succeeded",
                    "ERROR: client-deny command failed",
                )
                .await
            }
            "client-auth-nt" => {
                if !need(self, p, 2, false) {
                    return;
                }
                let Some((cid, kid)) = self.cid_kid(&p[1], &p[2]) else {
                    return;
                };
                self.done(
                    Request::ClientAuthNt { cid, kid },
                    "client-auth-nt",
                    "SUCCESS: client-auth command succeeded",
                    "ERROR: client-auth command failed",
                )
                .await
            }
            "client-auth" => {
                if !need(self, p, 2, false) {
                    return;
                }
                if let Some((cid, kid)) = self.cid_kid(&p[1], &p[2]) {
                    self.block = Some(Block::ClientAuth {
                        cid,
                        kid,
                        lines: Vec::new(),
                        overflow: false,
                    });
                }
            }
            "client-pending-auth" => {
                if !need(self, p, 4, false) {
                    return;
                }
                let Some((cid, kid)) = self.cid_kid(&p[1], &p[2]) else {
                    return;
                };
                let Some(timeout) = scan_unsigned(&p[4]) else {
                    self.line("ERROR: cannot parse TIMEOUT");
                    return;
                };
                let req = Request::ClientPendingAuth {
                    cid,
                    kid,
                    extra: p[3].clone(),
                    timeout: u32::try_from(timeout).unwrap_or(u32::MAX),
                };
                self.done(
                    req,
                    "client-pending-auth",
                    "SUCCESS: client-pending-auth command succeeded",
                    "ERROR: client-pending-auth command failed. Extra parameter might be too long",
                )
                .await
            }
            "rsa-sig" => self.line("ERROR: The rsa-sig command is not currently available"),
            "pk-sig" => self.line("ERROR: The pk-sig command is not currently available"),
            "certificate" => self.line("ERROR: The certificate command is not currently available"),
            "pkcs11-id-count" => self.line(">PKCS11ID-COUNT:0"),
            "pkcs11-id-get" => {
                if need(self, p, 1, false) {
                    let i = atoi(&p[1]);
                    self.line(&format!(">PKCS11ID-ENTRY:'{i}'"));
                }
            }
            "remote-entry-count" => unsupported(self, "remote-entry-count"),
            "remote-entry-get" => {
                if need(self, p, 1, true) {
                    unsupported(self, "remote-entry-get");
                }
            }
            "proxy" => {
                if need(self, p, 1, true) {
                    unsupported(self, "proxy");
                }
            }
            "remote" => {
                if need(self, p, 1, true) {
                    unsupported(self, "remote");
                }
            }
            "test" => {
                if need(self, p, 1, false) {
                    let n = atoi(&p[1]);
                    let cap = self.hub.config().limits.max_output_bytes;
                    let mut i = 0i64;
                    while i < n && self.out.len() <= cap {
                        self.line(&format!(
                            "[{i}] The purpose of this command is to generate large amounts of output."
                        ));
                        i += 1;
                    }
                }
            }
            _ => self.line("ERROR: unknown command, enter 'help' for more options"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_number_parsing() {
        assert_eq!(atoi("12"), 12);
        assert_eq!(atoi(" -3x"), -3);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi("99999999999999999999999"), i64::MAX);
        assert_eq!(scan_unsigned("12abc"), Some(12));
        assert_eq!(scan_unsigned("abc"), None);
        assert_eq!(scan_unsigned(""), None);
    }
}
