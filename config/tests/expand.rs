//! Macro expansion values (`server`, `server-ipv6`, `keepalive`) against OpenVPN 2.6 helper.c.

#![allow(clippy::unwrap_used)]

use bulwark_config::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const PKI: &str = "ca ca.crt\ncert server.crt\nkey server.key\ndh none\n";

fn load(text: &str) -> Loaded {
    match load_str("t.conf", &format!("{PKI}{text}"), "/etc/openvpn") {
        Ok(l) => l,
        Err(e) => panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn errs(text: &str) -> Vec<String> {
    match load_str("t.conf", &format!("{PKI}{text}"), "/etc/openvpn") {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn server_subnet() {
    let l = load("dev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.0\nkeepalive 10 120\npush \"redirect-gateway def1\"\n");
    let c = &l.config;
    assert_eq!(
        c.ifconfig_v4,
        Some(IfconfigV4 {
            local: ip("10.8.0.1"),
            remote_or_netmask: ip("255.255.255.0")
        })
    );
    assert_eq!(
        c.pool_v4,
        Some(PoolV4 {
            start: ip("10.8.0.2"),
            end: ip("10.8.0.254"),
            netmask: Some(ip("255.255.255.0"))
        })
    );
    assert_eq!(c.route_gateway.as_deref(), Some("10.8.0.2"));
    assert_eq!(
        c.push,
        vec![
            "redirect-gateway def1",
            "route-gateway 10.8.0.1",
            "topology subnet",
            "ping 10",
            "ping-restart 120"
        ]
    );
    assert_eq!(c.timers.ping, Some(10));
    assert_eq!(c.timers.ping_restart, Some(240));
    assert_eq!(c.server_v4.as_ref().unwrap().prefix_len, 24);
    assert!(c.routes.is_empty());
    assert_eq!(c.topology, Topology::Subnet);
}

#[test]
fn server_net30_default() {
    let l = load("dev tun\nserver 10.8.0.0 255.255.255.0\n");
    let c = &l.config;
    assert_eq!(c.topology, Topology::Net30);
    assert_eq!(
        c.ifconfig_v4,
        Some(IfconfigV4 {
            local: ip("10.8.0.1"),
            remote_or_netmask: ip("10.8.0.2")
        })
    );
    assert_eq!(
        c.pool_v4,
        Some(PoolV4 {
            start: ip("10.8.0.4"),
            end: ip("10.8.0.251"),
            netmask: None
        })
    );
    assert_eq!(c.push, vec!["route 10.8.0.1", "topology net30"]);
    assert_eq!(
        c.routes,
        vec![Route {
            network: "10.8.0.0".into(),
            netmask: Some("255.255.255.0".into()),
            gateway: None,
            metric: None
        }]
    );
    assert!(l.warnings.iter().any(|w| w.message.contains("net30")));
}

#[test]
fn server_net30_client_to_client_and_slash29() {
    let c = load("dev tun\nclient-to-client\nserver 10.8.0.0 255.255.255.248\n").config;
    assert_eq!(
        c.push,
        vec!["route 10.8.0.0 255.255.255.248", "topology net30"]
    );
    // /29: no end reserve.
    assert_eq!(c.pool_v4.unwrap().end, ip("10.8.0.7"));
}

#[test]
fn server_p2p_pushes_no_route() {
    let c = load("dev tun\ntopology p2p\nserver 10.8.0.0 255.255.255.0\n").config;
    assert_eq!(c.push, vec!["topology p2p"]);
}

#[test]
fn server_nopool() {
    let c = load("dev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.0 nopool\n").config;
    assert_eq!(c.pool_v4, None);
    assert_eq!(c.ifconfig_v4.unwrap().local, ip("10.8.0.1"));
}

#[test]
fn server_netmask_checks() {
    let e = errs("dev tun\nserver 10.8.0.0 255.255.255.252\n");
    assert!(
        e[0].contains("t.conf:6:") && e[0].contains("/29) or lower"),
        "{e:?}"
    );
    let e = errs("dev tun\nserver 10.0.0.0 255.254.0.0\n");
    assert!(e[0].contains("too many host addresses"), "{e:?}");
    let e = errs("dev tun\nserver 10.8.0.1 255.255.255.0\n");
    assert!(e[0].contains("combination is invalid"), "{e:?}");
    let e = errs("dev tun\nserver 10.8.0.0 255.0.255.0\n");
    assert!(e[0].contains("combination is invalid"), "{e:?}");
    let e = errs("dev tun\nserver 10.8.0.0 255.255.255.0\nifconfig-pool 10.8.0.10 10.8.0.20\n");
    assert!(e[0].contains("already defines an ifconfig-pool"), "{e:?}");
    let e = errs("dev tun\nserver 10.8.0.0 255.255.255.0 pool\n");
    assert!(e[0].contains("not a recognized flag"), "{e:?}");
    // /16 is the largest allowed; the subnet pool spans 65533 addresses.
    let c = load("dev tun\ntopology subnet\nserver 10.8.0.0 255.255.0.0\n").config;
    assert_eq!(c.pool_v4.unwrap().end, ip("10.8.255.254"));
}

#[test]
fn server_ipv6() {
    let c = load("dev tun\ntopology subnet\nserver 10.8.0.0 255.255.255.0\nserver-ipv6 fd42:42:42:42::/112\n").config;
    let v6 = c.ifconfig_v6.unwrap();
    assert_eq!(v6.local, "fd42:42:42:42::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.remote, "fd42:42:42:42::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.prefix_len, 112);
    let pool = c.pool_v6.unwrap();
    assert_eq!(pool.base, "fd42:42:42:42::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(pool.prefix_len, 112);
    assert_eq!(
        c.push,
        vec!["tun-ipv6", "route-gateway 10.8.0.1", "topology subnet"]
    );

    let c = load("dev tun\nserver-ipv6 2001:db8::/64\n").config;
    assert_eq!(
        c.pool_v6.unwrap().base,
        "2001:db8::1000".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(c.ifconfig_v4, None);

    let e = errs("dev tun\nserver-ipv6 2001:db8::/56\n");
    assert!(
        e[0].contains("t.conf:6: option 'server-ipv6'") && e[0].contains("/64 and /124"),
        "{e:?}"
    );
    let e = errs("dev tun\nserver-ipv6 2001:db8::/126\n");
    assert!(e[0].contains("(not /126)"), "{e:?}");
}

#[test]
fn keepalive_rules() {
    let e = errs("dev tun\nserver 10.8.0.0 255.255.255.0\nkeepalive 10 15\n");
    assert!(
        e[0].contains("t.conf:7:") && e[0].contains("at least twice"),
        "{e:?}"
    );
    let e = errs("dev tun\nserver 10.8.0.0 255.255.255.0\nkeepalive 0 15\n");
    assert!(e[0].contains("must be > 0"), "{e:?}");
    let e = errs("dev tun\nserver 10.8.0.0 255.255.255.0\nkeepalive 10 60\nping 5\n");
    assert!(e[0].contains("conflicts with --ping"), "{e:?}");
    let c = load("dev tun\nserver 10.8.0.0 255.255.255.0\nping 5\nping-restart 30\n").config;
    assert_eq!((c.timers.ping, c.timers.ping_restart), (Some(5), Some(30)));
    assert!(!c.push.iter().any(|p| p.starts_with("ping")));
}
