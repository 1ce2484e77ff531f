//! Parsing of `/proc/<pid>/status`: ids, groups, capability sets, `NoNewPrivs`, `Seccomp`, `Threads`.
//!
//! Used by [`crate::demote`]'s verification pass (on `self`) and by out-of-process tests that check a
//! sandboxed child from the outside.

use std::path::PathBuf;

/// Errors of reading or parsing a status file.
#[derive(Debug, thiserror::Error)]
pub enum ProcStatusError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The status file path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A required field is missing or malformed.
    #[error("{path}: field '{field}' missing or malformed")]
    Field {
        /// The status file path.
        path: PathBuf,
        /// The field name.
        field: &'static str,
    },
}

/// The security-relevant fields of `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved, filesystem uid.
    pub uids: [u32; 4],
    /// Real, effective, saved, filesystem gid.
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// `CapInh` bitmask.
    pub cap_inh: u64,
    /// `CapPrm` bitmask.
    pub cap_prm: u64,
    /// `CapEff` bitmask.
    pub cap_eff: u64,
    /// `CapBnd` bitmask.
    pub cap_bnd: u64,
    /// `CapAmb` bitmask.
    pub cap_amb: u64,
    /// `NoNewPrivs` flag.
    pub no_new_privs: bool,
    /// `Seccomp` mode (0 none, 1 strict, 2 filter).
    pub seccomp: u32,
    /// Number of threads.
    pub threads: u32,
}

impl ProcStatus {
    /// Reads `/proc/self/status`.
    pub fn read_self() -> Result<Self, ProcStatusError> {
        Self::read_path(PathBuf::from("/proc/self/status"))
    }

    /// Reads `/proc/<pid>/status`.
    pub fn read_pid(pid: i32) -> Result<Self, ProcStatusError> {
        Self::read_path(PathBuf::from(format!("/proc/{pid}/status")))
    }

    fn read_path(path: PathBuf) -> Result<Self, ProcStatusError> {
        let text = std::fs::read_to_string(&path).map_err(|source| ProcStatusError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|field| ProcStatusError::Field { path, field })
    }

    /// Parses the text of a status file; the error is the name of the first bad field.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let field = |name: &'static str| -> Result<&str, &'static str> {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                .map(str::trim)
                .ok_or(name)
        };
        let ids = |name: &'static str| -> Result<[u32; 4], &'static str> {
            let v: Vec<u32> = field(name)?
                .split_whitespace()
                .map(|s| s.parse().map_err(|_| name))
                .collect::<Result<_, _>>()?;
            <[u32; 4]>::try_from(v.as_slice()).map_err(|_| name)
        };
        let hex = |name: &'static str| -> Result<u64, &'static str> {
            u64::from_str_radix(field(name)?, 16).map_err(|_| name)
        };
        let num = |name: &'static str| -> Result<u32, &'static str> {
            field(name)?.parse().map_err(|_| name)
        };
        Ok(Self {
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            groups: field("Groups")?
                .split_whitespace()
                .map(|s| s.parse().map_err(|_| "Groups"))
                .collect::<Result<_, _>>()?,
            cap_inh: hex("CapInh")?,
            cap_prm: hex("CapPrm")?,
            cap_eff: hex("CapEff")?,
            cap_bnd: hex("CapBnd")?,
            cap_amb: hex("CapAmb")?,
            no_new_privs: num("NoNewPrivs")? == 1,
            seccomp: num("Seccomp")?,
            threads: num("Threads")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_self() {
        let s = ProcStatus::read_self().unwrap();
        assert_eq!(s.uids[1], nix::unistd::geteuid().as_raw());
        assert!(s.threads >= 1);
    }

    #[test]
    fn missing_field_is_reported() {
        assert_eq!(ProcStatus::parse("Name:\tx\n"), Err("Uid"));
        let bad = "Uid:\t1 2 3\nGid:\t0 0 0 0\n";
        assert_eq!(ProcStatus::parse(bad), Err("Uid"));
    }
}
