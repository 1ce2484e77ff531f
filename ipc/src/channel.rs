//! [`Channel<Tx, Rx>`]: a direction-typed, blocking message channel over one end of an
//! `AF_UNIX`/`SOCK_SEQPACKET` socket pair, with descriptor passing.
//!
//! API:
//! - [`Channel::pair`] creates both ends, typed `Channel<A, B>` and `Channel<B, A>`, so the
//!   compiler rejects sending a message in the wrong direction;
//! - [`Channel::send`] / [`Channel::recv`] / [`Channel::call`] (blocking);
//! - [`Channel::from_inherited_fd`] (a child's end at a fixed fd number after `exec`, checked to
//!   be a unix seqpacket socket) and [`Channel::from_owned_fd`] / [`Channel::into_owned_fd`];
//! - [`Channel::set_recv_timeout`] for request/response use (the signer);
//! - [`Channel::into_async`] turns the same end into an
//!   [`AsyncChannel`] once a tokio runtime exists.
//!
//! ```
//! use bulwark_ipc::msg::{ParentToWorker, WorkerToParent};
//! use bulwark_ipc::Channel;
//!
//! let (parent, mut worker) = Channel::<ParentToWorker, WorkerToParent>::pair()?;
//! parent.send(&ParentToWorker::Shutdown, &[])?;
//! assert_eq!(worker.recv()?.msg, ParentToWorker::Shutdown);
//! worker.send(&WorkerToParent::Ready, &[])?;
//! # Ok::<(), bulwark_ipc::ChannelError>(())
//! ```
//!
//! Sending in the wrong direction does not compile:
//!
//! ```compile_fail
//! use bulwark_ipc::msg::{ParentToWorker, WorkerToParent};
//! use bulwark_ipc::Channel;
//!
//! let (parent, _worker) = Channel::<ParentToWorker, WorkerToParent>::pair()?;
//! parent.send(&WorkerToParent::Ready, &[])?; // the parent's end only sends ParentToWorker
//! # Ok::<(), bulwark_ipc::ChannelError>(())
//! ```
//!
//! Invariants: one packet is one message; a message is sent only if it passes its own
//! `validate()` and comes with exactly `fd_count()` descriptors; a received message reaches the
//! caller only after every check in [`crate::frame`] — otherwise the caller gets a
//! [`ChannelError::Protocol`] and every descriptor that arrived with the packet is already closed.

use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{
    getsockopt, setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType,
};
use nix::sys::time::TimeVal;

use crate::codec::{self, CodecError};
use crate::fdcheck::{self, FdCheckError};
use crate::frame::{self, ProtocolError};
use crate::message::{Message, Received};
use crate::sys::{self, RawPacket, SysError};
use crate::validate::ValidationError;
use crate::{AsyncChannel, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_SIZE};

/// `SO_SNDBUF` requested for every channel end (the kernel doubles it, capped by
/// `net.core.wmem_max`); a `SOCK_SEQPACKET` message must fit in the send buffer.
const SNDBUF_REQUEST: usize = 2 * MAX_MESSAGE_SIZE;

/// Headroom the kernel keeps in the send buffer of a unix datagram socket.
const SNDBUF_OVERHEAD: usize = 32;

/// A channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// `socketpair(2)` failed.
    #[error("creating IPC socket pair")]
    SocketPair(#[source] Errno),
    /// A socket option could not be set or read.
    #[error("socket option {option} on IPC socket")]
    SockOpt {
        /// The option.
        option: &'static str,
        /// The error.
        #[source]
        source: Errno,
    },
    /// The kernel's send buffer is too small for a maximum-size message (raise
    /// `net.core.wmem_max`).
    #[error("IPC send buffer is {got} bytes, a {MAX_MESSAGE_SIZE}-byte message needs {need}; raise net.core.wmem_max")]
    SendBufferTooSmall {
        /// The buffer size the kernel granted.
        got: usize,
        /// The size needed.
        need: usize,
    },
    /// `fcntl(2)` on the channel descriptor failed.
    #[error("fcntl {op} on IPC socket")]
    Fcntl {
        /// The operation.
        op: &'static str,
        /// The error.
        #[source]
        source: Errno,
    },
    /// The descriptor is not a unix seqpacket socket.
    #[error("fd {fd} is not an IPC channel end")]
    NotAChannel {
        /// The descriptor number.
        fd: RawFd,
        /// What is wrong with it.
        #[source]
        source: FdCheckError,
    },
    /// An inherited descriptor could not be claimed.
    #[error("claiming inherited IPC fd")]
    Inherited(#[source] SysError),
    /// An outgoing message failed its own validation (a bug on the sending side).
    #[error("refusing to send invalid {name}")]
    InvalidOutgoing {
        /// The message.
        name: &'static str,
        /// Why.
        #[source]
        source: ValidationError,
    },
    /// An outgoing message was given a different number of descriptors than it declares.
    #[error("{name} declares {declared} fds but {given} were given")]
    OutgoingFdCount {
        /// The message.
        name: &'static str,
        /// What it declares.
        declared: usize,
        /// What the caller passed.
        given: usize,
    },
    /// An outgoing message could not be encoded (e.g. larger than the maximum message size).
    #[error("encoding {name}")]
    Encode {
        /// The message.
        name: &'static str,
        /// The codec error.
        #[source]
        source: CodecError,
    },
    /// `sendmsg` failed.
    #[error("sending {name}")]
    Send {
        /// The message.
        name: &'static str,
        /// The error.
        #[source]
        source: SysError,
    },
    /// `recvmsg` failed.
    #[error("receiving")]
    Recv(#[source] SysError),
    /// The peer closed its end (end of file on receive, `EPIPE`/`ECONNRESET` on send).
    #[error("IPC peer closed the channel")]
    PeerClosed,
    /// No message arrived within the receive timeout.
    #[error("IPC receive timed out")]
    TimedOut,
    /// The peer sent a packet that violates the protocol.
    #[error("IPC protocol violation")]
    Protocol(#[from] ProtocolError),
    /// [`Channel::into_async`] was called outside a tokio runtime.
    #[error("no tokio runtime to register the IPC socket with")]
    NoRuntime,
    /// Registering the socket with the tokio reactor failed.
    #[error("registering IPC socket with the tokio reactor")]
    Register(#[source] std::io::Error),
    /// Waiting for readiness failed.
    #[error("polling IPC socket")]
    Poll(#[source] std::io::Error),
}

/// Both ends of a new channel: this side's (`Tx` out, `Rx` in) and the peer's.
pub type ChannelPair<Tx, Rx> = (Channel<Tx, Rx>, Channel<Rx, Tx>);

/// One end of a typed IPC channel: sends `Tx`, receives `Rx`. Blocking.
pub struct Channel<Tx, Rx> {
    fd: OwnedFd,
    buf: Vec<u8>,
    _direction: PhantomData<fn(Tx) -> Rx>,
}

impl<Tx: Message, Rx: Message> Channel<Tx, Rx> {
    /// Create a connected pair: this end (`Tx` out, `Rx` in) and the peer's end (the reverse).
    /// Both are close-on-exec; the parent clears that for the child's end when it places it on
    /// its fixed fd number.
    pub fn pair() -> Result<ChannelPair<Tx, Rx>, ChannelError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(ChannelError::SocketPair)?;
        size_send_buffer(&a)?;
        size_send_buffer(&b)?;
        Ok((Channel::wrap(a), Channel::wrap(b)))
    }

    fn wrap(fd: OwnedFd) -> Self {
        Channel {
            fd,
            buf: Vec::new(),
            _direction: PhantomData,
        }
    }

    /// Use an already-owned descriptor as a channel end after checking that it is an `AF_UNIX`
    /// `SOCK_SEQPACKET` socket; it is switched to blocking mode.
    pub fn from_owned_fd(fd: OwnedFd) -> Result<Self, ChannelError> {
        fdcheck::expect_unix_seqpacket(&fd).map_err(|source| ChannelError::NotAChannel {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            source,
        })?;
        set_nonblocking(&fd, false)?;
        Ok(Channel::wrap(fd))
    }

    /// Take the channel end a child inherited at fixed descriptor number `fd` (see
    /// [`crate::layout`]): claims it (at most once per process), marks it close-on-exec, and
    /// checks that it is a unix seqpacket socket.
    pub fn from_inherited_fd(fd: RawFd) -> Result<Self, ChannelError> {
        let owned = sys::claim_inherited_fd(fd).map_err(ChannelError::Inherited)?;
        fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|source| {
            ChannelError::Fcntl {
                op: "F_SETFD",
                source,
            }
        })?;
        Self::from_owned_fd(owned)
    }

    /// Give up the typed wrapper (e.g. to place the child's end on its fixed fd number).
    pub fn into_owned_fd(self) -> OwnedFd {
        self.fd
    }

    /// Bound how long [`recv`](Self::recv) waits (`SO_RCVTIMEO`); `None` waits forever. On
    /// expiry `recv` returns [`ChannelError::TimedOut`].
    pub fn set_recv_timeout(&self, timeout: Option<Duration>) -> Result<(), ChannelError> {
        let tv = match timeout {
            // a zero timeval means "no timeout" to the kernel: round up to 1 µs
            Some(d) => TimeVal::from(libc::timeval {
                tv_sec: d.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_usec: if d.is_zero() {
                    1
                } else {
                    d.subsec_micros().into()
                },
            }),
            None => TimeVal::from(libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            }),
        };
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv).map_err(|source| ChannelError::SockOpt {
            option: "SO_RCVTIMEO",
            source,
        })
    }

    /// Send `msg` with `fds` (exactly `msg.fd_count()` of them, in the order the message
    /// describes). The message is validated first. Blocks while the peer's queue is full.
    pub fn send(&self, msg: &Tx, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let packet = prepare(msg, fds)?;
        loop {
            match sys::send_packet(self.fd.as_fd(), &packet, fds, false) {
                Ok(()) => return Ok(()),
                Err(SysError::Send(Errno::EINTR)) => continue,
                Err(e) => return Err(send_error(msg.name(), e)),
            }
        }
    }

    /// Receive one message and its descriptors. Blocks until a packet arrives, the peer closes
    /// ([`ChannelError::PeerClosed`]) or the receive timeout expires ([`ChannelError::TimedOut`]).
    pub fn recv(&mut self) -> Result<Received<Rx>, ChannelError> {
        ensure_buffer(&mut self.buf);
        let raw = loop {
            match sys::recv_packet(self.fd.as_fd(), &mut self.buf, false) {
                Ok(raw) => break raw,
                Err(SysError::Recv(Errno::EINTR)) => continue,
                Err(SysError::Recv(Errno::EAGAIN)) => return Err(ChannelError::TimedOut),
                Err(e) => return Err(recv_error(e)),
            }
        };
        finish_recv(raw, &self.buf)
    }

    /// Send `request` and wait for the next message (request/response use, e.g. the signer).
    pub fn call(
        &mut self,
        request: &Tx,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Received<Rx>, ChannelError> {
        self.send(request, fds)?;
        self.recv()
    }

    /// Switch to the async form. Must be called inside a tokio runtime.
    pub fn into_async(self) -> Result<AsyncChannel<Tx, Rx>, ChannelError> {
        AsyncChannel::from_blocking_parts(self.fd, self.buf)
    }

    /// Rebuild a blocking channel from an async channel's parts (used by
    /// [`AsyncChannel::into_blocking`]).
    pub(crate) fn from_parts(fd: OwnedFd, buf: Vec<u8>) -> Result<Self, ChannelError> {
        set_nonblocking(&fd, false)?;
        Ok(Channel {
            fd,
            buf,
            _direction: PhantomData,
        })
    }
}

impl<Tx, Rx> std::fmt::Debug for Channel<Tx, Rx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // not derived: the receive buffer is 256 KiB
        f.debug_struct("Channel")
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.as_fd()))
            .field("sends", &std::any::type_name::<Tx>())
            .field("receives", &std::any::type_name::<Rx>())
            .finish()
    }
}

impl<Tx, Rx> AsFd for Channel<Tx, Rx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Request a send buffer large enough for a maximum-size message and check what was granted.
fn size_send_buffer(fd: &OwnedFd) -> Result<(), ChannelError> {
    setsockopt(fd, sockopt::SndBuf, &SNDBUF_REQUEST).map_err(|source| ChannelError::SockOpt {
        option: "SO_SNDBUF",
        source,
    })?;
    let got = getsockopt(fd, sockopt::SndBuf).map_err(|source| ChannelError::SockOpt {
        option: "SO_SNDBUF",
        source,
    })?;
    let need = MAX_MESSAGE_SIZE + SNDBUF_OVERHEAD;
    if got < need {
        return Err(ChannelError::SendBufferTooSmall { got, need });
    }
    Ok(())
}

/// Set or clear `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: &OwnedFd, nonblocking: bool) -> Result<(), ChannelError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|source| ChannelError::Fcntl {
        op: "F_GETFL",
        source,
    })?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, nonblocking);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|source| ChannelError::Fcntl {
        op: "F_SETFL",
        source,
    })?;
    Ok(())
}

/// Check and encode an outgoing message into its packet.
pub(crate) fn prepare<M: Message>(
    msg: &M,
    fds: &[BorrowedFd<'_>],
) -> Result<Vec<u8>, ChannelError> {
    let declared = msg.fd_count();
    if declared != fds.len() || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(ChannelError::OutgoingFdCount {
            name: msg.name(),
            declared,
            given: fds.len(),
        });
    }
    msg.validate()
        .map_err(|source| ChannelError::InvalidOutgoing {
            name: msg.name(),
            source,
        })?;
    let body = codec::encode(msg).map_err(|source| ChannelError::Encode {
        name: msg.name(),
        source,
    })?;
    // fds.len() <= MAX_FDS_PER_MESSAGE (16) checked above
    Ok(frame::build_packet(msg.kind(), fds.len() as u16, &body))
}

/// The receive buffer holds exactly one maximum-size message; bigger packets are reported by
/// the kernel as `MSG_TRUNC` with their real length.
pub(crate) fn ensure_buffer(buf: &mut Vec<u8>) {
    if buf.len() != MAX_MESSAGE_SIZE {
        buf.resize(MAX_MESSAGE_SIZE, 0);
    }
}

/// Map a send failure: a closed peer is [`ChannelError::PeerClosed`].
pub(crate) fn send_error(name: &'static str, e: SysError) -> ChannelError {
    match e {
        SysError::Send(Errno::EPIPE | Errno::ECONNRESET) => ChannelError::PeerClosed,
        source => ChannelError::Send { name, source },
    }
}

/// Map a receive failure: a reset peer is [`ChannelError::PeerClosed`].
pub(crate) fn recv_error(e: SysError) -> ChannelError {
    match e {
        SysError::Recv(Errno::ECONNRESET) => ChannelError::PeerClosed,
        source => ChannelError::Recv(source),
    }
}

/// Turn a received packet into a message (or the right error).
pub(crate) fn finish_recv<Rx: Message>(
    raw: RawPacket,
    buf: &[u8],
) -> Result<Received<Rx>, ChannelError> {
    // A zero-length read without descriptors is end of file on a seqpacket socket (the sender
    // never produces empty packets).
    if raw.len == 0 && raw.fds.is_empty() && !raw.control_truncated {
        return Err(ChannelError::PeerClosed);
    }
    let frame = &buf[..raw.len.min(buf.len())];
    Ok(frame::decode_packet(raw, frame)?)
}
