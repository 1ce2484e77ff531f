//! tunio: tun-rs' TUN offload against Bulwark's hand-written `worker/src/offload.rs`, and a plain TUN
//! as the baseline, measured as an IP forwarder between two TUN devices in two network namespaces.
//!
//! `tunio run --mode M --ns-a A --ns-b B` creates `tunA` inside namespace A and `tunB` inside namespace
//! B (`setns(CLONE_NEWNET)` on `/var/run/netns/NAME` around the device creation, then back: the process
//! itself stays in its own namespace, the descriptors stay attached to their devices) and forwards every
//! packet read from one device to the other. The script (`bench/tunio.sh`) gives the devices their
//! addresses and runs iperf3 through them. Modes:
//!
//! - `ours`: both devices `IFF_TUN | IFF_NO_PI | IFF_VNET_HDR` with `TUNSETOFFLOAD` (checksum, TSO4/6 +
//!   ECN, USO4/6, falling back as `daemon/src/tun.rs` does); each read (64 KiB + header buffer) parsed
//!   with `offload::VnetHdr::parse` and split with `offload::segment`, every segment copied into a
//!   pooled batch buffer (where the worker's engine encrypts it into an outbox buffer); the batch is
//!   then written to the other device as the worker's `write_tun_vnet` does: `offload::coalesce` and one
//!   `writev` per group (header, first packet, the others' payloads), everything else alone behind a
//!   plain header.
//! - `tunrs`: both devices from tun-rs' `DeviceBuilder` with `offload(true)` (it sets `IFF_VNET_HDR`
//!   and `TUNSETOFFLOAD` CSUM|TSO4|TSO6 [+ USO4|USO6]); each read is `SyncDevice::recv_multiple` (one
//!   `read` + tun-rs' `gso_split` into its output buffers), every segment copied into a pooled batch
//!   buffer behind a 10-byte headroom (the same copy as in `ours`); the batch is written with
//!   `SyncDevice::send_multiple` and a reused `GROTable` (tun-rs' userspace GRO, one `write` per
//!   resulting packet).
//! - `plain`: `IFF_TUN | IFF_NO_PI`, no virtio-net header, no offload: one packet per `read`, copied
//!   into the batch, one `write` per packet (what OpenVPN does).
//!
//! Loop (the same for all modes, mirroring one data-plane thread of `worker/src/driver.rs`): one
//! thread, one epoll instance with both TUN descriptors non-blocking and edge-triggered (as tokio
//! registers them). A device with readiness is read up to `TUN_BATCH` (64) times or until `TUN_FLUSH_AT`
//! (256) segments are queued (`on_tun`), then the batch is flushed to the other device in chunks of
//! `BATCH` (64) packets — the worker writes the decrypted packets of one `recvmmsg` batch (≤ 64) per
//! flush. A device that was not drained (a batch limit ended its turn) is served again without sleeping
//! (epoll polled with a zero timeout), as tokio keeps a readiness that `try_io` did not clear. The
//! worker's interrupt-moderation hold (`coalesce-usecs`) is not reproduced.
//!
//! Measurement: the script writes `mark LABEL` lines to stdin; each answers one line with the figures
//! since the previous mark: IP bytes and segments forwarded (segments as the read side produced them:
//! after splitting for `ours` and `tunrs`, one per read for `plain`), TUN reads and writes as counted
//! by this loop (`tunrs`' writes are inside `send_multiple` and not counted here), epoll waits, read and
//! write system calls of the whole process from `/proc/self/io` (`syscr`, `syscw`: all modes, tun-rs'
//! writes included), and the process's CPU (`getrusage(RUSAGE_SELF)`, user and system; the process
//! has this one thread).
#![deny(unsafe_code)]

mod sys;

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use bulwark_worker::offload::{self, VnetHdr, VNET_HDR_LEN};
use nix::sched::{setns, CloneFlags};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{getrusage, UsageWho};

/// Packets per flush (the worker's `BATCH`: one `recvmmsg`/`sendmmsg` batch).
const BATCH: usize = bulwark_worker::batch::BATCH;
/// Most TUN reads per turn (`driver::TUN_BATCH`, = `BATCH`).
const TUN_BATCH: usize = bulwark_worker::driver::TUN_BATCH;
/// Segments queued by a turn's reads before it ends (`driver.rs`'s private `TUN_FLUSH_AT`).
const TUN_FLUSH_AT: usize = 256;
/// The read buffer: a 64 KiB super-packet behind its virtio-net header (`driver.rs`'s `TUN_BUF`).
const TUN_BUF: usize = 65536 + VNET_HDR_LEN;
/// Room for the segments of one more read when a turn ends (64 KiB / a 536-byte MSS < 128).
const SEG_ROOM: usize = tun_rs::IDEAL_BATCH_SIZE;
/// Size of one split buffer for tun-rs (the devices keep the default MTU of 1500).
const SPLIT_BUF: usize = 2048;
/// Capacity of a tun-rs batch buffer: tun-rs only coalesces into a buffer with room for
/// `2 * headroom + the merged packet`.
const GRO_CAP: usize = 2 * VNET_HDR_LEN + 65535;

// tun-rs writes its own virtio-net header: the two must agree on the size.
const _: () = assert!(tun_rs::VIRTIO_NET_HDR_LEN == VNET_HDR_LEN);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ours,
    TunRs,
    Plain,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "ours" => Some(Mode::Ours),
            "tunrs" => Some(Mode::TunRs),
            "plain" => Some(Mode::Plain),
            _ => None,
        }
    }
}

const USAGE: &str = "usage:
  tunio run --mode ours|tunrs|plain --ns-a NS --ns-b NS [--dev-a tunA] [--dev-b tunB] [--max-secs 900]
      creates the devices, prints `ready`, then answers `mark LABEL` lines on stdin; exits on EOF,
      `quit` or after --max-secs
  tunio probe --ns NS
      prints what each mode's device set-up got from the kernel and whether tun-rs adopts an
      IFF_VNET_HDR descriptor (SyncDevice::from_fd)
  tunio summary FILE
      per-run figures and medians of the records bench/tunio.sh wrote to FILE
  tunio csum [--size 1400] [--reps 5] [--iters 2000000]
      CPU time per call of offload::csum_add against its previous version (one 8-byte word per
      step, big-endian loads), interleaved reps, medians (no root, no devices)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("run") => parse_run(&args[1..]).and_then(|c| run(&c)),
        Some("probe") => match args.get(1..) {
            Some([flag, ns]) if flag == "--ns" => probe(ns),
            _ => Err(USAGE.to_string()),
        },
        Some("csum") => csum_bench(&args[1..]),
        Some("summary") => match args.get(1) {
            Some(path) if args.len() == 2 => summary(path),
            _ => Err(USAGE.to_string()),
        },
        _ => Err(USAGE.to_string()),
    };
    if let Err(e) = res {
        eprintln!("tunio: {e}");
        std::process::exit(1);
    }
}

struct RunCfg {
    mode: Mode,
    ns: [String; 2],
    dev: [String; 2],
    max_secs: u64,
}

fn parse_run(args: &[String]) -> Result<RunCfg, String> {
    let mut mode = None;
    let mut ns = [None, None];
    let mut dev = [String::from("tunA"), String::from("tunB")];
    let mut max_secs = 900;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{a}: value missing\n{USAGE}"))?
            .clone();
        match a.as_str() {
            "--mode" => mode = Some(Mode::parse(&v).ok_or_else(|| format!("bad --mode {v:?}"))?),
            "--ns-a" => ns[0] = Some(v),
            "--ns-b" => ns[1] = Some(v),
            "--dev-a" => dev[0] = v,
            "--dev-b" => dev[1] = v,
            "--max-secs" => {
                max_secs = v
                    .parse()
                    .map_err(|e| format!("--max-secs: bad value {v:?}: {e}"))?
            }
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    let [Some(a), Some(b)] = ns else {
        return Err(format!("--ns-a and --ns-b are required\n{USAGE}"));
    };
    Ok(RunCfg {
        mode: mode.ok_or_else(|| format!("--mode is required\n{USAGE}"))?,
        ns: [a, b],
        dev,
        max_secs,
    })
}

/// Runs `f` inside network namespace `ns` (this thread only), then returns to the original one. A
/// failure to return ends the process: nothing may go on in the wrong namespace.
fn in_netns<T>(ns: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    if ns.is_empty() || ns.contains('/') {
        return Err(format!("bad namespace name {ns:?}"));
    }
    let orig = File::open("/proc/thread-self/ns/net")
        .map_err(|e| format!("open /proc/thread-self/ns/net: {e}"))?;
    let path = format!("/var/run/netns/{ns}");
    let target = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns({path}): {e}"))?;
    let r = f();
    if let Err(e) = setns(orig.as_fd(), CloneFlags::CLONE_NEWNET) {
        eprintln!("tunio: cannot return to the original network namespace: {e}");
        std::process::exit(1);
    }
    r
}

fn open_clone_device() -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| format!("open /dev/net/tun: {e}"))
}

/// Opens a TUN device as Bulwark's parent does (`vnet`: `IFF_VNET_HDR` + `TUNSETOFFLOAD` with the same
/// fallbacks as `daemon/src/tun.rs`'s `enable_offload`), or plain. Returns the device and the offload
/// flags the kernel accepted (0: none).
fn open_raw(name: &str, vnet: bool) -> Result<(File, u32), String> {
    let f = open_clone_device()?;
    let mut flags = sys::IFF_TUN | sys::IFF_NO_PI;
    if vnet {
        flags |= sys::IFF_VNET_HDR;
    }
    sys::tun_set_iff(f.as_fd(), name, flags).map_err(|e| format!("TUNSETIFF {name}: {e}"))?;
    if !vnet {
        return Ok((f, 0));
    }
    let tso = sys::TUN_F_CSUM | sys::TUN_F_TSO4 | sys::TUN_F_TSO6 | sys::TUN_F_TSO_ECN;
    for off in [
        tso | sys::TUN_F_USO4 | sys::TUN_F_USO6,
        tso,
        sys::TUN_F_CSUM,
    ] {
        if sys::tun_set_offload(f.as_fd(), off).is_ok() {
            return Ok((f, off));
        }
    }
    Err(format!(
        "TUNSETOFFLOAD {name}: refused even TUN_F_CSUM (the vnet path would still need a header)"
    ))
}

fn open_tunrs(name: &str) -> Result<tun_rs::SyncDevice, String> {
    let d = tun_rs::DeviceBuilder::new()
        .name(name)
        .offload(true)
        .build_sync()
        .map_err(|e| format!("tun-rs DeviceBuilder {name} offload(true): {e}"))?;
    d.set_nonblocking(true)
        .map_err(|e| format!("tun-rs set_nonblocking {name}: {e}"))?;
    Ok(d)
}

enum Dev {
    Raw(File),
    TunRs(tun_rs::SyncDevice),
}

impl Dev {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Dev::Raw(f) => f.as_fd(),
            Dev::TunRs(d) => d.as_fd(),
        }
    }
}

fn open_dev(mode: Mode, ns: &str, name: &str) -> Result<(Dev, String), String> {
    in_netns(ns, || match mode {
        Mode::Ours => open_raw(name, true)
            .map(|(f, off)| (Dev::Raw(f), format!("IFF_VNET_HDR, TUNSETOFFLOAD {off:#x}"))),
        Mode::Plain => open_raw(name, false).map(|(f, _)| (Dev::Raw(f), "plain".to_string())),
        Mode::TunRs => open_tunrs(name).map(|d| {
            let note = format!(
                "tun-rs offload, tcp_gso {} udp_gso {}",
                d.tcp_gso(),
                d.udp_gso()
            );
            (Dev::TunRs(d), note)
        }),
    })
}

/// Figures counted by the loop (cumulative).
#[derive(Clone, Copy, Default, Debug)]
struct Counters {
    /// IP bytes forwarded (segments as split by the read side)
    bytes: u64,
    /// segments forwarded
    segs: u64,
    /// TUN reads that returned data (each a packet or super-packet)
    reads: u64,
    /// TUN reads that returned EAGAIN
    eagain: u64,
    /// reads that carried more than one segment
    super_reads: u64,
    /// TUN writes made by this loop (not counted in `tunrs`: inside `send_multiple`)
    writes: u64,
    /// writes of more than one segment (`ours`)
    coalesced_writes: u64,
    /// epoll waits
    polls: u64,
    /// segments lost to write errors
    drops: u64,
    /// reads the offload code refused (malformed)
    bad: u64,
}

/// State of one forwarding direction's buffers (one per mode instance; both directions share it:
/// a turn reads, then flushes, before the other device is served).
struct Bufs {
    /// the read buffer (`tunrs`: recv_multiple's `original_buffer`)
    read: Vec<u8>,
    /// `offload::segment`'s scratch
    scratch: Vec<u8>,
    /// tun-rs' split output and sizes
    split: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// the batch: one buffer per queued segment (`tunrs`: behind a VNET_HDR_LEN headroom)
    batch: Vec<Vec<u8>>,
    queued: usize,
    gro: tun_rs::GROTable,
}

impl Bufs {
    fn new(mode: Mode) -> Bufs {
        let slots = TUN_FLUSH_AT + SEG_ROOM;
        let cap = if mode == Mode::TunRs { GRO_CAP } else { 2048 };
        Bufs {
            read: vec![0u8; TUN_BUF],
            scratch: Vec::with_capacity(TUN_BUF),
            split: if mode == Mode::TunRs {
                vec![vec![0u8; SPLIT_BUF]; SEG_ROOM]
            } else {
                Vec::new()
            },
            sizes: vec![0; SEG_ROOM],
            batch: (0..slots).map(|_| Vec::with_capacity(cap)).collect(),
            queued: 0,
            gro: tun_rs::GROTable::new(),
        }
    }
}

/// Queues one segment: copied into the next batch buffer (the copy the worker's engine makes when it
/// encrypts into an outbox buffer), behind `headroom` zero bytes.
fn enqueue(batch: &mut [Vec<u8>], queued: &mut usize, c: &mut Counters, p: &[u8], headroom: usize) {
    // INVARIANT: the read loop stops at TUN_FLUSH_AT queued and one read yields < SEG_ROOM segments
    let Some(b) = batch.get_mut(*queued) else {
        c.drops += 1;
        return;
    };
    b.clear();
    b.resize(headroom, 0);
    b.extend_from_slice(p);
    *queued += 1;
    c.segs += 1;
    c.bytes += p.len() as u64;
}

/// One turn on device `from`: reads as `driver.rs`'s `on_tun` (≤ TUN_BATCH reads, until TUN_FLUSH_AT
/// segments are queued or EAGAIN), then flushes the batch to `to`. Returns whether `from` was drained.
fn turn(mode: Mode, from: &Dev, to: &Dev, st: &mut Bufs, c: &mut Counters) -> Result<bool, String> {
    let mut reads = 0;
    let mut drained = false;
    st.queued = 0;
    while reads < TUN_BATCH && st.queued < TUN_FLUSH_AT {
        let got = match (mode, from) {
            (Mode::TunRs, Dev::TunRs(d)) => {
                let room = &mut st.split[..];
                match d.recv_multiple(&mut st.read, room, &mut st.sizes, 0) {
                    Ok(k) => {
                        for i in 0..k {
                            let p = &st.split[i][..st.sizes[i]];
                            enqueue(&mut st.batch, &mut st.queued, c, p, VNET_HDR_LEN);
                        }
                        if k > 1 {
                            c.super_reads += 1;
                        }
                        Ok(true)
                    }
                    Err(e) => Err(e),
                }
            }
            (_, Dev::Raw(f)) => match (&*f).read(&mut st.read) {
                Ok(0) => Ok(false),
                Ok(n) if mode == Mode::Ours => {
                    let frame = &st.read[..n];
                    let (batch, queued) = (&mut st.batch, &mut st.queued);
                    let cc = &mut *c;
                    let res = VnetHdr::parse(frame).and_then(|h| {
                        offload::segment(&frame[VNET_HDR_LEN..], &h, &mut st.scratch, |p| {
                            enqueue(batch, queued, cc, p, 0)
                        })
                    });
                    match res {
                        Ok(1) => {}
                        Ok(_) => c.super_reads += 1,
                        Err(_) => c.bad += 1,
                    }
                    Ok(true)
                }
                Ok(n) => {
                    enqueue(&mut st.batch, &mut st.queued, c, &st.read[..n], 0);
                    Ok(true)
                }
                Err(e) => Err(e),
            },
            _ => return Err("device kind does not match the mode".into()),
        };
        match got {
            Ok(true) => {
                reads += 1;
                c.reads += 1;
            }
            Ok(false) => {
                drained = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.eagain += 1;
                drained = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // tun-rs reports a packet it cannot split as an error without an OS code: the read was
            // made, the packet is dropped (as the worker counts `tun_malformed`)
            Err(e) if e.raw_os_error().is_none() => {
                reads += 1;
                c.reads += 1;
                c.bad += 1;
            }
            Err(e) => return Err(format!("TUN read: {e}")),
        }
    }
    let mut start = 0;
    while start < st.queued {
        let end = (start + BATCH).min(st.queued);
        flush(mode, to, &mut st.batch[start..end], &mut st.gro, c)?;
        start = end;
    }
    Ok(drained)
}

/// Writes one flush of packets to `to`, as the worker's `flush` does for the mode.
fn flush(
    mode: Mode,
    to: &Dev,
    pkts: &mut [Vec<u8>],
    gro: &mut tun_rs::GROTable,
    c: &mut Counters,
) -> Result<(), String> {
    match (mode, to) {
        // driver.rs `write_tun_vnet`
        (Mode::Ours, Dev::Raw(f)) => {
            let mut i = 0;
            while i < pkts.len() {
                let co = offload::coalesce(&mut pkts[i..]);
                let count = co.count.max(1);
                let hdr = co.hdr.to_bytes();
                let mut iov = [IoSlice::new(&[]); offload::MAX_COALESCE + 1];
                iov[0] = IoSlice::new(&hdr);
                iov[1] = IoSlice::new(&pkts[i]);
                let mut total = hdr.len() + pkts[i].len();
                for k in 1..count {
                    let payload = pkts[i + k].get(co.payload_at..).unwrap_or(&[]);
                    iov[k + 1] = IoSlice::new(payload);
                    total += payload.len();
                }
                c.writes += 1;
                match (&*f).write_vectored(&iov[..count + 1]) {
                    Ok(n) if n == total => {
                        if count > 1 {
                            c.coalesced_writes += 1;
                        }
                    }
                    _ => c.drops += count as u64,
                }
                i += count;
            }
        }
        // driver.rs `flush`, non-vnet device: one write per packet
        (Mode::Plain, Dev::Raw(f)) => {
            for p in pkts.iter() {
                c.writes += 1;
                match (&*f).write(p) {
                    Ok(n) if n == p.len() => {}
                    _ => c.drops += 1,
                }
            }
        }
        (Mode::TunRs, Dev::TunRs(d)) => {
            if let Err(e) = d.send_multiple(gro, pkts, VNET_HDR_LEN) {
                if e.raw_os_error() == Some(libc::EBADFD) {
                    return Err(format!("tun-rs send_multiple: {e}"));
                }
                // tun-rs reports only the last failed write of the call
                c.drops += 1;
            }
        }
        _ => return Err("device kind does not match the mode".into()),
    }
    Ok(())
}

/// A point-in-time reading of everything a mark reports.
#[derive(Clone, Copy)]
struct Snap {
    c: Counters,
    user_us: u64,
    sys_us: u64,
    syscr: u64,
    syscw: u64,
    at: Instant,
}

fn tv_us(t: nix::sys::time::TimeVal) -> u64 {
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec()).unwrap_or(0)
}

fn proc_io() -> Result<(u64, u64), String> {
    let s =
        std::fs::read_to_string("/proc/self/io").map_err(|e| format!("read /proc/self/io: {e}"))?;
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/self/io: no {k}"))
    };
    Ok((field("syscr:")?, field("syscw:")?))
}

fn snap(c: &Counters) -> Result<Snap, String> {
    let u = getrusage(UsageWho::RUSAGE_SELF).map_err(|e| format!("getrusage: {e}"))?;
    let (syscr, syscw) = proc_io()?;
    Ok(Snap {
        c: *c,
        user_us: tv_us(u.user_time()),
        sys_us: tv_us(u.system_time()),
        syscr,
        syscw,
        at: Instant::now(),
    })
}

fn report(label: &str, a: &Snap, b: &Snap) -> String {
    let d = |x: u64, y: u64| y.saturating_sub(x);
    format!(
        "{label} bytes={} segs={} reads={} eagain={} super_reads={} writes={} coalesced_writes={} \
         polls={} drops={} bad={} syscr={} syscw={} user_us={} sys_us={} wall_us={}",
        d(a.c.bytes, b.c.bytes),
        d(a.c.segs, b.c.segs),
        d(a.c.reads, b.c.reads),
        d(a.c.eagain, b.c.eagain),
        d(a.c.super_reads, b.c.super_reads),
        d(a.c.writes, b.c.writes),
        d(a.c.coalesced_writes, b.c.coalesced_writes),
        d(a.c.polls, b.c.polls),
        d(a.c.drops, b.c.drops),
        d(a.c.bad, b.c.bad),
        d(a.syscr, b.syscr),
        d(a.syscw, b.syscw),
        d(a.user_us, b.user_us),
        d(a.sys_us, b.sys_us),
        b.at.duration_since(a.at).as_micros(),
    )
}

const TOKEN_STDIN: u64 = 2;

fn run(cfg: &RunCfg) -> Result<(), String> {
    let (a, note_a) = open_dev(cfg.mode, &cfg.ns[0], &cfg.dev[0])?;
    let (b, note_b) = open_dev(cfg.mode, &cfg.ns[1], &cfg.dev[1])?;
    let devs = [a, b];
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
    for (i, d) in devs.iter().enumerate() {
        epoll
            .add(
                d.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, i as u64),
            )
            .map_err(|e| format!("epoll add: {e}"))?;
    }
    let stdin = io::stdin();
    epoll
        .add(
            stdin.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_STDIN),
        )
        .map_err(|e| format!("epoll add stdin: {e}"))?;
    let mut out = io::stdout();
    let say = |out: &mut io::Stdout, line: &str| -> Result<(), String> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    };
    say(
        &mut out,
        &format!("ready mode={:?} a=[{note_a}] b=[{note_b}]", cfg.mode),
    )?;
    let mut st = Bufs::new(cfg.mode);
    let mut c = Counters::default();
    let mut last = snap(&c)?;
    let mut ready = [false; 2];
    let mut events = [EpollEvent::empty(); 8];
    let mut line = Vec::<u8>::new();
    let mut inbuf = [0u8; 512];
    let started = Instant::now();
    let limit = Duration::from_secs(cfg.max_secs);
    loop {
        let timeout = if ready.iter().any(|&r| r) {
            EpollTimeout::ZERO
        } else {
            EpollTimeout::from(200u16)
        };
        c.polls += 1;
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for ev in &events[..n] {
            match ev.data() {
                0 => ready[0] = true,
                1 => ready[1] = true,
                _ => {
                    let k = match nix::unistd::read(stdin.as_fd(), &mut inbuf) {
                        Ok(k) => k,
                        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                        Err(e) => return Err(format!("stdin: {e}")),
                    };
                    if k == 0 {
                        return Ok(());
                    }
                    line.extend_from_slice(&inbuf[..k]);
                    while let Some(pos) = line.iter().position(|&ch| ch == b'\n') {
                        let cmd: Vec<u8> = line.drain(..=pos).collect();
                        let cmd = String::from_utf8_lossy(&cmd);
                        let cmd = cmd.trim();
                        if cmd == "quit" {
                            return Ok(());
                        }
                        if let Some(label) = cmd.strip_prefix("mark ") {
                            let now = snap(&c)?;
                            say(&mut out, &report(label.trim(), &last, &now))?;
                            last = now;
                        } else if !cmd.is_empty() {
                            say(&mut out, &format!("error unknown command {cmd:?}"))?;
                        }
                    }
                }
            }
        }
        for i in 0..2 {
            if ready[i] {
                let drained = turn(cfg.mode, &devs[i], &devs[1 - i], &mut st, &mut c)?;
                ready[i] = !drained;
            }
        }
        if started.elapsed() > limit {
            return Err(format!("--max-secs {} reached", cfg.max_secs));
        }
    }
}

/// What each mode's set-up gets, and whether tun-rs adopts descriptors like the worker's.
fn probe(ns: &str) -> Result<(), String> {
    in_netns(ns, || {
        let (_f, off) = open_raw("tunprobe0", true)?;
        println!("ours: IFF_VNET_HDR, TUNSETOFFLOAD accepted {off:#x}");
        drop(_f);
        let d = open_tunrs("tunprobe1")?;
        println!(
            "tunrs: tun-rs {} DeviceBuilder::offload(true): tcp_gso {} udp_gso {} (sets TUN_F_CSUM|TSO4|TSO6 [|USO4|USO6], no TSO_ECN)",
            tunrs_version(),
            d.tcp_gso(),
            d.udp_gso()
        );
        drop(d);
        let (f, _) = open_raw("tunprobe2", true)?;
        let fd: OwnedFd = f.into();
        match sys::tunrs_adopt(fd) {
            Ok(d) => println!(
                "tunrs: SyncDevice::from_fd on an IFF_VNET_HDR descriptor: accepted, tcp_gso {} udp_gso {}",
                d.tcp_gso(),
                d.udp_gso()
            ),
            Err(e) => println!("tunrs: SyncDevice::from_fd on an IFF_VNET_HDR descriptor: refused ({e})"),
        }
        let (f, _) = open_raw("tunprobe3", false)?;
        let fd: OwnedFd = f.into();
        match sys::tunrs_adopt(fd) {
            Ok(d) => println!(
                "tunrs: SyncDevice::from_fd on a plain descriptor: accepted, offload (tcp_gso) {}",
                d.tcp_gso()
            ),
            Err(e) => println!("tunrs: SyncDevice::from_fd on a plain descriptor: refused ({e})"),
        }
        Ok(())
    })
}

/// The tun-rs version this binary was built against (from Cargo.lock, passed by build.rs).
fn tunrs_version() -> &'static str {
    option_env!("TUNIO_TUN_RS_VERSION").unwrap_or("(unknown)")
}

// ---- summary ----------------------------------------------------------------------------------

/// One record line of the script: `rep=R mode=M dir=D mbps=X` followed by a mark's figures.
struct Rec {
    rep: u32,
    mode: String,
    dir: String,
    mbps: f64,
    bytes: f64,
    segs: f64,
    syscalls: f64,
    cpu_us: f64,
    reads: f64,
    super_reads: f64,
    drops: f64,
}

impl Rec {
    fn cpu_s_per_gb(&self) -> f64 {
        per(self.cpu_us / 1e6, self.bytes / 1e9)
    }
    fn cpu_us_per_seg(&self) -> f64 {
        per(self.cpu_us, self.segs)
    }
    fn sys_per_seg(&self) -> f64 {
        per(self.syscalls, self.segs)
    }
}

fn per(v: f64, d: f64) -> f64 {
    if d == 0.0 {
        f64::NAN
    } else {
        v / d
    }
}

fn parse_rec(line: &str) -> Result<Rec, String> {
    let mut kv = std::collections::HashMap::new();
    for w in line.split_whitespace() {
        if let Some((k, v)) = w.split_once('=') {
            kv.insert(k, v);
        }
    }
    let s = |k: &str| {
        kv.get(k)
            .map(|v| v.to_string())
            .ok_or_else(|| format!("record without {k}: {line}"))
    };
    let f = |k: &str| -> Result<f64, String> {
        s(k)?
            .parse::<f64>()
            .map_err(|e| format!("record {k}: {e}: {line}"))
    };
    Ok(Rec {
        rep: s("rep")?
            .parse()
            .map_err(|e| format!("record rep: {e}: {line}"))?,
        mode: s("mode")?,
        dir: s("dir")?,
        mbps: f("mbps")?,
        bytes: f("bytes")?,
        segs: f("segs")?,
        syscalls: f("syscr")? + f("syscw")? + f("polls")?,
        cpu_us: f("user_us")? + f("sys_us")?,
        reads: f("reads")?,
        super_reads: f("super_reads")?,
        drops: f("drops")?,
    })
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

const MODES: [&str; 3] = ["ours", "tunrs", "plain"];
const DIRS: [&str; 2] = ["up", "down"];

type Metric = (&'static str, fn(&Rec) -> f64);

const METRICS: [Metric; 4] = [
    ("CPU s/GB", Rec::cpu_s_per_gb),
    ("CPU µs/segment", Rec::cpu_us_per_seg),
    ("syscalls/segment", Rec::sys_per_seg),
    ("throughput Mbit/s", |r| r.mbps),
];

fn summary(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    let recs: Vec<Rec> = text
        .lines()
        .filter(|l| l.starts_with("rep="))
        .map(parse_rec)
        .collect::<Result<_, _>>()?;
    if recs.is_empty() {
        return Err(format!("{path}: no records"));
    }
    println!(
        "# per run: CPU = the forwarder's user+sys CPU over the iperf3 run; bytes and segments = IP \
         bytes and packets forwarded (both TCP directions: data and ACKs); syscalls = read + write \
         (/proc/self/io syscr+syscw) + epoll_wait; seg/read = segments per TUN read"
    );
    for r in &recs {
        println!(
            "rep {} {:5} {:4}  {:7.0} Mbit/s  {:6.3} CPU s/GB  {:6.3} CPU µs/seg  {:.4} syscalls/seg  {:5.2} seg/read  super-reads {:5.1}%  drops {}",
            r.rep,
            r.mode,
            r.dir,
            r.mbps,
            r.cpu_s_per_gb(),
            r.cpu_us_per_seg(),
            r.sys_per_seg(),
            per(r.segs, r.reads),
            100.0 * per(r.super_reads, r.reads),
            r.drops
        );
    }
    let find = |mode: &str, dir: &str, rep: u32| {
        recs.iter()
            .find(|r| r.mode == mode && r.dir == dir && r.rep == rep)
    };
    let mut reps: Vec<u32> = recs.iter().map(|r| r.rep).collect();
    reps.sort_unstable();
    reps.dedup();
    println!("# medians (min-max) over {} reps", reps.len());
    for dir in DIRS {
        for (name, f) in METRICS {
            let mut line = format!("{dir:4} {name:18}");
            for mode in MODES {
                let v: Vec<f64> = reps
                    .iter()
                    .filter_map(|&rep| find(mode, dir, rep))
                    .map(f)
                    .collect();
                let (m, lo, hi) = median_min_max(&v);
                line.push_str(&format!("  {mode} {} ({}-{})", fmt(m), fmt(lo), fmt(hi)));
            }
            println!("{line}");
        }
    }
    println!("# ratios per rep (interleaved runs paired), median (min-max)");
    for dir in DIRS {
        for (name, f) in METRICS {
            let mut line = format!("{dir:4} {name:18}");
            for mode in ["tunrs", "plain"] {
                let v: Vec<f64> = reps
                    .iter()
                    .filter_map(|&rep| Some(f(find(mode, dir, rep)?) / f(find("ours", dir, rep)?)))
                    .collect();
                let (m, lo, hi) = median_min_max(&v);
                line.push_str(&format!("  {mode}/ours {m:.2} ({lo:.2}-{hi:.2})"));
            }
            println!("{line}");
        }
    }
    Ok(())
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// `offload::csum_add` before 2026-12-08 (one big-endian 8-byte word per step, one accumulator), kept
/// here as the yardstick for `tunio csum`.
fn csum_add_previous(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (x >> 32) + (x & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn thread_cpu_ns() -> Result<u128, String> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_err(|e| format!("clock_gettime: {e}"))?;
    Ok(u128::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u128::try_from(t.tv_nsec()).unwrap_or(0))
}

fn csum_bench(args: &[String]) -> Result<(), String> {
    use bulwark_worker::offload::{csum_add, csum_fold};
    let (mut size, mut reps, mut iters) = (1400usize, 5usize, 2_000_000usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        let n: usize = v.parse().map_err(|_| format!("{a}: not a number: {v}"))?;
        match a.as_str() {
            "--size" => size = n.clamp(1, 65536),
            "--reps" => reps = n.clamp(1, 50),
            "--iters" => iters = n.clamp(1, 100_000_000),
            _ => return Err(USAGE.to_string()),
        }
    }
    // deterministic, non-trivial bytes
    let data: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    if csum_fold(csum_add(0, &data)) != csum_fold(csum_add_previous(0, &data)) {
        return Err("the two versions disagree".into());
    }
    let time = |f: &dyn Fn(u64, &[u8]) -> u64| -> Result<f64, String> {
        let start = thread_cpu_ns()?;
        let mut acc = 0u64;
        for i in 0..iters {
            // the accumulator chains the calls so none can be skipped
            acc = f(acc & 0xffff, std::hint::black_box(&data[..])) + (i as u64 & 1);
        }
        std::hint::black_box(acc);
        Ok((thread_cpu_ns()? - start) as f64 / iters as f64)
    };
    let (mut now, mut prev) = (Vec::new(), Vec::new());
    for r in 0..reps {
        let p = time(&csum_add_previous)?;
        let n = time(&csum_add)?;
        println!(
            "rep {r}: {size} bytes: previous {p:.1} ns/call, current {n:.1} ns/call, current/previous {:.3}",
            n / p
        );
        prev.push(p);
        now.push(n);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (p, n) = (median(&mut prev), median(&mut now));
    println!(
        "median: previous {p:.1} ns/call ({:.2} bytes/ns), current {n:.1} ns/call ({:.2} bytes/ns), current/previous {:.3}",
        size as f64 / p,
        size as f64 / n,
        n / p
    );
    Ok(())
}
