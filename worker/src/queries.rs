//! Answers to the parent's management queries, computed from the engine's public view, and the
//! translation of engine client events into IPC client events.
//!
//! Runs inside the driver loop (through `DriverCommand::Engine` closures), so it sees the engine
//! between two packets; it never blocks and allocates only the reply.

use std::time::Instant;

use bulwark_ipc::msg::clients::{ClientEvent, WorkerQuery, WorkerReply};

use crate::proto::io::{ClientInfo, EngineEvent, Outbox};
use crate::proto::server::Server;

/// Executes one query against the engine (OpenVPN 2.6 semantics: `kill` closes the instances
/// at once without telling the client; `client-kill` sends the message and ends the instance
/// 5 s later).
pub fn answer(
    engine: &mut Server,
    query: WorkerQuery,
    now: Instant,
    now_unix: u64,
    out: &mut Outbox,
) -> WorkerReply {
    match query {
        WorkerQuery::Status => WorkerReply::Status(Box::new(engine.status(now_unix))),
        WorkerQuery::ByteCounts => WorkerReply::ByteCounts(engine.byte_counts()),
        WorkerQuery::KillCommonName(cn) => {
            WorkerReply::Count(engine.kill_common_name(&cn, now, now_unix, out))
        }
        WorkerQuery::KillAddress { proto, ip, port } => {
            WorkerReply::Count(engine.kill_address(proto, ip, port, now, now_unix, out))
        }
        WorkerQuery::ClientKill { cid, message } => {
            WorkerReply::Done(engine.client_kill(cid, &message, now, now_unix, out))
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
        EngineEvent::ClientFloated { cid, to } => Some(ClientEvent::Floated {
            cid: *cid,
            real_address: crate::proto::server::real_addr(to),
        }),
        EngineEvent::ExitAnnounced { cid } => Some(ClientEvent::ExitAnnounced { cid: *cid }),
        EngineEvent::CrResponse { cid, kid, response } => Some(ClientEvent::CrResponse {
            cid: *cid,
            kid: *kid,
            response: response.clone(),
        }),
        _ => None,
    }
}

fn established(info: &ClientInfo) -> ClientEvent {
    ClientEvent::Established {
        cid: info.cid,
        common_name: info.common_name.clone(),
        username: info.username.clone(),
        real_address: crate::proto::server::real_addr(&info.addr),
        vaddr: info.vaddr,
        vaddr6: info.vaddr6,
        iroutes: info.iroutes.clone(),
        iroutes_v6: info.iroutes_v6.clone(),
        peer_id: info.peer_id,
        cipher: info.cipher.clone(),
        connected_since: i64::try_from(info.connected_since).unwrap_or(i64::MAX),
        peer_info: info.peer_info.clone(),
        cert_env: info.cert_env.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::io::PeerAddr;
    use bulwark_ipc::msg::mgmt::TransportProto;
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
            peer_info: vec![],
            cert_env: vec![],
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
