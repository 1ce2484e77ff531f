//! Client lifecycle messages between the worker and the parent.
//!
//! The worker never decides on its own who may connect when the configuration has hooks
//! (`auth-user-pass-verify`, `client-connect`, `client-config-dir`, `management-client-auth`,
//! `ifconfig-pool-persist`): after a client's TLS handshake and key-method-2 message, the worker
//! sends a [`ClientAuthRequest`] and parks the session; the parent runs the hooks (scripts as the
//! configured user, CCD files it reads itself, the management interface) and answers with an
//! [`AuthVerdict`]. The worker then assigns addresses (honouring [`ClientOverrides`]) and reports
//! [`ClientEvent::Established`]; when the session ends it reports [`ClientEvent::Disconnected`].
//!
//! Queries ([`WorkerQuery`]) are the parent asking the running engine for data or actions on
//! behalf of the management interface; each is answered by exactly one [`WorkerReply`] of the
//! matching kind.
//!
//! Invariants: every string a worker sends is checked for length and control characters before
//! the parent looks at it (a compromised worker must not be able to forge log lines or
//! management notifications); addresses a worker reports are checked by the parent against what
//! it granted (see `daemon`'s client registry).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::mgmt::{ClientEntry, RealAddr, RouteEntry, TransportProto};
use crate::validate::{check_len, check_text, ValidationError};

/// Longest common name / username accepted (OpenVPN: 64 for CN, 128 for usernames; with slack).
pub const MAX_NAME_LEN: usize = 256;
/// Longest password / auth token accepted.
pub const MAX_SECRET_LEN: usize = 4096;
/// Most peer-info lines / environment pairs accepted in one request.
pub const MAX_ENV_ENTRIES: usize = 256;
/// Longest peer-info line or environment value.
pub const MAX_ENV_LEN: usize = 1024;
/// Most pushed options / iroutes in one override set.
pub const MAX_OVERRIDE_ENTRIES: usize = 256;
/// Longest pushed option or reason text.
pub const MAX_OPTION_LEN: usize = 1024;
/// Most clients in one status reply.
pub const MAX_STATUS_CLIENTS: usize = 65_536;

/// A worker asking the parent to authorise a client (first authentication or renegotiation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAuthRequest {
    /// Client id (CID in the management interface).
    pub cid: u64,
    /// Key id of the TLS session being authorised (0..=7).
    pub kid: u32,
    /// `true` for a renegotiation of an established client (`>CLIENT:REAUTH`).
    pub reauth: bool,
    /// The verified certificate's name (`x509-username-field`), or the username with
    /// `username-as-common-name`; empty when the client sent no certificate
    /// (`verify-client-cert none|optional`).
    pub common_name: String,
    /// Username from the key-method-2 message, if any.
    pub username: Option<String>,
    /// Password from the key-method-2 message, if any (a secret: never logged).
    pub password: Option<String>,
    /// The client's link address.
    pub real_address: RealAddr,
    /// Peer-info lines as sent (`IV_VER=2.6.14`, `UV_X=y`, ...), in order.
    pub peer_info: Vec<String>,
    /// Certificate environment in OpenVPN's names and order (`tls_id_0`, `tls_serial_0`,
    /// `tls_serial_hex_0`, `tls_digest_0`, `tls_digest_sha256_0`, `X509_0_CN`, ... for each depth).
    pub cert_env: Vec<(String, String)>,
}

/// Per-client settings granted by the hooks (CCD file, client-connect output, `client-auth`
/// config lines, pool persistence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClientOverrides {
    /// `ifconfig-push LOCAL REMOTE|NETMASK`: the client's static IPv4 address and the second
    /// value (peer address for net30/p2p, netmask for subnet).
    pub ifconfig_push: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `ifconfig-ipv6-push ADDR/BITS`.
    pub ifconfig_ipv6_push: Option<(Ipv6Addr, u8)>,
    /// `iroute NETWORK NETMASK` as network and prefix length.
    pub iroutes: Vec<(Ipv4Addr, u8)>,
    /// `iroute-ipv6 NETWORK/BITS`.
    pub iroutes_v6: Vec<(Ipv6Addr, u8)>,
    /// `push-reset`: do not inherit the global push list.
    pub push_reset: bool,
    /// `push-remove OPTION`: drop inherited options starting with these words.
    pub push_remove: Vec<String>,
    /// `push "..."` options added for this client, in order.
    pub push: Vec<String>,
    /// Address this client had before (`ifconfig-pool-persist`); used when free in the pool.
    pub pool_hint: Option<Ipv4Addr>,
    /// IPv6 address this client had before.
    pub pool_hint_v6: Option<Ipv6Addr>,
}

/// The parent's decision about a [`ClientAuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthVerdict {
    /// Accept with these settings.
    Accept(Box<ClientOverrides>),
    /// Refuse: the worker sends `AUTH_FAILED[,client_reason]` and ends the session.
    Deny {
        /// Reason for the server log.
        reason: String,
        /// Reason sent to the client (`client-deny ... "client reason"`).
        client_reason: Option<String>,
    },
    /// Authentication continues out of band (`client-pending-auth`): the worker sends
    /// `AUTH_PENDING,timeout N` and `INFO_PRE,<extra>` and keeps waiting up to `timeout_secs`.
    Pending {
        /// `WEB_AUTH::url`, `CR_TEXT:...`, `OPEN_URL:...`.
        extra: String,
        /// Seconds the client may take.
        timeout_secs: u32,
    },
}

/// Client lifecycle events the worker reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientEvent {
    /// The client completed authentication, got its addresses and was sent its push reply.
    Established {
        /// Client id.
        cid: u64,
        /// Common name (as in [`ClientAuthRequest::common_name`]).
        common_name: String,
        /// Username, if any.
        username: Option<String>,
        /// Link address.
        real_address: RealAddr,
        /// Virtual IPv4 address.
        vaddr: Option<Ipv4Addr>,
        /// Virtual IPv6 address.
        vaddr6: Option<Ipv6Addr>,
        /// iroutes installed for this client.
        iroutes: Vec<(Ipv4Addr, u8)>,
        /// IPv6 iroutes installed for this client.
        iroutes_v6: Vec<(Ipv6Addr, u8)>,
        /// Data-channel peer id.
        peer_id: u32,
        /// Negotiated data cipher.
        cipher: String,
        /// Unix time the session was created.
        connected_since: i64,
        /// Peer-info lines as sent (for the `>CLIENT:ENV` of clients that were not deferred).
        peer_info: Vec<String>,
        /// Certificate environment, as [`ClientAuthRequest::cert_env`].
        cert_env: Vec<(String, String)>,
    },
    /// The session ended (any reason: exit notification, ping-restart, kill, replaced).
    Disconnected {
        /// Client id.
        cid: u64,
        /// Why, in OpenVPN's words where it has some.
        reason: String,
        /// Link bytes received from the client.
        bytes_received: u64,
        /// Link bytes sent to the client.
        bytes_sent: u64,
        /// Seconds the session lasted.
        duration_secs: u64,
    },
    /// An authenticated packet arrived from a new link address (`float`).
    Floated {
        /// Client id.
        cid: u64,
        /// The new address.
        real_address: RealAddr,
    },
    /// An established client announced its exit on the control channel (`EXIT`, 2.6's cc-exit):
    /// the management interface gets `>NOTIFY:info,remote-exit,EXIT` now; the client is removed
    /// five seconds later (`Disconnected` with `SIGTERM[soft,delayed-exit]`), as OpenVPN does.
    ExitAnnounced {
        /// Client id.
        cid: u64,
    },
    /// A client waiting for a `client-pending-auth` verdict answered its challenge
    /// (`CR_RESPONSE` control message) → `>CLIENT:CR_RESPONSE`.
    CrResponse {
        /// Client id.
        cid: u64,
        /// Key id of the TLS session being authorised.
        kid: u32,
        /// The response as the client sent it (base64 characters only, at most
        /// [`MAX_CR_RESPONSE_LEN`] bytes).
        response: String,
    },
}

/// Longest `CR_RESPONSE` text accepted from a client.
pub const MAX_CR_RESPONSE_LEN: usize = 1024;

/// Whether `s` is acceptable as a `CR_RESPONSE`: base64 characters only (it ends up on a
/// management line, so no separators or line breaks), at most [`MAX_CR_RESPONSE_LEN`] bytes.
pub fn valid_cr_response(s: &str) -> bool {
    s.len() <= MAX_CR_RESPONSE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// A query from the parent to the running worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerQuery {
    /// Every client and route with counters. → [`WorkerReply::Status`]
    Status,
    /// `(cid, bytes_in, bytes_out)` of established clients. → [`WorkerReply::ByteCounts`]
    ByteCounts,
    /// End every session with this common name. → [`WorkerReply::Count`]
    KillCommonName(String),
    /// End the session(s) at this link address. → [`WorkerReply::Count`]
    KillAddress {
        /// Protocol, when the command named one.
        proto: Option<TransportProto>,
        /// Address.
        ip: std::net::IpAddr,
        /// Port.
        port: u16,
    },
    /// Send a control message (`RESTART`, `HALT`, or a custom one) to a client and end its
    /// session shortly after. → [`WorkerReply::Done`]
    ClientKill {
        /// Client id.
        cid: u64,
        /// The control message.
        message: String,
    },
}

impl WorkerQuery {
    /// Short name for logs and audit.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerQuery::Status => "Status",
            WorkerQuery::ByteCounts => "ByteCounts",
            WorkerQuery::KillCommonName(_) => "KillCommonName",
            WorkerQuery::KillAddress { .. } => "KillAddress",
            WorkerQuery::ClientKill { .. } => "ClientKill",
        }
    }

    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            WorkerQuery::Status | WorkerQuery::ByteCounts | WorkerQuery::KillAddress { .. } => {
                Ok(())
            }
            WorkerQuery::KillCommonName(cn) => check_text("query.common_name", cn, MAX_NAME_LEN),
            WorkerQuery::ClientKill { message, .. } => {
                check_text("query.message", message, MAX_OPTION_LEN)
            }
        }
    }
}

/// The engine's counters since the worker started (metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EngineCounters {
    /// Packets dropped because they were malformed.
    pub malformed: u64,
    /// Control packets that failed authentication (tls-auth HMAC, tls-crypt tag, WKc).
    pub control_auth_failures: u64,
    /// Third packets of the UDP handshake with an invalid cookie.
    pub cookie_failures: u64,
    /// Stateless replies suppressed by the initial-packet rate limit.
    pub rate_limited: u64,
    /// Data packets from unknown peers.
    pub unknown_data: u64,
    /// Packets from the TUN with no route to a client.
    pub no_route: u64,
    /// Packets from a client with a source address it does not own.
    pub spoofed: u64,
    /// Handshakes started (sessions created).
    pub handshakes_started: u64,
    /// Clients that completed authentication.
    pub handshakes_completed: u64,
    /// Sessions that ended before authentication completed.
    pub handshakes_failed: u64,
    /// Data packets refused by a replay window.
    pub replay_drops: u64,
    /// Data packets that failed authentication or decryption.
    pub decrypt_failures: u64,
    /// Renegotiations started by either side.
    pub renegotiations: u64,
}

/// The engine's view for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WorkerStatus {
    /// The engine's counters.
    pub counters: EngineCounters,
    /// Client instances (established and connecting), oldest first.
    pub clients: Vec<ClientEntry>,
    /// Routing table.
    pub routes: Vec<RouteEntry>,
    /// Link bytes read since start (all clients, also dropped packets).
    pub link_bytes_in: u64,
    /// Link bytes written since start.
    pub link_bytes_out: u64,
}

/// A worker's answer to a [`WorkerQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerReply {
    /// Answer to [`WorkerQuery::Status`].
    Status(Box<WorkerStatus>),
    /// Answer to [`WorkerQuery::ByteCounts`].
    ByteCounts(Vec<(u64, u64, u64)>),
    /// Number of sessions affected.
    Count(u32),
    /// Whether the client existed.
    Done(bool),
}

impl WorkerReply {
    /// Whether this reply is the kind `query` expects.
    pub fn answers(&self, query: &WorkerQuery) -> bool {
        matches!(
            (query, self),
            (WorkerQuery::Status, WorkerReply::Status(_))
                | (WorkerQuery::ByteCounts, WorkerReply::ByteCounts(_))
                | (WorkerQuery::KillCommonName(_), WorkerReply::Count(_))
                | (WorkerQuery::KillAddress { .. }, WorkerReply::Count(_))
                | (WorkerQuery::ClientKill { .. }, WorkerReply::Done(_))
        )
    }

    /// Check sizes and characters (a reply comes from the less trusted side).
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            WorkerReply::Status(s) => {
                check_len("status.clients", s.clients.len(), 0, MAX_STATUS_CLIENTS)?;
                check_len("status.routes", s.routes.len(), 0, 4 * MAX_STATUS_CLIENTS)?;
                for c in &s.clients {
                    if let Some(cn) = &c.common_name {
                        check_text("status.common_name", cn, MAX_NAME_LEN)?;
                    }
                    if let Some(u) = &c.username {
                        check_text("status.username", u, MAX_NAME_LEN)?;
                    }
                    check_text("status.cipher", &c.data_cipher, 64)?;
                }
                for r in &s.routes {
                    if let Some(cn) = &r.common_name {
                        check_text("status.route.common_name", cn, MAX_NAME_LEN)?;
                    }
                }
                Ok(())
            }
            WorkerReply::ByteCounts(v) => check_len("bytecounts", v.len(), 0, MAX_STATUS_CLIENTS),
            WorkerReply::Count(_) | WorkerReply::Done(_) => Ok(()),
        }
    }
}

fn check_env_name(field: &'static str, name: &str) -> Result<(), ValidationError> {
    check_len(field, name.len(), 1, 64)?;
    if let Some((offset, c)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(ValidationError::Field {
            field,
            why: format!("character {c:?} at offset {offset} in a variable name"),
        });
    }
    Ok(())
}

impl ClientAuthRequest {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.kid > 7 {
            return Err(ValidationError::Field {
                field: "auth.kid",
                why: format!("{} is not a key id (0..=7)", self.kid),
            });
        }
        check_text("auth.common_name", &self.common_name, MAX_NAME_LEN)?;
        if let Some(u) = &self.username {
            check_text("auth.username", u, MAX_NAME_LEN)?;
        }
        if let Some(p) = &self.password {
            // Passwords may hold any printable byte; control characters would break the
            // via-file format and the management ENV block.
            check_text("auth.password", p, MAX_SECRET_LEN)?;
        }
        check_len("auth.peer_info", self.peer_info.len(), 0, MAX_ENV_ENTRIES)?;
        for l in &self.peer_info {
            check_text("auth.peer_info", l, MAX_ENV_LEN)?;
            match l.split_once('=') {
                Some((name, _)) => check_env_name("auth.peer_info", name)?,
                None => {
                    return Err(ValidationError::Field {
                        field: "auth.peer_info",
                        why: "line without '='".into(),
                    })
                }
            }
        }
        check_len("auth.cert_env", self.cert_env.len(), 0, MAX_ENV_ENTRIES)?;
        for (k, v) in &self.cert_env {
            check_env_name("auth.cert_env", k)?;
            check_text("auth.cert_env", v, MAX_ENV_LEN)?;
        }
        Ok(())
    }
}

impl ClientOverrides {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_len(
            "overrides.iroutes",
            self.iroutes.len(),
            0,
            MAX_OVERRIDE_ENTRIES,
        )?;
        check_len(
            "overrides.iroutes_v6",
            self.iroutes_v6.len(),
            0,
            MAX_OVERRIDE_ENTRIES,
        )?;
        if self.iroutes.iter().any(|(_, b)| *b > 32)
            || self.iroutes_v6.iter().any(|(_, b)| *b > 128)
            || self.ifconfig_ipv6_push.is_some_and(|(_, b)| b > 128)
        {
            return Err(ValidationError::Field {
                field: "overrides",
                why: "prefix length out of range".into(),
            });
        }
        check_len("overrides.push", self.push.len(), 0, MAX_OVERRIDE_ENTRIES)?;
        check_len(
            "overrides.push_remove",
            self.push_remove.len(),
            0,
            MAX_OVERRIDE_ENTRIES,
        )?;
        for p in self.push.iter().chain(&self.push_remove) {
            check_text("overrides.push", p, MAX_OPTION_LEN)?;
            if p.contains(',') {
                return Err(ValidationError::Field {
                    field: "overrides.push",
                    why: format!("pushed option {p:?} contains a comma"),
                });
            }
        }
        Ok(())
    }
}

impl AuthVerdict {
    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            AuthVerdict::Accept(o) => o.validate(),
            AuthVerdict::Deny {
                reason,
                client_reason,
            } => {
                check_text("verdict.reason", reason, MAX_OPTION_LEN)?;
                if let Some(c) = client_reason {
                    check_text("verdict.client_reason", c, MAX_OPTION_LEN)?;
                }
                Ok(())
            }
            AuthVerdict::Pending { extra, .. } => {
                check_text("verdict.extra", extra, MAX_OPTION_LEN)
            }
        }
    }
}

impl ClientEvent {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::Established { .. } => "Established",
            ClientEvent::Disconnected { .. } => "Disconnected",
            ClientEvent::Floated { .. } => "Floated",
            ClientEvent::CrResponse { .. } => "CrResponse",
            ClientEvent::ExitAnnounced { .. } => "ExitAnnounced",
        }
    }

    /// The client id the event is about.
    pub fn cid(&self) -> u64 {
        match self {
            ClientEvent::Established { cid, .. }
            | ClientEvent::Disconnected { cid, .. }
            | ClientEvent::Floated { cid, .. }
            | ClientEvent::CrResponse { cid, .. }
            | ClientEvent::ExitAnnounced { cid } => *cid,
        }
    }

    /// Check sizes and characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ClientEvent::Established {
                common_name,
                username,
                iroutes,
                iroutes_v6,
                cipher,
                ..
            } => {
                check_text("event.common_name", common_name, MAX_NAME_LEN)?;
                if let Some(u) = username {
                    check_text("event.username", u, MAX_NAME_LEN)?;
                }
                check_len("event.iroutes", iroutes.len(), 0, MAX_OVERRIDE_ENTRIES)?;
                check_len(
                    "event.iroutes_v6",
                    iroutes_v6.len(),
                    0,
                    MAX_OVERRIDE_ENTRIES,
                )?;
                check_text("event.cipher", cipher, 64)
            }
            ClientEvent::Disconnected { reason, .. } => {
                check_text("event.reason", reason, MAX_OPTION_LEN)
            }
            ClientEvent::Floated { .. } | ClientEvent::ExitAnnounced { .. } => Ok(()),
            ClientEvent::CrResponse { response, .. } => {
                if valid_cr_response(response) {
                    Ok(())
                } else {
                    Err(ValidationError::Field {
                        field: "event.response",
                        why: "not base64 text of at most 1024 bytes".into(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req() -> ClientAuthRequest {
        ClientAuthRequest {
            cid: 1,
            kid: 0,
            reauth: false,
            common_name: "client1".into(),
            username: Some("alice".into()),
            password: Some("s3cret".into()),
            real_address: RealAddr {
                proto: TransportProto::Udp,
                addr: "192.0.2.1:1194".parse().unwrap(),
            },
            peer_info: vec!["IV_VER=2.6.14".into(), "IV_PROTO=990".into()],
            cert_env: vec![("X509_0_CN".into(), "client1".into())],
        }
    }

    #[test]
    fn auth_request_checks() {
        assert!(req().validate().is_ok());
        let mut r = req();
        r.common_name = "evil\nMULTI: forged".into();
        assert!(r.validate().is_err());
        let mut r = req();
        r.kid = 8;
        assert!(r.validate().is_err());
        let mut r = req();
        r.peer_info.push("NOEQUALS".into());
        assert!(r.validate().is_err());
        let mut r = req();
        r.cert_env.push(("BAD NAME".into(), "x".into()));
        assert!(r.validate().is_err());
    }

    #[test]
    fn overrides_and_replies() {
        let mut o = ClientOverrides::default();
        assert!(o.validate().is_ok());
        o.push.push("route 10.1.0.0 255.255.0.0,evil".into());
        assert!(o.validate().is_err());
        let mut o = ClientOverrides::default();
        o.iroutes.push((Ipv4Addr::new(10, 1, 0, 0), 33));
        assert!(o.validate().is_err());
        assert!(WorkerReply::Count(1).answers(&WorkerQuery::KillCommonName("x".into())));
        assert!(!WorkerReply::Done(true).answers(&WorkerQuery::Status));
        assert!(WorkerQuery::ClientKill {
            cid: 1,
            message: "HALT\n".into()
        }
        .validate()
        .is_err());
    }
}
