//! Test helpers: fixture loading (from `BULWARK_FIXTURES` or the shared fixture directory).

use std::path::PathBuf;

/// Root of the OpenVPN 2.6 captures.
///
/// Looked up in order: `$BULWARK_FIXTURES`, the `shared/` directory beside the checkout (where CI puts
/// it), `/work/shared`. A missing directory fails the tests that need it (never a silent skip).
pub fn fixture_root() -> PathBuf {
    if let Some(p) = std::env::var_os("BULWARK_FIXTURES") {
        return PathBuf::from(p);
    }
    let beside =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/openvpn-2.6");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/fixtures/openvpn-2.6")
}

/// Bytes of a fixture; panics (test failure) if it is missing.
pub fn fixture(rel: &str) -> Vec<u8> {
    let p = fixture_root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", p.display()))
}

/// Text of a fixture.
pub fn fixture_text(rel: &str) -> String {
    String::from_utf8(fixture(rel)).unwrap()
}

/// The greeting line every unauthenticated-free session starts with.
pub const GREETING: &[u8] =
    b">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n";

/// Drop the leading greeting (asserting it is there).
pub fn strip_greeting(raw: &[u8]) -> Vec<u8> {
    assert!(
        raw.starts_with(GREETING),
        "fixture does not start with the greeting"
    );
    raw[GREETING.len()..].to_vec()
}
