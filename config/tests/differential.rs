//! Differential test against the installed OpenVPN 2.6 (the interop judge): OpenVPN prints
//! its fully post-processed options at `--verb 4` before it loads any key material. Each case
//! runs `openvpn` inside a fresh, anonymous network namespace (`unshare -n`, gone when the
//! process exits) with dummy key files, so it fails at the first certificate load without
//! touching the host; its printed ifconfig/pool/push/ping values are compared with Bulwark's
//! expansion. Skipped (with a message) when `/usr/sbin/openvpn`, `unshare` or root is missing.

#![allow(clippy::unwrap_used)]

mod common;

use bulwark_config::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const OPENVPN: &str = "/usr/sbin/openvpn";

fn prerequisites() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let unshare = Command::new("unshare").arg("--version").output().is_ok();
    let ok = root && unshare && Path::new(OPENVPN).exists();
    if !ok {
        eprintln!("SKIPPED: differential test needs root, unshare and {OPENVPN}");
    }
    ok
}

/// Runs OpenVPN on `text` and returns its `show_settings` lines as key -> values.
fn openvpn_settings(dir: &Path, text: &str) -> BTreeMap<String, Vec<String>> {
    for f in [
        "ca.crt",
        "server.crt",
        "server.key",
        "ta.key",
        "tc.key",
        "dh.pem",
        "dh2048.pem",
        "crl.pem",
        "tls-crypt.key",
    ] {
        std::fs::write(dir.join(f), "dummy\n").unwrap();
    }
    std::fs::create_dir_all(dir.join("ccd")).unwrap();
    std::fs::write(dir.join("s.conf"), text).unwrap();
    let out = Command::new("timeout")
        .args(["20", "unshare", "-n", OPENVPN, "--cd"])
        .arg(dir)
        .args(["--config", "s.conf", "--verb", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // It must have printed its settings and then stopped at the dummy key material.
    assert!(
        stdout.contains("Current Parameter Settings:")
            && stdout.contains("Exiting due to fatal error")
            && !stdout.contains("Initialization Sequence Completed"),
        "openvpn did not stop at loading keys:\n{stdout}"
    );
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        // "2026-11-22 09:11:20 us=483250   ifconfig_local = '10.8.0.1'"
        let Some((_, rest)) = line.split_once(" us=") else {
            continue;
        };
        let Some((_, setting)) = rest.split_once("   ") else {
            continue;
        };
        if let Some((k, v)) = setting.split_once(" = ") {
            map.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().trim_matches('\'').to_string());
        }
    }
    map
}

fn one<'a>(m: &'a BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
    m.get(k)
        .map(|v| v[0].as_str())
        .unwrap_or_else(|| panic!("openvpn did not print {k}"))
}

fn compare(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let theirs = openvpn_settings(dir.path(), text);
    let ours = load_str("s.conf", text, dir.path()).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let c = &ours.config;
    let ctx = format!("config:\n{text}");

    let push: Vec<String> = theirs.get("push_entry").cloned().unwrap_or_default();
    assert_eq!(c.push, push, "push list; {ctx}");

    let topo = match c.topology {
        Topology::Net30 => "1",
        Topology::P2p => "2",
        Topology::Subnet => "3",
    };
    assert_eq!(one(&theirs, "topology"), topo, "{ctx}");
    match &c.ifconfig_v4 {
        Some(i) => {
            assert_eq!(one(&theirs, "ifconfig_local"), i.local.to_string(), "{ctx}");
            assert_eq!(
                one(&theirs, "ifconfig_remote_netmask"),
                i.remote_or_netmask.to_string(),
                "{ctx}"
            );
        }
        None => assert_eq!(one(&theirs, "ifconfig_local"), "[UNDEF]", "{ctx}"),
    }
    match &c.pool_v4 {
        Some(p) => {
            assert_eq!(one(&theirs, "ifconfig_pool_defined"), "ENABLED", "{ctx}");
            assert_eq!(
                one(&theirs, "ifconfig_pool_start"),
                p.start.to_string(),
                "{ctx}"
            );
            assert_eq!(
                one(&theirs, "ifconfig_pool_end"),
                p.end.to_string(),
                "{ctx}"
            );
            let mask = p.netmask.map(|m| m.to_string()).unwrap_or("0.0.0.0".into());
            assert_eq!(one(&theirs, "ifconfig_pool_netmask"), mask, "{ctx}");
        }
        None => assert_eq!(one(&theirs, "ifconfig_pool_defined"), "DISABLED", "{ctx}"),
    }
    match &c.ifconfig_v6 {
        Some(i) => {
            assert_eq!(
                one(&theirs, "ifconfig_ipv6_local"),
                i.local.to_string(),
                "{ctx}"
            );
            assert_eq!(
                one(&theirs, "ifconfig_ipv6_remote"),
                i.remote.to_string(),
                "{ctx}"
            );
            assert_eq!(
                one(&theirs, "ifconfig_ipv6_netbits"),
                i.prefix_len.to_string(),
                "{ctx}"
            );
        }
        None => assert_eq!(one(&theirs, "ifconfig_ipv6_local"), "[UNDEF]", "{ctx}"),
    }
    if let Some(p) = &c.pool_v6 {
        assert_eq!(
            one(&theirs, "ifconfig_ipv6_pool_base"),
            p.base.to_string(),
            "{ctx}"
        );
        assert_eq!(
            one(&theirs, "ifconfig_ipv6_pool_netbits"),
            p.prefix_len.to_string(),
            "{ctx}"
        );
    }
    assert_eq!(
        one(&theirs, "ping_send_timeout"),
        c.timers.ping.unwrap_or(0).to_string(),
        "{ctx}"
    );
    assert_eq!(
        one(&theirs, "ping_rec_timeout"),
        c.timers.ping_restart.unwrap_or(0).to_string(),
        "{ctx}"
    );
    assert_eq!(
        one(&theirs, "route_default_gateway"),
        c.route_gateway.clone().unwrap_or("[UNDEF]".into()),
        "{ctx}"
    );
    assert_eq!(
        one(&theirs, "local_port"),
        c.transport.port.to_string(),
        "{ctx}"
    );
    assert_eq!(one(&theirs, "mode"), "1", "server mode; {ctx}");
    assert_eq!(one(&theirs, "tls_server"), "ENABLED", "{ctx}");
}

const PKI: &str = "ca ca.crt\ncert server.crt\nkey server.key\ndh none\n";

#[test]
fn server_macro_matches_openvpn() {
    if !prerequisites() {
        return;
    }
    for body in [
        "topology subnet\nserver 10.8.0.0 255.255.255.0\n",
        "server 10.8.0.0 255.255.255.0\n",
        "server 10.8.0.0 255.255.255.0\nclient-to-client\n",
        "topology p2p\nserver 10.8.0.0 255.255.255.0\n",
        "topology p2p\nclient-to-client\nserver 10.8.0.0 255.255.255.0\n",
        "server 10.8.0.0 255.255.255.248\n",
        "topology subnet\nserver 10.8.0.0 255.255.255.248\n",
        "topology subnet\nserver 172.16.0.0 255.255.0.0\n",
        "topology subnet\nserver 10.8.0.0 255.255.255.0 nopool\n",
        "topology subnet\nserver 10.8.0.0 255.255.255.0 nopool\nifconfig-pool 10.8.0.100 10.8.0.200\n",
        "topology subnet\nroute-gateway 10.8.0.9\nserver 10.8.0.0 255.255.255.0\n",
        "topology subnet\nserver 10.8.0.0 255.255.255.0\nserver-ipv6 fd42:42:42:42::/112\n",
        "server 10.8.0.0 255.255.255.0\nserver-ipv6 2001:db8::/64\n",
        "server-ipv6 2001:db8:1::/124\n",
        "topology subnet\nserver 10.8.0.0 255.255.255.0\nkeepalive 10 120\npush \"redirect-gateway def1\"\n",
        "server 10.8.0.0 255.255.255.0\nkeepalive 15 60\ntcp-nodelay\nproto tcp\n",
        "server 10.8.0.0 255.255.255.0\nping 5\nping-restart 30\n",
        "server 10.8.0.0 255.255.255.0\nlport 1195\nport 1196\n",
        "server 10.8.0.0 255.255.255.0\nport 1196\nlport 1195\n",
    ] {
        compare(&format!("dev tun\n{PKI}{body}"));
    }
}

#[test]
fn fixtures_match_openvpn() {
    if !prerequisites() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/configs");
    // Fixtures whose key files are relative (dummies are created); user/group/status/
    // management lines are removed because they name host paths and accounts.
    for name in [
        "upstream-sample-server.conf",
        "nyr-server.conf",
        "angristan-pki.conf",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let text: String = text
            .lines()
            .filter(|l| {
                !["user ", "group ", "status ", "management ", "cert ", "key "]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        compare(&format!("{text}cert server.crt\nkey server.key\n"));
    }
}

/// Runs OpenVPN and reports whether it refused the options (before printing its settings).
fn openvpn_refuses(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["ca.crt", "server.crt", "server.key", "ta.key", "tc.key"] {
        std::fs::write(d.join(f), "dummy\n").unwrap();
    }
    std::fs::write(d.join("s.conf"), text).unwrap();
    let out = Command::new("timeout")
        .args(["20", "unshare", "-n", OPENVPN, "--cd"])
        .arg(d)
        .args(["--config", "s.conf", "--verb", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        !stdout.contains("Current Parameter Settings:") && !out.status.success(),
        stdout,
    )
}

#[test]
fn refuses_what_openvpn_refuses() {
    if !prerequisites() {
        return;
    }
    for body in [
        "server 10.8.0.0 255.255.255.252\n",
        "server 10.0.0.0 255.254.0.0\n",
        "server 10.8.0.1 255.255.255.0\n",
        "server-ipv6 2001:db8::/56\n",
        "server 10.8.0.0 255.255.255.0\nkeepalive 10 15\n",
        "server 10.8.0.0 255.255.255.0\nkeepalive 10 60\nping 5\n",
        "server 10.8.0.0 255.255.255.0\nccd-exclusive\n",
        "server 10.8.0.0 255.255.255.0\ntls-auth ta.key 0\ntls-crypt tc.key\n",
        "server 10.8.0.0 255.255.255.0\nifconfig-pool 10.8.0.10 10.8.0.20\n",
        "server 10.8.0.0 255.255.255.0\nverify-client-cert none\n",
        "server 10.8.0.0 255.255.255.0\nmanagement-hold\n",
        "server 10.8.0.0 255.255.255.0\nmanagement 127.0.0.1 7505\nmanagement-client-user root\n",
        "server 10.8.0.0 255.255.255.0\nproto tcp\nconnect-freq 10 60\n",
        "server 10.8.0.0 255.255.255.0\nclient-cert-not-required\n",
        "server 10.8.0.0 255.255.255.0\nport 1 2\n",
        "server 10.8.0.0 255.255.255.0\nfrobnicate\n",
        "server 10.8.0.0 255.255.255.0 nopool\nserver 10.8.0.0 255.255.255.0\nserver-ipv6 fd00::/64\n",
        "server 10.8.0.0 255.255.255.0\npush-remove route\n",
        "server 10.8.0.0 255.255.255.0\npush \"unterminated\n",
        "server 10.8.0.0 255.255.255.0\nsetenv x c:\\dir\n",
    ] {
        let text = format!("dev tun\n{PKI}{body}");
        let (refused, out) = openvpn_refuses(&text);
        assert!(refused, "OpenVPN accepted:\n{text}\n{out}");
        assert!(
            load_str("s.conf", &text, "/").is_err(),
            "Bulwark accepted what OpenVPN refuses:\n{text}\n{out}"
        );
    }
}

#[test]
fn lexer_matches_openvpn_on_push_lines() {
    if !prerequisites() {
        return;
    }
    let lines = [
        r#"push "route 10.1.0.0 255.255.0.0""#,
        r#"push "echo a \"quoted\" word""#,
        r#"push 'single "quoted" \ text'"#,
        r#"push plain\ escaped\ spaces"#,
        r#"push "back\\slash""#,
        r##"push "#not a comment""##,
        r#"push x#y ; trailing comment"#,
        r#"push a;b # comment"#,
        "push\t\"tab separated\"\r",
        r#"--push "double dash""#,
        r#"push \"leading-escaped-quote"#,
        r#"  push   "indented"   "#,
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let text = format!("dev tun\n{PKI}server 10.8.0.0 255.255.255.0 nopool\ntopology p2p\n{body}");
    let dir = tempfile::tempdir().unwrap();
    let theirs = openvpn_settings(dir.path(), &text);
    let ours = load_str("s.conf", &text, dir.path()).unwrap();
    let push: Vec<String> = theirs.get("push_entry").cloned().unwrap_or_default();
    assert_eq!(ours.config.push, push);
    assert_eq!(push.len(), lines.len() + 1);
}

/// Runs OpenVPN on `text` (with dummy files) and returns (printed its settings, output).
fn openvpn_accepts(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in [
        "ca.crt",
        "s.crt",
        "s.key",
        "other-ca.crt",
        "other.crt",
        "other.key",
        "chain.pem",
        "ta.key",
        "tc.key",
        "v2.key",
        "crl.pem",
        "token.key",
        "pw.txt",
    ] {
        std::fs::write(d.join(f), "dummy\n").unwrap();
    }
    std::fs::create_dir_all(d.join("ccd")).unwrap();
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    std::fs::write(d.join("s.conf"), text).unwrap();
    // `management-hold` waits for a management client after printing the settings: the
    // timeout ends it.
    let out = Command::new("timeout")
        .args(["5", "unshare", "-n", OPENVPN, "--cd"])
        .arg(d)
        .args(["--config", "s.conf", "--verb", "4"])
        .output()
        .unwrap();
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    // `log`/`log-append` redirect OpenVPN's output into the file.
    if let Ok(log) = std::fs::read_to_string(d.join("bulwark.log")) {
        output.push_str(&log);
    }
    (output.contains("Current Parameter Settings:"), output)
}

#[test]
fn openvpn_accepts_every_supported_sample() {
    if !prerequisites() {
        return;
    }
    let mut failures = Vec::new();
    for (name, snippet) in common::samples() {
        // These two send OpenVPN's output to syslog (and `daemon` forks), so there is nothing
        // to compare on stdout.
        if ["syslog", "daemon"].contains(&name) {
            continue;
        }
        // Bulwark's own directives (documented as such in their help text).
        if [
            "status-json",
            "status-file-mode",
            "status-file-group",
            "log-file-mode",
            "coalesce-usecs",
            "data-threads",
            "log-file-group",
            "management-client-role",
            "management-default-role",
            "management-max-clients",
            "management-audit",
            "management-monitor-socket",
            "metrics-listen",
            "metrics-per-client",
        ]
        .contains(&name)
        {
            continue;
        }
        // OpenVPN 2.6 insists on a `dh` line; Bulwark does not (ECDHE only).
        let text = format!("{}dh none\n{snippet}\n", common::base_for(snippet));
        let (ok, out) = openvpn_accepts(&text);
        if !ok {
            let why: Vec<&str> = out.lines().filter(|l| l.contains("rror")).collect();
            failures.push(format!("{name}: {why:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "OpenVPN refused:\n{}",
        failures.join("\n")
    );
}
