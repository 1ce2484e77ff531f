//! Virtual address pools and the routing table of a server.
//!
//! * [`Pool`] hands out the tunnel addresses of clients as OpenVPN's `ifconfig-pool` does: one address per
//!   client for `topology subnet`, one /30 block per client for `topology net30` (client = base+2, its
//!   "peer" = base+1), and, when `server-ipv6` is configured, the IPv6 address with the same pool index
//!   (OpenVPN keeps the two pools index-aligned).
//! * [`RouteTable`] maps inner destination addresses to peers: the assigned addresses plus `iroute`s,
//!   longest prefix first.
//!
//! Deterministic, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Errors from pool configuration and leasing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The configured range is empty or inverted.
    #[error("address pool {start}..{end} is empty")]
    EmptyRange {
        /// first address
        start: Ipv4Addr,
        /// last address
        end: Ipv4Addr,
    },
    /// net30 pools must start on a /30 boundary.
    #[error("net30 pool start {0} is not aligned to a /30 boundary")]
    Unaligned(Ipv4Addr),
    /// Every address is in use.
    #[error("address pool exhausted")]
    Exhausted,
    /// A requested static address is outside the pool or already leased.
    #[error("address {0} is not available")]
    Unavailable(Ipv4Addr),
}

/// How clients are addressed (OpenVPN `topology`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    /// one address per client in a shared subnet
    Subnet,
    /// a /30 per client
    Net30,
}

/// Static description of the pools (derived by the parent from `server`/`ifconfig-pool`/`server-ipv6`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// addressing mode
    pub topology: Topology,
    /// the server's own tunnel address (route-gateway for subnet, pushed route for net30)
    pub server_ip: Ipv4Addr,
    /// netmask of the tunnel subnet (subnet topology)
    pub netmask: Ipv4Addr,
    /// first pool address (inclusive)
    pub start: Ipv4Addr,
    /// last pool address (inclusive)
    pub end: Ipv4Addr,
    /// IPv6: server address, prefix length, and first pool address
    pub ipv6: Option<Pool6Config>,
}

/// IPv6 part of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool6Config {
    /// the server's tunnel address
    pub server_ip: Ipv6Addr,
    /// prefix length pushed to clients
    pub prefix_len: u8,
    /// first pool address
    pub start: Ipv6Addr,
}

/// One client's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// pool index (shared by v4 and v6)
    pub index: u32,
    /// the client's IPv4 tunnel address
    pub ip: Ipv4Addr,
    /// subnet: the netmask; net30: the client's "remote" end (base+1)
    pub peer_or_mask: Ipv4Addr,
    /// the client's IPv6 tunnel address, if IPv6 is configured
    pub ip6: Option<Ipv6Addr>,
}

/// The address pool of a server.
#[derive(Debug, Clone)]
pub struct Pool {
    cfg: PoolConfig,
    size: u32,
    used: BTreeMap<u32, ()>,
}

impl Pool {
    /// Checks the configuration and creates an empty pool.
    pub fn new(cfg: PoolConfig) -> Result<Self, PoolError> {
        let start = u32::from(cfg.start);
        let end = u32::from(cfg.end);
        if end < start {
            return Err(PoolError::EmptyRange {
                start: cfg.start,
                end: cfg.end,
            });
        }
        let size = match cfg.topology {
            Topology::Subnet => end - start + 1,
            Topology::Net30 => {
                if start % 4 != 0 {
                    return Err(PoolError::Unaligned(cfg.start));
                }
                (end - start + 1) / 4
            }
        };
        if size == 0 {
            return Err(PoolError::EmptyRange {
                start: cfg.start,
                end: cfg.end,
            });
        }
        Ok(Self {
            cfg,
            size,
            used: BTreeMap::new(),
        })
    }

    /// The configuration this pool was built from.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Number of leases the pool can hold.
    pub fn capacity(&self) -> u32 {
        self.size
    }

    /// Number of leases in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    fn lease_for(&self, index: u32) -> Lease {
        let start = u32::from(self.cfg.start);
        let (ip, peer_or_mask) = match self.cfg.topology {
            Topology::Subnet => (Ipv4Addr::from(start + index), self.cfg.netmask),
            Topology::Net30 => {
                let base = start + index * 4;
                (Ipv4Addr::from(base + 2), Ipv4Addr::from(base + 1))
            }
        };
        let ip6 = self
            .cfg
            .ipv6
            .as_ref()
            .map(|v6| Ipv6Addr::from(u128::from(v6.start).wrapping_add(u128::from(index))));
        Lease {
            index,
            ip,
            peer_or_mask,
            ip6,
        }
    }

    /// Leases the lowest free index (OpenVPN hands out addresses in order).
    pub fn acquire(&mut self) -> Result<Lease, PoolError> {
        let mut candidate = 0u32;
        for &idx in self.used.keys() {
            if idx != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate >= self.size {
            return Err(PoolError::Exhausted);
        }
        self.used.insert(candidate, ());
        Ok(self.lease_for(candidate))
    }

    /// Leases a specific IPv4 address (from `ifconfig-pool-persist`), if it is in the pool and free.
    pub fn acquire_ip(&mut self, ip: Ipv4Addr) -> Result<Lease, PoolError> {
        let index = self.index_of(ip).ok_or(PoolError::Unavailable(ip))?;
        if self.used.contains_key(&index) {
            return Err(PoolError::Unavailable(ip));
        }
        self.used.insert(index, ());
        Ok(self.lease_for(index))
    }

    /// The pool index of a client address, if it belongs to the pool.
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let start = u32::from(self.cfg.start);
        let v = u32::from(ip);
        if v < start {
            return None;
        }
        let off = v - start;
        let index = match self.cfg.topology {
            Topology::Subnet => off,
            Topology::Net30 => {
                if off % 4 != 2 {
                    return None;
                }
                off / 4
            }
        };
        (index < self.size).then_some(index)
    }

    /// Returns a lease to the pool.
    pub fn release(&mut self, lease: &Lease) {
        self.used.remove(&lease.index);
    }
}

/// A prefix route to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// network address (host bits zero)
    pub addr: IpAddr,
    /// prefix length
    pub len: u8,
}

impl Prefix {
    /// A host route.
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.len.min(32)))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.len.min(128)))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Maps inner destination addresses to peers (host routes for leases, prefix routes for iroutes).
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    hosts: HashMap<IpAddr, u64>,
    prefixes: Vec<(Prefix, u64)>,
}

impl RouteTable {
    /// Adds (or replaces) a route to `peer`.
    pub fn add(&mut self, prefix: Prefix, peer: u64) {
        let full = if prefix.addr.is_ipv4() { 32 } else { 128 };
        if prefix.len == full {
            self.hosts.insert(prefix.addr, peer);
        } else {
            self.prefixes.retain(|(p, _)| *p != prefix);
            self.prefixes.push((prefix, peer));
            // longest prefix first
            self.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len));
        }
    }

    /// Removes every route of `peer`.
    pub fn remove_peer(&mut self, peer: u64) {
        self.hosts.retain(|_, p| *p != peer);
        self.prefixes.retain(|(_, p)| *p != peer);
    }

    /// The peer whose own address (host route, not an iroute) is exactly `ip`.
    pub fn host_owner(&self, ip: IpAddr) -> Option<u64> {
        self.hosts.get(&ip).copied()
    }

    /// The peer that owns `ip`: its host route, else the longest matching prefix (iroute).
    pub fn lookup(&self, ip: IpAddr) -> Option<u64> {
        if let Some(p) = self.hosts.get(&ip) {
            return Some(*p);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| prefix.contains(ip))
            .map(|(_, p)| *p)
    }

    /// All routes (for the status file's routing table).
    pub fn entries(&self) -> impl Iterator<Item = (Prefix, u64)> + '_ {
        self.hosts
            .iter()
            .map(|(a, p)| (Prefix::host(*a), *p))
            .chain(self.prefixes.iter().copied())
    }
}

/// Source and destination addresses of an inner IPv4/IPv6 packet, or `None` if it is not one.
pub fn inner_addrs(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let first = *pkt.first()?;
    match first >> 4 {
        4 if pkt.len() >= 20 => {
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            Some((IpAddr::V4(src), IpAddr::V4(dst)))
        }
        6 if pkt.len() >= 40 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&pkt[8..24]);
            d.copy_from_slice(&pkt[24..40]);
            Some((IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> PoolConfig {
        PoolConfig {
            topology: Topology::Subnet,
            server_ip: Ipv4Addr::new(10, 8, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            start: Ipv4Addr::new(10, 8, 0, 2),
            end: Ipv4Addr::new(10, 8, 0, 254),
            ipv6: Some(Pool6Config {
                server_ip: "fd00:1::1".parse().unwrap(),
                prefix_len: 64,
                start: "fd00:1::1000".parse().unwrap(),
            }),
        }
    }

    #[test]
    fn subnet_leases_in_order_and_reuses() {
        let mut p = Pool::new(subnet()).unwrap();
        assert_eq!(p.capacity(), 253);
        let a = p.acquire().unwrap();
        let b = p.acquire().unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 8, 0, 2));
        assert_eq!(a.peer_or_mask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(a.ip6, Some("fd00:1::1000".parse().unwrap()));
        assert_eq!(b.ip, Ipv4Addr::new(10, 8, 0, 3));
        assert_eq!(b.ip6, Some("fd00:1::1001".parse().unwrap()));
        p.release(&a);
        assert_eq!(p.acquire().unwrap().ip, Ipv4Addr::new(10, 8, 0, 2));
        assert_eq!(p.acquire().unwrap().ip, Ipv4Addr::new(10, 8, 0, 4));
    }

    #[test]
    fn net30_matches_openvpn() {
        // server 10.8.0.0 255.255.255.0 with net30: pool 10.8.0.4 .. 10.8.0.251
        let cfg = PoolConfig {
            topology: Topology::Net30,
            server_ip: Ipv4Addr::new(10, 8, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            start: Ipv4Addr::new(10, 8, 0, 4),
            end: Ipv4Addr::new(10, 8, 0, 251),
            ipv6: None,
        };
        let mut p = Pool::new(cfg).unwrap();
        assert_eq!(p.capacity(), 62);
        let a = p.acquire().unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 8, 0, 6));
        assert_eq!(a.peer_or_mask, Ipv4Addr::new(10, 8, 0, 5));
        let b = p.acquire().unwrap();
        assert_eq!(b.ip, Ipv4Addr::new(10, 8, 0, 10));
        assert_eq!(p.index_of(Ipv4Addr::new(10, 8, 0, 10)), Some(1));
        assert_eq!(p.index_of(Ipv4Addr::new(10, 8, 0, 9)), None);
    }

    #[test]
    fn exhaustion_and_static() {
        let mut cfg = subnet();
        cfg.end = Ipv4Addr::new(10, 8, 0, 3);
        let mut p = Pool::new(cfg).unwrap();
        p.acquire_ip(Ipv4Addr::new(10, 8, 0, 3)).unwrap();
        assert_eq!(
            p.acquire_ip(Ipv4Addr::new(10, 8, 0, 3)),
            Err(PoolError::Unavailable(Ipv4Addr::new(10, 8, 0, 3)))
        );
        assert_eq!(p.acquire().unwrap().ip, Ipv4Addr::new(10, 8, 0, 2));
        assert_eq!(p.acquire(), Err(PoolError::Exhausted));
    }

    #[test]
    fn host_owner_ignores_iroutes() {
        let mut rt = RouteTable::default();
        rt.add(
            Prefix {
                addr: "10.9.0.0".parse().unwrap(),
                len: 24,
            },
            1,
        );
        rt.add(Prefix::host("10.9.0.5".parse().unwrap()), 2);
        assert_eq!(rt.host_owner("10.9.0.5".parse().unwrap()), Some(2));
        assert_eq!(rt.host_owner("10.9.0.6".parse().unwrap()), None);
        assert_eq!(rt.lookup("10.9.0.6".parse().unwrap()), Some(1));
        rt.remove_peer(2);
        assert_eq!(rt.host_owner("10.9.0.5".parse().unwrap()), None);
        assert_eq!(rt.lookup("10.9.0.5".parse().unwrap()), Some(1));
    }

    #[test]
    fn routes_longest_prefix() {
        let mut t = RouteTable::default();
        t.add(Prefix::host("10.8.0.2".parse().unwrap()), 1);
        t.add(
            Prefix {
                addr: "192.168.0.0".parse().unwrap(),
                len: 16,
            },
            2,
        );
        t.add(
            Prefix {
                addr: "192.168.5.0".parse().unwrap(),
                len: 24,
            },
            3,
        );
        assert_eq!(t.lookup("10.8.0.2".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("192.168.5.9".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("192.168.6.9".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("10.8.0.3".parse().unwrap()), None);
        t.remove_peer(3);
        assert_eq!(t.lookup("192.168.5.9".parse().unwrap()), Some(2));
    }

    #[test]
    fn inner_addresses() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 8, 0, 2]);
        v4[16..20].copy_from_slice(&[10, 8, 0, 1]);
        assert_eq!(
            inner_addrs(&v4),
            Some(("10.8.0.2".parse().unwrap(), "10.8.0.1".parse().unwrap()))
        );
        assert_eq!(inner_addrs(&v4[..10]), None);
        assert_eq!(inner_addrs(&[0x50; 40]), None);
    }
}
