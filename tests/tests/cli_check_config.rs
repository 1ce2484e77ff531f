//! `bulwark check-config` runs every start-up check: a valid generated config passes; options that are
//! accepted by the parser but not implemented yet fail loudly instead of being ignored.

use std::process::Command;

use bulwark_pki::{generate, write_dir, InitOptions, ServerConfOptions};
use bulwark_tests::bulwark_bin;

fn check(extra: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = generate(&InitOptions::with_clients(1)).expect("pki");
    let written =
        write_dir(&pki, &dir.path().join("srv"), &ServerConfOptions::default()).expect("write");
    let mut conf = std::fs::read_to_string(&written.server_conf).expect("read");
    conf.push_str(extra);
    let path = dir.path().join("test.conf");
    std::fs::write(&path, conf).expect("write conf");
    let out = Command::new(bulwark_bin().expect("bulwark binary (cargo build --bins)"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run bulwark");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn generated_config_passes_every_check() {
    let (ok, text) = check("");
    assert!(ok, "{text}");
    assert!(text.contains("configuration OK"), "{text}");
}

#[test]
fn unimplemented_security_options_refuse_to_start() {
    for (line, needle) in [
        ("script-security 2\ntls-verify /bin/true\n", "tls-verify"),
        ("auth-gen-token\n", "auth-gen-token"),
    ] {
        let (ok, text) = check(line);
        assert!(!ok, "{line} must be refused:\n{text}");
        assert!(
            text.contains(needle) && text.contains("not implemented"),
            "{text}"
        );
    }
}

#[test]
fn bad_cipher_is_reported_before_start() {
    let (ok, text) = check("data-ciphers AES-256-GCM:BF-CBC\n");
    assert!(!ok, "{text}");
    assert!(text.to_lowercase().contains("bf-cbc"), "{text}");
}
