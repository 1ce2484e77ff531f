//! Batched UDP I/O: `recvmmsg(2)` / `sendmmsg(2)` over headers allocated once.
//!
//! - [`RecvBatch`] receives up to [`RecvBatch::capacity`] messages with one `recvmmsg` into one
//!   contiguous buffer (a fixed stride per message) and exposes them as [`Datagram`]s. When the socket
//!   has `UDP_GRO` on (set by the parent), one message may hold several datagrams of one sender
//!   coalesced by the kernel; its `UDP_GRO` control message gives the segment size and
//!   [`Datagram::segments`] splits it again.
//! - [`SendBatch`] sends a run of datagrams, each to its own address, with one `sendmmsg`; with UDP GSO
//!   (`UDP_SEGMENT`) consecutive datagrams to the same address of the same size (the last may be
//!   shorter) go out as one message with a `UDP_SEGMENT` control message, which the kernel sends as one
//!   super-packet through the stack and splits at the end (or in the NIC).
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

/// Number of messages moved per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;
/// Most segments in one GSO message (the kernel's `UDP_MAX_SEGMENTS` on every kernel with GSO).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO message: the 16-bit IP length less the largest IP + UDP header.
pub const GSO_MAX_BYTES: usize = 65535 - 40 - 8;
/// Receive stride when `UDP_GRO` is on: the largest UDP payload a coalesced message can have.
pub const GRO_STRIDE: usize = 65535;
/// iovecs available to one `sendmmsg` (over all its messages).
const SEND_IOVS: usize = 1024;

/// Whether the kernel knows UDP GSO for this socket (`getsockopt(UDP_SEGMENT)` succeeds).
pub fn gso_supported(fd: BorrowedFd<'_>) -> bool {
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::UdpGsoSegment).is_ok()
}

/// Whether `UDP_GRO` is on for this socket (the parent sets it before handing the socket over).
pub fn gro_enabled(fd: BorrowedFd<'_>) -> bool {
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::UdpGroSegment).unwrap_or(false)
}

/// Control-message space for one `int` (UDP_GRO) or `u16` (UDP_SEGMENT), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

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

/// One received message of a [`RecvBatch`]: a datagram, or several of one sender coalesced by GRO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// sender
    pub from: SocketAddr,
    /// payload (several datagrams back to back when `segment_size` is set)
    pub data: &'a [u8],
    /// size of each coalesced datagram (the last may be shorter), from the `UDP_GRO` control message
    pub segment_size: Option<usize>,
}

impl<'a> Datagram<'a> {
    /// The datagrams of this message, in arrival order (one unless GRO coalesced several).
    pub fn segments(&self) -> std::slice::Chunks<'a, u8> {
        let size = match self.segment_size {
            Some(s) if s > 0 => s,
            _ => self.data.len().max(1),
        };
        self.data.chunks(size)
    }
}

/// Preallocated state for receiving many datagrams with one `recvmmsg`.
pub struct RecvBatch {
    buf: Vec<u8>,
    stride: usize,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<CmsgBuf>,
    seg_sizes: Vec<usize>,
    received: usize,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into this struct's own heap buffers
// (`buf`, `names`, `iovs`, `cmsgs`), which move with it; they are rewritten before each system call and never
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
            cmsgs: vec![CmsgBuf([0; 64]); count],
            seg_sizes: vec![0; count],
            received: 0,
        }
    }

    /// Bytes per message: datagrams (or GRO-coalesced messages) larger than this are dropped.
    pub fn stride(&self) -> usize {
        self.stride
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
            h.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = mem::size_of::<CmsgBuf>() as _;
            h.msg_hdr.msg_flags = 0;
        }
        let vlen = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: `hdrs` holds `vlen` initialised headers whose name/iovec/control pointers were set
        // just above to live, exclusively borrowed memory of this struct with the lengths given; the
        // kernel writes at most those lengths. The timeout pointer may be null.
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
        for i in 0..self.received {
            self.seg_sizes[i] = self.gro_size(i);
        }
        Ok(self.received)
    }

    /// The `UDP_GRO` segment size the kernel reported for message `i` (0: none).
    fn gro_size(&self, i: usize) -> usize {
        let h = &self.hdrs[i].msg_hdr;
        if h.msg_controllen == 0 || h.msg_control.is_null() {
            return 0;
        }
        let mut size = 0;
        // SAFETY: `msg_control` points at `self.cmsgs[i]` (set before the call, still alive and not
        // otherwise borrowed) and the kernel set `msg_controllen` to the bytes it wrote there, at most
        // the buffer's size; CMSG_FIRSTHDR/CMSG_NXTHDR stay within that length and return null at its
        // end. The data of a UDP_GRO message is one `int`, read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP
                    && (*c).cmsg_type == libc::UDP_GRO
                    && (*c).cmsg_len as usize
                        >= libc::CMSG_LEN(mem::size_of::<libc::c_int>() as _) as usize
                {
                    let v = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    size = usize::try_from(v).unwrap_or(0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        size
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
        let seg = self.seg_sizes[i];
        Some(Datagram {
            from,
            data: &self.buf[at..at + len],
            segment_size: (seg > 0 && seg < len).then_some(seg),
        })
    }

    /// Whether the `i`-th datagram of the last receive was truncated.
    pub fn truncated(&self, i: usize) -> bool {
        i < self.received && self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }
}

/// Why a [`SendBatch::send`] sent nothing: the first message failed.
#[derive(Debug)]
pub struct SendError {
    /// the kernel's error (a full socket buffer is [`io::ErrorKind::WouldBlock`])
    pub error: io::Error,
    /// datagrams in the failed message (more than one for a GSO message)
    pub datagrams: usize,
    /// the segment size, if the failed message was a GSO message
    pub gso_segment: Option<usize>,
}

/// Preallocated state for sending many datagrams with one `sendmmsg`, coalescing runs into UDP GSO
/// messages when the kernel supports it.
pub struct SendBatch {
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<CmsgBuf>,
    /// datagrams in each message of the current call
    segs: Vec<usize>,
    /// segment size of each message of the current call
    sizes: Vec<usize>,
    /// datagrams of this size or larger are never coalesced (0: GSO off)
    gso_ceiling: usize,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` are rewritten before each `sendmmsg` and point into
// this struct's own buffers or into slices borrowed for the duration of that one call; they are never
// dereferenced afterwards, so moving the batch to another thread is sound.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.hdrs.len())
            .field("gso_ceiling", &self.gso_ceiling)
            .finish()
    }
}

impl SendBatch {
    /// Room for `count` messages per call (at least 1); `gso`: coalesce runs with `UDP_SEGMENT`.
    pub fn new(count: usize, gso: bool) -> Self {
        let count = count.max(1);
        SendBatch {
            names: vec![zeroed_storage(); count],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                SEND_IOVS.max(count)
            ],
            hdrs: vec![zeroed_mmsghdr(); count],
            cmsgs: vec![CmsgBuf([0; 64]); count],
            segs: vec![0; count],
            sizes: vec![0; count],
            gso_ceiling: if gso { usize::MAX } else { 0 },
        }
    }

    /// Most messages one [`SendBatch::send`] sends.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Whether GSO coalescing is on for some size.
    pub fn gso(&self) -> bool {
        self.gso_ceiling > 0
    }

    /// After the kernel refused a GSO message of `segment` bytes per segment: datagrams of that size or
    /// larger are sent one by one from now on (the path MTU is below them); `disable` turns GSO off
    /// completely (the device cannot do it, e.g. `EIO`).
    pub fn limit_gso(&mut self, segment: usize, disable: bool) {
        self.gso_ceiling = if disable {
            0
        } else {
            self.gso_ceiling.min(segment)
        };
    }

    /// Sends `items` from the start, in order, with one `sendmmsg` of at most
    /// [`SendBatch::capacity`] messages. With GSO on, consecutive datagrams to the same address with
    /// the same length (the last of a group may be shorter) form one message, up to
    /// [`GSO_MAX_SEGMENTS`] / [`GSO_MAX_BYTES`]. Returns how many datagrams the kernel took (at least
    /// one; `0` only for empty `items`); if the first message fails nothing was sent and the error
    /// says how many datagrams that message held.
    pub fn send<T>(
        &mut self,
        fd: BorrowedFd<'_>,
        items: &[T],
        addr: impl Fn(&T) -> SocketAddr,
        data: impl Fn(&T) -> &[u8],
    ) -> Result<usize, SendError> {
        let (mut msg, mut iov, mut item) = (0, 0, 0);
        while item < items.len() && msg < self.hdrs.len() && iov < self.iovs.len() {
            let to = addr(&items[item]);
            let first = data(&items[item]);
            let size = first.len();
            self.iovs[iov] = libc::iovec {
                // the kernel only reads through this pointer (sendmmsg); struct iovec wants *mut
                iov_base: first.as_ptr().cast_mut().cast(),
                iov_len: size,
            };
            let mut n = 1;
            let mut bytes = size;
            if size > 0 && size < self.gso_ceiling {
                while item + n < items.len() && n < GSO_MAX_SEGMENTS && iov + n < self.iovs.len() {
                    let d = data(&items[item + n]);
                    if d.is_empty()
                        || d.len() > size
                        || bytes + d.len() > GSO_MAX_BYTES
                        || addr(&items[item + n]) != to
                    {
                        break;
                    }
                    self.iovs[iov + n] = libc::iovec {
                        iov_base: d.as_ptr().cast_mut().cast(),
                        iov_len: d.len(),
                    };
                    n += 1;
                    bytes += d.len();
                    if d.len() < size {
                        break; // a shorter datagram ends the group
                    }
                }
            }
            let namelen = to_storage(&to, &mut self.names[msg]);
            let h = &mut self.hdrs[msg];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[msg] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut self.iovs[iov];
            h.msg_hdr.msg_iovlen = n as _;
            h.msg_hdr.msg_flags = 0;
            if n > 1 {
                h.msg_hdr.msg_control = self.cmsgs[msg].0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE only computes a size.
                h.msg_hdr.msg_controllen =
                    unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as _) } as _;
                // SAFETY: msg_control points at `self.cmsgs[msg]` (64 bytes, 8-aligned), larger than
                // CMSG_SPACE(2) = 24 bytes, so CMSG_FIRSTHDR is non-null and the header and its two
                // data bytes lie inside the buffer; the u16 is written unaligned.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as _) as _;
                    ptr::write_unaligned(
                        libc::CMSG_DATA(c).cast::<u16>(),
                        u16::try_from(size).unwrap_or(u16::MAX),
                    );
                }
            } else {
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
            self.segs[msg] = n;
            self.sizes[msg] = size;
            msg += 1;
            iov += n;
            item += n;
        }
        if msg == 0 {
            return Ok(0);
        }
        let vlen = libc::c_uint::try_from(msg).unwrap_or(libc::c_uint::MAX);
        // SAFETY: the first `msg` headers were initialised above; their name pointers point into
        // `self.names`, their control pointers into `self.cmsgs` (or null), their iovecs into
        // `self.iovs`, which point at the caller's slices, all borrowed for this whole call, with the
        // exact lengths. sendmmsg only reads them and writes `msg_len`.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), self.hdrs.as_mut_ptr(), vlen, 0) };
        if n < 0 {
            return Err(SendError {
                error: io::Error::last_os_error(),
                datagrams: self.segs[0],
                gso_segment: (self.segs[0] > 1).then_some(self.sizes[0]),
            });
        }
        let sent = usize::try_from(n).unwrap_or(0).min(msg);
        Ok(self.segs[..sent].iter().sum())
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
            let mut sb = SendBatch::new(8, false);
            let mut sent = 0;
            while sent < payloads.len() {
                let n = sb
                    .send(a.as_fd(), &payloads[sent..], |_| to, |p| p.as_slice())
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
        let mut sb = SendBatch::new(2, true);
        let none: [Vec<u8>; 0] = [];
        assert_eq!(
            sb.send(a.as_fd(), &none, |_| a.local_addr().unwrap(), |p| p)
                .unwrap(),
            0
        );
    }

    /// Receives until `want` datagrams arrived (splitting GRO messages), bounded.
    fn recv_all(rb: &mut RecvBatch, s: &UdpSocket, want: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut messages) = (Vec::new(), 0);
        for _ in 0..200 {
            match rb.recv(s.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let d = rb.get(i).unwrap();
                        messages += 1;
                        got.extend(d.segments().map(|x| x.to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() >= want {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        (got, messages)
    }

    #[test]
    fn gso_groups_runs_and_the_receiver_sees_every_datagram() {
        let (a, b) = pair(false);
        if !gso_supported(a.as_fd()) {
            eprintln!("kernel without UDP GSO: skipped");
            return;
        }
        let to = b.local_addr().unwrap();
        let other = a.local_addr().unwrap();
        // 5 × 100 bytes + one 40-byte tail to `to`, then 3 × 100 to another address, then 2 to `to`
        let mut items: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        for i in 0..5u8 {
            items.push((to, vec![i; 100]));
        }
        items.push((to, vec![9; 40]));
        for i in 0..3u8 {
            items.push((other, vec![20 + i; 100]));
        }
        items.push((to, vec![30; 100]));
        items.push((to, vec![31; 100]));
        let mut sb = SendBatch::new(8, true);
        let n = sb.send(a.as_fd(), &items, |t| t.0, |t| &t.1).unwrap();
        assert_eq!(n, items.len(), "4 messages, all datagrams taken");
        let mut rb = RecvBatch::new(16, 256);
        let want: Vec<Vec<u8>> = items
            .iter()
            .filter(|t| t.0 == to)
            .map(|t| t.1.clone())
            .collect();
        let (got, _) = recv_all(&mut rb, &b, want.len());
        assert_eq!(
            got, want,
            "segmented back into the original datagrams, in order"
        );
        let (got_other, _) = recv_all(&mut rb, &a, 3);
        assert_eq!(got_other.len(), 3);
    }

    #[test]
    fn gro_coalesces_on_loopback_and_segments_split_it_back() {
        let (a, b) = pair(false);
        if !gso_supported(a.as_fd()) {
            eprintln!("kernel without UDP GSO: skipped");
            return;
        }
        nix::sys::socket::setsockopt(&b, nix::sys::socket::sockopt::UdpGroSegment, &true).unwrap();
        assert!(gro_enabled(b.as_fd()));
        assert!(!gro_enabled(a.as_fd()));
        let to = b.local_addr().unwrap();
        let items: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 500]).collect();
        let mut sb = SendBatch::new(8, true);
        assert_eq!(sb.send(a.as_fd(), &items, |_| to, |p| p).unwrap(), 10);
        let mut rb = RecvBatch::new(4, GRO_STRIDE);
        let (got, messages) = recv_all(&mut rb, &b, 10);
        assert_eq!(got, items);
        // the GSO super-packet reaches a GRO socket whole (loopback does not segment it)
        assert!(messages < 10, "{messages} messages for 10 datagrams");
    }

    #[test]
    fn gso_ceiling_and_off() {
        let (a, b) = pair(false);
        let to = b.local_addr().unwrap();
        let items: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        let mut sb = SendBatch::new(8, true);
        sb.limit_gso(100, false);
        assert!(sb.gso());
        assert_eq!(sb.send(a.as_fd(), &items, |_| to, |p| p).unwrap(), 4);
        assert_eq!(
            sb.segs[..4],
            [1, 1, 1, 1],
            "100-byte datagrams no longer coalesced"
        );
        sb.limit_gso(0, true);
        assert!(!sb.gso());
    }

    #[test]
    fn segments_of_a_plain_datagram_is_itself() {
        let d = Datagram {
            from: "1.2.3.4:5".parse().unwrap(),
            data: &[1, 2, 3],
            segment_size: None,
        };
        assert_eq!(d.segments().collect::<Vec<_>>(), vec![&[1u8, 2, 3][..]]);
        let g = Datagram {
            segment_size: Some(2),
            ..d
        };
        assert_eq!(
            g.segments().collect::<Vec<_>>(),
            vec![&[1u8, 2][..], &[3u8][..]]
        );
        let e = Datagram { data: &[], ..d };
        assert_eq!(e.segments().count(), 0);
    }
}
