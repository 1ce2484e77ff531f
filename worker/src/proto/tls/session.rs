//! [`TlsSession`]: one TLS server connection (one OpenVPN key_state), byte-in/byte-out.
//!
//! The reliability layer feeds the TLS bytes it received in message-id order with
//! [`TlsSession::feed_ciphertext`] and sends what [`TlsSession::take_ciphertext`] returns, chopped
//! into P_CONTROL packets. After the handshake, [`TlsSession::read_plaintext`] yields the client's
//! key-method-2 message and text messages; [`TlsSession::write_plaintext`] sends one control message
//! per call (one TLS record each, at most [`MAX_PLAINTEXT_MESSAGE`] bytes, refused while handshaking).
//!
//! A failed `feed_ciphertext` leaves a fatal alert queued: call `take_ciphertext` once more to send it,
//! then drop the session. Verification log lines are in [`TlsSession::take_verify_events`] whether the
//! handshake succeeded or not.

use std::io::Read as _;

use rustls::{ProtocolVersion, ServerConnection};

use super::settings::openssl_suite_name;
use super::verify::{VerifyEvent, VerifyLog};
use super::x509::{describe_peer_certificate, PeerIdentity};

/// OpenVPN reads plaintext in 2048-byte units; a control message must fit in one record.
pub const MAX_PLAINTEXT_MESSAGE: usize = 2048;
/// Bound on decrypted-but-unread plaintext kept by a session.
pub const MAX_BUFFERED_PLAINTEXT: usize = 64 * 1024;

/// Errors of a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The TLS layer rejected the peer's data (handshake failure, bad record, alert, verify failure).
    #[error("TLS error: {0}")]
    Tls(#[source] rustls::Error),
    /// rustls refused more input (its buffers are full).
    #[error("TLS input refused: {reason}")]
    InputRefused {
        /// rustls' message.
        reason: String,
    },
    /// The peer sent more plaintext than the session may buffer.
    #[error(
        "peer sent more than {MAX_BUFFERED_PLAINTEXT} bytes of unread control-channel plaintext"
    )]
    PlaintextOverflow,
    /// `write_plaintext` before the handshake finished.
    #[error("cannot write control-channel plaintext before the TLS handshake is complete")]
    StillHandshaking,
    /// `write_plaintext` with a message larger than one OpenVPN read.
    #[error(
        "control message of {len} bytes exceeds the {MAX_PLAINTEXT_MESSAGE}-byte record limit"
    )]
    MessageTooLong {
        /// Message length.
        len: usize,
    },
    /// rustls accepted only part of the message.
    #[error("TLS layer accepted only {written} of {len} plaintext bytes")]
    ShortWrite {
        /// Bytes accepted.
        written: usize,
        /// Message length.
        len: usize,
    },
    /// The session already failed; it must be discarded.
    #[error("TLS session already failed")]
    Failed,
    /// Keying material export failed (handshake not complete).
    #[error("cannot export keying material: {0}")]
    Export(#[source] rustls::Error),
}

/// One server-side TLS connection.
pub struct TlsSession {
    conn: ServerConnection,
    log: VerifyLog,
    plaintext: Vec<u8>,
    failed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("buffered_plaintext", &self.plaintext.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl TlsSession {
    /// Wraps a connection whose verifier records into `log`.
    pub(super) fn new(conn: ServerConnection, log: VerifyLog) -> Self {
        Self {
            conn,
            log,
            plaintext: Vec::new(),
            failed: false,
        }
    }

    /// Feeds TLS bytes received from the peer (in order) and processes them.
    pub fn feed_ciphertext(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        if self.failed {
            return Err(SessionError::Failed);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = match self.conn.read_tls(&mut rest) {
                Ok(n) => n,
                Err(e) => {
                    self.failed = true;
                    return Err(SessionError::InputRefused {
                        reason: e.to_string(),
                    });
                }
            };
            if let Err(e) = self.conn.process_new_packets() {
                self.failed = true;
                return Err(SessionError::Tls(e));
            }
            self.drain_plaintext()?;
            if n == 0 {
                // close_notify was received: rustls reads nothing more.
                break;
            }
        }
        Ok(())
    }

    fn drain_plaintext(&mut self) -> Result<(), SessionError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.conn.reader().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if self.plaintext.len() + n > MAX_BUFFERED_PLAINTEXT {
                        self.failed = true;
                        return Err(SessionError::PlaintextOverflow);
                    }
                    self.plaintext.extend_from_slice(&buf[..n]);
                }
                // WouldBlock: nothing buffered; other errors (unexpected EOF) end the drain as well,
                // rustls reports the condition through process_new_packets.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Appends all TLS bytes waiting to be sent to `out`.
    pub fn take_ciphertext(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Whether TLS bytes are waiting in [`TlsSession::take_ciphertext`].
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Moves all decrypted plaintext received so far into `out`; returns the number of bytes.
    pub fn read_plaintext(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.plaintext.len();
        out.append(&mut self.plaintext);
        n
    }

    /// Sends one control-channel message as one TLS record.
    pub fn write_plaintext(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        if self.failed {
            return Err(SessionError::Failed);
        }
        if self.conn.is_handshaking() {
            return Err(SessionError::StillHandshaking);
        }
        if bytes.len() > MAX_PLAINTEXT_MESSAGE {
            return Err(SessionError::MessageTooLong { len: bytes.len() });
        }
        let written = std::io::Write::write(&mut self.conn.writer(), bytes).map_err(|_| {
            SessionError::ShortWrite {
                written: 0,
                len: bytes.len(),
            }
        })?;
        if written != bytes.len() {
            return Err(SessionError::ShortWrite {
                written,
                len: bytes.len(),
            });
        }
        Ok(())
    }

    /// True until the handshake (including client authentication) completed.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True after an error: the session must be discarded.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// RFC 5705 / RFC 8446 exporter with **no context** (as OpenVPN calls it), e.g.
    /// `EXPORTER-OpenVPN-datakeys` (256 bytes) or `EXPORTER-OpenVPN-dynamic-tls-crypt` (256 bytes).
    pub fn export_keying_material<const N: usize>(
        &self,
        label: &[u8],
    ) -> Result<[u8; N], SessionError> {
        let mut out = [0u8; N];
        self.conn
            .export_keying_material(&mut out, label, None)
            .map_err(SessionError::Export)?;
        Ok(out)
    }

    /// The client's identity, once the handshake is complete (and only if a certificate was verified).
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        // INVARIANT: the identity is recorded when the chain is verified, which happens *before* the
        // client proves possession of the key (CertificateVerify) and before Finished. It is only
        // released once rustls reports the handshake complete.
        if self.conn.is_handshaking() || self.failed {
            return None;
        }
        self.log.identity()
    }

    /// Removes and returns the verification log lines recorded so far.
    pub fn take_verify_events(&self) -> Vec<VerifyEvent> {
        self.log.take_events()
    }

    /// Negotiated protocol version in OpenSSL spelling (`TLSv1.3`).
    pub fn protocol_version(&self) -> Option<&'static str> {
        self.conn.protocol_version().map(version_name)
    }

    /// Negotiated cipher suite in OpenSSL spelling (`TLS_AES_256_GCM_SHA384`,
    /// `ECDHE-RSA-AES256-GCM-SHA384`).
    pub fn cipher_suite_name(&self) -> Option<String> {
        self.conn
            .negotiated_cipher_suite()
            .map(|s| openssl_suite_name(s.suite()))
    }

    /// OpenVPN's `Control Channel: ...` handshake summary line (available after the handshake).
    pub fn control_channel_line(&self) -> Option<String> {
        if self.conn.is_handshaking() {
            return None;
        }
        let version = self.protocol_version()?;
        let suite = self.conn.negotiated_cipher_suite()?;
        let cipher_version = version_name(suite.version().version);
        let name = openssl_suite_name(suite.suite());
        let cert = self
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|d| describe_peer_certificate(d.as_ref()).ok())
            .unwrap_or_default();
        let tmp = self
            .conn
            .negotiated_key_exchange_group()
            .map(|g| format!(", peer temporary key: {}", describe_group(g.name())))
            .unwrap_or_default();
        Some(format!(
            "Control Channel: {version}, cipher {cipher_version} {name}{cert}{tmp}"
        ))
    }
}

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_1 => "TLSv1.1",
        ProtocolVersion::TLSv1_0 => "TLSv1",
        _ => "unknown",
    }
}

fn describe_group(g: rustls::NamedGroup) -> String {
    match g {
        rustls::NamedGroup::X25519 => "253 bits X25519".into(),
        rustls::NamedGroup::X448 => "448 bits X448".into(),
        rustls::NamedGroup::secp256r1 => "256 bits ECprime256v1".into(),
        rustls::NamedGroup::secp384r1 => "384 bits ECsecp384r1".into(),
        rustls::NamedGroup::secp521r1 => "521 bits ECsecp521r1".into(),
        other => format!("{other:?}"),
    }
}
