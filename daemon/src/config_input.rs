//! The single place where the typed OpenVPN configuration (`bulwark_config`) becomes the daemon's
//! [`Settings`].
//!
//! [`load`] parses the file and command-line directives exactly as `openvpn --config FILE
//! [--opt ...]` would (the file first, later command-line directives after it), then converts;
//! every error (the config crate's `FILE:LINE: message`, and the daemon's own checks such as a
//! `local` that is not an address, located where the directive was set when known) is returned,
//! one string per error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use bulwark_config::{AddrFamily, Config, ManagementListen, Proto, Topology};

use crate::netlink::RouteSpec;
use crate::settings::{Management, Settings, Transport, TunAddress};

/// The loaded configuration, in the daemon's terms.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What the parent acts on.
    pub settings: Settings,
    /// `verb` (clamped to 0..=11).
    pub verb: u8,
    /// How log lines start (`suppress-timestamps`, `machine-readable-output`).
    pub line_prefix: crate::logging::LinePrefix,
    /// Non-fatal findings (`FILE:LINE: message`).
    pub warnings: Vec<String>,
    /// The full typed configuration (for the engine configuration and key custody).
    pub config: Box<bulwark_config::Config>,
}

/// The syslog ident `path` plus `directives` ask for (`syslog`/`daemon`), read leniently: also when
/// the configuration has errors, so that they can be sent there too.
pub fn syslog_hint(path: &Path, directives: &[String]) -> Option<String> {
    let args = command_line(path, directives);
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
    let mut l = bulwark_config::Loader::new(cwd);
    l.command_line(&args);
    l.syslog_ident()
}

/// `--config PATH` followed by the command-line directives, as OpenVPN's argument list.
fn command_line(path: &Path, directives: &[String]) -> Vec<String> {
    let mut args = vec!["--config".to_owned(), path.display().to_string()];
    args.extend(directives.iter().cloned());
    args
}

/// Loads `path` plus the command-line `directives`.
pub fn load(path: &Path, directives: &[String]) -> Result<Loaded, Vec<String>> {
    let args = command_line(path, directives);
    let loaded = bulwark_config::load_args(&args)
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    // The daemon's own checks name the directive; without a line number from the config crate they
    // are located at the top-level file.
    let file = path.display().to_string();
    let settings = from_config(&loaded.config).map_err(|errs| {
        errs.into_iter()
            .map(|e| {
                if e.starts_with(&file) {
                    e
                } else {
                    format!("{file}: {e}")
                }
            })
            .collect::<Vec<_>>()
    })?;
    let verb = u8::try_from(loaded.config.logging.verb.min(11)).unwrap_or(11);
    let mut warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    if let Some(dir) = &loaded.config.privileges.chroot {
        warnings.push(format!(
            "chroot {}: ignored; the sandboxed processes always chroot into an empty directory (--sandbox-dir)",
            dir.display()
        ));
    }
    Ok(Loaded {
        settings,
        verb,
        // As OpenVPN: machine-readable-output wins over suppress-timestamps.
        line_prefix: if loaded.config.logging.machine_readable_output {
            crate::logging::LinePrefix::MachineReadable
        } else if loaded.config.logging.suppress_timestamps {
            crate::logging::LinePrefix::None
        } else {
            crate::logging::LinePrefix::Timestamp
        },
        warnings,
        config: Box::new(loaded.config),
    })
}

fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(ones).unwrap_or(32))
}

/// Converts a typed configuration; collects every problem.
pub fn from_config(c: &Config) -> Result<Settings, Vec<String>> {
    let mut errors = Vec::new();
    let tun_v4 = match (&c.ifconfig_v4, c.topology) {
        (Some(i), Topology::Subnet) => match prefix_of(i.remote_or_netmask) {
            Some(prefix) => Some(TunAddress::Subnet {
                local: i.local,
                prefix,
            }),
            None => {
                errors.push(format!(
                    "ifconfig: {} is not a valid netmask",
                    i.remote_or_netmask
                ));
                None
            }
        },
        (Some(i), Topology::Net30 | Topology::P2p) => Some(TunAddress::PointToPoint {
            local: i.local,
            peer: i.remote_or_netmask,
        }),
        (None, _) => None,
    };
    let tun_v6 = c.ifconfig_v6.as_ref().map(|i| (i.local, i.prefix_len));
    let default_gw: Option<IpAddr> = match (&c.route_gateway, &c.ifconfig_v4, c.topology) {
        (Some(g), _, _) => match g.parse::<Ipv4Addr>() {
            Ok(a) => Some(IpAddr::V4(a)),
            Err(_) => {
                // `route-gateway dhcp` and names are not meaningful for a server's own routes.
                errors.push(format!("route-gateway {g}: must be an IPv4 address"));
                None
            }
        },
        (None, Some(i), Topology::Net30 | Topology::P2p) => Some(IpAddr::V4(i.remote_or_netmask)),
        _ => None,
    };
    let mut routes = Vec::new();
    for r in &c.routes {
        let dst = r.network.parse::<Ipv4Addr>();
        let mask = r
            .netmask
            .as_deref()
            .map_or(Ok(Ipv4Addr::BROADCAST), str::parse::<Ipv4Addr>);
        let gateway = match r.gateway.as_deref() {
            None | Some("vpn_gateway") => Ok(default_gw),
            Some(g) => g.parse::<Ipv4Addr>().map(|a| Some(IpAddr::V4(a))),
        };
        let metric = r.metric.as_deref().map(str::parse::<u32>).transpose();
        match (dst, mask.ok().and_then(prefix_of), gateway, metric) {
            (Ok(dst), Some(prefix), Ok(gateway), Ok(metric)) => {
                routes.push(RouteSpec { dst: IpAddr::V4(dst), prefix, gateway, metric });
            }
            _ => errors.push(format!(
                "route {} {}: network, netmask, gateway and metric must be numeric (host names, net_gateway and \
                 remote_host are not supported on a server)",
                r.network,
                r.netmask.as_deref().unwrap_or("")
            )),
        }
    }
    for r in &c.routes_v6 {
        let parsed = r
            .network
            .split_once('/')
            .map_or(Some((r.network.as_str(), 128u8)), |(a, p)| {
                p.parse().ok().map(|p| (a, p))
            });
        let gateway = r.gateway.as_deref().map(str::parse::<Ipv6Addr>).transpose();
        let metric = r.metric.as_deref().map(str::parse::<u32>).transpose();
        match (
            parsed.and_then(|(a, p)| a.parse::<Ipv6Addr>().ok().map(|a| (a, p))),
            gateway,
            metric,
        ) {
            (Some((dst, prefix)), Ok(gateway), Ok(metric)) if prefix <= 128 => {
                routes.push(RouteSpec {
                    dst: IpAddr::V6(dst),
                    prefix,
                    gateway: gateway.map(IpAddr::V6),
                    metric,
                })
            }
            _ => errors.push(format!(
                "route-ipv6 {}: network/prefix, gateway and metric must be numeric",
                r.network
            )),
        }
    }
    let t = &c.transport;
    let transport = match (t.proto, t.family) {
        (Proto::Udp, AddrFamily::Any) => Transport::Udp,
        (Proto::Udp, AddrFamily::V4) => Transport::Udp4,
        (Proto::Udp, AddrFamily::V6) => Transport::Udp6,
        (Proto::TcpServer, AddrFamily::Any) => Transport::Tcp,
        (Proto::TcpServer, AddrFamily::V4) => Transport::Tcp4,
        (Proto::TcpServer, AddrFamily::V6) => Transport::Tcp6,
    };
    let local = match t.local.as_deref() {
        None => None,
        Some(s) => match s.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!(
                    "local {s}: must be an IP address (host names are not resolved)"
                ));
                None
            }
        },
    };
    let mut management = Vec::new();
    if let Some(m) = &c.management {
        match &m.listen {
            ManagementListen::Unix { path } => management.push(Management::Unix(path.clone())),
            ManagementListen::Tcp { host, port } => {
                let ip = if host == "localhost" {
                    Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
                } else {
                    host.parse::<IpAddr>()
                };
                match ip {
                    Ok(ip) => management.push(Management::Tcp(ip, *port)),
                    Err(_) => errors.push(format!(
                        "{}: management {host} {port}: the address must be an IP address or localhost",
                        m.set_at
                    )),
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Settings {
        dev: c.device.name.clone(),
        tun_v4,
        tun_v6,
        mtu: c.device.tun_mtu,
        txqueuelen: c.device.txqueuelen,
        routes,
        transport,
        local,
        port: t.port,
        sndbuf: t.sndbuf,
        rcvbuf: t.rcvbuf,
        data_threads: data_threads(
            transport,
            t.data_threads,
            std::thread::available_parallelism().map_or(1, usize::from),
        ),
        management,
        user: c.privileges.user.clone(),
        group: c.privileges.group.clone(),
        persist_tun: c.device.persist_tun,
        daemon: c
            .logging
            .daemon
            .as_ref()
            .map(|n| n.clone().unwrap_or_else(|| "openvpn".to_owned())),
        syslog: c.logging.syslog_ident(),
        errors_to_stderr: c.logging.errors_to_stderr,
        writepid: c.logging.writepid.clone(),
        cd: c.cd.clone(),
        log: c.logging.file.as_ref().map(|f| (f.path.clone(), f.append)),
    })
}

/// The number of data-plane threads (pairs of UDP socket and TUN queue): `data-threads N` as
/// given, `auto` one per CPU the process may run on (`cpus`, which honours the affinity mask and
/// cgroup quota) up to [`bulwark_config::AUTO_DATA_THREADS_MAX`], one when not given (measured
/// best on 2 cores, see `bench/data-path.md` step 4); a TCP server always one (its connections are
/// accepted and framed by one thread).
pub fn data_threads(t: Transport, v: Option<bulwark_config::DataThreads>, cpus: usize) -> usize {
    if t.is_tcp() {
        return 1;
    }
    match v {
        None => 1,
        Some(bulwark_config::DataThreads::Count(n)) => usize::from(n).max(1),
        Some(bulwark_config::DataThreads::Auto) => {
            cpus.clamp(1, bulwark_config::AUTO_DATA_THREADS_MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_threads_resolution() {
        use bulwark_config::DataThreads;
        assert_eq!(data_threads(Transport::Udp, None, 2), 1);
        assert_eq!(data_threads(Transport::Udp, Some(DataThreads::Auto), 2), 2);
        assert_eq!(data_threads(Transport::Udp, Some(DataThreads::Auto), 1), 1);
        assert_eq!(
            data_threads(Transport::Udp4, Some(DataThreads::Auto), 64),
            4
        );
        assert_eq!(
            data_threads(Transport::Udp6, Some(DataThreads::Count(3)), 1),
            3
        );
        assert_eq!(
            data_threads(Transport::Tcp, Some(DataThreads::Count(3)), 8),
            1
        );
        assert_eq!(data_threads(Transport::Tcp4, None, 8), 1);
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    fn settings(text: &str) -> Result<Settings, Vec<String>> {
        let loaded = bulwark_config::load_str("t.conf", text, "/")
            .map_err(|e| e.iter().map(|x| x.to_string()).collect::<Vec<_>>())?;
        from_config(&loaded.config)
    }

    const BASE: &str = "dev tun\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n";

    #[test]
    fn subnet_server() {
        let s = settings(&format!("{BASE}topology subnet\nserver 10.8.0.0 255.255.255.0\nroute 10.9.0.0 255.255.255.0\nserver-ipv6 fd00:1::/64\nproto udp4\nport 1195\ntun-mtu 1400\npersist-tun\n")).unwrap();
        assert_eq!(
            s.tun_v4,
            Some(TunAddress::Subnet {
                local: Ipv4Addr::new(10, 8, 0, 1),
                prefix: 24
            })
        );
        assert_eq!(s.tun_v6, Some(("fd00:1::1".parse().unwrap(), 64)));
        assert_eq!(s.routes.len(), 1);
        assert_eq!(
            s.routes[0].gateway,
            Some(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 2)))
        );
        assert_eq!(
            (s.transport, s.port, s.mtu, s.persist_tun),
            (Transport::Udp4, 1195, 1400, true)
        );
    }

    #[test]
    fn net30_server() {
        let s = settings(&format!("{BASE}server 10.8.0.0 255.255.255.0\n")).unwrap();
        assert_eq!(
            s.tun_v4,
            Some(TunAddress::PointToPoint {
                local: Ipv4Addr::new(10, 8, 0, 1),
                peer: Ipv4Addr::new(10, 8, 0, 2)
            })
        );
    }

    #[test]
    fn daemon_level_errors() {
        let e = settings(&format!(
            "{BASE}server 10.8.0.0 255.255.255.0\nlocal vpn.example.com\n"
        ))
        .unwrap_err();
        assert!(
            e.iter().any(|m| m.contains("local vpn.example.com")),
            "{e:?}"
        );
    }
}
