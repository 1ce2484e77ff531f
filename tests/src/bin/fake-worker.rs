#![deny(unsafe_code)]
//! `fake-worker`: a "compromised worker" for the parent's tests. Installed as `bulwark-worker` in a
//! test's `--libexec-dir` (next to the real broker), it performs the worker's start-up protocol
//! correctly and then sends one out-of-policy message, chosen by the file `scenario` next to its
//! own executable (the parent starts children with an empty environment and no arguments).
//! Afterwards it waits to be killed.
//!
//! Scenarios: `unknown-reply`, `wrong-reply-kind`, `auth-without-defer`, `established-outside-pool`,
//! `established-twice`, `hello-again`, `iroute-not-granted`.

use std::process::ExitCode;
use std::time::Duration;

use bulwark_ipc::msg::clients::{ClientAuthRequest, ClientEvent, WorkerReply, WorkerStatus};
use bulwark_ipc::msg::mgmt::{RealAddr, TransportProto};
use bulwark_ipc::msg::{ParentToWorker, WorkerToParent};
use bulwark_ipc::{WorkerChannels, PROTOCOL_VERSION};

fn established(cid: u64, vaddr: [u8; 4], iroutes: Vec<(std::net::Ipv4Addr, u8)>) -> WorkerToParent {
    WorkerToParent::Client(ClientEvent::Established {
        cid,
        common_name: "mallory".into(),
        username: None,
        real_address: RealAddr {
            proto: TransportProto::Udp,
            addr: "192.0.2.66:1194"
                .parse()
                .unwrap_or_else(|_| std::process::exit(3)),
        },
        vaddr: Some(vaddr.into()),
        vaddr6: None,
        iroutes,
        iroutes_v6: vec![],
        peer_id: 0,
        cipher: "AES-256-GCM".into(),
        connected_since: 0,
    })
}

fn main() -> ExitCode {
    let scenario = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("scenario")))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let scenario = scenario.trim().to_string();
    let Ok(WorkerChannels {
        mut control,
        log: _log,
        signer: _signer,
    }) = WorkerChannels::from_inherited()
    else {
        return ExitCode::from(2);
    };
    let pid = i32::try_from(std::process::id()).unwrap_or(1);
    if control
        .send(
            &WorkerToParent::Hello {
                version: PROTOCOL_VERSION,
                pid,
            },
            &[],
        )
        .is_err()
    {
        return ExitCode::from(2);
    }
    // Hello, then Init with its descriptors (kept open, unused)
    let Ok(_hello) = control.recv() else {
        return ExitCode::from(2);
    };
    let Ok(init) = control.recv() else {
        return ExitCode::from(2);
    };
    let (_init, _fds) = init.into_parts();
    if control.send(&WorkerToParent::Ready, &[]).is_err() {
        return ExitCode::from(2);
    }
    let bad: Vec<WorkerToParent> = match scenario.as_str() {
        "unknown-reply" => vec![WorkerToParent::Reply {
            id: 4242,
            reply: WorkerReply::Count(1),
        }],
        "wrong-reply-kind" => {
            // wait for a real query (the test sends `status` on the management socket), answer
            // it with the wrong kind
            let mut id = None;
            for _ in 0..50 {
                if let Ok(r) = control.recv() {
                    if let ParentToWorker::Query { id: q, .. } = r.into_parts().0 {
                        id = Some(q);
                        break;
                    }
                }
            }
            let Some(id) = id else {
                return ExitCode::from(4);
            };
            vec![WorkerToParent::Reply {
                id,
                reply: WorkerReply::Done(true),
            }]
        }
        "auth-without-defer" => vec![WorkerToParent::AuthRequest(Box::new(ClientAuthRequest {
            cid: 1,
            kid: 0,
            reauth: false,
            common_name: "mallory".into(),
            username: None,
            password: None,
            real_address: RealAddr {
                proto: TransportProto::Udp,
                addr: "192.0.2.66:1194"
                    .parse()
                    .unwrap_or_else(|_| std::process::exit(3)),
            },
            peer_info: vec![],
            cert_env: vec![],
        }))],
        "established-outside-pool" => vec![established(1, [192, 168, 200, 1], vec![])],
        "established-twice" => vec![
            established(1, [10, 8, 0, 2], vec![]),
            established(1, [10, 8, 0, 3], vec![]),
        ],
        "iroute-not-granted" => vec![established(
            1,
            [10, 8, 0, 2],
            vec![(std::net::Ipv4Addr::new(0, 0, 0, 0), 0)],
        )],
        "hello-again" => vec![WorkerToParent::Hello {
            version: PROTOCOL_VERSION,
            pid,
        }],
        // a well-behaved (idle) worker: a status reply of the right kind
        _ => {
            let _ = WorkerStatus::default();
            vec![]
        }
    };
    for m in bad {
        let _ = control.send(&m, &[]);
        std::thread::sleep(Duration::from_millis(50));
    }
    // wait for the parent to kill us (bounded)
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
    }
    ExitCode::SUCCESS
}
