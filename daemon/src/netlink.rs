//! A minimal rtnetlink client: interface index, link settings (MTU, txqueuelen, up), IPv4/IPv6
//! addresses, routes, link deletion. Messages are built by hand (no `ip` subprocess, no unsafe).
//!
//! Every request carries `NLM_F_REQUEST | NLM_F_ACK` and waits for the kernel's acknowledgement, so
//! each call either applied its change or returns the kernel's errno.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 0x1;

/// Errors of netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be created or bound.
    #[error("cannot open rtnetlink socket: {0}")]
    Open(#[source] nix::Error),
    /// Sending a request failed.
    #[error("netlink send ({op}): {source}")]
    Send {
        /// The operation.
        op: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// Receiving the answer failed.
    #[error("netlink receive ({op}): {source}")]
    Recv {
        /// The operation.
        op: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// The kernel rejected the request.
    #[error("{op}: {source}")]
    Kernel {
        /// The operation, human readable (e.g. "add address 10.8.0.1/24 to tun0").
        op: String,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// The answer was malformed.
    #[error("netlink ({op}): malformed answer")]
    Malformed {
        /// The operation.
        op: &'static str,
    },
    /// No interface of that name.
    #[error("no interface named '{name}': {source}")]
    NoSuchInterface {
        /// The interface name.
        name: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
}

/// A connected rtnetlink socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// One route to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network.
    pub dst: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway (`None`: on-link via the interface).
    pub gateway: Option<IpAddr>,
    /// Metric (`RTA_PRIORITY`).
    pub metric: Option<u32>,
}

struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Msg { buf }
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
        self
    }
    fn finish(&mut self) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        &self.buf
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut v = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    v.extend_from_slice(&index.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&change.to_ne_bytes());
    v
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// The broadcast address of `addr/prefix`.
pub fn broadcast_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let host_mask = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
    Ipv4Addr::from(u32::from(addr) | host_mask)
}

/// The interface index of `name`.
pub fn if_index(name: &str) -> Result<u32, NetlinkError> {
    nix::net::if_::if_nametoindex(name).map_err(|source| NetlinkError::NoSuchInterface {
        name: name.to_owned(),
        source,
    })
}

impl Netlink {
    /// Opens and binds an `AF_NETLINK / NETLINK_ROUTE` socket.
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(NetlinkError::Open)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &NetlinkAddr::new(0, 0),
        )
        .map_err(NetlinkError::Open)?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn request(
        &mut self,
        op: &'static str,
        what: impl Fn() -> String,
        msg: &mut Msg,
    ) -> Result<(), NetlinkError> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        msg.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        send(raw, msg.finish(), MsgFlags::empty())
            .map_err(|source| NetlinkError::Send { op, source })?;
        let mut buf = vec![0u8; 8192];
        // Bounded: the kernel answers an ACK request with exactly one NLMSG_ERROR; skip stray messages.
        for _ in 0..64 {
            let n = recv(raw, &mut buf, MsgFlags::empty())
                .map_err(|source| NetlinkError::Recv { op, source })?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq =
                    u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
                if len < 16 || off + len > n {
                    return Err(NetlinkError::Malformed { op });
                }
                if mseq == seq && kind == NLMSG_ERROR {
                    if len < 20 {
                        return Err(NetlinkError::Malformed { op });
                    }
                    let err = i32::from_ne_bytes([
                        buf[off + 16],
                        buf[off + 17],
                        buf[off + 18],
                        buf[off + 19],
                    ]);
                    return if err == 0 {
                        Ok(())
                    } else {
                        Err(NetlinkError::Kernel {
                            op: what(),
                            source: std::io::Error::from_raw_os_error(-err),
                        })
                    };
                }
                if mseq == seq && kind == NLMSG_DONE {
                    return Ok(());
                }
                off += (len + 3) & !3;
            }
        }
        Err(NetlinkError::Malformed { op })
    }

    /// Sets MTU and/or txqueuelen and brings the link up (or leaves the flags alone when `up` is false).
    pub fn set_link(
        &mut self,
        index: u32,
        mtu: Option<u32>,
        txqlen: Option<u32>,
        up: bool,
    ) -> Result<(), NetlinkError> {
        let (flags, change) = if up { (IFF_UP, IFF_UP) } else { (0, 0) };
        let mut m = Msg::new(RTM_NEWLINK, 0, 0);
        m.bytes(&ifinfomsg(index, flags, change));
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(q) = txqlen {
            m.attr(IFLA_TXQLEN, &q.to_ne_bytes());
        }
        self.request(
            "set link",
            || format!("set link {index} (mtu {mtu:?}, txqueuelen {txqlen:?}, up {up})"),
            &mut m,
        )
    }

    /// Deletes the link.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut m = Msg::new(RTM_DELLINK, 0, 0);
        m.bytes(&ifinfomsg(index, 0, 0));
        self.request("delete link", || format!("delete link {index}"), &mut m)
    }

    /// Adds an address. `peer` makes it a point-to-point address (`IFA_ADDRESS` = peer); an IPv4
    /// address without a peer gets the subnet broadcast address.
    pub fn add_address(
        &mut self,
        index: u32,
        local: IpAddr,
        prefix: u8,
        peer: Option<IpAddr>,
    ) -> Result<(), NetlinkError> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, 0);
        let mut hdr = vec![family(&local), prefix, 0, RT_SCOPE_UNIVERSE];
        hdr.extend_from_slice(&index.to_ne_bytes());
        m.bytes(&hdr);
        m.attr(IFA_LOCAL, &ip_bytes(&local));
        m.attr(IFA_ADDRESS, &ip_bytes(&peer.unwrap_or(local)));
        if let (IpAddr::V4(a), None) = (local, peer) {
            if prefix < 31 {
                m.attr(IFA_BROADCAST, &broadcast_v4(a, prefix).octets());
            }
        }
        self.request(
            "add address",
            || match peer {
                Some(p) => format!("add address {local} peer {p}/{prefix} to interface {index}"),
                None => format!("add address {local}/{prefix} to interface {index}"),
            },
            &mut m,
        )
    }

    /// Adds a route through interface `index`.
    pub fn add_route(&mut self, index: u32, route: &RouteSpec) -> Result<(), NetlinkError> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, 0);
        let scope = if route.gateway.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        let hdr = [
            family(&route.dst),
            route.prefix,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            scope,
            RTN_UNICAST,
        ];
        m.bytes(&hdr);
        m.bytes(&0u32.to_ne_bytes());
        m.attr(RTA_DST, &ip_bytes(&route.dst));
        if let Some(gw) = &route.gateway {
            m.attr(RTA_GATEWAY, &ip_bytes(gw));
        }
        m.attr(RTA_OIF, &index.to_ne_bytes());
        if let Some(metric) = route.metric {
            m.attr(RTA_PRIORITY, &metric.to_ne_bytes());
        }
        self.request(
            "add route",
            || {
                let via = route
                    .gateway
                    .map(|g| format!(" via {g}"))
                    .unwrap_or_default();
                format!("add route {}/{}{via} dev {index}", route.dst, route.prefix)
            },
            &mut m,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast() {
        assert_eq!(
            broadcast_v4(Ipv4Addr::new(10, 8, 0, 1), 24),
            Ipv4Addr::new(10, 8, 0, 255)
        );
        assert_eq!(
            broadcast_v4(Ipv4Addr::new(10, 8, 0, 1), 32),
            Ipv4Addr::new(10, 8, 0, 1)
        );
    }

    #[test]
    fn attr_padding_and_length() {
        let mut m = Msg::new(RTM_NEWADDR, 0, 7);
        m.attr(IFA_LOCAL, &[1, 2, 3]);
        let b = m.finish().to_vec();
        assert_eq!(b.len(), 16 + 8);
        assert_eq!(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), 24);
        assert_eq!(u16::from_ne_bytes([b[16], b[17]]), 7);
    }
}
