//! Loads every generator-shaped fixture in `tests/fixtures/configs` unmodified and checks
//! the key values.

#![allow(clippy::unwrap_used)]

use bulwark_config::*;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/configs")
}

fn load(name: &str, cli: &[&str]) -> Loaded {
    let mut l = Loader::new(dir());
    let cli: Vec<String> = cli.iter().map(|s| s.to_string()).collect();
    if !cli.is_empty() {
        l.command_line(&cli);
    }
    l.file(name);
    match l.finish() {
        Ok(l) => l,
        Err(e) => panic!(
            "{name}:\n{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn file(m: &Option<MaterialRef>) -> PathBuf {
    match &m.as_ref().unwrap().material {
        Material::File(p) => p.clone(),
        Material::Inline(_) => panic!("expected a file"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn every_fixture_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "angristan-fingerprint.conf",
            "angristan-pki.conf",
            "debian-server.conf",
            "nyr-server.conf",
            "pivpn-server.conf",
            "upstream-sample-server.conf"
        ]
    );
}

#[test]
fn upstream_sample() {
    let l = load("upstream-sample-server.conf", &[]);
    let c = &l.config;
    assert_eq!(c.transport.proto, Proto::Udp);
    assert_eq!(c.transport.port, 1194);
    assert_eq!(c.device.name, "tun");
    assert_eq!(file(&c.tls.ca), dir().join("ca.crt"));
    assert_eq!(file(&c.tls.key), dir().join("server.key"));
    assert_eq!(file(&c.tls.dh), dir().join("dh2048.pem"));
    assert_eq!(c.topology, Topology::Subnet);
    assert_eq!(c.pool_v4.as_ref().unwrap().start, ip("10.8.0.2"));
    assert_eq!(
        c.clients.pool_persist.as_ref().unwrap().path,
        dir().join("ipp.txt")
    );
    assert_eq!(c.clients.pool_persist.as_ref().unwrap().seconds, 600);
    assert_eq!(c.timers.ping, Some(10));
    assert_eq!(c.timers.ping_restart, Some(240));
    assert!(c.crypto.persist_key && c.device.persist_tun);
    let status = c.status.as_ref().unwrap();
    assert_eq!(status.path, dir().join("openvpn-status.log"));
    assert_eq!(status.interval, 60);
    assert_eq!(c.status_version, 1);
    assert_eq!(c.logging.verb, 3);
    assert_eq!(c.timers.explicit_exit_notify, Some(1));
    assert_eq!(
        c.push,
        [
            "route-gateway 10.8.0.1",
            "topology subnet",
            "ping 10",
            "ping-restart 120"
        ]
    );
    assert_eq!(c.tls.control_wrap, ControlWrap::None);
    // dh file: accepted with a warning.
    assert!(l.warnings.iter().any(|w| w.message.contains("ECDHE")));
}

#[test]
fn debian_with_unit_command_line() {
    // The Debian/upstream unit passes these before --config.
    let l = load(
        "debian-server.conf",
        &[
            "--status",
            "/run/openvpn-server/status-server.log",
            "--status-version",
            "2",
            "--suppress-timestamps",
        ],
    );
    let c = &l.config;
    // The file's status wins (processed after the command line); status-version stays 2.
    assert_eq!(
        c.status.as_ref().unwrap().path,
        PathBuf::from("/var/log/openvpn/openvpn-status.log")
    );
    assert_eq!(c.status_version, 2);
    assert!(c.logging.suppress_timestamps);
    assert_eq!(c.files, vec![dir().join("debian-server.conf")]);
}

#[test]
fn angristan_pki() {
    let l = load("angristan-pki.conf", &[]);
    let c = &l.config;
    assert_eq!(c.privileges.user.as_deref(), Some("nobody"));
    assert_eq!(c.privileges.group.as_deref(), Some("nogroup"));
    assert!(c.tls.dh_none && c.tls.dh.is_none());
    assert_eq!(c.tls.groups.as_deref(), Some("X25519:prime256v1:secp384r1"));
    match &c.tls.control_wrap {
        ControlWrap::TlsCrypt { key } => {
            assert_eq!(key.material, Material::File(dir().join("tls-crypt.key")))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.crypto.data_ciphers, ["AES-128-GCM"]);
    assert_eq!(c.crypto.cipher.as_deref(), Some("AES-128-GCM"));
    assert_eq!(c.crypto.auth.as_deref(), Some("SHA256"));
    assert_eq!(c.tls.version_min.as_ref().unwrap().version, "1.2");
    assert_eq!(c.tls.remote_cert_tls, Some(RemoteCertTls::Client));
    assert_eq!(c.ignore_unknown, ["data-ciphers"]);
    assert_eq!(
        c.clients.config_dir.as_deref(),
        Some(dir().join("ccd").as_path())
    );
    let m = c.management.as_ref().unwrap();
    assert_eq!(
        m.listen,
        ManagementListen::Unix {
            path: "/var/run/openvpn-server/server.sock".into()
        }
    );
    assert_eq!(m.password_file, None);
    let v6 = c.ifconfig_v6.as_ref().unwrap();
    assert_eq!(v6.local.to_string(), "fd42:42:42:42::1");
    assert_eq!(
        c.pool_v6.as_ref().unwrap().base.to_string(),
        "fd42:42:42:42::2"
    );
    assert_eq!(
        c.push,
        [
            "tun-ipv6",
            "dhcp-option DNS 1.0.0.1",
            "dhcp-option DNS 1.1.1.1",
            "dhcp-option DNS 2606:4700:4700::1001",
            "dhcp-option DNS 2606:4700:4700::1111",
            "redirect-gateway def1 bypass-dhcp",
            "route-ipv6 2000::/3",
            "redirect-gateway ipv6",
            "tun-ipv6",
            "route-gateway 10.8.0.1",
            "topology subnet",
            "ping 10",
            "ping-restart 120"
        ]
    );
}

#[test]
fn angristan_fingerprint() {
    let l = load("angristan-fingerprint.conf", &[]);
    let c = &l.config;
    assert_eq!(c.transport.proto, Proto::TcpServer);
    assert_eq!(c.transport.family, AddrFamily::V6);
    assert_eq!(c.transport.port, 443);
    assert!(c.tls.ca.is_none());
    assert_eq!(c.tls.peer_fingerprints.len(), 2);
    assert!(c.tls.peer_fingerprints[0].starts_with("5E:66:0A"));
    assert!(matches!(
        c.tls.control_wrap,
        ControlWrap::TlsCryptV2 {
            force_cookie: false,
            ..
        }
    ));
    assert!(c.clients.duplicate_cn);
    assert!(c.clients.pool_persist.is_none());
    assert_eq!(c.device.tun_mtu, 1420);
    assert_eq!(c.tls.version_min.as_ref().unwrap().version, "1.3");
    assert!(c.push.contains(&"block-ipv6".to_string()));
}

#[test]
fn nyr() {
    let l = load("nyr-server.conf", &[]);
    let c = &l.config;
    assert_eq!(c.transport.local.as_deref(), Some("203.0.113.10"));
    assert_eq!(c.crypto.auth.as_deref(), Some("SHA512"));
    assert!(matches!(c.tls.control_wrap, ControlWrap::TlsCrypt { .. }));
    assert_eq!(c.timers.explicit_exit_notify, Some(1));
    assert_eq!(
        c.pool_v6.as_ref().unwrap().base.to_string(),
        "fddd:1194:1194:1194::1000"
    );
    assert_eq!(
        c.tls.crl_verify.as_ref().unwrap().source.material,
        Material::File(dir().join("crl.pem"))
    );
    assert!(c.push.contains(&"block-outside-dns".to_string()));
}

#[test]
fn pivpn() {
    let l = load("pivpn-server.conf", &[]);
    let c = &l.config;
    match &c.tls.control_wrap {
        ControlWrap::TlsAuth { key, direction } => {
            assert_eq!(
                key.material,
                Material::File("/etc/openvpn/easy-rsa/pki/ta.key".into())
            );
            assert_eq!(*direction, Some(KeyDirection::Normal));
        }
        other => panic!("{other:?}"),
    }
    assert!(c.clients.client_to_client);
    assert_eq!(c.timers.keepalive, Some((15, 120)));
    let s = c.status.as_ref().unwrap();
    assert_eq!(s.interval, 20);
    assert_eq!(c.status_version, 3);
    assert_eq!(c.logging.syslog, Some(None));
    assert_eq!(c.crypto.cipher.as_deref(), Some("AES-256-CBC"));
    // cipher not in the default data-ciphers: OpenVPN's deprecation warning.
    assert!(l
        .warnings
        .iter()
        .any(|w| w.message.contains("missing in --data-ciphers")));
}

#[test]
fn ccd_file() {
    let path = dir().join("ccd/client1");
    let text = std::fs::read(&path).unwrap();
    let (ccd, warnings) = parse_ccd(&path, &text).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(
        ccd.ifconfig_push,
        Some((ip("10.8.0.50"), ip("255.255.255.0")))
    );
    assert_eq!(ccd.iroutes, vec![(ip("192.168.40.0"), ip("255.255.255.0"))]);
    assert_eq!(ccd.iroutes_v6.len(), 1);
    assert!(ccd.push_reset);
    assert_eq!(
        ccd.push,
        [
            "route 192.168.50.0 255.255.255.0",
            "dhcp-option DNS 10.8.0.1"
        ]
    );
}
