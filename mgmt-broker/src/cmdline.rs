//! Management input framing and command-line tokenising.
//!
//! * [`LineFramer`] turns raw socket bytes into command lines exactly like OpenVPN's 1024-byte
//!   command buffer: control bytes (0x00–0x1F, 0x7F) other than LF are dropped (so CR and TAB
//!   vanish), LF ends a line, and a line that would exceed 1023 bytes silently restarts the
//!   buffer. Bulwark addition: a line that contained a NUL byte, or is not valid UTF-8, is
//!   flagged ([`FramedLine::binary`]) so the session can reject it instead of executing it.
//! * [`tokenize`] splits a line with OpenVPN's `parse_line` rules as used by the management
//!   interface (file name `TCP`, line 0) and returns OpenVPN's exact error texts (without the
//!   `ERROR: ` prefix).
//!
//! Note: the config crate's `bulwark_config::lexer::split_line` was not available when this was
//! written; this module carries the management-specific rules (16-token cap, 256-char tokens,
//! the `TCP:0` error texts) and is the single place to switch over.

use thiserror::Error;

/// Size of OpenVPN's management command buffer.
pub const COMMAND_BUFFER: usize = 1024;
/// Maximum number of tokens kept (further tokens are dropped).
pub const MAX_PARMS: usize = 16;
/// Maximum token length; a longer token is an error quoting its first 256 characters
/// (as the 2.6.14 capture shows).
pub const PARM_SIZE: usize = 256;

/// Lexer errors, displayed exactly as OpenVPN prints them after `ERROR: `.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LexError {
    /// A token reached the 256-byte token buffer.
    #[error("Options error: Parameter at TCP:0 is too long (256 chars max): {0}")]
    TooLong(String),
    /// Unterminated double quote.
    #[error("Options error: No closing quotation (\") in TCP:0")]
    NoClosingQuote,
    /// Unterminated single quote.
    #[error("Options error: No closing single quotation (') in TCP:0")]
    NoClosingSingleQuote,
    /// The line ended inside a token (trailing backslash); OpenVPN's state number.
    #[error("Options error: Residual parse state ({0}) in TCP:0")]
    ResidualState(u8),
    /// Backslash before something other than `\`, `"` or whitespace.
    #[error("Options warning: Bad backslash ('\\') usage in TCP:0: remember that backslashes are treated as shell-escapes and if you need to pass backslash characters as part of a Windows filename, you should use double backslashes such as \"c:\\\\openvpn\\\\static.key\"")]
    BadBackslash,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum St {
    Initial,
    Unquoted,
    Quoted,
    SQuoted,
}

fn is_space(c: char) -> bool {
    c == '\0' || c.is_ascii_whitespace() || c == '\x0b'
}

/// Split a management command line into at most [`MAX_PARMS`] tokens.
pub fn tokenize(line: &str) -> Result<Vec<String>, LexError> {
    let mut out: Vec<String> = Vec::new();
    let mut parm = String::new();
    let mut state = St::Initial;
    let mut backslash = false;
    // The terminating NUL is processed too (it ends an unquoted token).
    for c in line.chars().chain(std::iter::once('\0')) {
        if out.len() >= MAX_PARMS {
            break;
        }
        let mut emit: Option<char> = None;
        if !backslash && c == '\\' && state != St::SQuoted {
            backslash = true;
            continue;
        }
        match state {
            St::Initial => {
                if !is_space(c) {
                    if c == ';' || c == '#' {
                        break;
                    }
                    if !backslash && c == '"' {
                        state = St::Quoted;
                    } else if !backslash && c == '\'' {
                        state = St::SQuoted;
                    } else {
                        emit = Some(c);
                        state = St::Unquoted;
                    }
                }
            }
            St::Unquoted => {
                if !backslash && is_space(c) {
                    out.push(std::mem::take(&mut parm));
                    state = St::Initial;
                } else {
                    emit = Some(c);
                }
            }
            St::Quoted => {
                if !backslash && c == '"' {
                    out.push(std::mem::take(&mut parm));
                    state = St::Initial;
                } else {
                    emit = Some(c);
                }
            }
            St::SQuoted => {
                if c == '\'' {
                    out.push(std::mem::take(&mut parm));
                    state = St::Initial;
                } else {
                    emit = Some(c);
                }
            }
        }
        if backslash {
            if let Some(e) = emit {
                if !(e == '\\' || e == '"' || is_space(e)) {
                    return Err(LexError::BadBackslash);
                }
            }
        }
        backslash = false;
        if let Some(e) = emit {
            if e == '\0' {
                // NUL inside quotes: end of input reached.
                continue;
            }
            if parm.len() >= PARM_SIZE {
                return Err(LexError::TooLong(parm));
            }
            parm.push(e);
        }
    }
    match state {
        St::Quoted => Err(LexError::NoClosingQuote),
        St::SQuoted => Err(LexError::NoClosingSingleQuote),
        // Only reachable when the line ends in a backslash inside an unquoted token.
        St::Unquoted => Err(LexError::ResidualState(2)),
        St::Initial => Ok(out),
    }
}

/// One framed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramedLine {
    /// The line text (control bytes removed; lossy if not UTF-8).
    pub text: String,
    /// The line contained a NUL byte or invalid UTF-8 (Bulwark rejects it).
    pub binary: bool,
}

/// Byte-to-line framer with OpenVPN's command buffer semantics.
#[derive(Debug, Default)]
pub struct LineFramer {
    buf: Vec<u8>,
    saw_nul: bool,
    /// Number of times the buffer overflowed and was cleared.
    pub overflows: u64,
}

impl LineFramer {
    /// New empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; complete lines are appended to `lines`.
    pub fn feed(&mut self, bytes: &[u8], lines: &mut Vec<FramedLine>) {
        for &b in bytes {
            if b == b'\n' {
                let raw = std::mem::take(&mut self.buf);
                let (text, bad_utf8) = match String::from_utf8(raw) {
                    Ok(s) => (s, false),
                    Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
                };
                lines.push(FramedLine {
                    text,
                    binary: self.saw_nul || bad_utf8,
                });
                self.saw_nul = false;
            } else if b < 0x20 || b == 0x7f {
                if b == 0 {
                    self.saw_nul = true;
                }
            } else {
                if self.buf.len() >= COMMAND_BUFFER - 1 {
                    self.buf.clear();
                    self.overflows += 1;
                }
                self.buf.push(b);
            }
        }
    }

    /// Bytes currently buffered (bounded by [`COMMAND_BUFFER`]).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<String> {
        tokenize(s).unwrap()
    }

    #[test]
    fn lexer_rules() {
        assert_eq!(t("kill client1"), vec!["kill", "client1"]);
        assert_eq!(t("  pid  "), vec!["pid"]);
        assert_eq!(t(""), Vec::<String>::new());
        assert_eq!(
            t(r#"client-deny 1 1 "bad pin" "PIN wrong""#),
            vec!["client-deny", "1", "1", "bad pin", "PIN wrong"]
        );
        assert_eq!(
            t(r#"password "Auth" "foo\"bar""#),
            vec!["password", "Auth", "foo\"bar"]
        );
        assert_eq!(t(r"echo a\ b"), vec!["echo", "a b"]);
        assert_eq!(t(r"echo a\\b"), vec!["echo", r"a\b"]);
        assert_eq!(t(r"echo 'a\b c'"), vec!["echo", r"a\b c"]);
        assert_eq!(t("echo x # comment"), vec!["echo", "x"]);
        assert_eq!(t("; all comment"), Vec::<String>::new());
        assert_eq!(t("echo a#b"), vec!["echo", "a#b"]);
        let many = (0..30).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        assert_eq!(t(&many).len(), MAX_PARMS);
    }

    #[test]
    fn lexer_errors() {
        assert_eq!(
            tokenize("state \"unterminated"),
            Err(LexError::NoClosingQuote)
        );
        assert_eq!(tokenize("state 'x"), Err(LexError::NoClosingSingleQuote));
        assert_eq!(tokenize(r"echo a\qb"), Err(LexError::BadBackslash));
        let long = "x".repeat(300);
        match tokenize(&format!("echo {long}")) {
            Err(LexError::TooLong(p)) => assert_eq!(p.len(), 256),
            other => panic!("{other:?}"),
        }
        assert!(tokenize(&"x".repeat(256)).is_ok());
        assert!(tokenize(&"x".repeat(257)).is_err());
        assert_eq!(tokenize(r"echo a\"), Err(LexError::ResidualState(2)));
        assert_eq!(t(r"echo \"), vec!["echo"]);
        assert_eq!(
            LexError::NoClosingQuote.to_string(),
            "Options error: No closing quotation (\") in TCP:0"
        );
    }

    #[test]
    fn framing() {
        let mut f = LineFramer::new();
        let mut v = Vec::new();
        f.feed(b"\tpid\r\nsta", &mut v);
        f.feed(b"te\n\x00x\n\xff\n", &mut v);
        assert_eq!(
            v[0],
            FramedLine {
                text: "pid".into(),
                binary: false
            }
        );
        assert_eq!(
            v[1],
            FramedLine {
                text: "state".into(),
                binary: false
            }
        );
        assert_eq!(
            v[2],
            FramedLine {
                text: "x".into(),
                binary: true
            }
        );
        assert!(v[3].binary);
        // 1100-byte line: buffer restarts, the tail remains.
        let mut v = Vec::new();
        let mut line = vec![b'a'; 1100];
        line.push(b'\n');
        f.feed(&line, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].text.len(), 1100 - (COMMAND_BUFFER - 1));
        // A 1023-byte line survives intact.
        let mut v = Vec::new();
        let mut line = vec![b'b'; 1023];
        line.push(b'\n');
        f.feed(&line, &mut v);
        assert_eq!(v[0].text.len(), 1023);
        // 1 MiB without newline stays bounded.
        f.feed(&vec![b'c'; 1 << 20], &mut v);
        assert!(f.pending() < COMMAND_BUFFER);
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Framing and tokenising never panic and stay bounded on arbitrary bytes.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut f = LineFramer::new();
            let mut lines = Vec::new();
            f.feed(&bytes, &mut lines);
            prop_assert!(f.pending() < COMMAND_BUFFER);
            for l in lines {
                prop_assert!(l.text.len() < 4 * COMMAND_BUFFER);
                if let Ok(t) = tokenize(&l.text) {
                    prop_assert!(t.len() <= MAX_PARMS);
                }
            }
        }

        /// Where the config crate's lexer (same OpenVPN `parse_line` rules, stricter limits)
        /// accepts a line, the management tokenizer yields the same tokens.
        #[test]
        fn agrees_with_config_lexer(line in "[ a-z0-9\"'\\\\#;]{0,80}") {
            if let Ok(cfg) = bulwark_config::lexer::split_line(&line) {
                prop_assert_eq!(tokenize(&line), Ok(cfg));
            }
        }
    }
}
