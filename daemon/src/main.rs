#![deny(unsafe_code)]
//! The `bulwark` binary: see `bulwark_daemon::run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(bad) => {
                eprintln!(
                    "bulwark: argument {} is not valid UTF-8",
                    bad.to_string_lossy()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    bulwark_daemon::run::main_with_args(&args)
}
