//! Locating the workspace's built binaries from inside a test executable.
//!
//! API: [`workspace_bin`]`(name)`, [`bulwark_bin`], [`worker_bin`], [`mgmt_bin`], [`bin_dir`].
//! A test executable lives in `target/<profile>/deps/`; the binaries are in `target/<profile>/`.
//! `BULWARK_BIN_DIR` overrides the directory. A missing binary is a clear error that names the build
//! command (`cargo build --workspace --bins`), never a silent skip.

use std::path::PathBuf;

/// Errors of binary lookup.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    /// The test executable's own path is unknown.
    #[error("cannot determine the test executable's path: {0}")]
    CurrentExe(std::io::Error),
    /// The test executable is not inside `target/<profile>/deps`.
    #[error(
        "test executable {0} is not in a target/<profile>/deps directory; set BULWARK_BIN_DIR"
    )]
    Layout(PathBuf),
    /// The binary has not been built.
    #[error("binary {name} not found at {path}: build the binaries first with `cargo build --workspace --bins` (the README's test command does)")]
    Missing {
        /// Binary name.
        name: String,
        /// Where it was expected.
        path: PathBuf,
    },
}

/// The directory holding the workspace binaries of the current profile.
pub fn bin_dir() -> Result<PathBuf, BinError> {
    if let Some(d) = std::env::var_os("BULWARK_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(BinError::CurrentExe)?;
    let deps = exe.parent().ok_or_else(|| BinError::Layout(exe.clone()))?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().ok_or_else(|| BinError::Layout(exe.clone()))?
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// The path of workspace binary `name`, which must exist.
pub fn workspace_bin(name: &str) -> Result<PathBuf, BinError> {
    let path = bin_dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BinError::Missing {
            name: name.to_string(),
            path,
        })
    }
}

/// `bulwark` (the daemon).
pub fn bulwark_bin() -> Result<PathBuf, BinError> {
    workspace_bin("bulwark")
}

/// `bulwark-worker`.
pub fn worker_bin() -> Result<PathBuf, BinError> {
    workspace_bin("bulwark-worker")
}

/// `bulwark-mgmt`.
pub fn mgmt_bin() -> Result<PathBuf, BinError> {
    workspace_bin("bulwark-mgmt")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_build_command() {
        let e = workspace_bin("no-such-binary-xyz").unwrap_err();
        assert!(e.to_string().contains("cargo build --workspace --bins"));
    }

    #[test]
    fn bin_dir_is_the_profile_dir() {
        if std::env::var_os("BULWARK_BIN_DIR").is_none() {
            let d = bin_dir().unwrap();
            assert!(d.join("deps").is_dir(), "{}", d.display());
        }
    }
}
