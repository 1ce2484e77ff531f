//! The worker's I/O driver: runs the sans-IO engine over the file descriptors the parent handed over.
//!
//! It owns the UDP socket or TCP listener, the TUN device and the timers, and does nothing but move bytes
//! between them and the engine ([`crate::proto::server::Server`]). Every readiness event is drained fully.
//! Events from the engine (log lines, client connects/disconnects) are passed to `on_event`, which the
//! worker's main forwards to the parent over IPC.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::proto::io::{EngineEvent, Outbox, PeerAddr};
use crate::proto::server::Server;

/// Largest OpenVPN packet accepted from the network (TCP frames are refused above this).
pub const MAX_PACKET: usize = 2048 + 1600;
/// Largest inner packet read from the TUN device.
const TUN_BUF: usize = 65536;
/// Queue depth towards one TCP connection before it is considered stalled and dropped.
const TCP_QUEUE: usize = 1024;

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

/// Runs the engine until a shutdown command arrives or a fatal I/O error happens.
pub async fn run(
    mut engine: Server,
    transport: Transport,
    tun: OwnedFd,
    mut commands: mpsc::Receiver<DriverCommand>,
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
    let (udp, listener) = match transport {
        Transport::Udp(fd) => {
            let std_sock = std::net::UdpSocket::from(fd);
            std_sock
                .set_nonblocking(true)
                .map_err(|source| DriverError::Register {
                    what: "UDP socket",
                    source,
                })?;
            let s = UdpSocket::from_std(std_sock).map_err(|source| DriverError::Register {
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
    let mut buf = vec![0u8; MAX_PACKET];
    let mut tunbuf = vec![0u8; TUN_BUF];
    let mut out = Outbox::default();

    loop {
        let deadline = engine.next_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            cmd = commands.recv() => {
                match cmd {
                    None | Some(DriverCommand::Shutdown) => {
                        engine.shutdown(Instant::now(), unix_now(), &mut out);
                        flush(&mut out, udp.as_ref(), &tun, &mut conns, &mut stats, &mut on_event).await;
                        return Ok(stats);
                    }
                    Some(DriverCommand::Engine(f)) => f(&mut engine, Instant::now(), &mut out),
                }
            }
            r = async { match &udp { Some(u) => u.readable().await, None => std::future::pending().await } } => {
                r.map_err(DriverError::Udp)?;
                if let Some(u) = &udp {
                    // drain the socket fully
                    loop {
                        match u.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                let now = Instant::now();
                                engine.on_datagram(PeerAddr::Udp(from), &buf[..n], now, unix_now(), &mut out);
                                if out.transmits.len() >= 64 {
                                    flush(&mut out, udp.as_ref(), &tun, &mut conns, &mut stats, &mut on_event).await;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            // ICMP errors surface as ECONNREFUSED on some kernels; never fatal for a server
                            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted) => continue,
                            Err(e) => return Err(DriverError::Udp(e)),
                        }
                    }
                }
            }
            r = tun.readable() => {
                let mut guard = match r { Ok(g) => g, Err(e) => return Err(DriverError::TunRead(e)) };
                loop {
                    match guard.try_io(|inner| inner.get_ref().read(&mut tunbuf)) {
                        Ok(Ok(0)) => break,
                        Ok(Ok(n)) => {
                            engine.on_tun_packet(&tunbuf[..n], Instant::now(), unix_now(), &mut out);
                            if out.transmits.len() >= 64 {
                                flush(&mut out, udp.as_ref(), &tun, &mut conns, &mut stats, &mut on_event).await;
                            }
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Ok(Err(e)) => return Err(DriverError::TunRead(e)),
                        Err(_would_block) => break,
                    }
                }
            }
            acc = async { match &listener { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                match acc {
                    Ok((stream, addr)) => {
                        let id = next_conn;
                        next_conn += 1;
                        let (tx, rx) = mpsc::channel(TCP_QUEUE);
                        conns.insert(id, TcpConn { tx });
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
                            conns.remove(&conn);
                            engine.on_tcp_closed(conn, now, unix_now(), &mut out);
                        }
                    }
                }
            }
            () = sleep => {
                engine.on_timeout(Instant::now(), unix_now(), &mut out);
            }
        }
        flush(
            &mut out,
            udp.as_ref(),
            &tun,
            &mut conns,
            &mut stats,
            &mut on_event,
        )
        .await;
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    let _ = fd.as_raw_fd();
    Ok(())
}

async fn flush(
    out: &mut Outbox,
    udp: Option<&UdpSocket>,
    tun: &AsyncFd<File>,
    conns: &mut HashMap<u64, TcpConn>,
    stats: &mut DriverStats,
    on_event: &mut impl FnMut(EngineEvent),
) {
    for t in out.transmits.drain(..) {
        match t.to {
            PeerAddr::Udp(addr) => {
                if let Some(u) = udp {
                    loop {
                        match u.try_send_to(&t.data, addr) {
                            Ok(_) => break,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                if u.writable().await.is_err() {
                                    stats.udp_send_errors += 1;
                                    break;
                                }
                            }
                            Err(_) => {
                                stats.udp_send_errors += 1;
                                break;
                            }
                        }
                    }
                }
            }
            PeerAddr::Tcp { conn, .. } => {
                let stalled = match conns.get(&conn) {
                    Some(c) => c.tx.try_send(t.data).is_err(),
                    None => false,
                };
                if stalled {
                    stats.tcp_stalled += 1;
                    conns.remove(&conn);
                }
            }
        }
    }
    for pkt in out.tun.drain(..) {
        // A full device queue drops the packet (as a router would), never blocks the loop.
        match tun.get_ref().write(&pkt) {
            Ok(n) if n == pkt.len() => {}
            _ => stats.tun_drops += 1,
        }
    }
    for ev in out.events.drain(..) {
        if let EngineEvent::CloseTcp { conn } = ev {
            conns.remove(&conn);
            continue;
        }
        on_event(ev);
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
