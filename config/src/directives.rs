//! The directive table: one static row per directive, driving parsing into [`crate::Config`].
//!
//! [`directives()`] enumerates every row ([`DirectiveSpec`]): the name, the synopsis, a
//! one-line description, the accepted parameter count, the contexts where it may appear
//! (server configuration, client-config-dir file), whether an inline `<name>` block is
//! accepted, and its [`Support`] status (supported, accepted without effect, or refused with
//! the reason). The man page and `--help` are generated from it.
//!
//! Adding a directive is adding one row to `TABLE` and, for supported ones, a parse function
//! `fn(&mut Builder, &Directive<'_>) -> Result<(), ParseError>` that stores the values in the
//! [`Builder`]. The loader checks context, inline use and arity from the row before the parse
//! function runs, so parse functions may index `d.args` within the row's arity range.

use crate::error::Warning;
use crate::lexer::Location;
use crate::model::*;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Contexts a directive may appear in (bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contexts(u8);

impl Contexts {
    /// The server configuration (files and command line).
    pub const SERVER: Contexts = Contexts(1);
    /// A client-config-dir file.
    pub const CCD: Contexts = Contexts(2);
    /// Both.
    pub const BOTH: Contexts = Contexts(3);

    /// Whether `self` includes `other`.
    pub fn contains(self, other: Contexts) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Which kind of text is being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The server configuration.
    Server,
    /// A client-config-dir file.
    Ccd,
}

impl Context {
    fn bit(self) -> Contexts {
        match self {
            Context::Server => Contexts::SERVER,
            Context::Ccd => Contexts::CCD,
        }
    }
}

/// Support status of a directive (public view of the table's handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Parsed into the typed configuration.
    Supported,
    /// Accepted and ignored; the note says why (and is logged as a warning when non-empty).
    Ignored {
        /// Why it has no effect.
        note: &'static str,
    },
    /// Refused with an error giving the reason.
    Unsupported {
        /// Why.
        reason: &'static str,
    },
}

/// A parse failure of one directive (turned into a located [`crate::ConfigError`] by the
/// loader).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A parameter is malformed or out of range.
    #[error("{0}")]
    Bad(String),
    /// The value asks for a deliberately unsupported feature.
    #[error("not supported: {0}")]
    Unsupported(String),
}

fn bad<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError::Bad(msg.into()))
}

/// One directive occurrence, as handed to a parse function.
#[derive(Debug, Clone)]
pub struct Directive<'a> {
    /// Directive name.
    pub name: &'a str,
    /// Parameters (without the name). Empty for an inline block.
    pub args: &'a [String],
    /// Inline block content.
    pub inline: Option<&'a str>,
    /// Location.
    pub loc: &'a Location,
}

pub(crate) type ParseFn = fn(&mut Builder, &Directive<'_>) -> Result<(), ParseError>;

#[derive(Clone, Copy)]
pub(crate) enum Handler {
    Parse(ParseFn),
    /// Handled by the loader itself (`config`, `cd`).
    Loader,
    Ignore(&'static str),
    Unsupported(&'static str),
}

/// One row of the directive table.
#[derive(Clone, Copy)]
pub struct DirectiveSpec {
    /// Directive name (without `--`).
    pub name: &'static str,
    /// Usage synopsis, e.g. `port PORT`.
    pub synopsis: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Minimum number of parameters (an inline block counts as one).
    pub min_args: usize,
    /// Maximum number of parameters.
    pub max_args: usize,
    /// Where the directive may appear.
    pub contexts: Contexts,
    /// Whether an inline `<name>` block is accepted.
    pub inline: bool,
    pub(crate) handler: Handler,
}

impl std::fmt::Debug for DirectiveSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectiveSpec")
            .field("name", &self.name)
            .field("synopsis", &self.synopsis)
            .field("min_args", &self.min_args)
            .field("max_args", &self.max_args)
            .field("support", &self.support())
            .finish()
    }
}

impl DirectiveSpec {
    /// The support status.
    pub fn support(&self) -> Support {
        match self.handler {
            Handler::Parse(_) | Handler::Loader => Support::Supported,
            Handler::Ignore(note) => Support::Ignored { note },
            Handler::Unsupported(reason) => Support::Unsupported { reason },
        }
    }

    const fn inl(mut self) -> Self {
        self.inline = true;
        self
    }

    const fn ccd(mut self) -> Self {
        self.contexts = Contexts::CCD;
        self
    }

    const fn both(mut self) -> Self {
        self.contexts = Contexts::BOTH;
        self
    }

    /// Checks the parameter count; `Err` holds the message.
    pub(crate) fn check_arity(&self, n: usize) -> Result<(), String> {
        if n >= self.min_args && n <= self.max_args {
            return Ok(());
        }
        let plural = |k: usize| if k == 1 { "" } else { "s" };
        let want = if self.min_args == self.max_args {
            format!(
                "expects {} parameter{}",
                self.min_args,
                plural(self.min_args)
            )
        } else if self.max_args >= ANY {
            format!(
                "expects at least {} parameter{}",
                self.min_args,
                plural(self.min_args)
            )
        } else {
            format!("expects {} to {} parameters", self.min_args, self.max_args)
        };
        Err(format!("{want}, got {n} (usage: {})", self.synopsis))
    }

    /// Whether it may appear in `ctx`.
    pub(crate) fn allowed_in(&self, ctx: Context) -> bool {
        self.contexts.contains(ctx.bit())
    }
}

const fn s(
    name: &'static str,
    min_args: usize,
    max_args: usize,
    synopsis: &'static str,
    description: &'static str,
    handler: Handler,
) -> DirectiveSpec {
    DirectiveSpec {
        name,
        synopsis,
        description,
        min_args,
        max_args,
        contexts: Contexts::SERVER,
        inline: false,
        handler,
    }
}

const ANY: usize = crate::lexer::MAX_PARAMS - 1;

use Handler::{Ignore as I, Loader as L, Parse as P, Unsupported as U};

const CLIENT_ONLY: &str =
    "it is a client option; Bulwark is a server and this configuration must not contain it";
const SCRIPT_ROOT: &str = "interface up/down scripts would run with the daemon's privileges; configure the interface with the daemon's own settings, and use client-connect/learn-address hooks (which run unprivileged) for per-client actions";
const PKCS11: &str =
    "PKCS#11 tokens are not supported; the server key must be a PEM file or inline block";
const COMPRESSION: &str = "compression of tunnel traffic enables VORACLE-style attacks and is never performed; use 'compress stub-v2', 'compress' or 'comp-lzo no' for compatibility with clients that expect compression framing";

#[rustfmt::skip]
static TABLE: &[DirectiveSpec] = &[
    // --- sources -------------------------------------------------------------------------
    s("config", 1, 1, "config FILE", "Read options from FILE (relative to the current directory); nests up to 10 levels.", L),
    s("cd", 1, 1, "cd DIR", "Change the directory against which later relative paths (config includes, key files, status, …) are resolved.", L),
    s("ignore-unknown-option", 1, ANY, "ignore-unknown-option OPT…", "Treat the named options as warnings when they are unknown.", P(p_ignore_unknown)),
    s("setenv", 1, 2, "setenv NAME VALUE | setenv opt DIRECTIVE…", "Set an environment variable for scripts; 'setenv opt X…' makes an unknown directive X a warning.", P(p_setenv)),
    s("setenv-safe", 1, 2, "setenv-safe NAME VALUE", "Set OPENVPN_NAME in the scripts' environment.", P(p_setenv_safe)),
    // --- mode ----------------------------------------------------------------------------
    s("mode", 1, 1, "mode server", "Run as a multi-client server (the only mode Bulwark supports).", P(p_mode)),
    s("tls-server", 0, 0, "tls-server", "Act as the TLS server in the handshake (implied by 'server').", P(p_tls_server)),
    s("server", 2, 3, "server NETWORK NETMASK [nopool]", "Macro: server mode, server address .1, client pool, pushed topology/route (OpenVPN helper.c).", P(p_server)),
    s("server-ipv6", 1, 1, "server-ipv6 NETWORK/BITS", "Macro: IPv6 server address ::1, IPv6 pool, push tun-ipv6 (prefix /64 to /124).", P(p_server_ipv6)),
    s("client", 0, 0, "client", "Client mode macro.", U(CLIENT_ONLY)),
    s("tls-client", 0, 0, "tls-client", "Act as TLS client.", U(CLIENT_ONLY)),
    s("pull", 0, 0, "pull", "Accept pushed options.", U(CLIENT_ONLY)),
    s("connection", 1, 1, "connection (inline <connection> block)", "Client connection profile.", U("<connection> blocks are client connection profiles and cannot be used in a server configuration")).inl(),
    s("remote", 1, 3, "remote HOST [PORT [PROTO]]", "Server to connect to.", U(CLIENT_ONLY)),
    s("nobind", 0, 0, "nobind", "Do not bind a local port.", U("a server must bind its port (OpenVPN: --nobind cannot be used with --mode server)")),
    s("resolv-retry", 1, 1, "resolv-retry SECONDS|infinite", "Retry name resolution of --remote.", I("resolv-retry is a client option and has no effect on a server")),
    s("auth-user-pass", 0, 1, "auth-user-pass [FILE]", "Client username/password.", U(CLIENT_ONLY)),
    s("auth-nocache", 0, 0, "auth-nocache", "Do not cache passwords in memory.", I("")),
    s("http-proxy", 1, 4, "http-proxy HOST PORT …", "Connect through an HTTP proxy.", U(CLIENT_ONLY)),
    s("socks-proxy", 1, 3, "socks-proxy HOST [PORT]", "Connect through a SOCKS proxy.", U(CLIENT_ONLY)),
    s("redirect-gateway", 0, ANY, "redirect-gateway FLAGS…", "Route all traffic through the VPN.", U("it cannot be used in server mode; use push \"redirect-gateway def1\" instead")),
    s("redirect-private", 0, ANY, "redirect-private FLAGS…", "Like redirect-gateway without the default route.", U("it cannot be used in server mode; push it instead")),
    s("dhcp-option", 1, 2, "dhcp-option TYPE VALUE", "Client DNS/DHCP settings.", U("on a server it is only meaningful pushed: use push \"dhcp-option DNS 10.8.0.1\"")),
    s("block-outside-dns", 0, 0, "block-outside-dns", "Windows client DNS leak protection.", U("it is a Windows client option; use push \"block-outside-dns\"")),
    // --- transport -----------------------------------------------------------------------
    s("proto", 1, 1, "proto udp|udp4|udp6|tcp|tcp4|tcp6|tcp-server|tcp4-server|tcp6-server", "Transport protocol (default udp).", P(p_proto)),
    s("port", 1, 1, "port PORT", "Port to listen on (default 1194).", P(p_port)),
    s("lport", 1, 1, "lport PORT", "Local port to listen on (overrides port).", P(p_lport)),
    s("local", 1, 1, "local HOST", "Local address to bind (default: all).", P(p_local)),
    s("bind", 0, 1, "bind [ipv6only]", "Bind to the local address (always done in server mode).", I("")),
    s("float", 0, 0, "float", "Allow a client's address to change.", P(p_float)),
    s("multihome", 0, 0, "multihome", "Reply from the address a UDP packet was received on.", P(p_multihome)),
    s("sndbuf", 1, 1, "sndbuf BYTES", "Socket send buffer size.", P(p_sndbuf)),
    s("rcvbuf", 1, 1, "rcvbuf BYTES", "Socket receive buffer size.", P(p_rcvbuf)),
    s("tcp-queue-limit", 1, 1, "tcp-queue-limit N", "Maximum queued packets per TCP client.", P(p_tcp_queue_limit)),
    s("bcast-buffers", 1, 1, "bcast-buffers N", "Broadcast buffer count.", P(p_bcast_buffers)),
    s("tcp-nodelay", 0, 0, "tcp-nodelay", "Set TCP_NODELAY on TCP sockets and push it to clients.", P(p_tcp_nodelay)),
    s("coalesce-usecs", 1, 1, "coalesce-usecs N", "Bulwark: after a turn of the data path that handled two or more packets, wait N microseconds (0-1000, default 50, 0 = off) so that packets arriving meanwhile are handled together (interrupt moderation, like a NIC's rx-usecs): fewer wake-ups per packet for the server and its peers, at most N microseconds more latency, only under load.", P(p_coalesce_usecs)),
    s("data-threads", 1, 1, "data-threads N|auto", "Bulwark: serve the UDP data path with N threads (1-8), each with its own SO_REUSEPORT socket and TUN queue; clients are spread over them by address, and any thread may serve any client. Default 1; auto uses one per CPU the server may run on, at most 4. On a 2-core machine two threads cost about a fifth more CPU per packet and a quarter of the handshake rate (the threads share one engine lock), in exchange for lower loss when other work takes the server's core (bench/data-path.md); more threads are meant for machines with cores to spare (not measured on such yet). A TCP server always uses one. Changing it needs a restart of bulwark.", P(p_data_threads)),
    s("fast-io", 0, 0, "fast-io", "Optimise UDP writes (accepted; Bulwark's I/O path does not need it).", P(p_fast_io)),
    s("port-share", 2, 3, "port-share HOST PORT [DIR]", "Share the TCP port with another service.", U("proxying non-OpenVPN connections from the internet-facing worker is not supported")),
    s("fragment", 1, 2, "fragment MAX [mtu]", "Internal datagram fragmentation.", U("internal fragmentation is a legacy, insecure-by-design feature; use mssfix and a correct tun-mtu")),
    s("link-mtu", 1, 1, "link-mtu N", "Set the link MTU.", U("deprecated by OpenVPN; use tun-mtu")),
    s("mtu-test", 0, 0, "mtu-test", "Empirical MTU test.", U("not supported in server mode")),
    s("mtu-disc", 1, 1, "mtu-disc no|maybe|yes", "Path MTU discovery setting.", U("not supported; the kernel default is used")),
    s("passtos", 0, 0, "passtos", "Copy the TOS byte to the outer packet.", U("not supported")),
    s("shaper", 1, 1, "shaper BYTES", "Traffic shaping.", U("cannot be used in server mode")),
    s("proto-force", 1, 1, "proto-force udp|tcp", "Restrict connection profiles to a protocol.", U(CLIENT_ONLY)),
    // --- device --------------------------------------------------------------------------
    s("dev", 1, 1, "dev tun|tunN|NAME", "The tun device (tap is not supported).", P(p_dev)),
    s("dev-type", 1, 1, "dev-type tun", "Device type when the name does not start with tun.", P(p_dev_type)),
    s("dev-node", 1, 1, "dev-node PATH", "Explicit device node.", U("the daemon always opens /dev/net/tun")),
    s("topology", 1, 1, "topology subnet|net30|p2p", "Interface topology (default net30).", P(p_topology)),
    s("tun-ipv6", 0, 0, "tun-ipv6", "Obsolete; IPv6 is always enabled.", I("")),
    s("tun-mtu", 1, 2, "tun-mtu MTU [OCC_MTU]", "MTU of the tun device (default 1500).", P(p_tun_mtu)),
    s("mssfix", 0, 2, "mssfix [MAX [mtu|fixed]]", "Clamp TCP MSS of tunnelled connections.", P(p_mssfix)),
    s("txqueuelen", 1, 1, "txqueuelen N", "tun transmit queue length.", P(p_txqueuelen)),
    s("persist-tun", 0, 0, "persist-tun", "Keep the tun device across restarts.", P(p_persist_tun)),
    s("persist-key", 0, 0, "persist-key", "Keep keys across restarts.", P(p_persist_key)),
    s("ifconfig", 2, 2, "ifconfig LOCAL REMOTE|NETMASK", "The server's tun IPv4 address (set by 'server').", P(p_ifconfig)),
    s("ifconfig-ipv6", 2, 2, "ifconfig-ipv6 ADDR/BITS REMOTE", "The server's tun IPv6 address (set by 'server-ipv6').", P(p_ifconfig_ipv6)),
    s("ifconfig-pool", 2, 3, "ifconfig-pool START END [NETMASK]", "IPv4 client address pool (set by 'server').", P(p_ifconfig_pool)),
    s("ifconfig-ipv6-pool", 1, 1, "ifconfig-ipv6-pool ADDR/BITS", "IPv6 client address pool (set by 'server-ipv6').", P(p_ifconfig_ipv6_pool)),
    s("ifconfig-pool-persist", 1, 2, "ifconfig-pool-persist FILE [SECONDS]", "Persist pool assignments (default every 600 s).", P(p_pool_persist)),
    s("ifconfig-pool-linear", 0, 0, "ifconfig-pool-linear", "Removed in OpenVPN 2.5.", U("removed in OpenVPN 2.5; use 'topology subnet'")),
    s("route", 1, 4, "route NETWORK [NETMASK [GATEWAY [METRIC]]]", "Add a route on the server.", P(p_route)),
    s("route-ipv6", 1, 3, "route-ipv6 NETWORK/BITS [GATEWAY [METRIC]]", "Add an IPv6 route on the server.", P(p_route_ipv6)),
    s("route-gateway", 1, 1, "route-gateway GW|dhcp", "Default gateway for 'route'.", P(p_route_gateway)),
    s("route-delay", 0, 2, "route-delay [N [W]]", "Delay adding routes.", U("cannot be used with --mode server")),
    s("route-up", 1, 1, "route-up CMD", "Script after routes are added.", U(SCRIPT_ROOT)),
    s("route-pre-down", 1, 1, "route-pre-down CMD", "Script before routes are removed.", U(SCRIPT_ROOT)),
    s("up", 1, 1, "up CMD", "Script after the device is opened.", U(SCRIPT_ROOT)),
    s("down", 1, 1, "down CMD", "Script after the device is closed.", U(SCRIPT_ROOT)),
    s("down-pre", 0, 0, "down-pre", "Run the down script before closing.", U(SCRIPT_ROOT)),
    s("up-restart", 0, 0, "up-restart", "Run up/down on restarts.", U(SCRIPT_ROOT)),
    s("up-delay", 0, 0, "up-delay", "Delay the up script.", U("cannot be used with --mode server")),
    s("ipchange", 1, 1, "ipchange CMD", "Script on remote address change.", U("cannot be used with --mode server")),
    s("client-nat", 4, 4, "client-nat snat|dnat NET MASK ALIAS", "Stateless NAT.", U("not supported")),
    // --- TLS -----------------------------------------------------------------------------
    s("ca", 1, 1, "ca FILE", "CA certificate(s) to verify clients.", P(p_ca)).inl(),
    s("capath", 1, 1, "capath DIR", "Directory of CA certificates.", U("a directory of hashed CA files is not supported; concatenate the CAs into the 'ca' file")),
    s("cert", 1, 1, "cert FILE", "The server certificate.", P(p_cert)).inl(),
    s("key", 1, 1, "key FILE", "The server private key (stays in the privileged daemon).", P(p_key)).inl(),
    s("extra-certs", 1, 1, "extra-certs FILE", "Extra chain certificates sent to clients.", P(p_extra_certs)).inl(),
    s("dh", 1, 1, "dh FILE|none", "Diffie-Hellman parameters (ignored: ECDHE only).", P(p_dh)).inl(),
    s("pkcs12", 1, 1, "pkcs12 FILE", "PKCS#12 bundle.", U("PKCS#12 bundles are not supported; convert to PEM files (openssl pkcs12 -nodes)")),
    s("pkcs11-providers", 1, ANY, "pkcs11-providers LIB…", "PKCS#11 providers.", U(PKCS11)),
    s("pkcs11-id", 1, 1, "pkcs11-id ID", "PKCS#11 object.", U(PKCS11)),
    s("pkcs11-id-management", 0, 0, "pkcs11-id-management", "PKCS#11 via management.", U(PKCS11)),
    s("pkcs11-pin-cache", 1, 1, "pkcs11-pin-cache SECONDS", "PKCS#11 PIN cache.", U(PKCS11)),
    s("pkcs11-protected-authentication", 1, ANY, "pkcs11-protected-authentication …", "PKCS#11.", U(PKCS11)),
    s("pkcs11-private-mode", 1, ANY, "pkcs11-private-mode …", "PKCS#11.", U(PKCS11)),
    s("pkcs11-cert-private", 1, ANY, "pkcs11-cert-private …", "PKCS#11.", U(PKCS11)),
    s("cryptoapicert", 1, 1, "cryptoapicert SELECT", "Windows certificate store.", U("Windows only")),
    s("engine", 0, 1, "engine [NAME]", "OpenSSL engine.", U("OpenSSL engines are not used (rustls/ring)")),
    s("providers", 1, ANY, "providers NAME…", "OpenSSL providers.", U("OpenSSL providers are not used (rustls/ring)")),
    s("management-external-key", 0, ANY, "management-external-key", "Client key via management.", U(CLIENT_ONLY)),
    s("management-external-cert", 1, 1, "management-external-cert HINT", "Client cert via management.", U(CLIENT_ONLY)),
    s("tls-auth", 1, 2, "tls-auth FILE [0|1]", "HMAC-authenticate the control channel with a static key.", P(p_tls_auth)).inl(),
    s("key-direction", 1, 1, "key-direction 0|1", "Key direction for tls-auth (servers use 0).", P(p_key_direction)),
    s("tls-crypt", 1, 1, "tls-crypt FILE", "Encrypt and authenticate the control channel with a static key.", P(p_tls_crypt)).inl(),
    s("tls-crypt-v2", 1, 2, "tls-crypt-v2 FILE [force-cookie|allow-noncookie]", "Per-client control channel keys (server key).", P(p_tls_crypt_v2)).inl(),
    s("secret", 1, 2, "secret FILE [DIR]", "Static-key mode.", U("static-key mode has no forward secrecy and is deprecated by OpenVPN (removed by default in 2.7); use TLS with tls-crypt")),
    s("crl-verify", 1, 2, "crl-verify FILE [dir]", "Certificate revocation list (re-read when it changes).", P(p_crl_verify)).inl(),
    s("peer-fingerprint", 1, 1, "peer-fingerprint SHA256", "Accept clients by certificate fingerprint (one per line in an inline block).", P(p_peer_fingerprint)).inl(),
    s("auth", 1, 1, "auth DIGEST", "HMAC digest for CBC data channel and tls-auth.", P(p_auth)),
    s("cipher", 1, 1, "cipher NAME", "Legacy/fallback data cipher.", P(p_cipher)),
    s("data-ciphers", 1, 1, "data-ciphers LIST", "Negotiable data ciphers, colon-separated.", P(p_data_ciphers)),
    s("ncp-ciphers", 1, 1, "ncp-ciphers LIST", "Old name of data-ciphers.", P(p_data_ciphers)),
    s("data-ciphers-fallback", 1, 1, "data-ciphers-fallback NAME", "Cipher for peers that cannot negotiate.", P(p_data_ciphers_fallback)),
    s("ncp-disable", 0, 0, "ncp-disable", "Removed in OpenVPN 2.6.", U("removed in OpenVPN 2.6; set data-ciphers instead")),
    s("tls-version-min", 1, 2, "tls-version-min 1.2|1.3 [or-highest]", "Minimum TLS version.", P(p_tls_version_min)),
    s("tls-version-max", 1, 1, "tls-version-max 1.2|1.3", "Maximum TLS version.", P(p_tls_version_max)),
    s("tls-cipher", 1, 1, "tls-cipher LIST", "TLS 1.2 cipher list.", P(p_tls_cipher)),
    s("tls-ciphersuites", 1, 1, "tls-ciphersuites LIST", "TLS 1.3 cipher suites.", P(p_tls_ciphersuites)),
    s("tls-groups", 1, 1, "tls-groups LIST", "Key exchange groups, colon-separated.", P(p_tls_groups)),
    s("ecdh-curve", 1, 1, "ecdh-curve NAME", "Deprecated: ECDH curve (use tls-groups).", P(p_ecdh_curve)),
    s("tls-cert-profile", 1, 1, "tls-cert-profile legacy|preferred|suiteb|insecure", "Certificate crypto profile.", P(p_tls_cert_profile)),
    s("remote-cert-tls", 1, 1, "remote-cert-tls client|server", "Require the peer certificate's key usage/EKU for its role.", P(p_remote_cert_tls)),
    s("remote-cert-eku", 1, 1, "remote-cert-eku OID", "Require an extended key usage.", P(p_remote_cert_eku)),
    s("remote-cert-ku", 0, ANY, "remote-cert-ku [HEX…]", "Require a key usage.", P(p_remote_cert_ku)),
    s("ns-cert-type", 1, 1, "ns-cert-type client|server", "Netscape certificate type (obsolete).", U("Netscape certificate types are obsolete; use 'remote-cert-tls client'")),
    s("verify-client-cert", 0, 1, "verify-client-cert none|optional|require", "Whether clients must present a certificate.", P(p_verify_client_cert)),
    s("client-cert-not-required", 0, 0, "client-cert-not-required", "Removed in OpenVPN 2.5.", U("removed in OpenVPN 2.5; use 'verify-client-cert none'")),
    s("verify-x509-name", 1, 2, "verify-x509-name NAME [subject|name|name-prefix]", "Accept only peers with this name.", P(p_verify_x509_name)),
    s("x509-username-field", 1, ANY, "x509-username-field [ext:]FIELD…", "Certificate field used as the username (default CN).", P(p_x509_username_field)),
    s("tls-verify", 1, 1, "tls-verify CMD", "Script to verify each certificate in the chain.", P(p_tls_verify)),
    s("tls-export-cert", 1, 1, "tls-export-cert DIR", "Export peer certificates for scripts.", U("not supported")),
    s("tls-timeout", 1, 1, "tls-timeout SECONDS", "Control packet retransmit timeout (default 2).", P(p_tls_timeout)),
    s("hand-window", 1, 1, "hand-window SECONDS", "TLS handshake window (default 60).", P(p_hand_window)),
    s("tran-window", 1, 1, "tran-window SECONDS", "Key transition window (default 3600).", P(p_tran_window)),
    s("reneg-sec", 1, 2, "reneg-sec MAX [MIN]", "Renegotiate data keys after this many seconds (default 3600).", P(p_reneg_sec)),
    s("reneg-bytes", 1, 1, "reneg-bytes N", "Renegotiate after N bytes.", P(p_reneg_bytes)),
    s("reneg-pkts", 1, 1, "reneg-pkts N", "Renegotiate after N packets.", P(p_reneg_pkts)),
    s("tls-exit", 0, 0, "tls-exit", "Exit on TLS negotiation failure.", P(p_tls_exit)),
    s("replay-window", 1, 2, "replay-window N [SECONDS]", "Replay protection window.", P(p_replay_window)),
    s("mute-replay-warnings", 0, 0, "mute-replay-warnings", "Silence duplicate-packet warnings.", P(p_mute_replay_warnings)),
    s("no-replay", 0, 0, "no-replay", "Disable replay protection.", U("disabling replay protection is insecure and refused")),
    s("opt-verify", 0, 0, "opt-verify", "Deprecated option consistency check.", I("opt-verify is deprecated by OpenVPN and ignored")),
    // --- compression ---------------------------------------------------------------------
    s("comp-lzo", 0, 1, "comp-lzo [no]", "Legacy LZO framing; only 'no' (no compression) is accepted.", P(p_comp_lzo)),
    s("compress", 0, 1, "compress [stub|stub-v2|migrate]", "Compression framing without compression.", P(p_compress)),
    s("allow-compression", 1, 1, "allow-compression no", "Compression policy; only 'no' is accepted.", P(p_allow_compression)),
    s("comp-noadapt", 0, 0, "comp-noadapt", "Disable adaptive compression.", I("")),
    // --- keepalive and timers -------------------------------------------------------------
    s("keepalive", 2, 2, "keepalive INTERVAL TIMEOUT", "Macro: ping INTERVAL, ping-restart 2*TIMEOUT, push ping/ping-restart.", P(p_keepalive)),
    s("ping", 1, 1, "ping SECONDS", "Send a ping after this much silence.", P(p_ping)),
    s("ping-restart", 1, 1, "ping-restart SECONDS", "Drop a client after this much silence.", P(p_ping_restart)),
    s("ping-exit", 1, 1, "ping-exit SECONDS", "Exit after this much silence.", P(p_ping_exit)),
    s("ping-timer-rem", 0, 0, "ping-timer-rem", "Only run ping timers with a remote address.", P(p_ping_timer_rem)),
    s("inactive", 1, 2, "inactive SECONDS [BYTES]", "Drop idle clients.", P(p_inactive)),
    s("explicit-exit-notify", 0, 1, "explicit-exit-notify [N]", "Tell UDP clients when the server restarts or exits.", P(p_explicit_exit_notify)),
    // --- push / clients ------------------------------------------------------------------
    s("push", 1, 1, "push \"OPTION\"", "Push an option to clients.", P(p_push)).both(),
    s("push-remove", 1, 1, "push-remove OPTION", "Remove inherited pushed options starting with OPTION (client-config-dir).", P(p_push_remove)).ccd(),
    s("push-reset", 0, 0, "push-reset", "Do not inherit global push options (client-config-dir).", P(p_push_reset)).ccd(),
    s("ifconfig-push", 2, 3, "ifconfig-push LOCAL REMOTE|NETMASK [ALIAS]", "Static client address (client-config-dir).", P(p_ifconfig_push)).ccd(),
    s("ifconfig-ipv6-push", 1, 2, "ifconfig-ipv6-push ADDR/BITS [REMOTE]", "Static client IPv6 address (client-config-dir).", P(p_ifconfig_ipv6_push)).ccd(),
    s("iroute", 1, 2, "iroute NETWORK [NETMASK]", "Route a network to this client (client-config-dir).", P(p_iroute)).ccd(),
    s("iroute-ipv6", 1, 1, "iroute-ipv6 NETWORK/BITS", "Route an IPv6 network to this client (client-config-dir).", P(p_iroute_ipv6)).ccd(),
    s("disable", 0, 0, "disable", "Refuse this client (client-config-dir).", P(p_disable)).ccd(),
    s("client-config-dir", 1, 1, "client-config-dir DIR", "Per-client configuration files named by common name.", P(p_ccd)),
    s("ccd-exclusive", 0, 0, "ccd-exclusive", "Refuse clients without a client-config-dir file.", P(p_ccd_exclusive)),
    s("client-to-client", 0, 0, "client-to-client", "Route traffic between clients inside the server.", P(p_c2c)),
    s("duplicate-cn", 0, 0, "duplicate-cn", "Allow several clients with the same common name.", P(p_duplicate_cn)),
    s("max-clients", 1, 1, "max-clients N", "Maximum concurrent clients (default 1024).", P(p_max_clients)),
    s("max-routes-per-client", 1, 1, "max-routes-per-client N", "Maximum learnt routes per client (default 256).", P(p_max_routes_per_client)),
    s("connect-freq", 2, 2, "connect-freq N SECONDS", "Limit new connections to N per SECONDS (UDP).", P(p_connect_freq)),
    s("connect-freq-initial", 2, 2, "connect-freq-initial N SECONDS", "Limit initial reset replies to N per SECONDS.", P(p_connect_freq_initial)),
    s("hash-size", 2, 2, "hash-size REAL VIRTUAL", "Internal hash table sizes.", P(p_hash_size)),
    s("stale-routes-check", 1, 2, "stale-routes-check AGE [INTERVAL]", "Remove learnt routes not used for AGE seconds.", P(p_stale_routes_check)),
    s("block-ipv6", 0, 0, "block-ipv6", "Answer client IPv6 packets with ICMPv6 unreachable.", P(p_block_ipv6)),
    s("server-bridge", 0, 4, "server-bridge [IP NETMASK POOL_START POOL_END]", "Bridged (tap) server macro.", U("tap/bridged mode is not supported; use 'dev tun' with 'server'")),
    s("server-poll-timeout", 1, 1, "server-poll-timeout SECONDS", "Client connect timeout.", U(CLIENT_ONLY)),
    // --- authentication and scripts ------------------------------------------------------
    s("script-security", 1, 1, "script-security 0|1|2|3", "Which external programs may run (default 1: none of the user scripts).", P(p_script_security)),
    s("auth-user-pass-verify", 2, 2, "auth-user-pass-verify CMD via-env|via-file", "Script that checks client usernames/passwords.", P(p_auth_user_pass_verify)),
    s("username-as-common-name", 0, 0, "username-as-common-name", "Use the authenticated username as common name.", P(p_uacn)),
    s("auth-user-pass-optional", 0, 0, "auth-user-pass-optional", "Allow clients without username/password.", P(p_aupo)),
    s("client-connect", 1, 1, "client-connect CMD", "Script run when a client connects.", P(p_client_connect)),
    s("client-disconnect", 1, 1, "client-disconnect CMD", "Script run when a client disconnects.", P(p_client_disconnect)),
    s("client-crresponse", 1, 1, "client-crresponse CMD", "Script for challenge/response answers.", U("not supported yet")),
    s("learn-address", 1, 1, "learn-address CMD", "Script run when a client address/route is added or removed.", P(p_learn_address)),
    s("auth-gen-token", 0, 3, "auth-gen-token [LIFETIME [RENEWAL]] [external-auth]", "Issue session tokens after authentication.", P(p_auth_gen_token)),
    s("auth-gen-token-secret", 1, 1, "auth-gen-token-secret FILE", "Key for session tokens.", P(p_auth_gen_token_secret)).inl(),
    s("tmp-dir", 1, 1, "tmp-dir DIR", "Directory for temporary files (via-file credentials).", P(p_tmp_dir)),
    s("plugin", 1, ANY, "plugin MODULE [ARGS]", "Load a plugin.", U("plugins are shared objects loaded into the privileged process; use auth-user-pass-verify (runs unprivileged) instead, e.g. with a PAM helper script")),
    // --- management ----------------------------------------------------------------------
    s("management", 2, 3, "management IP PORT [PWFILE] | management PATH unix [PWFILE]", "Management interface listener.", P(p_management)),
    s("management-client-user", 1, 1, "management-client-user USER", "Only this user may connect to the unix management socket.", P(p_mgmt_client_user)),
    s("management-client-group", 1, 1, "management-client-group GROUP", "Only this group may connect to the unix management socket.", P(p_mgmt_client_group)),
    s("management-client-role", 3, 3, "management-client-role ROLE user|group NAME", "Bulwark: management role (monitor, operator, auth, admin) for a unix-socket peer's user, or for a group (primary or supplementary); repeatable, user rules first, first match wins.", P(p_mgmt_client_role)),
    s("management-default-role", 1, 1, "management-default-role ROLE", "Bulwark: management role of peers no management-client-role rule matches (default admin, as OpenVPN).", P(p_mgmt_default_role)),
    s("management-max-clients", 1, 1, "management-max-clients N", "Bulwark: concurrent management sessions (default 16); a further connection gets one ERROR line and is closed.", P(p_mgmt_max_clients)),
    s("management-audit", 1, 1, "management-audit FILE|syslog", "Bulwark: one audit line per management command (peer, role, command with secrets redacted, outcome) appended to FILE (created 0600) or sent to syslog (authpriv); default: the daemon log at verb 3.", P(p_mgmt_audit)),
    s("management-monitor-socket", 1, 1, "management-monitor-socket PATH", "Bulwark: an additional unix management socket on which every connection has the read-only monitor role (the management pw-file applies; management-client-user/-group and role rules do not).", P(p_mgmt_monitor_socket)),
    s("management-client-auth", 0, 0, "management-client-auth", "Client authentication via the management interface.", P(p_mgmt_client_auth)),
    s("management-hold", 0, 0, "management-hold", "Start in hold state until released.", P(p_mgmt_hold)),
    s("management-log-cache", 1, 1, "management-log-cache N", "Lines of log kept for the management interface.", P(p_mgmt_log_cache)),
    s("management-query-passwords", 0, 0, "management-query-passwords", "Ask for passwords through management.", P(p_mgmt_query_passwords)),
    s("management-forget-disconnect", 0, 0, "management-forget-disconnect", "Forget passwords when a management client disconnects.", P(p_mgmt_forget_disconnect)),
    s("management-signal", 0, 0, "management-signal", "SIGUSR1 when a management client disconnects.", P(p_mgmt_signal)),
    s("management-up-down", 0, 0, "management-up-down", "Report tunnel up/down events.", P(p_mgmt_up_down)),
    s("management-client", 0, 0, "management-client", "Connect out to the management client.", U("connecting out to a management client is not supported; listen on a unix socket instead")),
    // --- process, logging, status --------------------------------------------------------
    s("user", 1, 1, "user USER", "Run the unprivileged parts as this user.", P(p_user)),
    s("group", 1, 1, "group GROUP", "Run the unprivileged parts as this group.", P(p_group)),
    s("chroot", 1, 1, "chroot DIR", "Chroot directory (Bulwark always chroots its sandboxed processes).", P(p_chroot)),
    s("nice", 1, 1, "nice N", "Process priority.", P(p_nice)),
    s("mlock", 0, 0, "mlock", "Lock memory.", P(p_mlock)),
    s("daemon", 0, 1, "daemon [PROGNAME]", "Detach and log to syslog.", P(p_daemon)),
    s("writepid", 1, 1, "writepid FILE", "Write the daemon's PID.", P(p_writepid)),
    s("syslog", 0, 1, "syslog [PROGNAME]", "Log to syslog (/dev/log, facility daemon) with PROGNAME as the ident (default openvpn); log/log-append take precedence.", P(p_syslog)),
    s("log", 1, 1, "log FILE", "Log to FILE (truncated at start).", P(p_log)),
    s("log-append", 1, 1, "log-append FILE", "Log to FILE (appended).", P(p_log_append)),
    s("verb", 1, 1, "verb N", "Log verbosity 0-11 (default 1).", P(p_verb)),
    s("mute", 1, 1, "mute N", "Log at most N consecutive messages of the same category.", P(p_mute)),
    s("suppress-timestamps", 0, 0, "suppress-timestamps", "No timestamps in log lines.", P(p_suppress_timestamps)),
    s("machine-readable-output", 0, 0, "machine-readable-output", "Log with UNIX timestamps and flags.", P(p_machine_readable)),
    s("errors-to-stderr", 0, 0, "errors-to-stderr", "When logging to standard output (no log, syslog or daemon), print fatal errors to standard error instead.", P(p_errors_to_stderr)),
    s("status", 1, 2, "status FILE [SECONDS]", "Write the status file every SECONDS (default 60).", P(p_status)),
    s("status-version", 1, 1, "status-version 1|2|3", "Status file format (default 1).", P(p_status_version)),
    s("metrics-listen", 2, 3, "metrics-listen IP PORT | metrics-listen PATH unix [GROUP]", "Bulwark: serve Prometheus metrics (GET /metrics, read-only) from the management broker on a loopback address or a unix socket (mode 0660, group GROUP); off by default.", P(p_metrics_listen)),
    s("metrics-per-client", 1, 1, "metrics-per-client N", "Bulwark: export per-client series (bytes, connection time) for at most N clients (default 0: none).", P(p_metrics_per_client)),
    s("status-json", 1, 2, "status-json FILE [SECONDS]", "Bulwark: also write the status as a versioned JSON document (schema bulwark.status.v1) every SECONDS (default 60).", P(p_status_json)),
    s("log-file-mode", 1, 1, "log-file-mode MODE", "Bulwark: octal permissions of the log/log-append file, set whenever it is opened (default 0600), e.g. 0640 with log-file-group.", P(p_log_file_mode)),
    s("log-file-group", 1, 1, "log-file-group GROUP", "Bulwark: group owner of the log/log-append file (e.g. a monitoring group).", P(p_log_file_group)),
    s("status-file-mode", 1, 1, "status-file-mode MODE", "Bulwark: octal permissions of the status files (default 0644), e.g. 0640 with status-file-group.", P(p_status_file_mode)),
    s("status-file-group", 1, 1, "status-file-group GROUP", "Bulwark: group owner of the status files (e.g. a monitoring group).", P(p_status_file_group)),
    s("disable-dco", 0, 0, "disable-dco", "Disable data channel offload.", I("")),
    s("iproute", 1, 1, "iproute CMD", "ip command used by OpenVPN.", I("Bulwark configures interfaces over netlink and never runs ip(8)")),
    s("ifconfig-nowarn", 0, 0, "ifconfig-nowarn", "Silence ifconfig consistency warnings.", I("")),
    s("ifconfig-noexec", 0, 0, "ifconfig-noexec", "Do not configure the interface.", U("the daemon always configures the tun interface itself")),
    s("route-noexec", 0, 0, "route-noexec", "Do not add routes.", U("the daemon always adds the configured routes itself")),
    s("route-metric", 1, 1, "route-metric N", "Default metric for 'route'.", P(p_route_metric)),
    s("socket-flags", 1, ANY, "socket-flags TCP_NODELAY", "Socket options.", P(p_socket_flags)),
    s("mark", 1, 1, "mark VALUE", "SO_MARK for transport packets.", U("not supported yet")),
    s("tun-mtu-extra", 1, 1, "tun-mtu-extra N", "Extra tap buffer room.", U("tap-only legacy option")),
    s("vlan-tagging", 0, 0, "vlan-tagging", "802.1Q on tap.", U("tap/bridged mode is not supported")),
    s("vlan-accept", 1, 1, "vlan-accept all|tagged|untagged", "802.1Q on tap.", U("tap/bridged mode is not supported")),
    s("vlan-pvid", 1, 1, "vlan-pvid N", "802.1Q on tap.", U("tap/bridged mode is not supported")),
    s("tls-crypt-v2-verify", 1, 1, "tls-crypt-v2-verify CMD", "Script to check tls-crypt-v2 client metadata.", U("not supported yet")),
    s("session-timeout", 1, 1, "session-timeout SECONDS", "Disconnect clients after a fixed time.", U("not supported yet")),
    s("compat-mode", 1, 1, "compat-mode VERSION", "Defaults of an older OpenVPN.", U("compatibility defaults of older OpenVPN versions are not supported; set the options explicitly")),
    s("persist-local-ip", 0, 0, "persist-local-ip", "Keep the local address across restarts.", U(CLIENT_ONLY)),
    s("persist-remote-ip", 0, 0, "persist-remote-ip", "Keep the remote address across restarts.", U(CLIENT_ONLY)),
    s("genkey", 0, 3, "genkey TYPE FILE", "Generate a key and exit.", U("use 'openvpn --genkey' to generate keys")),
    s("allow-pull-fqdn", 0, 0, "allow-pull-fqdn", "Allow pulled FQDNs.", U(CLIENT_ONLY)),
    s("auth-retry", 1, 1, "auth-retry none|nointeract|interact", "Client auth retry.", U(CLIENT_ONLY)),
    s("connect-retry", 1, 2, "connect-retry N [MAX]", "Client reconnect delay.", U(CLIENT_ONLY)),
    s("connect-retry-max", 1, 1, "connect-retry-max N", "Client reconnect attempts.", U(CLIENT_ONLY)),
    s("connect-timeout", 1, 1, "connect-timeout N", "Client connect timeout.", U(CLIENT_ONLY)),
    s("pull-filter", 2, 2, "pull-filter accept|ignore|reject TEXT", "Filter pulled options.", U(CLIENT_ONLY)),
    s("push-peer-info", 0, 0, "push-peer-info", "Send client information to the server.", U(CLIENT_ONLY)),
    s("remote-random", 0, 0, "remote-random", "Randomise remotes.", U(CLIENT_ONLY)),
    s("remote-random-hostname", 0, 0, "remote-random-hostname", "Randomise the remote name.", U(CLIENT_ONLY)),
    s("route-nopull", 0, 0, "route-nopull", "Ignore pushed routes.", U(CLIENT_ONLY)),
    s("static-challenge", 2, 3, "static-challenge TEXT ECHO [FORMAT]", "Client challenge prompt.", U(CLIENT_ONLY)),
    s("rport", 1, 1, "rport PORT", "Remote port.", U(CLIENT_ONLY)),
    s("http-proxy-option", 1, 3, "http-proxy-option TYPE [PARM]", "HTTP proxy settings.", U(CLIENT_ONLY)),
    s("socks-proxy-retry", 0, 0, "socks-proxy-retry", "Retry the SOCKS proxy.", U(CLIENT_ONLY)),
    s("management-query-proxy", 0, 0, "management-query-proxy", "Ask management for a proxy.", U(CLIENT_ONLY)),
    s("management-query-remote", 0, 0, "management-query-remote", "Ask management for the remote.", U(CLIENT_ONLY)),
    s("single-session", 0, 0, "single-session", "Allow only one session.", U("cannot be used with a multi-client server")),
    s("allow-recursive-routing", 0, 0, "allow-recursive-routing", "Allow routing tunnel traffic into the tunnel.", U("cannot be used with --mode server")),
    s("askpass", 0, 1, "askpass [FILE]", "Passphrase of an encrypted private key.", U("encrypted private keys are not supported; store the server key unencrypted with owner-only permissions (only the privileged daemon reads it)")),
    s("bind-dev", 1, 1, "bind-dev DEVICE", "Bind the transport socket to a device (VRF).", U("not supported yet")),
    s("disable-occ", 0, 0, "disable-occ", "Disable the options consistency check.", I("the options consistency check is informational; Bulwark does not act on it")),
    s("dns", 1, ANY, "dns …", "DNS settings (2.6).", U("not supported yet; push the client settings with push \"dhcp-option DNS …\"")),
    s("echo", 0, ANY, "echo [TEXT…]", "Echo text to the log/management.", U("not supported")),
    s("gremlin", 1, 1, "gremlin FLAGS", "Simulate network problems (testing).", U("a testing option")),
    s("keying-material-exporter", 2, 2, "keying-material-exporter LABEL LEN", "Export TLS keying material to scripts.", U("not supported yet")),
    s("lladdr", 1, 1, "lladdr MAC", "tap MAC address.", U("tap/bridged mode is not supported")),
    s("mktun", 0, 0, "mktun", "Create a persistent tun and exit.", U("a standalone command, not a server option")),
    s("rmtun", 0, 0, "rmtun", "Remove a persistent tun and exit.", U("a standalone command, not a server option")),
    s("memstats", 1, 1, "memstats FILE", "Write memory statistics.", U("not supported")),
    s("no-name-remapping", 0, 0, "no-name-remapping", "Keep special characters in names.", U("not supported")),
    s("replay-persist", 1, 1, "replay-persist FILE", "Persist replay state (static-key mode).", U("only meaningful in static-key mode, which is not supported")),
    s("route-ipv6-gateway", 1, 1, "route-ipv6-gateway GW", "Default IPv6 gateway for 'route-ipv6'.", P(p_route_ipv6_gateway)),
    s("verify-hash", 1, 2, "verify-hash HASH [ALG]", "Pin the CA certificate's fingerprint.", U("not supported yet")),
    s("x509-track", 1, 1, "x509-track ATTR", "Export certificate attributes to scripts.", U("not supported yet")),
    s("test-crypto", 0, 0, "test-crypto", "Crypto self-test.", U("a standalone command, not a server option")),
    s("show-ciphers", 0, 0, "show-ciphers", "List ciphers and exit.", U("a standalone command, not a server option")),
    s("show-digests", 0, 0, "show-digests", "List digests and exit.", U("a standalone command, not a server option")),
    s("show-tls", 0, 0, "show-tls", "List TLS ciphers and exit.", U("a standalone command, not a server option")),
    s("show-engines", 0, 0, "show-engines", "List engines and exit.", U("a standalone command, not a server option")),
    s("show-gateway", 0, 1, "show-gateway [ADDR]", "Show the default gateway and exit.", U("a standalone command, not a server option")),
    s("show-pkcs11-ids", 0, 2, "show-pkcs11-ids [PROVIDER [CERT_PRIVATE]]", "List PKCS#11 ids and exit.", U(PKCS11)),
    s("remap-usr1", 1, 1, "remap-usr1 SIGNAL", "Remap SIGUSR1.", U("not supported")),
];

/// Every directive Bulwark knows, in table order.
pub fn directives() -> &'static [DirectiveSpec] {
    TABLE
}

/// Looks a directive up by name.
pub fn lookup(name: &str) -> Option<&'static DirectiveSpec> {
    TABLE.iter().find(|d| d.name == name)
}

/// Mutable state the parse functions fill; turned into a [`Config`] by the expansion step.
#[derive(Debug)]
pub struct Builder {
    pub(crate) ctx: Context,
    pub(crate) cfg: Config,
    pub(crate) ccd: CcdConfig,
    pub(crate) warnings: Vec<Warning>,
    /// Last location of each directive seen (for validation messages).
    pub(crate) seen: HashMap<&'static str, Location>,
    pub(crate) mode_server: bool,
    pub(crate) tls_server: bool,
    pub(crate) dev: Option<String>,
    pub(crate) dev_type: Option<String>,
    pub(crate) key_direction: Option<KeyDirection>,
    pub(crate) tls_auth: Option<(MaterialRef, Option<KeyDirection>)>,
    pub(crate) tls_crypt: Option<MaterialRef>,
    pub(crate) tls_crypt_v2: Option<(MaterialRef, bool)>,
    pub(crate) mgmt: Option<(ManagementListen, Option<PathBuf>, Location)>,
    pub(crate) mgmt_client_user: Option<String>,
    pub(crate) mgmt_client_group: Option<String>,
    pub(crate) mgmt_client_auth: bool,
    pub(crate) mgmt_hold: bool,
    pub(crate) mgmt_log_cache: Option<u32>,
    pub(crate) mgmt_query_passwords: bool,
    pub(crate) mgmt_forget_disconnect: bool,
    pub(crate) mgmt_signal: bool,
    pub(crate) mgmt_up_down: bool,
    pub(crate) ping: Option<u32>,
    pub(crate) ping_restart: Option<u32>,
}

impl Builder {
    /// A builder with OpenVPN's defaults; `cwd` is the starting working directory.
    pub(crate) fn new(ctx: Context, cwd: PathBuf) -> Self {
        Builder {
            ctx,
            cfg: default_config(cwd),
            ccd: CcdConfig::default(),
            warnings: Vec::new(),
            seen: HashMap::new(),
            mode_server: false,
            tls_server: false,
            dev: None,
            dev_type: None,
            key_direction: None,
            tls_auth: None,
            tls_crypt: None,
            tls_crypt_v2: None,
            mgmt: None,
            mgmt_client_user: None,
            mgmt_client_group: None,
            mgmt_client_auth: false,
            mgmt_hold: false,
            mgmt_log_cache: None,
            mgmt_query_passwords: false,
            mgmt_forget_disconnect: false,
            mgmt_signal: false,
            mgmt_up_down: false,
            ping: None,
            ping_restart: None,
        }
    }

    pub(crate) fn warn(&mut self, loc: &Location, message: impl Into<String>) {
        self.warnings.push(Warning {
            loc: loc.clone(),
            message: message.into(),
        });
    }
}

/// The default data-cipher list of OpenVPN 2.6.
pub const DEFAULT_DATA_CIPHERS: [&str; 3] = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];

fn default_config(cwd: PathBuf) -> Config {
    Config {
        files: Vec::new(),
        cwd,
        cd: None,
        transport: Transport {
            proto: Proto::Udp,
            family: AddrFamily::Any,
            local: None,
            port: 1194,
            port_directive: None,
            lport: None,
            float: false,
            multihome: false,
            sndbuf: None,
            rcvbuf: None,
            tcp_queue_limit: None,
            bcast_buffers: None,
            tcp_nodelay: false,
            socket_tcp_nodelay: false,
            fast_io: false,
            coalesce_usecs: None,
            data_threads: None,
        },
        device: Device {
            name: String::new(),
            explicit_type: false,
            tun_mtu: 1500,
            tun_mtu_occ: None,
            mssfix: None,
            txqueuelen: None,
            persist_tun: false,
        },
        topology: Topology::Net30,
        server_v4: None,
        server_v6: None,
        ifconfig_v4: None,
        ifconfig_v6: None,
        pool_v4: None,
        pool_v6: None,
        route_gateway: None,
        route_metric: None,
        route_ipv6_gateway: None,
        routes: Vec::new(),
        routes_v6: Vec::new(),
        push: Vec::new(),
        tls: Tls {
            ca: None,
            cert: None,
            key: None,
            dh: None,
            dh_none: false,
            extra_certs: None,
            crl_verify: None,
            peer_fingerprints: Vec::new(),
            control_wrap: ControlWrap::None,
            version_min: None,
            version_max: None,
            cipher: None,
            ciphersuites: None,
            groups: None,
            ecdh_curve: None,
            cert_profile: None,
            remote_cert_tls: None,
            remote_cert_eku: None,
            remote_cert_ku: None,
            verify_client_cert: VerifyClientCert::Require,
            verify_x509_name: None,
            x509_username_field: vec!["CN".to_string()],
            tls_timeout: 2,
            hand_window: 60,
            tran_window: 3600,
            reneg_sec: 3600,
            reneg_sec_min: None,
            reneg_bytes: None,
            reneg_pkts: None,
            tls_exit: false,
        },
        crypto: Crypto {
            auth: None,
            cipher: None,
            data_ciphers: DEFAULT_DATA_CIPHERS.iter().map(|s| s.to_string()).collect(),
            data_ciphers_explicit: false,
            data_ciphers_fallback: None,
            replay_window: None,
            mute_replay_warnings: false,
            persist_key: false,
        },
        timers: Timers {
            keepalive: None,
            ping: None,
            ping_restart: None,
            ping_exit: None,
            ping_timer_rem: false,
            inactive: None,
            explicit_exit_notify: None,
        },
        clients: Clients {
            config_dir: None,
            ccd_exclusive: false,
            client_to_client: false,
            duplicate_cn: false,
            max_clients: 1024,
            max_routes_per_client: 256,
            pool_persist: None,
            connect_freq: None,
            connect_freq_initial: None,
            hash_size: None,
            stale_routes_check: None,
            username_as_common_name: false,
            auth_user_pass_optional: false,
            auth_gen_token: None,
            auth_gen_token_secret: None,
            block_ipv6: false,
        },
        scripts: Scripts {
            security: 1,
            auth_user_pass_verify: None,
            client_connect: None,
            client_disconnect: None,
            learn_address: None,
            tls_verify: None,
            tmp_dir: None,
            setenv: Vec::new(),
            setenv_safe: Vec::new(),
        },
        management: None,
        logging: Logging {
            verb: 1,
            mute: None,
            file: None,
            syslog: None,
            daemon: None,
            writepid: None,
            suppress_timestamps: false,
            machine_readable_output: false,
            errors_to_stderr: false,
            log_file_mode: None,
            log_file_group: None,
        },
        status: None,
        status_version: 1,
        status_json: None,
        metrics: None,
        metrics_per_client: 0,
        status_file_mode: None,
        status_file_group: None,
        management_access: ManagementAccess::default(),
        privileges: Privileges {
            user: None,
            group: None,
            chroot: None,
            nice: None,
            mlock: false,
        },
        compression: Compression::Unset,
        allow_compression_no: false,
        ignore_unknown: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// value parsers

fn num_u32(what: &str, v: &str) -> Result<u32, ParseError> {
    match v.parse::<u32>() {
        Ok(n) => Ok(n),
        Err(_) => bad(format!("{what} must be a non-negative integer, got '{v}'")),
    }
}

fn num_u64(what: &str, v: &str) -> Result<u64, ParseError> {
    match v.parse::<u64>() {
        Ok(n) => Ok(n),
        Err(_) => bad(format!("{what} must be a non-negative integer, got '{v}'")),
    }
}

fn positive(what: &str, v: &str) -> Result<u32, ParseError> {
    let n = num_u32(what, v)?;
    if n == 0 {
        return bad(format!("{what} must be greater than 0"));
    }
    Ok(n)
}

fn port(v: &str) -> Result<u16, ParseError> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => bad(format!("bad port number '{v}' (must be 1-65535)")),
    }
}

fn ipv4(what: &str, v: &str) -> Result<Ipv4Addr, ParseError> {
    v.parse::<Ipv4Addr>()
        .or_else(|_| bad(format!("{what} '{v}' is not an IPv4 address")))
}

fn ipv6(what: &str, v: &str) -> Result<Ipv6Addr, ParseError> {
    v.parse::<Ipv6Addr>()
        .or_else(|_| bad(format!("{what} '{v}' is not an IPv6 address")))
}

/// Parses `ADDR/BITS` (bits default 128, as OpenVPN's get_ipv6_addr).
fn ipv6_prefix(what: &str, v: &str) -> Result<(Ipv6Addr, u8), ParseError> {
    let (a, bits) = match v.split_once('/') {
        Some((a, b)) => match b.parse::<u8>() {
            Ok(n) if n <= 128 => (a, n),
            _ => return bad(format!("{what} '{v}' has a bad prefix length")),
        },
        None => (v, 128),
    };
    Ok((ipv6(what, a)?, bits))
}

fn path(v: &str) -> PathBuf {
    PathBuf::from(v)
}

fn material(d: &Directive<'_>) -> MaterialRef {
    let material = match d.inline {
        Some(content) => Material::Inline(content.to_string()),
        None => Material::File(path(&d.args[0])),
    };
    MaterialRef {
        material,
        set_at: d.loc.clone(),
    }
}

fn set_once<T>(slot: &mut Option<T>, v: T) {
    *slot = Some(v);
}

// ---------------------------------------------------------------------------------------
// parse functions

fn p_ignore_unknown(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    for a in d.args {
        let name = a.strip_prefix("--").unwrap_or(a);
        b.cfg.ignore_unknown.push(name.to_string());
    }
    Ok(())
}

fn p_setenv(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    // `setenv opt …` is handled by the loader before lookup.
    let value = d.args.get(1).cloned().unwrap_or_default();
    b.cfg.scripts.setenv.push((d.args[0].clone(), value));
    Ok(())
}

fn p_setenv_safe(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let value = d.args.get(1).cloned().unwrap_or_default();
    b.cfg.scripts.setenv_safe.push((d.args[0].clone(), value));
    Ok(())
}

fn p_mode(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    match d.args[0].as_str() {
        "server" => {
            b.mode_server = true;
            Ok(())
        }
        "p2p" => Err(ParseError::Unsupported(
            "'mode p2p' (point-to-point) is not supported; Bulwark only runs as a multi-client server".into(),
        )),
        other => bad(format!("bad mode '{other}' (must be 'server' or 'p2p')")),
    }
}

fn p_tls_server(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.tls_server = true;
    Ok(())
}

fn p_server(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let network = ipv4("network", &d.args[0])
        .map_err(|_| ParseError::Bad("error parsing --server parameters: bad network".into()))?;
    let netmask = ipv4("netmask", &d.args[1])
        .map_err(|_| ParseError::Bad("error parsing --server parameters: bad netmask".into()))?;
    if network.is_unspecified() || netmask.is_unspecified() {
        return bad("error parsing --server parameters: network and netmask must be non-zero");
    }
    let nopool = match d.args.get(2).map(String::as_str) {
        None => false,
        Some("nopool") => true,
        Some(other) => {
            return bad(format!(
                "'{other}' is not a recognized flag (only 'nopool')"
            ))
        }
    };
    // As in OpenVPN, `nopool` is a sticky flag: a later `server` line without it does not
    // clear it.
    let nopool = nopool || b.cfg.server_v4.as_ref().is_some_and(|s| s.nopool);
    b.cfg.server_v4 = Some(ServerV4 {
        network,
        netmask,
        prefix_len: 0,
        nopool,
        set_at: d.loc.clone(),
    });
    Ok(())
}

fn p_server_ipv6(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let (network, bits) = ipv6_prefix("network", &d.args[0])?;
    if !(64..=124).contains(&bits) {
        return bad(format!(
            "network must be between /64 and /124 (not /{bits})"
        ));
    }
    b.cfg.server_v6 = Some(ServerV6 {
        network,
        prefix_len: bits,
        set_at: d.loc.clone(),
    });
    Ok(())
}

fn p_proto(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let (proto, family) = match d.args[0].as_str() {
        "udp" => (Proto::Udp, AddrFamily::Any),
        "udp4" => (Proto::Udp, AddrFamily::V4),
        "udp6" => (Proto::Udp, AddrFamily::V6),
        "tcp" | "tcp-server" => (Proto::TcpServer, AddrFamily::Any),
        "tcp4" | "tcp4-server" => (Proto::TcpServer, AddrFamily::V4),
        "tcp6" | "tcp6-server" => (Proto::TcpServer, AddrFamily::V6),
        "tcp-client" | "tcp4-client" | "tcp6-client" => {
            return Err(ParseError::Unsupported(format!(
                "'proto {}' is a client protocol; a server uses tcp or tcp-server",
                d.args[0]
            )))
        }
        other => return bad(format!("bad protocol '{other}'")),
    };
    b.cfg.transport.proto = proto;
    b.cfg.transport.family = family;
    Ok(())
}

// `port` sets the local and remote port, `lport` only the local one; the last of them
// decides the listening port (OpenVPN order semantics).
fn p_port(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let p = port(&d.args[0])?;
    b.cfg.transport.port_directive = Some(p);
    b.cfg.transport.port = p;
    Ok(())
}

fn p_lport(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let p = port(&d.args[0])?;
    b.cfg.transport.lport = Some(p);
    b.cfg.transport.port = p;
    Ok(())
}

fn p_local(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    if d.args[0].is_empty() {
        return bad("empty address");
    }
    b.cfg.transport.local = Some(d.args[0].clone());
    Ok(())
}

fn p_float(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.transport.float = true;
    Ok(())
}

fn p_multihome(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.transport.multihome = true;
    Ok(())
}

fn p_sndbuf(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    set_once(&mut b.cfg.transport.sndbuf, num_u32("size", &d.args[0])?);
    Ok(())
}

fn p_rcvbuf(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    set_once(&mut b.cfg.transport.rcvbuf, num_u32("size", &d.args[0])?);
    Ok(())
}

fn p_coalesce_usecs(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = num_u32("microseconds", &d.args[0])?;
    if v > MAX_COALESCE_USECS {
        return bad(format!(
            "microseconds must be at most {MAX_COALESCE_USECS}, got {v}"
        ));
    }
    set_once(&mut b.cfg.transport.coalesce_usecs, v);
    Ok(())
}

fn p_data_threads(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = if d.args[0] == "auto" {
        DataThreads::Auto
    } else {
        let n = num_u32("thread count", &d.args[0])?;
        match u8::try_from(n) {
            Ok(n) if (1..=MAX_DATA_THREADS).contains(&n) => DataThreads::Count(n),
            _ => {
                return bad(format!(
                    "thread count must be 1 to {MAX_DATA_THREADS} or auto, got {n}"
                ))
            }
        }
    };
    set_once(&mut b.cfg.transport.data_threads, v);
    Ok(())
}

fn p_tcp_queue_limit(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    set_once(
        &mut b.cfg.transport.tcp_queue_limit,
        positive("queue limit", &d.args[0])?,
    );
    Ok(())
}

fn p_bcast_buffers(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    set_once(
        &mut b.cfg.transport.bcast_buffers,
        positive("buffer count", &d.args[0])?,
    );
    Ok(())
}

fn p_tcp_nodelay(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.transport.tcp_nodelay = true;
    Ok(())
}

fn p_fast_io(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.transport.fast_io = true;
    Ok(())
}

fn p_dev(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let name = &d.args[0];
    if name.starts_with("tap") {
        return Err(ParseError::Unsupported(
            "'dev tap' (layer-2 bridging) is not supported; use 'dev tun'".into(),
        ));
    }
    if name == "null" {
        return Err(ParseError::Unsupported(
            "'dev null' is not supported; use 'dev tun'".into(),
        ));
    }
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.contains(char::is_whitespace)
    {
        return bad(format!(
            "'{name}' is not a valid interface name (1-15 characters, no '/' or spaces)"
        ));
    }
    b.dev = Some(name.clone());
    Ok(())
}

fn p_dev_type(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    match d.args[0].as_str() {
        "tun" => {
            b.dev_type = Some("tun".into());
            Ok(())
        }
        "tap" => Err(ParseError::Unsupported(
            "'dev-type tap' (layer-2 bridging) is not supported; use 'dev-type tun'".into(),
        )),
        "null" => Err(ParseError::Unsupported(
            "'dev-type null' is not supported".into(),
        )),
        other => bad(format!("bad device type '{other}' (must be tun)")),
    }
}

fn p_topology(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.topology = match d.args[0].as_str() {
        "net30" => Topology::Net30,
        "p2p" => Topology::P2p,
        "subnet" => Topology::Subnet,
        other => {
            return bad(format!(
                "bad topology '{other}' (must be net30, p2p or subnet)"
            ))
        }
    };
    Ok(())
}

fn p_tun_mtu(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let mtu = num_u32("MTU", &d.args[0])?;
    if !(576..=65535).contains(&mtu) {
        return bad(format!("MTU {mtu} out of range (576-65535)"));
    }
    b.cfg.device.tun_mtu = mtu;
    b.cfg.device.tun_mtu_occ = match d.args.get(1) {
        Some(v) => Some(num_u32("occ-mtu", v)?),
        None => None,
    };
    Ok(())
}

fn p_mssfix(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let size = match d.args.first() {
        Some(v) => Some(num_u32("size", v)?),
        None => None,
    };
    let flag = match d.args.get(1).map(String::as_str) {
        None => None,
        Some(f @ ("mtu" | "fixed")) => Some(f.to_string()),
        Some(other) => return bad(format!("bad flag '{other}' (must be 'mtu' or 'fixed')")),
    };
    b.cfg.device.mssfix = Some(Mssfix { size, flag });
    Ok(())
}

fn p_txqueuelen(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.device.txqueuelen = Some(num_u32("length", &d.args[0])?);
    Ok(())
}

fn p_persist_tun(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.device.persist_tun = true;
    Ok(())
}

fn p_persist_key(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.crypto.persist_key = true;
    Ok(())
}

fn p_ifconfig(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let local = ipv4("local address", &d.args[0])?;
    let remote_or_netmask = ipv4("remote address/netmask", &d.args[1])?;
    b.cfg.ifconfig_v4 = Some(IfconfigV4 {
        local,
        remote_or_netmask,
    });
    Ok(())
}

fn p_ifconfig_ipv6(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let (local, prefix_len) = ipv6_prefix("address", &d.args[0])?;
    let remote = ipv6("remote address", &d.args[1])?;
    b.cfg.ifconfig_v6 = Some(IfconfigV6 {
        local,
        prefix_len,
        remote,
    });
    Ok(())
}

fn p_ifconfig_pool(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let start = ipv4("start", &d.args[0])?;
    let end = ipv4("end", &d.args[1])?;
    let netmask = match d.args.get(2) {
        Some(v) => Some(ipv4("netmask", v)?),
        None => None,
    };
    let (s, e) = (u32::from(start), u32::from(end));
    if s > e {
        return bad(format!("start IP [{start}] is greater than end IP [{end}]"));
    }
    if e - s >= 65536 {
        return bad(format!(
            "address range is too large [{start} -> {end}]; the maximum is 65536 addresses"
        ));
    }
    b.cfg.pool_v4 = Some(PoolV4 {
        start,
        end,
        netmask,
    });
    Ok(())
}

fn p_ifconfig_ipv6_pool(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let (base, prefix_len) = ipv6_prefix("pool", &d.args[0])?;
    b.cfg.pool_v6 = Some(PoolV6 { base, prefix_len });
    Ok(())
}

fn p_pool_persist(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let seconds = match d.args.get(1) {
        Some(v) => num_u32("seconds", v)?,
        None => 600,
    };
    b.cfg.clients.pool_persist = Some(PoolPersist {
        path: path(&d.args[0]),
        seconds,
    });
    Ok(())
}

fn p_route(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    if d.args[0].is_empty() {
        return bad("empty network");
    }
    if let Some(m) = d.args.get(1) {
        if m != "default" {
            ipv4("netmask", m)?;
        }
    }
    b.cfg.routes.push(Route {
        network: d.args[0].clone(),
        netmask: d.args.get(1).cloned(),
        gateway: d.args.get(2).cloned(),
        metric: d.args.get(3).cloned(),
    });
    Ok(())
}

fn p_route_ipv6(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    ipv6_prefix("network", &d.args[0])?;
    b.cfg.routes_v6.push(RouteV6 {
        network: d.args[0].clone(),
        gateway: d.args.get(1).cloned(),
        metric: d.args.get(2).cloned(),
    });
    Ok(())
}

fn p_route_gateway(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    if d.args[0] != "dhcp" {
        ipv4("gateway", &d.args[0])?;
    }
    b.cfg.route_gateway = Some(d.args[0].clone());
    Ok(())
}

fn p_route_metric(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.route_metric = Some(num_u32("metric", &d.args[0])?);
    Ok(())
}

fn p_socket_flags(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    for f in d.args {
        match f.as_str() {
            "TCP_NODELAY" => b.cfg.transport.socket_tcp_nodelay = true,
            other => return bad(format!("unknown socket flag '{other}' (only TCP_NODELAY)")),
        }
    }
    Ok(())
}

fn p_route_ipv6_gateway(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    ipv6("gateway", &d.args[0])?;
    b.cfg.route_ipv6_gateway = Some(d.args[0].clone());
    Ok(())
}

fn p_ca(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.ca = Some(material(d));
    Ok(())
}

fn p_cert(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.cert = Some(material(d));
    Ok(())
}

fn p_key(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.key = Some(material(d));
    Ok(())
}

fn p_extra_certs(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.extra_certs = Some(material(d));
    Ok(())
}

fn p_dh(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    if d.inline.is_none() && d.args[0] == "none" {
        b.cfg.tls.dh = None;
        b.cfg.tls.dh_none = true;
        return Ok(());
    }
    b.cfg.tls.dh = Some(material(d));
    b.cfg.tls.dh_none = false;
    b.warn(
        d.loc,
        "option 'dh': Diffie-Hellman parameters are accepted and ignored; Bulwark offers ECDHE key exchange only ('dh none' silences this warning)",
    );
    Ok(())
}

fn key_direction(v: &str) -> Result<KeyDirection, ParseError> {
    match v {
        "0" | "normal" => Ok(KeyDirection::Normal),
        "1" | "inverse" => Ok(KeyDirection::Inverse),
        other => bad(format!("bad key direction '{other}' (must be 0 or 1)")),
    }
}

fn p_tls_auth(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let dir = match (d.inline, d.args.get(1)) {
        (None, Some(v)) => Some(key_direction(v)?),
        _ => None,
    };
    b.tls_auth = Some((material(d), dir));
    Ok(())
}

fn p_key_direction(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.key_direction = Some(key_direction(&d.args[0])?);
    Ok(())
}

fn p_tls_crypt(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.tls_crypt = Some(material(d));
    Ok(())
}

fn p_tls_crypt_v2(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let flag_at = if d.inline.is_some() { 0 } else { 1 };
    let force_cookie = match d.args.get(flag_at).map(String::as_str) {
        None | Some("allow-noncookie") => false,
        Some("force-cookie") => true,
        Some(other) => {
            return bad(format!(
                "bad flag '{other}' (must be 'force-cookie' or 'allow-noncookie')"
            ))
        }
    };
    b.tls_crypt_v2 = Some((material(d), force_cookie));
    Ok(())
}

fn p_crl_verify(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let dir = match d.args.get(1).map(String::as_str) {
        None => false,
        Some("dir") => true,
        Some(other) => return bad(format!("bad flag '{other}' (only 'dir')")),
    };
    b.cfg.tls.crl_verify = Some(CrlVerify {
        source: material(d),
        dir,
    });
    Ok(())
}

fn fingerprint_ok(f: &str) -> bool {
    let parts: Vec<&str> = f.split(':').collect();
    parts.len() == 32
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn p_peer_fingerprint(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let list: Vec<String> = match d.inline {
        Some(content) => content
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .map(str::to_string)
            .collect(),
        None => vec![d.args[0].clone()],
    };
    for f in &list {
        if !fingerprint_ok(f) {
            return bad(format!(
                "'{f}' is not a SHA-256 fingerprint (32 hex byte pairs separated by ':')"
            ));
        }
    }
    b.cfg.tls.peer_fingerprints.extend(list);
    Ok(())
}

fn p_auth(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.crypto.auth = Some(d.args[0].clone());
    Ok(())
}

fn p_cipher(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.crypto.cipher = Some(d.args[0].clone());
    Ok(())
}

fn p_data_ciphers(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let list: Vec<String> = d.args[0]
        .split(':')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return bad("empty cipher list");
    }
    if list.len() > 64 {
        return bad("too many ciphers (64 max)");
    }
    b.cfg.crypto.data_ciphers = list;
    b.cfg.crypto.data_ciphers_explicit = true;
    Ok(())
}

fn p_data_ciphers_fallback(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.crypto.data_ciphers_fallback = Some(d.args[0].clone());
    Ok(())
}

fn tls_version(v: &str) -> Result<String, ParseError> {
    match v {
        "1.0" | "1.1" | "1.2" | "1.3" => Ok(v.to_string()),
        other => bad(format!(
            "unknown TLS version '{other}' (1.0, 1.1, 1.2 or 1.3)"
        )),
    }
}

fn p_tls_version_min(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let version = tls_version(&d.args[0])?;
    let or_highest = match d.args.get(1).map(String::as_str) {
        None => false,
        Some("or-highest") => true,
        Some(other) => return bad(format!("bad flag '{other}' (only 'or-highest')")),
    };
    b.cfg.tls.version_min = Some(TlsVersionMin {
        version,
        or_highest,
    });
    Ok(())
}

fn p_tls_version_max(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.version_max = Some(tls_version(&d.args[0])?);
    Ok(())
}

fn p_tls_cipher(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.cipher = Some(d.args[0].clone());
    Ok(())
}

fn p_tls_ciphersuites(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.ciphersuites = Some(d.args[0].clone());
    Ok(())
}

fn p_tls_groups(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.groups = Some(d.args[0].clone());
    Ok(())
}

fn p_ecdh_curve(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.ecdh_curve = Some(d.args[0].clone());
    Ok(())
}

fn p_tls_cert_profile(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    match d.args[0].as_str() {
        "legacy" | "preferred" | "suiteb" | "insecure" => {
            b.cfg.tls.cert_profile = Some(d.args[0].clone());
            Ok(())
        }
        other => bad(format!(
            "unknown profile '{other}' (legacy, preferred, suiteb or insecure)"
        )),
    }
}

fn p_remote_cert_tls(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.remote_cert_tls = Some(match d.args[0].as_str() {
        "client" => RemoteCertTls::Client,
        "server" => RemoteCertTls::Server,
        other => return bad(format!("must be 'client' or 'server', got '{other}'")),
    });
    Ok(())
}

fn p_remote_cert_eku(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.remote_cert_eku = Some(d.args[0].clone());
    Ok(())
}

fn p_remote_cert_ku(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    for v in d.args {
        if u16::from_str_radix(v, 16).is_err() {
            return bad(format!("'{v}' is not a hexadecimal key usage"));
        }
    }
    b.cfg.tls.remote_cert_ku = Some(d.args.to_vec());
    Ok(())
}

fn p_verify_client_cert(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.verify_client_cert = match d.args.first().map(String::as_str) {
        None | Some("require") => VerifyClientCert::Require,
        Some("optional") => VerifyClientCert::Optional,
        Some("none") => VerifyClientCert::None,
        Some(other) => {
            return bad(format!(
                "must be 'none', 'optional' or 'require', got '{other}'"
            ))
        }
    };
    Ok(())
}

fn p_verify_x509_name(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let kind = match d.args.get(1).map(String::as_str) {
        None => "subject".to_string(),
        Some(k @ ("subject" | "name" | "name-prefix")) => k.to_string(),
        Some(other) => {
            return bad(format!(
                "unknown type '{other}' (subject, name or name-prefix)"
            ))
        }
    };
    if d.args[0].is_empty() {
        return bad("empty name");
    }
    b.cfg.tls.verify_x509_name = Some(VerifyX509Name {
        name: d.args[0].clone(),
        kind,
    });
    Ok(())
}

fn p_x509_username_field(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let mut fields = Vec::new();
    for f in d.args {
        if f.is_empty() {
            return bad("empty field name");
        }
        // OpenVPN upper-cases plain field names (not ext: ones) for compatibility.
        if f.starts_with("ext:") {
            fields.push(f.clone());
        } else {
            fields.push(f.to_ascii_uppercase());
        }
    }
    b.cfg.tls.x509_username_field = fields;
    Ok(())
}

fn script_cmd(d: &Directive<'_>) -> Result<String, ParseError> {
    if d.args[0].trim().is_empty() {
        return bad("empty command");
    }
    Ok(d.args[0].clone())
}

fn p_tls_verify(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.scripts.tls_verify = Some(script_cmd(d)?);
    Ok(())
}

fn p_tls_timeout(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.tls_timeout = positive("timeout", &d.args[0])?;
    Ok(())
}

fn p_hand_window(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.hand_window = positive("window", &d.args[0])?;
    Ok(())
}

fn p_tran_window(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.tran_window = positive("window", &d.args[0])?;
    Ok(())
}

fn p_reneg_sec(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.reneg_sec = num_u32("seconds", &d.args[0])?;
    b.cfg.tls.reneg_sec_min = match d.args.get(1) {
        Some(v) => Some(num_u32("seconds", v)?),
        None => None,
    };
    Ok(())
}

fn p_reneg_bytes(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.reneg_bytes = Some(num_u64("bytes", &d.args[0])?);
    Ok(())
}

fn p_reneg_pkts(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.reneg_pkts = Some(num_u64("packets", &d.args[0])?);
    Ok(())
}

fn p_tls_exit(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.tls.tls_exit = true;
    Ok(())
}

fn p_replay_window(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let n = num_u32("window", &d.args[0])?;
    if !(64..=65536).contains(&n) {
        return bad(format!("window {n} out of range (64-65536)"));
    }
    let t = match d.args.get(1) {
        Some(v) => Some(num_u32("seconds", v)?),
        None => None,
    };
    b.cfg.crypto.replay_window = Some((n, t));
    Ok(())
}

fn p_mute_replay_warnings(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.crypto.mute_replay_warnings = true;
    Ok(())
}

fn p_comp_lzo(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    match d.args.first().map(String::as_str) {
        Some("no") => {
            b.cfg.compression = Compression::LzoStub;
            Ok(())
        }
        Some("yes") | Some("adaptive") | None => Err(ParseError::Unsupported(format!(
            "'comp-lzo{}' enables LZO compression: {COMPRESSION}",
            d.args.first().map(|a| format!(" {a}")).unwrap_or_default()
        ))),
        Some(other) => bad(format!("bad value '{other}' (must be yes, no or adaptive)")),
    }
}

fn p_compress(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.compression = match d.args.first().map(String::as_str) {
        None | Some("stub") => Compression::Stub,
        Some("stub-v2") => Compression::StubV2,
        Some("migrate") => Compression::Migrate,
        Some(alg @ ("lzo" | "lz4" | "lz4-v2")) => {
            return Err(ParseError::Unsupported(format!(
                "'compress {alg}' enables compression: {COMPRESSION}"
            )))
        }
        Some(other) => return bad(format!("bad compression algorithm '{other}'")),
    };
    Ok(())
}

fn p_allow_compression(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    match d.args[0].as_str() {
        "no" => {
            b.cfg.allow_compression_no = true;
            Ok(())
        }
        v @ ("yes" | "asym") => Err(ParseError::Unsupported(format!(
            "'allow-compression {v}' would decompress or compress tunnel traffic: {COMPRESSION}"
        ))),
        other => bad(format!("bad value '{other}' (must be yes, no or asym)")),
    }
}

fn p_keepalive(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let a = num_u32("interval", &d.args[0])?;
    let t = num_u32("timeout", &d.args[1])?;
    b.cfg.timers.keepalive = Some((a, t));
    Ok(())
}

fn p_ping(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.ping = Some(positive("seconds", &d.args[0])?);
    Ok(())
}

fn p_ping_restart(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.ping_restart = Some(positive("seconds", &d.args[0])?);
    Ok(())
}

fn p_ping_exit(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.timers.ping_exit = Some(positive("seconds", &d.args[0])?);
    Ok(())
}

fn p_ping_timer_rem(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.timers.ping_timer_rem = true;
    Ok(())
}

fn p_inactive(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let secs = num_u32("seconds", &d.args[0])?;
    let bytes = match d.args.get(1) {
        Some(v) => Some(num_u64("bytes", v)?),
        None => None,
    };
    b.cfg.timers.inactive = Some((secs, bytes));
    Ok(())
}

fn p_explicit_exit_notify(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.timers.explicit_exit_notify = Some(match d.args.first() {
        Some(v) => num_u32("count", v)?,
        None => 1,
    });
    Ok(())
}

fn push_text(d: &Directive<'_>) -> Result<String, ParseError> {
    let v = d.args[0].trim();
    if v.is_empty() {
        return bad("empty option");
    }
    Ok(d.args[0].clone())
}

fn p_push(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = push_text(d)?;
    match b.ctx {
        Context::Server => b.cfg.push.push(v),
        Context::Ccd => b.ccd.push.push(v),
    }
    Ok(())
}

fn p_push_remove(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = push_text(d)?;
    b.ccd.push_remove.push(v);
    Ok(())
}

fn p_push_reset(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.ccd.push_reset = true;
    Ok(())
}

fn p_ifconfig_push(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let local = ipv4("local address", &d.args[0])?;
    let remote = ipv4("remote address/netmask", &d.args[1])?;
    b.ccd.ifconfig_push = Some((local, remote));
    Ok(())
}

fn p_ifconfig_ipv6_push(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let (addr, bits) = ipv6_prefix("address", &d.args[0])?;
    let remote = match d.args.get(1) {
        Some(v) => Some(ipv6("remote", v)?),
        None => None,
    };
    b.ccd.ifconfig_ipv6_push = Some((addr, bits, remote));
    Ok(())
}

fn p_iroute(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let net = ipv4("network", &d.args[0])?;
    let mask = match d.args.get(1) {
        Some(v) => ipv4("netmask", v)?,
        None => Ipv4Addr::BROADCAST,
    };
    b.ccd.iroutes.push((net, mask));
    Ok(())
}

fn p_iroute_ipv6(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = ipv6_prefix("network", &d.args[0])?;
    b.ccd.iroutes_v6.push(v);
    Ok(())
}

fn p_disable(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.ccd.disable = true;
    Ok(())
}

fn p_ccd(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.config_dir = Some(path(&d.args[0]));
    Ok(())
}

fn p_ccd_exclusive(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.ccd_exclusive = true;
    Ok(())
}

fn p_c2c(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.client_to_client = true;
    Ok(())
}

fn p_duplicate_cn(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.duplicate_cn = true;
    Ok(())
}

fn p_max_clients(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.max_clients = positive("max-clients", &d.args[0])?;
    Ok(())
}

fn p_max_routes_per_client(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.max_routes_per_client = positive("max-routes-per-client", &d.args[0])?;
    Ok(())
}

fn two_positive(d: &Directive<'_>, a: &str, c: &str) -> Result<(u32, u32), ParseError> {
    Ok((positive(a, &d.args[0])?, positive(c, &d.args[1])?))
}

fn p_connect_freq(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.connect_freq = Some(two_positive(d, "count", "seconds")?);
    Ok(())
}

fn p_connect_freq_initial(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.connect_freq_initial = Some(two_positive(d, "count", "seconds")?);
    Ok(())
}

fn p_hash_size(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.hash_size = Some(two_positive(d, "real", "virtual")?);
    Ok(())
}

fn p_stale_routes_check(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let age = positive("age", &d.args[0])?;
    let interval = match d.args.get(1) {
        Some(v) => Some(positive("interval", v)?),
        None => None,
    };
    b.cfg.clients.stale_routes_check = Some((age, interval));
    Ok(())
}

fn p_block_ipv6(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.block_ipv6 = true;
    Ok(())
}

fn p_script_security(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let n = num_u32("level", &d.args[0])?;
    if n > 3 {
        return bad(format!("level {n} out of range (0-3)"));
    }
    b.cfg.scripts.security = n as u8;
    Ok(())
}

fn p_auth_user_pass_verify(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let command = script_cmd(d)?;
    let method = match d.args[1].as_str() {
        "via-env" => PassMethod::ViaEnv,
        "via-file" => PassMethod::ViaFile,
        other => {
            return bad(format!(
                "second parameter must be 'via-env' or 'via-file', got '{other}'"
            ))
        }
    };
    b.cfg.scripts.auth_user_pass_verify = Some(AuthUserPassVerify { command, method });
    Ok(())
}

fn p_uacn(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.username_as_common_name = true;
    Ok(())
}

fn p_aupo(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.auth_user_pass_optional = true;
    Ok(())
}

fn p_client_connect(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.scripts.client_connect = Some(script_cmd(d)?);
    Ok(())
}

fn p_client_disconnect(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.scripts.client_disconnect = Some(script_cmd(d)?);
    Ok(())
}

fn p_learn_address(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.scripts.learn_address = Some(script_cmd(d)?);
    Ok(())
}

fn p_auth_gen_token(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let mut tok = AuthGenToken {
        lifetime: 0,
        renewal: None,
        external_auth: false,
    };
    for (i, a) in d.args.iter().enumerate() {
        match (i, a.as_str()) {
            (_, "external-auth") => tok.external_auth = true,
            (0, v) => tok.lifetime = num_u32("lifetime", v)?,
            (1, v) => tok.renewal = Some(positive("renewal", v)?),
            (_, v) => return bad(format!("invalid parameter '{v}'")),
        }
    }
    b.cfg.clients.auth_gen_token = Some(tok);
    Ok(())
}

fn p_auth_gen_token_secret(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.clients.auth_gen_token_secret = Some(material(d));
    Ok(())
}

fn p_tmp_dir(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.scripts.tmp_dir = Some(path(&d.args[0]));
    Ok(())
}

fn p_management(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let listen = if d.args[1] == "unix" {
        if d.args[0].is_empty() {
            return bad("empty socket path");
        }
        ManagementListen::Unix {
            path: path(&d.args[0]),
        }
    } else {
        ManagementListen::Tcp {
            host: d.args[0].clone(),
            port: port(&d.args[1])?,
        }
    };
    let pw = d.args.get(2).map(|p| path(p));
    b.mgmt = Some((listen, pw, d.loc.clone()));
    Ok(())
}

fn p_mgmt_client_user(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_client_user = Some(d.args[0].clone());
    Ok(())
}

fn p_mgmt_client_group(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_client_group = Some(d.args[0].clone());
    Ok(())
}

const MGMT_ROLES: [&str; 4] = ["monitor", "operator", "auth", "admin"];

fn mgmt_role(v: &str) -> Result<String, ParseError> {
    if MGMT_ROLES.contains(&v) {
        Ok(v.to_string())
    } else {
        bad(format!(
            "unknown management role '{v}' (expected monitor, operator, auth or admin)"
        ))
    }
}

fn p_mgmt_client_role(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let role = mgmt_role(&d.args[0])?;
    let name = d.args[2].clone();
    let subject = match d.args[1].as_str() {
        "user" => RoleSubject::User(name),
        "group" => RoleSubject::Group(name),
        other => return bad(format!("expected 'user' or 'group', not '{other}'")),
    };
    b.cfg
        .management_access
        .client_roles
        .push(ClientRole { role, subject });
    Ok(())
}

fn p_mgmt_audit(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = &d.args[0];
    b.cfg.management_access.audit = Some(if v == "syslog" {
        AuditTarget::Syslog
    } else if v.is_empty() {
        return bad("management-audit needs a file name or 'syslog'".to_string());
    } else {
        AuditTarget::File(PathBuf::from(v))
    });
    Ok(())
}

fn p_mgmt_monitor_socket(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = &d.args[0];
    if v.is_empty() {
        return bad("management-monitor-socket needs a path".to_string());
    }
    b.cfg.management_access.monitor_socket = Some(PathBuf::from(v));
    Ok(())
}

fn p_mgmt_default_role(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.management_access.default_role = Some(mgmt_role(&d.args[0])?);
    Ok(())
}

fn p_mgmt_max_clients(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let n = positive("management-max-clients", &d.args[0])?;
    if n > 1024 {
        return bad("management-max-clients must be at most 1024".to_string());
    }
    b.cfg.management_access.max_clients = Some(n);
    Ok(())
}

fn p_mgmt_client_auth(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_client_auth = true;
    Ok(())
}

fn p_mgmt_hold(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_hold = true;
    Ok(())
}

fn p_mgmt_log_cache(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let n = positive("cache size", &d.args[0])?;
    b.mgmt_log_cache = Some(n);
    Ok(())
}

fn p_mgmt_query_passwords(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_query_passwords = true;
    Ok(())
}

fn p_mgmt_forget_disconnect(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_forget_disconnect = true;
    Ok(())
}

fn p_mgmt_signal(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_signal = true;
    Ok(())
}

fn p_mgmt_up_down(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.mgmt_up_down = true;
    Ok(())
}

fn name_ok(what: &str, v: &str) -> Result<String, ParseError> {
    if v.is_empty() || v.contains(char::is_whitespace) || v.contains(':') || v.contains('/') {
        return bad(format!("'{v}' is not a valid {what} name"));
    }
    Ok(v.to_string())
}

fn p_user(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.privileges.user = Some(name_ok("user", &d.args[0])?);
    Ok(())
}

fn p_group(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.privileges.group = Some(name_ok("group", &d.args[0])?);
    Ok(())
}

fn p_chroot(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.privileges.chroot = Some(path(&d.args[0]));
    b.warn(
        d.loc,
        "option 'chroot': recorded only; Bulwark always runs its network-facing and management processes chrooted to an empty directory, and the daemon itself is not chrooted",
    );
    Ok(())
}

fn p_nice(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    match d.args[0].parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => {
            b.cfg.privileges.nice = Some(n);
            Ok(())
        }
        _ => bad(format!("'{}' is not a nice value (-20..19)", d.args[0])),
    }
}

fn p_mlock(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.privileges.mlock = true;
    Ok(())
}

fn p_daemon(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.daemon = Some(d.args.first().cloned());
    Ok(())
}

fn p_writepid(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.writepid = Some(path(&d.args[0]));
    Ok(())
}

fn p_syslog(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.syslog = Some(d.args.first().cloned());
    Ok(())
}

fn p_log(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.file = Some(LogFile {
        path: path(&d.args[0]),
        append: false,
    });
    Ok(())
}

fn p_log_append(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.file = Some(LogFile {
        path: path(&d.args[0]),
        append: true,
    });
    Ok(())
}

fn p_verb(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = num_u32("level", &d.args[0])?;
    if v > 15 {
        return bad(format!("level {v} out of range (0-11)"));
    }
    b.cfg.logging.verb = v;
    Ok(())
}

fn p_mute(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.mute = Some(num_u32("count", &d.args[0])?);
    Ok(())
}

fn p_suppress_timestamps(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.suppress_timestamps = true;
    Ok(())
}

fn p_machine_readable(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.machine_readable_output = true;
    Ok(())
}

fn p_errors_to_stderr(b: &mut Builder, _d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.errors_to_stderr = true;
    Ok(())
}

fn p_status(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let interval = match d.args.get(1) {
        Some(v) => positive("interval", v)?,
        None => 60,
    };
    b.cfg.status = Some(Status {
        path: path(&d.args[0]),
        interval,
    });
    Ok(())
}

fn p_metrics_listen(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let listen = if d.args[1] == "unix" {
        if d.args[0].is_empty() {
            return bad("metrics-listen needs a socket path");
        }
        MetricsListen::Unix {
            path: path(&d.args[0]),
            group: d.args.get(2).cloned(),
        }
    } else {
        if d.args.len() > 2 {
            return bad("metrics-listen IP PORT takes no third argument");
        }
        let Ok(ip) = d.args[0].parse::<std::net::IpAddr>() else {
            return bad(format!(
                "metrics-listen: '{}' is not an IP address",
                d.args[0]
            ));
        };
        // INVARIANT: the endpoint is never reachable from the network: loopback only.
        if !ip.is_loopback() {
            return bad(format!(
                "metrics-listen: {ip} is not a loopback address (the metrics endpoint has no authentication; use 127.0.0.1, ::1 or a unix socket)"
            ));
        }
        MetricsListen::Tcp {
            ip,
            port: port(&d.args[1])?,
        }
    };
    b.cfg.metrics = Some(listen);
    Ok(())
}

fn p_metrics_per_client(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let v = &d.args[0];
    let Ok(n) = v.parse::<u32>() else {
        return bad(format!("metrics-per-client: '{v}' is not a number"));
    };
    if n > 10_000 {
        return bad("metrics-per-client must be at most 10000".to_string());
    }
    b.cfg.metrics_per_client = n;
    Ok(())
}

fn p_status_json(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    let interval = match d.args.get(1) {
        Some(v) => positive("interval", v)?,
        None => 60,
    };
    b.cfg.status_json = Some(Status {
        path: path(&d.args[0]),
        interval,
    });
    Ok(())
}

/// An octal file mode for a file the parent writes: at most 0777, never world-writable.
fn file_mode(v: &str) -> Result<u32, ParseError> {
    match u32::from_str_radix(v, 8) {
        Ok(m) if m <= 0o777 && m & 0o7002 == 0 => Ok(m),
        Ok(_) => bad(format!(
            "mode '{v}' must be at most 0777 and not world-writable"
        )),
        Err(_) => bad(format!("mode '{v}' is not an octal number")),
    }
}

fn p_status_file_mode(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.status_file_mode = Some(file_mode(&d.args[0])?);
    Ok(())
}

fn p_log_file_mode(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.log_file_mode = Some(file_mode(&d.args[0])?);
    Ok(())
}

fn p_log_file_group(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.logging.log_file_group = Some(d.args[0].clone());
    Ok(())
}

fn p_status_file_group(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    b.cfg.status_file_group = Some(d.args[0].clone());
    Ok(())
}

fn p_status_version(b: &mut Builder, d: &Directive<'_>) -> Result<(), ParseError> {
    match d.args[0].as_str() {
        "1" => b.cfg.status_version = 1,
        "2" => b.cfg.status_version = 2,
        "3" => b.cfg.status_version = 3,
        other => return bad(format!("version must be 1, 2 or 3, got '{other}'")),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_names_unique_and_sane() {
        let mut names: Vec<&str> = directives().iter().map(|d| d.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(n, names.len(), "duplicate directive names in the table");
        for d in directives() {
            assert!(d.min_args <= d.max_args, "{}", d.name);
            assert!(d.max_args < crate::lexer::MAX_PARAMS, "{}", d.name);
            assert!(d.synopsis.starts_with(d.name), "{}", d.name);
            assert!(!d.description.is_empty(), "{}", d.name);
            if d.inline {
                assert!(d.min_args <= 1 && d.max_args >= 1, "{}", d.name);
            }
        }
    }

    #[test]
    fn must_have_directives_present() {
        for name in [
            "port",
            "proto",
            "dev",
            "dev-type",
            "topology",
            "server",
            "server-ipv6",
            "local",
            "lport",
            "ca",
            "cert",
            "key",
            "dh",
            "tls-auth",
            "key-direction",
            "tls-crypt",
            "tls-crypt-v2",
            "crl-verify",
            "auth",
            "cipher",
            "data-ciphers",
            "data-ciphers-fallback",
            "ncp-ciphers",
            "tls-version-min",
            "tls-version-max",
            "tls-cipher",
            "tls-ciphersuites",
            "tls-groups",
            "tls-server",
            "mode",
            "remote-cert-tls",
            "verify-client-cert",
            "ifconfig-pool",
            "ifconfig-pool-persist",
            "ifconfig-ipv6-pool",
            "keepalive",
            "ping",
            "ping-restart",
            "ping-timer-rem",
            "persist-key",
            "persist-tun",
            "push",
            "push-reset",
            "route",
            "route-ipv6",
            "client-config-dir",
            "ccd-exclusive",
            "client-to-client",
            "duplicate-cn",
            "max-clients",
            "user",
            "group",
            "status",
            "status-version",
            "verb",
            "mute",
            "mute-replay-warnings",
            "log",
            "log-append",
            "syslog",
            "daemon",
            "writepid",
            "cd",
            "suppress-timestamps",
            "machine-readable-output",
            "errors-to-stderr",
            "explicit-exit-notify",
            "reneg-sec",
            "reneg-bytes",
            "reneg-pkts",
            "hand-window",
            "tran-window",
            "replay-window",
            "tun-mtu",
            "mssfix",
            "sndbuf",
            "rcvbuf",
            "txqueuelen",
            "float",
            "inactive",
            "tun-ipv6",
            "comp-lzo",
            "compress",
            "allow-compression",
            "management",
            "management-client-user",
            "management-client-group",
            "management-client-auth",
            "management-hold",
            "management-log-cache",
            "management-query-passwords",
            "auth-user-pass-verify",
            "script-security",
            "username-as-common-name",
            "client-connect",
            "client-disconnect",
            "learn-address",
            "x509-username-field",
            "verify-x509-name",
            "auth-gen-token",
            "connect-freq",
            "setenv",
            "ignore-unknown-option",
            "config",
        ] {
            let d = lookup(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(
                !matches!(d.support(), Support::Unsupported { .. }),
                "{name}"
            );
        }
    }

    #[test]
    fn management_access_directives() {
        let base = "dev tun\nserver 10.8.0.0 255.255.255.0\nca /ca\ncert /c\nkey /k\n";
        let text = "management /run/m.sock unix\nmanagement-client-role operator user alice\nmanagement-client-role auth group vpnauth\nmanagement-default-role monitor\nmanagement-max-clients 4\n";
        let c = crate::load_str("t", &format!("{base}{text}"), "/")
            .unwrap()
            .config;
        let a = &c.management_access;
        assert_eq!(
            a.client_roles,
            vec![
                ClientRole {
                    role: "operator".into(),
                    subject: RoleSubject::User("alice".into())
                },
                ClientRole {
                    role: "auth".into(),
                    subject: RoleSubject::Group("vpnauth".into())
                },
            ]
        );
        assert_eq!(a.default_role.as_deref(), Some("monitor"));
        assert_eq!(a.max_clients, Some(4));
        assert_eq!(a.audit, None);
        assert_eq!(a.monitor_socket, None);
        let c = crate::load_str(
            "t",
            &format!("{base}management-monitor-socket /run/mon.sock\n"),
            "/",
        )
        .unwrap()
        .config;
        assert_eq!(
            c.management_access.monitor_socket,
            Some(PathBuf::from("/run/mon.sock"))
        );
        let c = crate::load_str("t", &format!("{base}management-audit syslog\n"), "/")
            .unwrap()
            .config;
        assert_eq!(c.management_access.audit, Some(AuditTarget::Syslog));
        let c = crate::load_str("t", &format!("{base}management-audit /var/log/a\n"), "/")
            .unwrap()
            .config;
        assert_eq!(
            c.management_access.audit,
            Some(AuditTarget::File(PathBuf::from("/var/log/a")))
        );
        for bad in [
            "management-client-role root user alice",
            "management-client-role admin uid 0",
            "management-client-role admin user",
            "management-default-role superuser",
            "management-max-clients 0",
            "management-max-clients 5000",
        ] {
            assert!(
                crate::load_str("t", &format!("{base}{bad}\n"), "/").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn metrics_directives_allow_only_loopback_or_a_unix_socket() {
        let base = "dev tun\nserver 10.8.0.0 255.255.255.0\nca /ca\ncert /c\nkey /k\n";
        let load = |extra: &str| crate::load_str("t.conf", &format!("{base}{extra}\n"), "/");
        let c = load("metrics-listen 127.0.0.1 9176\nmetrics-per-client 20")
            .unwrap()
            .config;
        assert_eq!(
            c.metrics,
            Some(MetricsListen::Tcp {
                ip: "127.0.0.1".parse().unwrap(),
                port: 9176
            })
        );
        assert_eq!(c.metrics_per_client, 20);
        let c = load("metrics-listen ::1 9176").unwrap().config;
        assert!(matches!(c.metrics, Some(MetricsListen::Tcp { .. })));
        let c = load("metrics-listen /run/bulwark/metrics.sock unix prometheus")
            .unwrap()
            .config;
        assert_eq!(
            c.metrics,
            Some(MetricsListen::Unix {
                path: PathBuf::from("/run/bulwark/metrics.sock"),
                group: Some("prometheus".into())
            })
        );
        assert_eq!(load("").unwrap().config.metrics, None);
        for (bad, why) in [
            ("metrics-listen 0.0.0.0 9176", "not a loopback address"),
            ("metrics-listen 10.1.2.3 9176", "not a loopback address"),
            ("metrics-listen localhost 9176", "not an IP address"),
            ("metrics-listen 127.0.0.1 9176 extra", "no third argument"),
            ("metrics-per-client lots", "not a number"),
            ("metrics-per-client 20000", "at most 10000"),
        ] {
            let errs = load(bad).unwrap_err();
            let text = errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                text.contains(why) && text.contains("t.conf:6"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn arity_messages() {
        let port = lookup("port").unwrap();
        assert!(port.check_arity(1).is_ok());
        let e = port.check_arity(2).unwrap_err();
        assert!(e.contains("expects 1 parameter, got 2"), "{e}");
        let server = lookup("server").unwrap();
        assert!(server
            .check_arity(1)
            .unwrap_err()
            .contains("expects 2 to 3 parameters"));
        let iuo = lookup("ignore-unknown-option").unwrap();
        assert!(iuo
            .check_arity(0)
            .unwrap_err()
            .contains("expects at least 1 parameter"));
    }

    #[test]
    fn value_parsers() {
        assert!(port("0").is_err());
        assert!(port("65536").is_err());
        assert_eq!(port("1194").unwrap(), 1194);
        assert_eq!(
            ipv6_prefix("n", "fd00::/64").unwrap(),
            ("fd00::".parse().unwrap(), 64)
        );
        assert!(ipv6_prefix("n", "fd00::/129").is_err());
        assert!(fingerprint_ok(&["AB"; 32].join(":")));
        assert!(!fingerprint_ok("AB:CD"));
    }
}
