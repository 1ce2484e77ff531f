//! systemd readiness notification (`sd_notify`), written directly: one datagram on the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or an abstract name starting with `@`).
//!
//! [`Notifier::from_env`] reads (and removes) the variable at start-up, so children never see it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Errors of sending a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The address in `$NOTIFY_SOCKET` is unusable.
    #[error("invalid NOTIFY_SOCKET '{0}'")]
    BadAddress(String),
    /// Sending failed.
    #[error("cannot notify systemd via {addr}: {source}")]
    Send {
        /// The socket address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Where readiness is reported, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    addr: Option<String>,
}

impl Notifier {
    /// Takes `$NOTIFY_SOCKET` out of the environment. Call while single-threaded.
    pub fn from_env() -> Self {
        let addr = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier { addr }
    }

    /// A notifier for an explicit address (tests).
    pub fn to_address(addr: &str) -> Self {
        Notifier {
            addr: Some(addr.to_owned()),
        }
    }

    /// Whether a socket is configured.
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Sends `state` (e.g. `READY=1`); does nothing without `$NOTIFY_SOCKET`.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some(a) = &self.addr else { return Ok(()) };
        let sa = if let Some(name) = a.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())
        } else if a.starts_with('/') {
            SocketAddr::from_pathname(a)
        } else {
            return Err(NotifyError::BadAddress(a.clone()));
        }
        .map_err(|_| NotifyError::BadAddress(a.clone()))?;
        let sock = UnixDatagram::unbound().map_err(|source| NotifyError::Send {
            addr: a.clone(),
            source,
        })?;
        sock.send_to_addr(state.as_bytes(), &sa)
            .map_err(|source| NotifyError::Send {
                addr: a.clone(),
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_to_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        Notifier::to_address(p.to_str().unwrap())
            .notify("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn relative_address_rejected() {
        assert!(matches!(
            Notifier::to_address("x").notify("READY=1"),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(Notifier { addr: None }.notify("READY=1").is_ok());
    }
}
