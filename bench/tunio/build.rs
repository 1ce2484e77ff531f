//! Passes the locked tun-rs version to the binary (printed by `tunio probe`).
#![deny(unsafe_code)]

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut lines = lock.lines();
    let mut version = String::from("(unknown)");
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"tun-rs\"" {
            if let Some(v) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
            {
                version = v.trim_matches('"').to_string();
            }
            break;
        }
    }
    println!("cargo:rustc-env=TUNIO_TUN_RS_VERSION={version}");
}
