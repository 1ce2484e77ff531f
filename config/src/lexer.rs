//! The OpenVPN option lexer.
//!
//! Two entry points:
//!
//! * [`split_line`] splits one line into parameters with exactly the rules of OpenVPN 2.6's
//!   `parse_line()` (`options.c`), which is also what the management interface uses for its
//!   command lines. The management broker calls it directly.
//! * [`lex_source`] splits a whole configuration text (a file, or the content of an inline
//!   block) into [`Line`]s: the tokens of every non-empty line, each token carrying its
//!   [`Location`] (file and line), plus the content of an inline `<tag>…</tag>` block when the
//!   line opens one.
//!
//! Rules implemented (and pinned by the tests below):
//!
//! * Whitespace (space, `\t`, `\n`, `\v`, `\f`, `\r`) separates parameters.
//! * `"…"` quotes a parameter; inside, a backslash escapes `\` and `"` (and whitespace).
//! * `'…'` quotes a parameter literally: no escapes at all inside.
//! * Outside single quotes, a backslash may only escape `\`, `"` or whitespace; any other
//!   escaped character is an error ("bad backslash usage"), as in OpenVPN. An escaped quote
//!   outside quotes is a literal quote character; `\'` is an error.
//! * `#` and `;` start a comment only where a parameter could start (`a#b` is one parameter,
//!   `a #b` is `a` followed by a comment). As in OpenVPN this also holds after a backslash:
//!   `\#` at the start of a parameter is still a comment.
//! * A backslash before the end of the text (no newline following) leaves the parser in a
//!   residual state, which is an error ("trailing backslash").
//! * Limits (kept from OpenVPN, each reported as an explicit error): a parameter is at most
//!   [`MAX_PARAM_LEN`] bytes, a line has at most [`MAX_PARAMS`] parameters (OpenVPN silently
//!   drops the rest; we refuse), a configuration-file line is shorter than
//!   [`MAX_LINE_LEN`] bytes including its newline (OpenVPN's `OPTION_LINE_SIZE` check).
//!   Inline block content has no line-length limit (as in OpenVPN).
//! * A NUL byte in a line is an error (OpenVPN would silently truncate the line there).
//! * A UTF-8 byte-order mark at the start of a file is skipped. Parameters must be UTF-8.
//! * In files, a line whose only parameter is `<tag>` opens an inline block that ends at the
//!   first following line which, after leading whitespace, starts with `</tag>`; the content
//!   is the raw text of the lines in between (with their newlines). A block without its end
//!   tag is an error reported at the opening line.
//!
//! Invariant: the lexer never panics, whatever bytes it is given (a proptest checks this).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Maximum number of parameters on one line (OpenVPN `MAX_PARMS`).
pub const MAX_PARAMS: usize = 16;
/// Maximum length of one parameter in bytes (OpenVPN `OPTION_PARM_SIZE`).
pub const MAX_PARAM_LEN: usize = 256;
/// A configuration-file line (including its newline) must be shorter than this many bytes
/// (OpenVPN `OPTION_LINE_SIZE`).
pub const MAX_LINE_LEN: usize = 256;

/// Where a token or directive came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A configuration file (the path as it was opened).
    File(PathBuf),
    /// The command line (`--option args…`).
    CommandLine,
    /// A text that is not a file (a string given to the loader, or a management line).
    Text(String),
}

/// A position: origin plus 1-based line number (for the command line: the 1-based index of
/// the `--option` argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// File, command line, or named text.
    pub origin: Origin,
    /// 1-based line number (0 when the position is the whole file).
    pub line: u32,
}

impl Location {
    /// A line in a file.
    pub fn file(path: impl Into<PathBuf>, line: u32) -> Self {
        Location {
            origin: Origin::File(path.into()),
            line,
        }
    }

    /// The command line; `index` is the 1-based position of the `--option` argument.
    pub fn command_line(index: u32) -> Self {
        Location {
            origin: Origin::CommandLine,
            line: index,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(p) if self.line == 0 => write!(f, "{}", p.display()),
            Origin::File(p) => write!(f, "{}:{}", p.display(), self.line),
            Origin::CommandLine => write!(f, "command line"),
            Origin::Text(name) if self.line == 0 => write!(f, "{name}"),
            Origin::Text(name) => write!(f, "{name}:{}", self.line),
        }
    }
}

/// One parameter with the place it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The parameter after quote and escape processing.
    pub text: String,
    /// File and line of the token.
    pub loc: Location,
}

/// An inline `<tag>…</tag>` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineBlock {
    /// The tag name (`ca`, `tls-crypt`, …).
    pub tag: String,
    /// The raw text between the tags, lines with their newlines.
    pub content: String,
    /// Line number of the closing tag.
    pub end_line: u32,
}

/// One non-empty line of a configuration text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The line's parameters; at least one. For an inline block, the single token is the tag
    /// name without the angle brackets.
    pub tokens: Vec<Token>,
    /// Present when the line opened an inline block.
    pub inline: Option<InlineBlock>,
    /// Where the line starts.
    pub loc: Location,
}

/// Errors of the lexer; each describes what is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// A backslash escaped something other than `\`, `"` or whitespace.
    #[error("bad backslash ('\\') usage: a backslash may only escape '\\', '\"' or whitespace; write a literal backslash as '\\\\'")]
    BadBackslash,
    /// A double-quoted parameter is not closed.
    #[error("no closing quotation (\")")]
    UnclosedDoubleQuote,
    /// A single-quoted parameter is not closed.
    #[error("no closing single quotation (')")]
    UnclosedSingleQuote,
    /// The text ends right after a backslash.
    #[error("trailing backslash at end of line")]
    TrailingBackslash,
    /// A parameter is longer than [`MAX_PARAM_LEN`].
    #[error("parameter is too long ({max} bytes max)")]
    ParamTooLong {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_PARAMS`] parameters.
    #[error("too many parameters ({max} max, counting the option name)")]
    TooManyParams {
        /// The limit.
        max: usize,
    },
    /// A file line is too long.
    #[error("line is too long ({len} bytes; a line including its newline must be shorter than {max} bytes)")]
    LineTooLong {
        /// The line length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A NUL byte inside a line.
    #[error("NUL byte in line")]
    NulByte,
    /// A parameter or block is not valid UTF-8.
    #[error("text is not valid UTF-8")]
    NotUtf8,
    /// An inline block has no end tag.
    #[error("inline block <{tag}> is not terminated by </{tag}>")]
    UnterminatedBlock {
        /// The block's tag.
        tag: String,
    },
}

/// A lexer error with the line it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedLexError {
    /// Where.
    pub loc: Location,
    /// What.
    pub error: LexError,
}

fn is_space(c: u8) -> bool {
    // C isspace() in the "C" locale, plus NUL which OpenVPN treats as a separator (end of string).
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Initial,
    Quoted,
    Unquoted,
    SingleQuoted,
}

/// Splits raw bytes of one line into parameters (OpenVPN `parse_line`). The bytes may include
/// the line's newline. A NUL byte is an error.
pub fn split_bytes(line: &[u8]) -> Result<Vec<String>, LexError> {
    if line.contains(&0) {
        return Err(LexError::NulByte);
    }
    let mut params: Vec<String> = Vec::new();
    let mut parm: Vec<u8> = Vec::new();
    let mut state = State::Initial;
    let mut backslash = false;
    // Iterate over the bytes followed by a terminating NUL, as the C loop does.
    let mut iter = line.iter().copied().chain(std::iter::once(0u8));
    for input in &mut iter {
        let mut out: Option<u8> = None;
        let mut done = false;
        if !backslash && input == b'\\' && state != State::SingleQuoted {
            backslash = true;
        } else {
            match state {
                State::Initial => {
                    if !is_space(input) {
                        if input == b';' || input == b'#' {
                            // Comment: the rest of the line is ignored.
                            state = State::Initial;
                            break;
                        }
                        if !backslash && input == b'"' {
                            state = State::Quoted;
                        } else if !backslash && input == b'\'' {
                            state = State::SingleQuoted;
                        } else {
                            out = Some(input);
                            state = State::Unquoted;
                        }
                    }
                }
                State::Unquoted => {
                    if !backslash && is_space(input) {
                        done = true;
                    } else {
                        out = Some(input);
                    }
                }
                State::Quoted => {
                    if !backslash && input == b'"' {
                        done = true;
                    } else {
                        out = Some(input);
                    }
                }
                State::SingleQuoted => {
                    if input == b'\'' {
                        done = true;
                    } else {
                        out = Some(input);
                    }
                }
            }
            if done {
                if params.len() >= MAX_PARAMS {
                    return Err(LexError::TooManyParams { max: MAX_PARAMS });
                }
                let text =
                    String::from_utf8(std::mem::take(&mut parm)).map_err(|_| LexError::NotUtf8)?;
                params.push(text);
                state = State::Initial;
            }
            // The terminating NUL is never stored (C: `if (out)` is false for 0).
            if let Some(0) = out {
                out = None;
            }
            if backslash {
                if let Some(o) = out {
                    if !(o == b'\\' || o == b'"' || is_space(o)) {
                        return Err(LexError::BadBackslash);
                    }
                }
            }
            backslash = false;
        }
        if let Some(o) = out {
            if parm.len() >= MAX_PARAM_LEN {
                return Err(LexError::ParamTooLong { max: MAX_PARAM_LEN });
            }
            parm.push(o);
        }
    }
    match state {
        State::Initial => Ok(params),
        State::Quoted => Err(LexError::UnclosedDoubleQuote),
        State::SingleQuoted => Err(LexError::UnclosedSingleQuote),
        // Only reachable when the text ends with a backslash: the final NUL was escaped.
        State::Unquoted => Err(LexError::TrailingBackslash),
    }
}

/// Splits one line (a management command line, or one configuration line) into parameters
/// with OpenVPN's quoting, escaping and comment rules. An empty or comment-only line gives an
/// empty vector.
pub fn split_line(line: &str) -> Result<Vec<String>, LexError> {
    split_bytes(line.as_bytes())
}

/// Splits a text into lines the way `fgets` does: every line keeps its `\n` (the last one may
/// have none).
fn raw_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in text.iter().enumerate() {
        if *b == b'\n' {
            lines.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Lexes a whole configuration text. `origin` names the source for every token.
/// `enforce_line_limit` applies the [`MAX_LINE_LEN`] check (files: yes). All errors are
/// collected; lines with errors are left out of the result.
pub fn lex_source(
    text: &[u8],
    origin: &Origin,
    enforce_line_limit: bool,
) -> (Vec<Line>, Vec<LocatedLexError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let lines = raw_lines(text);
    let mut idx = 0usize;
    while idx < lines.len() {
        let line_no = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let loc = Location {
            origin: origin.clone(),
            line: line_no,
        };
        let mut raw = lines[idx];
        idx += 1;
        if line_no == 1 && raw.starts_with(b"\xEF\xBB\xBF") {
            raw = &raw[3..];
        }
        if enforce_line_limit && lines[idx - 1].len() >= MAX_LINE_LEN {
            errors.push(LocatedLexError {
                loc,
                error: LexError::LineTooLong {
                    len: lines[idx - 1].len(),
                    max: MAX_LINE_LEN,
                },
            });
            continue;
        }
        let params = match split_bytes(raw) {
            Ok(p) => p,
            Err(error) => {
                errors.push(LocatedLexError { loc, error });
                continue;
            }
        };
        if params.is_empty() {
            continue;
        }
        let mut params = params;
        // OpenVPN's bypass_doubledash: "--name" in a file is "name".
        if params[0].len() >= 3 && params[0].starts_with("--") {
            params[0] = params[0][2..].to_string();
        }
        let mut inline = None;
        if params.len() == 1 {
            let p = &params[0];
            if p.len() >= 2 && p.starts_with('<') && p.ends_with('>') {
                let tag = p[1..p.len() - 1].to_string();
                let close = format!("</{tag}>");
                let mut content: Vec<u8> = Vec::new();
                let mut found = None;
                while idx < lines.len() {
                    let l = lines[idx];
                    idx += 1;
                    let trimmed_start = l.iter().position(|c| *c == 0 || !is_space(*c));
                    let trimmed = match trimmed_start {
                        Some(s) => &l[s..],
                        None => &l[l.len()..],
                    };
                    if trimmed.starts_with(close.as_bytes()) {
                        found = Some(u32::try_from(idx).unwrap_or(u32::MAX));
                        break;
                    }
                    content.extend_from_slice(l);
                }
                match found {
                    None => {
                        errors.push(LocatedLexError {
                            loc,
                            error: LexError::UnterminatedBlock { tag },
                        });
                        continue;
                    }
                    Some(end_line) => match String::from_utf8(content) {
                        Ok(content) => {
                            params[0] = tag.clone();
                            inline = Some(InlineBlock {
                                tag,
                                content,
                                end_line,
                            });
                        }
                        Err(_) => {
                            errors.push(LocatedLexError {
                                loc,
                                error: LexError::NotUtf8,
                            });
                            continue;
                        }
                    },
                }
            }
        }
        let tokens = params
            .into_iter()
            .map(|text| Token {
                text,
                loc: loc.clone(),
            })
            .collect();
        out.push(Line {
            tokens,
            inline,
            loc,
        });
    }
    (out, errors)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn whitespace_separates() {
        assert_eq!(
            split_line("  port\t1194  \r\n").unwrap(),
            s(&["port", "1194"])
        );
        assert_eq!(split_line("").unwrap(), Vec::<String>::new());
        assert_eq!(split_line("   \t ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn double_quotes_and_escapes() {
        assert_eq!(
            split_line(r#"push "route 10.0.0.0 255.0.0.0""#).unwrap(),
            s(&["push", "route 10.0.0.0 255.0.0.0"])
        );
        assert_eq!(
            split_line(r#"x "a \"b\" c\\d""#).unwrap(),
            s(&["x", r#"a "b" c\d"#])
        );
        // Quotes glue to nothing: a quote ends the parameter.
        assert_eq!(split_line(r#""ab"cd"#).unwrap(), s(&["ab", "cd"]));
        // Quote in the middle of an unquoted parameter is literal.
        assert_eq!(split_line(r#"a"b"#).unwrap(), s(&[r#"a"b"#]));
        assert_eq!(split_line(r#"x """#).unwrap(), s(&["x", ""]));
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(split_line(r"x 'a \ b \n'").unwrap(), s(&["x", r"a \ b \n"]));
        assert_eq!(
            split_line(r#"x 'say "hi"'"#).unwrap(),
            s(&["x", r#"say "hi""#])
        );
    }

    #[test]
    fn backslash_outside_quotes() {
        assert_eq!(split_line(r"a\ b c").unwrap(), s(&["a b", "c"]));
        assert_eq!(split_line(r"c:\\dir").unwrap(), s(&[r"c:\dir"]));
        assert_eq!(split_line(r#"\"q"#).unwrap(), s(&[r#""q"#]));
        assert_eq!(split_line(r"a\n"), Err(LexError::BadBackslash));
        assert_eq!(split_line(r"a\'"), Err(LexError::BadBackslash));
        assert_eq!(split_line(r#"x "a\n""#), Err(LexError::BadBackslash));
        assert_eq!(split_line(r"abc\"), Err(LexError::TrailingBackslash));
        // A backslash before the newline escapes it (as OpenVPN does with fgets lines).
        assert_eq!(split_line("abc\\\n").unwrap(), s(&["abc\n"]));
        // Backslash-space where a parameter starts is dropped, as in OpenVPN.
        assert_eq!(split_line(r"a \ b").unwrap(), s(&["a", "b"]));
    }

    #[test]
    fn comments_only_at_token_start() {
        assert_eq!(split_line("# port 1").unwrap(), Vec::<String>::new());
        assert_eq!(split_line("; port 1").unwrap(), Vec::<String>::new());
        assert_eq!(split_line("port 1 # x").unwrap(), s(&["port", "1"]));
        assert_eq!(split_line("port 1;x").unwrap(), s(&["port", "1;x"]));
        assert_eq!(split_line("a#b").unwrap(), s(&["a#b"]));
        assert_eq!(
            split_line(r##"x "#in quotes""##).unwrap(),
            s(&["x", "#in quotes"])
        );
        // OpenVPN quirk: an escaped '#' at token start still starts a comment.
        assert_eq!(split_line(r"x \#y").unwrap(), s(&["x"]));
    }

    #[test]
    fn unclosed_quotes() {
        assert_eq!(split_line(r#"x "abc"#), Err(LexError::UnclosedDoubleQuote));
        assert_eq!(split_line("x 'abc"), Err(LexError::UnclosedSingleQuote));
    }

    #[test]
    fn limits() {
        let sixteen = (0..16)
            .map(|i| format!("a{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(split_line(&sixteen).unwrap().len(), 16);
        assert_eq!(
            split_line(&format!("{sixteen} extra")),
            Err(LexError::TooManyParams { max: 16 })
        );
        // Extra content that is only a comment is fine.
        assert_eq!(split_line(&format!("{sixteen} # c")).unwrap().len(), 16);
        let p256 = "x".repeat(256);
        assert_eq!(split_line(&p256).unwrap(), vec![p256.clone()]);
        assert_eq!(
            split_line(&"x".repeat(257)),
            Err(LexError::ParamTooLong { max: 256 })
        );
        assert_eq!(split_line("a\0b"), Err(LexError::NulByte));
    }

    fn lex(text: &str) -> (Vec<Line>, Vec<LocatedLexError>) {
        lex_source(text.as_bytes(), &Origin::File("t.conf".into()), true)
    }

    #[test]
    fn lines_carry_locations() {
        let (lines, errs) = lex("# c\n\nport 1194\n--proto udp\n");
        assert!(errs.is_empty());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].tokens[1].text, "1194");
        assert_eq!(lines[0].tokens[1].loc, Location::file("t.conf", 3));
        assert_eq!(lines[1].tokens[0].text, "proto");
        assert_eq!(lines[1].loc.to_string(), "t.conf:4");
    }

    #[test]
    fn bom_and_doubledash() {
        let (lines, _) = lex("\u{feff}port 1\n-- x\n--\n");
        assert_eq!(lines[0].tokens[0].text, "port");
        // "--" alone (length < 3) is not stripped, same as OpenVPN.
        assert_eq!(lines[2].tokens[0].text, "--");
    }

    #[test]
    fn inline_blocks() {
        let text = "ca x\n<ca>\n-----BEGIN X-----\n  abc\n   </ca> trailing\nverb 3\n";
        let (lines, errs) = lex(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(lines.len(), 3);
        let b = lines[1].inline.as_ref().unwrap();
        assert_eq!(lines[1].tokens[0].text, "ca");
        assert_eq!(b.tag, "ca");
        assert_eq!(b.content, "-----BEGIN X-----\n  abc\n");
        assert_eq!(b.end_line, 5);
        assert_eq!(lines[1].loc.line, 2);
        assert_eq!(lines[2].loc.line, 6);
        // A tag line with other parameters is not a block.
        let (lines, _) = lex("<ca> x\n");
        assert!(lines[0].inline.is_none());
        // Long content lines are allowed inside blocks.
        let long = "A".repeat(1000);
        // Leading whitespace (including \v and \r) before the end tag is skipped.
        let (lines, errs) = lex("<ca>\nx\n\x0b\r </ca>\n");
        assert!(errs.is_empty());
        assert_eq!(lines[0].inline.as_ref().unwrap().content, "x\n");
        let (lines, errs) = lex(&format!("<key>\n{long}\n</key>\n"));
        assert!(errs.is_empty());
        assert_eq!(
            lines[0].inline.as_ref().unwrap().content,
            format!("{long}\n")
        );
    }

    #[test]
    fn unterminated_block_reports_opening_line() {
        let (lines, errs) = lex("verb 3\n<tls-crypt>\nabc\n</tls-auth>\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].loc.line, 2);
        assert_eq!(
            errs[0].error,
            LexError::UnterminatedBlock {
                tag: "tls-crypt".into()
            }
        );
    }

    #[test]
    fn errors_collected_per_line() {
        let long = format!("push \"{}\"\n", "r".repeat(260));
        let text = format!("a \"x\nb 'y\n{long}c\\q\nok 1\n");
        let (lines, errs) = lex(&text);
        assert_eq!(lines.len(), 1);
        let got: Vec<(u32, LexError)> = errs.into_iter().map(|e| (e.loc.line, e.error)).collect();
        assert_eq!(got[0], (1, LexError::UnclosedDoubleQuote));
        assert_eq!(got[1], (2, LexError::UnclosedSingleQuote));
        assert!(matches!(got[2], (3, LexError::LineTooLong { .. })));
        assert_eq!(got[3], (4, LexError::BadBackslash));
    }

    #[test]
    fn line_length_limit_boundary() {
        let ok = format!("{}\n", "x".repeat(254));
        let (_, errs) = lex(&ok);
        assert!(errs.is_empty());
        let bad = format!("{}\n", "x".repeat(255));
        let (_, errs) = lex(&bad);
        assert_eq!(errs.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn lexer_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = split_bytes(&bytes);
            let _ = lex_source(&bytes, &Origin::Text("p".into()), true);
            let _ = lex_source(&bytes, &Origin::Text("p".into()), false);
        }

        #[test]
        fn lexer_never_panics_on_config_like_text(s in "[ a-z<>/\"'\\\\#;\n\t-]{0,300}") {
            let _ = split_line(&s);
            let _ = lex_source(s.as_bytes(), &Origin::Text("p".into()), true);
        }
    }
}
