//! The worker's I/O driver: runs the sans-IO engine over the file descriptors the parent handed over.
//!
//! It owns the UDP sockets or the TCP listener, the TUN queues and the timers, and does nothing but
//! move bytes between them and the engine ([`crate::proto::server::Server`]). Events from the engine
//! (log lines, client connects/disconnects) are passed to `on_event`, which the worker's main forwards
//! to the parent over IPC.
//!
//! Threads (`data-threads N`): a UDP server may be handed N pairs of a `SO_REUSEPORT` UDP socket and
//! a TUN queue (`IFF_MULTI_QUEUE`). The first pair is served by the calling thread (the *primary*,
//! which also runs the commands from the parent, the timers and a TCP transport); every further
//! pair by a *lane* thread that [`DataPlane::new`] creates before the seccomp filter is installed
//! (no thread can be created after it). The kernel spreads clients over the sockets by a hash of
//! their address, and the TUN device hands a flow's packets to the queue that last wrote that flow,
//! so a client's traffic mostly stays on one thread; but any thread may handle any client (a floated
//! client, a packet from the other side on another queue). All threads share one engine behind a
//! mutex, locked per received batch or per TUN packet, never across a system call: the per-peer state
//! (packet-id counters, replay windows, keys) has exactly one owner at any time, and the expensive
//! part — the `recvmmsg`/`sendmmsg`/TUN system calls — runs on both cores at once.
//!
//! Data path of every thread (see `bench/data-path.md` for what each technique gained, measured):
//! - UDP is received with `recvmmsg` in batches of [`BATCH`] datagrams ([`crate::batch::RecvBatch`]);
//!   every batch goes through the engine and is flushed at once, replies and decrypted packets
//!   together: the datagrams with `sendmmsg` ([`crate::batch::SendBatch`]), the inner packets with one
//!   TUN `write` each. The socket is drained until a short batch or "would block".
//! - TUN reads are drained in batches of up to [`TUN_BATCH`] packets, encrypted as they come, and the
//!   resulting datagrams leave with one `sendmmsg` per batch.
//! - TUN offload, when the parent opened the device with `IFF_VNET_HDR` + `TUNSETOFFLOAD` (the driver
//!   asks the descriptor): every read starts with a virtio-net header and may be a TSO/USO
//!   super-packet, which [`crate::offload::segment`] splits into MSS-sized, fully checksummed packets
//!   before encryption; on the write side [`crate::offload::coalesce`] merges the decrypted in-order
//!   TCP segments of a flow into one super-packet per vectored write (userspace GRO), everything else
//!   is written with a plain header.
//! - Packet buffers come from the thread's [`Outbox`] pool and go back to it after the write, so the
//!   steady state allocates nothing per packet.
//! - The timer (primary only) is one `Sleep` re-armed only when the engine's next deadline changes;
//!   a lane whose turn moved the deadline earlier wakes the primary to re-arm it.
//! - Interrupt moderation (`coalesce-usecs`, default 50 µs): after a turn that handled at least
//!   [`COALESCE_MIN_PACKETS`] packets, the thread sleeps that long before it looks for new events, so
//!   the packets that arrive meanwhile are handled in one turn instead of one wake-up each. A lone
//!   packet (light load) is never held, nor is a turn that a batch limit ended with input still
//!   queued (a saturated server does not idle). The sleep blocks the thread, so the IPC and TCP
//!   tasks of the primary wait at most that long too. Measured in `bench/data-path.md` (step 5).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::batch::{RecvBatch, SendBatch};
use crate::proto::io::{EngineEvent, Outbox, PeerAddr, Transmit};
use crate::proto::server::Server;

pub use crate::batch::BATCH;

/// Largest OpenVPN packet accepted from the network (TCP frames are refused above this).
pub const MAX_PACKET: usize = 2048 + 1600;
/// Largest read from the TUN device: a 64 KiB super-packet behind its virtio-net header.
const TUN_BUF: usize = 65536 + crate::offload::VNET_HDR_LEN;
/// Datagrams queued by TUN reads before they are flushed (a read may be a super-packet of ~44).
const TUN_FLUSH_AT: usize = 256;
/// Queue depth towards one TCP connection before it is considered stalled and dropped.
const TCP_QUEUE: usize = 1024;
/// Most TUN packets read (and encrypted) before the resulting datagrams are flushed with one
/// `sendmmsg`; also bounds how long one busy TUN device can keep the loop from other events.
pub const TUN_BATCH: usize = BATCH;
/// Most `recvmmsg` batches handled per readiness event before the loop looks at other events.
const UDP_BATCHES_PER_EVENT: usize = 8;
/// Packets (datagrams received plus TUN reads) one turn must have handled before the loop holds for
/// `coalesce-usecs`: one packet per wake-up means the load is light, and holding would only add
/// latency.
pub const COALESCE_MIN_PACKETS: usize = 2;
/// Most data-plane threads (pairs of UDP socket and TUN queue) one worker serves.
pub const MAX_THREADS: usize = 8;
/// How long [`DataPlane::new`] waits for a lane thread to report that it is set up.
const LANE_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timer slack of every data-plane thread: the moderation hold is a few tens of µs, and the default
/// slack (50 µs) would stretch every one of them by up to that much.
const TIMER_SLACK_NS: u64 = 1_000;

/// Sets the calling thread's timer slack for the moderation hold (nothing to do when `coalesce` is
/// zero). Per thread, and `prctl` is not in the seccomp allowlist: every data-plane thread calls this
/// before the filter is installed.
pub fn set_timer_slack(coalesce: Duration) -> nix::Result<()> {
    if coalesce.is_zero() {
        return Ok(());
    }
    nix::sys::prctl::set_timerslack(TIMER_SLACK_NS)
}

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Wrapping a received fd for tokio failed.
    #[error("cannot register {what} with the event loop: {source}")]
    Register {
        /// which fd
        what: &'static str,
        /// cause
        source: io::Error,
    },
    /// Reading the TUN device failed with something other than "would block".
    #[error("TUN read failed: {0}")]
    TunRead(io::Error),
    /// The TUN device uses a virtio-net header size this driver does not handle.
    #[error("TUN device with a {0}-byte virtio-net header (only 10 is handled)")]
    VnetHeaderSize(usize),
    /// The UDP socket failed.
    #[error("UDP socket error: {0}")]
    Udp(io::Error),
    /// Accepting a TCP connection failed fatally.
    #[error("TCP accept failed: {0}")]
    Accept(io::Error),
    /// More data-plane threads were asked for than [`MAX_THREADS`], or extra lanes with a TCP
    /// transport.
    #[error("{0} data-plane threads asked for (1..={MAX_THREADS}, and 1 with a TCP transport)")]
    Threads(usize),
    /// A lane thread could not be created or set up.
    #[error("data-plane thread {lane}: {what}")]
    LaneSetup {
        /// the lane (1 = the first lane after the primary)
        lane: usize,
        /// what failed
        what: String,
    },
    /// A lane thread stopped on its own (an I/O error): the worker stops, the parent restarts it.
    #[error("data-plane thread {lane} stopped: {reason}")]
    LaneFailed {
        /// the lane
        lane: usize,
        /// why
        reason: String,
    },
    /// Another thread panicked while it held the engine.
    #[error("the engine lock is poisoned (a data-plane thread failed while holding it)")]
    Poisoned,
}

/// A request executed against the engine inside the driver's loop.
pub type EngineFn = Box<dyn FnOnce(&mut Server, Instant, &mut Outbox) + Send>;

/// Commands from the parent that reach the running driver.
pub enum DriverCommand {
    /// stop serving (SIGTERM in the parent)
    Shutdown,
    /// run a closure against the engine (management requests, CRL updates, ...)
    Engine(EngineFn),
}

impl std::fmt::Debug for DriverCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverCommand::Shutdown => f.write_str("Shutdown"),
            DriverCommand::Engine(_) => f.write_str("Engine(..)"),
        }
    }
}

/// The transport the worker serves.
#[derive(Debug)]
pub enum Transport {
    /// a bound UDP socket
    Udp(OwnedFd),
    /// a listening TCP socket
    Tcp(OwnedFd),
}

/// Counters the driver keeps about its own I/O.
#[derive(Debug, Default, Clone, Copy)]
pub struct DriverStats {
    /// TUN writes dropped because the device queue was full
    pub tun_drops: u64,
    /// UDP sends that failed
    pub udp_send_errors: u64,
    /// TCP connections dropped because they did not drain their queue
    pub tcp_stalled: u64,
    /// UDP datagrams dropped because they were larger than [`MAX_PACKET`] (or had no IP sender)
    pub udp_dropped: u64,
    /// `recvmmsg` calls that returned datagrams
    pub udp_recv_calls: u64,
    /// datagrams received
    pub udp_recv_datagrams: u64,
    /// `sendmmsg` calls that sent datagrams
    pub udp_send_calls: u64,
    /// datagrams sent
    pub udp_send_datagrams: u64,
    /// TUN reads dropped because their virtio-net header or super-packet was malformed
    pub tun_malformed: u64,
    /// TUN reads that were super-packets split into several packets
    pub tun_split_reads: u64,
    /// TUN writes that carried several coalesced packets
    pub tun_coalesced_writes: u64,
    /// packets merged into those writes
    pub tun_coalesced_packets: u64,
}

impl DriverStats {
    fn add(&mut self, o: &DriverStats) {
        self.tun_drops += o.tun_drops;
        self.udp_send_errors += o.udp_send_errors;
        self.tcp_stalled += o.tcp_stalled;
        self.udp_dropped += o.udp_dropped;
        self.udp_recv_calls += o.udp_recv_calls;
        self.udp_recv_datagrams += o.udp_recv_datagrams;
        self.udp_send_calls += o.udp_send_calls;
        self.udp_send_datagrams += o.udp_send_datagrams;
        self.tun_malformed += o.tun_malformed;
        self.tun_split_reads += o.tun_split_reads;
        self.tun_coalesced_writes += o.tun_coalesced_writes;
        self.tun_coalesced_packets += o.tun_coalesced_packets;
    }
}

struct TcpConn {
    tx: mpsc::Sender<Vec<u8>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What every data-plane thread shares: the engine, and the primary's timer.
struct Shared {
    engine: Mutex<Server>,
    /// The deadline the primary's timer is armed for, in ns since `base` (`u64::MAX`: none).
    armed: AtomicU64,
    base: Instant,
    /// Wakes the primary to re-arm its timer (a lane moved the engine's deadline earlier).
    rearm: Notify,
    verb: Arc<AtomicU8>,
    coalesce: Duration,
}

impl Shared {
    fn engine(&self) -> Result<MutexGuard<'_, Server>, DriverError> {
        self.engine.lock().map_err(|_| DriverError::Poisoned)
    }

    fn encode(&self, d: Option<Instant>) -> u64 {
        d.map_or(u64::MAX, |d| {
            u64::try_from(d.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
        })
    }
}

/// A lane thread, set up and waiting for [`DataPlane`]'s start.
struct LaneHandle {
    go: std::sync::mpsc::Sender<()>,
    stop: oneshot::Sender<()>,
}

/// The engine and the lane threads, created before the seccomp filter and started by [`run`].
pub struct DataPlane {
    shared: Arc<Shared>,
    lanes: Vec<LaneHandle>,
    /// events of the lanes, handed to the primary's `on_event`
    events: mpsc::UnboundedReceiver<EngineEvent>,
    /// one message per lane that ended, with its counters or why it failed
    exits: mpsc::UnboundedReceiver<(usize, Result<DriverStats, DriverError>)>,
}

impl DataPlane {
    /// Wraps the engine and creates one lane thread per `(UDP socket, TUN queue)` pair in `lanes`
    /// (the primary serves the pair given to [`run`]). Every lane builds its event loop and
    /// registers its descriptors here, then waits: no lane reads a packet before [`run`] starts it.
    ///
    /// INVARIANT: called before the seccomp filter is installed — thread creation (`clone3`/`clone`)
    /// is forbidden after it.
    pub fn new(
        engine: Server,
        lanes: Vec<(OwnedFd, OwnedFd)>,
        verb: Arc<AtomicU8>,
        coalesce: Duration,
    ) -> Result<Self, DriverError> {
        if lanes.len() + 1 > MAX_THREADS {
            return Err(DriverError::Threads(lanes.len() + 1));
        }
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            armed: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            rearm: Notify::new(),
            verb,
            coalesce,
        });
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (exit_tx, exits) = mpsc::unbounded_channel();
        let mut handles = Vec::with_capacity(lanes.len());
        for (i, (udp, tun)) in lanes.into_iter().enumerate() {
            let lane = i + 1;
            let setup_err = |what: String| DriverError::LaneSetup { lane, what };
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (go_tx, go_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel();
            let ctx = LaneCtx {
                lane,
                shared: Arc::clone(&shared),
                events: ev_tx.clone(),
                exit: exit_tx.clone(),
            };
            std::thread::Builder::new()
                .name(format!("bulwark-dp{lane}"))
                .spawn(move || lane_main(ctx, udp, tun, ready_tx, go_rx, stop_rx))
                .map_err(|e| setup_err(format!("cannot create the thread: {e}")))?;
            match ready_rx.recv_timeout(LANE_SETUP_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(setup_err(e.to_string())),
                Err(_) => return Err(setup_err("did not report its set-up".into())),
            }
            handles.push(LaneHandle {
                go: go_tx,
                stop: stop_tx,
            });
        }
        Ok(DataPlane {
            shared,
            lanes: handles,
            events,
            exits,
        })
    }
}

/// What a lane thread gets besides its descriptors.
struct LaneCtx {
    lane: usize,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<EngineEvent>,
    exit: mpsc::UnboundedSender<(usize, Result<DriverStats, DriverError>)>,
}

/// Body of a lane thread: set up (before the seccomp filter), report, wait for the start, serve.
fn lane_main(
    ctx: LaneCtx,
    udp: OwnedFd,
    tun: OwnedFd,
    ready: std::sync::mpsc::Sender<Result<(), DriverError>>,
    go: std::sync::mpsc::Receiver<()>,
    stop: oneshot::Receiver<()>,
) {
    // a lane has nowhere to report this to yet; the primary warns if it fails for itself
    let _ = set_timer_slack(ctx.shared.coalesce);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            let _ = ready.send(Err(DriverError::Register {
                what: "lane event loop",
                source,
            }));
            return;
        }
    };
    let io = match rt.block_on(async { LaneIo::open(Some(udp), tun) }) {
        Ok(io) => io,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let st = LaneState::new(&io);
    if ready.send(Ok(())).is_err() || go.recv().is_err() {
        // the data plane was dropped before it started (e.g. the seccomp filter failed)
        return;
    }
    let res = rt.block_on(lane_loop(&ctx, io, st, stop));
    let _ = ctx.exit.send((ctx.lane, res));
}

/// The event loop of a lane: its UDP socket and TUN queue until the primary stops it.
async fn lane_loop(
    ctx: &LaneCtx,
    io: LaneIo,
    mut st: LaneState,
    mut stop: oneshot::Receiver<()>,
) -> Result<DriverStats, DriverError> {
    let shared = &*ctx.shared;
    let mut forward = |ev: EngineEvent| {
        // the primary is gone when this fails: the worker is stopping anyway
        let _ = ctx.events.send(ev);
    };
    loop {
        let trace = shared.verb.load(Ordering::Relaxed) == 5;
        let turn = tokio::select! {
            biased;
            _ = &mut stop => return Ok(st.stats),
            r = io.udp_readable() => st.on_udp(&io, r, shared, trace, &mut forward).await?,
            r = io.tun.readable() => st.on_tun(&io, r, shared, trace)?,
        };
        st.end_turn(&io, trace, &mut forward).await;
        // a turn may have created or moved a timer (a handshake, a retransmission): the primary's
        // timer must not sleep past it
        let next = shared.encode(shared.engine()?.next_timeout());
        if next < shared.armed.load(Ordering::Acquire) {
            shared.rearm.notify_one();
        }
        st.hold(turn, shared.coalesce);
    }
}

/// The descriptors of one data-plane thread.
struct LaneIo {
    udp: Option<AsyncFd<std::net::UdpSocket>>,
    tun: AsyncFd<File>,
    /// the TUN device carries virtio-net headers
    vnet: bool,
}

impl LaneIo {
    /// Registers the descriptors with the current thread's event loop.
    fn open(udp: Option<OwnedFd>, tun: OwnedFd) -> Result<Self, DriverError> {
        set_nonblocking(&tun).map_err(|source| DriverError::Register {
            what: "TUN device",
            source,
        })?;
        let tun =
            crate::sys::register_file(File::from(tun)).map_err(|source| DriverError::Register {
                what: "TUN device",
                source,
            })?;
        let vnet = match crate::sys::tun_vnet_hdr(tun.get_ref().as_fd()) {
            Ok(None) => false,
            Ok(Some(crate::offload::VNET_HDR_LEN)) => true,
            Ok(Some(n)) => return Err(DriverError::VnetHeaderSize(n)),
            // not an attached TUN queue (test harnesses pass other descriptors): no header
            Err(_) => false,
        };
        let udp = match udp {
            None => None,
            Some(fd) => {
                let reg = |source| DriverError::Register {
                    what: "UDP socket",
                    source,
                };
                let std_sock = std::net::UdpSocket::from(fd);
                std_sock.set_nonblocking(true).map_err(reg)?;
                Some(crate::sys::register_udp(std_sock).map_err(reg)?)
            }
        };
        Ok(LaneIo { udp, tun, vnet })
    }

    /// Readiness of the UDP socket; never ready without one.
    async fn udp_readable(&self) -> io::Result<AsyncFdReadyGuard<'_, std::net::UdpSocket>> {
        match &self.udp {
            Some(u) => u.readable().await,
            None => std::future::pending().await,
        }
    }
}

/// What one turn of a loop handled: packets (datagrams received, TUN reads), and whether a batch
/// limit ended it with input still queued (the moderation hold only follows a drained turn).
#[derive(Debug, Default, Clone, Copy)]
struct Turn {
    work: usize,
    backlog: bool,
}

/// The buffers and counters of one data-plane thread.
struct LaneState {
    rx: Option<RecvBatch>,
    tx: SendBatch,
    tunbuf: Vec<u8>,
    /// one segment of a super-packet being split
    segbuf: Vec<u8>,
    out: Outbox,
    stats: DriverStats,
    /// TCP connections (primary only)
    conns: HashMap<u64, TcpConn>,
    /// OpenVPN's verb-5 packet characters of this turn (see `PacketTrace`)
    rw: String,
}

impl LaneState {
    fn new(io: &LaneIo) -> Self {
        // The UDP batches exist only for a UDP transport: 64 messages of 3.6 KiB, or of 64 KiB when
        // the parent turned UDP_GRO on (a message may then hold up to 64 coalesced datagrams).
        let rx = io.udp.as_ref().map(|u| {
            let stride = if crate::batch::gro_enabled(u.get_ref().as_fd()) {
                crate::batch::GRO_STRIDE
            } else {
                MAX_PACKET
            };
            RecvBatch::new(BATCH, stride)
        });
        let gso = io
            .udp
            .as_ref()
            .is_some_and(|u| crate::batch::gso_supported(u.get_ref().as_fd()));
        LaneState {
            rx,
            tx: SendBatch::new(BATCH, gso),
            tunbuf: vec![0u8; TUN_BUF],
            segbuf: Vec::with_capacity(2048),
            out: Outbox::default(),
            stats: DriverStats::default(),
            conns: HashMap::new(),
            rw: String::new(),
        }
    }

    /// Drains the UDP socket: up to [`UDP_BATCHES_PER_EVENT`] `recvmmsg` batches, each through the
    /// engine (locked for the batch) and flushed (unlocked).
    async fn on_udp(
        &mut self,
        io: &LaneIo,
        ready: io::Result<AsyncFdReadyGuard<'_, std::net::UdpSocket>>,
        shared: &Shared,
        trace: bool,
        on_event: &mut impl FnMut(EngineEvent),
    ) -> Result<Turn, DriverError> {
        let mut guard = ready.map_err(DriverError::Udp)?;
        let mut turn = Turn::default();
        let Some(mut rx) = self.rx.take() else {
            return Ok(turn);
        };
        let mut drained = false;
        let mut result = Ok(());
        for _ in 0..UDP_BATCHES_PER_EVENT {
            match guard.try_io(|s| rx.recv(s.get_ref().as_fd())) {
                Ok(Ok(n)) => {
                    let (now, now_unix) = (Instant::now(), unix_now());
                    self.stats.udp_recv_calls += 1;
                    {
                        let mut engine = match shared.engine() {
                            Ok(e) => e,
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        };
                        for i in 0..n {
                            match rx.get(i) {
                                Some(d) => {
                                    for seg in d.segments() {
                                        self.stats.udp_recv_datagrams += 1;
                                        turn.work += 1;
                                        if trace {
                                            self.rw.push('R');
                                        }
                                        engine.on_datagram(
                                            PeerAddr::Udp(d.from),
                                            seg,
                                            now,
                                            now_unix,
                                            &mut self.out,
                                        );
                                    }
                                }
                                None => self.stats.udp_dropped += 1,
                            }
                        }
                    }
                    if trace {
                        note_writes(&self.out, &mut self.rw);
                    }
                    self.flush(io, on_event).await;
                    if n < rx.capacity() {
                        // INVARIANT: a short recvmmsg on this non-blocking, unconnected socket (no
                        // IP_RECVERR, so no queued ICMP errors) means the receive queue was empty at
                        // that moment; the socket is registered edge-triggered, so any datagram that
                        // arrived since raises a new readiness event. Clearing here saves the final
                        // EAGAIN call of every drain.
                        guard.clear_ready();
                        drained = true;
                        break;
                    }
                }
                // ICMP errors surface as ECONNREFUSED on some kernels; never fatal for a server
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Ok(Err(e)) => {
                    result = Err(DriverError::Udp(e));
                    break;
                }
                Err(_would_block) => {
                    drained = true;
                    break;
                }
            }
        }
        self.rx = Some(rx);
        result?;
        turn.backlog = !drained;
        Ok(turn)
    }

    /// Drains the TUN queue: up to [`TUN_BATCH`] reads (or until [`TUN_FLUSH_AT`] datagrams are
    /// queued), each through the engine (locked per packet, never across the read).
    fn on_tun(
        &mut self,
        io: &LaneIo,
        ready: io::Result<AsyncFdReadyGuard<'_, File>>,
        shared: &Shared,
        trace: bool,
    ) -> Result<Turn, DriverError> {
        let mut guard = ready.map_err(DriverError::TunRead)?;
        let (now, now_unix) = (Instant::now(), unix_now());
        let mut turn = Turn::default();
        let mut reads = 0;
        let mut drained = false;
        while reads < TUN_BATCH && self.out.transmits.len() < TUN_FLUSH_AT {
            let tunbuf = &mut self.tunbuf;
            match guard.try_io(|inner| inner.get_ref().read(tunbuf)) {
                Ok(Ok(0)) => {
                    drained = true;
                    break;
                }
                Ok(Ok(n)) => {
                    reads += 1;
                    turn.work += 1;
                    if trace {
                        self.rw.push('r');
                    }
                    let mut engine = shared.engine()?;
                    let out = &mut self.out;
                    if io.vnet {
                        let frame = &self.tunbuf[..n];
                        let res = crate::offload::VnetHdr::parse(frame).and_then(|h| {
                            crate::offload::segment(
                                &frame[crate::offload::VNET_HDR_LEN..],
                                &h,
                                &mut self.segbuf,
                                |p| engine.on_tun_packet(p, now, now_unix, out),
                            )
                        });
                        match res {
                            Ok(1) => {}
                            Ok(_) => self.stats.tun_split_reads += 1,
                            Err(_) => self.stats.tun_malformed += 1,
                        }
                    } else {
                        engine.on_tun_packet(&self.tunbuf[..n], now, now_unix, out);
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(DriverError::TunRead(e)),
                Err(_would_block) => {
                    drained = true;
                    break;
                }
            }
        }
        turn.backlog = !drained;
        Ok(turn)
    }

    /// The end of every turn: flush what the turn produced and pass the verb-5 packet characters on.
    async fn end_turn(&mut self, io: &LaneIo, trace: bool, on_event: &mut impl FnMut(EngineEvent)) {
        if trace {
            note_writes(&self.out, &mut self.rw);
        }
        self.flush(io, on_event).await;
        // in records well below the log channel's message limit (the characters are ASCII)
        while !self.rw.is_empty() {
            let rest = self.rw.split_off(self.rw.len().min(4096));
            on_event(EngineEvent::Log {
                class: crate::proto::io::LogClass::PacketTrace,
                line: std::mem::replace(&mut self.rw, rest),
            });
        }
    }

    /// The interrupt-moderation hold after a busy, drained turn.
    fn hold(&self, turn: Turn, coalesce: Duration) {
        if turn.work >= COALESCE_MIN_PACKETS && !turn.backlog && !coalesce.is_zero() {
            // INVARIANT: after the flush, so the hold delays only new input, never what this turn
            // produced; and never while a batch limit left input queued (a saturated server goes
            // straight on). A blocking sleep on purpose: the runtime would otherwise wake on the next
            // packet; its other tasks (IPC, TCP framing) wait at most `coalesce` (≤ 1 ms).
            std::thread::sleep(coalesce);
        }
    }

    /// Writes everything the engine queued: datagrams (runs of UDP transmits with `sendmmsg`), TCP
    /// frames, TUN packets; then passes the events on. Every packet buffer goes back to the pool.
    async fn flush(&mut self, io: &LaneIo, on_event: &mut impl FnMut(EngineEvent)) {
        if !self.out.transmits.is_empty() {
            let mut ts = std::mem::take(&mut self.out.transmits);
            let mut i = 0;
            while i < ts.len() {
                match ts[i].to {
                    PeerAddr::Udp(_) => {
                        let run = ts[i..]
                            .iter()
                            .take_while(|t| matches!(t.to, PeerAddr::Udp(_)))
                            .count();
                        self.send_udp(io, &ts[i..i + run]).await;
                        i += run;
                    }
                    PeerAddr::Tcp { conn, .. } => {
                        let data = std::mem::take(&mut ts[i].data).into_vec();
                        let stalled = match self.conns.get(&conn) {
                            Some(c) => c.tx.try_send(data).is_err(),
                            None => false,
                        };
                        if stalled {
                            self.stats.tcp_stalled += 1;
                            self.conns.remove(&conn);
                        }
                        i += 1;
                    }
                }
            }
            for t in ts.drain(..) {
                self.out.recycle(t.data.into_buffer());
            }
            // keep the (empty) vector's capacity; only the GSO notice can have been queued meanwhile
            ts.append(&mut self.out.transmits);
            self.out.transmits = ts;
        }
        if !self.out.tun.is_empty() {
            let mut pkts = std::mem::take(&mut self.out.tun);
            if io.vnet {
                self.write_tun_vnet(io, &mut pkts);
            } else {
                for pkt in &pkts {
                    // A full device queue drops the packet (as a router would), never blocks the loop.
                    match io.tun.get_ref().write(pkt) {
                        Ok(n) if n == pkt.len() => {}
                        _ => self.stats.tun_drops += 1,
                    }
                }
            }
            for pkt in pkts.drain(..) {
                self.out.recycle(pkt.into_buffer());
            }
            pkts.append(&mut self.out.tun);
            self.out.tun = pkts;
        }
        for ev in self.out.events.drain(..) {
            if let EngineEvent::CloseTcp { conn } = ev {
                self.conns.remove(&conn);
                continue;
            }
            on_event(ev);
        }
    }

    /// Writes decrypted packets to a vnet TUN device: runs of in-order TCP segments of one flow as one
    /// super-packet (one vectored write: header, first packet, the others' payloads), everything else
    /// alone behind a plain header. A full device queue drops the write (as a router would).
    fn write_tun_vnet(&mut self, io: &LaneIo, pkts: &mut [crate::proto::io::PacketBuf]) {
        use std::io::IoSlice;
        let mut i = 0;
        while i < pkts.len() {
            let c = crate::offload::coalesce(&mut pkts[i..]);
            let count = c.count.max(1);
            let hdr = c.hdr.to_bytes();
            let mut iov = [IoSlice::new(&[]); crate::offload::MAX_COALESCE + 1];
            iov[0] = IoSlice::new(&hdr);
            iov[1] = IoSlice::new(pkts[i].as_slice());
            let mut total = hdr.len() + pkts[i].len();
            for k in 1..count {
                let payload = pkts[i + k].as_slice().get(c.payload_at..).unwrap_or(&[]);
                iov[k + 1] = IoSlice::new(payload);
                total += payload.len();
            }
            match io.tun.get_ref().write_vectored(&iov[..count + 1]) {
                Ok(n) if n == total => {
                    if count > 1 {
                        self.stats.tun_coalesced_writes += 1;
                        self.stats.tun_coalesced_packets += count as u64;
                    }
                }
                _ => self.stats.tun_drops += count as u64,
            }
            i += count;
        }
    }

    /// Sends a run of UDP transmits in order, up to [`BATCH`] messages per `sendmmsg` (GSO messages
    /// for runs to one peer when the kernel has UDP GSO). A full socket buffer waits for room; a
    /// datagram the kernel refuses is counted and skipped (as a lost packet); a GSO message the kernel
    /// refuses is sent again one datagram at a time, and that size is not coalesced any more.
    async fn send_udp(&mut self, io: &LaneIo, run: &[Transmit]) {
        let Some(u) = io.udp.as_ref() else {
            self.stats.udp_send_errors += run.len() as u64;
            return;
        };
        let mut pos = 0;
        while pos < run.len() {
            let mut guard = match u.writable().await {
                Ok(g) => g,
                Err(_) => {
                    self.stats.udp_send_errors += (run.len() - pos) as u64;
                    return;
                }
            };
            let tx = &mut self.tx;
            let mut failed = None;
            let res = guard.try_io(|s| {
                match tx.send(
                    s.get_ref().as_fd(),
                    &run[pos..],
                    |t| t.to.socket_addr(),
                    |t| t.data.as_slice(),
                ) {
                    Ok(n) => Ok(n),
                    // only "would block" goes back to tokio (it clears the readiness); other errors
                    // are handled below
                    Err(e) if e.error.kind() == io::ErrorKind::WouldBlock => Err(e.error),
                    Err(e) => {
                        failed = Some(e);
                        Ok(0)
                    }
                }
            });
            match (res, failed) {
                (Ok(Ok(_)), Some(e)) => match e.gso_segment {
                    Some(size) => {
                        let disable = e.error.raw_os_error() == Some(libc::EIO);
                        tx.limit_gso(size, disable);
                        self.out.log(
                            crate::proto::io::LogClass::Info,
                            if disable {
                                format!("UDP GSO refused by the kernel ({}); sending datagrams one by one", e.error)
                            } else {
                                format!("UDP GSO refused for {size}-byte datagrams ({}); sending those one by one", e.error)
                            },
                        );
                    }
                    None if e.error.kind() == io::ErrorKind::Interrupted => {}
                    None => {
                        self.stats.udp_send_errors += e.datagrams as u64;
                        pos += e.datagrams.max(1);
                    }
                },
                (Ok(Ok(0)), None) => return,
                (Ok(Ok(n)), None) => {
                    self.stats.udp_send_calls += 1;
                    self.stats.udp_send_datagrams += n as u64;
                    pos += n;
                }
                (Ok(Err(_)), _) => {
                    self.stats.udp_send_errors += 1;
                    pos += 1;
                }
                // readiness cleared by try_io: the next writable() waits for room
                (Err(_would_block), _) => {}
            }
        }
    }
}

/// Runs the engine until a shutdown command arrives or a fatal I/O error happens, on this thread
/// (the primary: `transport` and `tun`, the commands, the timers) and on the lanes of `plane`,
/// which it starts. Events of every thread reach `on_event` on this one.
pub async fn run(
    plane: DataPlane,
    transport: Transport,
    tun: OwnedFd,
    mut commands: mpsc::Receiver<DriverCommand>,
    mut on_event: impl FnMut(EngineEvent),
) -> Result<DriverStats, DriverError> {
    let DataPlane {
        shared,
        lanes,
        events: mut lane_events,
        exits: mut lane_exits,
    } = plane;
    let (udp, listener) = match transport {
        Transport::Udp(fd) => (Some(fd), None),
        Transport::Tcp(fd) => {
            if !lanes.is_empty() {
                return Err(DriverError::Threads(lanes.len() + 1));
            }
            let reg = |source| DriverError::Register {
                what: "TCP listener",
                source,
            };
            let std_l = std::net::TcpListener::from(fd);
            std_l.set_nonblocking(true).map_err(reg)?;
            (None, Some(TcpListener::from_std(std_l).map_err(reg)?))
        }
    };
    let io = LaneIo::open(udp, tun)?;
    let mut st = LaneState::new(&io);
    // INVARIANT: the lanes start reading only now, after the caller installed the seccomp filter.
    let mut stops = Vec::with_capacity(lanes.len());
    for l in lanes {
        let _ = l.go.send(());
        stops.push(l.stop);
    }
    let lane_count = stops.len();
    // the lanes' channels close when the last lane ends: polled only while lanes exist
    let mut lanes_open = lane_count > 0;
    let mut stats = DriverStats::default();

    let mut next_conn: u64 = 1;
    let (frame_tx, mut frame_rx) = mpsc::channel::<(u64, SocketAddr, Option<Vec<u8>>)>(4096);
    // one timer, re-armed only when the engine's earliest deadline changes
    let sleep = tokio::time::sleep_until(far_future());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;

    let result = loop {
        let trace = shared.verb.load(Ordering::Relaxed) == 5;
        let deadline = shared.engine()?.next_timeout();
        if deadline != armed {
            sleep.as_mut().reset(match deadline {
                Some(d) => tokio::time::Instant::from_std(d),
                None => far_future(),
            });
            armed = deadline;
            shared
                .armed
                .store(shared.encode(deadline), Ordering::Release);
        }
        let mut turn = Turn::default();
        tokio::select! {
            biased;
            cmd = commands.recv() => {
                match cmd {
                    None | Some(DriverCommand::Shutdown) => {
                        // the lanes stop first, so the shutdown notices are the last thing sent
                        for s in stops.drain(..) {
                            let _ = s.send(());
                        }
                        shared.engine()?.shutdown(Instant::now(), unix_now(), &mut st.out);
                        st.flush(&io, &mut on_event).await;
                        break Ok(());
                    }
                    Some(DriverCommand::Engine(f)) => f(&mut *shared.engine()?, Instant::now(), &mut st.out),
                }
            }
            exit = lane_exits.recv(), if lanes_open => {
                // a lane ends only when stopped; one that ends on its own takes the worker down
                // (its clients would be cut off), and the parent starts a new worker
                let (lane, reason) = match exit {
                    Some((lane, Ok(_))) => (lane, "ended unexpectedly".to_owned()),
                    Some((lane, Err(e))) => (lane, e.to_string()),
                    None => (0, "all lanes gone".to_owned()),
                };
                break Err(DriverError::LaneFailed { lane, reason });
            }
            ev = lane_events.recv(), if lanes_open => match ev {
                Some(ev) => on_event(ev),
                None => lanes_open = false,
            },
            r = io.udp_readable() => turn = st.on_udp(&io, r, &shared, trace, &mut on_event).await?,
            r = io.tun.readable() => turn = st.on_tun(&io, r, &shared, trace)?,
            acc = async { match &listener { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                match acc {
                    Ok((stream, addr)) => {
                        let id = next_conn;
                        next_conn += 1;
                        let (tx, rx) = mpsc::channel(TCP_QUEUE);
                        st.conns.insert(id, TcpConn { tx });
                        spawn_tcp(id, addr, stream, rx, frame_tx.clone());
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
                        st.out.log(crate::proto::io::LogClass::Error, format!("TCP accept: {e}"));
                    }
                    Err(e) => break Err(DriverError::Accept(e)),
                }
            }
            frame = frame_rx.recv() => {
                if let Some((conn, addr, data)) = frame {
                    let now = Instant::now();
                    let mut engine = shared.engine()?;
                    match data {
                        Some(pkt) => engine.on_datagram(PeerAddr::Tcp { conn, addr }, &pkt, now, unix_now(), &mut st.out),
                        None => {
                            st.conns.remove(&conn);
                            engine.on_tcp_closed(conn, now, unix_now(), &mut st.out);
                        }
                    }
                }
            }
            () = &mut sleep, if armed.is_some() => {
                shared.engine()?.on_timeout(Instant::now(), unix_now(), &mut st.out);
            }
            // a lane moved the deadline earlier: the loop head re-arms
            () = shared.rearm.notified() => {}
        }
        st.end_turn(&io, trace, &mut on_event).await;
        st.hold(turn, shared.coalesce);
    };
    // Lanes that already stopped report their counters; the others are not waited for.
    stats.add(&st.stats);
    for _ in 0..lane_count {
        match lane_exits.try_recv() {
            Ok((_, Ok(s))) => stats.add(&s),
            _ => break,
        }
    }
    for s in stops {
        let _ = s.send(());
    }
    result.map(|()| stats)
}

/// Appends OpenVPN's `W` for every datagram or frame and `w` for every TUN packet `out` holds.
fn note_writes(out: &Outbox, rw: &mut String) {
    rw.extend(std::iter::repeat_n('W', out.transmits.len()));
    rw.extend(std::iter::repeat_n('w', out.tun.len()));
}

/// A deadline that never comes in practice (the timer arm is disabled while nothing is armed).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    let _ = fd.as_raw_fd();
    Ok(())
}

fn spawn_tcp(
    id: u64,
    addr: SocketAddr,
    stream: TcpStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<(u64, SocketAddr, Option<Vec<u8>>)>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    // writer: frames each packet with its u16 length; ends when the engine drops the connection
    tokio::spawn(async move {
        while let Some(pkt) = rx.recv().await {
            let Ok(len) = u16::try_from(pkt.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(pkt.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&pkt);
            if wr.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    // reader: splits the stream into packets; a zero or oversized length closes the connection
    tokio::spawn(async move {
        let mut len_buf = [0u8; 2];
        loop {
            if rd.read_exact(&mut len_buf).await.is_err() {
                break;
            }
            let len = usize::from(u16::from_be_bytes(len_buf));
            if len == 0 || len > MAX_PACKET {
                break;
            }
            let mut pkt = vec![0u8; len];
            if rd.read_exact(&mut pkt).await.is_err() {
                break;
            }
            if frames.send((id, addr, Some(pkt))).await.is_err() {
                return;
            }
        }
        let _ = frames.send((id, addr, None)).await;
    });
}
