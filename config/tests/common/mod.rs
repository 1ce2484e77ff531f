//! Sample snippets shared by the directive tests and the OpenVPN differential test.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// The base configuration the samples are added to.
pub const BASE: &str =
    "dev tun\nca ca.crt\ncert s.crt\nkey s.key\nserver 10.8.0.0 255.255.255.0 nopool\n";
/// For samples that configure the server themselves (`mode server`, or their own `server`).
pub const BASE_MANUAL: &str = "dev tun\nca ca.crt\ncert s.crt\nkey s.key\n";

/// The base a snippet is added to.
pub fn base_for(snippet: &str) -> &'static str {
    if snippet.starts_with("mode server") || snippet.starts_with("server ") {
        BASE_MANUAL
    } else {
        BASE
    }
}

/// A sample snippet for every supported server directive (paths relative, scripts existing,
/// so that OpenVPN accepts them too).
pub fn samples() -> BTreeMap<&'static str, &'static str> {
    let fp = "peer-fingerprint AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
    let mut m = BTreeMap::new();
    let mut add = |k: &'static str, v: &'static str| {
        assert!(m.insert(k, v).is_none(), "{k} twice");
    };
    add("ignore-unknown-option", "ignore-unknown-option foo bar");
    add("setenv", "setenv FOO bar");
    add("setenv-safe", "setenv-safe FOO bar");
    add(
        "mode",
        "mode server\ntls-server\nifconfig 10.8.0.1 10.8.0.2",
    );
    add(
        "tls-server",
        "mode server\ntls-server\nifconfig 10.8.0.1 10.8.0.2\n",
    );
    add("server", "server 10.9.0.0 255.255.255.0");
    add(
        "server-ipv6",
        "server 10.8.0.0 255.255.255.0\nserver-ipv6 fd00::/64",
    );
    add("proto", "proto tcp");
    add("port", "port 1195");
    add("lport", "lport 1196");
    add("local", "local 127.0.0.1");
    add("float", "float");
    add("multihome", "multihome");
    add("sndbuf", "sndbuf 393216");
    add("rcvbuf", "rcvbuf 393216");
    add("tcp-queue-limit", "tcp-queue-limit 64");
    add("bcast-buffers", "bcast-buffers 256");
    add("tcp-nodelay", "tcp-nodelay");
    add("fast-io", "fast-io");
    add("dev", "dev tun0");
    add("dev-type", "dev vpn0\ndev-type tun");
    add("topology", "topology subnet");
    add("tun-mtu", "tun-mtu 1400 1500");
    add("mssfix", "mssfix 1360 mtu");
    add("txqueuelen", "txqueuelen 1000");
    add("persist-tun", "persist-tun");
    add("persist-key", "persist-key");
    add("ifconfig", "mode server\ntls-server\ntopology subnet\nifconfig 10.8.0.1 255.255.255.0\nifconfig-pool 10.8.0.10 10.8.0.20 255.255.255.0");
    add("ifconfig-ipv6", "ifconfig-ipv6 fd00::1/64 fd00::2");
    add("ifconfig-pool", "ifconfig-pool 10.8.0.10 10.8.0.100");
    add(
        "ifconfig-ipv6-pool",
        "ifconfig-ipv6 fd00::1/64 fd00::2\nifconfig-ipv6-pool fd00::1000/64",
    );
    add(
        "ifconfig-pool-persist",
        "ifconfig-pool 10.8.0.10 10.8.0.100\nifconfig-pool-persist ipp.txt 0",
    );
    add("route", "route 192.168.1.0 255.255.255.0 vpn_gateway 5");
    add("route-ipv6", "route-ipv6 fd01::/64");
    add("route-gateway", "route-gateway 10.8.0.2");
    add("route-metric", "route-metric 50");
    add("route-ipv6-gateway", "route-ipv6-gateway fd00::2");
    add("socket-flags", "socket-flags TCP_NODELAY");
    add("ca", "ca other-ca.crt");
    add("cert", "cert other.crt");
    add("key", "key other.key");
    add("extra-certs", "extra-certs chain.pem");
    add("dh", "dh none");
    add("tls-auth", "tls-auth ta.key 0");
    add("key-direction", "tls-auth ta.key\nkey-direction 0");
    add("tls-crypt", "tls-crypt tc.key");
    add("tls-crypt-v2", "tls-crypt-v2 v2.key force-cookie");
    add("crl-verify", "crl-verify crl.pem");
    add("peer-fingerprint", fp);
    add("auth", "auth SHA256");
    add("cipher", "cipher AES-256-GCM");
    add("data-ciphers", "data-ciphers AES-256-GCM:AES-128-GCM");
    add("ncp-ciphers", "ncp-ciphers AES-256-GCM");
    add("data-ciphers-fallback", "data-ciphers-fallback AES-256-CBC");
    add("tls-version-min", "tls-version-min 1.2 or-highest");
    add("tls-version-max", "tls-version-max 1.3");
    add(
        "tls-cipher",
        "tls-cipher TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    );
    add(
        "tls-ciphersuites",
        "tls-ciphersuites TLS_AES_256_GCM_SHA384",
    );
    add("tls-groups", "tls-groups X25519:prime256v1");
    add("ecdh-curve", "ecdh-curve secp384r1");
    add("tls-cert-profile", "tls-cert-profile preferred");
    add("remote-cert-tls", "remote-cert-tls client");
    add(
        "remote-cert-eku",
        "remote-cert-eku \"TLS Web Client Authentication\"",
    );
    add("remote-cert-ku", "remote-cert-ku a0 88");
    add(
        "verify-client-cert",
        "verify-client-cert optional\nscript-security 2\nauth-user-pass-verify /bin/true via-env",
    );
    add("verify-x509-name", "verify-x509-name client name-prefix");
    add(
        "x509-username-field",
        "x509-username-field ext:subjectAltName",
    );
    add(
        "tls-verify",
        "script-security 2\ntls-verify \"/bin/true --strict\"",
    );
    add("tls-timeout", "tls-timeout 5");
    add("hand-window", "hand-window 30");
    add("tran-window", "tran-window 1800");
    add("reneg-sec", "reneg-sec 3600 1800");
    add("reneg-bytes", "reneg-bytes 1000000000");
    add("reneg-pkts", "reneg-pkts 100000");
    add("tls-exit", "tls-exit");
    add("replay-window", "replay-window 128 30");
    add("mute-replay-warnings", "mute-replay-warnings");
    add("comp-lzo", "comp-lzo no");
    add("compress", "compress stub-v2");
    add("allow-compression", "allow-compression no");
    add("keepalive", "keepalive 10 60");
    add("ping", "ping 10");
    add("ping-restart", "ping-restart 60");
    add("ping-exit", "ping-exit 120");
    add("ping-timer-rem", "ping-timer-rem");
    add("inactive", "inactive 3600 1000000");
    add("explicit-exit-notify", "explicit-exit-notify 2");
    add("push", "push \"route 10.0.0.0 255.0.0.0\"");
    add("client-config-dir", "client-config-dir ccd");
    add("ccd-exclusive", "client-config-dir ccd\nccd-exclusive");
    add("client-to-client", "client-to-client");
    add("duplicate-cn", "duplicate-cn");
    add("max-clients", "max-clients 100");
    add("max-routes-per-client", "max-routes-per-client 10");
    add("connect-freq", "connect-freq 10 60");
    add("connect-freq-initial", "connect-freq-initial 100 10");
    add("hash-size", "hash-size 256 256");
    add("stale-routes-check", "stale-routes-check 300 30");
    add("block-ipv6", "block-ipv6");
    add("script-security", "script-security 2");
    add(
        "auth-user-pass-verify",
        "script-security 3\nauth-user-pass-verify \"/bin/true --x\" via-file",
    );
    add(
        "username-as-common-name",
        "username-as-common-name\nscript-security 2\nauth-user-pass-verify /bin/true via-env",
    );
    add(
        "auth-user-pass-optional",
        "auth-user-pass-optional\nmanagement m.sock unix\nmanagement-client-auth",
    );
    add(
        "client-connect",
        "script-security 2\nclient-connect /bin/true",
    );
    add(
        "client-disconnect",
        "script-security 2\nclient-disconnect /bin/true",
    );
    add(
        "learn-address",
        "script-security 2\nlearn-address /bin/true",
    );
    add("auth-gen-token", "auth-gen-token 3600 external-auth");
    add("auth-gen-token-secret", "auth-gen-token-secret token.key");
    add("tmp-dir", "tmp-dir /tmp");
    add("management", "management 127.0.0.1 7505 pw.txt");
    add(
        "management-client-user",
        "management m.sock unix\nmanagement-client-user root",
    );
    add(
        "management-client-group",
        "management m.sock unix\nmanagement-client-group adm",
    );
    add(
        "management-client-auth",
        "management m.sock unix\nmanagement-client-auth",
    );
    add("management-hold", "management m.sock unix\nmanagement-hold");
    add(
        "management-log-cache",
        "management m.sock unix\nmanagement-log-cache 100",
    );
    add(
        "management-query-passwords",
        "management m.sock unix\nmanagement-query-passwords",
    );
    add(
        "management-forget-disconnect",
        "management m.sock unix\nmanagement-forget-disconnect",
    );
    add(
        "management-signal",
        "management m.sock unix\nmanagement-signal",
    );
    add(
        "management-up-down",
        "management m.sock unix\nmanagement-up-down",
    );
    add("user", "user nobody");
    add("group", "group nogroup");
    add("chroot", "chroot .");
    add("nice", "nice 5");
    add("mlock", "mlock");
    add("daemon", "daemon ovpn");
    add("writepid", "writepid bulwark.pid");
    add("syslog", "syslog ovpn");
    add("log", "log bulwark.log");
    add("log-append", "log-append bulwark.log");
    add("verb", "verb 4");
    add("mute", "mute 20");
    add("suppress-timestamps", "suppress-timestamps");
    add("machine-readable-output", "machine-readable-output");
    add("errors-to-stderr", "errors-to-stderr");
    add("status", "status s.log 10");
    add("status-version", "status-version 2");
    add("status-json", "status-json /run/bulwark/status.json 10");
    add("status-file-mode", "status-file-mode 0640");
    add("status-file-group", "status-file-group adm");
    add("log-file-mode", "log-file-mode 0640");
    add("coalesce-usecs", "coalesce-usecs 20");
    add("data-threads", "data-threads 2");
    add("log-file-group", "log-file-group adm");
    add(
        "management-client-role",
        "management 127.0.0.1 7505\nmanagement-client-role operator group adm",
    );
    add(
        "management-default-role",
        "management 127.0.0.1 7505\nmanagement-default-role monitor",
    );
    add(
        "management-max-clients",
        "management 127.0.0.1 7505\nmanagement-max-clients 4",
    );
    add(
        "management-audit",
        "management 127.0.0.1 7505\nmanagement-audit syslog",
    );
    add(
        "management-monitor-socket",
        "management 127.0.0.1 7505\nmanagement-monitor-socket /run/bulwark-mon.sock",
    );
    add("metrics-listen", "metrics-listen 127.0.0.1 9176");
    add(
        "metrics-per-client",
        "metrics-listen 127.0.0.1 9176\nmetrics-per-client 50",
    );
    m
}

/// Samples for client-config-dir-only directives.
pub fn ccd_samples() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("push-reset", "push-reset"),
        ("ifconfig-push", "ifconfig-push 10.8.0.5 255.255.255.0"),
        (
            "ifconfig-ipv6-push",
            "ifconfig-ipv6-push fd00::5/64 fd00::1",
        ),
        ("iroute", "iroute 192.168.5.0 255.255.255.0"),
        ("iroute-ipv6", "iroute-ipv6 fd05::/64"),
        ("disable", "disable"),
        ("push-remove", "push-remove route"),
    ])
}
