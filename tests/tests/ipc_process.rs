#![allow(clippy::unwrap_used)]
//! Out-of-process IPC tests: the test binary re-executes itself as a child (selected by the
//! `BULWARK_IPC_HELPER` environment variable) with its channel ends on the fixed descriptor
//! numbers of `bulwark_ipc::layout`, exactly as the daemon starts its children. Covers the
//! start-up protocol of both children, descriptor passing across processes (TUN, UDP socket,
//! TCP and unix listeners), the log and signer channels, a hostile child sending malformed
//! packets, and peers that die or close.
//!
//! Every receive has a timeout, so a hung peer fails the test instead of hanging it; children
//! also time out and exit on their own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bulwark_ipc::msg::{
    BrokerConfig, BrokerInit, BrokerToParent, FdRole, LogOrigin, LogRecord, ParentToBroker,
    ParentToWorker, Severity, SignFailure, SignRequest, SignResponse, WorkerConfig, WorkerInit,
    WorkerToParent, MAX_CRL_PEM_LEN,
};
use bulwark_ipc::{
    BrokerChannels, Channel, ChannelError, ChildFdMap, Header, LayoutError, Message, NoMessage,
    ParentBrokerControl, ParentLog, ParentSigner, ParentWorkerControl, ProtocolError,
    WorkerChannels, CONTROL_FD, LOG_FD, MAX_MESSAGE_SIZE, PROTOCOL_VERSION, SIGNER_FD,
};

const HELPER_ENV: &str = "BULWARK_IPC_HELPER";
const ARG_ENV: &str = "BULWARK_IPC_HELPER_ARG";
const TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ child side

/// Entry point of the re-executed child. In a normal test run (no `BULWARK_IPC_HELPER`) there is
/// nothing to do.
#[test]
fn child_helper_entry() {
    let Ok(scenario) = std::env::var(HELPER_ENV) else {
        return;
    };
    let arg = std::env::var(ARG_ENV).unwrap_or_default();
    match scenario.as_str() {
        "worker" => child_worker(&arg),
        "broker" => child_broker(),
        "hostile" => child_hostile(),
        "exit_at_once" => {
            let _ch = WorkerChannels::from_inherited().unwrap();
        }
        "wait_for_parent_close" => {
            let mut ch = WorkerChannels::from_inherited().unwrap();
            ch.control.set_recv_timeout(Some(TIMEOUT)).unwrap();
            match ch.control.recv() {
                Err(ChannelError::PeerClosed) => {}
                other => panic!("expected PeerClosed, got {other:?}"),
            }
            assert!(matches!(
                ch.log.send(&log(0, "late"), &[]),
                Err(ChannelError::PeerClosed)
            ));
        }
        "block_forever" => {
            let mut ch = WorkerChannels::from_inherited().unwrap();
            ch.control.set_recv_timeout(Some(TIMEOUT)).unwrap();
            // the parent kills us while we wait
            let _ = ch.control.recv();
        }
        "bad_layout" => match WorkerChannels::from_inherited() {
            Err(LayoutError::Channel {
                fd: CONTROL_FD,
                source: ChannelError::NotAChannel { .. },
            }) => {}
            other => panic!("expected NotAChannel on fd 3, got {other:?}"),
        },
        "missing_layout" => match WorkerChannels::from_inherited() {
            Err(LayoutError::Channel {
                fd: CONTROL_FD,
                source: ChannelError::Inherited(_),
            }) => {}
            other => panic!("expected fd 3 not open, got {other:?}"),
        },
        other => panic!("unknown helper scenario {other}"),
    }
}

fn log(seq: u64, text: &str) -> LogRecord {
    LogRecord::new(LogOrigin::Worker, seq, 3, Severity::Info, text)
}

fn child_worker(parent_udp_addr: &str) {
    let mut ch = WorkerChannels::from_inherited().unwrap();
    ch.control.set_recv_timeout(Some(TIMEOUT)).unwrap();
    ch.signer.set_recv_timeout(Some(TIMEOUT)).unwrap();

    // Hello exchange
    let hello = ch.control.recv().unwrap();
    assert_eq!(
        hello.msg,
        ParentToWorker::Hello {
            version: PROTOCOL_VERSION
        }
    );
    ch.control
        .send(
            &WorkerToParent::Hello {
                version: PROTOCOL_VERSION,
                pid: std::process::id() as i32,
            },
            &[],
        )
        .unwrap();

    // Init with the TUN fd and a UDP socket: check their kinds, then use the socket
    let init = ch.control.recv().unwrap();
    let ParentToWorker::Init(wi) = &init.msg else {
        panic!("expected Init, got {:?}", init.msg)
    };
    assert_eq!(wi.config.verb, 5);
    wi.check_fds(&init.fds).unwrap();
    let udp_index = wi.fds.iter().position(|r| *r == FdRole::UdpSocket).unwrap();
    let (_, fds) = init.into_parts();
    let udp = UdpSocket::from(fds.into_iter().nth(udp_index).unwrap());
    udp.send_to(b"hello from the worker", parent_udp_addr)
        .unwrap();

    // log records
    for seq in 0..50 {
        ch.log
            .send(&log(seq, &format!("record {seq}")), &[])
            .unwrap();
    }

    // signer round trips
    for id in 1..=3u64 {
        let req = SignRequest {
            id,
            scheme: 0x0804,
            message: vec![id as u8; 64],
        };
        let resp = ch.signer.call(&req, &[]).unwrap().msg;
        assert_eq!(resp.id, id);
        let mut expected = req.message.clone();
        expected.reverse();
        assert_eq!(resp.result, Ok(expected));
    }
    let refused = ch
        .signer
        .call(
            &SignRequest {
                id: 99,
                scheme: 0x0403,
                message: vec![1],
            },
            &[],
        )
        .unwrap()
        .msg;
    assert_eq!(refused.result, Err(SignFailure::UnsupportedScheme));

    ch.control.send(&WorkerToParent::Ready, &[]).unwrap();

    // after start-up
    assert_eq!(
        ch.control.recv().unwrap().msg,
        ParentToWorker::SetVerb { level: 9 }
    );
    match ch.control.recv().unwrap().msg {
        ParentToWorker::CrlUpdate { pem } => assert_eq!(pem.len(), MAX_CRL_PEM_LEN),
        other => panic!("expected CrlUpdate, got {other:?}"),
    }
    assert_eq!(ch.control.recv().unwrap().msg, ParentToWorker::Shutdown);
}

fn child_broker() {
    let mut ch = BrokerChannels::from_inherited().unwrap();
    ch.control.set_recv_timeout(Some(TIMEOUT)).unwrap();
    assert!(matches!(
        ch.control.recv().unwrap().msg,
        ParentToBroker::Hello { .. }
    ));
    ch.control
        .send(
            &BrokerToParent::Hello {
                version: PROTOCOL_VERSION,
                pid: std::process::id() as i32,
            },
            &[],
        )
        .unwrap();
    let init = ch.control.recv().unwrap();
    let ParentToBroker::Init(bi) = &init.msg else {
        panic!("expected Init, got {:?}", init.msg)
    };
    bi.check_fds(&init.fds).unwrap();
    let (_, fds) = init.into_parts();
    let mut fds = fds.into_iter();
    let tcp = TcpListener::from(fds.next().unwrap());
    let unix = UnixListener::from(fds.next().unwrap());
    ch.control.send(&BrokerToParent::Ready, &[]).unwrap();
    // serve one client on each listener: read a line, answer it
    let (mut s, _) = tcp.accept().unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"status\n");
    s.write_all(b"SUCCESS: tcp\n").unwrap();
    let (mut s, _) = unix.accept().unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pid\n");
    s.write_all(b"SUCCESS: unix\n").unwrap();
    ch.log
        .send(
            &LogRecord::new(LogOrigin::Broker, 0, 1, Severity::Info, "served"),
            &[],
        )
        .unwrap();
    assert_eq!(ch.control.recv().unwrap().msg, ParentToBroker::Shutdown);
}

/// Raw packet on a channel end, bypassing the sender-side checks.
fn raw_send(fd: std::os::fd::BorrowedFd<'_>, bytes: &[u8], fds: &[i32]) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<UnixAddr>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
}

/// A child that sends one malformed packet of each kind, then a valid Fatal, and exits.
fn child_hostile() {
    let ch = WorkerChannels::from_inherited().unwrap();
    let fd = ch.control.as_fd();
    let ready_body = {
        // the encoding of WorkerToParent::Ready: its u32 variant index
        1u32.to_le_bytes()
    };
    let frame = |kind: u16, fds: u16, body: &[u8]| {
        let mut f = Header::new(kind, body.len() as u32, fds).encode().to_vec();
        f.extend_from_slice(body);
        f
    };
    let ready = WorkerToParent::Ready;
    // 1. bad magic
    let mut f = frame(ready.kind(), 0, &ready_body);
    f[0] = b'X';
    raw_send(fd, &f, &[]);
    // 2. header announces an fd that does not come
    raw_send(fd, &frame(ready.kind(), 1, &ready_body), &[]);
    // 3. a descriptor attached to a message that declares none (a pipe: the parent must close it)
    let (r, w) = nix::unistd::pipe().unwrap();
    raw_send(fd, &frame(ready.kind(), 1, &ready_body), &[w.as_raw_fd()]);
    drop(w);
    // 4. oversized packet
    raw_send(fd, &vec![0u8; MAX_MESSAGE_SIZE + 100], &[]);
    // 5. trailing bytes
    let mut body = ready_body.to_vec();
    body.push(0);
    raw_send(fd, &frame(ready.kind(), 0, &body), &[]);
    // 6. valid framing, invalid value: a Hello claiming pid 0
    let mut hello = 0u32.to_le_bytes().to_vec();
    hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&0i32.to_le_bytes());
    raw_send(fd, &frame(0x0181, 0, &hello), &[]);
    // 7. a valid Fatal
    ch.control
        .send(
            &WorkerToParent::Fatal {
                reason: "hostile child done".into(),
            },
            &[],
        )
        .unwrap();
    // the parent closed the pipe write end it received: with ours gone, the read end sees EOF
    // once the parent has processed packet 3; wait for that (bounded by the read timeout of the
    // parent closing the control channel)
    let mut control = ch.control;
    control.set_recv_timeout(Some(TIMEOUT)).unwrap();
    assert!(matches!(control.recv(), Err(ChannelError::PeerClosed)));
    let mut buf = [0u8; 1];
    nix::fcntl::fcntl(
        &r,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    assert_eq!(
        nix::unistd::read(&r, &mut buf),
        Ok(0),
        "parent leaked a received fd"
    );
}

// ------------------------------------------------------------------ parent side

struct WorkerSide {
    control: ParentWorkerControl,
    log: ParentLog,
    signer: ParentSigner,
    child: Child,
}

fn helper_command(scenario: &str, arg: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_helper_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HELPER_ENV, scenario)
    .env(ARG_ENV, arg)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

fn spawn_worker(scenario: &str, arg: &str) -> WorkerSide {
    let (control, child_control) = Channel::<ParentToWorker, WorkerToParent>::pair().unwrap();
    let (child_log, log) = Channel::<LogRecord, NoMessage>::pair().unwrap();
    let (child_signer, signer) = Channel::<SignRequest, SignResponse>::pair().unwrap();
    let child = ChildFdMap::worker(child_control, child_log, child_signer)
        .spawn(helper_command(scenario, arg))
        .unwrap();
    control.set_recv_timeout(Some(TIMEOUT)).unwrap();
    log.set_recv_timeout(Some(TIMEOUT)).unwrap();
    signer.set_recv_timeout(Some(TIMEOUT)).unwrap();
    WorkerSide {
        control,
        log,
        signer,
        child,
    }
}

/// Wait for the child and require a clean exit; its stderr is shown on failure.
fn expect_success(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "helper failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open_tun() -> Option<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .ok()
        .map(OwnedFd::from)
}

#[test]
fn worker_start_up_fd_passing_logs_and_signer_across_processes() {
    let Some(tun) = open_tun() else {
        eprintln!("skipping: /dev/net/tun cannot be opened here");
        return;
    };
    // the parent's UDP socket that the worker will write to through the socket we pass it
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(TIMEOUT)).unwrap();
    let transport = UdpSocket::bind("127.0.0.1:0").unwrap();
    let transport_addr = transport.local_addr().unwrap();

    let mut w = spawn_worker("worker", &sink.local_addr().unwrap().to_string());
    w.control
        .send(
            &ParentToWorker::Hello {
                version: PROTOCOL_VERSION,
            },
            &[],
        )
        .unwrap();
    match w.control.recv().unwrap().msg {
        WorkerToParent::Hello { version, pid } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert_eq!(pid as u32, w.child.id());
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    let init = ParentToWorker::Init(Box::new(WorkerInit {
        config: WorkerConfig {
            uid: 65534,
            gid: 65534,
            chroot_dir: PathBuf::from("/var/empty"),
            engine: bulwark_ipc::msg::engine::EngineConfig::minimal_for_tests(),
            verb: 5,
            seccomp: bulwark_ipc::msg::SeccompMode::Kill,
        },
        fds: vec![FdRole::Tun, FdRole::UdpSocket],
    }));
    let transport: OwnedFd = transport.into();
    w.control
        .send(&init, &[tun.as_fd(), transport.as_fd()])
        .unwrap();
    drop((tun, transport));

    // the datagram comes from the socket we handed over
    let mut buf = [0u8; 64];
    let (n, from) = sink.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello from the worker");
    assert_eq!(from, transport_addr);

    for seq in 0..50u64 {
        let rec = w.log.recv().unwrap().msg;
        assert_eq!(rec.seq, seq);
        assert_eq!(rec.origin, LogOrigin::Worker);
        assert_eq!(rec.message, format!("record {seq}"));
    }

    // signer: "sign" by reversing, refuse ECDSA
    for _ in 0..4 {
        let req = w.signer.recv().unwrap().msg;
        let result = if req.scheme == 0x0804 {
            let mut sig = req.message.clone();
            sig.reverse();
            Ok(sig)
        } else {
            Err(SignFailure::UnsupportedScheme)
        };
        w.signer
            .send(&SignResponse { id: req.id, result }, &[])
            .unwrap();
    }

    assert_eq!(w.control.recv().unwrap().msg, WorkerToParent::Ready);
    w.control
        .send(&ParentToWorker::SetVerb { level: 9 }, &[])
        .unwrap();
    let mut pem = b"-----BEGIN X509 CRL-----\n".to_vec();
    pem.resize(MAX_CRL_PEM_LEN, b'A');
    w.control
        .send(&ParentToWorker::CrlUpdate { pem }, &[])
        .unwrap();
    w.control.send(&ParentToWorker::Shutdown, &[]).unwrap();
    expect_success(w.child);
    assert!(matches!(w.control.recv(), Err(ChannelError::PeerClosed)));
    assert!(matches!(w.log.recv(), Err(ChannelError::PeerClosed)));
    assert!(matches!(w.signer.recv(), Err(ChannelError::PeerClosed)));
}

#[test]
fn broker_start_up_with_management_listeners_across_processes() {
    let (control, child_control) = Channel::<ParentToBroker, BrokerToParent>::pair().unwrap();
    let mut control: ParentBrokerControl = control;
    let (child_log, mut log) = Channel::<LogRecord, NoMessage>::pair().unwrap();
    let child = ChildFdMap::broker(child_control, child_log)
        .spawn(helper_command("broker", ""))
        .unwrap();
    control.set_recv_timeout(Some(TIMEOUT)).unwrap();
    log.set_recv_timeout(Some(TIMEOUT)).unwrap();

    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mgmt.sock");
    let unix = UnixListener::bind(&path).unwrap();

    control
        .send(
            &ParentToBroker::Hello {
                version: PROTOCOL_VERSION,
            },
            &[],
        )
        .unwrap();
    assert!(matches!(
        control.recv().unwrap().msg,
        BrokerToParent::Hello { .. }
    ));
    let init = ParentToBroker::Init(BrokerInit {
        config: BrokerConfig {
            uid: 65533,
            gid: 65533,
            chroot_dir: PathBuf::from("/var/empty"),
            verb: 3,
            seccomp: bulwark_ipc::msg::SeccompMode::Kill,
            mgmt: bulwark_ipc::msg::MgmtSettings::default(),
        },
        fds: vec![FdRole::TcpListener, FdRole::UnixListener],
        policies: vec![
            bulwark_ipc::msg::mgmt::ListenerPolicy::openvpn_compatible(
                bulwark_ipc::msg::mgmt::ListenerKind::Tcp,
                None,
            ),
            bulwark_ipc::msg::mgmt::ListenerPolicy::openvpn_compatible(
                bulwark_ipc::msg::mgmt::ListenerKind::Unix("/x.sock".into()),
                None,
            ),
        ],
    });
    let tcp: OwnedFd = tcp.into();
    let unix: OwnedFd = unix.into();
    control.send(&init, &[tcp.as_fd(), unix.as_fd()]).unwrap();
    // the parent keeps no copy: only the broker can accept now
    drop((tcp, unix));
    assert_eq!(control.recv().unwrap().msg, BrokerToParent::Ready);

    let mut c = TcpStream::connect(tcp_addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(b"status\n").unwrap();
    let mut reply = [0u8; 13];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"SUCCESS: tcp\n");
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(b"pid\n").unwrap();
    let mut reply = [0u8; 14];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"SUCCESS: unix\n");

    let rec = log.recv().unwrap().msg;
    assert_eq!(rec.origin, LogOrigin::Broker);
    assert_eq!(rec.message, "served");
    control.send(&ParentToBroker::Shutdown, &[]).unwrap();
    expect_success(child);
    assert!(matches!(control.recv(), Err(ChannelError::PeerClosed)));
}

#[test]
fn hostile_child_gets_typed_protocol_errors_and_fds_are_closed() {
    let mut w = spawn_worker("hostile", "");
    let mut next = || match w.control.recv() {
        Err(ChannelError::Protocol(p)) => p,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    assert!(matches!(next(), ProtocolError::BadMagic { .. }));
    assert!(matches!(
        next(),
        ProtocolError::HeaderFdCount {
            header: 1,
            received: 0
        }
    ));
    assert!(matches!(
        next(),
        ProtocolError::DeclaredFdCount {
            declared: 0,
            received: 1,
            ..
        }
    ));
    assert!(matches!(next(), ProtocolError::Truncated { .. }));
    assert!(matches!(next(), ProtocolError::Body { .. }));
    assert!(matches!(next(), ProtocolError::Invalid { .. }));
    assert_eq!(
        w.control.recv().unwrap().msg,
        WorkerToParent::Fatal {
            reason: "hostile child done".into()
        }
    );
    // close our end: the child then checks that the pipe fd we received was closed
    let WorkerSide {
        control,
        log,
        signer,
        child,
    } = w;
    drop((control, log, signer));
    expect_success(child);
}

#[test]
fn child_exit_and_kill_are_seen_as_peer_closed() {
    let mut w = spawn_worker("exit_at_once", "");
    assert!(matches!(w.control.recv(), Err(ChannelError::PeerClosed)));
    assert!(matches!(
        w.control.send(&ParentToWorker::Shutdown, &[]),
        Err(ChannelError::PeerClosed)
    ));
    expect_success(w.child);

    let mut w = spawn_worker("block_forever", "");
    // make sure it is running and holding its ends, then kill it
    std::thread::sleep(Duration::from_millis(100));
    w.child.kill().unwrap();
    let status = w.child.wait().unwrap();
    assert!(!status.success());
    assert!(matches!(w.control.recv(), Err(ChannelError::PeerClosed)));
    assert!(matches!(w.signer.recv(), Err(ChannelError::PeerClosed)));
}

#[test]
fn parent_close_is_seen_by_the_child() {
    let w = spawn_worker("wait_for_parent_close", "");
    let WorkerSide {
        control,
        log,
        signer,
        child,
    } = w;
    drop((control, log, signer));
    expect_success(child);
}

#[test]
fn child_rejects_a_wrong_or_missing_fd_layout() {
    // fd 3 is a pipe instead of a seqpacket socket
    let (r, _w) = nix::unistd::pipe().unwrap();
    let (_a, b) = Channel::<LogRecord, NoMessage>::pair().unwrap();
    let (_c, d) = Channel::<SignRequest, SignResponse>::pair().unwrap();
    let mut map = ChildFdMap::new();
    map.place(r, CONTROL_FD).unwrap();
    map.place(b.into_owned_fd(), LOG_FD).unwrap();
    map.place(d.into_owned_fd(), SIGNER_FD).unwrap();
    expect_success(map.spawn(helper_command("bad_layout", "")).unwrap());

    // nothing placed at all
    expect_success(
        ChildFdMap::new()
            .spawn(helper_command("missing_layout", ""))
            .unwrap(),
    );
}
