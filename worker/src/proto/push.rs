//! Control-channel text messages after key-method-2: framing, client messages, PUSH_REPLY and the
//! server's status messages.
//!
//! Digest §8 and OpenVPN `push.c`, `helper.c`, `forward.c`, `ssl_pkt.c:extract_command_buffer`.
//!
//! # API
//!
//! ```text
//! // receive: split a TLS plaintext read into messages, classify each
//! for m in extract_messages(&plaintext) { match parse_client_message(m?) { ClientMessage::PushRequest => .. } }
//! // send: every message goes out NUL-terminated; one message must not span TLS records
//! encode_message(&text, &mut out)?
//! // PUSH_REPLY: global list (config `push` lines ++ helper_pushes() ++ compression push) + per-client
//! let flags = ProtocolFeatures::negotiate(peer_info.proto(), &ServerCapabilities { .. });
//! let per_client = per_client_options(&ClientPushParams { .. });
//! let messages: Vec<String> = build_push_reply(&global, &per_client)?;   // split with push-continuation
//! auth_failed(Some(reason))  auth_failed_temp(&flags, msg)  auth_pending(timeout, kw)  info_pre(..)
//! info(..)  restart(flags, msg)  halt(flags, msg)  EXIT
//! ```
//!
//! Framing rules (`extract_command_buffer`): messages are separated by NUL; a trailing fragment without
//! NUL is discarded; trailing CR/LF are removed; a message containing any byte outside printable ASCII
//! (0x20..=0x7E) is rejected; empty messages are skipped.
//!
//! PUSH_REPLY splitting reproduces `send_push_reply`: messages are built in a 1024-byte bundle with 84
//! bytes reserved (`safe_cap` = 940). Before appending an option of length `l`, if the current length
//! plus `l` is at least 940, the message is closed with `,push-continuation 2` and a new `PUSH_REPLY`
//! started; the last message gets `,push-continuation 1` only if a split happened; with no options a
//! bare `PUSH_REPLY` is sent. Options may not contain commas or non-printable characters and must be
//! shorter than 256 bytes (the client's option line buffer).

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::data::Cipher;
use super::km2::IvProto;

/// `PUSH_BUNDLE_SIZE`.
pub const PUSH_BUNDLE_SIZE: usize = 1024;
/// Room `send_push_reply` keeps free in a bundle.
pub const PUSH_BUNDLE_RESERVE: usize = 84;
/// Longest pushed option (`OPTION_PARM_SIZE` - 1).
pub const MAX_OPTION_LEN: usize = 255;
/// Largest control message we send (client TLS read buffer is 2048 bytes incl. NUL).
pub const MAX_MESSAGE_LEN: usize = 2047;
/// The reply command.
pub const PUSH_REPLY: &str = "PUSH_REPLY";
/// Text of the exit message.
pub const EXIT: &str = "EXIT";

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PushError {
    /// A received message contains a byte outside printable ASCII.
    #[error("control message contains invalid byte {byte:#04x}")]
    InvalidCharacter {
        /// The offending byte.
        byte: u8,
    },
    /// A received fragment had no terminating NUL (OpenVPN discards it).
    #[error("control message fragment of {0} bytes without NUL terminator")]
    Unterminated(usize),
    /// An option to push contains a comma.
    #[error("push option {0:?} contains a comma")]
    OptionComma(String),
    /// An option to push is empty or contains non-printable characters.
    #[error("push option {0:?} is empty or contains non-printable characters")]
    OptionInvalid(String),
    /// An option is too long to be pushed.
    #[error("push option of {0} bytes is too long")]
    OptionTooLong(usize),
    /// A message to send contains invalid characters.
    #[error("message to send contains a byte outside printable ASCII")]
    MessageInvalid,
    /// A message to send is too long.
    #[error("message of {0} bytes is too long to send")]
    MessageTooLong(usize),
}

/// Splits one TLS plaintext read into control messages (see module docs).
pub fn extract_messages(buf: &[u8]) -> MessageIter<'_> {
    MessageIter { rest: buf }
}

/// Iterator returned by [`extract_messages`].
#[derive(Debug, Clone)]
pub struct MessageIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = Result<&'a str, PushError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.len() <= 1 {
                // OpenVPN stops when at most one byte is left.
                self.rest = &[];
                return None;
            }
            let Some(nul) = self.rest.iter().position(|&b| b == 0) else {
                let n = self.rest.len();
                self.rest = &[];
                return Some(Err(PushError::Unterminated(n)));
            };
            let mut msg = &self.rest[..nul];
            self.rest = &self.rest[nul + 1..];
            while let [head @ .., b'\r' | b'\n'] = msg {
                msg = head;
            }
            if msg.is_empty() {
                continue;
            }
            if let Some(&byte) = msg.iter().find(|&&b| !(0x20..=0x7e).contains(&b)) {
                return Some(Err(PushError::InvalidCharacter { byte }));
            }
            // Printable ASCII is valid UTF-8.
            return Some(std::str::from_utf8(msg).map_err(|_| PushError::MessageInvalid));
        }
    }
}

/// A message from the client, as a 2.6 server dispatches it (prefix match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `PUSH_REQUEST`.
    PushRequest,
    /// `EXIT` (cc-exit): keep the session ~5 s for ACKs, then free it.
    Exit,
    /// `CR_RESPONSE,<base64>`: the response text (empty if missing).
    CrResponse(&'a str),
    /// Anything else (OpenVPN logs "unknown control message" and ignores it).
    Other(&'a str),
}

/// Classifies a message returned by [`extract_messages`].
pub fn parse_client_message(msg: &str) -> ClientMessage<'_> {
    if msg.starts_with("PUSH_REQUEST") {
        ClientMessage::PushRequest
    } else if let Some(rest) = msg.strip_prefix("CR_RESPONSE") {
        ClientMessage::CrResponse(rest.strip_prefix(',').unwrap_or(""))
    } else if msg.starts_with(EXIT) {
        ClientMessage::Exit
    } else {
        ClientMessage::Other(msg)
    }
}

fn check_sendable(msg: &str) -> Result<(), PushError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(PushError::MessageTooLong(msg.len()));
    }
    if msg.bytes().any(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(PushError::MessageInvalid);
    }
    Ok(())
}

/// Appends `msg` + NUL to `out` after checking it is printable ASCII and at most
/// [`MAX_MESSAGE_LEN`] bytes.
pub fn encode_message(msg: &str, out: &mut Vec<u8>) -> Result<(), PushError> {
    check_sendable(msg)?;
    out.extend_from_slice(msg.as_bytes());
    out.push(0);
    Ok(())
}

fn check_option(opt: &str) -> Result<(), PushError> {
    if opt.contains(',') {
        return Err(PushError::OptionComma(opt.to_string()));
    }
    if opt.is_empty() || opt.bytes().any(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(PushError::OptionInvalid(opt.to_string()));
    }
    if opt.len() > MAX_OPTION_LEN {
        return Err(PushError::OptionTooLong(opt.len()));
    }
    Ok(())
}

/// Builds the PUSH_REPLY message(s) from the global and per-client option lists (see module docs for
/// the splitting rule). Returns the messages in sending order (without NUL).
pub fn build_push_reply<G, C>(global: &[G], per_client: &[C]) -> Result<Vec<String>, PushError>
where
    G: AsRef<str>,
    C: AsRef<str>,
{
    let safe_cap = PUSH_BUNDLE_SIZE - PUSH_BUNDLE_RESERVE;
    let mut out = Vec::new();
    let mut cur = String::with_capacity(PUSH_BUNDLE_SIZE);
    cur.push_str(PUSH_REPLY);
    let mut multi = false;
    for opt in global
        .iter()
        .map(AsRef::as_ref)
        .chain(per_client.iter().map(AsRef::as_ref))
    {
        check_option(opt)?;
        let l = opt.len();
        if cur.len() + l >= safe_cap {
            cur.push_str(",push-continuation 2");
            out.push(std::mem::replace(&mut cur, String::from(PUSH_REPLY)));
            multi = true;
        }
        if cur.len() + l >= safe_cap {
            return Err(PushError::OptionTooLong(l));
        }
        cur.push(',');
        cur.push_str(opt);
    }
    if multi {
        cur.push_str(",push-continuation 1");
    }
    if cur.len() > PUSH_REPLY.len() || out.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// A control message as OpenVPN logs it (`SENT CONTROL`): the value of an `auth-token`, an
/// `echo` and a `SESS_ID_…` item is left out up to the next comma, the keyword kept (OpenVPN's
/// sanitize_control_message; Bulwark leaves tokens out at every verbosity).
pub fn sanitize_control_message(msg: &str) -> String {
    const MARKERS: [(&str, usize); 3] = [("auth-token ", 10), ("echo ", 4), ("SESS_ID_", 7)];
    let mut out = String::with_capacity(msg.len());
    for (n, item) in msg.split(',').enumerate() {
        if n > 0 {
            out.push(',');
        }
        let cut = MARKERS
            .iter()
            .filter_map(|(m, keep)| item.find(m).map(|at| at + keep))
            .min();
        out.push_str(cut.map_or(item, |c| &item[..c]));
    }
    out
}

/// Stand-alone token refresh after a renegotiation: `PUSH_REPLY,auth-token <token>`.
pub fn auth_token_refresh(token: &str) -> Result<String, PushError> {
    let opt = format!("auth-token {token}");
    check_option(&opt)?;
    Ok(format!("{PUSH_REPLY},{opt}"))
}

/// IPv4 topology of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `topology subnet`.
    Subnet,
    /// `topology net30`.
    Net30,
}

impl Topology {
    /// Name as used in `topology <name>`.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Subnet => "subnet",
            Topology::Net30 => "net30",
        }
    }
}

/// Inputs of the `--server` / `--keepalive` helper pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperPushConfig {
    /// `server <network> <netmask>` (None if no IPv4 `server` directive).
    pub ipv4: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Topology (IPv4).
    pub topology: Topology,
    /// `server-ipv6` configured (pushes the legacy `tun-ipv6`).
    pub ipv6: bool,
    /// `client-to-client` (net30 pushes a route to the whole network instead of the server address).
    pub client_to_client: bool,
    /// `keepalive <ping> <restart>`.
    pub keepalive: Option<(u32, u32)>,
    /// `tcp-nodelay` helper.
    pub tcp_nodelay: bool,
}

/// The options a 2.6 server's helper directives add to the global push list, in OpenVPN's order:
/// `tun-ipv6`, then `route`/`route-gateway`, `topology`, then `ping`/`ping-restart`, then
/// `socket-flags TCP_NODELAY`.
pub fn helper_pushes(cfg: &HelperPushConfig) -> Vec<String> {
    let mut v = Vec::new();
    if cfg.ipv6 {
        v.push("tun-ipv6".to_string());
    }
    if let Some((network, netmask)) = cfg.ipv4 {
        let server_ip = Ipv4Addr::from(u32::from(network).wrapping_add(1));
        match cfg.topology {
            Topology::Net30 => {
                if cfg.client_to_client {
                    v.push(format!("route {network} {netmask}"));
                } else {
                    v.push(format!("route {server_ip}"));
                }
            }
            Topology::Subnet => v.push(format!("route-gateway {server_ip}")),
        }
        v.push(format!("topology {}", cfg.topology.name()));
    }
    if let Some((ping, restart)) = cfg.keepalive {
        v.push(format!("ping {ping}"));
        v.push(format!("ping-restart {restart}"));
    }
    if cfg.tcp_nodelay {
        v.push("socket-flags TCP_NODELAY".to_string());
    }
    v
}

/// What the server is willing to use (normally all true for Bulwark with rustls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// EKM key derivation available.
    pub tls_ekm: bool,
    /// Dynamic tls-crypt for renegotiations.
    pub dyn_tls_crypt: bool,
}

impl Default for ServerCapabilities {
    fn default() -> Self {
        Self {
            tls_ekm: true,
            dyn_tls_crypt: true,
        }
    }
}

/// Protocol features agreed with a client (`multi_client_set_protocol_options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtocolFeatures {
    /// P_DATA_V2 with a pushed peer-id.
    pub data_v2: bool,
    /// Derive data keys with EKM (else the legacy PRF).
    pub tls_ekm: bool,
    /// Control-channel EXIT.
    pub cc_exit: bool,
    /// Dynamic tls-crypt for key_id > 0.
    pub dyn_tls_crypt: bool,
    /// Client accepts an unrequested PUSH_REPLY.
    pub request_push: bool,
    /// Client understands `AUTH_PENDING,timeout N`.
    pub auth_pending_kw: bool,
    /// Client understands `AUTH_FAILED,TEMP`.
    pub auth_fail_temp: bool,
}

impl ProtocolFeatures {
    /// Features from the client's IV_PROTO and the server's capabilities.
    pub fn negotiate(proto: IvProto, caps: &ServerCapabilities) -> Self {
        Self {
            data_v2: proto.data_v2(),
            tls_ekm: caps.tls_ekm && proto.tls_key_export(),
            cc_exit: proto.cc_exit_notify(),
            dyn_tls_crypt: caps.dyn_tls_crypt && proto.dyn_tls_crypt(),
            request_push: proto.request_push(),
            auth_pending_kw: proto.auth_pending_kw(),
            auth_fail_temp: proto.auth_fail_temp(),
        }
    }
}

/// Per-client inputs of the PUSH_REPLY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPushParams<'a> {
    /// `ifconfig-ipv6 <addr>/<bits> <server addr>`.
    pub ifconfig_ipv6: Option<(Ipv6Addr, u8, Ipv6Addr)>,
    /// `ifconfig <local> <remote-or-netmask>` (subnet: client ip + netmask; net30: client ip + peer ip).
    pub ifconfig: Option<(Ipv4Addr, Ipv4Addr)>,
    /// peer-id (pushed only if `features.data_v2`).
    pub peer_id: u32,
    /// `auth-token` to push.
    pub auth_token: Option<&'a str>,
    /// Cipher to push (`Negotiated::push_cipher`), `None` to not push it.
    pub cipher: Option<Cipher>,
    /// Agreed features.
    pub features: ProtocolFeatures,
    /// The server's tun-mtu, pushed if the client sent IV_MTU (`Some(client IV_MTU)`).
    pub tun_mtu: u32,
    /// The client's IV_MTU, if it sent one.
    pub client_iv_mtu: Option<i32>,
}

/// The per-client part of the PUSH_REPLY, in the order `prepare_push_reply` produces it:
/// `ifconfig-ipv6`, `ifconfig`, `peer-id`, `auth-token`, `cipher`, `key-derivation tls-ekm` (only if
/// EKM without cc-exit), `protocol-flags …`, `tun-mtu`.
pub fn per_client_options(p: &ClientPushParams<'_>) -> Vec<String> {
    let mut v = Vec::new();
    if let Some((addr, bits, remote)) = p.ifconfig_ipv6 {
        v.push(format!("ifconfig-ipv6 {addr}/{bits} {remote}"));
    }
    if let Some((local, remote)) = p.ifconfig {
        v.push(format!("ifconfig {local} {remote}"));
    }
    if p.features.data_v2 {
        v.push(format!("peer-id {}", p.peer_id));
    }
    if let Some(tok) = p.auth_token {
        v.push(format!("auth-token {tok}"));
    }
    if let Some(c) = p.cipher {
        v.push(format!("cipher {}", c.name()));
    }
    let mut flags = String::new();
    if p.features.cc_exit {
        flags.push_str(" cc-exit");
        if p.features.tls_ekm {
            flags.push_str(" tls-ekm");
        }
    } else if p.features.tls_ekm {
        v.push("key-derivation tls-ekm".to_string());
    }
    if p.features.dyn_tls_crypt {
        flags.push_str(" dyn-tls-crypt");
    }
    if !flags.is_empty() {
        v.push(format!("protocol-flags{flags}"));
    }
    if p.client_iv_mtu.is_some() {
        v.push(format!("tun-mtu {}", p.tun_mtu));
    }
    v
}

fn with_optional_text(cmd: &str, text: Option<&str>) -> String {
    match text {
        Some(t) => format!("{cmd},{t}"),
        None => cmd.to_string(),
    }
}

/// `AUTH_FAILED` or `AUTH_FAILED,<reason>`, truncated like OpenVPN to fit a 1024-byte bundle.
pub fn auth_failed(reason: Option<&str>) -> Result<String, PushError> {
    let mut m = with_optional_text("AUTH_FAILED", reason);
    if m.len() > PUSH_BUNDLE_SIZE - 1 {
        let mut cut = PUSH_BUNDLE_SIZE - 1;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
    check_sendable(&m)?;
    Ok(m)
}

/// Flags of `AUTH_FAILED,TEMP[...]` (clients with IV_PROTO bit 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempFlag {
    /// `backoff <seconds>`: minimum delay before reconnecting.
    Backoff(u32),
    /// `advance no`.
    AdvanceNo,
    /// `advance addr`.
    AdvanceAddr,
    /// `advance remote`.
    AdvanceRemote,
}

/// `AUTH_FAILED,TEMP[<flags>]<message>` (flags block omitted if empty). The message is used verbatim,
/// conventionally starting with `: `.
pub fn auth_failed_temp(flags: &[TempFlag], message: &str) -> Result<String, PushError> {
    let mut m = String::from("AUTH_FAILED,TEMP");
    if !flags.is_empty() {
        let parts: Vec<String> = flags
            .iter()
            .map(|f| match f {
                TempFlag::Backoff(s) => format!("backoff {s}"),
                TempFlag::AdvanceNo => "advance no".to_string(),
                TempFlag::AdvanceAddr => "advance addr".to_string(),
                TempFlag::AdvanceRemote => "advance remote".to_string(),
            })
            .collect();
        m.push('[');
        m.push_str(&parts.join(","));
        m.push(']');
    }
    m.push_str(message);
    if m.len() > PUSH_BUNDLE_SIZE - 1 {
        return Err(PushError::MessageTooLong(m.len()));
    }
    check_sendable(&m)?;
    Ok(m)
}

/// `AUTH_PENDING` or, for clients with IV_PROTO bit 4, `AUTH_PENDING,timeout <s>`.
pub fn auth_pending(timeout_secs: u32, client_supports_keywords: bool) -> String {
    if client_supports_keywords {
        format!("AUTH_PENDING,timeout {timeout_secs}")
    } else {
        "AUTH_PENDING".to_string()
    }
}

/// The timeout OpenVPN announces with AUTH_PENDING: `min(requested, max(reneg_sec/2, hand_window) -
/// elapsed)` where `elapsed` is the key_state's age in seconds.
pub fn auth_pending_timeout(requested: u32, reneg_sec: u32, hand_window: u32, elapsed: u32) -> u32 {
    let max_timeout = (reneg_sec / 2).max(hand_window).saturating_sub(elapsed);
    requested.min(max_timeout)
}

/// `INFO_PRE,<extra>` (e.g. `OPEN_URL:https://…`, `CR_TEXT:<flags>:<challenge>`); limited to a
/// 1024-byte bundle like OpenVPN.
pub fn info_pre(extra: &str) -> Result<String, PushError> {
    let m = format!("INFO_PRE,{extra}");
    if m.len() + 1 > PUSH_BUNDLE_SIZE {
        return Err(PushError::MessageTooLong(m.len()));
    }
    check_sendable(&m)?;
    Ok(m)
}

/// `INFO,<text>`.
pub fn info(text: &str) -> Result<String, PushError> {
    let m = format!("INFO,{text}");
    check_sendable(&m)?;
    Ok(m)
}

/// Flags of RESTART/HALT (`[P]` keep credentials, `[N]` advance to the next remote).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalFlags {
    /// `P`: client keeps cached credentials.
    pub keep_credentials: bool,
    /// `N`: client advances to the next `--remote`.
    pub next_remote: bool,
}

fn signal_message(
    cmd: &str,
    flags: SignalFlags,
    message: Option<&str>,
) -> Result<String, PushError> {
    let mut text = String::new();
    if flags.keep_credentials || flags.next_remote {
        text.push('[');
        if flags.keep_credentials {
            text.push('P');
        }
        if flags.next_remote {
            text.push('N');
        }
        text.push(']');
    }
    if let Some(m) = message {
        text.push_str(m);
    }
    let m = if text.is_empty() {
        cmd.to_string()
    } else {
        format!("{cmd},{text}")
    };
    check_sendable(&m)?;
    Ok(m)
}

/// `RESTART[,[flags]message]`: the client reconnects.
pub fn restart(flags: SignalFlags, message: Option<&str>) -> Result<String, PushError> {
    signal_message("RESTART", flags, message)
}

/// `HALT[,[flags]message]`: the client exits.
pub fn halt(flags: SignalFlags, message: Option<&str>) -> Result<String, PushError> {
    signal_message("HALT", flags, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_logged_without_secrets() {
        assert_eq!(
            sanitize_control_message("PUSH_REPLY,route-gateway 10.8.0.1,ping 10"),
            "PUSH_REPLY,route-gateway 10.8.0.1,ping 10"
        );
        assert_eq!(
            sanitize_control_message("PUSH_REPLY,auth-token SESS_ID_AT_abc,ping 10,echo secret x"),
            "PUSH_REPLY,auth-token,ping 10,echo"
        );
        assert_eq!(sanitize_control_message("SESS_ID_xyz"), "SESS_ID");
    }

    fn params(features: ProtocolFeatures) -> ClientPushParams<'static> {
        ClientPushParams {
            ifconfig_ipv6: None,
            ifconfig: Some((Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 255, 255, 0))),
            peer_id: 0,
            auth_token: None,
            cipher: Some(Cipher::Aes256Gcm),
            features,
            tun_mtu: 1500,
            client_iv_mtu: Some(1600),
        }
    }

    #[test]
    fn reproduces_observed_subnet_reply() {
        let global = helper_pushes(&HelperPushConfig {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 0), Ipv4Addr::new(255, 255, 255, 0))),
            topology: Topology::Subnet,
            ipv6: false,
            client_to_client: false,
            keepalive: Some((10, 60)),
            tcp_nodelay: false,
        });
        let f = ProtocolFeatures::negotiate(IvProto(990), &ServerCapabilities::default());
        let per = per_client_options(&params(f));
        let msgs = build_push_reply(&global, &per).unwrap();
        assert_eq!(
            msgs,
            vec!["PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500"]
        );
        // 193 bytes plaintext including the NUL, as captured
        let mut wire = Vec::new();
        encode_message(&msgs[0], &mut wire).unwrap();
        assert_eq!(wire.len(), 193);
    }

    #[test]
    fn reproduces_observed_net30_ipv6_reply() {
        let global = helper_pushes(&HelperPushConfig {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 0), Ipv4Addr::new(255, 255, 255, 0))),
            topology: Topology::Net30,
            ipv6: true,
            client_to_client: false,
            keepalive: Some((10, 60)),
            tcp_nodelay: false,
        });
        let f = ProtocolFeatures::negotiate(IvProto(990), &ServerCapabilities::default());
        let mut p = params(f);
        p.ifconfig = Some((Ipv4Addr::new(10, 8, 0, 6), Ipv4Addr::new(10, 8, 0, 5)));
        p.ifconfig_ipv6 = Some((
            "fd00:1::1000".parse().unwrap(),
            64,
            "fd00:1::1".parse().unwrap(),
        ));
        let msgs = build_push_reply(&global, &per_client_options(&p)).unwrap();
        assert_eq!(
            msgs,
            vec!["PUSH_REPLY,tun-ipv6,route 10.8.0.1,topology net30,ping 10,ping-restart 60,ifconfig-ipv6 fd00:1::1000/64 fd00:1::1,ifconfig 10.8.0.6 10.8.0.5,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500"]
        );
    }

    #[test]
    fn feature_variants() {
        // EKM without cc-exit -> key-derivation tls-ekm, no protocol-flags
        let f = ProtocolFeatures::negotiate(
            IvProto(IvProto::DATA_V2 | IvProto::TLS_KEY_EXPORT),
            &ServerCapabilities::default(),
        );
        let mut p = params(f);
        p.client_iv_mtu = None;
        p.ifconfig = None;
        assert_eq!(
            per_client_options(&p),
            vec!["peer-id 0", "cipher AES-256-GCM", "key-derivation tls-ekm"]
        );
        // old client: no DATA_V2, no EKM, no cipher push
        let f = ProtocolFeatures::negotiate(IvProto(0), &ServerCapabilities::default());
        let mut p = params(f);
        p.cipher = None;
        p.client_iv_mtu = None;
        assert_eq!(
            per_client_options(&p),
            vec!["ifconfig 10.8.0.2 255.255.255.0"]
        );
        // dyn-tls-crypt disabled on the server
        let f = ProtocolFeatures::negotiate(
            IvProto(990),
            &ServerCapabilities {
                tls_ekm: true,
                dyn_tls_crypt: false,
            },
        );
        assert!(
            per_client_options(&params(f)).contains(&"protocol-flags cc-exit tls-ekm".to_string())
        );
        // auth-token position: after peer-id, before cipher
        let f = ProtocolFeatures::negotiate(IvProto(990), &ServerCapabilities::default());
        let mut p = params(f);
        p.auth_token = Some("SESS_ID_AT_abc");
        let v = per_client_options(&p);
        assert_eq!(
            v[1..3],
            [
                "peer-id 0".to_string(),
                "auth-token SESS_ID_AT_abc".to_string()
            ]
        );
    }

    #[test]
    fn empty_reply() {
        let none: [&str; 0] = [];
        assert_eq!(build_push_reply(&none, &none).unwrap(), vec!["PUSH_REPLY"]);
    }

    #[test]
    fn splits_long_replies_with_continuation() {
        let global: Vec<String> = (0..60)
            .map(|i| format!("route 10.{}.{}.0 255.255.255.0", i / 10, i))
            .collect();
        let per = vec!["peer-id 3".to_string()];
        let msgs = build_push_reply(&global, &per).unwrap();
        assert!(msgs.len() >= 2);
        for m in &msgs[..msgs.len() - 1] {
            assert!(m.starts_with("PUSH_REPLY,"));
            assert!(m.ends_with(",push-continuation 2"));
            assert!(m.len() < PUSH_BUNDLE_SIZE - PUSH_BUNDLE_RESERVE + 21);
        }
        let last = msgs.last().unwrap();
        assert!(last.ends_with(",peer-id 3,push-continuation 1"));
        // every option appears exactly once, in order
        let all: Vec<&str> = msgs
            .iter()
            .flat_map(|m| m.split(',').skip(1))
            .filter(|o| !o.starts_with("push-continuation"))
            .collect();
        let expected: Vec<&str> = global
            .iter()
            .chain(per.iter())
            .map(String::as_str)
            .collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn split_boundary_matches_openvpn_rule() {
        // "PUSH_REPLY" (10) + options: a split happens when len + l >= 940.
        let a = "x".repeat(255);
        let opts = vec![a.clone(), a.clone(), a.clone()];
        // after 3 options: 10 + 3*256 = 778; a 4th of 255: 778 + 255 = 1033 >= 940 -> split
        let mut four = opts.clone();
        four.push(a.clone());
        let none: [&str; 0] = [];
        let msgs = build_push_reply(&four, &none).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].len(), 778 + ",push-continuation 2".len());
        // a 4th option of 161 bytes: 778 + 161 = 939 < 940 -> no split
        let mut fits = opts.clone();
        fits.push("y".repeat(161));
        assert_eq!(build_push_reply(&fits, &none).unwrap().len(), 1);
        let mut splits = opts;
        splits.push("y".repeat(162));
        assert_eq!(build_push_reply(&splits, &none).unwrap().len(), 2);
    }

    #[test]
    fn rejects_bad_options() {
        let none: [&str; 0] = [];
        assert!(matches!(
            build_push_reply(&["route 1,2"], &none),
            Err(PushError::OptionComma(_))
        ));
        assert!(matches!(
            build_push_reply(&[""], &none),
            Err(PushError::OptionInvalid(_))
        ));
        assert!(matches!(
            build_push_reply(&["a\tb"], &none),
            Err(PushError::OptionInvalid(_))
        ));
        assert!(matches!(
            build_push_reply(&["z".repeat(256)], &none),
            Err(PushError::OptionTooLong(256))
        ));
    }

    #[test]
    fn message_extraction() {
        let buf = b"PUSH_REQUEST\0EXIT\r\n\0\0CR_RESPONSE,YWJj\0bad\x01x\0tail";
        let got: Vec<_> = extract_messages(buf).collect();
        assert_eq!(got[0], Ok("PUSH_REQUEST"));
        assert_eq!(got[1], Ok("EXIT"));
        assert_eq!(got[2], Ok("CR_RESPONSE,YWJj"));
        assert_eq!(got[3], Err(PushError::InvalidCharacter { byte: 1 }));
        assert_eq!(got[4], Err(PushError::Unterminated(4)));
        assert_eq!(got.len(), 5);
        assert_eq!(
            parse_client_message("PUSH_REQUEST"),
            ClientMessage::PushRequest
        );
        assert_eq!(parse_client_message("EXIT"), ClientMessage::Exit);
        assert_eq!(
            parse_client_message("CR_RESPONSE,YWJj"),
            ClientMessage::CrResponse("YWJj")
        );
        assert_eq!(
            parse_client_message("CR_RESPONSE"),
            ClientMessage::CrResponse("")
        );
        assert_eq!(
            parse_client_message("INFO,hi"),
            ClientMessage::Other("INFO,hi")
        );
        assert_eq!(extract_messages(b"X").count(), 0);
    }

    #[test]
    fn status_messages() {
        assert_eq!(auth_failed(None).unwrap(), "AUTH_FAILED");
        assert_eq!(
            auth_failed(Some(crate::proto::data::NEGOTIATION_FAILED_REASON)).unwrap(),
            "AUTH_FAILED,Data channel cipher negotiation failed (no shared cipher)"
        );
        assert_eq!(auth_failed(Some(&"r".repeat(2000))).unwrap().len(), 1023);
        assert!(auth_failed(Some("a\nb")).is_err());
        assert_eq!(
            auth_failed_temp(
                &[TempFlag::Backoff(30), TempFlag::AdvanceRemote],
                ": try later"
            )
            .unwrap(),
            "AUTH_FAILED,TEMP[backoff 30,advance remote]: try later"
        );
        assert_eq!(auth_pending(60, true), "AUTH_PENDING,timeout 60");
        assert_eq!(auth_pending(60, false), "AUTH_PENDING");
        assert_eq!(auth_pending_timeout(600, 3600, 60, 10), 600);
        assert_eq!(auth_pending_timeout(5000, 3600, 60, 10), 1790);
        assert_eq!(
            info_pre("OPEN_URL:https://x").unwrap(),
            "INFO_PRE,OPEN_URL:https://x"
        );
        assert!(info_pre(&"u".repeat(1020)).is_err());
        assert_eq!(info("hello").unwrap(), "INFO,hello");
        assert_eq!(restart(SignalFlags::default(), None).unwrap(), "RESTART");
        assert_eq!(
            restart(
                SignalFlags {
                    keep_credentials: true,
                    next_remote: true
                },
                Some("server shutdown")
            )
            .unwrap(),
            "RESTART,[PN]server shutdown"
        );
        assert_eq!(
            halt(SignalFlags::default(), Some("bye")).unwrap(),
            "HALT,bye"
        );
        assert_eq!(
            auth_token_refresh("tok").unwrap(),
            "PUSH_REPLY,auth-token tok"
        );
        let mut out = Vec::new();
        encode_message(EXIT, &mut out).unwrap();
        assert_eq!(out, b"EXIT\0");
        assert!(encode_message(&"a".repeat(3000), &mut out).is_err());
    }

    proptest::proptest! {
        #[test]
        fn extraction_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            for m in extract_messages(&bytes).flatten() {
                let _ = parse_client_message(m);
            }
        }

        #[test]
        fn split_preserves_options(opts in proptest::collection::vec("[a-z0-9 .]{1,255}", 0..40)) {
            let none: [&str; 0] = [];
            let msgs = build_push_reply(&opts, &none).unwrap();
            for m in &msgs {
                proptest::prop_assert!(m.len() < PUSH_BUNDLE_SIZE);
            }
            let all: Vec<&str> = msgs
                .iter()
                .flat_map(|m| m.split(',').skip(1))
                .filter(|o| !o.starts_with("push-continuation"))
                .collect();
            let expected: Vec<&str> = opts.iter().map(String::as_str).collect();
            proptest::prop_assert_eq!(all, expected);
        }
    }
}
