//! The management audit sink (`management-audit FILE|syslog`), run in the parent.
//!
//! API:
//! * [`AuditSink::from_config`] opens the configured destination once, at start-up (before
//!   privileges are dropped): a file is opened for appending, created with mode 0600
//!   (an existing file keeps its mode and owner), close-on-exec; `syslog` opens an unbound
//!   datagram socket for `/dev/log`; nothing configured = the daemon log.
//! * [`AuditSink::record`] writes one [`AuditRecord`] as one line.
//! * [`format_line`] is the line format (documented in `docs/management.md`):
//!
//!   `<RFC3339 UTC time> peer=<unix uid=U gid=G pid=P | tcp ADDR | unix-unknown>
//!   role=<role> outcome=<ok|error|denied|rejected> command=<JSON string>`
//!
//!   The command is the broker's redacted text (passwords and challenge responses already
//!   replaced by `[redacted]`), JSON-quoted so that no byte of it can forge a second record.
//!
//! Invariant: a failing write is reported once per failure on the daemon log and never stops
//! the daemon; records are never buffered (each line is one `write`, so concurrent rotation by
//! `mv` + SIGHUP does not interleave partial lines).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;

use bulwark_config::{AuditTarget, Config};
use bulwark_ipc::msg::mgmt::{AuditOutcome, AuditRecord, Peer};
use time::OffsetDateTime;

/// Errors of the audit sink.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be opened.
    #[error("cannot open management audit file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The syslog socket could not be created.
    #[error("cannot create syslog socket for management audit: {0}")]
    Syslog(#[source] std::io::Error),
    /// A record could not be written.
    #[error("cannot write management audit record: {0}")]
    Write(#[source] std::io::Error),
}

/// Where audit records go.
#[derive(Debug)]
pub enum AuditSink {
    /// The daemon log at verb 3 (`MANAGEMENT AUDIT: ...`).
    Log,
    /// An append-only file.
    File {
        /// The file (opened with `O_APPEND`).
        file: Mutex<File>,
        /// Its path (for messages).
        path: PathBuf,
    },
    /// Syslog via `/dev/log`, facility authpriv, severity notice (denials: warning).
    Syslog(UnixDatagram),
}

/// The syslog path.
const DEV_LOG: &str = "/dev/log";

impl AuditSink {
    /// The sink configured by `management-audit` (the daemon log when absent).
    pub fn from_config(cfg: &Config) -> Result<Self, AuditError> {
        match &cfg.management_access.audit {
            None => Ok(AuditSink::Log),
            Some(AuditTarget::Syslog) => UnixDatagram::unbound()
                .map(AuditSink::Syslog)
                .map_err(AuditError::Syslog),
            Some(AuditTarget::File(path)) => {
                // INVARIANT: created 0600 so audit lines (peer identities, commands) are
                // readable by the owner only; O_APPEND so every record lands at the end even
                // if the file is shared with another writer.
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|source| AuditError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Ok(AuditSink::File {
                    file: Mutex::new(file),
                    path: path.clone(),
                })
            }
        }
    }

    /// Writes one record; a failure is returned (the caller logs it) and changes nothing else.
    pub fn try_record(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        match self {
            AuditSink::Log => {
                crate::logging::without_management_forwarding(|| {
                    tracing::info!(verb = 3u8, "MANAGEMENT AUDIT: {}", format_fields(rec));
                });
                Ok(())
            }
            AuditSink::File { file, .. } => {
                let mut line = format_line(rec);
                line.push('\n');
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                f.write_all(line.as_bytes()).map_err(AuditError::Write)
            }
            AuditSink::Syslog(sock) => {
                // facility authpriv (10) * 8 + severity notice (5) / warning (4)
                let sev = if matches!(rec.outcome, AuditOutcome::Denied) {
                    4
                } else {
                    5
                };
                let msg = format!(
                    "<{}>bulwark-audit[{}]: {}",
                    80 + sev,
                    std::process::id(),
                    format_fields(rec)
                );
                sock.send_to(msg.as_bytes(), DEV_LOG)
                    .map(|_| ())
                    .map_err(AuditError::Write)
            }
        }
    }

    /// Writes one record; a failure is logged on the daemon log (the record's fields included,
    /// so it is not lost).
    pub fn record(&self, rec: &AuditRecord) {
        if let Err(e) = self.try_record(rec) {
            tracing::warn!("{e}; record was: {}", format_fields(rec));
        }
    }
}

/// The record without the timestamp: `peer=... role=... outcome=... command="..."`.
pub fn format_fields(rec: &AuditRecord) -> String {
    let peer = match &rec.peer {
        Peer::Unix { uid, gid, pid } => format!(
            "unix uid={uid} gid={gid} pid={}",
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        ),
        Peer::Tcp(a) => format!("tcp {a}"),
        Peer::UnixUnknown => "unix-unknown".into(),
    };
    let outcome = match rec.outcome {
        AuditOutcome::Executed { ok: true } => "ok",
        AuditOutcome::Executed { ok: false } => "error",
        AuditOutcome::Denied => "denied",
        AuditOutcome::Rejected => "rejected",
    };
    // JSON string quoting: control characters, quotes and backslashes are escaped.
    let command = serde_json::Value::String(rec.command.clone()).to_string();
    format!(
        "peer=[{peer}] role={} outcome={outcome} command={command}",
        rec.role.name()
    )
}

/// One audit file line (without the newline): the record's time in RFC 3339 UTC, then
/// [`format_fields`].
pub fn format_line(rec: &AuditRecord) -> String {
    let t = OffsetDateTime::from_unix_timestamp(rec.time).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let ts = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    format!("{ts} {}", format_fields(rec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_ipc::msg::mgmt::Role;
    use std::os::unix::fs::PermissionsExt;

    fn rec(command: &str, outcome: AuditOutcome) -> AuditRecord {
        AuditRecord {
            time: 1_700_000_000,
            peer: Peer::Unix {
                uid: 1001,
                gid: 1002,
                pid: Some(42),
            },
            role: Role::Monitor,
            command: command.into(),
            outcome,
        }
    }

    fn cfg(extra: &str) -> Config {
        let text =
            format!("dev tun\nserver 10.8.0.0 255.255.255.0\nca /ca\ncert /c\nkey /k\n{extra}");
        bulwark_config::load_str("t", &text, "/").unwrap().config
    }

    #[test]
    fn line_format() {
        let l = format_line(&rec("signal SIGHUP", AuditOutcome::Denied));
        assert_eq!(
            l,
            "2023-11-14T22:13:20Z peer=[unix uid=1001 gid=1002 pid=42] role=monitor outcome=denied command=\"signal SIGHUP\""
        );
        // A newline in a command cannot forge a second record.
        let l = format_line(&rec("x\nfake", AuditOutcome::Rejected));
        assert!(
            !l.contains('\n') && l.ends_with("command=\"x\\nfake\""),
            "{l}"
        );
        let mut r = rec("status", AuditOutcome::Executed { ok: true });
        r.peer = Peer::Tcp("127.0.0.1:7505".parse().unwrap());
        assert!(format_fields(&r).starts_with("peer=[tcp 127.0.0.1:7505] role=monitor outcome=ok"));
    }

    #[test]
    fn file_sink_appends_0600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let c = cfg(&format!("management-audit {}\n", p.display()));
        let s = AuditSink::from_config(&c).unwrap();
        s.try_record(&rec("status", AuditOutcome::Executed { ok: true }))
            .unwrap();
        s.try_record(&rec("verb 9", AuditOutcome::Denied)).unwrap();
        drop(s);
        // Reopening appends.
        let s = AuditSink::from_config(&c).unwrap();
        s.try_record(&rec("kill x", AuditOutcome::Executed { ok: false }))
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].contains("outcome=denied command=\"verb 9\""));
        assert!(lines[2].contains("outcome=error"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A directory cannot be the audit file: an error, not a panic.
        let c = cfg(&format!("management-audit {}\n", d.path().display()));
        assert!(matches!(
            AuditSink::from_config(&c),
            Err(AuditError::Open { .. })
        ));
    }

    #[test]
    fn default_and_syslog() {
        assert!(matches!(
            AuditSink::from_config(&cfg("")).unwrap(),
            AuditSink::Log
        ));
        let s = AuditSink::from_config(&cfg("management-audit syslog\n")).unwrap();
        assert!(matches!(s, AuditSink::Syslog(_)));
    }
}
