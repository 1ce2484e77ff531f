//! `engine-harness CONFIG`: runs Bulwark's protocol engine in ONE process on a real TUN device and socket.
//!
//! A test and debugging tool, not a way to run a server: it has none of the privilege separation (it
//! keeps root, holds the private key in-process, and has no sandbox). It exists so the sans-IO engine
//! can be checked against the stock OpenVPN client independently of the process machinery, and so
//! engine benchmarks can isolate the data path. It refuses to start unless `BULWARK_ENGINE_HARNESS=1`
//! is set, so it cannot be mistaken for the daemon.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulwark_daemon::signer::{RateLimit, ServerKeySigner};
use bulwark_worker::driver::{self, Transport};
use bulwark_worker::proto::io::EngineEvent;
use bulwark_worker::proto::tls::{KeySigner, SignError};
use rustls::{SignatureAlgorithm, SignatureScheme};

#[derive(Debug)]
struct LocalSigner(Mutex<ServerKeySigner>, SignatureAlgorithm);

impl KeySigner for LocalSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.1
    }
    fn sign(&self, scheme: SignatureScheme, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut s = self.0.lock().map_err(|_| SignError::Transport {
            reason: "signer lock poisoned".into(),
        })?;
        s.sign(u16::from(scheme), msg, Instant::now())
            .map_err(|e| SignError::Refused {
                reason: e.to_string(),
            })
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("engine-harness: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    if std::env::var("BULWARK_ENGINE_HARNESS").as_deref() != Ok("1") {
        return fail("test tool only; set BULWARK_ENGINE_HARNESS=1 (no privilege separation here)");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return fail("usage: engine-harness CONFIG [--option args...]");
    };
    let mut cli = vec!["--config".to_string(), path.clone()];
    cli.extend(args[1..].iter().cloned());
    let loaded = match bulwark_config::load_args(&cli) {
        Ok(l) => l,
        Err(errs) => {
            return fail(
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
    };
    let cfg = &loaded.config;
    let settings = match bulwark_daemon::config_input::from_config(cfg) {
        Ok(s) => s,
        Err(errs) => return fail(errs.join("\n")),
    };
    let ec = match bulwark_daemon::engine::build(cfg) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let (Some(key), Some(cert)) = (&cfg.tls.key, &cfg.tls.cert) else {
        return fail("key and cert are required");
    };
    let (bulwark_config::Material::File(kp), bulwark_config::Material::File(cp)) =
        (&key.material, &cert.material)
    else {
        return fail("engine-harness needs key and cert as files");
    };
    let signer = match ServerKeySigner::load(
        kp.as_path(),
        cp.as_path(),
        RateLimit::default(),
        Instant::now(),
    ) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let alg = signer.algorithm();
    let signer: Arc<dyn KeySigner> = Arc::new(LocalSigner(Mutex::new(signer), alg));
    let tun = match bulwark_daemon::tun::TunDevice::create(&settings) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let sock = match bulwark_daemon::sockets::bind_transport(&settings, 1) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut secret = [0u8; 32];
    if getrandom::fill(&mut secret).is_err() {
        return fail("no randomness");
    }
    let rng = Box::new(|b: &mut [u8]| {
        // the OS generator cannot fail on Linux after boot; a failure aborts rather than weakens keys
        if getrandom::fill(b).is_err() {
            std::process::abort();
        }
    });
    let engine = match bulwark_worker::setup::build(&ec, signer, secret, rng) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let tun_fd = match tun.fd().try_clone_to_owned() {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let transport = if settings.transport.is_tcp() {
        Transport::Tcp(sock.fd)
    } else {
        Transport::Udp(sock.fd)
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let plane = match driver::DataPlane::new(
        engine,
        Vec::new(),
        std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0)),
        std::time::Duration::from_micros(u64::from(ec.coalesce_usecs)),
    ) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    println!("engine-harness: Initialization Sequence Completed");
    let res = rt.block_on(driver::run(plane, transport, tun_fd, rx, |ev| match ev {
        EngineEvent::Log { line, .. } => println!("{line}"),
        other => println!("event: {other:?}"),
    }));
    drop(tun);
    match res {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
