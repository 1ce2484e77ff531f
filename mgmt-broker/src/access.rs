//! Access control, redaction and audit — Bulwark's additions to the OpenVPN management model.
//!
//! # Model
//! * Many management clients may be connected at once (cap: [`crate::session::Limits::max_clients`]);
//!   each is an independent session with its own real-time flags, exactly like a fresh OpenVPN
//!   connection.
//! * Every connection gets one [`Role`] when it is admitted ([`admit`]):
//!   - `monitor`: read-only — `help`, `version`, `pid`, `load-stats`, `nclients`, `status`,
//!     `state`, `log`, `echo`, `bytecount`, `exit`/`quit`, and the query forms (no argument) of
//!     `hold`, `verb`, `mute`, `auth-retry`;
//!   - `operator`: monitor + `kill`, `client-kill`, `hold release`, `signal SIGUSR2`;
//!   - `auth`: operator + the client-auth family (`client-auth`, `client-auth-nt`,
//!     `client-deny`, `client-pending-auth`); the **only** role that sees secrets (passwords,
//!     auth tokens, session ids) in `>CLIENT:ENV` blocks;
//!   - `admin`: everything (other signals, `verb N`, `mute N`, `hold on|off`, `env-filter`,
//!     `auth-retry X`, `forget-passwords`, `version N`, `test`, client-mode commands); secrets
//!     are still redacted for admin.
//!
//!   Unknown commands need only `monitor`, so they get OpenVPN's unknown-command error.
//! * The role comes from the listener's [`ListenerPolicy`]: a per-uid or per-gid mapping for
//!   unix peers (the peer's uid/gid from `SO_PEERCRED`), else the listener's default role. A
//!   listener declared `read_only` makes every connection `monitor`. OpenVPN's
//!   `--management-client-user/-group` checks are kept ([`ListenerPolicy::required_uid`] /
//!   `required_gid`): a mismatch closes the connection without sending a byte.
//! * A denied command gets one line `ERROR: permission denied: ...` and executes nothing.
//! * Redaction: `>CLIENT:ENV` variables for which [`is_secret_env`] holds are omitted for every
//!   role but `auth`. `>CLIENT:CONNECT`/`REAUTH`/`CR_RESPONSE` blocks (which ask for an answer)
//!   are only delivered to roles that may answer them (`auth`, `admin`).
//! * Audit: every command line produces one [`AuditRecord`] (peer identity, role, the command
//!   with secrets redacted by [`redact_command`], outcome) that the integrator ships to the parent.

use thiserror::Error;

/// Errors of this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AccessError {
    /// Unknown role name in configuration.
    #[error("unknown management role {0:?} (expected monitor, operator, auth or admin)")]
    UnknownRole(String),
    /// Connection rejected by the peer-credential check; the text is OpenVPN's log message.
    #[error("{0}")]
    Rejected(String),
}

pub use bulwark_ipc::msg::mgmt::{
    AuditOutcome, AuditRecord, ListenerKind, ListenerPolicy, Peer, Role,
};

/// Parse a role name as the configuration spells it.
pub fn parse_role(s: &str) -> Result<Role, AccessError> {
    Role::from_name(s).ok_or_else(|| AccessError::UnknownRole(s.to_string()))
}

const REJECT_PREFIX: &str = "MANAGEMENT: unix domain socket client connection rejected --";

/// Decide whether a peer is admitted, and with which role.
pub fn admit(policy: &ListenerPolicy, peer: &Peer) -> Result<Role, AccessError> {
    if let ListenerKind::Unix(_) = policy.kind {
        if policy.required_uid.is_some() || policy.required_gid.is_some() {
            match peer {
                Peer::Unix { uid, gid, .. } => {
                    if let Some(want) = policy.required_uid {
                        if want != *uid {
                            return Err(AccessError::Rejected(format!("{REJECT_PREFIX} UID of socket peer ({uid}) doesn't match required value ({want}) as given by --management-client-user")));
                        }
                    }
                    if let Some(want) = policy.required_gid {
                        if want != *gid {
                            return Err(AccessError::Rejected(format!("{REJECT_PREFIX} GID of socket peer ({gid}) doesn't match required value ({want}) as given by --management-client-group")));
                        }
                    }
                }
                _ => {
                    return Err(AccessError::Rejected(format!(
                        "{REJECT_PREFIX} cannot get UID/GID of socket peer"
                    )))
                }
            }
        }
    }
    if policy.read_only {
        return Ok(Role::Monitor);
    }
    if let Peer::Unix { uid, gid, .. } = peer {
        if let Some((_, r)) = policy.uid_roles.iter().find(|(u, _)| u == uid) {
            return Ok(*r);
        }
        if let Some((_, r)) = policy.gid_roles.iter().find(|(g, _)| g == gid) {
            return Ok(*r);
        }
    }
    Ok(policy.default_role)
}

/// The listener policy as it applies to one unix peer whose primary gid is `primary` and whose
/// supplementary groups (`SO_PEERGROUPS`) are `supplementary`.
///
/// [`admit`] compares group rules with the peer's primary gid only; this function rewrites the
/// group parts of the policy so that [`admit`] on the result matches primary **and**
/// supplementary groups:
/// * `required_gid` (`--management-client-group`) is satisfied when the group is the primary
///   gid or any supplementary group (it is then replaced by `primary`);
/// * `gid_roles` keeps, in their configured order, only the rules whose gid is one of the
///   peer's groups, each rewritten to `primary` — so the first configured matching rule wins,
///   exactly as with primary-gid matching.
///
/// Everything else (uid rules, default role, `read_only`, `required_uid`) is unchanged.
pub fn for_peer_groups(
    policy: &ListenerPolicy,
    primary: u32,
    supplementary: &[u32],
) -> ListenerPolicy {
    let member = |g: u32| g == primary || supplementary.contains(&g);
    let mut p = policy.clone();
    if let Some(want) = p.required_gid {
        if member(want) {
            p.required_gid = Some(primary);
        }
    }
    p.gid_roles = policy
        .gid_roles
        .iter()
        .filter(|(g, _)| member(*g))
        .map(|(_, r)| (primary, *r))
        .collect();
    p
}

/// The role a command line (already tokenised) requires.
pub fn required_role(p: &[String]) -> Role {
    let arg = |i: usize| p.get(i).map(String::as_str);
    match arg(0).unwrap_or("") {
        "help" | "pid" | "load-stats" | "nclients" | "status" | "state" | "log" | "echo"
        | "bytecount" | "exit" | "quit" => Role::Monitor,
        "version" | "verb" | "mute" | "auth-retry" => {
            if arg(1).is_none() {
                Role::Monitor
            } else {
                Role::Admin
            }
        }
        "hold" => match arg(1) {
            None => Role::Monitor,
            Some("release") => Role::Operator,
            Some(_) => Role::Admin,
        },
        "kill" | "client-kill" => Role::Operator,
        "signal" => match arg(1) {
            None | Some("SIGUSR2") => Role::Operator,
            Some(_) => Role::Admin,
        },
        "client-auth" | "client-auth-nt" | "client-deny" | "client-pending-auth" => Role::Auth,
        "env-filter" | "forget-passwords" | "test" | "username" | "password" | "needok"
        | "needstr" | "cr-response" | "net" | "rsa-sig" | "pk-sig" | "certificate"
        | "pkcs11-id-count" | "pkcs11-id-get" | "remote-entry-count" | "remote-entry-get"
        | "proxy" | "remote" => Role::Admin,
        _ => Role::Monitor,
    }
}

/// Whether an environment variable name holds a secret.
pub fn is_secret_env(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("auth_token") || n == "session_id"
}

/// The command text recorded in audit records and logs, with secrets redacted.
///
/// `password <type> <secret>` → `password <type> [redacted]`, `cr-response <b64>` →
/// `cr-response [redacted]`; everything else is kept. A single element holding a raw,
/// untokenised line (what the session records for a line the lexer rejected) is redacted by
/// its first word: `password ...` / `cr-response ...` keep only that word plus `[redacted]`.
pub fn redact_command(p: &[String]) -> String {
    if let [raw] = p {
        let mut words = raw.split_whitespace();
        let first = words
            .next()
            .unwrap_or("")
            .trim_matches(|c| c == '"' || c == '\'');
        if (first == "password" || first == "cr-response") && words.next().is_some() {
            return format!("{first} [redacted]");
        }
    }
    match p.first().map(String::as_str) {
        Some("password") if p.len() > 2 => format!("password {} [redacted]", p[1]),
        Some("cr-response") if p.len() > 1 => "cr-response [redacted]".to_string(),
        _ => p.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn role_classes() {
        for c in [
            "status 3",
            "state",
            "log all",
            "echo on",
            "bytecount 1",
            "load-stats",
            "version",
            "pid",
            "help",
            "hold",
            "verb",
            "mute",
            "quit",
            "foobar",
        ] {
            assert_eq!(required_role(&toks(c)), Role::Monitor, "{c}");
        }
        for c in [
            "kill client1",
            "client-kill 3",
            "hold release",
            "signal SIGUSR2",
            "signal",
        ] {
            assert_eq!(required_role(&toks(c)), Role::Operator, "{c}");
        }
        for c in [
            "client-auth 1 2",
            "client-auth-nt 1 2",
            "client-deny 1 2 x",
            "client-pending-auth 1 2 x 3",
        ] {
            assert_eq!(required_role(&toks(c)), Role::Auth, "{c}");
        }
        for c in [
            "signal SIGTERM",
            "signal SIGHUP",
            "verb 4",
            "mute 2",
            "hold on",
            "env-filter 1",
            "auth-retry none",
            "version 3",
            "test 5",
            "forget-passwords",
        ] {
            assert_eq!(required_role(&toks(c)), Role::Admin, "{c}");
        }
        assert!(Role::Admin.allows(Role::Auth));
        assert!(!Role::Monitor.allows(Role::Operator));
        assert!(Role::Auth.sees_secrets());
        assert!(!Role::Admin.sees_secrets());
        assert!(!Role::Operator.receives_auth_requests());
        assert_eq!(parse_role("auth"), Ok(Role::Auth));
        assert!(parse_role("root").is_err());
    }

    #[test]
    fn supplementary_groups() {
        let mut p = ListenerPolicy::openvpn_compatible(ListenerKind::Unix("/s".into()), None);
        p.default_role = Role::Monitor;
        p.gid_roles = vec![(500, Role::Operator), (600, Role::Auth), (100, Role::Admin)];
        let peer = Peer::Unix {
            uid: 1000,
            gid: 100,
            pid: None,
        };
        // Primary gid only: the 100 rule.
        assert_eq!(
            admit(&for_peer_groups(&p, 100, &[]), &peer),
            Ok(Role::Admin)
        );
        // Supplementary 600: first matching configured rule wins (600 before 100).
        assert_eq!(
            admit(&for_peer_groups(&p, 100, &[600, 7]), &peer),
            Ok(Role::Auth)
        );
        assert_eq!(
            admit(&for_peer_groups(&p, 100, &[600, 500]), &peer),
            Ok(Role::Operator)
        );
        // No group rule matches: default role.
        let other = Peer::Unix {
            uid: 1000,
            gid: 4,
            pid: None,
        };
        assert_eq!(
            admit(&for_peer_groups(&p, 4, &[5]), &other),
            Ok(Role::Monitor)
        );
        // uid rules still come first.
        p.uid_roles = vec![(1000, Role::Monitor)];
        assert_eq!(
            admit(&for_peer_groups(&p, 100, &[600]), &peer),
            Ok(Role::Monitor)
        );
        // management-client-group satisfied by a supplementary group, not by an unrelated one.
        p.required_gid = Some(600);
        assert!(admit(&for_peer_groups(&p, 100, &[600]), &peer).is_ok());
        assert!(matches!(
            admit(&for_peer_groups(&p, 100, &[7]), &peer),
            Err(AccessError::Rejected(m)) if m.contains("GID of socket peer (100)")
        ));
        // read_only wins over every mapping.
        p.read_only = true;
        p.uid_roles.clear();
        assert_eq!(
            admit(&for_peer_groups(&p, 100, &[600]), &peer),
            Ok(Role::Monitor)
        );
    }

    #[test]
    fn admission() {
        let mut p = ListenerPolicy::openvpn_compatible(ListenerKind::Unix("/s".into()), None);
        let peer = Peer::Unix {
            uid: 0,
            gid: 0,
            pid: Some(1),
        };
        assert_eq!(admit(&p, &peer), Ok(Role::Admin));
        p.required_uid = Some(65534);
        assert_eq!(
            admit(&p, &peer),
            Err(AccessError::Rejected("MANAGEMENT: unix domain socket client connection rejected -- UID of socket peer (0) doesn't match required value (65534) as given by --management-client-user".into()))
        );
        p.required_uid = None;
        p.required_gid = Some(1);
        let g = Peer::Unix {
            uid: 65534,
            gid: 65534,
            pid: None,
        };
        assert!(
            matches!(admit(&p, &g), Err(AccessError::Rejected(m)) if m.contains("GID of socket peer (65534) doesn't match required value (1)"))
        );
        assert!(
            matches!(admit(&p, &Peer::UnixUnknown), Err(AccessError::Rejected(m)) if m.ends_with("cannot get UID/GID of socket peer"))
        );
        p.required_gid = None;
        p.uid_roles = vec![(1000, Role::Operator)];
        p.gid_roles = vec![(50, Role::Auth)];
        p.default_role = Role::Monitor;
        assert_eq!(
            admit(
                &p,
                &Peer::Unix {
                    uid: 1000,
                    gid: 50,
                    pid: None
                }
            ),
            Ok(Role::Operator)
        );
        assert_eq!(
            admit(
                &p,
                &Peer::Unix {
                    uid: 1001,
                    gid: 50,
                    pid: None
                }
            ),
            Ok(Role::Auth)
        );
        assert_eq!(
            admit(
                &p,
                &Peer::Unix {
                    uid: 1001,
                    gid: 51,
                    pid: None
                }
            ),
            Ok(Role::Monitor)
        );
        p.read_only = true;
        assert_eq!(
            admit(
                &p,
                &Peer::Unix {
                    uid: 1000,
                    gid: 50,
                    pid: None
                }
            ),
            Ok(Role::Monitor)
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_command(&toks("password Auth hunter2")),
            "password Auth [redacted]"
        );
        assert_eq!(
            redact_command(&toks("cr-response SGFsbG8=")),
            "cr-response [redacted]"
        );
        assert_eq!(redact_command(&toks("kill client1")), "kill client1");
        // Raw lines the lexer rejected (one element): never the secret.
        for raw in [
            "password Auth \"hunter2",
            "\"password\" Auth 'hunter2",
            "  cr-response \"SGFsbG8=",
        ] {
            let r = redact_command(&[raw.to_string()]);
            assert!(!r.contains("hunter2") && !r.contains("SGFsbG8"), "{r}");
            assert!(r.ends_with("[redacted]"), "{r}");
        }
        assert_eq!(redact_command(&["kill \"a".to_string()]), "kill \"a");
        assert!(is_secret_env("password"));
        assert!(is_secret_env("auth_token"));
        assert!(is_secret_env("session_id"));
        assert!(!is_secret_env("username"));
        assert!(!is_secret_env("common_name"));
    }
}
