//! A line-oriented management-interface client for the end-to-end tests, with bounded waits
//! (every wait panics with what was received when its deadline passes).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connection to a management unix socket, past the greeting.
#[derive(Debug)]
pub struct MgmtClient {
    /// The socket (for raw writes by tests that misbehave on purpose).
    pub s: UnixStream,
    buf: String,
}

impl MgmtClient {
    /// Connects (retrying for up to 10 s while the socket appears) and reads the greeting.
    pub fn connect(path: &Path) -> MgmtClient {
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("connect {}: {e}", path.display()),
            }
        };
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("socket timeout");
        let mut m = MgmtClient {
            s,
            buf: String::new(),
        };
        m.notification(
            ">INFO:OpenVPN Management Interface Version 5",
            Duration::from_secs(5),
        );
        m
    }

    /// Reads one complete line (without CRLF).
    pub fn line(&mut self, deadline: Instant) -> String {
        match self.try_line(deadline) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }

    /// Reads one complete line (without CRLF); `Err` describes a timeout or a closed connection.
    pub fn try_line(&mut self, deadline: Instant) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.find("\r\n") {
                let l = self.buf[..i].to_string();
                self.buf.drain(..i + 2);
                return Ok(l);
            }
            if Instant::now() >= deadline {
                return Err(format!("no complete line; got {:?}", self.buf));
            }
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) => return Err(format!("management connection closed; got {:?}", self.buf)),
                Ok(n) => self.buf.push_str(&String::from_utf8_lossy(&b[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Waits for a notification line starting with `prefix` (other lines are skipped).
    pub fn notification(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.line(deadline);
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Sends a command and returns its reply lines (CRLF-terminated, notifications interleaved
    /// by the server skipped) up to and including the first line equal to `last`, or the first
    /// line when `last` is `None`.
    pub fn cmd(&mut self, line: &str, last: Option<&str>) -> String {
        self.s
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send command");
        self.reply(last)
    }

    /// Reads a reply (see [`MgmtClient::cmd`]) to something already sent.
    pub fn reply(&mut self, last: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = String::new();
        loop {
            let l = self.line(deadline);
            if l.starts_with('>') {
                continue;
            }
            out.push_str(&l);
            out.push_str("\r\n");
            if last.is_none_or(|e| l == e) {
                return out;
            }
        }
    }
}
