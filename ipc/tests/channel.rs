#![allow(clippy::unwrap_used)]
//! In-process tests of the typed channels: round trips of every message (blocking and async),
//! descriptor passing, and rejection of every kind of malformed packet.

use std::fs::File;
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use bulwark_ipc::codec;
use bulwark_ipc::msg::{
    BrokerConfig, BrokerInit, BrokerToParent, FdRole, LogOrigin, LogRecord, ParentToBroker,
    ParentToWorker, Severity, SignFailure, SignRequest, SignResponse, WorkerConfig, WorkerInit,
    WorkerToParent, MAX_CRL_PEM_LEN,
};
use bulwark_ipc::{
    AsyncChannel, Channel, ChannelError, Header, Message, NoMessage, ProtocolError,
    ValidationError, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_SIZE, PROTOCOL_VERSION,
};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- helpers

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        uid: 65534,
        gid: 65534,
        chroot_dir: PathBuf::from("/var/empty"),
        engine: bulwark_ipc::msg::engine::EngineConfig::minimal_for_tests(),
        verb: 4,
        seccomp: bulwark_ipc::msg::SeccompMode::Kill,
    }
}

fn broker_config() -> BrokerConfig {
    BrokerConfig {
        uid: 65533,
        gid: 65533,
        chroot_dir: PathBuf::from("/run/bulwark/mgmt-empty"),
        verb: 3,
        seccomp: bulwark_ipc::msg::SeccompMode::Kill,
        mgmt: bulwark_ipc::msg::MgmtSettings::default(),
    }
}

fn crl_pem(len: usize) -> Vec<u8> {
    let mut pem = b"-----BEGIN X509 CRL-----\n".to_vec();
    while pem.len() < len - 23 {
        pem.push(b'A');
    }
    pem.extend_from_slice(b"\n-----END X509 CRL-----");
    pem.truncate(len);
    pem
}

/// A test-only message type: shows that new message types plug in, and carries any number of
/// descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum TestMsg {
    Fds { count: u8, note: String },
}

impl Message for TestMsg {
    fn kind(&self) -> u16 {
        0xF001
    }
    fn name(&self) -> &'static str {
        "TestMsg::Fds"
    }
    fn fd_count(&self) -> usize {
        match self {
            TestMsg::Fds { count, .. } => usize::from(*count),
        }
    }
    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            TestMsg::Fds { note, .. } => bulwark_ipc::validate::check_text("note", note, 64),
        }
    }
}

fn borrow(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(|f| f.as_fd()).collect()
}

fn pipes(n: usize) -> (Vec<OwnedFd>, Vec<OwnedFd>) {
    (0..n).map(|_| nix::unistd::pipe().unwrap()).unzip()
}

/// Send raw bytes (and raw fds) on a channel end, bypassing every sender-side check.
fn raw_send(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<UnixAddr>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
    assert_eq!(n, bytes.len());
}

fn frame(kind: u16, fd_count: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Header::new(kind, body.len() as u32, fd_count)
        .encode()
        .to_vec();
    f.extend_from_slice(body);
    f
}

fn frame_of<M: Message>(msg: &M, fd_count: u16) -> Vec<u8> {
    frame(msg.kind(), fd_count, &codec::encode(msg).unwrap())
}

fn round_trip<A: Message + PartialEq + Clone, B: Message>(
    tx: &Channel<A, B>,
    rx: &mut Channel<B, A>,
    msg: A,
    fds: &[OwnedFd],
) -> Vec<OwnedFd> {
    tx.send(&msg, &borrow(fds)).unwrap();
    let got = rx.recv().unwrap();
    assert_eq!(got.msg, msg);
    assert_eq!(got.fds.len(), fds.len());
    got.fds
}

fn protocol_error<T: std::fmt::Debug>(r: Result<T, ChannelError>) -> ProtocolError {
    match r {
        Err(ChannelError::Protocol(p)) => p,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

fn all_parent_to_worker(tun_and_udp: bool) -> Vec<ParentToWorker> {
    let mut v = vec![
        ParentToWorker::Hello {
            version: PROTOCOL_VERSION,
        },
        ParentToWorker::Shutdown,
        ParentToWorker::SetVerb { level: 0 },
        ParentToWorker::SetVerb { level: 11 },
        ParentToWorker::CrlUpdate { pem: crl_pem(300) },
    ];
    if tun_and_udp {
        v.push(ParentToWorker::Init(Box::new(WorkerInit {
            config: worker_config(),
            fds: vec![FdRole::Tun, FdRole::UdpSocket],
        })));
    }
    v
}

fn all_worker_to_parent() -> Vec<WorkerToParent> {
    vec![
        WorkerToParent::Hello {
            version: PROTOCOL_VERSION,
            pid: 4242,
        },
        WorkerToParent::Ready,
        WorkerToParent::Fatal {
            reason: "cannot chroot: permission denied".into(),
        },
    ]
}

fn all_parent_to_broker() -> Vec<ParentToBroker> {
    vec![
        ParentToBroker::Hello {
            version: PROTOCOL_VERSION,
        },
        ParentToBroker::Init(BrokerInit {
            config: broker_config(),
            fds: vec![],
            policies: vec![],
        }),
        ParentToBroker::Shutdown,
        ParentToBroker::SetVerb { level: 7 },
    ]
}

fn all_broker_to_parent() -> Vec<BrokerToParent> {
    vec![
        BrokerToParent::Hello {
            version: PROTOCOL_VERSION,
            pid: 17,
        },
        BrokerToParent::Ready,
        BrokerToParent::Fatal {
            reason: "bad listener".into(),
        },
    ]
}

fn all_log_records() -> Vec<LogRecord> {
    vec![
        LogRecord::new(
            LogOrigin::Worker,
            0,
            1,
            Severity::Info,
            "Initialization Sequence Completed",
        ),
        LogRecord::new(LogOrigin::Broker, 1, 4, Severity::Warning, "tab\there"),
        LogRecord::new(LogOrigin::Worker, u64::MAX, 11, Severity::Debug, ""),
        LogRecord::new(
            LogOrigin::Worker,
            2,
            0,
            Severity::Fatal,
            "Exiting due to fatal error",
        ),
        LogRecord::new(LogOrigin::Worker, 3, 0, Severity::Error, "TLS Error"),
    ]
}

fn all_sign_responses() -> Vec<SignResponse> {
    vec![
        SignResponse {
            id: 9,
            result: Ok(vec![0xab; 256]),
        },
        SignResponse {
            id: 10,
            result: Err(SignFailure::UnsupportedScheme),
        },
        SignResponse {
            id: 11,
            result: Err(SignFailure::NoKey),
        },
        SignResponse {
            id: 12,
            result: Err(SignFailure::Failed),
        },
        SignResponse {
            id: 13,
            result: Err(SignFailure::Refused),
        },
    ]
}

fn sign_request() -> SignRequest {
    SignRequest {
        id: 9,
        scheme: 0x0804,
        message: vec![0x20; 130],
    }
}

/// A real TUN clone fd if this system lets us open one, else none.
fn open_tun() -> Option<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .ok()
        .map(OwnedFd::from)
}

// ---------------------------------------------------------------- round trips

#[test]
fn every_message_round_trips_blocking() {
    let (parent, mut worker) = Channel::<ParentToWorker, WorkerToParent>::pair().unwrap();
    let mut parent = parent;
    for m in all_parent_to_worker(false) {
        round_trip(&parent, &mut worker, m, &[]);
    }
    for m in all_worker_to_parent() {
        round_trip(&worker, &mut parent, m, &[]);
    }

    let (mut pb, mut broker) = Channel::<ParentToBroker, BrokerToParent>::pair().unwrap();
    for m in all_parent_to_broker() {
        round_trip(&pb, &mut broker, m, &[]);
    }
    for m in all_broker_to_parent() {
        round_trip(&broker, &mut pb, m, &[]);
    }

    let (child_log, mut parent_log) = Channel::<LogRecord, NoMessage>::pair().unwrap();
    for m in all_log_records() {
        round_trip(&child_log, &mut parent_log, m, &[]);
    }

    let (mut wsign, mut psign) = Channel::<SignRequest, SignResponse>::pair().unwrap();
    for resp in all_sign_responses() {
        wsign.send(&sign_request(), &[]).unwrap();
        let req = psign.recv().unwrap().msg;
        assert_eq!(req, sign_request());
        psign.send(&resp, &[]).unwrap();
        assert_eq!(wsign.recv().unwrap().msg, resp);
    }
    // call() = send + recv
    psign
        .send(
            &SignResponse {
                id: 1,
                result: Ok(vec![1]),
            },
            &[],
        )
        .unwrap();
    let got = wsign.call(&sign_request(), &[]).unwrap();
    assert_eq!(got.msg.id, 1);
    assert_eq!(psign.recv().unwrap().msg, sign_request());
}

#[test]
fn init_carries_real_descriptors_of_the_declared_kinds() {
    let Some(tun) = open_tun() else {
        eprintln!("skipping: /dev/net/tun cannot be opened here");
        return;
    };
    let udp: OwnedFd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().into();
    let (parent, mut worker) = Channel::<ParentToWorker, WorkerToParent>::pair().unwrap();
    let init = all_parent_to_worker(true).pop().unwrap();
    let fds = round_trip(&parent, &mut worker, init.clone(), &[tun, udp]);
    let ParentToWorker::Init(wi) = init else {
        unreachable!()
    };
    wi.check_fds(&fds).unwrap();
    // in the wrong order the check fails
    let swapped = vec![fds[1].try_clone().unwrap(), fds[0].try_clone().unwrap()];
    assert!(wi.check_fds(&swapped).is_err());
}

#[test]
fn broker_init_listeners_work_on_the_receiving_side() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("mgmt.sock");
    let unix = UnixListener::bind(&sock_path).unwrap();
    let (pb, mut broker) = Channel::<ParentToBroker, BrokerToParent>::pair().unwrap();
    let init = BrokerInit {
        config: broker_config(),
        fds: vec![FdRole::TcpListener, FdRole::UnixListener],
        policies: vec![
            bulwark_ipc::msg::mgmt::ListenerPolicy::openvpn_compatible(
                bulwark_ipc::msg::mgmt::ListenerKind::Tcp,
                None,
            ),
            bulwark_ipc::msg::mgmt::ListenerPolicy::openvpn_compatible(
                bulwark_ipc::msg::mgmt::ListenerKind::Unix("/run/x.sock".into()),
                None,
            ),
        ],
    };
    let fds: Vec<OwnedFd> = vec![tcp.into(), unix.into()];
    let got = round_trip(&pb, &mut broker, ParentToBroker::Init(init.clone()), &fds);
    drop(fds); // only the received copies remain
    init.check_fds(&got).unwrap();
    let mut got = got.into_iter();
    let tcp = TcpListener::from(got.next().unwrap());
    let unix = UnixListener::from(got.next().unwrap());
    let mut c = TcpStream::connect(tcp_addr).unwrap();
    let (mut s, _) = tcp.accept().unwrap();
    c.write_all(b"status\n").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"status\n");
    let mut c = UnixStream::connect(&sock_path).unwrap();
    let (mut s, _) = unix.accept().unwrap();
    c.write_all(b"pid").unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pid");
}

#[test]
fn pipe_memfd_and_socket_fds_work_after_passing() {
    let (tx, mut rx) = Channel::<TestMsg, TestMsg>::pair().unwrap();
    let (pr, pw) = nix::unistd::pipe().unwrap();
    let memfd =
        nix::sys::memfd::memfd_create(c"ipc-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    let mut mf = File::from(memfd);
    mf.write_all(b"memfd contents").unwrap();
    let (s1, s2) = UnixStream::pair().unwrap();
    let msg = TestMsg::Fds {
        count: 3,
        note: "pipe, memfd, socket".into(),
    };
    let sent: Vec<OwnedFd> = vec![pw, mf.into(), s2.into()];
    let got = round_trip(&tx, &mut rx, msg, &sent);
    drop(sent);
    let mut got = got.into_iter();
    // pipe write end: write on the received copy, read on our end
    let mut w = File::from(got.next().unwrap());
    w.write_all(b"through the pipe").unwrap();
    drop(w);
    let mut s = String::new();
    File::from(pr).read_to_string(&mut s).unwrap();
    assert_eq!(s, "through the pipe");
    // memfd: same file, contents visible
    let mut m = File::from(got.next().unwrap());
    m.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    m.read_to_string(&mut s).unwrap();
    assert_eq!(s, "memfd contents");
    // socket: talk across
    let mut peer = UnixStream::from(got.next().unwrap());
    let mut s1 = s1;
    peer.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s1.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn maximum_size_message_fits_and_one_byte_more_is_refused() {
    let (parent, mut worker) = Channel::<ParentToWorker, WorkerToParent>::pair().unwrap();
    let max = ParentToWorker::CrlUpdate {
        pem: crl_pem(MAX_CRL_PEM_LEN),
    };
    round_trip(&parent, &mut worker, max, &[]);
    let over = ParentToWorker::CrlUpdate {
        pem: crl_pem(MAX_CRL_PEM_LEN + 1),
    };
    assert!(matches!(
        parent.send(&over, &[]),
        Err(ChannelError::InvalidOutgoing { .. })
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn every_message_round_trips_async() {
    let (parent, mut worker) = AsyncChannel::<ParentToWorker, WorkerToParent>::pair().unwrap();
    let mut parent = parent;
    for m in all_parent_to_worker(false) {
        parent.send(&m, &[]).await.unwrap();
        assert_eq!(worker.recv().await.unwrap().msg, m);
    }
    for m in all_worker_to_parent() {
        worker.send(&m, &[]).await.unwrap();
        assert_eq!(parent.recv().await.unwrap().msg, m);
    }
    let (mut pb, mut broker) = AsyncChannel::<ParentToBroker, BrokerToParent>::pair().unwrap();
    for m in all_parent_to_broker() {
        pb.send(&m, &[]).await.unwrap();
        assert_eq!(broker.recv().await.unwrap().msg, m);
    }
    for m in all_broker_to_parent() {
        broker.send(&m, &[]).await.unwrap();
        assert_eq!(pb.recv().await.unwrap().msg, m);
    }
    let (child_log, mut parent_log) = AsyncChannel::<LogRecord, NoMessage>::pair().unwrap();
    for m in all_log_records() {
        child_log.send(&m, &[]).await.unwrap();
        assert_eq!(parent_log.recv().await.unwrap().msg, m);
    }
    let (mut wsign, mut psign) = AsyncChannel::<SignRequest, SignResponse>::pair().unwrap();
    for resp in all_sign_responses() {
        let server = async {
            let req = psign.recv().await.unwrap();
            assert_eq!(req.msg, sign_request());
            psign.send(&resp, &[]).await.unwrap();
        };
        let req = sign_request();
        let (got, ()) = tokio::join!(wsign.call(&req, &[]), server);
        assert_eq!(got.unwrap().msg, resp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_fd_passing_and_backpressure() {
    let (tx, mut rx) = AsyncChannel::<TestMsg, TestMsg>::pair().unwrap();
    // many messages with fds, more than the socket queue holds: the sender must wait, not fail
    let sender = tokio::spawn(async move {
        for i in 0..500u32 {
            let (r, w) = nix::unistd::pipe().unwrap();
            let msg = TestMsg::Fds {
                count: 2,
                note: format!("n{i}"),
            };
            tx.send(&msg, &[r.as_fd(), w.as_fd()]).await.unwrap();
        }
        tx
    });
    for i in 0..500u32 {
        let got = rx.recv().await.unwrap();
        assert_eq!(
            got.msg,
            TestMsg::Fds {
                count: 2,
                note: format!("n{i}")
            }
        );
        let mut fds = got.fds.into_iter();
        let r = File::from(fds.next().unwrap());
        let mut w = File::from(fds.next().unwrap());
        w.write_all(&i.to_le_bytes()).unwrap();
        drop(w);
        let mut buf = Vec::new();
        (&r).read_to_end(&mut buf).unwrap();
        assert_eq!(buf, i.to_le_bytes());
    }
    let tx = sender.await.unwrap();
    drop(tx);
    assert!(matches!(rx.recv().await, Err(ChannelError::PeerClosed)));
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_and_async_forms_convert_both_ways() {
    let (parent, worker) = Channel::<ParentToWorker, WorkerToParent>::pair().unwrap();
    // bootstrap in blocking mode
    parent
        .send(
            &ParentToWorker::Hello {
                version: PROTOCOL_VERSION,
            },
            &[],
        )
        .unwrap();
    let mut worker = worker;
    assert!(matches!(
        worker.recv().unwrap().msg,
        ParentToWorker::Hello { .. }
    ));
    // then async
    let worker = worker.into_async().unwrap();
    let mut parent = parent.into_async().unwrap();
    worker.send(&WorkerToParent::Ready, &[]).await.unwrap();
    assert_eq!(parent.recv().await.unwrap().msg, WorkerToParent::Ready);
    parent.send(&ParentToWorker::Shutdown, &[]).await.unwrap();
    // and back
    let mut worker = worker.into_blocking().unwrap();
    assert_eq!(worker.recv().unwrap().msg, ParentToWorker::Shutdown);
    drop(parent);
    assert!(matches!(worker.recv(), Err(ChannelError::PeerClosed)));
}

#[test]
fn into_async_outside_a_runtime_is_an_error() {
    let (a, _b) = Channel::<TestMsg, TestMsg>::pair().unwrap();
    assert!(matches!(a.into_async(), Err(ChannelError::NoRuntime)));
}

// ---------------------------------------------------------------- rejections

type WorkerEnd = Channel<WorkerToParent, ParentToWorker>;

fn worker_pair() -> (Channel<ParentToWorker, WorkerToParent>, WorkerEnd) {
    Channel::<ParentToWorker, WorkerToParent>::pair().unwrap()
}

#[test]
fn oversized_packet_is_truncated_error() {
    let (parent, mut worker) = worker_pair();
    raw_send(parent.as_fd(), &vec![0u8; MAX_MESSAGE_SIZE + 1], &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Truncated { len } if len == MAX_MESSAGE_SIZE + 1
    ));
}

#[test]
fn short_and_truncated_frames_are_rejected() {
    let (parent, mut worker) = worker_pair();
    raw_send(parent.as_fd(), &[0x42; 10], &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::ShortFrame { len: 10 }
    ));
    // header promises more body than the packet holds
    let mut f = frame_of(&ParentToWorker::SetVerb { level: 3 }, 0);
    f.pop();
    raw_send(parent.as_fd(), &f, &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::BodyLengthMismatch { .. }
    ));
}

#[test]
fn oversize_body_length_in_header_is_rejected() {
    let (parent, mut worker) = worker_pair();
    let mut f = Header::new(0x0103, 0, 0).encode();
    f[8..12].copy_from_slice(&(MAX_MESSAGE_SIZE as u32).to_le_bytes());
    raw_send(parent.as_fd(), &f, &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Oversize { .. }
    ));
}

#[test]
fn bad_magic_version_and_reserved_bits_are_rejected() {
    let (parent, mut worker) = worker_pair();
    let good = frame_of(&ParentToWorker::Shutdown, 0);
    let mut f = good.clone();
    f[..4].copy_from_slice(b"OVPN");
    raw_send(parent.as_fd(), &f, &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::BadMagic { found } if &found == b"OVPN"
    ));
    let mut f = good.clone();
    f[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    raw_send(parent.as_fd(), &f, &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::UnsupportedVersion { .. }
    ));
    let mut f = good.clone();
    f[14] = 0x80;
    raw_send(parent.as_fd(), &f, &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::ReservedBits { .. }
    ));
    // the channel is still usable after rejected packets
    raw_send(parent.as_fd(), &good, &[]);
    assert_eq!(worker.recv().unwrap().msg, ParentToWorker::Shutdown);
}

#[test]
fn trailing_bytes_and_malformed_bodies_are_rejected() {
    let (parent, mut worker) = worker_pair();
    let msg = ParentToWorker::SetVerb { level: 3 };
    let mut body = codec::encode(&msg).unwrap();
    body.push(0);
    raw_send(parent.as_fd(), &frame(msg.kind(), 0, &body), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Body { .. }
    ));
    // unknown enum variant
    raw_send(parent.as_fd(), &frame(0x0103, 0, &99u32.to_le_bytes()), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Body { .. }
    ));
    // a string that is not UTF-8 inside an Init
    let mut bogus = codec::encode(&ParentToWorker::CrlUpdate { pem: vec![] }).unwrap();
    bogus[..4].copy_from_slice(&1u32.to_le_bytes()); // Init tag, followed by garbage
    raw_send(parent.as_fd(), &frame(0x0102, 0, &bogus), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Body { .. }
    ));
    // a length prefix far larger than the packet
    let mut huge = 4u32.to_le_bytes().to_vec(); // CrlUpdate
    huge.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    raw_send(parent.as_fd(), &frame(0x0105, 0, &huge), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Body { .. }
    ));
    // empty body
    raw_send(parent.as_fd(), &frame(0x0103, 0, &[]), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Body { .. }
    ));
}

#[test]
fn kind_mismatch_is_rejected() {
    let (parent, mut worker) = worker_pair();
    let body = codec::encode(&ParentToWorker::SetVerb { level: 3 }).unwrap();
    raw_send(parent.as_fd(), &frame(0x0103, 0, &body), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::KindMismatch {
            header: 0x0103,
            body: 0x0104,
            ..
        }
    ));
    // a log record delivered on a control channel
    let rec = LogRecord::new(LogOrigin::Worker, 0, 1, Severity::Info, "x");
    raw_send(parent.as_fd(), &frame_of(&rec, 0), &[]);
    assert!(worker.recv().is_err());
}

#[test]
fn fd_count_mismatches_are_rejected_and_fds_closed() {
    let (parent, mut worker) = worker_pair();
    let init = ParentToWorker::Init(Box::new(WorkerInit {
        config: worker_config(),
        fds: vec![FdRole::Tun, FdRole::UdpSocket],
    }));

    // header says 2 fds, only 1 arrives
    let (r, w) = pipes(1);
    raw_send(parent.as_fd(), &frame_of(&init, 2), &[w[0].as_raw_fd()]);
    drop(w);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::HeaderFdCount {
            header: 2,
            received: 1
        }
    ));
    assert_all_writers_closed(r);

    // header consistent with what arrived (1), but Init declares 2: fewer than declared
    let (r, w) = pipes(1);
    raw_send(parent.as_fd(), &frame_of(&init, 1), &[w[0].as_raw_fd()]);
    drop(w);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::DeclaredFdCount {
            declared: 2,
            received: 1,
            ..
        }
    ));
    assert_all_writers_closed(r);

    // more than declared: 3 fds for an Init that declares 2
    let (r, w) = pipes(3);
    let raw: Vec<RawFd> = w.iter().map(|f| f.as_raw_fd()).collect();
    raw_send(parent.as_fd(), &frame_of(&init, 3), &raw);
    drop(w);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::DeclaredFdCount {
            declared: 2,
            received: 3,
            ..
        }
    ));
    assert_all_writers_closed(r);

    // fds on a message that declares none
    let (r, w) = pipes(1);
    raw_send(
        parent.as_fd(),
        &frame_of(&ParentToWorker::Shutdown, 1),
        &[w[0].as_raw_fd()],
    );
    drop(w);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::DeclaredFdCount {
            declared: 0,
            received: 1,
            ..
        }
    ));
    assert_all_writers_closed(r);

    // more fds than any message may carry
    let (r, w) = pipes(MAX_FDS_PER_MESSAGE + 4);
    let raw: Vec<RawFd> = w.iter().map(|f| f.as_raw_fd()).collect();
    raw_send(
        parent.as_fd(),
        &frame_of(&ParentToWorker::Shutdown, raw.len() as u16),
        &raw,
    );
    drop(w);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::TooManyFds { .. }
    ));
    assert_all_writers_closed(r);

    // the sender refuses to send the wrong number
    let (_r, w) = pipes(1);
    assert!(matches!(
        parent.send(&init, &borrow(&w)),
        Err(ChannelError::OutgoingFdCount {
            declared: 2,
            given: 1,
            ..
        })
    ));
    assert!(matches!(
        parent.send(&ParentToWorker::Shutdown, &borrow(&w)),
        Err(ChannelError::OutgoingFdCount { .. })
    ));
}

/// Every write end of each pipe must be closed (the receiver closed what it got): reading gives
/// EOF at once instead of blocking.
fn assert_all_writers_closed(readers: Vec<OwnedFd>) {
    for r in readers {
        nix::fcntl::fcntl(
            &r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&r, &mut buf),
            Ok(0),
            "a received fd was not closed"
        );
    }
}

#[test]
fn failed_validation_is_rejected_on_both_sides() {
    let (parent, mut worker) = worker_pair();
    let bad = ParentToWorker::SetVerb { level: 12 };
    assert!(matches!(
        parent.send(&bad, &[]),
        Err(ChannelError::InvalidOutgoing { .. })
    ));
    raw_send(parent.as_fd(), &frame_of(&bad, 0), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Invalid {
            source: ValidationError::VerbOutOfRange { value: 12 },
            ..
        }
    ));
    let bad = ParentToWorker::Hello { version: 77 };
    raw_send(parent.as_fd(), &frame_of(&bad, 0), &[]);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Invalid {
            source: ValidationError::VersionMismatch { found: 77, .. },
            ..
        }
    ));
    let mut init = WorkerInit {
        config: worker_config(),
        fds: vec![FdRole::Tun, FdRole::UdpSocket],
    };
    init.config.uid = 0;
    let (_r, w) = pipes(2);
    let raw: Vec<RawFd> = w.iter().map(|f| f.as_raw_fd()).collect();
    raw_send(
        parent.as_fd(),
        &frame_of(&ParentToWorker::Init(Box::new(init)), 2),
        &raw,
    );
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::Invalid {
            source: ValidationError::PrivilegedId { .. },
            ..
        }
    ));
    // log record with a forged line
    let (child_log, mut parent_log) = Channel::<LogRecord, NoMessage>::pair().unwrap();
    let mut rec = LogRecord::new(LogOrigin::Worker, 0, 1, Severity::Info, "x");
    rec.message = "ok\n>STATE:forged".into();
    raw_send(child_log.as_fd(), &frame_of(&rec, 0), &[]);
    assert!(matches!(
        protocol_error(parent_log.recv()),
        ProtocolError::Invalid { .. }
    ));
}

#[test]
fn nothing_is_accepted_in_a_no_message_direction() {
    let (child_log, mut parent_log) = Channel::<LogRecord, NoMessage>::pair().unwrap();
    let mut child_log = child_log;
    // the parent end cannot send (NoMessage has no values); anything raw fails to decode
    raw_send(parent_log.as_fd(), &frame(0x0301, 0, &[0, 0, 0, 0]), &[]);
    assert!(matches!(
        protocol_error(child_log.recv()),
        ProtocolError::Body { .. }
    ));
    drop(child_log);
    assert!(matches!(parent_log.recv(), Err(ChannelError::PeerClosed)));
}

#[test]
fn closed_peer_is_a_clean_error() {
    let (parent, mut worker) = worker_pair();
    parent.send(&ParentToWorker::Shutdown, &[]).unwrap();
    drop(parent);
    // queued messages are still delivered, then end of file
    assert_eq!(worker.recv().unwrap().msg, ParentToWorker::Shutdown);
    assert!(matches!(worker.recv(), Err(ChannelError::PeerClosed)));
    assert!(matches!(worker.recv(), Err(ChannelError::PeerClosed)));
    assert!(matches!(
        worker.send(&WorkerToParent::Ready, &[]),
        Err(ChannelError::PeerClosed)
    ));
}

#[test]
fn receive_timeout() {
    let (_parent, mut worker) = worker_pair();
    worker
        .set_recv_timeout(Some(Duration::from_millis(30)))
        .unwrap();
    let start = std::time::Instant::now();
    assert!(matches!(worker.recv(), Err(ChannelError::TimedOut)));
    assert!(start.elapsed() >= Duration::from_millis(25));
    worker.set_recv_timeout(None).unwrap();
}

#[test]
fn inherited_fd_must_be_a_seqpacket_socket() {
    use nix::fcntl::{fcntl, FcntlArg};
    let (a, _b) = worker_pair();
    // duplicate onto a high number nobody else uses, as a stand-in for "inherited at fd N"
    let n = fcntl(a.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(810)).unwrap();
    let ch = Channel::<TestMsg, TestMsg>::from_inherited_fd(n).unwrap();
    assert!(matches!(
        Channel::<TestMsg, TestMsg>::from_inherited_fd(n),
        Err(ChannelError::Inherited(_))
    ));
    drop(ch);
    let (r, _w) = nix::unistd::pipe().unwrap();
    let n = fcntl(r.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(830)).unwrap();
    assert!(matches!(
        Channel::<TestMsg, TestMsg>::from_inherited_fd(n),
        Err(ChannelError::NotAChannel { .. })
    ));
    let (s, _t) = UnixStream::pair().unwrap();
    assert!(matches!(
        Channel::<TestMsg, TestMsg>::from_owned_fd(s.into()),
        Err(ChannelError::NotAChannel { .. })
    ));
    assert!(matches!(
        Channel::<TestMsg, TestMsg>::from_inherited_fd(2),
        Err(ChannelError::Inherited(_))
    ));
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary bytes after a valid header never panic the receiver and never yield a
        /// message that fails validation.
        #[test]
        fn arbitrary_bodies_never_panic(kind in 0x0100u16..0x0108, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (parent, mut worker) = worker_pair();
            raw_send(parent.as_fd(), &frame(kind, 0, &body), &[]);
            match worker.recv() {
                Ok(r) => prop_assert!(r.msg.validate().is_ok()),
                Err(ChannelError::Protocol(_)) => {}
                Err(e) => prop_assert!(false, "unexpected error {e:?}"),
            }
        }

        /// Arbitrary whole packets never panic the receiver.
        #[test]
        fn arbitrary_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 1..200)) {
            let (parent, mut worker) = worker_pair();
            raw_send(parent.as_fd(), &packet, &[]);
            prop_assert!(matches!(worker.recv(), Err(ChannelError::Protocol(_)) | Ok(_)));
        }
    }
}

#[test]
fn debug_output_is_short() {
    let (a, _b) = Channel::<ParentToWorker, WorkerToParent>::pair().unwrap();
    let mut a = a;
    let _ = a.set_recv_timeout(Some(Duration::from_millis(1)));
    let _ = a.recv(); // allocates the receive buffer
    let s = format!("{a:?}");
    assert!(s.len() < 300, "{s}");
    assert!(s.contains("ParentToWorker"));
}

#[test]
fn foreign_and_truncated_control_data_are_rejected() {
    use nix::sys::socket::{setsockopt, sockopt::PassCred};
    let (parent, mut worker) = worker_pair();
    // SO_PASSCRED makes the kernel attach SCM_CREDENTIALS to every packet: not ours to accept
    setsockopt(&worker.as_fd(), PassCred, &true).unwrap();
    parent.send(&ParentToWorker::Shutdown, &[]).unwrap();
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::ForeignControlMessage {
            level: libc::SOL_SOCKET,
            cmsg_type: libc::SCM_CREDENTIALS
        }
    ));
    // credentials plus the largest SCM_RIGHTS the kernel allows (253 fds) do not fit in the
    // control buffer: MSG_CTRUNC, and the fds that did arrive are closed again
    let (r, w) = nix::unistd::pipe().unwrap();
    let raw = vec![w.as_raw_fd(); 253];
    raw_send(
        parent.as_fd(),
        &frame_of(&ParentToWorker::Shutdown, 0),
        &raw,
    );
    drop(w);
    assert!(matches!(
        protocol_error(worker.recv()),
        ProtocolError::ControlTruncated
    ));
    assert_all_writers_closed(vec![r]);
}

#[test]
fn coalesce_usecs_above_the_maximum_is_invalid() {
    let mut ec = bulwark_ipc::msg::engine::EngineConfig::minimal_for_tests();
    ec.coalesce_usecs = bulwark_ipc::msg::engine::MAX_COALESCE_USECS;
    ec.validate().unwrap();
    ec.coalesce_usecs += 1;
    assert!(ec.validate().is_err());
}
