//! The subset of the configuration the parent process acts on, in the daemon's own terms.
//!
//! [`Settings`] is produced from the typed OpenVPN configuration in exactly one function
//! ([`Settings::from_config`]), so the rest of the daemon does not depend on the config crate's
//! representation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::netlink::RouteSpec;

/// Transport protocol and address family selection, as OpenVPN's `proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `udp`: dual-stack unless `local` selects a family.
    Udp,
    /// `udp4`.
    Udp4,
    /// `udp6`.
    Udp6,
    /// `tcp` / `tcp-server`: dual-stack listener unless `local` selects a family.
    Tcp,
    /// `tcp4` / `tcp4-server`.
    Tcp4,
    /// `tcp6` / `tcp6-server`.
    Tcp6,
}

impl Transport {
    /// Whether this is a TCP transport.
    pub fn is_tcp(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tcp4 | Transport::Tcp6)
    }
}

/// How the server's own TUN address is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunAddress {
    /// `topology subnet`: `local/prefix`.
    Subnet {
        /// The server address.
        local: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
    /// `topology net30` / `p2p`: a point-to-point pair.
    PointToPoint {
        /// The server address.
        local: Ipv4Addr,
        /// The peer address.
        peer: Ipv4Addr,
    },
}

/// A management listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Management {
    /// `management PATH unix`.
    Unix(PathBuf),
    /// `management IP PORT [pw-file]`.
    Tcp(IpAddr, u16),
}

/// What the parent needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `dev`: `tun` (kernel picks `tunN`) or an explicit name such as `tun0`.
    pub dev: String,
    /// The IPv4 address of the TUN device, if any (`server` / `ifconfig`).
    pub tun_v4: Option<TunAddress>,
    /// The IPv6 address of the TUN device (`server-ipv6` / `ifconfig-ipv6`).
    pub tun_v6: Option<(Ipv6Addr, u8)>,
    /// `tun-mtu` (default 1500).
    pub mtu: u32,
    /// `txqueuelen`.
    pub txqueuelen: Option<u32>,
    /// `route` / `route-ipv6` directives.
    pub routes: Vec<RouteSpec>,
    /// `proto`.
    pub transport: Transport,
    /// `local`.
    pub local: Option<IpAddr>,
    /// `port` / `lport` (default 1194).
    pub port: u16,
    /// `sndbuf`.
    pub sndbuf: Option<u32>,
    /// `rcvbuf`.
    pub rcvbuf: Option<u32>,
    /// Data-plane threads of the worker, resolved from `data-threads` (1 for TCP): the TUN queues
    /// the parent asks for; it then binds one UDP socket per queue the device really has.
    pub data_threads: usize,
    /// `management` listeners.
    pub management: Vec<Management>,
    /// `user`.
    pub user: Option<String>,
    /// `group`.
    pub group: Option<String>,
    /// `persist-tun`.
    pub persist_tun: bool,
    /// `daemon [progname]`: `Some(ident)` when set (ident defaults to "openvpn" like OpenVPN).
    pub daemon: Option<String>,
    /// The syslog ident when the log goes to syslog: `syslog [NAME]` or `daemon [NAME]` (NAME
    /// defaults to "openvpn" like OpenVPN); `log`/`log-append` take precedence, as in OpenVPN.
    pub syslog: Option<String>,
    /// `errors-to-stderr`.
    pub errors_to_stderr: bool,
    /// `writepid FILE`.
    pub writepid: Option<PathBuf>,
    /// `cd DIR`.
    pub cd: Option<PathBuf>,
    /// `log FILE` / `log-append FILE`: `(path, append)`.
    pub log: Option<(PathBuf, bool)>,
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A minimal settings value for unit tests.
    pub(crate) fn minimal() -> Settings {
        Settings {
            dev: "tun".into(),
            tun_v4: None,
            tun_v6: None,
            mtu: 1500,
            txqueuelen: None,
            routes: Vec::new(),
            transport: Transport::Udp,
            local: None,
            port: 0,
            sndbuf: None,
            rcvbuf: None,
            data_threads: 1,
            management: Vec::new(),
            user: None,
            group: None,
            persist_tun: false,
            daemon: None,
            syslog: None,
            errors_to_stderr: false,
            writepid: None,
            cd: None,
            log: None,
        }
    }
}
