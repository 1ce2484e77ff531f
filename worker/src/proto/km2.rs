//! Key-method-2 messages, peer-info and the OCC options string.
//!
//! Digest §5 and OpenVPN `ssl.c` (`key_method_2_read` / `key_method_2_write`, `read_string`,
//! `write_string`), `misc.c:validate_peer_info_line`, `options.c:options_string`.
//!
//! # API
//!
//! ```text
//! ClientKeyMessage::parse(&plaintext, &Km2Limits::default())? -> ClientKeyMessage
//!     .pre_master / .random1 / .random2 / .options / .credentials / .peer_info_raw / .peer_info
//! build_server_message(&random1, &random2, &options_string, &mut out)?     // appends to `out`
//! build_client_message(&pre_master, &r1, &r2, &options, creds, &peer_info, &mut out)?  // client side
//! ServerKeyMessage::parse(&plaintext)? -> (ServerKeyMessage, bytes used)  // client side
//! PeerInfo::parse(raw) -> PeerInfo   .proto() -> IvProto   .ciphers() .ncp() .mtu() .get("IV_X")
//! OccSettings { .. }.options_string(remote: bool) -> String                // the server's OCC string
//! occ_compat_lzo(&s) -> String      occ_extract(&s, "cipher") -> Option<&str>   occ_uses_compression(&s)
//! ```
//!
//! # Parsing rules (client → server message)
//!
//! `u32 (ignored) | key-method byte (low nibble must be 2) | pre_master 48 | random1 32 | random2 32 |
//! options | username | password | peer-info`, each string `u16 BE length (incl. NUL) | bytes`, an
//! empty string is `00 00`. The whole message is at most 2048 bytes (OpenVPN reads it with one
//! 2048-byte read). Trailing string fields that are absent because the message ends are treated as
//! empty, like OpenVPN. A declared length that runs past the end of the message is an error. An options
//! string over 512 bytes (incl. NUL) is an error. Username/password longer than `Km2Limits::user_pass_max`
//! are not an error: they yield [`Credentials::TooLong`] so the caller can answer with AUTH_FAILED and
//! the reason OpenVPN uses ([`USER_PASS_TOO_LONG_REASON`]). String contents end at the first NUL, as C
//! strings do. Bytes after the peer-info are ignored.
//!
//! Invariants: every length is checked before it is used; no input panics; credentials are zeroed on
//! drop.

use std::fmt::Write as _;

use thiserror::Error;

use super::data::{Cipher, Digest};
use super::keys::{PRE_MASTER_LEN, RANDOM_LEN};

/// Key method 2.
pub const KEY_METHOD_2: u8 = 2;
/// Mask of the key-method byte that holds the method.
pub const KEY_METHOD_MASK: u8 = 0x0F;
/// Maximum OCC options string length including the NUL (`TLS_OPTIONS_LEN`).
pub const OPTIONS_MAX_LEN: usize = 512;
/// `USER_PASS_LEN` of OpenVPN builds with PKCS#11 (Debian's 2.6.14): 4096 including the NUL.
pub const USER_PASS_LEN_PKCS11: usize = 4096;
/// `USER_PASS_LEN` of OpenVPN builds without PKCS#11: 128 including the NUL.
pub const USER_PASS_LEN_SMALL: usize = 128;
/// Largest key-method-2 message OpenVPN reads (`TLS_CHANNEL_BUF_SIZE`).
pub const MAX_MESSAGE_LEN: usize = 2048;
/// Longest peer-info line OpenVPN exports (its line buffer is 256 bytes incl. NUL).
pub const PEER_INFO_LINE_MAX: usize = 255;
/// Reason OpenVPN sends with AUTH_FAILED for overlong credentials.
pub const USER_PASS_TOO_LONG_REASON: &str =
    "Username or password is too long. Maximum length is 128 bytes";

/// Errors of key-method-2 parsing and building.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Km2Error {
    /// Message longer than [`MAX_MESSAGE_LEN`].
    #[error("key-method-2 message is {0} bytes, more than {MAX_MESSAGE_LEN}")]
    MessageTooLong(usize),
    /// A fixed-size field or a declared string runs past the end of the message.
    #[error("key-method-2 message truncated in {field}: need {need} bytes, have {have}")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// Key method other than 2.
    #[error("unknown key method/flags byte {0:#04x}")]
    BadKeyMethod(u8),
    /// Options string longer than [`OPTIONS_MAX_LEN`].
    #[error("options string length {0} exceeds {OPTIONS_MAX_LEN}")]
    OptionsTooLong(usize),
    /// A string to be written contains a NUL byte.
    #[error("{0} contains a NUL byte")]
    EmbeddedNul(&'static str),
}

/// Parser limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Km2Limits {
    /// Maximum username/password length including the NUL (`USER_PASS_LEN`).
    pub user_pass_max: usize,
}

impl Default for Km2Limits {
    /// Matches Debian's OpenVPN 2.6.14 (built with PKCS#11): 4096.
    fn default() -> Self {
        Self {
            user_pass_max: USER_PASS_LEN_PKCS11,
        }
    }
}

/// Bytes that are zeroed when dropped (passwords).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as UTF-8, if they are.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}

/// Username/password field state of a client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Both strings empty or absent.
    None,
    /// At least one string present (either may still be empty; OpenVPN requires both non-empty
    /// unless `auth-user-pass-optional`).
    Provided {
        /// Username bytes (up to the first NUL).
        username: Vec<u8>,
        /// Password bytes (up to the first NUL); may be an auth-token or `SCRV1:`/`CRV1:` response.
        password: SecretBytes,
    },
    /// Username or password longer than the limit: answer AUTH_FAILED ([`USER_PASS_TOO_LONG_REASON`]).
    TooLong {
        /// Declared username length (incl. NUL).
        username_len: usize,
        /// Declared password length (incl. NUL).
        password_len: usize,
    },
}

/// A parsed client key-method-2 message.
#[derive(Clone)]
pub struct ClientKeyMessage {
    /// The key-method byte (low nibble is 2; high bits are flags, none defined).
    pub key_method_flags: u8,
    /// Pre-master secret (legacy PRF only).
    pub pre_master: [u8; PRE_MASTER_LEN],
    /// random1 (legacy PRF only).
    pub random1: [u8; RANDOM_LEN],
    /// random2 (legacy PRF only).
    pub random2: [u8; RANDOM_LEN],
    /// OCC options string (lossy UTF-8; empty if absent).
    pub options: String,
    /// Username/password.
    pub credentials: Credentials,
    /// Raw peer-info string (lossy UTF-8), `None` if absent/empty.
    pub peer_info_raw: Option<String>,
    /// Parsed and validated peer-info.
    pub peer_info: PeerInfo,
}

impl std::fmt::Debug for ClientKeyMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeyMessage")
            .field("key_method_flags", &self.key_method_flags)
            .field("options", &self.options)
            .field("credentials", &self.credentials)
            .field("peer_info", &self.peer_info)
            .finish_non_exhaustive()
    }
}

impl Drop for ClientKeyMessage {
    fn drop(&mut self) {
        self.pre_master.fill(0);
        std::hint::black_box(&mut self.pre_master);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Outcome of reading one u16-prefixed string.
enum Str<'a> {
    /// Message ended before the length field.
    Absent,
    /// Declared length and the bytes (the declared length includes the NUL).
    Present(usize, &'a [u8]),
    /// Declared length exceeds the limit; the string was skipped.
    Oversized(usize),
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Km2Error> {
        if self.remaining() < n {
            return Err(Km2Error::Truncated {
                field,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Km2Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// The leading zero u32 and the key-method byte, which must say key method 2; returns that byte
    /// (its flag bits included).
    fn key_method_2_header(&mut self) -> Result<u8, Km2Error> {
        self.take(4, "leading u32")?;
        let km = self.take(1, "key method")?[0];
        if km & KEY_METHOD_MASK != KEY_METHOD_2 {
            return Err(Km2Error::BadKeyMethod(km));
        }
        Ok(km)
    }

    /// The OCC options string (empty if absent; lossy UTF-8 up to its NUL).
    fn options(&mut self) -> Result<String, Km2Error> {
        match self.string("options", OPTIONS_MAX_LEN)? {
            Str::Absent => Ok(String::new()),
            Str::Present(_, b) => Ok(String::from_utf8_lossy(c_str(b)).into_owned()),
            Str::Oversized(len) => Err(Km2Error::OptionsTooLong(len)),
        }
    }

    fn string(&mut self, field: &'static str, max: usize) -> Result<Str<'a>, Km2Error> {
        if self.remaining() == 0 {
            return Ok(Str::Absent);
        }
        let lb = self.take(2, field)?;
        let len = usize::from(u16::from_be_bytes([lb[0], lb[1]]));
        let bytes = self.take(len, field)?;
        if len > max {
            return Ok(Str::Oversized(len));
        }
        Ok(Str::Present(len, bytes))
    }
}

/// C-string view of a length-prefixed field: drop the last byte (OpenVPN forces it to NUL) and stop at
/// the first NUL.
fn c_str(bytes: &[u8]) -> &[u8] {
    let body = &bytes[..bytes.len().saturating_sub(1)];
    match body.iter().position(|&b| b == 0) {
        Some(p) => &body[..p],
        None => body,
    }
}

impl ClientKeyMessage {
    /// Parses the client's key-method-2 plaintext (see the module docs for the rules).
    pub fn parse(msg: &[u8], limits: &Km2Limits) -> Result<ClientKeyMessage, Km2Error> {
        if msg.len() > MAX_MESSAGE_LEN {
            return Err(Km2Error::MessageTooLong(msg.len()));
        }
        let mut r = Reader { buf: msg, pos: 0 };
        let km = r.key_method_2_header()?;
        let pre_master = r.fixed::<PRE_MASTER_LEN>("pre_master")?;
        let random1 = r.fixed::<RANDOM_LEN>("random1")?;
        let random2 = r.fixed::<RANDOM_LEN>("random2")?;
        let options = r.options()?;
        let user = r.string("username", limits.user_pass_max)?;
        let pass = r.string("password", limits.user_pass_max)?;
        let credentials = match (user, pass) {
            (Str::Oversized(u), p) => Credentials::TooLong {
                username_len: u,
                password_len: str_len(&p),
            },
            (u, Str::Oversized(p)) => Credentials::TooLong {
                username_len: str_len(&u),
                password_len: p,
            },
            (u, p) => {
                let ub = str_bytes(&u);
                let pb = str_bytes(&p);
                if ub.is_empty() && pb.is_empty() {
                    Credentials::None
                } else {
                    Credentials::Provided {
                        username: ub.to_vec(),
                        password: SecretBytes::new(pb.to_vec()),
                    }
                }
            }
        };
        let peer_info_raw = match r.string("peer-info", usize::from(u16::MAX))? {
            Str::Present(_, b) => {
                let s = c_str(b);
                if s.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(s).into_owned())
                }
            }
            Str::Absent | Str::Oversized(_) => None,
        };
        let peer_info = peer_info_raw
            .as_deref()
            .map(PeerInfo::parse)
            .unwrap_or_default();
        Ok(ClientKeyMessage {
            key_method_flags: km,
            pre_master,
            random1,
            random2,
            options,
            credentials,
            peer_info_raw,
            peer_info,
        })
    }

    /// The `cipher` item of the client's OCC string, if any (for [`super::data::negotiate`]).
    pub fn occ_cipher(&self) -> Option<&str> {
        occ_extract(&self.options, "cipher")
    }

    /// True if the client's OCC string shows compression/stub framing (`,comp-lzo,`).
    pub fn uses_compression(&self) -> bool {
        occ_uses_compression(&self.options)
    }
}

fn str_len(s: &Str<'_>) -> usize {
    match s {
        Str::Absent => 0,
        Str::Present(len, _) | Str::Oversized(len) => *len,
    }
}

fn str_bytes<'a>(s: &Str<'a>) -> &'a [u8] {
    match s {
        Str::Present(_, b) => c_str(b),
        Str::Absent | Str::Oversized(_) => &[],
    }
}

fn write_string(
    out: &mut Vec<u8>,
    s: &str,
    max: usize,
    what: &'static str,
) -> Result<(), Km2Error> {
    if s.as_bytes().contains(&0) {
        return Err(Km2Error::EmbeddedNul(what));
    }
    let len = s.len() + 1;
    if len > max || len > usize::from(u16::MAX) {
        return Err(Km2Error::OptionsTooLong(len));
    }
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

/// Appends the server's key-method-2 message to `out`: `u32 0 | 02 | random1 | random2 | options |
/// 00 00 | 00 00 | 00 00` (no pre-master, empty username/password, no peer-info — what a P2MP OpenVPN
/// server sends). The caller must send it alone in its TLS record.
pub fn build_server_message(
    random1: &[u8; RANDOM_LEN],
    random2: &[u8; RANDOM_LEN],
    options: &str,
    out: &mut Vec<u8>,
) -> Result<(), Km2Error> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, KEY_METHOD_2]);
    out.extend_from_slice(random1);
    out.extend_from_slice(random2);
    if let Err(e) = write_string(out, options, OPTIONS_MAX_LEN, "options string") {
        out.truncate(start);
        return Err(e);
    }
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Ok(())
}

/// Appends a client's key-method-2 message to `out` (digest §5.2, `ssl.c:key_method_2_write` in client
/// mode): `u32 0 | 02 | pre_master | random1 | random2 | options | username | password | peer-info`, an
/// absent username/password/peer-info written as the empty string `00 00`. Bulwark's server never
/// sends this; it is the client half of the codec, for clients built on this engine (the handshake load
/// generator `bench/hsload`). Fails, leaving `out` unchanged, if a string contains a NUL, the options
/// string is longer than [`OPTIONS_MAX_LEN`], a credential longer than [`USER_PASS_LEN_PKCS11`] or the
/// whole message longer than [`MAX_MESSAGE_LEN`] (what [`ClientKeyMessage::parse`] accepts). Like the
/// server's message it must be alone in its TLS record.
pub fn build_client_message(
    pre_master: &[u8; PRE_MASTER_LEN],
    random1: &[u8; RANDOM_LEN],
    random2: &[u8; RANDOM_LEN],
    options: &str,
    credentials: Option<(&str, &str)>,
    peer_info: &str,
    out: &mut Vec<u8>,
) -> Result<(), Km2Error> {
    let start = out.len();
    let r = write_client_message(
        pre_master,
        random1,
        random2,
        options,
        credentials,
        peer_info,
        out,
    )
    .and_then(|()| match out.len() - start {
        len if len > MAX_MESSAGE_LEN => Err(Km2Error::MessageTooLong(len)),
        _ => Ok(()),
    });
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn write_client_message(
    pre_master: &[u8; PRE_MASTER_LEN],
    random1: &[u8; RANDOM_LEN],
    random2: &[u8; RANDOM_LEN],
    options: &str,
    credentials: Option<(&str, &str)>,
    peer_info: &str,
    out: &mut Vec<u8>,
) -> Result<(), Km2Error> {
    out.extend_from_slice(&[0, 0, 0, 0, KEY_METHOD_2]);
    out.extend_from_slice(pre_master);
    out.extend_from_slice(random1);
    out.extend_from_slice(random2);
    write_string(out, options, OPTIONS_MAX_LEN, "options string")?;
    match credentials {
        Some((user, pass)) => {
            write_string(out, user, USER_PASS_LEN_PKCS11, "username")?;
            write_string(out, pass, USER_PASS_LEN_PKCS11, "password")?;
        }
        None => out.extend_from_slice(&[0, 0, 0, 0]),
    }
    if peer_info.is_empty() {
        out.extend_from_slice(&[0, 0]);
        Ok(())
    } else {
        write_string(out, peer_info, MAX_MESSAGE_LEN, "peer-info")
    }
}

/// A parsed server key-method-2 message (what a client reads, `ssl.c:key_method_2_read` in client
/// mode). The username, password and peer-info a P2MP server sends are empty; they are skipped.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKeyMessage {
    /// The key-method byte (low nibble is 2).
    pub key_method_flags: u8,
    /// random1 (legacy PRF only).
    pub random1: [u8; RANDOM_LEN],
    /// random2 (legacy PRF only).
    pub random2: [u8; RANDOM_LEN],
    /// OCC options string (lossy UTF-8; empty if absent).
    pub options: String,
}

impl std::fmt::Debug for ServerKeyMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeyMessage")
            .field("key_method_flags", &self.key_method_flags)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ServerKeyMessage {
    /// Parses the server's key-method-2 message at the start of `msg` (the client's first plaintext)
    /// and returns it with the number of bytes it took: the fields up to random2 are required, the
    /// strings after them may be absent at the end (as OpenVPN reads them). Bytes after the message are
    /// not looked at; they are text messages of later records.
    pub fn parse(msg: &[u8]) -> Result<(ServerKeyMessage, usize), Km2Error> {
        let mut r = Reader {
            buf: &msg[..msg.len().min(MAX_MESSAGE_LEN)],
            pos: 0,
        };
        let km = r.key_method_2_header()?;
        let random1 = r.fixed::<RANDOM_LEN>("random1")?;
        let random2 = r.fixed::<RANDOM_LEN>("random2")?;
        let options = r.options()?;
        for field in ["username", "password", "peer-info"] {
            r.string(field, usize::from(u16::MAX))?;
        }
        Ok((
            ServerKeyMessage {
                key_method_flags: km,
                random1,
                random2,
                options,
            },
            r.pos,
        ))
    }
}

/// IV_PROTO bit field (`ssl.h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IvProto(pub u32);

impl IvProto {
    /// Bit 1: P_DATA_V2 + pushed peer-id.
    pub const DATA_V2: u32 = 1 << 1;
    /// Bit 2: server may push without PUSH_REQUEST.
    pub const REQUEST_PUSH: u32 = 1 << 2;
    /// Bit 3: TLS keying-material export (EKM).
    pub const TLS_KEY_EXPORT: u32 = 1 << 3;
    /// Bit 4: `AUTH_PENDING,<keywords>`.
    pub const AUTH_PENDING_KW: u32 = 1 << 4;
    /// Bit 5: peer runs P2P NCP.
    pub const NCP_P2P: u32 = 1 << 5;
    /// Bit 6: `--dns` option.
    pub const DNS_OPTION: u32 = 1 << 6;
    /// Bit 7: EXIT over the control channel and `protocol-flags`.
    pub const CC_EXIT_NOTIFY: u32 = 1 << 7;
    /// Bit 8: `AUTH_FAILED,TEMP`.
    pub const AUTH_FAIL_TEMP: u32 = 1 << 8;
    /// Bit 9: dynamic tls-crypt.
    pub const DYN_TLS_CRYPT: u32 = 1 << 9;
    /// Bit 10: epoch data format (2.7+).
    pub const DATA_EPOCH: u32 = 1 << 10;
    /// Bit 11: `--dns` v2 (2.7+).
    pub const DNS_OPTION_V2: u32 = 1 << 11;
    /// Bit 12: PUSH_UPDATE (2.7+).
    pub const PUSH_UPDATE: u32 = 1 << 12;

    /// True if all bits of `flag` are set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    /// Supports P_DATA_V2 / peer-id.
    pub fn data_v2(self) -> bool {
        self.has(Self::DATA_V2)
    }
    /// Accepts an unrequested PUSH_REPLY.
    pub fn request_push(self) -> bool {
        self.has(Self::REQUEST_PUSH)
    }
    /// Supports EKM key derivation.
    pub fn tls_key_export(self) -> bool {
        self.has(Self::TLS_KEY_EXPORT)
    }
    /// Understands `AUTH_PENDING,timeout N`.
    pub fn auth_pending_kw(self) -> bool {
        self.has(Self::AUTH_PENDING_KW)
    }
    /// Peer runs in P2P NCP mode (expect failure).
    pub fn ncp_p2p(self) -> bool {
        self.has(Self::NCP_P2P)
    }
    /// Understands pushed `dns` options.
    pub fn dns_option(self) -> bool {
        self.has(Self::DNS_OPTION)
    }
    /// Supports control-channel EXIT and `protocol-flags`.
    pub fn cc_exit_notify(self) -> bool {
        self.has(Self::CC_EXIT_NOTIFY)
    }
    /// Understands `AUTH_FAILED,TEMP`.
    pub fn auth_fail_temp(self) -> bool {
        self.has(Self::AUTH_FAIL_TEMP)
    }
    /// Supports dynamic tls-crypt.
    pub fn dyn_tls_crypt(self) -> bool {
        self.has(Self::DYN_TLS_CRYPT)
    }
}

/// Validated peer-info variables (`IV_*`, `UV_*`), in the order sent.
///
/// A line is accepted like OpenVPN's `validate_peer_info_line` + `output_peer_info_env` do: trailing
/// CR/LF removed, at most [`PEER_INFO_LINE_MAX`] bytes, `NAME=value` with NAME made of `[A-Za-z0-9_]`
/// and starting with `IV_` or `UV_`; in the value, non-printable bytes, whitespace, `$`, `(` and
/// `` ` `` are replaced with `_`. Other lines are counted in `invalid_lines`. Lookups return the first
/// occurrence of a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// Accepted variables (name, sanitized value).
    pub vars: Vec<(String, String)>,
    /// Number of lines rejected by validation.
    pub invalid_lines: usize,
}

/// `sscanf("%d")`-like parse of a decimal prefix.
fn scan_int(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i] == b' ' || (b'\t'..=b'\r').contains(&b[i])) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add(i64::from(b[i] - b'0'));
        i += 1;
    }
    if i == start {
        return None;
    }
    let v = if neg { -v } else { v };
    i32::try_from(v).ok()
}

impl PeerInfo {
    /// Parses a raw peer-info string (`VAR=value\n` lines).
    pub fn parse(raw: &str) -> PeerInfo {
        let mut pi = PeerInfo::default();
        for line in raw.split('\n') {
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                continue;
            }
            match validate_line(line) {
                Some((name, value)) => pi.vars.push((name, value)),
                None => pi.invalid_lines += 1,
            }
        }
        pi
    }

    /// Value of the first variable called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).and_then(scan_int).is_some_and(|v| v == 1)
    }

    /// IV_VER.
    pub fn version(&self) -> Option<&str> {
        self.get("IV_VER")
    }
    /// IV_PLAT.
    pub fn platform(&self) -> Option<&str> {
        self.get("IV_PLAT")
    }
    /// IV_PLAT_VER.
    pub fn platform_version(&self) -> Option<&str> {
        self.get("IV_PLAT_VER")
    }
    /// IV_PROTO (0 if absent, unparsable or not positive, like `extract_iv_proto`).
    pub fn proto(&self) -> IvProto {
        match self.get("IV_PROTO").and_then(scan_int) {
            Some(v) if v > 0 => IvProto(v as u32),
            _ => IvProto(0),
        }
    }
    /// IV_CIPHERS (colon-separated).
    pub fn ciphers(&self) -> Option<&str> {
        self.get("IV_CIPHERS")
    }
    /// IV_NCP as a number.
    pub fn ncp(&self) -> Option<i32> {
        self.get("IV_NCP").and_then(scan_int)
    }
    /// True if the client can take a pushed cipher (`tls_peer_supports_ncp`).
    pub fn supports_ncp(&self) -> bool {
        self.ncp().is_some_and(|n| n >= 2) || self.ciphers().is_some()
    }
    /// IV_MTU as a number.
    pub fn mtu(&self) -> Option<i32> {
        self.get("IV_MTU").and_then(scan_int)
    }
    /// IV_GUI_VER.
    pub fn gui_version(&self) -> Option<&str> {
        self.get("IV_GUI_VER")
    }
    /// IV_SSO (comma list of pending-auth methods).
    pub fn sso(&self) -> Option<&str> {
        self.get("IV_SSO")
    }
    /// True if IV_SSO lists `method` (e.g. `openurl`, `crtext`).
    pub fn supports_sso(&self, method: &str) -> bool {
        self.sso()
            .is_some_and(|s| s.split(',').any(|m| m == method))
    }
    /// IV_HWADDR.
    pub fn hwaddr(&self) -> Option<&str> {
        self.get("IV_HWADDR")
    }
    /// IV_SSL.
    pub fn ssl(&self) -> Option<&str> {
        self.get("IV_SSL")
    }
    /// IV_TCPNL=1.
    pub fn tcp_nonlinear(&self) -> bool {
        self.flag("IV_TCPNL")
    }
    /// IV_COMP_STUBv2=1 (checked like OpenVPN's substring test `IV_COMP_STUBv2=1`).
    pub fn comp_stub_v2(&self) -> bool {
        self.flag("IV_COMP_STUBv2")
    }
    /// IV_COMP_STUB=1.
    pub fn comp_stub(&self) -> bool {
        self.flag("IV_COMP_STUB")
    }
    /// IV_LZO_STUB=1.
    pub fn lzo_stub(&self) -> bool {
        self.flag("IV_LZO_STUB")
    }
    /// IV_LZO=1.
    pub fn lzo(&self) -> bool {
        self.flag("IV_LZO")
    }
    /// IV_LZ4=1.
    pub fn lz4(&self) -> bool {
        self.flag("IV_LZ4")
    }
    /// IV_LZ4v2=1.
    pub fn lz4_v2(&self) -> bool {
        self.flag("IV_LZ4v2")
    }
    /// User-defined `UV_*` variables.
    pub fn user_vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .filter(|(n, _)| n.starts_with("UV_"))
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

fn validate_line(line: &str) -> Option<(String, String)> {
    if line.len() > PEER_INFO_LINE_MAX {
        return None;
    }
    let (name, value) = line.split_once('=')?;
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return None;
    }
    if !(name.starts_with("IV_") || name.starts_with("UV_")) {
        return None;
    }
    let value: String = value
        .chars()
        .map(|c| {
            if !c.is_ascii() || !(c as u8).is_ascii_graphic() || matches!(c, '$' | '(' | '`') {
                '_'
            } else {
                c
            }
        })
        .collect();
    Some((name.to_string(), value))
}

/// `dev-type` of the OCC string. Bulwark serves tun devices only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    /// Layer-3 tun.
    Tun,
}

/// Transport of the OCC string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP (`proto UDPv4`; OpenVPN sends UDPv4 even for IPv6 sockets).
    Udp,
    /// TCP server (`proto TCPv4_SERVER`, the client shows `TCPv4_CLIENT`).
    Tcp,
}

/// Server settings that determine the OCC options string (`options.c:options_string`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccSettings {
    /// dev-type.
    pub dev_type: DevType,
    /// tun-mtu (default 1500).
    pub tun_mtu: u32,
    /// Transport.
    pub transport: Transport,
    /// Local compression framing configured (normally false for Bulwark; see [`occ_compat_lzo`]).
    pub comp_lzo: bool,
    /// The server's own `--cipher`; `None` = OpenVPN 2.6's BF-CBC placeholder default.
    pub cipher: Option<Cipher>,
    /// `data-ciphers` (the cipher is announced only if it is in this list).
    pub data_ciphers: Vec<Cipher>,
    /// `--auth` digest (default SHA1).
    pub auth: Digest,
    /// `tls-auth` key direction of the server (`Some(0|1)`), or `None` (bidirectional / not tls-auth).
    pub key_direction: Option<u8>,
    /// `tls-auth` in use.
    pub tls_auth: bool,
}

impl Default for OccSettings {
    fn default() -> Self {
        Self {
            dev_type: DevType::Tun,
            tun_mtu: 1500,
            transport: Transport::Udp,
            comp_lzo: false,
            cipher: None,
            data_ciphers: vec![
                Cipher::Aes256Gcm,
                Cipher::Aes128Gcm,
                Cipher::ChaCha20Poly1305,
            ],
            auth: Digest::Sha1,
            key_direction: None,
            tls_auth: false,
        }
    }
}

impl OccSettings {
    /// `link-mtu` as OpenVPN computes it for the OCC string (`calc_options_string_link_mtu`).
    pub fn link_mtu(&self) -> u32 {
        // payload: tun-mtu + compression byte + (CBC: packet id inside the payload)
        let mut payload = self.tun_mtu + u32::from(self.comp_lzo);
        // header: TCP length + opcode (no peer-id at options time)
        let mut overhead: u32 = if self.transport == Transport::Tcp {
            2
        } else {
            0
        } + 1;
        match self.cipher {
            None => {
                // BF-CBC placeholder: 8-byte block + 8-byte IV, then cipher "none": pid + HMAC
                overhead += 16 + 4 + self.auth.len() as u32;
            }
            Some(c) if c.is_aead() => {
                overhead += 4 + 16 + c.iv_size() as u32 + c.block_size() as u32;
            }
            Some(c) => {
                payload += 4;
                overhead += c.block_size() as u32 + c.iv_size() as u32 + self.auth.len() as u32;
            }
        }
        payload + overhead
    }

    /// The options string this server sends (`remote == false`) or expects from a client
    /// (`remote == true`: tls-client, TCPv4_CLIENT and the swapped key direction).
    pub fn options_string(&self, remote: bool) -> String {
        let mut s = String::with_capacity(128);
        s.push_str("V4");
        let dev = match self.dev_type {
            DevType::Tun => "tun",
        };
        // Writing into a String cannot fail.
        let _ = write!(s, ",dev-type {dev}");
        let _ = write!(s, ",link-mtu {}", self.link_mtu());
        let _ = write!(s, ",tun-mtu {}", self.tun_mtu);
        let proto = match (self.transport, remote) {
            (Transport::Udp, _) => "UDPv4",
            (Transport::Tcp, false) => "TCPv4_SERVER",
            (Transport::Tcp, true) => "TCPv4_CLIENT",
        };
        let _ = write!(s, ",proto {proto}");
        if self.comp_lzo {
            s.push_str(",comp-lzo");
        }
        if let Some(kd) = self.key_direction {
            let kd = if remote { 1 - (kd & 1) } else { kd & 1 };
            let _ = write!(s, ",keydir {kd}");
        }
        let (auth, keysize) = match self.cipher {
            None => (self.auth.name(), 128),
            Some(c) => {
                if self.data_ciphers.contains(&c) {
                    let _ = write!(s, ",cipher {}", c.name());
                }
                let auth = if c.is_aead() {
                    "[null-digest]"
                } else {
                    self.auth.name()
                };
                (auth, c.key_len() * 8)
            }
        };
        let _ = write!(s, ",auth {auth},keysize {keysize}");
        if self.tls_auth {
            s.push_str(",tls-auth");
        }
        s.push_str(",key-method 2");
        s.push_str(if remote { ",tls-client" } else { ",tls-server" });
        s
    }
}

/// `options_string_compat_lzo`: the string a `compress migrate` server sends to a client that uses
/// compression framing: link-mtu + 1 and `,comp-lzo` appended at the end. Returns the input unchanged if
/// it has no well-formed `link-mtu` (100..=9900), like OpenVPN.
pub fn occ_compat_lzo(options: &str) -> String {
    let Some(idx) = options.find(",link-mtu ") else {
        return options.to_string();
    };
    let rest = &options[idx + ",link-mtu ".len()..];
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let Ok(mtu) = rest[..digits_end].parse::<u32>() else {
        return options.to_string();
    };
    if !(100..=9900).contains(&mtu) || !rest[digits_end..].starts_with(',') {
        return options.to_string();
    }
    format!(
        "{},link-mtu {}{},comp-lzo",
        &options[..idx],
        mtu + 1,
        &rest[digits_end..]
    )
}

/// `options_string_extract_option`: value of the first comma-separated item `name <value>`.
pub fn occ_extract<'a>(options: &'a str, name: &str) -> Option<&'a str> {
    options.split(',').find_map(|item| {
        item.strip_prefix(name)
            .and_then(|r| r.strip_prefix(' '))
            .filter(|v| !v.is_empty())
    })
}

/// True if an OCC string announces compression framing (`,comp-lzo,` like OpenVPN's `strstr`).
pub fn occ_uses_compression(options: &str) -> bool {
    options.contains(",comp-lzo,")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CLIENT_OCC: &str =
        "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client";
    const SERVER_OCC: &str =
        "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server";
    const PEER_INFO: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n\
IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\nIV_COMP_STUB=1\n\
IV_COMP_STUBv2=1\n";

    fn push_str(out: &mut Vec<u8>, s: &[u8]) {
        if s.is_empty() {
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&((s.len() + 1) as u16).to_be_bytes());
            out.extend_from_slice(s);
            out.push(0);
        }
    }

    /// A client message written out field by field (the reference the parser and the builder are
    /// checked against).
    fn client_msg_from(
        pre: &[u8; 48],
        randoms: (u8, u8),
        user: &[u8],
        pass: &[u8],
        peer_info: &str,
    ) -> Vec<u8> {
        let mut m = vec![0, 0, 0, 0, 2];
        m.extend_from_slice(pre);
        m.extend([randoms.0; 32]);
        m.extend([randoms.1; 32]);
        push_str(&mut m, CLIENT_OCC.as_bytes());
        push_str(&mut m, user);
        push_str(&mut m, pass);
        push_str(&mut m, peer_info.as_bytes());
        m
    }

    fn client_msg(user: &[u8], pass: &[u8], peer_info: &str) -> Vec<u8> {
        let pre: [u8; 48] = std::array::from_fn(|i| i as u8 + 1);
        client_msg_from(&pre, (0xa1, 0xa2), user, pass, peer_info)
    }

    #[test]
    fn parses_default_client_message_399_bytes() {
        let m = client_msg(b"", b"", PEER_INFO);
        // Digest §5.2: 399 bytes in scenario A (default client, no user/pass).
        assert_eq!(m.len(), 399);
        let p = ClientKeyMessage::parse(&m, &Km2Limits::default()).unwrap();
        assert_eq!(p.key_method_flags, 2);
        assert_eq!(p.pre_master[0], 1);
        assert_eq!(p.pre_master[47], 48);
        assert_eq!(p.random1, [0xa1; 32]);
        assert_eq!(p.random2, [0xa2; 32]);
        assert_eq!(p.options, CLIENT_OCC);
        assert_eq!(p.credentials, Credentials::None);
        let pi = &p.peer_info;
        assert_eq!(pi.invalid_lines, 0);
        assert_eq!(pi.version(), Some("2.6.14"));
        assert_eq!(pi.platform(), Some("linux"));
        assert_eq!(pi.proto(), IvProto(990));
        assert!(pi.proto().data_v2() && pi.proto().request_push() && pi.proto().tls_key_export());
        assert!(
            pi.proto().auth_pending_kw() && pi.proto().dns_option() && pi.proto().cc_exit_notify()
        );
        assert!(pi.proto().auth_fail_temp() && pi.proto().dyn_tls_crypt() && !pi.proto().ncp_p2p());
        assert_eq!(
            pi.ciphers(),
            Some("AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305")
        );
        assert_eq!(pi.ncp(), Some(2));
        assert_eq!(pi.mtu(), Some(1600));
        assert!(pi.supports_ncp() && pi.tcp_nonlinear() && pi.comp_stub_v2() && pi.comp_stub());
        assert!(pi.lzo_stub() && !pi.lzo() && !pi.lz4());
        assert!(!p.uses_compression());
        assert_eq!(p.occ_cipher(), None);
    }

    #[test]
    fn parses_credentials() {
        let m = client_msg(b"alice", b"s3cret", PEER_INFO);
        let p = ClientKeyMessage::parse(&m, &Km2Limits::default()).unwrap();
        match &p.credentials {
            Credentials::Provided { username, password } => {
                assert_eq!(username, b"alice");
                assert_eq!(password.as_str(), Some("s3cret"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn overlong_credentials_flagged_not_fatal() {
        let long = vec![b'x'; 200];
        let m = client_msg(b"bob", &long, PEER_INFO);
        let small = Km2Limits {
            user_pass_max: USER_PASS_LEN_SMALL,
        };
        let p = ClientKeyMessage::parse(&m, &small).unwrap();
        assert_eq!(
            p.credentials,
            Credentials::TooLong {
                username_len: 4,
                password_len: 201
            }
        );
        // peer-info after the skipped password is still parsed
        assert_eq!(p.peer_info.proto(), IvProto(990));
        // with Debian's limit the same message is fine
        let p = ClientKeyMessage::parse(&m, &Km2Limits::default()).unwrap();
        assert!(matches!(p.credentials, Credentials::Provided { .. }));
    }

    #[test]
    fn truncation_everywhere_is_an_error_or_absent_field() {
        let m = client_msg(b"alice", b"pw", PEER_INFO);
        for cut in 0..m.len() {
            let r = ClientKeyMessage::parse(&m[..cut], &Km2Limits::default());
            if cut < 117 {
                assert!(r.is_err(), "cut {cut} accepted");
            } else if let Ok(p) = r {
                // accepted only at field boundaries: later fields absent
                assert!(p.peer_info_raw.is_none(), "cut {cut}");
            }
        }
        // exactly at the end of random2: options absent -> accepted with empty options
        let p = ClientKeyMessage::parse(&m[..117], &Km2Limits::default()).unwrap();
        assert_eq!(p.options, "");
        assert_eq!(p.credentials, Credentials::None);
    }

    #[test]
    fn rejects_bad_method_long_options_and_long_message() {
        let mut m = client_msg(b"", b"", PEER_INFO);
        m[4] = 1;
        assert_eq!(
            ClientKeyMessage::parse(&m, &Km2Limits::default()).unwrap_err(),
            Km2Error::BadKeyMethod(1)
        );
        m[4] = 0x12; // flags in the high nibble are tolerated
        assert!(ClientKeyMessage::parse(&m, &Km2Limits::default()).is_ok());

        let mut m = vec![0, 0, 0, 0, 2];
        m.extend([0u8; 112]);
        push_str(&mut m, &[b'a'; 512]);
        assert_eq!(
            ClientKeyMessage::parse(&m, &Km2Limits::default()).unwrap_err(),
            Km2Error::OptionsTooLong(513)
        );
        let big = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert_eq!(
            ClientKeyMessage::parse(&big, &Km2Limits::default()).unwrap_err(),
            Km2Error::MessageTooLong(MAX_MESSAGE_LEN + 1)
        );
    }

    #[test]
    fn embedded_nul_truncates_like_c() {
        let mut m = vec![0, 0, 0, 0, 2];
        m.extend([0u8; 112]);
        push_str(&mut m, b"V4,a\0b");
        push_str(&mut m, b"user");
        let p = ClientKeyMessage::parse(&m, &Km2Limits::default()).unwrap();
        assert_eq!(p.options, "V4,a");
        assert!(
            matches!(p.credentials, Credentials::Provided { ref username, .. } if username == b"user")
        );
    }

    #[test]
    fn server_message_178_bytes() {
        let mut out = Vec::new();
        build_server_message(&[1; 32], &[2; 32], SERVER_OCC, &mut out).unwrap();
        assert_eq!(out.len(), 178);
        assert_eq!(&out[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(&out[out.len() - 6..], &[0; 6]);
        // a client-side style parse (no pre-master) of our message: check the options string position
        let olen = u16::from_be_bytes([out[69], out[70]]) as usize;
        assert_eq!(&out[71..71 + olen - 1], SERVER_OCC.as_bytes());
        assert!(build_server_message(&[1; 32], &[2; 32], "a\0b", &mut out).is_err());
        let long = "x".repeat(512);
        let before = out.len();
        assert!(build_server_message(&[1; 32], &[2; 32], &long, &mut out).is_err());
        assert_eq!(out.len(), before);
    }

    #[test]
    fn client_message_round_trips_through_the_server_parser() {
        let mut out = vec![0xee];
        let pre: [u8; 48] = core::array::from_fn(|i| i as u8 + 1);
        build_client_message(
            &pre,
            &[0xa1; 32],
            &[0xa2; 32],
            CLIENT_OCC,
            None,
            PEER_INFO,
            &mut out,
        )
        .unwrap();
        // byte-identical to the default 2.6.14 client's 399-byte message (digest §5.2)
        assert_eq!(&out[1..], &client_msg(b"", b"", PEER_INFO)[..]);
        let p = ClientKeyMessage::parse(&out[1..], &Km2Limits::default()).unwrap();
        assert_eq!(p.pre_master, pre);
        assert_eq!(p.options, CLIENT_OCC);
        assert_eq!(p.credentials, Credentials::None);
        assert_eq!(p.peer_info.proto(), IvProto(990));

        let mut out = Vec::new();
        build_client_message(
            &pre,
            &[1; 32],
            &[2; 32],
            CLIENT_OCC,
            Some(("alice", "pw")),
            "",
            &mut out,
        )
        .unwrap();
        assert_eq!(out, client_msg_with(&pre, b"alice", b"pw", ""));
        let p = ClientKeyMessage::parse(&out, &Km2Limits::default()).unwrap();
        assert!(
            matches!(p.credentials, Credentials::Provided { ref username, .. } if username == b"alice")
        );
        assert_eq!(p.peer_info_raw, None);
    }

    fn client_msg_with(pre: &[u8; 48], user: &[u8], pass: &[u8], peer_info: &str) -> Vec<u8> {
        client_msg_from(pre, (1, 2), user, pass, peer_info)
    }

    #[test]
    fn client_message_rejects_what_the_parser_would_not_take() {
        let pre = [7u8; 48];
        let mut out = vec![1, 2, 3];
        type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str);
        let bad: [Case<'_>; 4] = [
            ("V4\0x", None, ""),
            (&"x".repeat(512), None, ""),
            (CLIENT_OCC, Some(("u\0", "p")), ""),
            (CLIENT_OCC, None, &"I".repeat(2000)),
        ];
        for (opts, cred, pi) in bad {
            assert!(
                build_client_message(&pre, &[0; 32], &[0; 32], opts, cred, pi, &mut out).is_err()
            );
            assert_eq!(out, [1, 2, 3], "output left unchanged");
        }
        assert_eq!(
            build_client_message(
                &pre,
                &[0; 32],
                &[0; 32],
                CLIENT_OCC,
                None,
                &"I".repeat(2000),
                &mut out
            ),
            Err(Km2Error::MessageTooLong(
                5 + 48 + 64 + 2 + CLIENT_OCC.len() + 1 + 4 + 2 + 2001
            ))
        );
    }

    #[test]
    fn server_message_parses_with_its_length() {
        let mut out = Vec::new();
        build_server_message(&[1; 32], &[2; 32], SERVER_OCC, &mut out).unwrap();
        out.extend_from_slice(b"PUSH_REPLY,ping 10\0");
        let (m, used) = ServerKeyMessage::parse(&out).unwrap();
        assert_eq!(used, 178);
        assert_eq!(m.key_method_flags, 2);
        assert_eq!(m.random1, [1; 32]);
        assert_eq!(m.random2, [2; 32]);
        assert_eq!(m.options, SERVER_OCC);
        assert_eq!(&out[used..], b"PUSH_REPLY,ping 10\0");
        // absent trailing strings are tolerated, a cut inside a field is not
        let (m, used) = ServerKeyMessage::parse(&out[..69]).unwrap();
        assert_eq!((m.options.as_str(), used), ("", 69));
        assert!(ServerKeyMessage::parse(&out[..68]).is_err());
        assert!(ServerKeyMessage::parse(&out[..80]).is_err());
        let mut bad = out.clone();
        bad[4] = 1;
        assert_eq!(
            ServerKeyMessage::parse(&bad).unwrap_err(),
            Km2Error::BadKeyMethod(1)
        );
    }

    #[test]
    fn occ_strings_match_observed() {
        let s = OccSettings::default();
        assert_eq!(s.options_string(false), SERVER_OCC);
        assert_eq!(s.options_string(true), CLIENT_OCC);
        let tcp = OccSettings {
            transport: Transport::Tcp,
            ..OccSettings::default()
        };
        assert_eq!(
            tcp.options_string(false),
            "V4,dev-type tun,link-mtu 1543,tun-mtu 1500,proto TCPv4_SERVER,auth SHA1,keysize 128,key-method 2,tls-server"
        );
        assert!(tcp.options_string(true).contains("proto TCPv4_CLIENT"));
        let ta = OccSettings {
            key_direction: Some(0),
            tls_auth: true,
            ..OccSettings::default()
        };
        assert_eq!(
            ta.options_string(true),
            "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,keydir 1,auth SHA1,keysize 128,tls-auth,key-method 2,tls-client"
        );
        let sha256 = OccSettings {
            auth: Digest::Sha256,
            ..OccSettings::default()
        };
        assert!(sha256.options_string(false).contains("link-mtu 1553,"));
        assert!(sha256.options_string(false).contains("auth SHA256"));
        let cbc = OccSettings {
            cipher: Some(Cipher::Aes256Cbc),
            data_ciphers: vec![Cipher::Aes256Cbc],
            auth: Digest::Sha256,
            ..OccSettings::default()
        };
        assert_eq!(
            cbc.options_string(false),
            "V4,dev-type tun,link-mtu 1569,tun-mtu 1500,proto UDPv4,cipher AES-256-CBC,auth SHA256,keysize 256,key-method 2,tls-server"
        );
        let gcm = OccSettings {
            cipher: Some(Cipher::Aes256Gcm),
            ..OccSettings::default()
        };
        assert!(gcm
            .options_string(false)
            .contains("link-mtu 1534,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,auth [null-digest],keysize 256"));
    }

    #[test]
    fn compat_lzo_and_extract() {
        assert_eq!(
            occ_compat_lzo(SERVER_OCC),
            "V4,dev-type tun,link-mtu 1542,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server,comp-lzo"
        );
        assert_eq!(occ_compat_lzo("V4,dev-type tun"), "V4,dev-type tun");
        assert_eq!(occ_compat_lzo("V4,link-mtu 99,x"), "V4,link-mtu 99,x");
        let client = "V4,dev-type tun,link-mtu 1542,tun-mtu 1500,proto UDPv4,comp-lzo,auth SHA1,keysize 128,key-method 2,tls-client";
        assert!(occ_uses_compression(client));
        assert!(!occ_uses_compression(SERVER_OCC));
        assert_eq!(
            occ_extract("V4,cipher AES-256-CBC,auth SHA1", "cipher"),
            Some("AES-256-CBC")
        );
        assert_eq!(occ_extract("V4,ciphers x,auth SHA1", "cipher"), None);
        assert_eq!(occ_extract(CLIENT_OCC, "auth"), Some("SHA1"));
    }

    #[test]
    fn peer_info_validation() {
        let long = format!("IV_GUI_VER={}", "a".repeat(300));
        let raw = format!(
            "IV_VER=2.6.14\r\nFOO=bar\nIV_BAD-NAME=1\nUV_NAME=hello world$(x)`\n{long}\nnoequals\nIV_PROTO=abc\nIV_SSO=openurl,crtext\nIV_VER=9\n"
        );
        let pi = PeerInfo::parse(&raw);
        assert_eq!(pi.version(), Some("2.6.14"));
        assert_eq!(pi.invalid_lines, 4);
        assert_eq!(
            pi.user_vars().collect::<Vec<_>>(),
            vec![("UV_NAME", "hello_world__x)_")]
        );
        assert_eq!(pi.proto(), IvProto(0));
        assert!(pi.supports_sso("crtext") && !pi.supports_sso("proxy_url"));
        assert_eq!(PeerInfo::parse("IV_PROTO=-5").proto(), IvProto(0));
        assert_eq!(PeerInfo::parse("IV_PROTO=6x").proto(), IvProto(6));
        assert_eq!(PeerInfo::parse("IV_NCP=99999999999").ncp(), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700)) {
            let _ = ClientKeyMessage::parse(&bytes, &Km2Limits::default());
            let mut m = vec![0, 0, 0, 0, 2];
            m.extend([0u8; 112]);
            m.extend_from_slice(&bytes);
            let _ = ClientKeyMessage::parse(&m, &Km2Limits { user_pass_max: 16 });
        }

        #[test]
        fn peer_info_never_panics(s in "\\PC{0,400}") {
            let pi = PeerInfo::parse(&s);
            let _ = (pi.proto(), pi.ncp(), pi.mtu());
        }
    }
}
