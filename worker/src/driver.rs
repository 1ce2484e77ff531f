//! The worker's I/O driver: runs the sans-IO engine over the file descriptors the parent handed over.
//!
//! It owns the UDP socket or TCP listener, the TUN device and the timers, and does nothing but move bytes
//! between them and the engine ([`crate::proto::server::Server`]). Events from the engine (log lines,
//! client connects/disconnects) are passed to `on_event`, which the worker's main forwards to the parent
//! over IPC.
//!
//! Data path (see `bench/data-path.md` for what each technique gained, measured):
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
//! - Packet buffers come from the [`Outbox`] pool and go back to it after the write, so the steady
//!   state allocates nothing per packet.
//! - The timer is one `Sleep` re-armed only when the engine's next deadline changes.
//! - Interrupt moderation (`coalesce-usecs`, default 50 µs): after a turn that handled at least
//!   [`COALESCE_MIN_PACKETS`] packets, the loop sleeps that long before it looks for new events, so
//!   the packets that arrive meanwhile are handled in one turn instead of one wake-up each. A lone
//!   packet (light load) is never held, nor is a turn that a batch limit ended with input still
//!   queued (a saturated server does not idle). The sleep blocks the thread, so the IPC and TCP
//!   tasks of the same runtime wait at most that long too. Measured in `bench/data-path.md` (step 5).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

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

struct TcpConn {
    tx: mpsc::Sender<Vec<u8>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the engine until a shutdown command arrives or a fatal I/O error happens. `coalesce` is the
/// interrupt-moderation hold (`coalesce-usecs`; zero turns it off).
pub async fn run(
    mut engine: Server,
    transport: Transport,
    tun: OwnedFd,
    mut commands: mpsc::Receiver<DriverCommand>,
    verb: std::sync::Arc<std::sync::atomic::AtomicU8>,
    coalesce: Duration,
    mut on_event: impl FnMut(EngineEvent),
) -> Result<DriverStats, DriverError> {
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
        // not an attached TUN queue (test harnesses pass other descriptors): no header, as before
        Err(_) => false,
    };
    let (udp, listener) = match transport {
        Transport::Udp(fd) => {
            let std_sock = std::net::UdpSocket::from(fd);
            std_sock
                .set_nonblocking(true)
                .map_err(|source| DriverError::Register {
                    what: "UDP socket",
                    source,
                })?;
            let s = crate::sys::register_udp(std_sock).map_err(|source| DriverError::Register {
                what: "UDP socket",
                source,
            })?;
            (Some(s), None)
        }
        Transport::Tcp(fd) => {
            let std_l = std::net::TcpListener::from(fd);
            std_l
                .set_nonblocking(true)
                .map_err(|source| DriverError::Register {
                    what: "TCP listener",
                    source,
                })?;
            let l = TcpListener::from_std(std_l).map_err(|source| DriverError::Register {
                what: "TCP listener",
                source,
            })?;
            (None, Some(l))
        }
    };

    let mut stats = DriverStats::default();
    let mut conns: HashMap<u64, TcpConn> = HashMap::new();
    let mut next_conn: u64 = 1;
    let (frame_tx, mut frame_rx) = mpsc::channel::<(u64, SocketAddr, Option<Vec<u8>>)>(4096);
    // The UDP batches exist only for a UDP transport: 64 messages of 3.6 KiB, or of 64 KiB when the
    // parent turned UDP_GRO on (a message may then hold up to 64 coalesced datagrams).
    let mut rx_batch = udp.as_ref().map(|u| {
        let stride = if crate::batch::gro_enabled(u.get_ref().as_fd()) {
            crate::batch::GRO_STRIDE
        } else {
            MAX_PACKET
        };
        RecvBatch::new(BATCH, stride)
    });
    let gso = udp
        .as_ref()
        .is_some_and(|u| crate::batch::gso_supported(u.get_ref().as_fd()));
    let mut tx_batch = SendBatch::new(BATCH, gso);
    let mut tunbuf = vec![0u8; TUN_BUF];
    // one segment of a super-packet being split
    let mut segbuf: Vec<u8> = Vec::with_capacity(2048);
    let mut out = Outbox::default();
    let mut io = Io {
        udp: udp.as_ref(),
        tun: &tun,
        vnet,
        tx: &mut tx_batch,
        conns: &mut conns,
        stats: &mut stats,
    };

    // one timer, re-armed only when the engine's earliest deadline changes
    let sleep = tokio::time::sleep_until(far_future());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;

    // OpenVPN's verb-5 packet characters of this loop turn (see `PacketTrace`)
    let mut rw = String::new();
    loop {
        // packets handled in this turn (datagrams received, TUN reads), and whether a batch limit
        // ended it with input still queued: the moderation hold only follows a drained turn
        let mut work = 0usize;
        let mut backlog = false;
        let trace = verb.load(std::sync::atomic::Ordering::Relaxed) == 5;
        let deadline = engine.next_timeout();
        if deadline != armed {
            sleep.as_mut().reset(match deadline {
                Some(d) => tokio::time::Instant::from_std(d),
                None => far_future(),
            });
            armed = deadline;
        }
        tokio::select! {
            biased;
            cmd = commands.recv() => {
                match cmd {
                    None | Some(DriverCommand::Shutdown) => {
                        engine.shutdown(Instant::now(), unix_now(), &mut out);
                        io.flush(&mut out, &mut on_event).await;
                        return Ok(*io.stats);
                    }
                    Some(DriverCommand::Engine(f)) => f(&mut engine, Instant::now(), &mut out),
                }
            }
            r = async { match io.udp { Some(u) => u.readable().await, None => std::future::pending().await } } => {
                let mut guard = r.map_err(DriverError::Udp)?;
                let Some(rx) = rx_batch.as_mut() else { continue };
                let mut drained = false;
                for _ in 0..UDP_BATCHES_PER_EVENT {
                    match guard.try_io(|s| rx.recv(s.get_ref().as_fd())) {
                        Ok(Ok(n)) => {
                            let (now, now_unix) = (Instant::now(), unix_now());
                            io.stats.udp_recv_calls += 1;
                            for i in 0..n {
                                match rx.get(i) {
                                    Some(d) => {
                                        for seg in d.segments() {
                                            io.stats.udp_recv_datagrams += 1;
                                            work += 1;
                                            if trace {
                                                rw.push('R');
                                            }
                                            engine.on_datagram(PeerAddr::Udp(d.from), seg, now, now_unix, &mut out);
                                        }
                                    }
                                    None => io.stats.udp_dropped += 1,
                                }
                            }
                            if trace {
                                note_writes(&out, &mut rw);
                            }
                            io.flush(&mut out, &mut on_event).await;
                            if n < rx.capacity() {
                                // INVARIANT: a short recvmmsg on this non-blocking, unconnected socket
                                // (no IP_RECVERR, so no queued ICMP errors) means the receive queue was
                                // empty at that moment; the socket is registered edge-triggered, so any
                                // datagram that arrived since raises a new readiness event. Clearing here
                                // saves the final EAGAIN call of every drain.
                                guard.clear_ready();
                                drained = true;
                                break;
                            }
                        }
                        // ICMP errors surface as ECONNREFUSED on some kernels; never fatal for a server
                        Ok(Err(e)) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted) => continue,
                        Ok(Err(e)) => return Err(DriverError::Udp(e)),
                        Err(_would_block) => {
                            drained = true;
                            break;
                        }
                    }
                }
                backlog |= !drained;
            }
            r = tun.readable() => {
                let mut guard = match r { Ok(g) => g, Err(e) => return Err(DriverError::TunRead(e)) };
                let (now, now_unix) = (Instant::now(), unix_now());
                let mut reads = 0;
                let mut drained = false;
                while reads < TUN_BATCH && out.transmits.len() < TUN_FLUSH_AT {
                    match guard.try_io(|inner| inner.get_ref().read(&mut tunbuf)) {
                        Ok(Ok(0)) => {
                            drained = true;
                            break;
                        }
                        Ok(Ok(n)) if vnet => {
                            reads += 1;
                            work += 1;
                            if trace {
                                rw.push('r');
                            }
                            let frame = &tunbuf[..n];
                            let res = crate::offload::VnetHdr::parse(frame).and_then(|h| {
                                crate::offload::segment(&frame[crate::offload::VNET_HDR_LEN..], &h, &mut segbuf, |p| {
                                    engine.on_tun_packet(p, now, now_unix, &mut out);
                                })
                            });
                            match res {
                                Ok(1) => {}
                                Ok(_) => io.stats.tun_split_reads += 1,
                                Err(_) => io.stats.tun_malformed += 1,
                            }
                        }
                        Ok(Ok(n)) => {
                            reads += 1;
                            work += 1;
                            if trace {
                                rw.push('r');
                            }
                            engine.on_tun_packet(&tunbuf[..n], now, now_unix, &mut out);
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Ok(Err(e)) => return Err(DriverError::TunRead(e)),
                        Err(_would_block) => {
                            drained = true;
                            break;
                        }
                    }
                }
                backlog |= !drained;
            }
            acc = async { match &listener { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                match acc {
                    Ok((stream, addr)) => {
                        let id = next_conn;
                        next_conn += 1;
                        let (tx, rx) = mpsc::channel(TCP_QUEUE);
                        io.conns.insert(id, TcpConn { tx });
                        spawn_tcp(id, addr, stream, rx, frame_tx.clone());
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
                        out.log(crate::proto::io::LogClass::Error, format!("TCP accept: {e}"));
                    }
                    Err(e) => return Err(DriverError::Accept(e)),
                }
            }
            frame = frame_rx.recv() => {
                if let Some((conn, addr, data)) = frame {
                    let now = Instant::now();
                    match data {
                        Some(pkt) => engine.on_datagram(PeerAddr::Tcp { conn, addr }, &pkt, now, unix_now(), &mut out),
                        None => {
                            io.conns.remove(&conn);
                            engine.on_tcp_closed(conn, now, unix_now(), &mut out);
                        }
                    }
                }
            }
            () = &mut sleep, if armed.is_some() => {
                engine.on_timeout(Instant::now(), unix_now(), &mut out);
            }
        }
        if trace {
            note_writes(&out, &mut rw);
        }
        io.flush(&mut out, &mut on_event).await;
        // in records well below the log channel's message limit (the characters are ASCII)
        while !rw.is_empty() {
            let rest = rw.split_off(rw.len().min(4096));
            on_event(EngineEvent::Log {
                class: crate::proto::io::LogClass::PacketTrace,
                line: std::mem::replace(&mut rw, rest),
            });
        }
        if work >= COALESCE_MIN_PACKETS && !backlog && !coalesce.is_zero() {
            // INVARIANT: after the flush, so the hold delays only new input, never what this turn
            // produced; and never while a batch limit left input queued (a saturated server goes
            // straight on). A blocking sleep on purpose: the runtime would otherwise wake on the next
            // packet; its other tasks (IPC, TCP framing) wait at most `coalesce` (≤ 1 ms).
            std::thread::sleep(coalesce);
        }
    }
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

/// The descriptors and state a flush writes to.
struct Io<'a> {
    udp: Option<&'a AsyncFd<std::net::UdpSocket>>,
    tun: &'a AsyncFd<File>,
    /// the TUN device carries virtio-net headers
    vnet: bool,
    tx: &'a mut SendBatch,
    conns: &'a mut HashMap<u64, TcpConn>,
    stats: &'a mut DriverStats,
}

impl Io<'_> {
    /// Writes everything the engine queued: datagrams (runs of UDP transmits with `sendmmsg`), TCP
    /// frames, TUN packets; then passes the events on. Every packet buffer goes back to the pool.
    async fn flush(&mut self, out: &mut Outbox, on_event: &mut impl FnMut(EngineEvent)) {
        if !out.transmits.is_empty() {
            let mut ts = std::mem::take(&mut out.transmits);
            let mut i = 0;
            while i < ts.len() {
                match ts[i].to {
                    PeerAddr::Udp(_) => {
                        let run = ts[i..]
                            .iter()
                            .take_while(|t| matches!(t.to, PeerAddr::Udp(_)))
                            .count();
                        self.send_udp(&ts[i..i + run], out).await;
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
                out.recycle(t.data.into_buffer());
            }
            // keep the (empty) vector's capacity; nothing was queued meanwhile (no engine call here)
            ts.append(&mut out.transmits);
            out.transmits = ts;
        }
        if !out.tun.is_empty() {
            let mut pkts = std::mem::take(&mut out.tun);
            if self.vnet {
                self.write_tun_vnet(&mut pkts);
            } else {
                for pkt in &pkts {
                    // A full device queue drops the packet (as a router would), never blocks the loop.
                    match self.tun.get_ref().write(pkt) {
                        Ok(n) if n == pkt.len() => {}
                        _ => self.stats.tun_drops += 1,
                    }
                }
            }
            for pkt in pkts.drain(..) {
                out.recycle(pkt.into_buffer());
            }
            pkts.append(&mut out.tun);
            out.tun = pkts;
        }
        for ev in out.events.drain(..) {
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
    fn write_tun_vnet(&mut self, pkts: &mut [crate::proto::io::PacketBuf]) {
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
            match self.tun.get_ref().write_vectored(&iov[..count + 1]) {
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
    async fn send_udp(&mut self, run: &[Transmit], out: &mut Outbox) {
        let Some(u) = self.udp else {
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
            let tx = &mut *self.tx;
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
                        out.log(
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
