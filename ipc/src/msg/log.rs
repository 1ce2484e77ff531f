//! The log channel: child → parent only (the parent's direction is
//! [`NoMessage`](crate::NoMessage)).
//!
//! Children filter by `verb` before sending; the parent is the single sink (file/syslog/stdout,
//! `mute`, forwarding to the broker for `>LOG:`). The `origin` field is what the child *claims*:
//! the parent must check it against the channel the record arrived on. `seq` increases by one per
//! record per child, so the parent can detect dropped records.
//!
//! Messages are single-line text: `validate()` rejects every control character except TAB, so a
//! record cannot forge a log line or a management notification. Use [`LogRecord::new`] to build
//! a record from arbitrary text (it replaces control characters and truncates to the cap).

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::validate::{check_text, check_verb, ValidationError};

/// Longest log message, in bytes.
pub const MAX_LOG_MESSAGE_LEN: usize = 8192;

/// `LogRecord`.
pub const KIND_LOG_RECORD: u16 = 0x0301;

/// Which child produced a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogOrigin {
    /// The worker.
    Worker,
    /// The management broker.
    Broker,
}

/// Severity of a record: OpenVPN's message class, which also maps onto a `tracing` level and
/// onto the flag letter of a management `>LOG:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// A fatal error (`M_FATAL`): the child exits after sending it.
    Fatal,
    /// A non-fatal error (`M_NONFATAL`).
    Error,
    /// A warning (`M_WARN`).
    Warning,
    /// Informational (`M_INFO`).
    Info,
    /// Debug output (`D_*` classes above the default verbosity).
    Debug,
    /// OpenVPN's packet characters at exactly `verb 5` (`R`/`W`: link read/write, `r`/`w`: TUN
    /// read/write), written as they are: no time, no newline, not on the management stream.
    PacketTrace,
}

impl Severity {
    /// The flag letter OpenVPN uses in management `>LOG:` lines.
    pub fn management_flag(self) -> char {
        match self {
            Severity::Fatal => 'F',
            Severity::Error => 'N',
            Severity::Warning => 'W',
            Severity::Info => 'I',
            Severity::Debug | Severity::PacketTrace => 'D',
        }
    }

    /// The matching `tracing` level.
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            Severity::Fatal | Severity::Error => tracing::Level::ERROR,
            Severity::Warning => tracing::Level::WARN,
            Severity::Info => tracing::Level::INFO,
            Severity::Debug | Severity::PacketTrace => tracing::Level::DEBUG,
        }
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The child that claims to have produced it.
    pub origin: LogOrigin,
    /// Per-child sequence number, starting at 0.
    pub seq: u64,
    /// The OpenVPN verb level the message belongs to (0..=11): shown at `verb >= this`.
    pub verb: u8,
    /// Its severity.
    pub severity: Severity,
    /// The text: one line, at most [`MAX_LOG_MESSAGE_LEN`] bytes, no control characters but TAB.
    pub message: String,
}

impl LogRecord {
    /// Build a record from arbitrary text: control characters (other than TAB) become `?`, and
    /// the text is cut at a character boundary to [`MAX_LOG_MESSAGE_LEN`] bytes. `verb` is
    /// clamped to 11.
    pub fn new(origin: LogOrigin, seq: u64, verb: u8, severity: Severity, text: &str) -> Self {
        let mut message = String::with_capacity(text.len().min(MAX_LOG_MESSAGE_LEN));
        for c in text.chars() {
            let c = if c.is_control() && c != '\t' { '?' } else { c };
            if message.len() + c.len_utf8() > MAX_LOG_MESSAGE_LEN {
                break;
            }
            message.push(c);
        }
        LogRecord {
            origin,
            seq,
            verb: verb.min(crate::validate::MAX_VERB),
            severity,
            message,
        }
    }
}

impl Message for LogRecord {
    fn kind(&self) -> u16 {
        KIND_LOG_RECORD
    }

    fn name(&self) -> &'static str {
        "LogRecord"
    }

    fn fd_count(&self) -> usize {
        0
    }

    fn validate(&self) -> Result<(), ValidationError> {
        check_verb(self.verb)?;
        check_text("message", &self.message, MAX_LOG_MESSAGE_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn new_sanitizes_and_caps() {
        let r = LogRecord::new(
            LogOrigin::Worker,
            1,
            99,
            Severity::Info,
            "a\r\n>STATE:x\0\tz",
        );
        assert_eq!(r.message, "a??>STATE:x?\tz");
        assert_eq!(r.verb, 11);
        assert!(r.validate().is_ok());
        let long = "é".repeat(MAX_LOG_MESSAGE_LEN);
        let r = LogRecord::new(LogOrigin::Broker, 2, 3, Severity::Debug, &long);
        assert!(r.message.len() <= MAX_LOG_MESSAGE_LEN);
        assert_eq!(r.message.len(), MAX_LOG_MESSAGE_LEN);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn validate_rejects_raw_controls_and_bad_verb() {
        let mut r = LogRecord::new(LogOrigin::Worker, 0, 3, Severity::Warning, "ok");
        r.message = "line\nforged".into();
        assert!(r.validate().is_err());
        r.message = "x".repeat(MAX_LOG_MESSAGE_LEN + 1);
        assert!(r.validate().is_err());
        r.message = "fine".into();
        r.verb = 12;
        assert!(r.validate().is_err());
    }

    #[test]
    fn severity_mappings() {
        assert_eq!(Severity::Error.management_flag(), 'N');
        assert_eq!(Severity::Fatal.tracing_level(), tracing::Level::ERROR);
        assert_eq!(Severity::Debug.tracing_level(), tracing::Level::DEBUG);
    }
}
