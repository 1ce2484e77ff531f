//! What the parent resolves for the management broker before starting it: each listener's access
//! policy (password from the `pw-file`, `management-client-user`/`-group` resolved to ids) and
//! the broker's settings (log cache, status-version, status files).
//!
//! Everything that needs the filesystem or the user database happens here, in the parent; the
//! broker receives numbers and strings only.

use std::path::{Path, PathBuf};

use bulwark_config::{Config, RoleSubject};
use bulwark_ipc::msg::mgmt::{ListenerKind, ListenerPolicy, Role};
use bulwark_ipc::msg::{MgmtSettings, StatusFileSpec, StatusFormat};
use nix::unistd::{Group, User};

use crate::settings::Management;

/// Errors of resolving the management settings.
#[derive(Debug, thiserror::Error)]
pub enum MgmtSetupError {
    /// The password file could not be read.
    #[error("cannot read management password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The password file is empty or its first line is not usable.
    #[error("management password file {0}: the first line must hold the password")]
    PasswordEmpty(PathBuf),
    /// `stdin` as password file cannot work for a daemon whose stdin is not a terminal.
    #[error("management password from stdin is not supported; put the password in a file")]
    PasswordStdin,
    /// A user or group does not exist.
    #[error("{directive}: no such {what} '{name}'")]
    NoSuchId {
        /// The directive.
        directive: &'static str,
        /// user or group.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A role name the configuration parser should have rejected.
    #[error("{directive}: unknown management role '{name}'")]
    UnknownRole {
        /// The directive.
        directive: &'static str,
        /// The name.
        name: String,
    },
    /// The user database could not be read.
    #[error("{directive}: cannot look up '{name}': {source}")]
    Lookup {
        /// The directive.
        directive: &'static str,
        /// The name.
        name: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
}

/// A status file the parent writes (the broker renders it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTarget {
    /// Where.
    pub path: PathBuf,
    /// Format.
    pub format: StatusFormat,
    /// Rewrite interval in seconds.
    pub interval_secs: u32,
    /// File permissions (`status-file-mode`, default 0644).
    pub mode: u32,
    /// Group owner (`status-file-group`).
    pub gid: Option<u32>,
}

/// The first line of a password file (OpenVPN reads the first line; trailing CR/LF removed).
pub fn read_password_file(path: &Path) -> Result<String, MgmtSetupError> {
    if path == Path::new("stdin") {
        return Err(MgmtSetupError::PasswordStdin);
    }
    let text = std::fs::read_to_string(path).map_err(|source| MgmtSetupError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first.is_empty() {
        return Err(MgmtSetupError::PasswordEmpty(path.to_owned()));
    }
    Ok(first.to_string())
}

fn uid_of(directive: &'static str, name: &str) -> Result<u32, MgmtSetupError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(MgmtSetupError::NoSuchId {
            directive,
            what: "user",
            name: name.to_string(),
        }),
        Err(source) => Err(MgmtSetupError::Lookup {
            directive,
            name: name.to_string(),
            source,
        }),
    }
}

/// The gid of a group named in `directive` (a name or a number).
pub fn gid_of(directive: &'static str, name: &str) -> Result<u32, MgmtSetupError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(MgmtSetupError::NoSuchId {
            directive,
            what: "group",
            name: name.to_string(),
        }),
        Err(source) => Err(MgmtSetupError::Lookup {
            directive,
            name: name.to_string(),
            source,
        }),
    }
}

fn role_of(directive: &'static str, name: &str) -> Result<Role, MgmtSetupError> {
    Role::from_name(name).ok_or_else(|| MgmtSetupError::UnknownRole {
        directive,
        name: name.to_string(),
    })
}

/// The read-only listener of `management-monitor-socket PATH`, if configured. The parent binds
/// it like the `management` listener and gets its policy from [`listener_policy`] (which makes
/// it read-only: every connection is `monitor`).
pub fn monitor_listener(cfg: &Config) -> Option<Management> {
    cfg.management_access
        .monitor_socket
        .as_ref()
        .map(|p| Management::Unix(p.clone()))
}

/// The access policy of the listener for `spec`, from the configuration's management options.
///
/// For the `management-monitor-socket` listener (see [`monitor_listener`]) the policy is
/// read-only, keeps the pw-file, and has neither role rules nor the client-user/-group checks.
pub fn listener_policy(cfg: &Config, spec: &Management) -> Result<ListenerPolicy, MgmtSetupError> {
    let m = cfg.management.as_ref();
    if monitor_listener(cfg).as_ref() == Some(spec) {
        let password = match m.and_then(|m| m.password_file.as_deref()) {
            Some(p) => Some(read_password_file(p)?),
            None => None,
        };
        let kind = match spec {
            Management::Unix(p) => ListenerKind::Unix(p.display().to_string()),
            Management::Tcp(..) => ListenerKind::Tcp,
        };
        let mut policy = ListenerPolicy::openvpn_compatible(kind, password);
        // INVARIANT: every connection on the monitor socket is `monitor`, whatever its peer.
        policy.read_only = true;
        policy.default_role = Role::Monitor;
        return Ok(policy);
    }
    let kind = match spec {
        Management::Unix(p) => ListenerKind::Unix(p.display().to_string()),
        Management::Tcp(..) => ListenerKind::Tcp,
    };
    let password = match m.and_then(|m| m.password_file.as_deref()) {
        Some(p) => Some(read_password_file(p)?),
        None => None,
    };
    let is_unix = matches!(kind, ListenerKind::Unix(_));
    let mut policy = ListenerPolicy::openvpn_compatible(kind, password);
    let access = &cfg.management_access;
    if let Some(name) = &access.default_role {
        policy.default_role = role_of("management-default-role", name)?;
    }
    // Role mappings need peer credentials, which only unix sockets have; a TCP listener
    // always uses the default role.
    if is_unix {
        for rule in &access.client_roles {
            let role = role_of("management-client-role", &rule.role)?;
            match &rule.subject {
                RoleSubject::User(u) => policy
                    .uid_roles
                    .push((uid_of("management-client-role", u)?, role)),
                RoleSubject::Group(g) => policy
                    .gid_roles
                    .push((gid_of("management-client-role", g)?, role)),
            }
        }
    }
    if let Some(m) = m {
        if let Some(u) = &m.client_user {
            policy.required_uid = Some(uid_of("management-client-user", u)?);
        }
        if let Some(g) = &m.client_group {
            policy.required_gid = Some(gid_of("management-client-group", g)?);
        }
    }
    Ok(policy)
}

/// The broker's settings and the status files the parent writes, in the same order.
pub fn settings(cfg: &Config) -> Result<(MgmtSettings, Vec<StatusTarget>), MgmtSetupError> {
    let mut targets = Vec::new();
    let mode = cfg.status_file_mode.unwrap_or(0o644);
    let gid = match &cfg.status_file_group {
        Some(g) => Some(gid_of("status-file-group", g)?),
        None => None,
    };
    if let Some(s) = &cfg.status {
        let format = match cfg.status_version {
            2 => StatusFormat::V2,
            3 => StatusFormat::V3,
            _ => StatusFormat::V1,
        };
        targets.push(StatusTarget {
            path: s.path.clone(),
            format,
            interval_secs: s.interval.max(1),
            mode,
            gid,
        });
    }
    if let Some(s) = &cfg.status_json {
        targets.push(StatusTarget {
            path: s.path.clone(),
            format: StatusFormat::Json,
            interval_secs: s.interval.max(1),
            mode,
            gid,
        });
    }
    let settings = MgmtSettings {
        log_cache: cfg
            .management
            .as_ref()
            .and_then(|m| m.log_cache)
            .unwrap_or(250)
            .clamp(1, 1_000_000),
        status_version: cfg.status_version.clamp(1, 3),
        max_sessions: cfg
            .management_access
            .max_clients
            .unwrap_or(16)
            .clamp(1, 1024),
        status_files: targets
            .iter()
            .map(|t| StatusFileSpec {
                format: t.format,
                interval_secs: t.interval_secs,
            })
            .collect(),
        metrics: cfg
            .metrics
            .as_ref()
            .map(|_| bulwark_ipc::msg::broker::MetricsSettings {
                // kumina's openvpn_exporter labels every series with the status file it read
                status_path: cfg
                    .status
                    .as_ref()
                    .map(|s| s.path.display().to_string())
                    .unwrap_or_default(),
                per_client: cfg.metrics_per_client,
            }),
    };
    Ok((settings, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_first_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, "s3cret\r\nsecond\n").unwrap();
        assert_eq!(read_password_file(&p).unwrap(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            read_password_file(&p),
            Err(MgmtSetupError::PasswordEmpty(_))
        ));
        assert!(matches!(
            read_password_file(Path::new("stdin")),
            Err(MgmtSetupError::PasswordStdin)
        ));
        assert!(read_password_file(&d.path().join("missing")).is_err());
    }

    fn load(extra: &str) -> Config {
        let text =
            format!("dev tun\nserver 10.8.0.0 255.255.255.0\nca /ca\ncert /c\nkey /k\n{extra}");
        bulwark_config::load_str("t", &text, "/").unwrap().config
    }

    #[test]
    fn role_mappings_and_defaults() {
        let unix = Management::Unix(PathBuf::from("/run/m.sock"));
        let c = load("management /run/m.sock unix\n");
        let p = listener_policy(&c, &unix).unwrap();
        assert_eq!(p.default_role, Role::Admin);
        assert!(p.uid_roles.is_empty() && p.gid_roles.is_empty() && !p.read_only);
        assert_eq!(settings(&c).unwrap().0.max_sessions, 16);

        let c = load(
            "management /run/m.sock unix\nmanagement-client-role operator user root\n\
             management-client-role auth group 123\nmanagement-client-role monitor user 77\n\
             management-default-role monitor\nmanagement-max-clients 3\n",
        );
        let p = listener_policy(&c, &unix).unwrap();
        assert_eq!(p.default_role, Role::Monitor);
        assert_eq!(p.uid_roles, vec![(0, Role::Operator), (77, Role::Monitor)]);
        assert_eq!(p.gid_roles, vec![(123, Role::Auth)]);
        assert_eq!(settings(&c).unwrap().0.max_sessions, 3);

        // TCP: no credentials, so only the default role applies.
        let tcp = Management::Tcp("127.0.0.1".parse().unwrap(), 7505);
        let p = listener_policy(&c, &tcp).unwrap();
        assert!(p.uid_roles.is_empty() && p.gid_roles.is_empty());
        assert_eq!(p.default_role, Role::Monitor);

        let c = load(
            "management /run/m.sock unix\nmanagement-client-role admin user no-such-user-bulwark\n",
        );
        assert!(matches!(
            listener_policy(&c, &unix),
            Err(MgmtSetupError::NoSuchId { what: "user", .. })
        ));
    }

    #[test]
    fn monitor_socket_is_read_only() {
        let c = load("management /run/m.sock unix\nmanagement-client-user root\nmanagement-client-role admin user 0\n");
        assert_eq!(monitor_listener(&c), None);
        let c = load(
            "management /run/m.sock unix\nmanagement-client-user root\n\
             management-client-role admin user 0\nmanagement-monitor-socket /run/mon.sock\n",
        );
        let mon = monitor_listener(&c).unwrap();
        assert_eq!(mon, Management::Unix(PathBuf::from("/run/mon.sock")));
        let p = listener_policy(&c, &mon).unwrap();
        assert!(p.read_only);
        assert_eq!(p.default_role, Role::Monitor);
        assert!(p.uid_roles.is_empty() && p.required_uid.is_none());
        // The main socket is unaffected.
        let main = listener_policy(&c, &Management::Unix(PathBuf::from("/run/m.sock"))).unwrap();
        assert!(!main.read_only);
        assert_eq!(main.required_uid, Some(0));
        assert_eq!(main.uid_roles, vec![(0, Role::Admin)]);
    }

    #[test]
    fn ids_by_name_and_number() {
        assert_eq!(uid_of("x", "0").unwrap(), 0);
        assert_eq!(uid_of("x", "root").unwrap(), 0);
        assert!(uid_of("x", "no-such-user-bulwark").is_err());
        assert_eq!(gid_of("x", "root").unwrap(), 0);
    }
}
