//! Batched UDP I/O: `recvmmsg(2)` / `sendmmsg(2)` over headers allocated once.
//!
//! - [`RecvBatch`] receives up to [`RecvBatch::capacity`] datagrams with one `recvmmsg` into one
//!   contiguous buffer (a fixed stride per datagram) and exposes them as `(SocketAddr, &[u8])`.
//! - [`SendBatch`] sends up to [`SendBatch::capacity`] datagrams, each to its own address, with one
//!   `sendmmsg`.
//!
//! Invariants: every pointer stored in a `mmsghdr`/`iovec` is rewritten immediately before the
//! system call that uses it and points into memory that outlives that call (the batch's own buffers, or
//! the caller's slices borrowed for the duration of [`SendBatch::send`]); pointers left behind after a
//! call are never dereferenced by Rust code. No call here blocks: the sockets are non-blocking and "would
//! block" comes back as [`io::ErrorKind::WouldBlock`].
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

/// Number of datagrams moved per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers; all-zero bytes are a valid
    // value (null pointers, zero lengths), and it is fully initialised before every use below.
    unsafe { mem::zeroed() }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct of integers; all-zero bytes are a valid value
    // (family AF_UNSPEC).
    unsafe { mem::zeroed() }
}

/// Converts a kernel-filled socket address into a [`SocketAddr`] (`None` for other families or a
/// length too short for the family).
fn from_storage(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(ss.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is at least as large and as aligned as sockaddr_in (that is
            // its purpose), the family says the kernel wrote a sockaddr_in, and the reference does not
            // outlive `ss`.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `ss` as the kernel expects it; returns the address length.
fn to_storage(addr: &SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in; the write stays
            // inside `ss`, which is a valid exclusive reference.
            unsafe {
                ptr::write(
                    (ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe {
                ptr::write(
                    (ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// One received datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// sender
    pub from: SocketAddr,
    /// payload
    pub data: &'a [u8],
}

/// Preallocated state for receiving many datagrams with one `recvmmsg`.
pub struct RecvBatch {
    buf: Vec<u8>,
    stride: usize,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into this struct's own heap buffers
// (`buf`, `names`, `iovs`), which move with it; they are rewritten before each system call and never
// dereferenced otherwise, so moving the batch to another thread is sound.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.hdrs.len())
            .field("stride", &self.stride)
            .field("received", &self.received)
            .finish()
    }
}

impl RecvBatch {
    /// Room for `count` datagrams of up to `stride` bytes each (both at least 1).
    pub fn new(count: usize, stride: usize) -> Self {
        let count = count.max(1);
        let stride = stride.max(1);
        RecvBatch {
            buf: vec![0u8; count * stride],
            stride,
            names: vec![zeroed_storage(); count],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ],
            hdrs: vec![zeroed_mmsghdr(); count],
            received: 0,
        }
    }

    /// Most datagrams one [`RecvBatch::recv`] returns.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives what is queued on `fd`, up to [`RecvBatch::capacity`] datagrams, with one `recvmmsg`.
    /// Returns how many arrived (at least one); an empty queue is [`io::ErrorKind::WouldBlock`].
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        let base = self.buf.as_mut_ptr();
        for i in 0..self.hdrs.len() {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * stride < buf.len() (buf holds count * stride bytes), so the offset stays
                // inside the allocation.
                iov_base: unsafe { base.add(i * self.stride) }.cast(),
                iov_len: self.stride,
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        let vlen = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: `hdrs` holds `vlen` initialised headers whose name/iovec pointers were set just above
        // to live, exclusively borrowed memory of this struct with the lengths given; the kernel writes
        // at most those lengths. The timeout pointer may be null.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                vlen,
                0,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = usize::try_from(n).unwrap_or(0).min(self.hdrs.len());
        Ok(self.received)
    }

    /// The `i`-th datagram of the last [`RecvBatch::recv`]. `None` past the end, for a sender address
    /// that is neither IPv4 nor IPv6, and for a datagram that was truncated (larger than the stride).
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.received {
            return None;
        }
        let h = &self.hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let from = from_storage(&self.names[i], h.msg_hdr.msg_namelen)?;
        let len = (h.msg_len as usize).min(self.stride);
        let at = i * self.stride;
        Some(Datagram {
            from,
            data: &self.buf[at..at + len],
        })
    }

    /// Whether the `i`-th datagram of the last receive was truncated.
    pub fn truncated(&self, i: usize) -> bool {
        i < self.received && self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }
}

/// Preallocated state for sending many datagrams with one `sendmmsg`.
pub struct SendBatch {
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` are rewritten before each `sendmmsg` and point into
// this struct's own buffers or into slices borrowed for the duration of that one call; they are never
// dereferenced afterwards, so moving the batch to another thread is sound.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.hdrs.len())
            .finish()
    }
}

impl SendBatch {
    /// Room for `count` datagrams per call (at least 1).
    pub fn new(count: usize) -> Self {
        let count = count.max(1);
        SendBatch {
            names: vec![zeroed_storage(); count],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ],
            hdrs: vec![zeroed_mmsghdr(); count],
        }
    }

    /// Most datagrams one [`SendBatch::send`] sends.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Sends the first [`SendBatch::capacity`] datagrams of `msgs` with one `sendmmsg`, in order.
    /// Returns how many the kernel took (at least one; fewer than offered when it stopped early, e.g.
    /// the socket buffer filled up). If the first one fails, that error is returned (a full buffer is
    /// [`io::ErrorKind::WouldBlock`]). `Ok(0)` only for an empty `msgs`.
    pub fn send<'a, I>(&mut self, fd: BorrowedFd<'_>, msgs: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = (SocketAddr, &'a [u8])>,
    {
        let mut count = 0;
        for (i, (to, data)) in msgs.into_iter().take(self.hdrs.len()).enumerate() {
            let namelen = to_storage(&to, &mut self.names[i]);
            self.iovs[i] = libc::iovec {
                // the kernel only reads through this pointer (sendmmsg); the cast to *mut is what
                // struct iovec requires
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            count = i + 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let vlen = libc::c_uint::try_from(count).unwrap_or(libc::c_uint::MAX);
        // SAFETY: the first `count` headers were initialised above; their name pointers point into
        // `self.names` and their iovecs at the caller's slices, all borrowed for this whole call, with
        // the exact lengths. sendmmsg only reads the payloads and writes `msg_len`.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), self.hdrs.as_mut_ptr(), vlen, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0).min(count))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn pair(v6: bool) -> (UdpSocket, UdpSocket) {
        let any = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
        let a = UdpSocket::bind(any).unwrap();
        let b = UdpSocket::bind(any).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn storage_round_trip() {
        for a in [
            "10.1.2.3:1194",
            "[fd00::1]:5",
            "[::ffff:10.0.0.1]:7",
            "[fe80::1%3]:9",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut ss = zeroed_storage();
            let len = to_storage(&a, &mut ss);
            assert_eq!(from_storage(&ss, len), Some(a));
            assert_eq!(from_storage(&ss, len - 1), None, "short length refused");
        }
        assert_eq!(from_storage(&zeroed_storage(), 128), None);
    }

    #[test]
    fn empty_queue_would_block() {
        let (a, _b) = pair(false);
        let mut rb = RecvBatch::new(4, 64);
        let e = rb.recv(a.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(rb.get(0).is_none());
    }

    #[test]
    fn batch_round_trip_in_order_and_bounded() {
        for v6 in [false, true] {
            let (a, b) = pair(v6);
            let to = b.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
            let mut sb = SendBatch::new(8);
            let mut sent = 0;
            while sent < payloads.len() {
                let n = sb
                    .send(
                        a.as_fd(),
                        payloads[sent..].iter().map(|p| (to, p.as_slice())),
                    )
                    .unwrap();
                assert!((1..=8).contains(&n));
                sent += n;
            }
            let mut rb = RecvBatch::new(4, 64);
            let mut got = Vec::new();
            for _ in 0..100 {
                match rb.recv(b.as_fd()) {
                    Ok(n) => {
                        assert!(n <= 4);
                        for i in 0..n {
                            let d = rb.get(i).unwrap();
                            assert_eq!(d.from, a.local_addr().unwrap());
                            got.push(d.data.to_vec());
                        }
                        assert!(rb.get(n).is_none());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if got.len() == payloads.len() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got, payloads);
        }
    }

    #[test]
    fn oversized_datagram_is_flagged_truncated() {
        let (a, b) = pair(false);
        a.send_to(&[7u8; 100], b.local_addr().unwrap()).unwrap();
        a.send_to(&[8u8; 10], b.local_addr().unwrap()).unwrap();
        let mut rb = RecvBatch::new(4, 32);
        let mut n = 0;
        for _ in 0..100 {
            match rb.recv(b.as_fd()) {
                Ok(k) if k == 2 => {
                    n = k;
                    break;
                }
                Ok(_) | Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(n, 2);
        assert!(rb.truncated(0));
        assert!(
            rb.get(0).is_none(),
            "a truncated datagram is never handed out"
        );
        assert_eq!(rb.get(1).unwrap().data, &[8u8; 10]);
    }

    #[test]
    fn send_nothing_is_zero() {
        let (a, _b) = pair(false);
        let mut sb = SendBatch::new(2);
        assert_eq!(sb.send(a.as_fd(), std::iter::empty()).unwrap(), 0);
    }
}
