//! Golden tests: every server status capture in the fixtures, re-rendered from a snapshot holding
//! the capture's own values, must match byte for byte (LF for files, CRLF over management).

use crate::model::*;
use crate::status::{render, LineEnding, StatusVersion};
use crate::testutil::{fixture, fixture_text, strip_greeting};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub(crate) const TITLE: &str = "OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [PKCS11] [MH/PKTINFO] [AEAD] [DCO]";
/// 2026-11-22 00:00:00 UTC.
const DAY: i64 = 1_795_305_600;

pub(crate) fn t(h: i64, m: i64, s: i64) -> i64 {
    DAY + h * 3600 + m * 60 + s
}

pub(crate) fn real(s: &str) -> RealAddr {
    let addr: SocketAddr = match s.parse() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(s.parse::<Ipv6Addr>().unwrap().into(), 1194),
    };
    RealAddr {
        proto: TransportProto::Udp,
        addr,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn client(
    cn: &str,
    r: &str,
    v4: Option<&str>,
    v6: Option<&str>,
    rx: u64,
    tx: u64,
    since: i64,
    user: Option<&str>,
    cid: u64,
    pid: u32,
) -> ClientEntry {
    ClientEntry {
        common_name: Some(cn.into()),
        real_address: real(r),
        virtual_v4: v4.map(|a| a.parse::<Ipv4Addr>().unwrap()),
        virtual_v6: v6.map(|a| a.parse::<Ipv6Addr>().unwrap()),
        bytes_received: rx,
        bytes_sent: tx,
        connected_since: since,
        username: user.map(Into::into),
        client_id: cid,
        peer_id: pid,
        data_cipher: "AES-256-GCM".into(),
    }
}

pub(crate) fn route(key: &str, cn: &str, r: &str, last: i64) -> RouteEntry {
    let key = if let Some((mac, vid)) = key.split_once('@') {
        let mut m = [0u8; 6];
        for (i, p) in mac.split(':').enumerate() {
            m[i] = u8::from_str_radix(p, 16).unwrap();
        }
        RouteKey::Mac(m, vid.parse().unwrap())
    } else if let Ok(v4) = key.parse::<Ipv4Addr>() {
        RouteKey::V4(v4)
    } else {
        RouteKey::V6(key.parse().unwrap())
    };
    RouteEntry {
        key,
        cached: false,
        common_name: Some(cn.into()),
        real_address: real(r),
        last_ref: last,
    }
}

pub(crate) fn snap(
    updated: i64,
    clients: Vec<ClientEntry>,
    routes: Vec<RouteEntry>,
    q: u64,
) -> StatusSnapshot {
    StatusSnapshot {
        counters: Default::default(),
        title: TITLE.into(),
        updated,
        utc_offset_secs: 0,
        clients,
        routes,
        global: GlobalStats {
            max_bcast_mcast_queue_len: Some(q),
            dco_enabled: false,
        },
    }
}

/// s1 with client1 at 172.31.254.2:58421 (mgmt-server/status*.raw).
pub(crate) fn s1(updated: i64) -> StatusSnapshot {
    let r = "172.31.254.2:58421";
    snap(
        updated,
        vec![client(
            "client1",
            r,
            Some("10.98.0.2"),
            Some("fd00:98::1000"),
            3075,
            2987,
            t(7, 49, 37),
            None,
            0,
            0,
        )],
        vec![
            route("fd00:98::1000", "client1", r, t(7, 49, 44)),
            route("10.98.0.2", "client1", r, t(7, 49, 44)),
        ],
        1,
    )
}

fn check_mgmt(path: &str, snapshot: &StatusSnapshot, v: StatusVersion) {
    let want = strip_greeting(&fixture(path));
    let got = render(snapshot, v, LineEnding::CrLf);
    assert_eq!(got, String::from_utf8(want).unwrap(), "fixture {path}");
}

#[test]
fn mgmt_server_status_v1_v2_v3() {
    check_mgmt(
        "mgmt-server/status.raw",
        &s1(t(7, 50, 0)),
        StatusVersion::V1,
    );
    check_mgmt(
        "mgmt-server/status_1.raw",
        &s1(t(7, 50, 2)),
        StatusVersion::V1,
    );
    check_mgmt(
        "mgmt-server/status_2.raw",
        &s1(t(7, 50, 3)),
        StatusVersion::V2,
    );
    check_mgmt(
        "mgmt-server/status_3.raw",
        &s1(t(7, 50, 5)),
        StatusVersion::V3,
    );
}

#[test]
fn mgmt_server_status_no_clients_and_reconnect() {
    let empty = snap(t(7, 49, 33), vec![], vec![], 0);
    check_mgmt(
        "mgmt-server/status_2__no-clients.raw",
        &empty,
        StatusVersion::V2,
    );
    let r = "172.31.254.2:42337";
    let s = snap(
        t(7, 53, 38),
        vec![client(
            "client1",
            r,
            Some("10.98.0.2"),
            Some("fd00:98::1000"),
            5649,
            5377,
            t(7, 52, 13),
            None,
            1,
            0,
        )],
        vec![
            route("fd00:98::1000", "client1", r, t(7, 52, 13)),
            route("10.98.0.2", "client1", r, t(7, 53, 20)),
        ],
        1,
    );
    check_mgmt(
        "mgmt-server/status_3__after-reconnect.raw",
        &s,
        StatusVersion::V3,
    );
}

#[test]
fn udp6_dual_stack_real_addresses() {
    // client2 over IPv4 on a dual-stack socket is given v4-mapped; client1 over IPv6.
    let c2 = "[::ffff:172.31.254.2]:45118";
    let c1 = "[fd00:254::2]:1194";
    let s = |upd| {
        snap(
            upd,
            vec![
                client(
                    "client2",
                    c2,
                    Some("10.94.0.3"),
                    Some("fd00:94::1001"),
                    2386,
                    2368,
                    t(8, 2, 32),
                    None,
                    1,
                    1,
                ),
                client(
                    "client1",
                    c1,
                    Some("10.94.0.2"),
                    Some("fd00:94::1000"),
                    2384,
                    2368,
                    t(8, 2, 32),
                    None,
                    0,
                    0,
                ),
            ],
            vec![
                route("10.94.0.3", "client2", c2, t(8, 2, 32)),
                route("10.94.0.2", "client1", c1, t(8, 2, 32)),
                route("fd00:94::1001", "client2", c2, t(8, 2, 32)),
                route("fd00:94::1000", "client1", c1, t(8, 2, 32)),
            ],
            2,
        )
    };
    check_mgmt(
        "mgmt-server-udp6/status_1.raw",
        &s(t(8, 2, 39)),
        StatusVersion::V1,
    );
    check_mgmt(
        "mgmt-server-udp6/status_2.raw",
        &s(t(8, 2, 38)),
        StatusVersion::V2,
    );
}

#[test]
fn tap_mac_routes() {
    let r = "172.31.254.2:51311";
    let s = |upd| {
        snap(
            upd,
            vec![client(
                "client1",
                r,
                Some("10.92.0.2"),
                None,
                3427,
                3032,
                t(8, 11, 31),
                None,
                0,
                0,
            )],
            vec![route("da:8d:d4:cd:75:57@0", "client1", r, t(8, 11, 37))],
            1,
        )
    };
    check_mgmt(
        "mgmt-server-tap/status_1.raw",
        &s(t(8, 11, 38)),
        StatusVersion::V1,
    );
    check_mgmt(
        "mgmt-server-tap/status_2.raw",
        &s(t(8, 11, 40)),
        StatusVersion::V2,
    );
    check_mgmt(
        "mgmt-server-tap/status_3.raw",
        &s(t(8, 11, 41)),
        StatusVersion::V3,
    );
}

#[test]
fn status_files_lf() {
    let r = "172.31.254.2:52432";
    let v1 = snap(
        t(7, 54, 31),
        vec![client(
            "client1",
            r,
            Some("10.98.0.2"),
            Some("fd00:98::1000"),
            2780,
            2732,
            t(7, 54, 13),
            None,
            0,
            0,
        )],
        vec![
            route("fd00:98::1000", "client1", r, t(7, 54, 13)),
            route("10.98.0.2", "client1", r, t(7, 54, 19)),
        ],
        1,
    );
    assert_eq!(
        render(&v1, StatusVersion::V1, LineEnding::Lf),
        fixture_text("status-files/server-status-version-1.txt")
    );
    let r = "172.31.254.2:46042";
    let v2 = snap(
        t(7, 56, 30),
        vec![client(
            "client2",
            r,
            Some("10.97.0.2"),
            Some("fd00:97::1000"),
            4943,
            4700,
            t(7, 55, 51),
            Some("alice"),
            0,
            0,
        )],
        vec![
            route("10.97.0.2", "client2", r, t(7, 55, 52)),
            route("fd00:97::1000", "client2", r, t(7, 55, 52)),
        ],
        1,
    );
    assert_eq!(
        render(&v2, StatusVersion::V2, LineEnding::Lf),
        fixture_text("status-files/server-status-version-2.txt")
    );
    let r = "172.31.254.2:50971";
    let v3 = snap(
        t(7, 58, 14),
        vec![client(
            "client1",
            r,
            Some("10.96.0.2"),
            Some("fd00:96::1000"),
            2707,
            2621,
            t(7, 58, 9),
            None,
            0,
            0,
        )],
        vec![
            route("fd00:96::1000", "client1", r, t(7, 58, 9)),
            route("10.96.0.2", "client1", r, t(7, 58, 13)),
        ],
        0,
    );
    assert_eq!(
        render(&v3, StatusVersion::V3, LineEnding::Lf),
        fixture_text("status-files/server-status-version-3.txt")
    );
}

#[test]
fn overlong_line_suppresses_rest() {
    let mut s = s1(t(7, 50, 3));
    s.clients[0].username = Some("u".repeat(600));
    let out = render(&s, StatusVersion::V2, LineEnding::CrLf);
    assert!(out.contains("HEADER,CLIENT_LIST"));
    assert!(!out.contains("CLIENT_LIST,client1"));
    assert!(!out.contains("END"));
    assert!(!out.contains("ROUTING_TABLE,"));
}

#[test]
fn cached_route_and_subnet_keys() {
    let mut s = s1(t(7, 50, 3));
    s.routes.push(RouteEntry {
        key: RouteKey::V4(Ipv4Addr::new(10, 1, 2, 3)),
        cached: true,
        common_name: None,
        real_address: s.routes[0].real_address,
        last_ref: t(7, 50, 0),
    });
    s.routes.push(RouteEntry {
        key: RouteKey::V4Net(Ipv4Addr::new(10, 1, 2, 0), 24),
        cached: false,
        common_name: Some("client1".into()),
        real_address: s.routes[0].real_address,
        last_ref: t(7, 50, 0),
    });
    let out = render(&s, StatusVersion::V1, LineEnding::Lf);
    assert!(out.contains("\n10.1.2.3C,UNDEF,172.31.254.2:58421,2026-11-22 07:50:00\n"));
    assert!(out.contains("\n10.1.2.0/24,client1,"));
}

#[test]
fn json_round_trip_and_schema_check() {
    let s = s1(t(7, 50, 3));
    let j = StatusJson::encode(&s).unwrap();
    assert!(j.starts_with("{\"schema\":\"bulwark.status.v1\""));
    assert_eq!(StatusJson::decode(&j).unwrap(), s);
    let bad = j.replace("bulwark.status.v1", "bulwark.status.v9");
    assert!(matches!(
        StatusJson::decode(&bad),
        Err(ModelError::JsonSchema { .. })
    ));
    assert!(StatusJson::decode("{").is_err());
}
