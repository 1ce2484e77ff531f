//! `seccomp-probe ROLE MODE ACTION`: installs a role's real seccomp filter (as the worker/broker do),
//! then performs one action, for the out-of-process filter tests (`tests/tests/e2e_seccomp.rs`).
//!
//! Actions: `harmless` (allocate, randomness, clock, write to stdout, exit 0), `open` (prints the errno of opening a
//! file, exit 0 if EACCES), `socket`, `execve`, `ptrace`, `thread` (each should be killed by SIGSYS in
//! kill mode), `mmap-exec` (an executable mapping: killed), `panic` (aborts: SIGABRT).
#![allow(unsafe_code)] // two raw syscalls the probe must issue itself (ptrace, mmap)

use std::io::Write;
use std::process::ExitCode;

use bulwark_policy::seccomp::{install, Mode, Role};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: seccomp-probe worker|broker kill|trap|log|off ACTION");
        return ExitCode::from(2);
    }
    let role = match args[0].as_str() {
        "worker" => Role::Worker,
        "broker" => Role::Broker,
        _ => return ExitCode::from(2),
    };
    let Some(mode) = Mode::parse(&args[1]) else {
        return ExitCode::from(2);
    };
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        eprintln!("no_new_privs: {e}");
        return ExitCode::from(3);
    }
    if let Err(e) = install(role, mode) {
        eprintln!("{e}");
        return ExitCode::from(4);
    }
    match args[2].as_str() {
        "harmless" => {
            // what the worker's loop does: allocate, draw randomness, read the clock, write
            let mut v: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
            v.truncate(1000);
            let mut r = [0u8; 16];
            getrandom::fill(&mut r).expect("getrandom");
            let t = std::time::Instant::now();
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "ok {} {:?}",
                v[999],
                t.elapsed() < std::time::Duration::from_secs(5)
            )
            .expect("write");
            ExitCode::SUCCESS
        }
        "open" => match std::fs::File::open("/etc/hostname") {
            Ok(_) => {
                println!("open succeeded");
                ExitCode::from(10)
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                println!("EACCES");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("open failed otherwise: {e}");
                ExitCode::from(11)
            }
        },
        "socket" => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0");
            println!("socket returned {s:?}");
            ExitCode::from(12)
        }
        "execve" => {
            let r = std::process::Command::new("/bin/true").status();
            println!("exec returned {r:?}");
            ExitCode::from(13)
        }
        "ptrace" => {
            // SAFETY: PTRACE_TRACEME takes no pointers; the probe only reports the result.
            let r = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            println!("ptrace returned {r}");
            ExitCode::from(14)
        }
        "thread" => {
            let r = std::thread::Builder::new().spawn(|| 1).map(|h| h.join());
            println!("thread returned {r:?}");
            ExitCode::from(15)
        }
        "mmap-exec" => {
            // an anonymous executable mapping must be refused
            let r = mmap_exec();
            println!("mmap returned {r}");
            ExitCode::from(16)
        }
        "panic" => panic!("deliberate panic under the filter"),
        _ => ExitCode::from(2),
    }
}

fn mmap_exec() -> String {
    // SAFETY: an anonymous mapping with no address hint; it is never dereferenced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    format!("{p:?}")
}
