//! Key custody: the server's private key never crosses to the worker. The worker's whole start-up
//! message (`WorkerInit` with the engine configuration, as encoded on the wire) is searched for the key's
//! bytes in every form a leak could take (DER, PEM text, base64 body, hex); it must contain none of them,
//! while it does contain the certificate (a positive control, so the search is known to work).

use bulwark_ipc::msg::engine::EngineConfig;
use bulwark_ipc::msg::{FdRole, ParentToWorker, SeccompMode, WorkerConfig, WorkerInit};
use bulwark_pki::{generate, write_dir, InitOptions, KeyKind, ServerConfOptions, WrapMode};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .expect("PEM body")
}

fn wire_bytes_of_worker_init(kind: KeyKind, wrap: WrapMode) -> (Vec<u8>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = generate(&InitOptions {
        key_kind: kind,
        ..InitOptions::with_clients(1)
    })
    .expect("pki");
    let opts = ServerConfOptions {
        wrap,
        ..Default::default()
    };
    let written = write_dir(&pki, &dir.path().join("srv"), &opts).expect("write");
    let loaded = bulwark_config::load_file(&written.server_conf, &[]).expect("config");
    let engine: EngineConfig =
        bulwark_daemon::engine::build(&loaded.config).expect("engine config");
    let init = ParentToWorker::Init(Box::new(WorkerInit {
        config: WorkerConfig {
            uid: 65534,
            gid: 65534,
            chroot_dir: "/run/bulwark/empty".into(),
            verb: 3,
            engine,
            seccomp: SeccompMode::Kill,
        },
        fds: vec![FdRole::Tun, FdRole::UdpSocket],
    }));
    let bytes = bulwark_ipc::codec::encode(&init).expect("encode");
    let key_pem = std::fs::read_to_string(dir.path().join("srv/server.key")).expect("server key");
    let cert_pem = std::fs::read_to_string(dir.path().join("srv/server.crt")).expect("server cert");
    (bytes, key_pem, cert_pem)
}

#[test]
fn the_private_key_never_reaches_the_worker() {
    for (kind, wrap) in [
        (KeyKind::EcP256, WrapMode::TlsCrypt),
        (KeyKind::Rsa2048, WrapMode::TlsAuth),
    ] {
        let (wire, key_pem, cert_pem) = wire_bytes_of_worker_init(kind, wrap);
        let der = pem_body(&key_pem);
        assert!(der.len() > 100);
        // positive control: the certificate is in there
        assert!(contains(&wire, &pem_body(&cert_pem)) || contains(&wire, cert_pem.as_bytes()));
        assert!(
            !contains(&wire, &der),
            "{kind:?}: private key DER found in the worker's init"
        );
        assert!(
            !contains(&wire, key_pem.as_bytes()),
            "private key PEM found"
        );
        for line in key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        {
            assert!(
                !contains(&wire, line.as_bytes()),
                "a base64 line of the key found"
            );
        }
        // any 32-byte window of the key (catches partial copies, e.g. the raw scalar of an EC key)
        for w in der.chunks(32).filter(|c| c.len() == 32) {
            assert!(
                !contains(&wire, w),
                "a 32-byte piece of the private key found"
            );
            assert!(
                !contains(&wire, hex::encode(w).as_bytes()),
                "hex of a key piece found"
            );
        }
    }
}
