//! Passes the locked quinn-udp version to the binary (printed in its header).
#![deny(unsafe_code)]

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut lines = lock.lines();
    let mut version = String::from("(unknown)");
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"quinn-udp\"" {
            if let Some(v) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
            {
                version = v.trim_matches('"').to_string();
            }
            break;
        }
    }
    println!("cargo:rustc-env=UDPIO_QUINN_UDP_VERSION={version}");
}
