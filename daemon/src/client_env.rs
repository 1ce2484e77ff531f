//! The per-client environment shown in `>CLIENT:ENV` blocks, in OpenVPN 2.6's order.
//!
//! OpenVPN keeps one environment list per client instance; setting a variable removes any
//! earlier value and puts the new one at the head, and a `>CLIENT:` block prints the list head
//! first (after `n_clients`), followed by the daemon's variables. The order a management client
//! sees is therefore the history of the sets. [`ClientEnv`] models the list and its methods
//! replay OpenVPN's sequences of sets (checked against the 2.6.14 captures
//! `mgmt-server/no-command__unsolicited-CLIENT-ESTABLISHED.raw` and
//! `sessions/server-management-client-auth.raw`):
//! * [`ClientEnv::tls_verified`]: the certificate chain (deepest first, per depth `X509_*`,
//!   `tls_id`, `tls_digest`, `tls_digest_sha256`, `tls_serial`, `tls_serial_hex`), the untrusted
//!   address, the peer-info variables in the order sent, and — when the client sent a
//!   username/password — `username`, `common_name`, the untrusted address again and `password`;
//! * [`ClientEnv::connected`]: `common_name`, the trusted address, the pool addresses, then
//!   `time_ascii` and `time_unix` (`multi_client_connect_setenv`); the pool addresses are set once
//!   more when the connection was configured by `client-auth` lines or a `client-connect` script;
//! * [`ClientEnv::disconnected`]: the trusted address, byte counters and duration.
//!
//! Pure data: no I/O, unit tested against the captures.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bulwark_ipc::msg::engine::PoolData;

/// The environment list of one client instance, head (newest) first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientEnv {
    head_first: Vec<(String, String)>,
}

/// Addresses a client was given, for the pool variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// Virtual IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// Virtual IPv6 address.
    pub v6: Option<Ipv6Addr>,
}

impl ClientEnv {
    /// Sets `k` (moving it to the head).
    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        self.del(k);
        self.head_first.insert(0, (k.to_string(), v.into()));
    }

    /// Removes `k` if present.
    pub fn del(&mut self, k: &str) {
        self.head_first.retain(|(n, _)| n != k);
    }

    /// The variables, head first.
    pub fn vars(&self) -> &[(String, String)] {
        &self.head_first
    }

    /// Sets an address as OpenVPN's `setenv_sockaddr` does: `PREFIX_ip` (IPv4, also for
    /// IPv4-mapped IPv6) or `PREFIX_ip6`, then `PREFIX_port`.
    fn set_sockaddr(&mut self, prefix: &str, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(v4) => self.set(&format!("{prefix}_ip"), v4.to_string()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.set(&format!("{prefix}_ip"), v4.to_string()),
                None => self.set(&format!("{prefix}_ip6"), v6.to_string()),
            },
        }
        self.set(&format!("{prefix}_port"), a.port().to_string());
    }

    /// The sets of a verified TLS session (first connection and every renegotiation).
    /// `cert_env` is in set order (deepest certificate first), `peer_info` as sent; `user_pass`
    /// is the username and password the client sent, if any.
    ///
    /// As OpenVPN's certificate verification: per depth (deepest first) the certificate's
    /// variables then the untrusted address; at depth 0 the common name first.
    pub fn tls_verified(
        &mut self,
        cert_env: &[(String, String)],
        real: SocketAddr,
        peer_info: &[String],
        common_name: &str,
        user_pass: Option<(&str, Option<&str>)>,
    ) {
        let mut depth: Option<u32> = None;
        for (k, v) in cert_env {
            let d = cert_depth(k);
            if d != depth {
                if depth.is_some() {
                    self.set_sockaddr("untrusted", real);
                }
                if d == Some(0) {
                    self.set("common_name", common_name);
                }
                depth = d;
            }
            self.set(k, v.clone());
        }
        self.set_sockaddr("untrusted", real);
        for l in peer_info {
            if let Some((k, v)) = l.split_once('=') {
                self.set(k, v);
            }
        }
        if let Some((username, password)) = user_pass {
            self.set("username", username);
            self.set("common_name", common_name);
            self.set_sockaddr("untrusted", real);
            if let Some(p) = password {
                self.set("password", p);
            }
        }
    }

    /// The sets when the TLS connection is initiated (the trusted address — the untrusted one,
    /// now verified — and the common name set at verification), visible in a
    /// `>CLIENT:CR_RESPONSE` block.
    pub fn initiated(&mut self) {
        let untrusted = self
            .head_first
            .iter()
            .find(|(k, _)| k == "untrusted_ip" || k == "untrusted_ip6")
            .map(|(k, v)| (k.replace("untrusted", "trusted"), v.clone()));
        let port = self.value("untrusted_port").map(str::to_string);
        if let (Some((k, ip)), Some(port)) = (untrusted, port) {
            self.set(&k, ip);
            self.set("trusted_port", port);
        }
        if let Some(cn) = self.value("common_name").map(str::to_string) {
            self.set("common_name", cn);
        }
    }

    fn value(&self, k: &str) -> Option<&str> {
        self.head_first
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// The pool variables (`multi_set_virtual_addr_env`).
    fn set_addresses(&mut self, pool: &PoolData, a: Assigned) {
        for k in [
            "ifconfig_pool_local_ip",
            "ifconfig_pool_remote_ip",
            "ifconfig_pool_netmask",
        ] {
            self.del(k);
        }
        if let Some(v4) = a.v4 {
            self.set("ifconfig_pool_remote_ip", v4.to_string());
            if pool.subnet {
                self.set("ifconfig_pool_netmask", pool.netmask.to_string());
            } else {
                // net30: the client's peer is the address below its own.
                let peer = Ipv4Addr::from(u32::from(v4).wrapping_sub(1));
                self.set("ifconfig_pool_local_ip", peer.to_string());
            }
        }
        for k in [
            "ifconfig_pool_local_ip6",
            "ifconfig_pool_remote_ip6",
            "ifconfig_pool_ip6_netbits",
        ] {
            self.del(k);
        }
        if let (Some(v6), Some((server6, bits, _))) = (a.v6, pool.ipv6) {
            self.set("ifconfig_pool_remote_ip6", v6.to_string());
            self.set("ifconfig_pool_local_ip6", server6.to_string());
            self.set("ifconfig_pool_ip6_netbits", bits.to_string());
        }
    }

    /// The sets of an admitted connection (see the module doc). `readdress`: the connection was
    /// configured by `client-auth` lines or a `client-connect` script.
    #[allow(clippy::too_many_arguments)]
    pub fn connected(
        &mut self,
        common_name: &str,
        real: SocketAddr,
        pool: &PoolData,
        a: Assigned,
        created: i64,
        created_ascii: &str,
        readdress: bool,
    ) {
        self.set("common_name", common_name);
        self.set_sockaddr("trusted", real);
        self.set_addresses(pool, a);
        self.set("time_ascii", created_ascii);
        self.set("time_unix", created.to_string());
        if readdress {
            self.set_addresses(pool, a);
        }
    }

    /// The sets at the end of a connection.
    pub fn disconnected(&mut self, real: SocketAddr, bytes_in: u64, bytes_out: u64, secs: u64) {
        self.set_sockaddr("trusted", real);
        self.set("bytes_received", bytes_in.to_string());
        self.set("bytes_sent", bytes_out.to_string());
        self.set("time_duration", secs.to_string());
    }
}

/// The certificate depth a certificate variable belongs to (`X509_1_CN` → 1, `tls_serial_hex_0`
/// → 0).
fn cert_depth(k: &str) -> Option<u32> {
    if let Some(rest) = k.strip_prefix("X509_") {
        return rest.split('_').next().and_then(|d| d.parse().ok());
    }
    k.rsplit('_').next().and_then(|d| d.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolData {
        PoolData {
            subnet: true,
            server_ip: Ipv4Addr::new(10, 98, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            start: Ipv4Addr::new(10, 98, 0, 2),
            end: Ipv4Addr::new(10, 98, 0, 254),
            ipv6: Some((
                "fd00:98::1".parse().unwrap(),
                64,
                "fd00:98::1000".parse().unwrap(),
            )),
        }
    }

    fn certs() -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (d, cn) in [(1, "TestCA"), (0, "client1")] {
            v.push((format!("X509_{d}_CN"), cn.to_string()));
            v.push((format!("tls_id_{d}"), format!("CN={cn}")));
            v.push((format!("tls_digest_{d}"), "d".into()));
            v.push((format!("tls_digest_sha256_{d}"), "s".into()));
            v.push((format!("tls_serial_{d}"), "1".into()));
            v.push((format!("tls_serial_hex_{d}"), "01".into()));
        }
        v
    }

    fn peer_info() -> Vec<String> {
        [
            "IV_VER=2.6.14",
            "IV_PLAT=linux",
            "IV_TCPNL=1",
            "IV_MTU=1600",
            "IV_NCP=2",
            "IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
            "IV_PROTO=990",
            "IV_LZO_STUB=1",
            "IV_COMP_STUB=1",
            "IV_COMP_STUBv2=1",
        ]
        .map(String::from)
        .to_vec()
    }

    fn keys(e: &ClientEnv) -> Vec<&str> {
        e.vars().iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The keys of a capture's `>CLIENT:` block number `block` (without `n_clients` and the
    /// daemon part, which starts at `remote_port_1`).
    fn capture_keys(rel: &str, block: usize) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/openvpn-2.6")
            .join(rel);
        let text = std::fs::read_to_string(path).unwrap();
        let mut blocks: Vec<Vec<String>> = Vec::new();
        for l in text.split("\r\n") {
            if l.starts_with(">CLIENT:") && !l.starts_with(">CLIENT:ENV") {
                blocks.push(Vec::new());
            } else if let Some(kv) = l.strip_prefix(">CLIENT:ENV,") {
                if let Some((k, _)) = kv.split_once('=') {
                    blocks.last_mut().unwrap().push(k.to_string());
                }
            }
        }
        blocks[block]
            .iter()
            .filter(|k| *k != "n_clients")
            .take_while(|k| *k != "remote_port_1")
            .cloned()
            .collect()
    }

    const REAL: &str = "172.31.254.2:52432";

    #[test]
    fn established_without_client_auth_matches_the_capture() {
        let mut e = ClientEnv::default();
        e.tls_verified(
            &certs(),
            REAL.parse().unwrap(),
            &peer_info(),
            "client1",
            None,
        );
        let a = Assigned {
            v4: Some(Ipv4Addr::new(10, 98, 0, 2)),
            v6: Some("fd00:98::1000".parse().unwrap()),
        };
        e.connected("client1", REAL.parse().unwrap(), &pool(), a, 1, "t", false);
        assert_eq!(
            keys(&e),
            capture_keys(
                "mgmt-server/no-command__unsolicited-CLIENT-ESTABLISHED.raw",
                0
            )
        );
    }

    #[test]
    fn client_auth_session_blocks_match_the_capture() {
        let rel = "sessions/server-management-client-auth.raw";
        let real: SocketAddr = "172.31.254.2:46042".parse().unwrap();
        let a = Assigned {
            v4: Some(Ipv4Addr::new(10, 97, 0, 2)),
            v6: Some("fd00:97::1000".parse().unwrap()),
        };
        let mut certs2 = certs();
        for (k, v) in certs2.iter_mut() {
            if k.ends_with("_0") && (k.starts_with("X509") || k.starts_with("tls_id")) {
                *v = v.replace("client1", "client2");
            }
        }
        let mut e = ClientEnv::default();
        let up = Some(("alice", Some("s3cret pass")));
        e.tls_verified(&certs2, real, &peer_info(), "client2", up);
        assert_eq!(keys(&e), capture_keys(rel, 0), "CONNECT");
        e.del("password");
        e.connected("client2", real, &pool(), a, 1, "t", true);
        // block 1 is >CLIENT:ADDRESS (no ENV), 2 the second ADDRESS, 3 ESTABLISHED
        assert_eq!(keys(&e), capture_keys(rel, 3), "ESTABLISHED");
        e.tls_verified(&certs2, real, &peer_info(), "client2", up);
        assert_eq!(keys(&e), capture_keys(rel, 4), "REAUTH");
        e.del("password");
        e.disconnected(real, 5048, 4818, 47);
        assert_eq!(keys(&e), capture_keys(rel, 5), "DISCONNECT");
        // client1: CONNECT with IV_SSO, then its CR_RESPONSE
        let mut info = peer_info();
        info.push("IV_SSO=crtext".into());
        let mut e = ClientEnv::default();
        let real1: SocketAddr = "172.31.254.2:46666".parse().unwrap();
        e.tls_verified(
            &certs(),
            real1,
            &info,
            "client1",
            Some(("bob", Some("bobpass"))),
        );
        assert_eq!(keys(&e), capture_keys(rel, 6), "CONNECT client1");
        e.del("password");
        e.initiated();
        assert_eq!(keys(&e), capture_keys(rel, 7), "CR_RESPONSE");
    }

    #[test]
    fn certificate_only_connect_has_the_common_name_below_the_client_certificate() {
        let mut e = ClientEnv::default();
        e.tls_verified(&certs(), REAL.parse().unwrap(), &[], "client1", None);
        let k = keys(&e);
        assert_eq!(
            &k[..3],
            ["untrusted_port", "untrusted_ip", "tls_serial_hex_0"]
        );
        let cn = k.iter().position(|k| *k == "common_name").unwrap();
        assert_eq!(k[cn - 1], "X509_0_CN");
        assert_eq!(k[cn + 1], "tls_serial_hex_1");
        assert_eq!(cert_depth("X509_1_CN"), Some(1));
        assert_eq!(cert_depth("tls_digest_sha256_0"), Some(0));
    }

    #[test]
    fn ipv6_and_net30_names() {
        let mut e = ClientEnv::default();
        e.tls_verified(&[], "[fd00::2]:1194".parse().unwrap(), &[], "c", None);
        assert_eq!(keys(&e), ["untrusted_port", "untrusted_ip6"]);
        let mut e = ClientEnv::default();
        e.tls_verified(&[], "[::ffff:10.0.0.9]:5".parse().unwrap(), &[], "c", None);
        assert_eq!(e.vars()[1], ("untrusted_ip".into(), "10.0.0.9".into()));
        let mut p = pool();
        p.subnet = false;
        p.ipv6 = None;
        e.connected(
            "c",
            "10.0.0.9:5".parse().unwrap(),
            &p,
            Assigned {
                v4: Some(Ipv4Addr::new(10, 8, 0, 6)),
                v6: None,
            },
            1,
            "t",
            false,
        );
        assert!(e
            .vars()
            .contains(&("ifconfig_pool_local_ip".into(), "10.8.0.5".into())));
        assert!(!e.vars().iter().any(|(k, _)| k == "ifconfig_pool_netmask"));
    }
}
