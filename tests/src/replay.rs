//! Replaying OpenVPN 2.6.14 management captures against a live daemon: raw sessions and the
//! normaliser that masks exactly the values that legitimately differ between the capture run and
//! ours.
//!
//! What [`Normalizer::normalize`] masks, line by line (everything else must match byte for byte,
//! CRLFs included):
//! - run-specific strings replaced by the capture's (`substitutions`: socket paths, config names);
//! - the version/title string (`OpenVPN Version: …`, `TITLE,…`, `Management Interface for …`):
//!   Bulwark's build string differs;
//! - the ORDER of the rows of a status client list and routing table (compared as sets): OpenVPN
//!   prints them in the iteration order of hash tables keyed with a random per-process key
//!   (`hash_init` in its list.c), so even two OpenVPN runs differ;
//! - dates (`YYYY-MM-DD HH:MM:SS` and ctime form) → `<DATE>`;
//! - the ports of the client's real address (`CLIENT_IP:port`) → `<PORT>`;
//! - `>CLIENT:ENV` values that depend on the run: times, ports, byte counters, the certificates'
//!   serials and digests (our test PKI is not the capture's), the daemon's pid/start time, the
//!   config file name and the `daemon`/`daemon_log_redirect` flags (the capture's server ran with
//!   `--daemon`, ours in the foreground under the test harness); the key and its position are kept;
//! - any other run of three or more digits (pids, unix times, byte/packet counters, ports) → `<N>`;
//!   runs inside addresses (`10.98.0.2`, `fd00:98::1000`) are not numbers and stay;
//! - the value of `Max bcast/mcast queue length` (a traffic-dependent counter);
//! - the key id of `>CLIENT:CONNECT|REAUTH|CR_RESPONSE` (OpenVPN: an internal counter; Bulwark:
//!   the TLS key id — both opaque handles the management client echoes back);
//! - the body of a log history reply (`log all`, `log on all`) except its last three lines: its
//!   content is the daemon's log since start, which differs by design (the message set is compared
//!   separately); the three lines kept are the management session's own.

/// `>CLIENT:ENV` keys whose values differ between runs (see the module doc).
const ENV_RUN_VALUES: &[&str] = &[
    "time_unix",
    "time_ascii",
    "time_duration",
    "trusted_port",
    "untrusted_port",
    "bytes_sent",
    "bytes_received",
    "daemon_pid",
    "daemon_start_time",
    "daemon",
    "daemon_log_redirect",
    "config",
];

/// `>CLIENT:ENV` key prefixes of certificate-specific values.
const ENV_CERT_PREFIXES: &[&str] = &["tls_serial_", "tls_digest_"];

/// Masks run-dependent values of a management transcript (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct Normalizer {
    /// `(ours, capture's)` literal replacements applied first.
    pub substitutions: Vec<(String, String)>,
    /// The client's real (link) address, whose ports are masked.
    pub client_ips: Vec<String>,
}

impl Normalizer {
    /// Normalises a transcript (lossy UTF-8; CR/LF kept as they are).
    pub fn normalize(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        let mut lines: Vec<(String, String)> = Vec::new();
        for raw in text.split_inclusive('\n') {
            let eol_at = raw.find(['\r', '\n']).unwrap_or(raw.len());
            let (body, eol) = raw.split_at(eol_at);
            lines.push((self.line(body), eol.to_string()));
        }
        collapse_log_history(&mut lines);
        sort_table_rows(&mut lines);
        lines.into_iter().map(|(b, e)| b + &e).collect()
    }

    fn line(&self, body: &str) -> String {
        let mut s = body.to_string();
        for (ours, theirs) in &self.substitutions {
            s = s.replace(ours.as_str(), theirs);
        }
        if s.starts_with("OpenVPN Version: ") {
            return "OpenVPN Version: <VERSION>".into();
        }
        if s.starts_with("Management Interface for ") {
            return "Management Interface for <VERSION>".into();
        }
        for sep in [",", "\t"] {
            if s.starts_with(&format!("TITLE{sep}")) {
                return format!("TITLE{sep}<VERSION>");
            }
        }
        // OpenVPN's management key ids are an internal counter (1 for the first TLS session,
        // 3 after the first renegotiation); Bulwark hands out the TLS key id. Both are opaque
        // handles a management client only echoes back in client-auth/client-deny.
        for kind in [
            ">CLIENT:CONNECT,",
            ">CLIENT:REAUTH,",
            ">CLIENT:CR_RESPONSE,",
        ] {
            if let Some(rest) = s.strip_prefix(kind) {
                let mut f: Vec<&str> = rest.splitn(3, ',').collect();
                if f.len() >= 2 {
                    f[1] = "<KID>";
                    return format!("{kind}{}", f.join(","));
                }
            }
        }
        if let Some(rest) = s.strip_prefix(">CLIENT:ENV,") {
            if let Some((k, _)) = rest.split_once('=') {
                if ENV_RUN_VALUES.contains(&k) || ENV_CERT_PREFIXES.iter().any(|p| k.starts_with(p))
                {
                    return format!(">CLIENT:ENV,{k}=<V>");
                }
            }
        }
        s = mask_dates(&s);
        for ip in &self.client_ips {
            s = mask_ports_after(&s, ip);
        }
        // A notification's tag (`>LOG:`, `>STATE:`) is not part of the first number.
        s = match s.split_once(':').filter(|_| s.starts_with('>')) {
            Some((tag, rest)) => format!("{tag}:{}", mask_numbers(rest)),
            None => mask_numbers(&s),
        };
        for sep in [',', '\t'] {
            let key = format!("Max bcast/mcast queue length{sep}");
            if let Some(i) = s.find(&key) {
                s.truncate(i + key.len());
                s.push_str("<N>");
            }
        }
        s
    }
}

/// The table a status row belongs to (`None` for any other line), given the v1 section the
/// previous lines opened. A `>LOG:<N>,I,` prefix (the SIGUSR2 dump) is part of the key.
fn table_of(body: &str, v1: &mut Option<&'static str>) -> Option<String> {
    let (prefix, rest) = match body.strip_prefix(">LOG:<N>,I,") {
        Some(r) => (">LOG:", r),
        None => ("", body),
    };
    match rest {
        "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since" => {
            *v1 = Some("v1-clients");
            return None;
        }
        "Virtual Address,Common Name,Real Address,Last Ref" => {
            *v1 = Some("v1-routes");
            return None;
        }
        "ROUTING TABLE" | "GLOBAL STATS" | "END" => {
            *v1 = None;
            return None;
        }
        _ => {}
    }
    for tag in ["CLIENT_LIST", "ROUTING_TABLE"] {
        for sep in [',', '\t'] {
            if rest.starts_with(&format!("{tag}{sep}")) {
                return Some(format!("{prefix}{tag}"));
            }
        }
    }
    v1.map(|t| format!("{prefix}{t}"))
}

/// Sorts every run of consecutive rows of the same status table.
fn sort_table_rows(lines: &mut [(String, String)]) {
    let mut v1 = None;
    let tables: Vec<Option<String>> = lines.iter().map(|(b, _)| table_of(b, &mut v1)).collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(t) = &tables[i] else {
            i += 1;
            continue;
        };
        let mut j = i;
        while j < lines.len() && tables[j].as_ref() == Some(t) {
            j += 1;
        }
        lines[i..j].sort();
        i = j;
    }
}

/// Is this (normalised) line a log history entry `T,FLAGS,MESSAGE`?
fn is_history(body: &str) -> bool {
    let Some(rest) = body.strip_prefix("<N>,") else {
        return false;
    };
    let flags = rest.split(',').next().unwrap_or("");
    rest.contains(',') && flags.chars().all(|c| "IFNWD".contains(c))
}

/// Replaces all but the last three lines of every run of more than three history lines that
/// ends in `END` by one `<LOG HISTORY>` line.
fn collapse_log_history(lines: &mut Vec<(String, String)>) {
    let mut i = 0;
    while i < lines.len() {
        if !is_history(&lines[i].0) {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && is_history(&lines[i].0) {
            i += 1;
        }
        let ends_reply = lines.get(i).is_some_and(|(b, _)| b == "END");
        if ends_reply && i - start > 3 {
            let eol = lines[start].1.clone();
            lines.splice(
                start..i - 3,
                std::iter::once(("<LOG HISTORY>".to_string(), eol)),
            );
            i = start + 4;
        }
    }
}

fn mask_dates(s: &str) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        // YYYY-MM-DD HH:MM:SS
        if i + 19 <= b.len() && shape(&b[i..i + 19], b"dddd-dd-dd dd:dd:dd") {
            out.push_str("<DATE>");
            i += 19;
            continue;
        }
        // Www Mmm dd HH:MM:SS YYYY (day of month space-padded)
        if i + 24 <= b.len()
            && DAYS.iter().any(|d| b[i..].starts_with(d.as_bytes()))
            && shape(&b[i + 3..i + 24], b" ccc ?d dd:dd:dd dddd")
        {
            out.push_str("<DATE>");
            i += 24;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// `d` digit, `c` letter, `?` space or digit, anything else literal.
fn shape(b: &[u8], pat: &[u8]) -> bool {
    b.len() == pat.len()
        && b.iter().zip(pat).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            b'c' => c.is_ascii_alphabetic(),
            b'?' => *c == b' ' || c.is_ascii_digit(),
            other => c == other,
        })
}

fn mask_ports_after(s: &str, ip: &str) -> String {
    let pat = format!("{ip}:");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("<PORT>");
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// Masks digit runs of length ≥ 3 that are not part of an address or a word.
fn mask_numbers(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let glued = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b':' || c == b'_';
            let before = start.checked_sub(1).map(|j| b[j]);
            let after = b.get(i).copied();
            if i - start >= 3 && !before.is_some_and(glued) && !after.is_some_and(glued) {
                out.push_str("<N>");
            } else {
                out.push_str(&s[start..i]);
            }
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

pub use bulwark_mgmt::capture::commands_from_name;

/// The first differing line of two normalised transcripts, for failure messages.
pub fn first_difference(expected: &str, got: &str) -> Option<String> {
    if expected == got {
        return None;
    }
    let e: Vec<&str> = expected.split_inclusive('\n').collect();
    let g: Vec<&str> = got.split_inclusive('\n').collect();
    for i in 0..e.len().max(g.len()) {
        if e.get(i) != g.get(i) {
            return Some(format!(
                "line {}: expected {:?}, got {:?}",
                i + 1,
                e.get(i).copied().unwrap_or("<none>"),
                g.get(i).copied().unwrap_or("<none>")
            ));
        }
    }
    Some("same lines, different bytes".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn n() -> Normalizer {
        Normalizer {
            substitutions: vec![("/tmp/x/mgmt.sock".into(), "/run/ovpn-lab/s1.sock".into())],
            client_ips: vec!["172.31.254.2".into()],
        }
    }

    #[test]
    fn masks_only_run_values() {
        let got = n().normalize(
            b"client1,172.31.254.2:58421,3075,2987,2026-11-22 07:49:37\r\n\
              10.98.0.2,client1,172.31.254.2:1,Sun Nov  2 07:49:44 2026\r\n\
              SUCCESS: pid=7893\r\n\
              1795333764,CONNECTED,SUCCESS,10.98.0.1,,,172.31.254.1,1194,fd00:98::1\r\n\
              >CLIENT:ENV,tls_serial_0=5765\r\n>CLIENT:ENV,verb=3\r\n\
              GLOBAL_STATS\tMax bcast/mcast queue length\t1\r\n\
              >LOG:1795334074,D,MANAGEMENT: CMD 'pid'\r\n",
        );
        assert_eq!(
            got,
            "client1,172.31.254.2:<PORT>,<N>,<N>,<DATE>\r\n\
             10.98.0.2,client1,172.31.254.2:<PORT>,<DATE>\r\n\
             SUCCESS: pid=<N>\r\n\
             <N>,CONNECTED,SUCCESS,10.98.0.1,,,172.31.254.1,<N>,fd00:98::1\r\n\
             >CLIENT:ENV,tls_serial_0=<V>\r\n>CLIENT:ENV,verb=3\r\n\
             GLOBAL_STATS\tMax bcast/mcast queue length\t<N>\r\n\
             >LOG:<N>,D,MANAGEMENT: CMD 'pid'\r\n"
        );
        // a differing small value (client id, verb, n_clients) is not masked
        assert_ne!(
            n().normalize(b">CLIENT:ESTABLISHED,3\r\n"),
            n().normalize(b">CLIENT:ESTABLISHED,2\r\n")
        );
    }

    #[test]
    fn log_history_collapses_but_keeps_the_session_lines() {
        let a = "SUCCESS: x\r\n1795333764,I,one\r\n1795333764,,two\r\n1795333764,W,three\r\n\
                 1795333766,,MANAGEMENT: Client disconnected\r\n\
                 1795333766,,MANAGEMENT: Client connected from /tmp/x/mgmt.sock\r\n\
                 1795333767,D,MANAGEMENT: CMD 'log all'\r\nEND\r\n";
        let b = "SUCCESS: x\r\n1795333764,I,other\r\n\
                 1795333766,,MANAGEMENT: Client disconnected\r\n\
                 1795333766,,MANAGEMENT: Client connected from /run/ovpn-lab/s1.sock\r\n\
                 1795333767,D,MANAGEMENT: CMD 'log all'\r\nEND\r\n";
        assert_eq!(n().normalize(a.as_bytes()), n().normalize(b.as_bytes()));
        assert!(n().normalize(a.as_bytes()).contains("<LOG HISTORY>\r\n"));
        let c = b.replace("'log all'", "'log on all'");
        assert_ne!(n().normalize(a.as_bytes()), n().normalize(c.as_bytes()));
    }

    #[test]
    fn table_rows_compare_as_sets_but_other_lines_keep_their_order() {
        let a = "ROUTING TABLE\r\nVirtual Address,Common Name,Real Address,Last Ref\r\n\
                 fd00::2,c,x,<DATE>\r\n10.0.0.2,c,x,<DATE>\r\nGLOBAL STATS\r\n\
                 ROUTING_TABLE\tb\r\nROUTING_TABLE\ta\r\nEND\r\n";
        let b = "ROUTING TABLE\r\nVirtual Address,Common Name,Real Address,Last Ref\r\n\
                 10.0.0.2,c,x,<DATE>\r\nfd00::2,c,x,<DATE>\r\nGLOBAL STATS\r\n\
                 ROUTING_TABLE\ta\r\nROUTING_TABLE\tb\r\nEND\r\n";
        assert_eq!(n().normalize(a.as_bytes()), n().normalize(b.as_bytes()));
        let c = b
            .replace("GLOBAL STATS\r\n", "")
            .replace("END\r\n", "GLOBAL STATS\r\nEND\r\n");
        assert_ne!(n().normalize(a.as_bytes()), n().normalize(c.as_bytes()));
    }
}
