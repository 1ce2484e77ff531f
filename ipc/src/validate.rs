//! Value validation shared by every message's [`Message::validate`](crate::Message::validate).
//!
//! API: [`ValidationError`] (the one error type every `validate()` returns) and small checkers
//! ([`check_verb`], [`check_text`], [`check_len`], [`check_absolute_path`],
//! [`check_unprivileged_id`]) that message types compose. A checker never panics and never
//! allocates in proportion to its input.

use std::path::{Component, Path};

/// Highest OpenVPN `verb` level (0..=11).
pub const MAX_VERB: u8 = 11;

/// Longest path accepted in a message (Linux `PATH_MAX` minus the terminating NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// Why a message's values are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A configuration field has an unacceptable value.
    #[error("{field}: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A `verb` level outside `0..=11`.
    #[error("verb level {value} is outside 0..={MAX_VERB}")]
    VerbOutOfRange {
        /// The level received.
        value: u8,
    },
    /// A field is longer than its cap.
    #[error("{field} is {len} bytes long, more than the maximum {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A field is shorter than its minimum.
    #[error("{field} is {len} bytes long, less than the minimum {min}")]
    TooShort {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A field that must not be empty is empty.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A text field holds a NUL or another control character (only TAB is allowed).
    #[error("{field} contains a control character (U+{code:04X}) at byte {offset}")]
    ControlCharacter {
        /// The field.
        field: &'static str,
        /// The code point.
        code: u32,
        /// Its byte offset.
        offset: usize,
    },
    /// A path is not absolute.
    #[error("{field} is not an absolute path")]
    PathNotAbsolute {
        /// The field.
        field: &'static str,
    },
    /// A path contains a `..` component.
    #[error("{field} contains a '..' component")]
    PathParentComponent {
        /// The field.
        field: &'static str,
    },
    /// A uid/gid is 0 (root) or `u32::MAX` (the "no change" value of `setresuid`).
    #[error("{field} {value} is not an unprivileged id")]
    PrivilegedId {
        /// The field (`uid` or `gid`).
        field: &'static str,
        /// The id.
        value: u32,
    },
    /// A list of fd roles has a length outside its bounds.
    #[error("{count} fd roles, expected {min}..={max}")]
    FdRoleCount {
        /// Roles in the message.
        count: usize,
        /// Fewest allowed.
        min: usize,
        /// Most allowed.
        max: usize,
    },
    /// An fd role this message may not carry.
    #[error("fd role {role} is not allowed in {message}")]
    FdRoleNotAllowed {
        /// The role, by name.
        role: &'static str,
        /// The message, by name.
        message: &'static str,
    },
    /// An fd role this message must carry at least once is missing.
    #[error("{message} carries no fd of role {role}")]
    FdRoleMissing {
        /// The role, by name.
        role: &'static str,
        /// The message, by name.
        message: &'static str,
    },
    /// A Hello announced a different IPC protocol version.
    #[error("peer speaks IPC protocol version {found}, this side {expected}")]
    VersionMismatch {
        /// This side's version.
        expected: u16,
        /// The peer's version.
        found: u16,
    },
    /// A process id that cannot be a real process (0 or negative).
    #[error("invalid pid {pid}")]
    InvalidPid {
        /// The pid.
        pid: i32,
    },
    /// A TLS signature scheme the signer does not offer.
    #[error("signature scheme 0x{scheme:04x} is not supported")]
    UnsupportedSignatureScheme {
        /// The scheme's wire value.
        scheme: u16,
    },
    /// Bytes that must be PEM text lack the expected PEM boundary.
    #[error("{field} holds no '{label}' PEM block")]
    MissingPemBlock {
        /// The field.
        field: &'static str,
        /// The expected `-----BEGIN ...-----` line.
        label: &'static str,
    },
    /// Bytes that must be PEM text contain a NUL byte.
    #[error("{field} contains a NUL byte")]
    NulByte {
        /// The field.
        field: &'static str,
    },
}

/// `level` must be an OpenVPN verb level (`0..=11`).
pub fn check_verb(level: u8) -> Result<(), ValidationError> {
    if level > MAX_VERB {
        return Err(ValidationError::VerbOutOfRange { value: level });
    }
    Ok(())
}

/// `len` must be within `min..=max` (a `min` of 1 reports [`ValidationError::Empty`]).
pub fn check_len(
    field: &'static str,
    len: usize,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    if len > max {
        return Err(ValidationError::TooLong { field, len, max });
    }
    if len < min {
        if len == 0 {
            return Err(ValidationError::Empty { field });
        }
        return Err(ValidationError::TooShort { field, len, min });
    }
    Ok(())
}

/// `text` must be at most `max` bytes and hold no control character other than TAB (so it cannot
/// forge a line in a log file or a management-interface notification).
pub fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), ValidationError> {
    check_len(field, text.len(), 0, max)?;
    match text
        .char_indices()
        .find(|(_, c)| c.is_control() && *c != '\t')
    {
        Some((offset, c)) => Err(ValidationError::ControlCharacter {
            field,
            code: u32::from(c),
            offset,
        }),
        None => Ok(()),
    }
}

/// `path` must be absolute, at most [`MAX_PATH_LEN`] bytes, free of NUL/control characters and of
/// `..` components.
pub fn check_absolute_path(field: &'static str, path: &Path) -> Result<(), ValidationError> {
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    check_len(field, bytes.len(), 1, MAX_PATH_LEN)?;
    if let Some(offset) = bytes.iter().position(|b| *b < 0x20 || *b == 0x7f) {
        return Err(ValidationError::ControlCharacter {
            field,
            code: u32::from(bytes[offset]),
            offset,
        });
    }
    if !path.is_absolute() {
        return Err(ValidationError::PathNotAbsolute { field });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(ValidationError::PathParentComponent { field });
    }
    Ok(())
}

/// A uid/gid a sandboxed child may drop to: neither root (0) nor `u32::MAX`.
pub fn check_unprivileged_id(field: &'static str, id: u32) -> Result<(), ValidationError> {
    if id == 0 || id == u32::MAX {
        return Err(ValidationError::PrivilegedId { field, value: id });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verb_bounds() {
        assert!(check_verb(0).is_ok());
        assert!(check_verb(11).is_ok());
        assert_eq!(
            check_verb(12),
            Err(ValidationError::VerbOutOfRange { value: 12 })
        );
    }

    #[test]
    fn text_rules() {
        assert!(check_text("m", "hello\tworld", 20).is_ok());
        assert!(matches!(
            check_text("m", "a\nb", 20),
            Err(ValidationError::ControlCharacter {
                code: 10,
                offset: 1,
                ..
            })
        ));
        assert!(check_text("m", "a\0", 20).is_err());
        assert!(check_text("m", "a\r", 20).is_err());
        assert!(check_text("m", "\u{85}", 20).is_err());
        assert!(matches!(
            check_text("m", "abcdef", 5),
            Err(ValidationError::TooLong { len: 6, max: 5, .. })
        ));
    }

    #[test]
    fn len_rules() {
        assert_eq!(
            check_len("x", 0, 1, 4),
            Err(ValidationError::Empty { field: "x" })
        );
        assert!(check_len("x", 1, 1, 4).is_ok());
        assert!(check_len("x", 5, 1, 4).is_err());
        assert_eq!(
            check_len("x", 2, 3, 4),
            Err(ValidationError::TooShort {
                field: "x",
                len: 2,
                min: 3
            })
        );
    }

    #[test]
    fn path_rules() {
        assert!(check_absolute_path("p", Path::new("/var/empty")).is_ok());
        assert!(check_absolute_path("p", Path::new("var/empty")).is_err());
        assert!(check_absolute_path("p", Path::new("")).is_err());
        assert!(check_absolute_path("p", Path::new("/var/../etc")).is_err());
        assert!(check_absolute_path("p", Path::new("/var/\nx")).is_err());
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(check_absolute_path("p", Path::new(&long)).is_err());
    }

    #[test]
    fn id_rules() {
        assert!(check_unprivileged_id("uid", 65534).is_ok());
        assert!(check_unprivileged_id("uid", 0).is_err());
        assert!(check_unprivileged_id("gid", u32::MAX).is_err());
    }
}
