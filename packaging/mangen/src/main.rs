#![deny(unsafe_code)]
//! `bulwark-mangen [--check] DIR`: writes `DIR/bulwark.conf.5` generated from the directive table,
//! or with `--check` verifies that the page in `DIR` is current (exit 1 with the first differing
//! line otherwise). The version in the page header is this workspace's version.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: bulwark-mangen [--check] DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, dir) = match args.as_slice() {
        [flag, dir] if flag == "--check" => (true, PathBuf::from(dir)),
        [dir] if !dir.starts_with('-') => (false, PathBuf::from(dir)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    let result = if check {
        bulwark_mangen::check_file(&dir.join("bulwark.conf.5"), version)
            .map(|()| format!("{} is current", dir.join("bulwark.conf.5").display()))
    } else {
        bulwark_mangen::write_conf5(&dir, version).map(|p| format!("wrote {}", p.display()))
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulwark-mangen: {e}");
            ExitCode::FAILURE
        }
    }
}
