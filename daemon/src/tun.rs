//! The TUN device: creation through `/dev/net/tun` and configuration over rtnetlink.
//!
//! [`TunDevice::create`] opens the clone device, issues `TUNSETIFF` (`IFF_TUN | IFF_NO_PI |
//! IFF_VNET_HDR`, and `IFF_MULTI_QUEUE` when the worker has several data-plane threads: then one
//! more descriptor per thread is attached with the same name, each a queue of its own; a device
//! that exists without multi-queue gets one queue and a warning; `dev tun` lets the kernel pick
//! `tunN`), turns on TUN offload (`TUNSETOFFLOAD`:
//! checksum, TSO4/6 with ECN, USO4/6 where the kernel has them — the worker splits super-packets and
//! coalesces TCP segments, see `worker/src/offload.rs`; a kernel without offload support gets a
//! plain device), then sets MTU and txqueuelen, adds the IPv4 address (subnet or
//! point-to-point) and the IPv6 address, brings the link up and installs the routes. Any failure
//! removes the half-configured device again (by closing the descriptor, the device being
//! non-persistent) and reports which step failed.
//!
//! The descriptor stays in the parent for the whole lifetime of the daemon, so a worker crash never
//! removes the device, its addresses or its routes. [`TunDevice::finish`] removes the device at exit
//! unless `persist-tun` asks to keep it.

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::netlink::{if_index, Netlink, NetlinkError};
use crate::settings::{Settings, TunAddress};
use crate::sys::tun::{
    tun_set_iff, tun_set_offload, tun_set_persist, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TUN,
    IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_USO4, TUN_F_USO6,
};

/// Errors of TUN set-up and tear-down.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    Open(#[source] nix::Error),
    /// The `dev` name is not usable.
    #[error("invalid TUN device name '{0}'")]
    BadName(String),
    /// `TUNSETIFF` failed.
    #[error("cannot create TUN device '{name}' (TUNSETIFF): {source}")]
    SetIff {
        /// The requested name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Attaching a further queue to a multi-queue device failed.
    #[error("cannot attach queue {queue} to TUN device '{name}' (TUNSETIFF): {source}")]
    Queue {
        /// The device.
        name: String,
        /// The queue index.
        queue: usize,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `TUNSETPERSIST` failed.
    #[error("cannot change persistence of TUN device '{name}': {source}")]
    Persist {
        /// The device.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A netlink configuration step failed.
    #[error("TUN device {name}: {source}")]
    Netlink {
        /// The device.
        name: String,
        /// The error.
        #[source]
        source: NetlinkError,
    },
}

/// A created and configured TUN interface.
#[derive(Debug)]
pub struct TunDevice {
    /// the queues: the first is the device's own descriptor
    fds: Vec<OwnedFd>,
    name: String,
    index: u32,
    /// why the device has fewer queues than asked for, if it has
    note: Option<String>,
}

fn open_clone_device() -> Result<OwnedFd, TunError> {
    open(
        "/dev/net/tun",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(TunError::Open)
}

impl TunDevice {
    /// Creates and configures the device described by `settings`, with one queue per data-plane
    /// thread (`settings.data_threads`).
    pub fn create(settings: &Settings) -> Result<Self, TunError> {
        let requested = tun_request_name(&settings.dev)?;
        let base = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
        let want = settings.data_threads.max(1);
        let fd = open_clone_device()?;
        let set_iff_err = |source| TunError::SetIff {
            name: requested.clone(),
            source,
        };
        // EINVAL: the device exists with the other queue mode (e.g. made persistent by
        // `openvpn --mktun`, which is single-queue), or the kernel has no multi-queue TUN: the
        // other mode is tried; a single-queue device serves one data-plane thread
        let first = if want > 1 {
            base | IFF_MULTI_QUEUE
        } else {
            base
        };
        let (name, flags) = match tun_set_iff(fd.as_fd(), &requested, first) {
            Ok(name) => (name, first),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let other = first ^ IFF_MULTI_QUEUE;
                let name = tun_set_iff(fd.as_fd(), &requested, other).map_err(set_iff_err)?;
                (name, other)
            }
            Err(e) => return Err(set_iff_err(e)),
        };
        let note = (want > 1 && flags & IFF_MULTI_QUEUE == 0).then(|| {
            format!("TUN device {name} is not a multi-queue device: the data path uses 1 thread instead of {want}")
        });
        let mut fds = vec![fd];
        if flags & IFF_MULTI_QUEUE != 0 {
            // INVARIANT: every further queue attaches to the device just created, by its actual
            // name (not the `tun%d` pattern), with the same flags.
            for queue in 1..want {
                let q = open_clone_device()?;
                tun_set_iff(q.as_fd(), &name, flags).map_err(|source| TunError::Queue {
                    name: name.clone(),
                    queue,
                    source,
                })?;
                fds.push(q);
            }
        }
        enable_offload(fds[0].as_fd());
        let nl_err = |source| TunError::Netlink {
            name: name.clone(),
            source,
        };
        let index = if_index(&name).map_err(nl_err)?;
        let dev = TunDevice {
            fds,
            name: name.clone(),
            index,
            note,
        };
        dev.configure(settings).map_err(nl_err)?;
        Ok(dev)
    }

    fn configure(&self, s: &Settings) -> Result<(), NetlinkError> {
        let mut nl = Netlink::open()?;
        nl.set_link(self.index, Some(s.mtu), s.txqueuelen, false)?;
        match s.tun_v4 {
            Some(TunAddress::Subnet { local, prefix }) => {
                nl.add_address(self.index, IpAddr::V4(local), prefix, None)?;
            }
            Some(TunAddress::PointToPoint { local, peer }) => {
                nl.add_address(self.index, IpAddr::V4(local), 32, Some(IpAddr::V4(peer)))?;
            }
            None => {}
        }
        nl.set_link(self.index, None, None, true)?;
        if let Some((addr, prefix)) = s.tun_v6 {
            nl.add_address(self.index, IpAddr::V6(addr), prefix, None)?;
        }
        for r in &s.routes {
            nl.add_route(self.index, r)?;
        }
        Ok(())
    }

    /// The interface name (e.g. `tun0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The TUN descriptor of the first queue (the children get duplicates).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fds[0].as_fd()
    }

    /// Every queue's descriptor, the first one first (one per data-plane thread).
    pub fn queues(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.fds.iter().map(|f| f.as_fd()).collect()
    }

    /// Why the device has fewer queues than `data-threads` asked for (a warning to log), if so.
    pub fn queue_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Tears the device down at exit: with `persist` it is marked persistent and left in place,
    /// otherwise it is deleted (netlink) and the descriptor closed.
    pub fn finish(self, persist: bool) -> Result<(), TunError> {
        if persist {
            tun_set_persist(self.fd(), true).map_err(|source| TunError::Persist {
                name: self.name.clone(),
                source,
            })?;
            return Ok(());
        }
        // Closing our descriptor removes a non-persistent device once no child holds a duplicate;
        // deleting it explicitly also covers a child that has not exited yet.
        let mut nl = Netlink::open().map_err(|source| TunError::Netlink {
            name: self.name.clone(),
            source,
        })?;
        match nl.delete_link(self.index) {
            Ok(()) => Ok(()),
            Err(NetlinkError::Kernel { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(())
            }
            Err(source) => Err(TunError::Netlink {
                name: self.name.clone(),
                source,
            }),
        }
    }
}

/// Turns on the TUN offloads the worker handles, most first: with USO (Linux ≥ 6.2), without it,
/// checksum only; none if the kernel refuses all (the device then hands over plain packets, still
/// behind a virtio-net header, which the worker handles the same way). Returns the flags set.
pub fn enable_offload(fd: std::os::fd::BorrowedFd<'_>) -> u32 {
    let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    for flags in [tso | TUN_F_USO4 | TUN_F_USO6, tso, TUN_F_CSUM] {
        if tun_set_offload(fd, flags).is_ok() {
            return flags;
        }
    }
    0
}

/// The name passed to `TUNSETIFF`: `tun` → `tun%d` (kernel picks), `tunN`/other → as is.
pub fn tun_request_name(dev: &str) -> Result<String, TunError> {
    let name = if dev == "tun" {
        "tun%d".to_owned()
    } else {
        dev.to_owned()
    };
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(name)
    } else {
        Err(TunError::BadName(dev.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(tun_request_name("tun").unwrap(), "tun%d");
        assert_eq!(tun_request_name("tun7").unwrap(), "tun7");
        assert!(tun_request_name("a/b").is_err());
        assert!(tun_request_name("0123456789abcdef").is_err());
        assert!(tun_request_name("").is_err());
    }
}

#[cfg(test)]
mod privileged_tests {
    use super::*;
    use crate::netlink::RouteSpec;
    use crate::settings::tests_support::minimal;
    use std::process::Command;

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `f` as root in a network namespace of its own (skipped without root, unless
    /// `BULWARK_REQUIRE_PRIVILEGED=1` makes that a failure).
    fn in_private_netns(f: impl FnOnce() + Send + 'static) {
        if !nix::unistd::geteuid().is_root() {
            assert_ne!(
                std::env::var("BULWARK_REQUIRE_PRIVILEGED").as_deref(),
                Ok("1"),
                "needs root"
            );
            eprintln!("skipped: needs root");
            return;
        }
        // unshare(CLONE_NEWNET) applies to the calling thread only; the namespace dies with the thread.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f();
        })
        .join()
        .unwrap();
    }

    /// Creates a TUN device inside a network namespace private to this test thread.
    #[test]
    fn create_configure_remove_in_private_netns() {
        in_private_netns(|| {
            let mut s = minimal();
            s.tun_v4 = Some(TunAddress::Subnet {
                local: "10.8.0.1".parse().unwrap(),
                prefix: 24,
            });
            s.tun_v6 = Some(("fd00:8::1".parse().unwrap(), 64));
            s.mtu = 1400;
            s.txqueuelen = Some(321);
            s.routes = vec![RouteSpec {
                dst: "10.9.0.0".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.8.0.2".parse().unwrap()),
                metric: Some(5),
            }];
            let dev = TunDevice::create(&s).unwrap();
            assert!(dev.name().starts_with("tun"));
            let link = ip(&["-o", "link", "show", "dev", dev.name()]);
            assert!(link.contains("mtu 1400"), "{link}");
            assert!(link.contains("qlen 321"), "{link}");
            assert!(link.contains(",UP"), "{link}");
            let addr = ip(&["-o", "addr", "show", "dev", dev.name()]);
            assert!(addr.contains("inet 10.8.0.1/24 brd 10.8.0.255"), "{addr}");
            assert!(addr.contains("inet6 fd00:8::1/64"), "{addr}");
            let routes = ip(&["route", "show", "10.9.0.0/24"]);
            assert!(
                routes.contains(&format!("via 10.8.0.2 dev {} metric 5", dev.name())),
                "{routes}"
            );
            let name = dev.name().to_owned();
            dev.finish(false).unwrap();
            let out = Command::new("ip")
                .args(["link", "show", "dev", &name])
                .output()
                .unwrap();
            assert!(!out.status.success(), "device still present");

            // net30 point-to-point, explicit name
            let mut p = minimal();
            p.dev = "tun5".into();
            p.tun_v4 = Some(TunAddress::PointToPoint {
                local: "10.4.0.1".parse().unwrap(),
                peer: "10.4.0.2".parse().unwrap(),
            });
            let dev = TunDevice::create(&p).unwrap();
            assert_eq!(dev.name(), "tun5");
            let addr = ip(&["-o", "addr", "show", "dev", "tun5"]);
            assert!(addr.contains("inet 10.4.0.1 peer 10.4.0.2/32"), "{addr}");
            dev.finish(false).unwrap();
        });
    }

    /// `data-threads N`: a multi-queue device with N queues; a device that exists without
    /// multi-queue serves with one queue and says why.
    #[test]
    fn multi_queue_device_and_single_queue_fallback() {
        in_private_netns(|| {
            let mut s = minimal();
            s.dev = "tun3".into();
            s.data_threads = 3;
            let dev = TunDevice::create(&s).unwrap();
            assert_eq!(dev.queues().len(), 3);
            assert_eq!(dev.queue_note(), None);
            let link = ip(&["-d", "link", "show", "dev", "tun3"]);
            assert!(link.contains("multi_queue"), "{link}");
            assert!(link.contains("numqueues 3"), "{link}");
            dev.finish(false).unwrap();

            // made beforehand without multi-queue (as `openvpn --mktun` does)
            ip(&["tuntap", "add", "dev", "tun4", "mode", "tun"]);
            let mut s = minimal();
            s.dev = "tun4".into();
            s.data_threads = 2;
            let dev = TunDevice::create(&s).unwrap();
            assert_eq!(dev.queues().len(), 1);
            let note = dev.queue_note().unwrap_or_default().to_owned();
            assert!(note.contains("not a multi-queue device"), "{note}");
            dev.finish(false).unwrap();
        });
    }
}
