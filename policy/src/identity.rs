//! Resolution of the configured `user` / `group` names to numeric ids.
//!
//! Runs in the PARENT (it reads the passwd/group databases, which a chrooted child cannot). The child
//! receives only the numbers ([`Identity`]). Root (uid 0 or gid 0) is never a valid result: a config
//! naming root is an error, and without `user`/`group` the default is the dedicated `bulwark` user if it
//! exists, else `nobody`/`nogroup` (the returned [`ResolvedIdentity::note`] says so, for the log).

use nix::unistd::{Group, User};
use serde::{Deserialize, Serialize};

/// The dedicated service user looked up when the configuration names no `user`.
pub const DEFAULT_SERVICE_USER: &str = "bulwark";

/// The dedicated user of the management broker (created by the package), so that the
/// internet-facing worker and the broker cannot signal or inspect each other.
pub const BROKER_SERVICE_USER: &str = "bulwark-mgmt";

/// Numeric identity a child demotes to. Both ids are non-zero once produced by [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id (no supplementary groups).
    pub gid: u32,
}

/// The result of [`resolve`]: the ids plus the names, for logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedIdentity {
    /// The numeric identity.
    pub identity: Identity,
    /// The user name the uid came from.
    pub user_name: String,
    /// The group name the gid came from (or the user's primary group number as text).
    pub group_name: String,
    /// A line for the log when a default was applied (e.g. falling back to `nobody`).
    pub note: Option<String>,
}

/// Errors of identity resolution.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The passwd database lookup failed.
    #[error("cannot look up user '{name}': {source}")]
    UserLookup {
        /// The user name.
        name: String,
        /// The lookup error.
        #[source]
        source: nix::Error,
    },
    /// The group database lookup failed.
    #[error("cannot look up group '{name}': {source}")]
    GroupLookup {
        /// The group name.
        name: String,
        /// The lookup error.
        #[source]
        source: nix::Error,
    },
    /// No such user.
    #[error("user '{0}' does not exist")]
    NoSuchUser(String),
    /// No such group.
    #[error("group '{0}' does not exist")]
    NoSuchGroup(String),
    /// The configured (or defaulted) user is root.
    #[error("refusing to run a sandboxed process as user '{0}' (uid 0)")]
    RootUser(String),
    /// The configured (or defaulted) group is root's.
    #[error("refusing to run a sandboxed process with group '{0}' (gid 0)")]
    RootGroup(String),
    /// Neither the dedicated user nor `nobody` exists.
    #[error("no 'user' configured and neither '{DEFAULT_SERVICE_USER}' nor 'nobody' exists")]
    NoDefaultUser,
}

fn lookup_user(name: &str) -> Result<Option<User>, IdentityError> {
    User::from_name(name).map_err(|source| IdentityError::UserLookup {
        name: name.to_owned(),
        source,
    })
}

fn lookup_group(name: &str) -> Result<Option<Group>, IdentityError> {
    Group::from_name(name).map_err(|source| IdentityError::GroupLookup {
        name: name.to_owned(),
        source,
    })
}

/// Resolves `user` / `group` (from the configuration) to a non-root [`ResolvedIdentity`].
///
/// - `user` given: that user (must exist, must not be uid 0).
/// - `user` absent: [`DEFAULT_SERVICE_USER`] if it exists, else `nobody` (noted).
/// - `group` given: that group (must exist, must not be gid 0).
/// - `group` absent: the dedicated user's primary group; for `nobody` the group `nogroup` if it exists
///   (else `nobody`); for an explicitly configured user its primary group. Never root's group.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<ResolvedIdentity, IdentityError> {
    let mut notes = Vec::new();
    let (user_rec, fell_back_to_nobody) = match user {
        Some(name) => (
            lookup_user(name)?.ok_or_else(|| IdentityError::NoSuchUser(name.to_owned()))?,
            false,
        ),
        None => match lookup_user(DEFAULT_SERVICE_USER)? {
            Some(u) => (u, false),
            None => {
                let u = lookup_user("nobody")?.ok_or(IdentityError::NoDefaultUser)?;
                notes.push(format!(
                    "no 'user' configured and no '{DEFAULT_SERVICE_USER}' user exists: sandboxed processes run as 'nobody'"
                ));
                (u, true)
            }
        },
    };
    if user_rec.uid.is_root() {
        return Err(IdentityError::RootUser(user_rec.name));
    }
    let (gid, group_name) = match group {
        Some(name) => {
            let g =
                lookup_group(name)?.ok_or_else(|| IdentityError::NoSuchGroup(name.to_owned()))?;
            (g.gid.as_raw(), g.name)
        }
        None if fell_back_to_nobody => {
            let g = match lookup_group("nogroup")? {
                Some(g) => Some(g),
                None => lookup_group("nobody")?,
            };
            match g {
                Some(g) => (g.gid.as_raw(), g.name),
                None => (user_rec.gid.as_raw(), user_rec.gid.as_raw().to_string()),
            }
        }
        None => (user_rec.gid.as_raw(), user_rec.gid.as_raw().to_string()),
    };
    if gid == 0 {
        return Err(IdentityError::RootGroup(group_name));
    }
    Ok(ResolvedIdentity {
        identity: Identity {
            uid: user_rec.uid.as_raw(),
            gid,
        },
        user_name: user_rec.name,
        group_name,
        note: if notes.is_empty() {
            None
        } else {
            Some(notes.join("; "))
        },
    })
}

/// The management broker's identity: the dedicated [`BROKER_SERVICE_USER`] (with its primary
/// group) if it exists, so that a compromised worker cannot signal, trace or read the memory of the
/// broker (and the other way round); otherwise the worker's identity, with a note for the log.
pub fn resolve_broker(worker: &ResolvedIdentity) -> Result<ResolvedIdentity, IdentityError> {
    match lookup_user(BROKER_SERVICE_USER)? {
        Some(u) if u.uid.is_root() => Err(IdentityError::RootUser(u.name)),
        Some(u) if u.gid.as_raw() == 0 => Err(IdentityError::RootGroup(u.gid.to_string())),
        Some(u) if u.uid.as_raw() == worker.identity.uid => Ok(ResolvedIdentity {
            note: Some(format!(
                "the '{BROKER_SERVICE_USER}' user has the worker's uid {}: the management broker and the worker are not separated",
                u.uid
            )),
            ..worker.clone()
        }),
        Some(u) => Ok(ResolvedIdentity {
            identity: Identity {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            },
            group_name: u.gid.as_raw().to_string(),
            user_name: u.name,
            note: None,
        }),
        None => Ok(ResolvedIdentity {
            note: Some(format!(
                "no '{BROKER_SERVICE_USER}' user exists: the management broker runs as the worker's user '{}' (the package creates it; `useradd --system {BROKER_SERVICE_USER}` separates them)",
                worker.user_name
            )),
            ..worker.clone()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_user_is_refused() {
        assert!(matches!(
            resolve(Some("root"), None),
            Err(IdentityError::RootUser(_))
        ));
    }

    #[test]
    fn root_group_is_refused() {
        assert!(matches!(
            resolve(Some("nobody"), Some("root")),
            Err(IdentityError::RootGroup(_))
        ));
    }

    #[test]
    fn missing_user_is_an_error() {
        assert!(matches!(
            resolve(Some("no-such-user-bulwark-test"), None),
            Err(IdentityError::NoSuchUser(_))
        ));
    }

    #[test]
    fn default_is_never_root() {
        let r = resolve(None, None).unwrap();
        assert_ne!(r.identity.uid, 0);
        assert_ne!(r.identity.gid, 0);
        if User::from_name(DEFAULT_SERVICE_USER).unwrap().is_none() {
            assert_eq!(r.user_name, "nobody");
            assert!(r.note.is_some());
        }
    }

    #[test]
    fn explicit_nobody_nogroup() {
        if Group::from_name("nogroup").unwrap().is_none() {
            return;
        }
        let r = resolve(Some("nobody"), Some("nogroup")).unwrap();
        assert_eq!(r.group_name, "nogroup");
        assert_eq!(r.note, None);
    }
}

#[cfg(test)]
mod broker_tests {
    use super::*;

    #[test]
    fn broker_identity_is_separate_when_the_user_exists_else_the_worker_one_with_a_note() {
        let Ok(worker) = resolve(None, None) else {
            eprintln!("SKIP: neither bulwark nor nobody exists here");
            return;
        };
        let broker = resolve_broker(&worker).unwrap();
        assert_ne!(broker.identity.uid, 0);
        assert_ne!(broker.identity.gid, 0);
        match User::from_name(BROKER_SERVICE_USER).unwrap() {
            Some(u) if u.uid.as_raw() != worker.identity.uid => {
                assert_eq!(broker.identity.uid, u.uid.as_raw());
                assert_eq!(broker.identity.gid, u.gid.as_raw());
                assert!(broker.note.is_none());
            }
            _ => {
                assert_eq!(broker.identity, worker.identity);
                let note = broker.note.unwrap();
                assert!(note.contains(BROKER_SERVICE_USER), "{note}");
            }
        }
    }
}
