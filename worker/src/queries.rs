//! Answers to the parent's management queries, computed from the engine's public view, and the
//! translation of engine client events into IPC client events.
//!
//! Runs inside the driver loop (through `DriverCommand::Engine` closures), so it sees the engine
//! between two packets; it never blocks and allocates only the reply.

use std::net::IpAddr;
use std::time::Instant;

use bulwark_ipc::msg::clients::{ClientEvent, WorkerQuery, WorkerReply, WorkerStatus};
use bulwark_ipc::msg::mgmt::{ClientEntry, RealAddr, RouteEntry, RouteKey, TransportProto};

use crate::proto::io::{ClientInfo, EngineEvent, Outbox, PeerAddr};
use crate::proto::server::Server;

/// The link address of a peer as the management interface shows it.
pub fn real_addr(a: &PeerAddr) -> RealAddr {
    match a {
        PeerAddr::Udp(addr) => RealAddr {
            proto: TransportProto::Udp,
            addr: *addr,
        },
        PeerAddr::Tcp { addr, .. } => RealAddr {
            proto: TransportProto::Tcp,
            addr: *addr,
        },
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Every instance and route with counters. Instances still handshaking are listed without a
/// common name (printed `UNDEF`), as OpenVPN lists them.
pub fn status(engine: &Server, now_unix: u64) -> WorkerStatus {
    let mut clients = Vec::new();
    let mut routes = Vec::new();
    let mut bytes_in = 0u64;
    let mut bytes_out = 0u64;
    let mut peers: Vec<_> = engine.peers().collect();
    peers.sort_by_key(|p| p.cid());
    for p in peers {
        let (rx, tx) = p.byte_counts();
        bytes_in = bytes_in.saturating_add(rx);
        bytes_out = bytes_out.saturating_add(tx);
        let real = real_addr(&p.addr());
        let info = p.client_info();
        let (v4, v6) = p.virtual_addrs();
        let established = p.is_established();
        let cn = p.common_name();
        clients.push(ClientEntry {
            common_name: (established && !cn.is_empty()).then(|| cn.to_string()),
            real_address: real,
            virtual_v4: v4,
            virtual_v6: v6,
            bytes_received: rx,
            bytes_sent: tx,
            connected_since: i64_of(if p.connected_since() == 0 {
                now_unix
            } else {
                p.connected_since()
            }),
            username: info.as_ref().and_then(|i| i.username.clone()),
            client_id: p.cid(),
            peer_id: p.peer_id(),
            data_cipher: info
                .as_ref()
                .map(|i| i.cipher.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "UNDEF".into()),
        });
        if established {
            let owner = (!cn.is_empty()).then(|| cn.to_string());
            if let Some(a) = v4 {
                routes.push(RouteEntry {
                    key: RouteKey::V4(a),
                    cached: false,
                    common_name: owner.clone(),
                    real_address: real,
                    last_ref: i64_of(now_unix),
                });
            }
            if let Some(a) = v6 {
                routes.push(RouteEntry {
                    key: RouteKey::V6(a),
                    cached: false,
                    common_name: owner.clone(),
                    real_address: real,
                    last_ref: i64_of(now_unix),
                });
            }
            if let Some(g) = engine.granted(p.cid()) {
                for (net, bits) in &g.iroutes {
                    routes.push(RouteEntry {
                        key: RouteKey::V4Net(*net, *bits),
                        cached: false,
                        common_name: owner.clone(),
                        real_address: real,
                        last_ref: i64_of(now_unix),
                    });
                }
                for (net, bits) in &g.iroutes_v6 {
                    routes.push(RouteEntry {
                        key: RouteKey::V6Net(*net, *bits),
                        cached: false,
                        common_name: owner.clone(),
                        real_address: real,
                        last_ref: i64_of(now_unix),
                    });
                }
            }
        }
    }
    WorkerStatus {
        clients,
        routes,
        link_bytes_in: bytes_in,
        link_bytes_out: bytes_out,
    }
}

/// Executes one query against the engine.
pub fn answer(
    engine: &mut Server,
    query: WorkerQuery,
    now: Instant,
    now_unix: u64,
    out: &mut Outbox,
) -> WorkerReply {
    match query {
        WorkerQuery::Status => WorkerReply::Status(Box::new(status(engine, now_unix))),
        WorkerQuery::ByteCounts => WorkerReply::ByteCounts(
            engine
                .peers()
                .filter(|p| p.is_established())
                .map(|p| {
                    let (rx, tx) = p.byte_counts();
                    (p.cid(), rx, tx)
                })
                .collect(),
        ),
        WorkerQuery::KillCommonName(cn) => {
            let cids: Vec<u64> = engine
                .peers()
                .filter(|p| p.is_established() && p.common_name() == cn)
                .map(|p| p.cid())
                .collect();
            let mut n = 0u32;
            for cid in cids {
                if engine.kill(cid, None, now, now_unix, out) {
                    n += 1;
                }
            }
            WorkerReply::Count(n)
        }
        WorkerQuery::KillAddress { proto, ip, port } => {
            let cids: Vec<u64> = engine
                .peers()
                .filter(|p| {
                    let r = real_addr(&p.addr());
                    let same_ip = match (r.addr.ip(), ip) {
                        (IpAddr::V6(a), IpAddr::V4(b)) => a.to_ipv4_mapped() == Some(b),
                        (a, b) => a == b,
                    };
                    same_ip && r.addr.port() == port && proto.is_none_or(|pr| pr == r.proto)
                })
                .map(|p| p.cid())
                .collect();
            let mut n = 0u32;
            for cid in cids {
                if engine.kill(cid, None, now, now_unix, out) {
                    n += 1;
                }
            }
            WorkerReply::Count(n)
        }
        WorkerQuery::ClientKill { cid, message } => {
            WorkerReply::Done(engine.kill(cid, Some(&message), now, now_unix, out))
        }
    }
}

/// The IPC form of an engine client event, if it is one.
pub fn client_event(ev: &EngineEvent) -> Option<ClientEvent> {
    match ev {
        EngineEvent::ClientConnected(info) => Some(established(info)),
        EngineEvent::ClientDisconnected {
            cid,
            reason,
            bytes_in,
            bytes_out,
            duration_secs,
        } => Some(ClientEvent::Disconnected {
            cid: *cid,
            reason: reason.clone(),
            bytes_received: *bytes_in,
            bytes_sent: *bytes_out,
            duration_secs: *duration_secs,
        }),
        _ => None,
    }
}

fn established(info: &ClientInfo) -> ClientEvent {
    ClientEvent::Established {
        cid: info.cid,
        common_name: info.common_name.clone(),
        username: info.username.clone(),
        real_address: real_addr(&info.addr),
        vaddr: info.vaddr,
        vaddr6: info.vaddr6,
        iroutes: info.iroutes.clone(),
        iroutes_v6: info.iroutes_v6.clone(),
        peer_id: info.peer_id,
        cipher: info.cipher.clone(),
        connected_since: i64_of(info.connected_since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn events_translate() {
        let info = ClientInfo {
            cid: 3,
            peer_id: 1,
            common_name: "client1".into(),
            username: None,
            addr: PeerAddr::Tcp {
                conn: 9,
                addr: "192.0.2.1:4000".parse().unwrap(),
            },
            vaddr: Some(Ipv4Addr::new(10, 8, 0, 2)),
            vaddr6: None,
            cipher: "AES-256-GCM".into(),
            connected_since: 1_700_000_000,
            iroutes: vec![],
            iroutes_v6: vec![],
        };
        match client_event(&EngineEvent::ClientConnected(info)).unwrap() {
            ClientEvent::Established {
                cid,
                real_address,
                vaddr,
                ..
            } => {
                assert_eq!(cid, 3);
                assert_eq!(real_address.proto, TransportProto::Tcp);
                assert_eq!(vaddr, Some(Ipv4Addr::new(10, 8, 0, 2)));
            }
            other => panic!("{other:?}"),
        }
        assert!(client_event(&EngineEvent::CloseTcp { conn: 1 }).is_none());
        let d = client_event(&EngineEvent::ClientDisconnected {
            cid: 3,
            reason: "x".into(),
            bytes_in: 1,
            bytes_out: 2,
            duration_secs: 3,
        })
        .unwrap();
        assert_eq!(d.cid(), 3);
    }
}
