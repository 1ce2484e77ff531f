//! The event loop: many [`Session`]s from one thread, one non-blocking connected UDP socket each
//! (a distinct source port = a distinct client to the server), `poll(2)` for readiness and the
//! sessions' own deadlines (retransmissions from `reliable.rs`, PUSH_REQUEST, EXIT wait, end of the
//! hold, keepalive) for timers.
//!
//! Data load (`--hold` with `--data-pps`): every turn of the loop asks the [`Pacer`] how many inner
//! packets are due and hands them round-robin to the sessions that are held, each sealed under that
//! session's data key and sent from its own socket; the loop then sleeps until the next packet is due
//! (in whole milliseconds, so the packets go out in batches of about a millisecond's worth). A send
//! that finds the socket buffer full is counted as dropped, never waited for.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{getrusage, UsageWho};

use crate::cli::Args;
use crate::load::{ipv4_udp_packet, Pacer};
use crate::session::{ExitKind, Phase, Profile, Session, SEED_LEN};

/// Errors that stop the whole run (a single session's trouble is counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `poll(2)` failed.
    #[error("poll: {0}")]
    Poll(#[source] nix::Error),
    /// `getrusage(2)` failed.
    #[error("getrusage: {0}")]
    Rusage(#[source] nix::Error),
    /// The system random generator failed.
    #[error("random bytes: {0}")]
    Random(getrandom::Error),
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Sessions started.
    pub started: u64,
    /// Handshakes that reached PUSH_REPLY.
    pub completed: u64,
    /// Sessions that did not, by reason.
    pub failures: BTreeMap<String, u64>,
    /// The first error text seen per failure reason.
    pub failure_examples: BTreeMap<String, String>,
    /// Seconds from the first packet sent to the last PUSH_REPLY received.
    pub wall_s: f64,
    /// Seconds of the whole loop, including the exits after the last completion.
    pub total_wall_s: f64,
    /// Handshake latencies (first packet → PUSH_REPLY), seconds, sorted.
    pub latencies: Vec<f64>,
    /// CPU seconds (user + system) of this process during the loop.
    pub cpu_s: f64,
    /// Exits: EXIT ACKed, EXIT not ACKed in time (or run ended), OCC_EXIT sent.
    pub exit_acked: u64,
    /// See `exit_acked`.
    pub exit_unacked: u64,
    /// See `exit_acked`.
    pub occ_exit: u64,
    /// Errors after completion (the handshake still counts as completed).
    pub errors_after_completion: u64,
    /// Datagrams sent / received / dropped, control retransmissions, PUSH_REQUESTs, ICMP refusals.
    pub sent: u64,
    /// See `sent`.
    pub received: u64,
    /// See `sent`.
    pub dropped: u64,
    /// See `sent`.
    pub retransmits: u64,
    /// See `sent`.
    pub push_requests: u64,
    /// See `sent`.
    pub refused: u64,
    /// Sessions that were held (`--hold`).
    pub held: u64,
    /// Held sessions whose hold ran its whole length.
    pub held_fully: u64,
    /// Held sessions that could not send data: no IPv4 `ifconfig` pushed.
    pub held_without_ipv4: u64,
    /// Inner packets the pacer handed out (sent, dropped or failed).
    pub data_attempted: u64,
    /// Inner packets sent (accepted by the socket).
    pub data_sent: u64,
    /// Inner packets dropped at the socket (buffer full: EAGAIN/ENOBUFS, or an ICMP refusal).
    pub data_dropped: u64,
    /// Inner packets that failed to send for another reason.
    pub data_send_errors: u64,
    /// Inner packets the pacer skipped because a turn came too late (the generator fell behind).
    pub data_skipped: u64,
    /// Seconds during which at least one session was held (the pacer ran).
    pub data_active_s: f64,
}

impl Report {
    fn fail(&mut self, reason: &str, example: String) {
        *self.failures.entry(reason.to_string()).or_insert(0) += 1;
        self.failure_examples
            .entry(reason.to_string())
            .or_insert(example);
    }

    /// Sessions that failed.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Completed handshakes per second of `wall_s`.
    pub fn per_second(&self) -> Option<f64> {
        (self.completed > 0 && self.wall_s > 0.0).then(|| self.completed as f64 / self.wall_s)
    }

    /// Inner packets sent per second of `data_active_s`.
    pub fn data_send_rate(&self) -> Option<f64> {
        (self.data_active_s > 0.0).then(|| self.data_sent as f64 / self.data_active_s)
    }

    /// Latency quantile `q` in 0..=1 (nearest rank), seconds.
    pub fn latency(&self, q: f64) -> Option<f64> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies.get(rank - 1).copied()
    }

    /// The JSON line printed at the end.
    pub fn to_json(&self, args: &Args) -> serde_json::Value {
        let ms = |s: Option<f64>| s.map(|v| v * 1e3);
        serde_json::json!({
            "server": args.server.to_string(),
            "count": args.count,
            "concurrency": args.concurrency,
            "started": self.started,
            "completed": self.completed,
            "failed": self.failed(),
            "failures": self.failures,
            "failure_examples": self.failure_examples,
            "wall_s": self.wall_s,
            "total_wall_s": self.total_wall_s,
            "hs_per_s": self.per_second(),
            "latency_median_ms": ms(self.latency(0.5)),
            "latency_p90_ms": ms(self.latency(0.9)),
            "latency_max_ms": ms(self.latencies.last().copied()),
            "gen_cpu_s": self.cpu_s,
            "gen_cpu_ms_per_handshake": (self.completed > 0).then(|| self.cpu_s * 1e3 / self.completed as f64),
            "exit": {"cc_exit_acked": self.exit_acked, "cc_exit_unacked": self.exit_unacked, "occ_exit": self.occ_exit},
            "errors_after_completion": self.errors_after_completion,
            "datagrams": {"sent": self.sent, "received": self.received, "dropped": self.dropped,
                          "control_retransmits": self.retransmits, "push_requests": self.push_requests,
                          "icmp_refused": self.refused},
            "data": {"hold_s": args.hold.as_secs(), "pps_target": args.data_pps,
                     "size": args.data_size, "dst": args.data_dst.map(|d| d.to_string()),
                     "held": self.held, "held_fully": self.held_fully,
                     "held_without_ipv4": self.held_without_ipv4,
                     "attempted": self.data_attempted, "sent": self.data_sent,
                     "dropped_socket": self.data_dropped, "send_errors": self.data_send_errors,
                     "skipped_late": self.data_skipped, "active_s": self.data_active_s,
                     "send_pps": self.data_send_rate()},
        })
    }
}

/// CPU seconds (user + system) of this process so far.
pub fn cpu_seconds() -> Result<f64, RunError> {
    let u = getrusage(UsageWho::RUSAGE_SELF).map_err(RunError::Rusage)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Slot {
    sess: Session,
    sock: UdpSocket,
    started: Instant,
    deadline: Instant,
    recorded: bool,
    refused: bool,
    error: Option<(String, String)>,
    /// Counted as held.
    held: bool,
    /// The inner packet this session sends while held.
    inner: Option<Vec<u8>>,
}

/// The data load across turns: the pacer, whose turn is next, a packet buffer, the held slots.
struct DataLoad {
    pacer: Pacer,
    cursor: usize,
    buf: Vec<u8>,
    held: Vec<usize>,
}

/// Whether a send error means "socket buffer full" (the datagram is dropped, the loop goes on).
fn buffer_full(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32)
}

/// One turn of the data load: notes newly held sessions (and builds their inner packet), then sends
/// what the pacer says is due, round-robin over the held sessions. Pauses the pacer while none is held.
fn data_turn(
    slots: &mut [Slot],
    load: &mut DataLoad,
    args: &Args,
    now: Instant,
    report: &mut Report,
) {
    load.held.clear();
    for (i, slot) in slots.iter_mut().enumerate() {
        if slot.error.is_some() || slot.sess.phase() != Phase::Held {
            continue;
        }
        if !slot.held {
            slot.held = true;
            report.held += 1;
            if let Some(dst) = args.data_dst {
                match slot.sess.inner_source() {
                    None => report.held_without_ipv4 += 1,
                    Some(src) => {
                        let port = slot.sock.local_addr().map_or(0, |a| a.port());
                        match ipv4_udp_packet(src, port, dst, args.data_size) {
                            Ok(p) => slot.inner = Some(p),
                            Err(e) => {
                                slot.error = Some(("data_setup".into(), e.to_string()));
                                continue;
                            }
                        }
                    }
                }
            }
        }
        if slot.inner.is_some() {
            load.held.push(i);
        }
    }
    if load.held.is_empty() {
        load.pacer.pause(now);
        return;
    }
    for _ in 0..load.pacer.take(now) {
        load.cursor = (load.cursor + 1) % load.held.len();
        let Some(slot) = slots.get_mut(load.held[load.cursor]) else {
            continue;
        };
        let Some(inner) = slot.inner.as_deref() else {
            continue;
        };
        if slot.error.is_some() {
            continue;
        }
        match slot.sess.seal_data(inner, &mut load.buf, now) {
            Ok(Some(r)) => match slot.sock.send(&load.buf[r]) {
                Ok(_) => report.data_sent += 1,
                Err(e) if buffer_full(&e) => report.data_dropped += 1,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    slot.refused = true;
                    report.refused += 1;
                    report.data_dropped += 1;
                }
                Err(_) => report.data_send_errors += 1,
            },
            Ok(None) => {}
            Err(e) => slot.error = Some((e.reason().into(), e.to_string())),
        }
    }
}

/// Hands out source ports P, P+1, ... (wrapping to P), so that a port is not reused within a run:
/// a reused address would reach a server instance that still lingers after the previous EXIT.
struct Ports {
    base: u16,
    next: u16,
}

impl Ports {
    fn bind(&mut self, ip: IpAddr) -> std::io::Result<UdpSocket> {
        let mut last = None;
        for _ in 0..64 {
            let port = self.next;
            self.next = if self.next == u16::MAX {
                self.base
            } else {
                self.next + 1
            };
            match UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::from(ErrorKind::AddrInUse)))
    }
}

fn open_socket(ports: &mut Ports, args: &Args) -> std::io::Result<UdpSocket> {
    let ip = args.bind.unwrap_or(match args.server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let sock = ports.bind(ip)?;
    sock.connect(args.server)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Sends what the session has to send. A full socket buffer drops the datagram (the reliability
/// layer resends it), an ICMP refusal is noted; other errors end the session.
fn flush(slot: &mut Slot, out: &mut Vec<u8>, now: Instant, unix: u64, report: &mut Report) {
    if slot.error.is_some() {
        return;
    }
    loop {
        match slot.sess.poll_transmit(now, unix, out) {
            Ok(true) => match slot.sock.send(out) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    slot.refused = true;
                    report.refused += 1;
                }
                Err(e) => {
                    slot.error = Some(("socket_send".into(), e.to_string()));
                    return;
                }
            },
            Ok(false) => return,
            Err(e) => {
                slot.error = Some((e.reason().into(), e.to_string()));
                return;
            }
        }
    }
}

/// Records what is new about a slot; returns false when it is finished and can be dropped.
fn settle(slot: &mut Slot, report: &mut Report, last_completion: &mut Option<Instant>) -> bool {
    if !slot.recorded {
        if let Some(t) = slot.sess.completed_at() {
            slot.recorded = true;
            report.completed += 1;
            report
                .latencies
                .push(t.saturating_duration_since(slot.started).as_secs_f64());
            *last_completion = Some(last_completion.map_or(t, |l| l.max(t)));
        }
    }
    let finished = slot.error.is_some() || slot.sess.phase() == Phase::Done;
    if !finished {
        return true;
    }
    if let Some((reason, text)) = slot.error.take() {
        if slot.recorded {
            report.errors_after_completion += 1;
        } else {
            report.fail(&reason, text);
        }
    }
    add_exit_and_stats(slot, report);
    false
}

fn add_exit_and_stats(slot: &Slot, report: &mut Report) {
    match slot.sess.exit() {
        Some(ExitKind::CcExitAcked) => report.exit_acked += 1,
        Some(ExitKind::CcExitUnacked) => report.exit_unacked += 1,
        Some(ExitKind::OccExit) => report.occ_exit += 1,
        None => {}
    }
    if slot.sess.held_fully() {
        report.held_fully += 1;
    }
    let st = slot.sess.stats();
    report.sent += st.sent;
    report.received += st.received;
    report.dropped += st.dropped;
    report.retransmits += st.retransmits;
    report.push_requests += st.push_requests;
}

fn timeout_reason(slot: &Slot) -> String {
    if slot.refused && slot.sess.phase() == Phase::Reset {
        "connection_refused".into()
    } else {
        format!("timeout_{}", slot.sess.phase().name())
    }
}

/// Runs `args.count` handshakes, `args.concurrency` at a time.
pub fn run(args: &Args, profile: &Arc<Profile>) -> Result<Report, RunError> {
    let mut report = Report::default();
    let mut ports = Ports {
        base: args.port_base,
        next: args.port_base,
    };
    let t0 = Instant::now();
    let end = t0 + args.timeout;
    let cpu0 = cpu_seconds()?;
    let mut slots: Vec<Slot> = Vec::with_capacity(args.concurrency * 2);
    let mut first_send: Option<Instant> = None;
    let mut last_completion: Option<Instant> = None;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(2048);
    let mut ready = Vec::with_capacity(args.concurrency * 2);
    let mut load = DataLoad {
        pacer: Pacer::new(args.data_pps),
        cursor: 0,
        buf: Vec::with_capacity(2048),
        held: Vec::new(),
    };
    loop {
        let now = Instant::now();
        let unix = unix_now();
        if now >= end {
            for mut slot in slots.drain(..) {
                if slot.sess.completed_at().is_none() {
                    let reason = timeout_reason(&slot);
                    slot.error = Some((reason, "the run's --timeout passed".into()));
                    settle(&mut slot, &mut report, &mut last_completion);
                } else if settle(&mut slot, &mut report, &mut last_completion) {
                    // completed, its EXIT still unanswered
                    report.exit_unacked += 1;
                    add_exit_and_stats(&slot, &mut report);
                }
            }
            break;
        }
        // keep `concurrency` sessions in their handshake (exiting ones do not count)
        let mut handshaking = slots.iter().filter(|s| !s.recorded).count();
        while handshaking < args.concurrency && report.started < args.count {
            report.started += 1;
            handshaking += 1;
            let mut seed = [0u8; SEED_LEN];
            getrandom::fill(&mut seed).map_err(RunError::Random)?;
            let sess = Session::new(profile.clone(), &seed, now);
            let sock = open_socket(&mut ports, args);
            let (mut sess, sock) = match (sess, sock) {
                (Ok(s), Ok(k)) => (s, k),
                (Err(e), _) => {
                    report.fail(e.reason(), e.to_string());
                    continue;
                }
                (_, Err(e)) => {
                    report.fail("socket_setup", e.to_string());
                    continue;
                }
            };
            if let Err(e) = sess.start(now) {
                report.fail(e.reason(), e.to_string());
                continue;
            }
            first_send.get_or_insert(now);
            let mut slot = Slot {
                sess,
                sock,
                started: now,
                deadline: now + args.session_timeout,
                recorded: false,
                refused: false,
                error: None,
                held: false,
                inner: None,
            };
            flush(&mut slot, &mut out, now, unix, &mut report);
            slots.push(slot);
        }
        // timers
        for slot in &mut slots {
            if slot.error.is_some() {
                continue;
            }
            if !slot.recorded && now >= slot.deadline {
                slot.error = Some((timeout_reason(slot), "--session-timeout passed".into()));
                continue;
            }
            if slot.sess.next_deadline().is_some_and(|t| t <= now) {
                if let Err(e) = slot.sess.on_timeout(now) {
                    slot.error = Some((e.reason().into(), e.to_string()));
                    continue;
                }
                flush(slot, &mut out, now, unix, &mut report);
            }
        }
        data_turn(&mut slots, &mut load, args, Instant::now(), &mut report);
        slots.retain_mut(|s| settle(s, &mut report, &mut last_completion));
        if slots.is_empty() && report.started >= args.count {
            break;
        }
        // wait for a datagram or the next deadline
        let wake = slots
            .iter()
            .flat_map(|s| [s.sess.next_deadline(), (!s.recorded).then_some(s.deadline)])
            .flatten()
            .chain([end])
            .chain(
                (!load.held.is_empty())
                    .then(|| load.pacer.next_due())
                    .flatten(),
            )
            .min()
            .unwrap_or(end);
        let wait = wake.saturating_duration_since(Instant::now());
        // round up to whole milliseconds so a deadline is not polled for in a busy loop
        let wait_ms = wait.as_micros().div_ceil(1000).min(60_000) as u16;
        ready.clear();
        {
            let mut fds: Vec<PollFd<'_>> = slots
                .iter()
                .map(|s| PollFd::new(s.sock.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(wait_ms)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(RunError::Poll(e)),
            }
            for (i, fd) in fds.iter().enumerate() {
                if fd.revents().is_some_and(|r| !r.is_empty()) {
                    ready.push(i);
                }
            }
        }
        let now = Instant::now();
        let unix = unix_now();
        for &i in &ready {
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            loop {
                match slot.sock.recv(&mut buf) {
                    Ok(n) => {
                        if let Err(e) = slot.sess.on_datagram(&buf[..n], now, unix) {
                            slot.error = Some((e.reason().into(), e.to_string()));
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        slot.refused = true;
                        report.refused += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        slot.error = Some(("socket_recv".into(), e.to_string()));
                        break;
                    }
                }
            }
            flush(slot, &mut out, now, unix, &mut report);
        }
        slots.retain_mut(|s| settle(s, &mut report, &mut last_completion));
    }
    let done = Instant::now();
    load.pacer.pause(done);
    report.data_active_s = load.pacer.active(done).as_secs_f64();
    report.data_skipped = load.pacer.skipped();
    report.data_attempted = load.pacer.taken();
    report.cpu_s = cpu_seconds()? - cpu0;
    report.total_wall_s = t0.elapsed().as_secs_f64();
    report.wall_s = match (first_send, last_completion) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    report.latencies.sort_by(f64::total_cmp);
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_nearest_rank() {
        let r = Report {
            latencies: (1..=10).map(f64::from).collect(),
            completed: 10,
            wall_s: 2.0,
            ..Report::default()
        };
        assert_eq!(r.latency(0.5), Some(5.0));
        assert_eq!(r.latency(0.9), Some(9.0));
        assert_eq!(r.latency(1.0), Some(10.0));
        assert_eq!(r.per_second(), Some(5.0));
        assert_eq!(Report::default().latency(0.5), None);
        assert_eq!(Report::default().per_second(), None);
    }

    #[test]
    fn ports_are_handed_out_in_order_and_wrap() {
        let mut p = Ports {
            base: 65534,
            next: 65534,
        };
        let a = p.bind(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let b = p.bind(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // the ports may be taken on a busy machine; the counter still moves on and wraps
        if a.is_ok() && b.is_ok() {
            assert_eq!(p.next, 65534);
        }
    }
}
