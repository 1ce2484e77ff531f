//! udpio: quinn-udp against Bulwark's hand-written `worker/src/batch.rs`, measured on loopback.
//!
//! Two tests per datagram size, each run with a fresh pair of sockets on 127.0.0.1 (a sender thread and
//! a receiver thread of this process; nothing leaves loopback):
//!
//! - `send`: the sender is the variant under test — batch.rs `SendBatch` (one `sendmmsg` per batch, the
//!   batch coalesced into `UDP_SEGMENT` messages) or quinn-udp `UdpSocketState::try_send` with
//!   `Transmit { segment_size: Some(size), .. }` (one `sendmsg` per transmit of up to
//!   `min(max_gso_segments, 65487 / size)` segments). The receiver is batch.rs `RecvBatch` for both.
//!   Measured: CPU time of the sending thread (`CLOCK_THREAD_CPUTIME_ID`) and send calls, per datagram.
//! - `recv`: the receiver is the variant under test, `UDP_GRO` on — batch.rs `RecvBatch` (`recvmmsg` +
//!   `Datagram::segments`) or quinn-udp `UdpSocketState::recv` (`recvmmsg` + `RecvMeta::stride`). The
//!   sender is batch.rs `SendBatch` for both. Measured: CPU time of the receiving thread and receive
//!   calls, per datagram delivered, and datagrams lost.
//!
//! The sender sends `--count` datagrams in batches of up to 64 (the worker's `BATCH`), paced to
//! `--rate` datagrams/s and never more than `--window` datagrams ahead of the receiver (so a busy
//! receiver does not simply lose them; what is lost anyway is reported), bounded by `--secs`. Variants
//! alternate A B A B for `--reps` repetitions. Same `SO_SNDBUF`/`SO_RCVBUF` and batch sizes for both; no
//! allocation per datagram or per batch in either harness (buffers are made before the timed loop).
//!
//! Note on loopback: a send runs the receiving socket's kernel enqueue in the sender's context
//! (softirq on the same CPU), so the sender's CPU includes that part of the receive path — the same
//! for both variants.
#![deny(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_worker::batch::{self, RecvBatch, SendBatch, GRO_STRIDE, GSO_MAX_BYTES};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::time::{clock_gettime, ClockId};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

/// Datagrams handed to the sender per batch (the worker's flush size).
const SEND_BATCH: usize = batch::BATCH;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Batch,
    Quinn,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Batch => "batch.rs",
            Variant::Quinn => "quinn-udp",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Test {
    Send,
    Recv,
}

impl Test {
    fn name(self) -> &'static str {
        match self {
            Test::Send => "send",
            Test::Recv => "recv",
        }
    }
}

#[derive(Clone, Debug)]
struct Cfg {
    sizes: Vec<usize>,
    peers: Vec<usize>,
    count: u64,
    reps: usize,
    rate: u64,
    window: u64,
    secs: f64,
    bufsize: usize,
    recv_batch: usize,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            sizes: vec![1400, 100],
            peers: vec![1, 8],
            count: 200_000,
            reps: 5,
            rate: 100_000,
            window: 2048,
            secs: 3.0,
            bufsize: 4 << 20,
            recv_batch: quinn_udp::BATCH_SIZE,
        }
    }
}

const USAGE: &str =
    "usage: udpio [--sizes 1400,100] [--peers 1,8] [--count N] [--reps N] [--rate DGRAMS_PER_S] \
[--window DGRAMS] [--secs S] [--bufsize BYTES] [--recv-batch N]";

fn parse_args() -> Result<Cfg, String> {
    let mut cfg = Cfg::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            return Err(USAGE.to_string());
        }
        let v = args
            .next()
            .ok_or_else(|| format!("{a}: value missing\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{a}: bad value {v:?}: {e}");
        match a.as_str() {
            "--sizes" => {
                cfg.sizes = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
                if cfg.sizes.iter().any(|&s| s == 0 || s > 1472) {
                    return Err("--sizes: 1..=1472".into());
                }
            }
            "--peers" => {
                cfg.peers = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
                if cfg.peers.iter().any(|&p| p == 0 || p > SEND_BATCH) {
                    return Err(format!("--peers: 1..={SEND_BATCH}"));
                }
            }
            "--count" => cfg.count = v.parse().map_err(|e| bad(&e))?,
            "--reps" => cfg.reps = v.parse().map_err(|e| bad(&e))?,
            "--rate" => cfg.rate = v.parse().map_err(|e| bad(&e))?,
            "--window" => cfg.window = v.parse().map_err(|e| bad(&e))?,
            "--secs" => cfg.secs = v.parse().map_err(|e| bad(&e))?,
            "--bufsize" => cfg.bufsize = v.parse().map_err(|e| bad(&e))?,
            "--recv-batch" => cfg.recv_batch = v.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    if cfg.count == 0 || cfg.reps == 0 || cfg.rate == 0 || cfg.window == 0 || cfg.recv_batch == 0 {
        return Err("--count, --reps, --rate, --window, --recv-batch must be > 0".into());
    }
    Ok(cfg)
}

fn thread_cpu_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Waits (≤ 10 ms) until one of `fds` is ready (the caller builds the array once).
fn wait(fds: &mut [PollFd<'_>]) -> io::Result<()> {
    poll(fds, PollTimeout::from(10u16))
        .map(|_| ())
        .map_err(io::Error::from)
}

/// One side's figures for one run.
#[derive(Clone, Copy, Default, Debug)]
struct Side {
    /// CPU of the whole thread over the run (includes pacing sleeps and poll waits)
    cpu_ns: u64,
    /// CPU inside the send (or receive + split) calls only
    call_cpu_ns: u64,
    /// datagrams sent (sender) or delivered (receiver)
    datagrams: u64,
    /// send or receive system calls (including those that returned EAGAIN)
    io_calls: u64,
    /// poll(2) waits for readiness
    polls: u64,
    /// sleeps (sender: pacing and window)
    sleeps: u64,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    send: Side,
    recv: Side,
    wall: Duration,
}

fn socket(bufsize: usize) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    // as root the *Force variants pass net.core.{r,w}mem_max; otherwise the capped value is used
    let size = bufsize;
    if setsockopt(&s, sockopt::RcvBufForce, &size).is_err() {
        setsockopt(&s, sockopt::RcvBuf, &size).map_err(io::Error::from)?;
    }
    if setsockopt(&s, sockopt::SndBufForce, &size).is_err() {
        setsockopt(&s, sockopt::SndBuf, &size).map_err(io::Error::from)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

enum Sender {
    Batch(SendBatch),
    Quinn(UdpSocketState),
}

enum Receiver {
    Batch(RecvBatch),
    /// one state per receiver socket
    Quinn(Vec<UdpSocketState>),
}

/// Sends datagrams `0..n` of `payload` (each `size` bytes, back to back); datagram `i` goes to
/// `items[i].0` (runs of one destination, in order). Returns when all are taken by the kernel.
fn send_burst(
    sender: &mut Sender,
    sock: &UdpSocket,
    payload: &[u8],
    items: &[(SocketAddr, &[u8])],
    n: usize,
    size: usize,
    side: &mut Side,
) -> io::Result<()> {
    match sender {
        Sender::Batch(sb) => {
            let mut done = 0;
            while done < n {
                side.io_calls += 1;
                match sb.send(sock.as_fd(), &items[done..n], |t| t.0, |t| t.1) {
                    Ok(k) => done += k,
                    Err(e) if e.error.kind() == io::ErrorKind::WouldBlock => {
                        side.polls += 1;
                        wait(&mut [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)])?;
                    }
                    Err(e) => return Err(e.error),
                }
            }
        }
        Sender::Quinn(state) => {
            // one Transmit (one sendmsg) per destination run, split at the GSO limits
            let per = if state.max_gso_segments() > 1 {
                state.max_gso_segments().min(GSO_MAX_BYTES / size).max(1)
            } else {
                1
            };
            let mut done = 0;
            while done < n {
                let to = items[done].0;
                let mut k = 1;
                while k < per && done + k < n && items[done + k].0 == to {
                    k += 1;
                }
                let t = Transmit {
                    destination: to,
                    ecn: None,
                    contents: &payload[done * size..(done + k) * size],
                    segment_size: (k > 1).then_some(size),
                    src_ip: None,
                };
                side.io_calls += 1;
                match state.try_send(sock.into(), &t) {
                    Ok(()) => done += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        side.polls += 1;
                        wait(&mut [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)])?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    side.datagrams += n as u64;
    Ok(())
}

fn sender_thread(
    variant: Variant,
    sock: UdpSocket,
    dests: &[SocketAddr],
    size: usize,
    cfg: &Cfg,
    delivered: &AtomicU64,
    done: &AtomicBool,
) -> io::Result<Side> {
    let mut sender = match variant {
        Variant::Batch => Sender::Batch(SendBatch::new(
            SEND_BATCH,
            batch::gso_supported(sock.as_fd()),
        )),
        Variant::Quinn => Sender::Quinn(UdpSocketState::new((&sock).into())?),
    };
    let payload: Vec<u8> = (0..SEND_BATCH * size).map(|i| (i % 251) as u8).collect();
    // datagram i of every batch goes to peer i * peers / BATCH: equal runs, one per peer
    let items: Vec<(SocketAddr, &[u8])> = payload
        .chunks(size)
        .enumerate()
        .map(|(i, p)| (dests[i * dests.len() / SEND_BATCH], p))
        .collect();
    let mut side = Side::default();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(cfg.secs);
    let cpu0 = thread_cpu_ns();
    let mut sent = 0u64;
    let result = (|| {
        while sent < cfg.count && start.elapsed() < limit {
            // pacing: batch k leaves at k * BATCH / rate
            let due = Duration::from_secs_f64(sent as f64 / cfg.rate as f64);
            let now = start.elapsed();
            if due > now {
                side.sleeps += 1;
                std::thread::sleep(due - now);
            }
            // window: at most `window` datagrams ahead of the receiver (give up waiting after 50 ms:
            // what is not there by then is lost)
            let stall = Instant::now();
            while sent.saturating_sub(delivered.load(Ordering::Relaxed)) > cfg.window
                && stall.elapsed() < Duration::from_millis(50)
            {
                side.sleeps += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            let n = SEND_BATCH.min(usize::try_from(cfg.count - sent).unwrap_or(SEND_BATCH));
            let c0 = thread_cpu_ns();
            send_burst(&mut sender, &sock, &payload, &items, n, size, &mut side)?;
            side.call_cpu_ns += thread_cpu_ns().saturating_sub(c0);
            sent += n as u64;
        }
        Ok(())
    })();
    side.cpu_ns = thread_cpu_ns().saturating_sub(cpu0);
    done.store(true, Ordering::Release);
    result.map(|()| side)
}

fn receiver_thread(
    variant: Variant,
    socks: &[UdpSocket],
    states: Vec<UdpSocketState>,
    cfg: &Cfg,
    delivered: &AtomicU64,
    done: &AtomicBool,
) -> io::Result<Side> {
    let mut receiver = match variant {
        Variant::Quinn => Receiver::Quinn(states),
        Variant::Batch => Receiver::Batch(RecvBatch::new(cfg.recv_batch, GRO_STRIDE)),
    };
    // quinn-udp: caller-owned buffers, one 64 KiB buffer per message (GRO), made once
    let slots = cfg.recv_batch.min(quinn_udp::BATCH_SIZE);
    let mut qbuf = vec![0u8; slots * GRO_STRIDE];
    let mut qslices: Vec<IoSliceMut<'_>> =
        qbuf.chunks_mut(GRO_STRIDE).map(IoSliceMut::new).collect();
    let mut qmeta = vec![RecvMeta::default(); slots];
    let mut fds: Vec<PollFd<'_>> = socks
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    let mut side = Side::default();
    let mut check = 0u8;
    let mut idle_since: Option<Instant> = None;
    let cpu0 = thread_cpu_ns();
    let result = (|| {
        while side.datagrams < cfg.count {
            let mut any = false;
            for (k, sock) in socks.iter().enumerate() {
                side.io_calls += 1;
                let c0 = thread_cpu_ns();
                let got = match &mut receiver {
                    Receiver::Batch(rb) => rb.recv(sock.as_fd()).map(|n| {
                        let mut d = 0u64;
                        for i in 0..n {
                            if let Some(m) = rb.get(i) {
                                for seg in m.segments() {
                                    check ^= seg[0];
                                    d += 1;
                                }
                            }
                        }
                        d
                    }),
                    Receiver::Quinn(states) => states[k]
                        .recv(sock.into(), &mut qslices, &mut qmeta)
                        .map(|n| {
                            let mut d = 0u64;
                            for (m, buf) in qmeta[..n].iter().zip(qslices.iter()) {
                                let stride = if m.stride > 0 { m.stride } else { m.len.max(1) };
                                for seg in buf[..m.len].chunks(stride) {
                                    check ^= seg[0];
                                    d += 1;
                                }
                            }
                            d
                        }),
                };
                side.call_cpu_ns += thread_cpu_ns().saturating_sub(c0);
                match got {
                    Ok(d) => {
                        side.datagrams += d;
                        delivered.store(side.datagrams, Ordering::Relaxed);
                        any = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if any {
                idle_since = None;
                continue;
            }
            if done.load(Ordering::Acquire) {
                // sender finished: whatever has not arrived 200 ms later is lost
                let t = *idle_since.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_millis(200) {
                    break;
                }
            }
            side.polls += 1;
            wait(&mut fds)?;
        }
        Ok(())
    })();
    side.cpu_ns = thread_cpu_ns().saturating_sub(cpu0);
    std::hint::black_box(check);
    result.map(|()| side)
}

fn run_once(test: Test, variant: Variant, size: usize, peers: usize, cfg: &Cfg) -> io::Result<Run> {
    let tx = socket(cfg.bufsize)?;
    let rxs: Vec<UdpSocket> = (0..peers)
        .map(|_| socket(cfg.bufsize))
        .collect::<io::Result<_>>()?;
    let dests: Vec<SocketAddr> = rxs
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<io::Result<_>>()?;
    let (send_variant, recv_variant) = match test {
        Test::Send => (variant, Variant::Batch),
        Test::Recv => (Variant::Batch, variant),
    };
    // UDP_GRO on the receivers in every run (quinn-udp turns it on itself, with IP_PKTINFO,
    // IP_RECVTOS and SO_TIMESTAMPNS)
    let mut states = Vec::new();
    for rx in &rxs {
        match recv_variant {
            Variant::Quinn => states.push(UdpSocketState::new(rx.into())?),
            Variant::Batch => {
                setsockopt(rx, sockopt::UdpGroSegment, &true).map_err(io::Error::from)?
            }
        }
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (send, recv) = std::thread::scope(|s| {
        let r = s.spawn(|| receiver_thread(recv_variant, &rxs, states, cfg, &delivered, &done));
        let snd = s.spawn(|| sender_thread(send_variant, tx, &dests, size, cfg, &delivered, &done));
        let send = snd
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("sender panicked")));
        // a failed sender must not leave the receiver waiting
        done.store(true, Ordering::Release);
        let recv = r
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("receiver panicked")));
        (send, recv)
    });
    Ok(Run {
        send: send?,
        recv: recv?,
        wall: t0.elapsed(),
    })
}

fn per(v: u64, d: u64) -> f64 {
    if d == 0 {
        f64::NAN
    } else {
        v as f64 / d as f64
    }
}

/// The figures a test compares, of the side under test, per datagram: (CPU ns inside the I/O calls,
/// CPU ns of the whole thread, I/O calls).
fn figures(test: Test, r: &Run) -> (f64, f64, f64) {
    let s = match test {
        Test::Send => &r.send,
        Test::Recv => &r.recv,
    };
    (
        per(s.call_cpu_ns, s.datagrams),
        per(s.cpu_ns, s.datagrams),
        per(s.io_calls, s.datagrams),
    )
}

fn median_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    s.sort_by(f64::total_cmp);
    let m = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (m, s[0], s[s.len() - 1])
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = real_main(&cfg) {
        eprintln!("udpio: {e}");
        std::process::exit(1);
    }
}

fn real_main(cfg: &Cfg) -> io::Result<()> {
    let probe = socket(cfg.bufsize)?;
    let gso = batch::gso_supported(probe.as_fd());
    let qstate = UdpSocketState::new((&probe).into())?;
    let rcv = getsockopt(&probe, sockopt::RcvBuf).map_err(io::Error::from)?;
    let snd = getsockopt(&probe, sockopt::SndBuf).map_err(io::Error::from)?;
    println!("# udpio: quinn-udp vs batch.rs on 127.0.0.1");
    println!(
        "# quinn-udp {} (max_gso_segments {}, gro_segments {}, recvmmsg batch {} fixed); batch.rs: \
         GSO {}, send batch {}, recv batch {}",
        quinn_udp_version(),
        qstate.max_gso_segments(),
        qstate.gro_segments(),
        quinn_udp::BATCH_SIZE,
        if gso { "on" } else { "off (kernel)" },
        SEND_BATCH,
        cfg.recv_batch,
    );
    if cfg.recv_batch > quinn_udp::BATCH_SIZE {
        println!(
            "# note: quinn-udp receives at most {} messages per recvmmsg whatever the caller passes",
            quinn_udp::BATCH_SIZE
        );
    }
    println!(
        "# SO_RCVBUF {rcv} SO_SNDBUF {snd} (getsockopt, both sockets, both variants); count {} per run, \
         rate {}/s, window {}, bound {} s, reps {}",
        cfg.count, cfg.rate, cfg.window, cfg.secs, cfg.reps
    );
    println!(
        "# columns: cpu = CPU ns per datagram of the thread under test (send: sender, recv: receiver) \
         inside its send (recv + split) calls only, thread = the same for the whole thread (pacing \
         sleeps and poll waits included), calls = its send/recv syscalls per datagram (EAGAIN \
         included), polls = its poll waits, lost = sent - delivered; peers = destinations per batch \
         (equal runs, one receiver socket each)"
    );
    drop(probe);
    let variants = [Variant::Batch, Variant::Quinn];
    for &size in &cfg.sizes {
        for &peers in &cfg.peers {
            // results[test][variant] = runs
            let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); 2]; 2];
            for rep in 1..=cfg.reps {
                for (ti, test) in [Test::Send, Test::Recv].into_iter().enumerate() {
                    for (vi, &v) in variants.iter().enumerate() {
                        let r = run_once(test, v, size, peers, cfg)?;
                        let (cpu, thread, calls) = figures(test, &r);
                        let polls = match test {
                            Test::Send => r.send.polls,
                            Test::Recv => r.recv.polls,
                        };
                        println!(
                            "size {size:4} peers {peers:2} test {:4} rep {rep} {:9}  cpu {cpu:7.1} thread {thread:7.1} ns/dgram  \
                             calls {calls:.4}/dgram  polls {polls:6}  sent {:7} delivered {:7} lost {:5}  wall {:.2} s",
                            test.name(),
                            v.name(),
                            r.send.datagrams,
                            r.recv.datagrams,
                            r.send.datagrams.saturating_sub(r.recv.datagrams),
                            r.wall.as_secs_f64(),
                        );
                        results[ti][vi].push(r);
                    }
                }
            }
            println!(
                "# size {size} peers {peers}: median (min-max) over {} reps",
                cfg.reps
            );
            for (ti, test) in [Test::Send, Test::Recv].into_iter().enumerate() {
                let mut med = [[f64::NAN; 2]; 2];
                for (vi, &v) in variants.iter().enumerate() {
                    let runs = &results[ti][vi];
                    let col = |f: fn(&(f64, f64, f64)) -> f64| -> (f64, f64, f64) {
                        let v: Vec<f64> = runs.iter().map(|r| f(&figures(test, r))).collect();
                        median_min_max(&v)
                    };
                    let (c, c0, c1) = col(|f| f.0);
                    let (t, t0, t1) = col(|f| f.1);
                    let (k, k0, k1) = col(|f| f.2);
                    let lost: Vec<f64> = runs
                        .iter()
                        .map(|r| r.send.datagrams.saturating_sub(r.recv.datagrams) as f64)
                        .collect();
                    let (l, l0, l1) = median_min_max(&lost);
                    med[vi] = [c, t];
                    println!(
                        "size {size:4} peers {peers:2} {:4} {:9}  cpu {c:7.1} ({c0:.1}-{c1:.1})  thread {t:7.1} ({t0:.1}-{t1:.1}) ns/dgram  \
                         calls {k:.4} ({k0:.4}-{k1:.4})/dgram  lost {l:.0} ({l0:.0}-{l1:.0})",
                        test.name(),
                        v.name(),
                    );
                }
                println!(
                    "size {size:4} peers {peers:2} {:4} quinn-udp/batch.rs per datagram (medians): cpu {:.2}, thread {:.2}",
                    test.name(),
                    med[1][0] / med[0][0],
                    med[1][1] / med[0][1]
                );
            }
        }
    }
    Ok(())
}

/// The quinn-udp version this binary was built against (from Cargo.lock, passed by build.rs).
fn quinn_udp_version() -> &'static str {
    option_env!("UDPIO_QUINN_UDP_VERSION").unwrap_or("(unknown)")
}
