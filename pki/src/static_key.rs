//! OpenVPN "Static key V1" files (the key format of `tls-auth` and `tls-crypt`).
//!
//! API: [`StaticKey::generate`], [`StaticKey::to_file_string`] (byte-identical layout to
//! `openvpn --genkey secret`: three comment lines, the BEGIN line, 16 lines of 32 lowercase hex
//! characters, the END line), [`StaticKey::parse`] (OpenVPN's reader rules: text before BEGIN is
//! ignored, whitespace inside is ignored, anything else non-hex is an error, exactly 256 bytes) and
//! [`StaticKey::bytes`].
//!
//! Invariant: the key bytes are never printed by `Debug`.

use ring::rand::{SecureRandom, SystemRandom};

/// Length of a static key in bytes (2048 bits).
pub const STATIC_KEY_LEN: usize = 256;

const BEGIN: &str = "-----BEGIN OpenVPN Static key V1-----";
const END: &str = "-----END OpenVPN Static key V1-----";

/// Errors of static-key generation and parsing.
#[derive(Debug, thiserror::Error)]
pub enum StaticKeyError {
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The BEGIN line is missing.
    #[error("no '{BEGIN}' line found")]
    MissingBegin,
    /// The END line is missing.
    #[error("no '{END}' line found after the BEGIN line")]
    MissingEnd,
    /// A character that is neither hex nor whitespace appeared inside the key.
    #[error("invalid character {0:?} inside the static key")]
    InvalidCharacter(char),
    /// The key does not hold exactly 256 bytes.
    #[error("static key holds {0} hex digits, expected {expected}", expected = STATIC_KEY_LEN * 2)]
    WrongLength(usize),
}

/// A 256-byte OpenVPN static key (`struct key2`: two directions of cipher+HMAC key material).
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKey([u8; STATIC_KEY_LEN]);

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKey(<redacted>)")
    }
}

impl StaticKey {
    /// Draws a fresh key from the system CSPRNG.
    pub fn generate() -> Result<Self, StaticKeyError> {
        let mut key = [0u8; STATIC_KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| StaticKeyError::Random)?;
        Ok(Self(key))
    }

    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; STATIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw 256 key bytes.
    pub fn bytes(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.0
    }

    /// Renders the key in the exact layout `openvpn --genkey secret` writes.
    pub fn to_file_string(&self) -> String {
        let mut out = String::with_capacity(700);
        out.push_str("#\n# 2048 bit OpenVPN static key\n#\n");
        out.push_str(BEGIN);
        out.push('\n');
        for line in self.0.chunks(16) {
            out.push_str(&hex::encode(line));
            out.push('\n');
        }
        out.push_str(END);
        out.push('\n');
        out
    }

    /// Parses a static key file with OpenVPN's rules.
    pub fn parse(text: &str) -> Result<Self, StaticKeyError> {
        let start = text.find(BEGIN).ok_or(StaticKeyError::MissingBegin)? + BEGIN.len();
        let rest = &text[start..];
        let end = rest.find(END).ok_or(StaticKeyError::MissingEnd)?;
        let mut digits = String::with_capacity(STATIC_KEY_LEN * 2);
        for c in rest[..end].chars() {
            if c.is_ascii_hexdigit() {
                digits.push(c);
            } else if !c.is_whitespace() {
                return Err(StaticKeyError::InvalidCharacter(c));
            }
        }
        if digits.len() != STATIC_KEY_LEN * 2 {
            return Err(StaticKeyError::WrongLength(digits.len()));
        }
        let mut key = [0u8; STATIC_KEY_LEN];
        hex::decode_to_slice(&digits, &mut key)
            .map_err(|_| StaticKeyError::WrongLength(digits.len()))?;
        Ok(Self(key))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_openvpn_genkey() {
        let key = StaticKey::from_bytes(std::array::from_fn(|i| i as u8));
        let text = key.to_file_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 21);
        assert_eq!(lines[0], "#");
        assert_eq!(lines[1], "# 2048 bit OpenVPN static key");
        assert_eq!(lines[2], "#");
        assert_eq!(lines[3], BEGIN);
        assert_eq!(lines[4], "000102030405060708090a0b0c0d0e0f");
        assert!(lines[4..20].iter().all(|l| l.len() == 32));
        assert_eq!(lines[19], "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        assert_eq!(lines[20], END);
        assert!(text.ends_with("-----\n"));
    }

    #[test]
    fn round_trip_and_lenient_whitespace() {
        let key = StaticKey::generate().unwrap();
        assert_eq!(StaticKey::parse(&key.to_file_string()).unwrap(), key);
        let hex: String = hex::encode(key.bytes());
        let odd = format!(
            "junk\n{BEGIN}\n{}\n  {}\t\n{END}\n",
            &hex[..100],
            &hex[100..]
        );
        assert_eq!(StaticKey::parse(&odd).unwrap(), key);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            StaticKey::parse("nothing"),
            Err(StaticKeyError::MissingBegin)
        ));
        assert!(matches!(
            StaticKey::parse(&format!("{BEGIN}\n00\n")),
            Err(StaticKeyError::MissingEnd)
        ));
        assert!(matches!(
            StaticKey::parse(&format!("{BEGIN}\n00zz\n{END}")),
            Err(StaticKeyError::InvalidCharacter('z'))
        ));
        assert!(matches!(
            StaticKey::parse(&format!("{BEGIN}\n0011\n{END}")),
            Err(StaticKeyError::WrongLength(4))
        ));
    }

    #[test]
    fn debug_redacts() {
        let key = StaticKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "StaticKey(<redacted>)");
    }
}
