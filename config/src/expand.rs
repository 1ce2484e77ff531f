//! Macro expansion and cross-option validation (OpenVPN 2.6 `helper.c` and
//! `options_postprocess_*`), turning a [`Builder`] into a [`Config`].
//!
//! Expansion order follows OpenVPN's `options_postprocess_mutate`: `server-ipv6`, `server`,
//! then `keepalive`, then `tcp-nodelay`. Their pushed options are appended after the
//! configuration's own `push` lines, in that order. Values (pinned by tests):
//!
//! * `server-ipv6 NET/BITS`: server `NET+1/BITS`, peer `NET+2`, pool base `NET+0x1000`
//!   (`NET+2` for /112 and longer), pool prefix BITS; pushes `tun-ipv6`.
//! * `server NET MASK [nopool]` (tun): mode server + tls-server; netmask must be contiguous,
//!   match the network, and be /16 to /29.
//!   - `topology net30` (2.6 default) or `p2p`: `ifconfig NET+1 NET+2`, pool `NET+4` to
//!     `BROADCAST-4` (`BROADCAST` for a /29), server route `NET MASK`; pushes `route NET MASK`
//!     with `client-to-client`, else (net30 only) `route NET+1`. net30 with a pool warns
//!     (deprecated by OpenVPN).
//!   - `topology subnet`: `ifconfig NET+1 MASK`, pool `NET+2` to `BROADCAST-1` with MASK, server
//!     `route-gateway NET+2` unless set; pushes `route-gateway NET+1`.
//!   - then pushes `topology T`.
//! * `keepalive A B` (server mode): `ping A`, `ping-restart 2*B`; pushes `ping A`,
//!   `ping-restart B`. Requires A, B > 0 and 2*A <= B, and no `ping`/`ping-restart`/`ping-exit`.

use crate::directives::Builder;
use crate::error::{ConfigError, Warning};
use crate::lexer::Location;
use crate::load::Loaded;
use crate::model::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

struct Ctx<'a> {
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
    top: &'a Location,
}

impl Ctx<'_> {
    fn err(&mut self, loc: Option<&Location>, detail: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            loc: loc.unwrap_or(self.top).clone(),
            detail: detail.into(),
        });
    }

    fn warn(&mut self, loc: Option<&Location>, message: impl Into<String>) {
        self.warnings.push(Warning {
            loc: loc.unwrap_or(self.top).clone(),
            message: message.into(),
        });
    }
}

/// Contiguous-netmask check of OpenVPN's `netmask_to_netbits`: `Some(bits)` when `netmask`
/// is a prefix mask and `network` has no host bits.
pub fn netmask_to_netbits(network: Ipv4Addr, netmask: Ipv4Addr) -> Option<u8> {
    let n = u32::from(network);
    let m = u32::from(netmask);
    if n & m != n {
        return None;
    }
    let bits = m.leading_ones();
    if m.checked_shl(bits).unwrap_or(0) != 0 {
        return None;
    }
    u8::try_from(bits).ok()
}

fn add_v6(a: Ipv6Addr, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(a).wrapping_add(n))
}

fn add_v4(a: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a).wrapping_add(n))
}

/// Runs expansion and validation; resolves relative paths against `cwd`.
pub(crate) fn finalize(
    b: Builder,
    cwd: PathBuf,
    top: &Location,
) -> Result<Loaded, Vec<ConfigError>> {
    let mut b = b;
    let mut cx = Ctx {
        errors: Vec::new(),
        warnings: std::mem::take(&mut b.warnings),
        top,
    };
    let seen = std::mem::take(&mut b.seen);
    let at = |name: &str| seen.get(name).cloned();

    // --- device ---------------------------------------------------------------------------
    match &b.dev {
        None => cx.err(None, "option 'dev' is missing: a server needs 'dev tun'"),
        Some(name) => {
            if !name.starts_with("tun") && b.dev_type.is_none() {
                cx.err(
                    at("dev").as_ref(),
                    format!("option 'dev': cannot figure out the device type of '{name}': add 'dev-type tun'"),
                );
            }
            b.cfg.device.name = name.clone();
            b.cfg.device.explicit_type = b.dev_type.is_some();
        }
    }

    // --- mode -----------------------------------------------------------------------------
    let has_macro = b.cfg.server_v4.is_some() || b.cfg.server_v6.is_some();
    if !has_macro && !b.mode_server {
        cx.err(
            None,
            "not a server configuration: Bulwark runs as a server only; add 'server NETWORK NETMASK' (or 'mode server' with 'tls-server' and explicit ifconfig settings)",
        );
    }
    if b.mode_server && !has_macro && !b.tls_server {
        cx.err(at("mode").as_ref(), "--mode server requires --tls-server");
    }

    // --- server-ipv6 ----------------------------------------------------------------------
    let mut macro_push: Vec<String> = Vec::new();
    if let Some(s6) = b.cfg.server_v6.clone() {
        let loc = Some(&s6.set_at);
        if b.cfg.server_v4.as_ref().is_some_and(|s| s.nopool) {
            cx.err(
                loc,
                "--server-ipv6 is incompatible with the 'nopool' option of --server",
            );
        }
        if b.cfg.pool_v6.is_some() {
            cx.err(
                at("ifconfig-ipv6-pool").as_ref(),
                "--server-ipv6 already defines an ifconfig-ipv6-pool, so you can't also specify --ifconfig-ipv6-pool explicitly",
            );
        }
        b.mode_server = true;
        b.tls_server = true;
        b.cfg.ifconfig_v6 = Some(IfconfigV6 {
            local: add_v6(s6.network, 1),
            prefix_len: s6.prefix_len,
            remote: add_v6(s6.network, 2),
        });
        let offset = if s6.prefix_len < 112 { 0x1000 } else { 2 };
        b.cfg.pool_v6 = Some(PoolV6 {
            base: add_v6(s6.network, offset),
            prefix_len: s6.prefix_len,
        });
        macro_push.push("tun-ipv6".to_string());
    }

    // --- server ---------------------------------------------------------------------------
    if let Some(mut s4) = b.cfg.server_v4.clone() {
        let loc = Some(&s4.set_at);
        let topology = b.cfg.topology;
        if !s4.nopool && b.cfg.pool_v4.is_some() {
            cx.err(
                at("ifconfig-pool").as_ref().or(loc),
                "--server already defines an ifconfig-pool, so you can't also specify --ifconfig-pool explicitly",
            );
        }
        match netmask_to_netbits(s4.network, s4.netmask) {
            None => cx.err(
                loc,
                format!(
                    "--server directive network/netmask combination is invalid ({} {})",
                    s4.network, s4.netmask
                ),
            ),
            Some(32) => cx.err(loc, "--server directive netmask is invalid"),
            Some(bits) if bits < 16 => cx.err(
                loc,
                "--server directive netmask allows for too many host addresses (subnet must be 255.255.0.0 (/16) or higher)",
            ),
            Some(bits) if bits > 29 => cx.err(
                loc,
                "--server directive when used with --dev tun must define a subnet of 255.255.255.248 (/29) or lower",
            ),
            Some(bits) => {
                if let Some(l) = at("ifconfig") {
                    cx.warn(
                        Some(&l),
                        "option 'ifconfig' is overridden by the 'server' directive",
                    );
                }
                s4.prefix_len = bits;
                let net = s4.network;
                let bcast = Ipv4Addr::from(u32::from(net) | !u32::from(s4.netmask));
                b.mode_server = true;
                b.tls_server = true;
                match topology {
                    Topology::Net30 | Topology::P2p => {
                        let reserve = if bits == 29 { 0 } else { 4 };
                        b.cfg.ifconfig_v4 = Some(IfconfigV4 {
                            local: add_v4(net, 1),
                            remote_or_netmask: add_v4(net, 2),
                        });
                        if !s4.nopool {
                            b.cfg.pool_v4 = Some(PoolV4 {
                                start: add_v4(net, 4),
                                end: Ipv4Addr::from(u32::from(bcast) - reserve),
                                netmask: None,
                            });
                        }
                        b.cfg.routes.push(Route {
                            network: net.to_string(),
                            netmask: Some(s4.netmask.to_string()),
                            gateway: None,
                            metric: None,
                        });
                        if b.cfg.clients.client_to_client {
                            macro_push.push(format!("route {} {}", net, s4.netmask));
                        } else if topology == Topology::Net30 {
                            macro_push.push(format!("route {}", add_v4(net, 1)));
                        }
                    }
                    Topology::Subnet => {
                        b.cfg.ifconfig_v4 = Some(IfconfigV4 {
                            local: add_v4(net, 1),
                            remote_or_netmask: s4.netmask,
                        });
                        if !s4.nopool {
                            b.cfg.pool_v4 = Some(PoolV4 {
                                start: add_v4(net, 2),
                                end: add_v4(bcast, u32::MAX), // bcast - 1
                                netmask: Some(s4.netmask),
                            });
                        } else if let Some(p) = b.cfg.pool_v4.as_mut() {
                            if p.netmask.is_none() {
                                p.netmask = Some(s4.netmask);
                            }
                        }
                        macro_push.push(format!("route-gateway {}", add_v4(net, 1)));
                        if b.cfg.route_gateway.is_none() {
                            b.cfg.route_gateway = Some(add_v4(net, 2).to_string());
                        }
                    }
                }
                macro_push.push(format!("topology {}", topology.as_str()));
                if topology == Topology::Net30 && !s4.nopool {
                    cx.warn(
                        loc,
                        "--topology net30 support for server configs with IPv4 pools will be removed in a future OpenVPN release; please migrate to 'topology subnet'",
                    );
                }
            }
        }
        b.cfg.server_v4 = Some(s4);
    }

    // --- keepalive ------------------------------------------------------------------------
    let mut timers_push: Vec<String> = Vec::new();
    if let Some((a, t)) = b.cfg.timers.keepalive {
        let loc = at("keepalive");
        if a == 0 || t == 0 {
            cx.err(loc.as_ref(), "--keepalive parameters must be > 0");
        } else if u64::from(a) * 2 > u64::from(t) {
            cx.err(
                loc.as_ref(),
                format!("the second parameter to --keepalive (restart timeout={t}) must be at least twice the value of the first parameter (ping interval={a}); a ratio of 1:5 or 1:6 would be even better; recommended setting is --keepalive 10 60"),
            );
        } else if b.ping.is_some() || b.ping_restart.is_some() || b.cfg.timers.ping_exit.is_some() {
            cx.err(
                loc.as_ref(),
                "--keepalive conflicts with --ping, --ping-exit, or --ping-restart; if you use --keepalive, you don't need any of the other --ping directives",
            );
        } else {
            b.cfg.timers.ping = Some(a);
            b.cfg.timers.ping_restart = Some(t.saturating_mul(2));
            timers_push.push(format!("ping {a}"));
            timers_push.push(format!("ping-restart {t}"));
        }
    } else {
        b.cfg.timers.ping = b.ping;
        b.cfg.timers.ping_restart = b.ping_restart;
    }
    macro_push.extend(timers_push);
    if b.cfg.transport.tcp_nodelay {
        // helper_tcp_nodelay: set it locally and push it.
        b.cfg.transport.socket_tcp_nodelay = true;
        macro_push.push("socket-flags TCP_NODELAY".to_string());
    }
    b.cfg.push.extend(macro_push);

    // --- transport ------------------------------------------------------------------------
    if b.cfg.transport.proto == Proto::TcpServer {
        if b.cfg.timers.explicit_exit_notify.is_some() {
            cx.warn(
                at("explicit-exit-notify").as_ref(),
                "--explicit-exit-notify ignored for --proto tcp",
            );
            b.cfg.timers.explicit_exit_notify = None;
        }
        if b.cfg.clients.connect_freq.is_some() {
            cx.err(
                at("connect-freq").as_ref(),
                "--connect-freq only works with --mode server --proto udp; try --max-clients instead",
            );
        }
    }

    // --- pools ----------------------------------------------------------------------------
    if let Some(p) = &b.cfg.pool_v4 {
        let (s, e) = (u32::from(p.start), u32::from(p.end));
        if s > e {
            cx.err(
                b.cfg.server_v4.as_ref().map(|s| &s.set_at),
                format!(
                    "--ifconfig-pool start IP [{}] is greater than end IP [{}]",
                    p.start, p.end
                ),
            );
        }
        if p.netmask.is_some() && b.cfg.topology != Topology::Subnet {
            cx.err(
                at("ifconfig-pool").as_ref(),
                "the third parameter to --ifconfig-pool (netmask) is only valid with 'topology subnet' (or dev tap)",
            );
        }
    }
    if b.cfg.pool_v6.is_some() && b.cfg.ifconfig_v6.is_none() {
        cx.err(
            at("ifconfig-ipv6-pool").as_ref(),
            "--ifconfig-ipv6-pool needs --ifconfig-ipv6",
        );
    }
    if b.cfg.clients.pool_persist.is_some() && b.cfg.pool_v4.is_none() && b.cfg.pool_v6.is_none() {
        cx.err(
            at("ifconfig-pool-persist").as_ref(),
            "--ifconfig-pool-persist must be used with --ifconfig-pool or --ifconfig-ipv6-pool",
        );
    }
    if b.cfg.ifconfig_v4.is_none() && b.cfg.ifconfig_v6.is_none() && b.mode_server {
        cx.err(
            at("mode").as_ref(),
            "the server needs a tunnel address: use 'server'/'server-ipv6', or 'ifconfig'/'ifconfig-ipv6'",
        );
    }

    // --- TLS ------------------------------------------------------------------------------
    if b.cfg.tls.cert.is_none() {
        cx.err(
            None,
            "option 'cert' is missing: a server needs its certificate ('cert FILE' or <cert>)",
        );
    }
    if b.cfg.tls.key.is_none() {
        cx.err(
            None,
            "option 'key' is missing: a server needs its private key ('key FILE' or <key>)",
        );
    }
    if b.cfg.tls.ca.is_none() && b.cfg.tls.peer_fingerprints.is_empty() {
        cx.err(
            None,
            "option 'ca' is missing: a server needs the CA that signs client certificates ('ca FILE' or <ca>), or 'peer-fingerprint'",
        );
    }
    let wraps = [
        b.tls_auth.is_some(),
        b.tls_crypt.is_some(),
        b.tls_crypt_v2.is_some(),
    ];
    if b.tls_auth.is_some() && b.tls_crypt.is_some() {
        cx.err(
            at("tls-crypt").as_ref(),
            "--tls-auth and --tls-crypt are mutually exclusive",
        );
    } else if wraps.iter().filter(|x| **x).count() > 1 {
        cx.err(
            at("tls-crypt-v2").as_ref(),
            "--tls-crypt-v2 cannot be combined with --tls-auth or --tls-crypt in Bulwark (one control-channel wrapping per server)",
        );
    } else if let Some((key, dir)) = b.tls_auth.take() {
        let direction = dir.or(b.key_direction);
        if direction == Some(KeyDirection::Inverse) {
            cx.warn(
                at("tls-auth").as_ref(),
                "tls-auth key direction is 1 (the client side); servers normally use 0",
            );
        }
        b.cfg.tls.control_wrap = ControlWrap::TlsAuth { key, direction };
    } else if let Some(key) = b.tls_crypt.take() {
        b.cfg.tls.control_wrap = ControlWrap::TlsCrypt { key };
    } else if let Some((key, force_cookie)) = b.tls_crypt_v2.take() {
        b.cfg.tls.control_wrap = ControlWrap::TlsCryptV2 { key, force_cookie };
    }
    // Bulwark's TLS stack (rustls) implements TLS 1.2 and 1.3 only.
    if let Some(min) = &b.cfg.tls.version_min {
        if min.version == "1.0" || min.version == "1.1" {
            cx.warn(
                at("tls-version-min").as_ref(),
                format!(
                    "tls-version-min {} is below what Bulwark implements; TLS 1.2 is the minimum",
                    min.version
                ),
            );
        }
    }
    if let Some(max) = &b.cfg.tls.version_max {
        if max == "1.0" || max == "1.1" {
            cx.err(
                at("tls-version-max").as_ref(),
                format!("tls-version-max {max}: Bulwark implements TLS 1.2 and 1.3 only"),
            );
        }
        if let Some(min) = &b.cfg.tls.version_min {
            if !min.or_highest && min.version.as_str() > max.as_str() {
                cx.err(
                    at("tls-version-max").as_ref(),
                    format!(
                        "tls-version-max {max} is lower than tls-version-min {}",
                        min.version
                    ),
                );
            }
        }
    }
    if b.key_direction.is_some() && !matches!(b.cfg.tls.control_wrap, ControlWrap::TlsAuth { .. }) {
        cx.warn(
            at("key-direction").as_ref(),
            "key-direction has no effect without tls-auth",
        );
    }
    if let Some(c) = &b.cfg.crypto.cipher {
        if !b
            .cfg
            .crypto
            .data_ciphers
            .iter()
            .any(|d| d.eq_ignore_ascii_case(c))
        {
            cx.warn(
                at("cipher").as_ref(),
                format!(
                    "DEPRECATED OPTION: --cipher set to '{c}' but missing in --data-ciphers ({}); --cipher is ignored for cipher negotiation",
                    b.cfg.crypto.data_ciphers.join(":")
                ),
            );
        }
    }

    // --- clients --------------------------------------------------------------------------
    let c = &b.cfg.clients;
    if c.ccd_exclusive && c.config_dir.is_none() {
        cx.err(
            at("ccd-exclusive").as_ref(),
            "--ccd-exclusive must be used with --client-config-dir",
        );
    }
    if c.duplicate_cn && c.pool_persist.is_some() {
        cx.warn(
            at("ifconfig-pool-persist").as_ref(),
            "--ifconfig-pool-persist will not work with --duplicate-cn",
        );
    }
    if c.duplicate_cn && c.config_dir.is_some() {
        cx.warn(
            at("duplicate-cn").as_ref(),
            "using --duplicate-cn and --client-config-dir together is probably not what you want",
        );
    }
    let external_auth = b.cfg.scripts.auth_user_pass_verify.is_some() || b.mgmt_client_auth;
    let postfix = "must be used with --management-client-auth or an --auth-user-pass-verify script";
    if b.cfg.tls.verify_client_cert != VerifyClientCert::Require && !external_auth {
        cx.err(
            at("verify-client-cert").as_ref(),
            format!("--verify-client-cert none|optional {postfix}"),
        );
    }
    if c.username_as_common_name && !external_auth {
        cx.err(
            at("username-as-common-name").as_ref(),
            format!("--username-as-common-name {postfix}"),
        );
    }
    if c.auth_user_pass_optional && !external_auth {
        cx.err(
            at("auth-user-pass-optional").as_ref(),
            format!("--auth-user-pass-optional {postfix}"),
        );
    }
    if let Some(tok) = &c.auth_gen_token {
        if b.cfg.tls.reneg_sec == 0 {
            cx.err(
                at("auth-gen-token").as_ref(),
                "--auth-gen-token needs a non-infinite --reneg-sec setting",
            );
        }
        if let Some(r) = tok.renewal {
            if u64::from(r) < 2 * u64::from(b.cfg.tls.hand_window) {
                cx.err(
                    at("auth-gen-token").as_ref(),
                    format!(
                        "--auth-gen-token renewal time needs to be at least two times --hand-window ({})",
                        b.cfg.tls.hand_window
                    ),
                );
            }
        }
    }

    // --- scripts --------------------------------------------------------------------------
    let s = &b.cfg.scripts;
    let scripts: [(&str, bool); 5] = [
        ("auth-user-pass-verify", s.auth_user_pass_verify.is_some()),
        ("client-connect", s.client_connect.is_some()),
        ("client-disconnect", s.client_disconnect.is_some()),
        ("learn-address", s.learn_address.is_some()),
        ("tls-verify", s.tls_verify.is_some()),
    ];
    if s.security < 2 {
        for (name, set) in scripts {
            if set {
                cx.err(
                    at(name).as_ref(),
                    format!("--{name} runs a user-defined script, which needs 'script-security 2' or higher (current level {})", s.security),
                );
            }
        }
    }

    // --- management -----------------------------------------------------------------------
    let modifiers = [
        "management-client-user",
        "management-client-group",
        "management-client-auth",
        "management-hold",
        "management-log-cache",
        "management-query-passwords",
        "management-forget-disconnect",
        "management-signal",
        "management-up-down",
    ];
    match b.mgmt.take() {
        None => {
            for m in modifiers {
                if let Some(loc) = at(m) {
                    cx.err(
                        Some(&loc),
                        format!("--{m} requires --management, which is not specified"),
                    );
                }
            }
        }
        Some((listen, password_file, set_at)) => {
            let is_unix = matches!(listen, ManagementListen::Unix { .. });
            if !is_unix && (b.mgmt_client_user.is_some() || b.mgmt_client_group.is_some()) {
                cx.err(
                    at("management-client-user")
                        .or_else(|| at("management-client-group"))
                        .as_ref(),
                    "--management-client-(user|group) can only be used on unix domain sockets",
                );
            }
            if !is_unix && password_file.is_none() {
                cx.warn(
                    Some(&set_at),
                    "using --management on a TCP port WITHOUT passwords is STRONGLY discouraged and considered insecure",
                );
            }
            b.cfg.management = Some(Management {
                listen,
                password_file,
                client_user: b.mgmt_client_user.take(),
                client_group: b.mgmt_client_group.take(),
                client_auth: b.mgmt_client_auth,
                hold: b.mgmt_hold,
                log_cache: b.mgmt_log_cache,
                query_passwords: b.mgmt_query_passwords,
                forget_disconnect: b.mgmt_forget_disconnect,
                signal: b.mgmt_signal,
                up_down: b.mgmt_up_down,
                set_at,
            });
        }
    }

    // --- paths ----------------------------------------------------------------------------
    resolve_paths(&mut b.cfg, &cwd);
    b.cfg.cwd = cwd;

    if cx.errors.is_empty() {
        Ok(Loaded {
            config: b.cfg,
            warnings: cx.warnings,
        })
    } else {
        Err(cx.errors)
    }
}

fn abs(p: &mut PathBuf, cwd: &Path) {
    if p.is_relative() {
        *p = cwd.join(&*p);
    }
}

fn abs_material(m: &mut MaterialRef, cwd: &Path) {
    if let Material::File(p) = &mut m.material {
        abs(p, cwd);
    }
}

/// Makes every file path in `cfg` absolute against `cwd` (OpenVPN opens them relative to
/// the working directory after all `cd`s). The management password file `stdin` is kept.
fn resolve_paths(cfg: &mut Config, cwd: &Path) {
    let t = &mut cfg.tls;
    for m in [
        &mut t.ca,
        &mut t.cert,
        &mut t.key,
        &mut t.dh,
        &mut t.extra_certs,
        &mut cfg.clients.auth_gen_token_secret,
    ]
    .into_iter()
    .flatten()
    {
        abs_material(m, cwd);
    }
    if let Some(c) = &mut t.crl_verify {
        abs_material(&mut c.source, cwd);
    }
    match &mut t.control_wrap {
        ControlWrap::None => {}
        ControlWrap::TlsAuth { key, .. }
        | ControlWrap::TlsCrypt { key }
        | ControlWrap::TlsCryptV2 { key, .. } => abs_material(key, cwd),
    }
    if let Some(p) = &mut cfg.clients.config_dir {
        abs(p, cwd);
    }
    if let Some(p) = &mut cfg.clients.pool_persist {
        abs(&mut p.path, cwd);
    }
    if let Some(p) = &mut cfg.scripts.tmp_dir {
        abs(p, cwd);
    }
    if let Some(m) = &mut cfg.management {
        if let ManagementListen::Unix { path } = &mut m.listen {
            abs(path, cwd);
        }
        if let Some(p) = &mut m.password_file {
            if p.as_os_str() != "stdin" {
                abs(p, cwd);
            }
        }
    }
    if let Some(l) = &mut cfg.logging.file {
        abs(&mut l.path, cwd);
    }
    if let Some(p) = &mut cfg.logging.writepid {
        abs(p, cwd);
    }
    if let Some(s) = &mut cfg.status {
        abs(&mut s.path, cwd);
    }
    if let Some(s) = &mut cfg.status_json {
        abs(&mut s.path, cwd);
    }
    if let Some(p) = &mut cfg.privileges.chroot {
        abs(p, cwd);
    }
}
