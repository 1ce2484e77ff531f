#![deny(unsafe_code)]
//! `fake-worker`: a "compromised worker" for the parent's tests. Installed as `bulwark-worker` in a
//! test's `--libexec-dir` (next to the real broker), it performs the worker's start-up protocol
//! correctly and then sends one out-of-policy message, chosen by the file `scenario` next to its
//! own executable (the parent starts children with an empty environment and no arguments).
//! Afterwards it waits to be killed.
//!
//! Scenarios: `unknown-reply`, `wrong-reply-kind`, `auth-without-defer`, `established-outside-pool`,
//! `established-twice`, `hello-again`, `iroute-not-granted` (typed messages on the control channel);
//! `garbage`, `oversized`, `fds-attached` (raw packets written with `sendmsg` on the control fd);
//! `first-ready` (Ready instead of Hello), `old-build` (a Hello in a frame of the previous IPC
//! protocol version, as a binary of an older build sends it), `pre-ready-established`, `pre-ready-reply` (instead of
//! Ready), `ready-again`, `disconnected-unknown`, `floated-unknown` (after start-up),
//! `signer-garbage` (a raw non-frame on the signer channel);
//! `sign-flood` (as many well-formed signature requests on the signer channel as it can send in
//! [`FLOOD_FOR`]; the outcome is reported through the log channel as one line starting with
//! [`FLOOD_REPORT`], which the parent prints).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bulwark_ipc::msg::log::{LogOrigin, LogRecord, Severity};
use bulwark_ipc::msg::signer::{SignFailure, SignRequest};
use bulwark_ipc::{ChildLog, Header, Message, WorkerSigner, HEADER_LEN, MAX_BODY_SIZE};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

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
        peer_info: vec![],
        cert_env: vec![],
    })
}

/// How long `sign-flood` keeps sending.
const FLOOD_FOR: Duration = Duration::from_secs(3);

/// Start of the log line `sign-flood` reports its counts in.
const FLOOD_REPORT: &str = "fake-worker sign-flood:";

/// One raw packet on `fd`, with `fds` attached as `SCM_RIGHTS`.
fn send_raw(fd: &OwnedFd, packet: &[u8], fds: &[i32]) -> nix::Result<usize> {
    let iov = [IoSlice::new(packet)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
}

/// The raw-packet scenarios; `None` for a scenario that is not one of them.
fn raw_packet(scenario: &str) -> Option<(Vec<u8>, bool)> {
    let ready = bulwark_ipc::codec::encode(&WorkerToParent::Ready).ok()?;
    let kind = WorkerToParent::Ready.kind();
    match scenario {
        // not a frame at all
        "garbage" => Some((
            b"GET / HTTP/1.0\r\n\r\n\x00\xff\xfe garbage".to_vec(),
            false,
        )),
        // a header announcing more than the maximum body, followed by a few bytes (a real
        // 256 KiB+ datagram cannot even be queued: the kernel's send buffer limit refuses it)
        "oversized" => {
            let len = u32::try_from(MAX_BODY_SIZE + 1).ok()?;
            let mut p = Header::new(kind, len, 0).encode().to_vec();
            p.extend_from_slice(&[0u8; 4096]);
            Some((p, false))
        }
        // a well-formed Ready whose header announces one descriptor, with /dev/null attached
        "fds-attached" => {
            let mut p = Header::new(kind, u32::try_from(ready.len()).ok()?, 1)
                .encode()
                .to_vec();
            debug_assert_eq!(p.len(), HEADER_LEN);
            p.extend_from_slice(&ready);
            Some((p, true))
        }
        _ => None,
    }
}

/// Floods the signer with well-formed TLS 1.3 CertificateVerify inputs for [`FLOOD_FOR`]; returns
/// (signed, refused, other failures, requests).
fn sign_flood(signer: &mut WorkerSigner) -> (u64, u64, u64, u64) {
    let mut message = vec![0x20u8; 64];
    message.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    message.extend_from_slice(&[0x5a; 32]);
    // ECDSA P-256 first; switch to RSA-PSS or Ed25519 if the key cannot do it
    let mut schemes = [0x0403u16, 0x0804, 0x0807].into_iter();
    let mut scheme = schemes.next().unwrap_or(0x0403);
    let (mut signed, mut refused, mut other, mut sent) = (0, 0, 0, 0);
    let start = Instant::now();
    while start.elapsed() < FLOOD_FOR {
        sent += 1;
        let req = SignRequest {
            id: sent,
            scheme,
            message: message.clone(),
        };
        if signer.send(&req, &[]).is_err() {
            break;
        }
        match signer.recv().map(|r| r.into_parts().0.result) {
            Ok(Ok(_)) => signed += 1,
            Ok(Err(SignFailure::Refused)) => refused += 1,
            Ok(Err(SignFailure::UnsupportedScheme)) if signed == 0 => match schemes.next() {
                Some(s) => scheme = s,
                None => other += 1,
            },
            Ok(Err(_)) => other += 1,
            Err(_) => break,
        }
    }
    (signed, refused, other, sent)
}

/// Idles (bounded, 60 s) until the parent kills this process.
fn wait_to_be_killed() -> ExitCode {
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
    }
    ExitCode::SUCCESS
}

fn report(log: &ChildLog, text: &str) {
    let _ = log.send(
        &LogRecord::new(LogOrigin::Worker, 0, 0, Severity::Warning, text),
        &[],
    );
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
        log,
        mut signer,
    }) = WorkerChannels::from_inherited()
    else {
        return ExitCode::from(2);
    };
    let pid = i32::try_from(std::process::id()).unwrap_or(1);
    if scenario == "old-build" {
        // a worker of an older build: its Hello in a frame of the previous protocol version
        let old = PROTOCOL_VERSION.saturating_sub(1);
        let hello = WorkerToParent::Hello { version: old, pid };
        let Ok(body) = bulwark_ipc::codec::encode(&hello) else {
            return ExitCode::from(2);
        };
        let Ok(len) = u32::try_from(body.len()) else {
            return ExitCode::from(2);
        };
        let mut packet = Header::new(hello.kind(), len, 0).encode().to_vec();
        packet[4..6].copy_from_slice(&old.to_le_bytes());
        packet.extend_from_slice(&body);
        let fd = control.into_owned_fd();
        if let Err(e) = send_raw(&fd, &packet, &[]) {
            report(&log, &format!("fake-worker: raw send failed: {e}"));
            return ExitCode::from(5);
        }
        return wait_to_be_killed();
    }
    if scenario == "first-ready" {
        // start-up state "before Hello": Ready instead of Hello
        let _ = control.send(&WorkerToParent::Ready, &[]);
        return wait_to_be_killed();
    }
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
    // start-up state "after Init, before Ready"
    let instead_of_ready = match scenario.as_str() {
        "pre-ready-established" => Some(established(1, [10, 8, 0, 2], vec![])),
        "pre-ready-reply" => Some(WorkerToParent::Reply {
            id: 1,
            reply: WorkerReply::Count(1),
        }),
        _ => None,
    };
    if let Some(m) = instead_of_ready {
        let _ = control.send(&m, &[]);
        return wait_to_be_killed();
    }
    if control.send(&WorkerToParent::Ready, &[]).is_err() {
        return ExitCode::from(2);
    }
    if let Some((packet, with_fd)) = raw_packet(&scenario) {
        let fd = control.into_owned_fd();
        let null = match std::fs::File::open("/dev/null") {
            Ok(f) => f,
            Err(_) => return ExitCode::from(2),
        };
        let fds = if with_fd {
            vec![null.as_raw_fd()]
        } else {
            vec![]
        };
        if let Err(e) = send_raw(&fd, &packet, &fds) {
            report(&log, &format!("fake-worker: raw send failed: {e}"));
            return ExitCode::from(5);
        }
        for _ in 0..600 {
            std::thread::sleep(Duration::from_millis(100));
        }
        return ExitCode::SUCCESS;
    }
    if scenario == "signer-garbage" {
        let fd = signer.into_owned_fd();
        if let Err(e) = send_raw(&fd, b"not a frame", &[]) {
            report(&log, &format!("fake-worker: raw send failed: {e}"));
            return ExitCode::from(5);
        }
        // keep the control channel open and quiet
        let _keep = control;
        return wait_to_be_killed();
    }
    if scenario == "sign-flood" {
        let (signed, refused, other, sent) = sign_flood(&mut signer);
        report(
            &log,
            &format!(
                "{FLOOD_REPORT} requests={sent} signed={signed} refused={refused} other={other} \
                 seconds={}",
                FLOOD_FOR.as_secs()
            ),
        );
        // stay alive (and quiet) until killed or stopped
        for _ in 0..600 {
            std::thread::sleep(Duration::from_millis(100));
        }
        return ExitCode::SUCCESS;
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
        "ready-again" => vec![WorkerToParent::Ready],
        "disconnected-unknown" => vec![WorkerToParent::Client(ClientEvent::Disconnected {
            cid: 77,
            reason: "gone".into(),
            bytes_received: 0,
            bytes_sent: 0,
            duration_secs: 0,
        })],
        "floated-unknown" => vec![WorkerToParent::Client(ClientEvent::Floated {
            cid: 77,
            real_address: RealAddr {
                proto: TransportProto::Udp,
                addr: "192.0.2.67:1194"
                    .parse()
                    .unwrap_or_else(|_| std::process::exit(3)),
            },
        })],
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
