//! [`AsyncChannel<Tx, Rx>`]: the tokio form of a [`Channel`], for use once the child's runtime
//! exists (and in the parent's event loop).
//!
//! API: [`AsyncChannel::send`] (`&self`) and [`AsyncChannel::recv`] (`&mut self`, it owns the
//! receive buffer); [`Channel::into_async`] / [`AsyncChannel::into_blocking`] convert between the
//! forms without closing the socket. The wire behaviour and every check are those of the blocking
//! channel (shared code in [`crate::channel`]).
//!
//! Cancellation: dropping a `send` or `recv` future loses nothing — a packet is either sent or
//! received whole inside one non-blocking system call, never split across polls.

use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;

use crate::channel::{
    ensure_buffer, finish_recv, prepare, recv_error, send_error, set_nonblocking, ChannelError,
};
use crate::message::{Message, Received};
use crate::sys::{self, SysError};
use crate::Channel;

/// Both ends of a new async channel: this side's (`Tx` out, `Rx` in) and the peer's.
pub type AsyncChannelPair<Tx, Rx> = (AsyncChannel<Tx, Rx>, AsyncChannel<Rx, Tx>);

/// One end of a typed IPC channel, registered with the tokio reactor.
pub struct AsyncChannel<Tx, Rx> {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    _direction: PhantomData<fn(Tx) -> Rx>,
}

impl<Tx: Message, Rx: Message> AsyncChannel<Tx, Rx> {
    pub(crate) fn from_blocking_parts(fd: OwnedFd, buf: Vec<u8>) -> Result<Self, ChannelError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ChannelError::NoRuntime);
        }
        set_nonblocking(&fd, true)?;
        let fd = sys::register_async(fd).map_err(ChannelError::Register)?;
        Ok(AsyncChannel {
            fd,
            buf,
            _direction: PhantomData,
        })
    }

    /// Create a connected pair of async ends (see [`Channel::pair`]). Must be called inside a
    /// tokio runtime.
    pub fn pair() -> Result<AsyncChannelPair<Tx, Rx>, ChannelError> {
        let (a, b) = Channel::<Tx, Rx>::pair()?;
        Ok((a.into_async()?, b.into_async()?))
    }

    /// Send `msg` with exactly `msg.fd_count()` descriptors; waits while the peer's queue is full.
    pub async fn send(&self, msg: &Tx, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let packet = prepare(msg, fds)?;
        loop {
            let mut guard = self.fd.writable().await.map_err(ChannelError::Poll)?;
            match sys::send_packet(guard.get_inner().as_fd(), &packet, fds, true) {
                Ok(()) => return Ok(()),
                Err(SysError::Send(Errno::EAGAIN)) => guard.clear_ready(),
                Err(SysError::Send(Errno::EINTR)) => {}
                Err(e) => return Err(send_error(msg.name(), e)),
            }
        }
    }

    /// Receive one message and its descriptors.
    pub async fn recv(&mut self) -> Result<Received<Rx>, ChannelError> {
        ensure_buffer(&mut self.buf);
        let raw = loop {
            let mut guard = self.fd.readable().await.map_err(ChannelError::Poll)?;
            match sys::recv_packet(guard.get_inner().as_fd(), &mut self.buf, true) {
                Ok(raw) => break raw,
                Err(SysError::Recv(Errno::EAGAIN)) => guard.clear_ready(),
                Err(SysError::Recv(Errno::EINTR)) => {}
                Err(e) => return Err(recv_error(e)),
            }
        };
        finish_recv(raw, &self.buf)
    }

    /// Send `request` and wait for the next message.
    pub async fn call(
        &mut self,
        request: &Tx,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Received<Rx>, ChannelError> {
        self.send(request, fds).await?;
        self.recv().await
    }

    /// Deregister from the reactor and return to the blocking form.
    pub fn into_blocking(self) -> Result<Channel<Tx, Rx>, ChannelError> {
        Channel::from_parts(self.fd.into_inner(), self.buf)
    }
}

impl<Tx, Rx> std::fmt::Debug for AsyncChannel<Tx, Rx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // not derived: the receive buffer is 256 KiB
        f.debug_struct("AsyncChannel")
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.as_fd()))
            .field("sends", &std::any::type_name::<Tx>())
            .field("receives", &std::any::type_name::<Rx>())
            .finish()
    }
}

impl<Tx, Rx> AsFd for AsyncChannel<Tx, Rx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}
