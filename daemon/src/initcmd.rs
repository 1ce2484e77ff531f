//! `bulwark init DIR`: generate a CA, server and client certificates, the control-channel key, a
//! `server.conf` and client profiles (through the `bulwark_pki` engine).

use std::process::ExitCode;

use crate::cli::InitArgs;

/// Runs `bulwark init`; prints what was written, or one error line (exit 1).
pub fn run(a: &InitArgs) -> ExitCode {
    let mut opts = bulwark_pki::InitOptions::with_clients(a.clients);
    opts.key_kind = a.key;
    let pki = match bulwark_pki::generate(&opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bulwark init: {}", crate::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let conf = bulwark_pki::ServerConfOptions {
        port: a.port,
        proto: if a.tcp {
            bulwark_pki::Proto::Tcp
        } else {
            bulwark_pki::Proto::Udp
        },
        wrap: a.wrap,
        ..bulwark_pki::ServerConfOptions::default()
    };
    match bulwark_pki::write_dir(&pki, &a.dir, &conf) {
        Ok(w) => {
            println!("wrote {}", w.server_conf.display());
            println!("CA key (keep offline): {}", w.ca_key.display());
            for (cn, p) in &w.client_profiles {
                println!("client profile {cn}: {}", p.display());
            }
            println!(
                "start the server with: bulwark --config {}",
                w.server_conf.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulwark init: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
