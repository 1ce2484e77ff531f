//! OpenVPN's `--mute N`: after N consecutive messages of one category, further messages of that
//! category are suppressed until a message of another category is printed, which is preceded by
//! a count of what was suppressed.
//!
//! ```text
//! let mut m = Mute::new(3);
//! let (notice, print) = m.admit(category(message));
//! // print `notice` (if any) first, then the message if `print`
//! ```
//!
//! Semantics, as OpenVPN 2.6's `error.c` (`dont_mute`), state kept across every process's lines
//! because the parent is the only writer:
//! - a message of category 0 is never suppressed; it ends a run like any other category change;
//! - a message of the current category increments the run's count; the (N+1)-th is preceded by
//!   [`Notice::Triggered`] (`NOTE: --mute triggered...`) and suppressed, as is every later one;
//! - a message of another category (or 0) is preceded by [`Notice::Suppressed`]
//!   (`K variation(s) on previous N message(s) suppressed by --mute`) when K > 0 messages were
//!   suppressed, and starts a new run of count 1;
//! - the two notices themselves are never muted and do not change the state;
//! - `mute 0` (the default) disables all of this.
//!
//! A message's category is OpenVPN's mute category of that message ([`category`]): Bulwark prints
//! OpenVPN's wording, so the category is recovered from the text after the per-client prefix
//! (`CN/ip:port ` or `ip:port `), by the table [`CATEGORIES`] taken from OpenVPN's
//! `errlevel.h` `D_*` definitions and the level each message is printed with in its source.
//! Messages not in the table have category 0 (OpenVPN's `M_INFO`, `D_ROUTE`, ...: never muted).

use std::fmt;

/// What to print before the message [`Mute::admit`] was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The run just reached the cut-off: `NOTE: --mute triggered...`.
    Triggered,
    /// A run ended after `variations` messages were suppressed.
    Suppressed {
        /// Messages suppressed in the run.
        variations: u32,
        /// The `mute` cut-off.
        cutoff: u32,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Triggered => f.write_str("NOTE: --mute triggered..."),
            Self::Suppressed { variations, cutoff } => write!(
                f,
                "{variations} variation(s) on previous {cutoff} message(s) suppressed by --mute"
            ),
        }
    }
}

/// The mute state of the log sink.
#[derive(Debug, Clone)]
pub struct Mute {
    cutoff: u32,
    count: u32,
    category: u8,
}

impl Mute {
    /// A filter with cut-off `cutoff` (0: off).
    pub const fn new(cutoff: u32) -> Self {
        Self {
            cutoff,
            count: 0,
            category: 0,
        }
    }

    /// Changes the cut-off (SIGHUP reload, management `mute N`); the current run starts over.
    pub fn set_cutoff(&mut self, cutoff: u32) {
        *self = Self::new(cutoff);
    }

    /// Decides about a message of `category`: the notice to print before it, and whether the
    /// message itself is printed.
    pub fn admit(&mut self, category: u8) -> (Option<Notice>, bool) {
        if self.cutoff == 0 {
            return (None, true);
        }
        if category > 0 && category == self.category {
            let notice = (self.count == self.cutoff).then_some(Notice::Triggered);
            self.count = self.count.saturating_add(1);
            (notice, self.count <= self.cutoff)
        } else {
            let suppressed = self.count.saturating_sub(self.cutoff);
            let notice = (suppressed > 0).then_some(Notice::Suppressed {
                variations: suppressed,
                cutoff: self.cutoff,
            });
            self.count = 1;
            self.category = category;
            (notice, true)
        }
    }
}

/// OpenVPN's mute categories (`errlevel.h`) of the messages Bulwark prints.
pub mod cat {
    /// `D_CRYPT_ERRORS`: data channel authentication/decryption failures.
    pub const CRYPT_ERRORS: u8 = 2;
    /// `D_TLS_ERRORS`: control channel and verification errors.
    pub const TLS_ERRORS: u8 = 3;
    /// `D_REPLAY_ERRORS`: replayed data packets.
    pub const REPLAY_ERRORS: u8 = 6;
    /// `D_MULTI_ERRORS`: server limits (connect-freq, max-clients, pool exhausted).
    pub const MULTI_ERRORS: u8 = 9;
    /// `D_PUSH_ERRORS`: unknown or bad control messages.
    pub const PUSH_ERRORS: u8 = 11;
    /// `D_HANDSHAKE` and `D_TLS_DEBUG_LOW` (they share 20): verification, channel set-up.
    pub const HANDSHAKE: u8 = 20;
    /// `D_PUSH`: push requests and replies.
    pub const PUSH: u8 = 34;
    /// `D_IFCONFIG_POOL`.
    pub const IFCONFIG_POOL: u8 = 35;
    /// `D_MULTI_LOW`: address learning and assignment.
    pub const MULTI_LOW: u8 = 38;
    /// `D_MANAGEMENT`.
    pub const MANAGEMENT: u8 = 40;
    /// `D_SCHED_EXIT`.
    pub const SCHED_EXIT: u8 = 41;
    /// `D_OSBUF`.
    pub const OSBUF: u8 = 43;
    /// `D_MULTI_DROPPED`: packets dropped by the server (bad source address, ...).
    pub const MULTI_DROPPED: u8 = 57;
    /// `D_MULTI_MEDIUM`: floats.
    pub const MULTI_MEDIUM: u8 = 58;
    /// `D_MTU_INFO`.
    pub const MTU_INFO: u8 = 61;
    /// `D_STREAM_ERRORS`: a peer's exit notification, stream errors.
    pub const STREAM_ERRORS: u8 = 7;
    /// `D_CIPHER_INIT`: data-channel key set-up.
    pub const CIPHER_INIT: u8 = 65;
}

/// Message beginnings (after the per-client prefix) and their category; the first match wins, so
/// the more specific entries come first.
pub const CATEGORIES: &[(&str, u8)] = &[
    ("AEAD Decrypt error: bad packet ID", cat::REPLAY_ERRORS),
    (
        "Authenticate/Decrypt packet error: bad packet ID",
        cat::REPLAY_ERRORS,
    ),
    ("AEAD Decrypt error", cat::CRYPT_ERRORS),
    ("Authenticate/Decrypt packet error", cat::CRYPT_ERRORS),
    ("TLS Error", cat::TLS_ERRORS),
    ("TLS Auth Error", cat::TLS_ERRORS),
    ("TLS_ERROR", cat::TLS_ERRORS),
    ("VERIFY ERROR", cat::TLS_ERRORS),
    ("MULTI: bad source address", cat::MULTI_DROPPED),
    ("MULTI: Connection from", cat::MULTI_ERRORS),
    (
        "MULTI: new incoming connection would exceed",
        cat::MULTI_ERRORS,
    ),
    ("MULTI: no dynamic or static remote", cat::MULTI_ERRORS),
    ("MULTI: Learn", cat::MULTI_LOW),
    ("MULTI_sva", cat::MULTI_LOW),
    ("MULTI: primary virtual IP", cat::MULTI_LOW),
    ("MULTI: new connection by client", cat::MULTI_LOW),
    (
        "WARNING: Received unknown control message",
        cat::PUSH_ERRORS,
    ),
    ("VERIFY ", cat::HANDSHAKE),
    ("Validating certificate", cat::HANDSHAKE),
    ("Control Channel:", cat::HANDSHAKE),
    ("Data Channel:", cat::HANDSHAKE),
    ("peer info:", cat::HANDSHAKE),
    ("Timers:", cat::HANDSHAKE),
    ("Protocol options:", cat::HANDSHAKE),
    ("CC-EEN exit message", cat::STREAM_ERRORS),
    ("Outgoing Data Channel:", cat::CIPHER_INIT),
    ("Outgoing Control Channel", cat::CIPHER_INIT),
    ("Incoming Control Channel", cat::CIPHER_INIT),
    ("Outgoing dynamic tls-crypt:", cat::CIPHER_INIT),
    ("Incoming dynamic tls-crypt:", cat::CIPHER_INIT),
    ("Incoming Data Channel:", cat::CIPHER_INIT),
    ("TLS: ", cat::HANDSHAKE),
    ("PUSH: Received control message", cat::PUSH),
    ("SENT CONTROL", cat::PUSH),
    ("IFCONFIG POOL", cat::IFCONFIG_POOL),
    ("MANAGEMENT:", cat::MANAGEMENT),
    ("Delayed exit in", cat::SCHED_EXIT),
    ("Socket Buffers", cat::OSBUF),
    ("peer ", cat::MULTI_MEDIUM),
    ("Data Channel MTU parms", cat::MTU_INFO),
    ("TLS-Auth MTU parms", cat::MTU_INFO),
];

/// The text after OpenVPN's per-client prefix: the first word ending in `:PORT` (a client's
/// `ip:port`, `[AF_INET]ip:port` or `CN/ip:port`, whose CN may contain spaces) and the space
/// after it; the whole message when there is no such word before a known message start.
pub fn strip_client_prefix(message: &str) -> &str {
    let mut rest = message;
    while let Some((word, after)) = rest.split_once(' ') {
        if let Some((_, port)) = word.rsplit_once(':') {
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                return after;
            }
        }
        // A known message start before any address word: the message has no prefix.
        if CATEGORIES.iter().any(|(p, _)| rest.starts_with(p)) {
            return rest;
        }
        rest = after;
    }
    message
}

/// OpenVPN's mute category of `message` (0: never muted).
pub fn category(message: &str) -> u8 {
    let text = strip_client_prefix(message);
    CATEGORIES
        .iter()
        .find(|(p, _)| text.starts_with(p))
        .map_or(0, |&(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `cats` through a filter with `cutoff`, rendering what is printed: notices as text,
    /// messages as `m<index>`.
    fn run(cutoff: u32, cats: &[u8]) -> Vec<String> {
        let mut m = Mute::new(cutoff);
        let mut out = Vec::new();
        for (i, &c) in cats.iter().enumerate() {
            let (n, print) = m.admit(c);
            if let Some(n) = n {
                out.push(n.to_string());
            }
            if print {
                out.push(format!("m{i}"));
            }
        }
        out
    }

    #[test]
    fn off_prints_everything() {
        assert_eq!(run(0, &[3, 3, 3]), ["m0", "m1", "m2"]);
    }

    #[test]
    fn a_run_is_cut_after_n_and_counted_when_another_category_follows() {
        assert_eq!(
            run(2, &[3, 3, 3, 3, 3, 20, 20]),
            [
                "m0",
                "m1",
                "NOTE: --mute triggered...",
                "3 variation(s) on previous 2 message(s) suppressed by --mute",
                "m5",
                "m6",
            ]
        );
    }

    #[test]
    fn category_zero_is_never_muted_and_ends_a_run() {
        assert_eq!(run(1, &[0, 0, 0]), ["m0", "m1", "m2"]);
        assert_eq!(
            run(1, &[3, 3, 0, 3]),
            [
                "m0",
                "NOTE: --mute triggered...",
                "1 variation(s) on previous 1 message(s) suppressed by --mute",
                "m2",
                "m3",
            ]
        );
    }

    #[test]
    fn a_run_of_exactly_n_has_no_notice() {
        assert_eq!(run(2, &[3, 3, 20]), ["m0", "m1", "m2"]);
    }

    /// The notices as OpenVPN 2.6.14 prints them with `mute 6` (`logging/server-verb4-mute6--log.log`):
    /// the note, then the count on the next line, twice.
    #[test]
    fn the_fixtures_notices_have_openvpns_words() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/openvpn-2.6/logging/server-verb4-mute6--log.log");
        let Ok(text) = std::fs::read_to_string(&fixture) else {
            panic!("fixture {} missing", fixture.display());
        };
        // `YYYY-MM-DD HH:MM:SS us=N message`
        let msgs: Vec<&str> = text
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
            .collect();
        let note = Notice::Triggered.to_string();
        let pairs: Vec<(&str, &str)> = msgs
            .windows(2)
            .filter(|w| w[0] == note)
            .map(|w| (w[0], w[1]))
            .collect();
        let counted = |variations| {
            Notice::Suppressed {
                variations,
                cutoff: 6,
            }
            .to_string()
        };
        assert_eq!(
            pairs,
            [
                (note.as_str(), counted(297).as_str()),
                (note.as_str(), counted(2).as_str())
            ]
        );
    }

    #[test]
    fn categories_of_bulwarks_messages() {
        for (m, c) in [
            (
                "client1/[AF_INET]10.0.0.2:1194 AEAD Decrypt error: bad packet ID (may be a replay): [ #5 ] -- see",
                cat::REPLAY_ERRORS,
            ),
            (
                "client1/[AF_INET]10.0.0.2:1194 AEAD Decrypt error: cipher final failed",
                cat::CRYPT_ERRORS,
            ),
            (
                "10.0.0.2:1194 TLS Error: cannot authenticate control packet from [AF_INET]10.0.0.2:1194 (x)",
                cat::TLS_ERRORS,
            ),
            (
                "[AF_INET]10.0.0.2:1194 TLS Error: tls-crypt unwrapping failed from [AF_INET]10.0.0.2:1194",
                cat::TLS_ERRORS,
            ),
            (
                "a cn with spaces/10.0.0.2:1194 MULTI: Learn: 10.8.0.2 -> a cn with spaces/10.0.0.2:1194",
                cat::MULTI_LOW,
            ),
            ("[::1]:4000 VERIFY OK: depth=1, CN=TestCA", cat::HANDSHAKE),
            (
                "MULTI: new incoming connection would exceed maximum number of clients (2)",
                cat::MULTI_ERRORS,
            ),
            (
                "10.0.0.2:1194 [client1] Peer Connection Initiated with [AF_INET]10.0.0.2:1194",
                0,
            ),
            ("10.0.0.2:1194 peer info: IV_VER=2.6.14", cat::HANDSHAKE),
            (
                "client1/10.0.0.2:1194 CC-EEN exit message received by peer",
                cat::STREAM_ERRORS,
            ),
            (
                "client1/10.0.0.2:1194 Outgoing Data Channel: Cipher 'AES-256-GCM' initialized with 256 bit key",
                cat::CIPHER_INIT,
            ),
            ("Initialization Sequence Completed", 0),
            ("SIGTERM[hard,] received, process exiting", 0),
            // attacker-chosen text after the message start does not change the category
            (
                "c/10.0.0.2:1 WARNING: Received unknown control message: TLS Error",
                cat::PUSH_ERRORS,
            ),
        ] {
            assert_eq!(category(m), c, "{m}");
        }
    }
}
