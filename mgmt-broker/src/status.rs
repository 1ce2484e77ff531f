//! Status rendering, byte-compatible with OpenVPN 2.6.14 server status output.
//!
//! API: [`render_lines`] produces the lines of status format 1, 2 or 3 for a
//! [`StatusSnapshot`]; [`render`] joins them with a [`LineEnding`]: [`LineEnding::Lf`] for the
//! `--status` file (OpenVPN writes no CR there) and [`LineEnding::CrLf`] for the management
//! `status N` command. The same lines, one log record each, are what SIGUSR2 dumps.
//!
//! Invariants reproduced from OpenVPN:
//! * v1 is comma separated with title rows (`OpenVPN CLIENT LIST`, `ROUTING TABLE`,
//!   `GLOBAL STATS`); v2 (`,`) and v3 (TAB) are tagged rows (`TITLE`, `TIME`, `HEADER`, ...).
//! * Human time columns are local time `YYYY-MM-DD HH:MM:SS`; `(time_t)` columns are epoch.
//! * Missing CN/username print `UNDEF`; missing virtual addresses print empty.
//! * A line longer than 511 characters stops the output: that line and every following line,
//!   including `END`, are suppressed (OpenVPN's 512-byte line buffer overflow behaviour).

use crate::model::{ClientEntry, RouteEntry, StatusSnapshot};
use thiserror::Error;

/// Errors produced by this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StatusError {
    /// The requested status format version is not 1, 2 or 3.
    #[error("bad status format version number {0}")]
    BadVersion(u32),
}

/// Status output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StatusVersion {
    /// Format 1 (comma, titled sections).
    V1,
    /// Format 2 (tagged rows, comma).
    V2,
    /// Format 3 (tagged rows, TAB).
    V3,
}

impl StatusVersion {
    /// Map a numeric version (1..=3) to the enum.
    pub fn from_number(n: u32) -> Result<Self, StatusError> {
        match n {
            1 => Ok(StatusVersion::V1),
            2 => Ok(StatusVersion::V2),
            3 => Ok(StatusVersion::V3),
            other => Err(StatusError::BadVersion(other)),
        }
    }
}

/// Line terminator of the rendered output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\n` (status file).
    Lf,
    /// `\r\n` (management interface).
    CrLf,
}

/// Maximum printable line length (OpenVPN builds each line in a 512-byte buffer).
pub const MAX_STATUS_LINE: usize = 511;

/// Format a Unix time as local `YYYY-MM-DD HH:MM:SS` given a UTC offset in seconds.
pub fn format_local_time(unix: i64, utc_offset_secs: i32) -> String {
    let t = unix.saturating_add(i64::from(utc_offset_secs));
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        y,
        m,
        d,
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn cn_or_undef(cn: &Option<String>) -> &str {
    cn.as_deref().unwrap_or("UNDEF")
}

/// Accumulates lines, enforcing the 511-character limit.
struct Lines {
    out: Vec<String>,
    overflow: bool,
}

impl Lines {
    fn push(&mut self, line: String) {
        if self.overflow {
            return;
        }
        if line.len() > MAX_STATUS_LINE {
            self.overflow = true;
            return;
        }
        self.out.push(line);
    }
}

/// Render the status lines (without terminators) of the given format.
pub fn render_lines(snap: &StatusSnapshot, version: StatusVersion) -> Vec<String> {
    let mut l = Lines {
        out: Vec::new(),
        overflow: false,
    };
    let tz = snap.utc_offset_secs;
    match version {
        StatusVersion::V1 => {
            l.push("OpenVPN CLIENT LIST".into());
            l.push(format!("Updated,{}", format_local_time(snap.updated, tz)));
            l.push("Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since".into());
            for c in &snap.clients {
                l.push(format!(
                    "{},{},{},{},{}",
                    cn_or_undef(&c.common_name),
                    c.real_address.status_form(),
                    c.bytes_received,
                    c.bytes_sent,
                    format_local_time(c.connected_since, tz)
                ));
            }
            l.push("ROUTING TABLE".into());
            l.push("Virtual Address,Common Name,Real Address,Last Ref".into());
            for r in &snap.routes {
                l.push(format!(
                    "{}{},{},{},{}",
                    r.key,
                    if r.cached { "C" } else { "" },
                    cn_or_undef(&r.common_name),
                    r.real_address.status_form(),
                    format_local_time(r.last_ref, tz)
                ));
            }
            l.push("GLOBAL STATS".into());
            if let Some(q) = snap.global.max_bcast_mcast_queue_len {
                l.push(format!("Max bcast/mcast queue length,{q}"));
            }
            l.push("END".into());
        }
        StatusVersion::V2 | StatusVersion::V3 => {
            let s = if version == StatusVersion::V2 {
                ","
            } else {
                "\t"
            };
            let join = |fields: &[&str]| fields.join(s);
            l.push(join(&["TITLE", &snap.title]));
            l.push(join(&[
                "TIME",
                &format_local_time(snap.updated, tz),
                &snap.updated.to_string(),
            ]));
            l.push(join(&[
                "HEADER",
                "CLIENT_LIST",
                "Common Name",
                "Real Address",
                "Virtual Address",
                "Virtual IPv6 Address",
                "Bytes Received",
                "Bytes Sent",
                "Connected Since",
                "Connected Since (time_t)",
                "Username",
                "Client ID",
                "Peer ID",
                "Data Channel Cipher",
            ]));
            for c in &snap.clients {
                l.push(client_row(c, s, tz));
            }
            l.push(join(&[
                "HEADER",
                "ROUTING_TABLE",
                "Virtual Address",
                "Common Name",
                "Real Address",
                "Last Ref",
                "Last Ref (time_t)",
            ]));
            for r in &snap.routes {
                l.push(route_row(r, s, tz));
            }
            if let Some(q) = snap.global.max_bcast_mcast_queue_len {
                l.push(join(&[
                    "GLOBAL_STATS",
                    "Max bcast/mcast queue length",
                    &q.to_string(),
                ]));
            }
            l.push(join(&[
                "GLOBAL_STATS",
                "dco_enabled",
                if snap.global.dco_enabled { "1" } else { "0" },
            ]));
            l.push("END".into());
        }
    }
    l.out
}

fn client_row(c: &ClientEntry, s: &str, tz: i32) -> String {
    [
        "CLIENT_LIST".to_string(),
        cn_or_undef(&c.common_name).to_string(),
        c.real_address.status_form(),
        c.virtual_v4.map(|a| a.to_string()).unwrap_or_default(),
        c.virtual_v6.map(|a| a.to_string()).unwrap_or_default(),
        c.bytes_received.to_string(),
        c.bytes_sent.to_string(),
        format_local_time(c.connected_since, tz),
        c.connected_since.to_string(),
        c.username.clone().unwrap_or_else(|| "UNDEF".into()),
        c.client_id.to_string(),
        c.peer_id.to_string(),
        c.data_cipher.clone(),
    ]
    .join(s)
}

fn route_row(r: &RouteEntry, s: &str, tz: i32) -> String {
    [
        "ROUTING_TABLE".to_string(),
        format!("{}{}", r.key, if r.cached { "C" } else { "" }),
        cn_or_undef(&r.common_name).to_string(),
        r.real_address.status_form(),
        format_local_time(r.last_ref, tz),
        r.last_ref.to_string(),
    ]
    .join(s)
}

/// Render the full status text with the given line ending.
pub fn render(snap: &StatusSnapshot, version: StatusVersion, ending: LineEnding) -> String {
    let eol = match ending {
        LineEnding::Lf => "\n",
        LineEnding::CrLf => "\r\n",
    };
    let mut out = String::new();
    for line in render_lines(snap, version) {
        out.push_str(&line);
        out.push_str(eol);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_formatting() {
        assert_eq!(format_local_time(1795334294, 0), "2026-11-22 07:58:14");
        assert_eq!(format_local_time(0, 0), "1970-01-01 00:00:00");
        assert_eq!(format_local_time(951782400, 0), "2000-02-29 00:00:00");
        assert_eq!(format_local_time(1795334294, 3600), "2026-11-22 08:58:14");
        assert_eq!(format_local_time(-1, 0), "1969-12-31 23:59:59");
    }

    #[test]
    fn bad_version() {
        assert_eq!(
            StatusVersion::from_number(4),
            Err(StatusError::BadVersion(4))
        );
        assert_eq!(
            StatusVersion::from_number(0),
            Err(StatusError::BadVersion(0))
        );
    }
}
