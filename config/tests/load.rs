//! Loader behaviour: error reporting with file:line, unknown/unsupported handling,
//! includes, `cd`, the command line, inline material, and cross-option validation.

#![allow(clippy::unwrap_used)]

use bulwark_config::*;
use std::path::{Path, PathBuf};

const PKI: &str = "ca ca.crt\ncert server.crt\nkey server.key\n";
const SERVER: &str =
    "dev tun\nca ca.crt\ncert server.crt\nkey server.key\nserver 10.8.0.0 255.255.255.0\n";

fn load(text: &str) -> Loaded {
    load_str("t.conf", text, "/etc/openvpn").unwrap_or_else(|e| panic!("{}", show(&e)))
}

fn errs(text: &str) -> Vec<String> {
    match load_str("t.conf", text, "/etc/openvpn") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

fn show(e: &[ConfigError]) -> String {
    e.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn warnings(l: &Loaded) -> Vec<String> {
    l.warnings.iter().map(|w| w.to_string()).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn all_errors_collected_with_locations() {
    let text = format!("{SERVER}frobnicate 1\nport 1 2\nport 99999\ndev tap\nverb \"3\n<ca>\nxx\n");
    let e = errs(&text);
    assert_eq!(
        e,
        vec![
            "t.conf:6: unknown directive 'frobnicate' (Unrecognized option or missing or extra parameter(s)); use 'ignore-unknown-option frobnicate' or 'setenv opt frobnicate ...' to make this a warning",
            "t.conf:7: option 'port': expects 1 parameter, got 2 (usage: port PORT)",
            "t.conf:8: option 'port': bad port number '99999' (must be 1-65535)",
            "t.conf:9: option 'dev' is not supported by Bulwark: 'dev tap' (layer-2 bridging) is not supported; use 'dev tun'",
            "t.conf:10: no closing quotation (\")",
            "t.conf:11: inline block <ca> is not terminated by </ca>",
        ]
    );
}

#[test]
fn ignore_unknown_option_is_ordered() {
    let l = load(&format!(
        "{SERVER}ignore-unknown-option frob --block-outside-dns-x\nfrob 1 2 3\nblock-outside-dns-x\n"
    ));
    let w = warnings(&l);
    assert!(
        w[0].starts_with("t.conf:7: unknown option 'frob' ignored"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("t.conf:8: unknown option 'block-outside-dns-x'"),
        "{w:?}"
    );
    // Before the ignore line it is still an error.
    let e = errs(&format!("{SERVER}frob\nignore-unknown-option frob\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.conf:6: unknown directive 'frob'"));
    // A known option with the wrong parameter count is also only a warning when ignored
    // (OpenVPN reports both as "Unrecognized option or missing or extra parameter(s)").
    let l = load(&format!("{SERVER}ignore-unknown-option verb\nverb 1 2\n"));
    assert!(warnings(&l)[0].contains("option 'verb': expects 1 parameter"));
    // Unsupported stays an error even when ignored.
    let e = errs(&format!(
        "{SERVER}ignore-unknown-option fragment\nfragment 1300\n"
    ));
    assert!(e[0].contains("t.conf:7: option 'fragment' is not supported"));
}

#[test]
fn setenv_opt() {
    let l = load(&format!(
        "{SERVER}setenv opt block-outside-dns-x\nsetenv opt verb x\nsetenv FOO \"a b\"\nsetenv opt\n"
    ));
    let w = warnings(&l);
    assert!(w[0].starts_with("t.conf:6: unknown option 'block-outside-dns-x' ignored"));
    assert!(
        w[1].starts_with("t.conf:7: option 'verb': level must be"),
        "{w:?}"
    );
    assert!(w[2].starts_with("t.conf:9: 'setenv opt' without"), "{w:?}");
    assert_eq!(
        l.config.scripts.setenv,
        vec![("FOO".to_string(), "a b".to_string())]
    );
    assert_eq!(l.config.logging.verb, 1);
    // setenv opt with a known, valid option applies it.
    let l = load(&format!("{SERVER}setenv opt verb 4\n"));
    assert_eq!(l.config.logging.verb, 4);
}

#[test]
fn compression_forms() {
    for (line, want) in [
        ("compress", Compression::Stub),
        ("compress stub", Compression::Stub),
        ("compress stub-v2", Compression::StubV2),
        ("compress migrate", Compression::Migrate),
        ("comp-lzo no", Compression::LzoStub),
    ] {
        let l = load(&format!("{SERVER}{line}\n"));
        assert_eq!(l.config.compression, want, "{line}");
    }
    for line in [
        "comp-lzo",
        "comp-lzo yes",
        "comp-lzo adaptive",
        "compress lz4",
        "compress lz4-v2",
        "compress lzo",
        "allow-compression yes",
        "allow-compression asym",
    ] {
        let e = errs(&format!("{SERVER}{line}\n"));
        assert_eq!(e.len(), 1, "{line}");
        assert!(
            e[0].starts_with("t.conf:6: option '")
                && e[0].contains("is not supported by Bulwark")
                && e[0].contains("VORACLE"),
            "{line}: {e:?}"
        );
    }
    let e = errs(&format!("{SERVER}compress zstd\n"));
    assert!(e[0].contains("bad compression algorithm 'zstd'"));
}

#[test]
fn unsupported_values() {
    for (line, needle) in [
        ("dev-type tap", "'dev-type tap'"),
        ("mode p2p", "'mode p2p'"),
        ("proto tcp-client", "client protocol"),
        ("dev null", "'dev null'"),
    ] {
        let e = errs(&format!("{SERVER}{line}\n"));
        assert!(
            e[0].starts_with("t.conf:6:") && e[0].contains(needle),
            "{line}: {e:?}"
        );
    }
}

#[test]
fn inline_material_and_blocks() {
    let text = "dev tun\nserver 10.8.0.0 255.255.255.0\n<ca>\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n</ca>\ncert s.crt\n<key>\nK\n</key>\nkey-direction 0\n<tls-auth>\nT\n</tls-auth>\n<dh>\nD\n</dh>\n";
    let l = load(text);
    let c = &l.config;
    let ca = c.tls.ca.as_ref().unwrap();
    assert_eq!(
        ca.material,
        Material::Inline("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".into())
    );
    assert_eq!(ca.set_at.to_string(), "t.conf:3");
    assert_eq!(c.tls.key.as_ref().unwrap().set_at.line, 9);
    match &c.tls.control_wrap {
        ControlWrap::TlsAuth { key, direction } => {
            assert_eq!(key.material, Material::Inline("T\n".into()));
            assert_eq!(key.set_at.line, 13);
            assert_eq!(*direction, Some(KeyDirection::Normal));
        }
        w => panic!("{w:?}"),
    }
    assert_eq!(
        c.tls.dh.as_ref().unwrap().material,
        Material::Inline("D\n".into())
    );
    // Inline on an option that does not take it.
    let e = errs(&format!("{SERVER}<verb>\n3\n</verb>\n"));
    assert_eq!(
        e,
        vec!["t.conf:6: option 'verb' is not expected to be inline"]
    );
    // Connection blocks are refused in a server config, at the opening line.
    let e = errs(&format!(
        "{SERVER}<connection>\nremote vpn.example.com 1194\n</connection>\n"
    ));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with(
        "t.conf:6: option 'connection' is not supported by Bulwark: <connection> blocks"
    ));
    // Line numbers after a block count the block's lines.
    let e = errs(&format!("{SERVER}<ca>\na\nb\n</ca>\nbogus\n"));
    assert!(
        e[0].starts_with("t.conf:10: unknown directive 'bogus'"),
        "{e:?}"
    );
}

#[test]
fn validation_conflicts() {
    let e = errs(&format!("{SERVER}tls-auth ta.key 0\ntls-crypt tc.key\n"));
    assert_eq!(
        e,
        vec!["t.conf:7: --tls-auth and --tls-crypt are mutually exclusive"]
    );
    let e = errs(&format!("{SERVER}tls-crypt tc.key\ntls-crypt-v2 v2.key\n"));
    assert!(
        e[0].starts_with("t.conf:7: --tls-crypt-v2 cannot be combined"),
        "{e:?}"
    );
    let e = errs("dev tun\nserver 10.8.0.0 255.255.255.0\n");
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("t.conf: option 'cert' is missing"),
        "{e:?}"
    );
    assert!(e[1].starts_with("t.conf: option 'key' is missing"));
    assert!(e[2].starts_with("t.conf: option 'ca' is missing"));
    let e = errs(&format!("{PKI}server 10.8.0.0 255.255.255.0\n"));
    assert!(e[0].contains("option 'dev' is missing"), "{e:?}");
    let e = errs(&format!("{PKI}dev tun\n"));
    assert!(e[0].contains("not a server configuration"), "{e:?}");
    let e = errs(&format!(
        "{PKI}dev tun\nmode server\nifconfig 10.8.0.1 10.8.0.2\n"
    ));
    assert_eq!(e, vec!["t.conf:5: --mode server requires --tls-server"]);
    let e = errs(&format!("{PKI}dev vpn0\nserver 10.8.0.0 255.255.255.0\n"));
    assert!(
        e[0].starts_with("t.conf:4: option 'dev': cannot figure out the device type"),
        "{e:?}"
    );
    let e = errs(&format!("{SERVER}client\n"));
    assert!(e[0].starts_with("t.conf:6: option 'client' is not supported"));
    let e = errs(&format!("{SERVER}ccd-exclusive\n"));
    assert_eq!(
        e,
        vec!["t.conf:6: --ccd-exclusive must be used with --client-config-dir"]
    );
    let e = errs(&format!("{SERVER}verify-client-cert none\n"));
    assert!(
        e[0].starts_with("t.conf:6: --verify-client-cert none|optional must be used with"),
        "{e:?}"
    );
    let e = errs(&format!("{SERVER}username-as-common-name\n"));
    assert!(e[0].starts_with("t.conf:6: --username-as-common-name must be used with"));
    let e = errs(&format!("{SERVER}client-connect /bin/true\n"));
    assert!(e[0].starts_with("t.conf:6: --client-connect runs a user-defined script, which needs 'script-security 2'"), "{e:?}");
    let e = errs(&format!(
        "{SERVER}management-client-user root\nmanagement-hold\n"
    ));
    assert_eq!(
        e,
        vec![
            "t.conf:6: --management-client-user requires --management, which is not specified",
            "t.conf:7: --management-hold requires --management, which is not specified"
        ]
    );
    let e = errs(&format!(
        "{SERVER}management 127.0.0.1 7505\nmanagement-client-group adm\n"
    ));
    assert!(e[0].contains("can only be used on unix domain sockets"));
    let e = errs(&format!("{SERVER}proto tcp\nconnect-freq 10 60\n"));
    assert!(
        e[0].starts_with("t.conf:7: --connect-freq only works with"),
        "{e:?}"
    );
    let e = errs(&format!(
        "{SERVER}ifconfig-pool-persist ipp.txt\nserver 10.8.0.0 255.255.255.0 nopool\n"
    ));
    assert!(
        e[0].starts_with("t.conf:6: --ifconfig-pool-persist must be used with"),
        "{e:?}"
    );
    let e = errs(&format!("{SERVER}auth-gen-token\nreneg-sec 0\n"));
    assert!(
        e[0].contains("--auth-gen-token needs a non-infinite"),
        "{e:?}"
    );
    let e = errs(&format!("{SERVER}ifconfig-ipv6-pool fd00::1000/64\n"));
    assert!(
        e[0].contains("--ifconfig-ipv6-pool needs --ifconfig-ipv6"),
        "{e:?}"
    );
}

#[test]
fn validation_warnings() {
    let l = load(&format!(
        "{SERVER}duplicate-cn\nifconfig-pool-persist ipp.txt\n"
    ));
    assert!(warnings(&l)
        .iter()
        .any(|w| w == "t.conf:7: --ifconfig-pool-persist will not work with --duplicate-cn"));
    let l = load(&format!("{SERVER}proto tcp\nexplicit-exit-notify 1\n"));
    assert!(warnings(&l)
        .contains(&"t.conf:7: --explicit-exit-notify ignored for --proto tcp".to_string()));
    assert_eq!(l.config.timers.explicit_exit_notify, None);
    assert_eq!(l.config.transport.proto, Proto::TcpServer);
    let l = load(&format!("{SERVER}management 127.0.0.1 7505\n"));
    assert!(
        warnings(&l)[1].contains("WITHOUT passwords"),
        "{:?}",
        warnings(&l)
    );
    let l = load(&format!("{SERVER}dh dh2048.pem\n"));
    assert!(warnings(&l).iter().any(|w| w
        .starts_with("t.conf:6: option 'dh': Diffie-Hellman parameters are accepted and ignored")));
    let l = load(&format!("{SERVER}dh none\n"));
    assert!(!warnings(&l).iter().any(|w| w.contains("Diffie")));
}

#[test]
fn management_forms() {
    let l = load(&format!(
        "{SERVER}management /run/ovpn/mgmt.sock unix pw.txt\nmanagement-client-user alice\nmanagement-client-group adm\nmanagement-log-cache 300\nmanagement-hold\nmanagement-client-auth\nmanagement-query-passwords\n"
    ));
    let m = l.config.management.unwrap();
    assert_eq!(
        m.listen,
        ManagementListen::Unix {
            path: "/run/ovpn/mgmt.sock".into()
        }
    );
    assert_eq!(m.password_file, Some(PathBuf::from("/etc/openvpn/pw.txt")));
    assert_eq!(m.client_user.as_deref(), Some("alice"));
    assert_eq!(m.client_group.as_deref(), Some("adm"));
    assert_eq!(m.log_cache, Some(300));
    assert!(m.hold && m.client_auth && m.query_passwords);
    assert_eq!(m.set_at.line, 6);
    let l = load(&format!("{SERVER}management 127.0.0.1 7505 stdin\n"));
    let m = l.config.management.unwrap();
    assert_eq!(
        m.listen,
        ManagementListen::Tcp {
            host: "127.0.0.1".into(),
            port: 7505
        }
    );
    assert_eq!(m.password_file, Some(PathBuf::from("stdin")));
    let e = errs(&format!("{SERVER}management 127.0.0.1 notaport\n"));
    assert!(e[0].contains("option 'management': bad port number"));
}

#[test]
fn command_line_equivalence_and_order() {
    let args: Vec<String> = [
        "--dev",
        "tun",
        "--ca",
        "ca.crt",
        "--cert",
        "server.crt",
        "--key",
        "server.key",
        "--server",
        "10.8.0.0",
        "255.255.255.0",
        "--push",
        "route 10.1.0.0 255.255.0.0",
        "--verb",
        "4",
        "--proto",
        "tcp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut l = Loader::new("/etc/openvpn");
    l.command_line(&args);
    let cli = l.finish().unwrap().config;
    let file = load(&format!(
        "{SERVER}push \"route 10.1.0.0 255.255.0.0\"\nverb 4\nproto tcp\n"
    ))
    .config;
    assert_eq!(cli.push, file.push);
    assert_eq!(cli.logging.verb, 4);
    assert_eq!(cli.transport, file.transport);
    assert_eq!(
        cli.tls.ca.as_ref().unwrap().material,
        file.tls.ca.as_ref().unwrap().material
    );
    assert_eq!(
        cli.tls.ca.as_ref().unwrap().set_at.to_string(),
        "command line"
    );

    // Errors from the command line say so.
    let mut l = Loader::new("/");
    l.command_line(&[
        "--verb".to_string(),
        "x".to_string(),
        "stray".to_string(),
        "--bogus".to_string(),
    ]);
    let e: Vec<String> = l
        .finish()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        e[0],
        "command line: option 'verb': expects 1 parameter, got 2 (usage: verb N)"
    );
    assert!(e[1].starts_with("command line: unknown directive 'bogus'"));
    let mut l = Loader::new("/");
    l.command_line(&[
        "--dev".to_string(),
        "tun".to_string(),
        "x".to_string(),
        "y".to_string(),
    ]);
    let mut l2 = Loader::new("/");
    l2.command_line(&["verb".to_string(), "--dev".to_string()]);
    let e: Vec<String> = l2
        .finish()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        e[0].starts_with("command line: expected an --option, found 'verb'"),
        "{e:?}"
    );
    drop(l);
}

#[test]
fn command_line_then_file_single_valued_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.conf",
        &format!("{SERVER}verb 3\npush \"b\"\n"),
    );
    let mut l = Loader::new(dir.path());
    l.command_line(&[
        "--verb".to_string(),
        "5".to_string(),
        "--push".to_string(),
        "a".to_string(),
        "--config".to_string(),
        "s.conf".to_string(),
    ]);
    let c = l.finish().unwrap().config;
    assert_eq!(c.logging.verb, 3);
    assert_eq!(&c.push[..2], ["a", "b"]);
    // Errors that belong to no directive are reported against the file, not the command line.
    write(
        dir.path(),
        "nocert.conf",
        "dev tun\nca ca.crt\nkey k.key\nserver 10.8.0.0 255.255.255.0\n",
    );
    let mut l = Loader::new(dir.path());
    l.command_line(&[
        "--verb".to_string(),
        "3".to_string(),
        "--config".to_string(),
        "nocert.conf".to_string(),
    ]);
    let e = l.finish().unwrap_err();
    assert!(
        e[0].to_string()
            .starts_with("nocert.conf: option 'cert' is missing"),
        "{}",
        e[0]
    );
    // A single argument without -- is a config file.
    let mut l = Loader::new(dir.path());
    l.command_line(&["s.conf".to_string()]);
    assert_eq!(
        l.finish().unwrap().config.files,
        vec![dir.path().join("s.conf")]
    );
}

#[test]
fn includes_relative_to_cwd_and_nesting_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "main.conf",
        "config sub/pki.conf\ndev tun\nserver 10.8.0.0 255.255.255.0\nconfig extra.conf\n",
    );
    // Relative include inside sub/ is still relative to the cwd, as in OpenVPN.
    write(d, "sub/pki.conf", &format!("{PKI}config sub/more.conf\n"));
    write(d, "sub/more.conf", "verb 5\n");
    write(d, "extra.conf", "push \"x\"\n");
    let mut l = Loader::new(d);
    l.file("main.conf");
    let c = l.finish().unwrap_or_else(|e| panic!("{}", show(&e))).config;
    assert_eq!(c.logging.verb, 5);
    assert_eq!(c.push[0], "x");
    assert_eq!(
        c.files,
        vec![
            d.join("main.conf"),
            d.join("sub/pki.conf"),
            d.join("sub/more.conf"),
            d.join("extra.conf")
        ]
    );

    // Missing include: error at the including line.
    write(d, "broken.conf", "verb 3\nconfig nope.conf\n");
    let mut l = Loader::new(d);
    l.file("broken.conf");
    let e = l.finish().unwrap_err();
    assert!(
        e[0].to_string().starts_with(&format!(
            "broken.conf:2: cannot read configuration file '{}'",
            d.join("nope.conf").display()
        )),
        "{}",
        e[0]
    );

    // Self-include stops at 10 levels with one error.
    write(d, "self.conf", "config self.conf\n");
    let mut l = Loader::new(d);
    l.file("self.conf");
    let e = l.finish().unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(matches!(e[0], ConfigError::IncludeDepth { max: 10, .. }));
    assert!(e[0]
        .to_string()
        .starts_with("self.conf:1: maximum recursive include levels (10) exceeded"));

    // Exactly 10 levels are fine: l1 includes l2 … l10.
    for i in 1..10 {
        write(
            d,
            &format!("l{i}.conf"),
            &format!("config l{}.conf\n", i + 1),
        );
    }
    write(d, "l10.conf", SERVER);
    let mut l = Loader::new(d);
    l.file("l1.conf");
    assert!(l.finish().is_ok());
    write(d, "l10.conf", "config l11.conf\n");
    write(d, "l11.conf", SERVER);
    let mut l = Loader::new(d);
    l.file("l1.conf");
    let e = l.finish().unwrap_err();
    assert!(
        e[0].to_string()
            .starts_with("l10.conf:1: maximum recursive include levels"),
        "{}",
        e[0]
    );
}

#[test]
fn cd_changes_later_includes_and_all_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "etc/server.conf", SERVER);
    write(
        d,
        "main.conf",
        "ca early.crt\ncd etc\nconfig server.conf\nstatus st.log\n",
    );
    let mut l = Loader::new(d);
    l.file("main.conf");
    let c = l.finish().unwrap_or_else(|e| panic!("{}", show(&e))).config;
    assert_eq!(c.cwd, d.join("etc"));
    assert_eq!(c.cd, Some(PathBuf::from("etc")));
    // server.conf's `ca ca.crt` overrides; paths resolve against the final directory.
    assert_eq!(
        c.tls.ca.unwrap().material,
        Material::File(d.join("etc/ca.crt"))
    );
    assert_eq!(c.status.unwrap().path, d.join("etc/st.log"));
    assert_eq!(c.files[1], d.join("etc/server.conf"));

    write(d, "bad.conf", "cd nowhere\n");
    let mut l = Loader::new(d);
    l.file("bad.conf");
    let e = l.finish().unwrap_err();
    assert!(
        e[0].to_string()
            .starts_with("bad.conf:1: option 'cd': cannot change directory to"),
        "{}",
        e[0]
    );
    write(d, "notdir.conf", "cd main.conf\n");
    let mut l = Loader::new(d);
    l.file("notdir.conf");
    assert!(l.finish().unwrap_err()[0]
        .to_string()
        .contains("not a directory"));
}

#[test]
fn tls_auth_direction_rules() {
    let c = load(&format!("{SERVER}tls-auth ta.key\n")).config;
    assert!(matches!(
        c.tls.control_wrap,
        ControlWrap::TlsAuth {
            direction: None,
            ..
        }
    ));
    let c = load(&format!("{SERVER}key-direction 0\ntls-auth ta.key 1\n"));
    assert!(matches!(
        c.config.tls.control_wrap,
        ControlWrap::TlsAuth {
            direction: Some(KeyDirection::Inverse),
            ..
        }
    ));
    assert!(warnings(&c)
        .iter()
        .any(|w| w.contains("servers normally use 0")));
    let e = errs(&format!("{SERVER}tls-auth ta.key 2\n"));
    assert!(e[0].contains("bad key direction '2'"));
}

#[test]
fn tls_versions() {
    let l = load(&format!("{SERVER}tls-version-min 1.0\n"));
    assert!(warnings(&l)
        .iter()
        .any(|w| w.starts_with("t.conf:6: tls-version-min 1.0 is below")));
    let e = errs(&format!("{SERVER}tls-version-max 1.1\n"));
    assert!(
        e[0].starts_with("t.conf:6: tls-version-max 1.1: Bulwark implements TLS 1.2 and 1.3 only")
    );
    let e = errs(&format!(
        "{SERVER}tls-version-min 1.3\ntls-version-max 1.2\n"
    ));
    assert!(e[0].contains("lower than tls-version-min 1.3"), "{e:?}");
    let l = load(&format!(
        "{SERVER}tls-version-min 1.3 or-highest\ntls-version-max 1.2\n"
    ));
    assert_eq!(l.config.tls.version_max.as_deref(), Some("1.2"));
    let e = errs(&format!("{SERVER}tls-version-min 1.4\n"));
    assert!(e[0].contains("unknown TLS version '1.4'"));
}

#[test]
fn port_and_lport_last_wins() {
    assert_eq!(
        load(&format!("{SERVER}lport 1195\nport 1196\n"))
            .config
            .transport
            .port,
        1196
    );
    assert_eq!(
        load(&format!("{SERVER}port 1196\nlport 1195\n"))
            .config
            .transport
            .port,
        1195
    );
    assert_eq!(load(SERVER).config.transport.port, 1194);
}

#[test]
fn display_of_errors_is_file_line_message() {
    let e = load_str("/etc/openvpn/server.conf", "port\n", "/").unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "/etc/openvpn/server.conf:1: option 'port': expects 1 parameter, got 0 (usage: port PORT)"
    );
    assert_eq!(e[0].location().line, 1);
}

/// The syslog ident is known even when the configuration has errors (the daemon sends its
/// configuration errors there too): `syslog NAME` before `daemon NAME`, `openvpn` without a name,
/// none without either.
#[test]
fn syslog_ident_survives_errors() {
    let ident = |text: &str| {
        let mut l = Loader::new("/");
        l.text("t.conf", text);
        l.syslog_ident()
    };
    assert_eq!(ident("verb 3\nbogus-directive 1\n"), None);
    assert_eq!(
        ident("bogus-directive 1\nsyslog myvpn\n"),
        Some("myvpn".to_string())
    );
    assert_eq!(ident("daemon\nverb x\n"), Some("openvpn".to_string()));
    assert_eq!(
        ident("daemon d1\nsyslog s1\nport nope\n"),
        Some("s1".to_string())
    );
    let mut l = Loader::new("/");
    l.text("t.conf", "syslog myvpn\nbogus-directive 1\n");
    assert_eq!(l.syslog_ident(), Some("myvpn".to_string()));
    assert!(l.finish().is_err());
}
