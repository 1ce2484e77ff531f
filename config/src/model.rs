//! The typed result of loading a configuration: [`Config`] and its sub-structs.
//!
//! Invariants after a successful [`crate::load_file`]/[`crate::load_args`]:
//! * the configuration is a server configuration (`mode server` + `tls-server`, set
//!   explicitly or by the `server`/`server-ipv6` macros);
//! * the `server`/`server-ipv6`/`keepalive` macros are expanded exactly as OpenVPN 2.6's
//!   `helper.c` does: [`Config::ifconfig_v4`], [`Config::pool_v4`], [`Config::timers`] and the
//!   pushed options in [`Config::push`] hold the expanded values;
//! * every file path (key material, status, log, CCD directory, …) is absolute: relative paths
//!   were resolved against [`Config::cwd`] (the working directory after the last `cd`), which is
//!   where OpenVPN would open them. Script commands are kept as written (they are command
//!   lines); their relative program paths are relative to [`Config::cwd`];
//! * the loader never reads key material: [`Material::File`] is only a path.
//!
//! All types derive `Serialize`/`Deserialize` so that parts can be shipped over IPC.

use crate::lexer::Location;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Where a piece of key material comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Material {
    /// A file (absolute path), read by the daemon.
    File(PathBuf),
    /// An inline `<tag>…</tag>` block's content.
    Inline(String),
}

/// Key material together with the directive that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterialRef {
    /// File or inline content.
    pub material: Material,
    /// The `ca`/`cert`/… directive (or the line of the inline block).
    pub set_at: Location,
}

/// Transport protocol of the listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP, server side (`tcp`, `tcp-server`).
    TcpServer,
}

/// Address family restriction from `proto udp4`/`udp6`/….
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddrFamily {
    /// `udp`/`tcp`: dual-stack (IPv6 socket accepting IPv4, or IPv4 when `local` is IPv4).
    Any,
    /// `udp4`/`tcp4`/`tcp4-server`.
    V4,
    /// `udp6`/`tcp6`/`tcp6-server`.
    V6,
}

/// The listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transport {
    /// UDP or TCP server.
    pub proto: Proto,
    /// Address family.
    pub family: AddrFamily,
    /// `local HOST` (address or name, as written), if any.
    pub local: Option<String>,
    /// Listening port: the last of `port`/`lport` given (default 1194).
    pub port: u16,
    /// `port` as written (also the remote port in OpenVPN).
    pub port_directive: Option<u16>,
    /// `lport` as written.
    pub lport: Option<u16>,
    /// `float`.
    pub float: bool,
    /// `multihome`.
    pub multihome: bool,
    /// `sndbuf`.
    pub sndbuf: Option<u32>,
    /// `rcvbuf`.
    pub rcvbuf: Option<u32>,
    /// `tcp-queue-limit`.
    pub tcp_queue_limit: Option<u32>,
    /// `bcast-buffers`.
    pub bcast_buffers: Option<u32>,
    /// `tcp-nodelay` (also pushes `socket-flags TCP_NODELAY`).
    pub tcp_nodelay: bool,
    /// `socket-flags TCP_NODELAY` (or implied by `tcp-nodelay`).
    pub socket_tcp_nodelay: bool,
    /// `fast-io` was given (accepted, no effect in Bulwark).
    pub fast_io: bool,
    /// `coalesce-usecs N` (Bulwark): after an event-loop turn that handled at least two packets, the
    /// worker waits N µs before it looks for the next events (`None` = [`DEFAULT_COALESCE_USECS`],
    /// 0 = never, at most [`MAX_COALESCE_USECS`]).
    pub coalesce_usecs: Option<u32>,
    /// `data-threads N|auto` (Bulwark): how many threads serve the UDP data path, each with its own
    /// `SO_REUSEPORT` socket and TUN queue (`None` = not given = 1).
    pub data_threads: Option<DataThreads>,
}

/// `data-threads`: a fixed count or one per available CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataThreads {
    /// `auto`: one per CPU the server may run on, at most [`AUTO_DATA_THREADS_MAX`].
    Auto,
    /// `N`: exactly N (1..=[`MAX_DATA_THREADS`]).
    Count(u8),
}

/// Upper bound of `data-threads N`.
pub const MAX_DATA_THREADS: u8 = 8;
/// Upper bound of `data-threads auto` (the threads share one engine lock; more threads than this
/// would wait on each other more than they gain).
pub const AUTO_DATA_THREADS_MAX: usize = 4;

/// `coalesce-usecs` when the configuration does not say (measured in `bench/data-path.md`).
pub const DEFAULT_COALESCE_USECS: u32 = 50;
/// Upper bound of `coalesce-usecs` (1 ms: more would be felt as latency).
pub const MAX_COALESCE_USECS: u32 = 1000;

/// Interface topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    /// `net30` (the 2.6 default): a /30 per client.
    Net30,
    /// `p2p`: point-to-point.
    P2p,
    /// `subnet`: one address per client in a shared subnet.
    Subnet,
}

impl Topology {
    /// The OpenVPN keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Net30 => "net30",
            Topology::P2p => "p2p",
            Topology::Subnet => "subnet",
        }
    }
}

/// The tun device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `dev NAME`: `tun` lets the kernel pick `tunN`; `tunN`/other names are used as is.
    pub name: String,
    /// `dev-type tun` was given explicitly.
    pub explicit_type: bool,
    /// `tun-mtu` (default 1500).
    pub tun_mtu: u32,
    /// `tun-mtu` second parameter (`occ-mtu`).
    pub tun_mtu_occ: Option<u32>,
    /// `mssfix`.
    pub mssfix: Option<Mssfix>,
    /// `txqueuelen`.
    pub txqueuelen: Option<u32>,
    /// `persist-tun`.
    pub persist_tun: bool,
}

/// `mssfix [N [mtu|fixed]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mssfix {
    /// The size; `None` for `mssfix` without parameters (use the default computation).
    pub size: Option<u32>,
    /// `mtu` or `fixed` flag, as written.
    pub flag: Option<String>,
}

/// `server NET MASK [nopool]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerV4 {
    /// Network address.
    pub network: Ipv4Addr,
    /// Netmask.
    pub netmask: Ipv4Addr,
    /// Prefix length of the netmask.
    pub prefix_len: u8,
    /// `nopool` flag.
    pub nopool: bool,
    /// Where `server` was given.
    pub set_at: Location,
}

/// `server-ipv6 NET/BITS` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerV6 {
    /// Network address.
    pub network: Ipv6Addr,
    /// Prefix length (64..=124).
    pub prefix_len: u8,
    /// Where `server-ipv6` was given.
    pub set_at: Location,
}

/// The server's own tun IPv4 configuration (`ifconfig`, or derived from `server`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfconfigV4 {
    /// The server's address.
    pub local: Ipv4Addr,
    /// Second `ifconfig` parameter: the netmask (subnet topology) or the peer address
    /// (net30/p2p).
    pub remote_or_netmask: Ipv4Addr,
}

/// The server's own tun IPv6 configuration (`ifconfig-ipv6`, or derived from `server-ipv6`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfconfigV6 {
    /// The server's address.
    pub local: Ipv6Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// The peer address (second parameter).
    pub remote: Ipv6Addr,
}

/// The IPv4 client address pool (`ifconfig-pool`, or derived from `server`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolV4 {
    /// First address.
    pub start: Ipv4Addr,
    /// Last address.
    pub end: Ipv4Addr,
    /// Netmask pushed with the address (subnet topology), if any.
    pub netmask: Option<Ipv4Addr>,
}

/// The IPv6 client address pool (`ifconfig-ipv6-pool`, or derived from `server-ipv6`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolV6 {
    /// First address handed out.
    pub base: Ipv6Addr,
    /// Prefix length pushed with the address.
    pub prefix_len: u8,
}

/// `tls-version-min V [or-highest]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsVersionMin {
    /// `1.0`, `1.1`, `1.2` or `1.3`.
    pub version: String,
    /// `or-highest` flag.
    pub or_highest: bool,
}

/// `remote-cert-tls client|server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteCertTls {
    /// Peer must carry TLS Web Client Authentication EKU (what a server wants).
    Client,
    /// Peer must carry TLS Web Server Authentication EKU.
    Server,
}

/// `verify-client-cert none|optional|require`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerifyClientCert {
    /// No client certificate requested.
    None,
    /// Requested, not required.
    Optional,
    /// Required (the default).
    Require,
}

/// `verify-x509-name NAME [TYPE]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyX509Name {
    /// The name.
    pub name: String,
    /// `subject`, `name` (default) or `name-prefix`.
    pub kind: String,
}

/// `crl-verify FILE [dir]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlVerify {
    /// The CRL file, inline CRL, or directory.
    pub source: MaterialRef,
    /// `dir` flag: the path is a directory of revoked serial numbers.
    pub dir: bool,
}

/// `0`/`1` key direction of `tls-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyDirection {
    /// `0` (normal; what servers use).
    Normal,
    /// `1` (inverse; what clients use).
    Inverse,
}

/// How the control channel is wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlWrap {
    /// Plain TLS control channel.
    None,
    /// `tls-auth KEY [DIR]` (HMAC); `direction` is the explicit parameter or `key-direction`;
    /// `None` means bidirectional.
    TlsAuth {
        /// Static key.
        key: MaterialRef,
        /// Key direction.
        direction: Option<KeyDirection>,
    },
    /// `tls-crypt KEY`.
    TlsCrypt {
        /// Static key.
        key: MaterialRef,
    },
    /// `tls-crypt-v2 KEY [force-cookie|allow-noncookie]` (server key).
    TlsCryptV2 {
        /// Server key.
        key: MaterialRef,
        /// `force-cookie` (true) or `allow-noncookie` (false, the default).
        force_cookie: bool,
    },
}

/// TLS settings and material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tls {
    /// `ca`.
    pub ca: Option<MaterialRef>,
    /// `cert`.
    pub cert: Option<MaterialRef>,
    /// `key`.
    pub key: Option<MaterialRef>,
    /// `dh FILE` (ignored: ECDHE only); `None` also for `dh none`.
    pub dh: Option<MaterialRef>,
    /// `dh none` was given.
    pub dh_none: bool,
    /// `extra-certs`.
    pub extra_certs: Option<MaterialRef>,
    /// `crl-verify`.
    pub crl_verify: Option<CrlVerify>,
    /// `peer-fingerprint` (SHA-256 fingerprints, `AB:CD:…`).
    pub peer_fingerprints: Vec<String>,
    /// The control-channel wrapping.
    pub control_wrap: ControlWrap,
    /// `tls-version-min`.
    pub version_min: Option<TlsVersionMin>,
    /// `tls-version-max`.
    pub version_max: Option<String>,
    /// `tls-cipher` (TLS ≤ 1.2 cipher list, OpenSSL syntax).
    pub cipher: Option<String>,
    /// `tls-ciphersuites` (TLS 1.3).
    pub ciphersuites: Option<String>,
    /// `tls-groups` (colon-separated).
    pub groups: Option<String>,
    /// `ecdh-curve` (deprecated alias-like setting).
    pub ecdh_curve: Option<String>,
    /// `tls-cert-profile`.
    pub cert_profile: Option<String>,
    /// `remote-cert-tls`.
    pub remote_cert_tls: Option<RemoteCertTls>,
    /// `remote-cert-eku OID|NAME`.
    pub remote_cert_eku: Option<String>,
    /// `remote-cert-ku [HEX…]` (empty vector: the option without values).
    pub remote_cert_ku: Option<Vec<String>>,
    /// `verify-client-cert` (default require).
    pub verify_client_cert: VerifyClientCert,
    /// `verify-x509-name`.
    pub verify_x509_name: Option<VerifyX509Name>,
    /// `x509-username-field` fields (default `CN`).
    pub x509_username_field: Vec<String>,
    /// `tls-timeout` seconds (default 2).
    pub tls_timeout: u32,
    /// `hand-window` seconds (default 60).
    pub hand_window: u32,
    /// `tran-window` seconds (default 3600).
    pub tran_window: u32,
    /// `reneg-sec MAX [MIN]` (default 3600).
    pub reneg_sec: u32,
    /// Second parameter of `reneg-sec`.
    pub reneg_sec_min: Option<u32>,
    /// `reneg-bytes`.
    pub reneg_bytes: Option<u64>,
    /// `reneg-pkts`.
    pub reneg_pkts: Option<u64>,
    /// `tls-exit`.
    pub tls_exit: bool,
}

/// Data-channel crypto settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crypto {
    /// `auth DIGEST`.
    pub auth: Option<String>,
    /// `cipher NAME` (2.6: only adds a fallback/legacy cipher).
    pub cipher: Option<String>,
    /// `data-ciphers`/`ncp-ciphers` list as written (default
    /// `AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305`); an entry may carry OpenVPN 2.6's leading
    /// `?` ("optional: skip if unsupported"), which is kept for the consumer to interpret.
    pub data_ciphers: Vec<String>,
    /// Whether `data-ciphers`/`ncp-ciphers` was given explicitly.
    pub data_ciphers_explicit: bool,
    /// `data-ciphers-fallback`.
    pub data_ciphers_fallback: Option<String>,
    /// `replay-window N [T]`.
    pub replay_window: Option<(u32, Option<u32>)>,
    /// `mute-replay-warnings`.
    pub mute_replay_warnings: bool,
    /// `persist-key`.
    pub persist_key: bool,
}

/// Ping timers after the `keepalive` expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    /// `keepalive INTERVAL TIMEOUT` as written.
    pub keepalive: Option<(u32, u32)>,
    /// Seconds between pings the server sends (`ping`, or the keepalive interval).
    pub ping: Option<u32>,
    /// Seconds of silence after which the server drops a client (`ping-restart`, or twice the
    /// keepalive timeout as OpenVPN's server mode does).
    pub ping_restart: Option<u32>,
    /// `ping-exit`.
    pub ping_exit: Option<u32>,
    /// `ping-timer-rem`.
    pub ping_timer_rem: bool,
    /// `inactive SECONDS [BYTES]`.
    pub inactive: Option<(u32, Option<u64>)>,
    /// `explicit-exit-notify [N]` (UDP only; dropped with a warning on TCP).
    pub explicit_exit_notify: Option<u32>,
}

/// `route NET [MASK [GW [METRIC]]]` as written (OpenVPN resolves names and keywords such as
/// `vpn_gateway` at run time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Network (address, name, or keyword).
    pub network: String,
    /// Netmask (default 255.255.255.255).
    pub netmask: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
    /// Metric.
    pub metric: Option<String>,
}

/// `route-ipv6 NET/BITS [GW [METRIC]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteV6 {
    /// Network with prefix length.
    pub network: String,
    /// Gateway.
    pub gateway: Option<String>,
    /// Metric.
    pub metric: Option<String>,
}

/// `ifconfig-pool-persist FILE [SECONDS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolPersist {
    /// The file.
    pub path: PathBuf,
    /// Update interval (default 600; 0 = read-only).
    pub seconds: u32,
}

/// Client admission and per-client policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clients {
    /// `client-config-dir`.
    pub config_dir: Option<PathBuf>,
    /// `ccd-exclusive`.
    pub ccd_exclusive: bool,
    /// `client-to-client`.
    pub client_to_client: bool,
    /// `duplicate-cn`.
    pub duplicate_cn: bool,
    /// `max-clients` (default 1024).
    pub max_clients: u32,
    /// `max-routes-per-client` (default 256).
    pub max_routes_per_client: u32,
    /// `ifconfig-pool-persist`.
    pub pool_persist: Option<PoolPersist>,
    /// `connect-freq N SECS`.
    pub connect_freq: Option<(u32, u32)>,
    /// `connect-freq-initial N SECS` (default 100 10).
    pub connect_freq_initial: Option<(u32, u32)>,
    /// `hash-size R V`.
    pub hash_size: Option<(u32, u32)>,
    /// `stale-routes-check AGE [INTERVAL]`.
    pub stale_routes_check: Option<(u32, Option<u32>)>,
    /// `username-as-common-name`.
    pub username_as_common_name: bool,
    /// `auth-user-pass-optional`.
    pub auth_user_pass_optional: bool,
    /// `auth-gen-token`.
    pub auth_gen_token: Option<AuthGenToken>,
    /// `auth-gen-token-secret`.
    pub auth_gen_token_secret: Option<MaterialRef>,
    /// `block-ipv6` (server side: answer client IPv6 with ICMPv6 unreachable).
    pub block_ipv6: bool,
}

/// `auth-gen-token [LIFETIME [RENEWAL]] [external-auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthGenToken {
    /// Lifetime in seconds (0 = unlimited).
    pub lifetime: u32,
    /// Renewal time in seconds (default: reneg-sec).
    pub renewal: Option<u32>,
    /// `external-auth` flag.
    pub external_auth: bool,
}

/// How `auth-user-pass-verify` passes credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassMethod {
    /// `via-env`.
    ViaEnv,
    /// `via-file`.
    ViaFile,
}

/// `auth-user-pass-verify CMD METHOD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthUserPassVerify {
    /// The command line as written.
    pub command: String,
    /// via-env or via-file.
    pub method: PassMethod,
}

/// User scripts and their environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scripts {
    /// `script-security` level (default 1).
    pub security: u8,
    /// `auth-user-pass-verify`.
    pub auth_user_pass_verify: Option<AuthUserPassVerify>,
    /// `client-connect`.
    pub client_connect: Option<String>,
    /// `client-disconnect`.
    pub client_disconnect: Option<String>,
    /// `learn-address`.
    pub learn_address: Option<String>,
    /// `tls-verify`.
    pub tls_verify: Option<String>,
    /// `tmp-dir`.
    pub tmp_dir: Option<PathBuf>,
    /// `setenv NAME VALUE` pairs, in order.
    pub setenv: Vec<(String, String)>,
    /// `setenv-safe NAME VALUE` pairs (exported as `OPENVPN_NAME`).
    pub setenv_safe: Vec<(String, String)>,
}

/// Where the management interface listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagementListen {
    /// `management PATH unix`.
    Unix {
        /// Socket path.
        path: PathBuf,
    },
    /// `management HOST PORT`.
    Tcp {
        /// Address or name as written.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Management interface settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Management {
    /// Listener.
    pub listen: ManagementListen,
    /// Password file (`stdin` is kept as the literal path `stdin`).
    pub password_file: Option<PathBuf>,
    /// `management-client-user`.
    pub client_user: Option<String>,
    /// `management-client-group`.
    pub client_group: Option<String>,
    /// `management-client-auth`.
    pub client_auth: bool,
    /// `management-hold`.
    pub hold: bool,
    /// `management-log-cache N`.
    pub log_cache: Option<u32>,
    /// `management-query-passwords`.
    pub query_passwords: bool,
    /// `management-forget-disconnect`.
    pub forget_disconnect: bool,
    /// `management-signal`.
    pub signal: bool,
    /// `management-up-down`.
    pub up_down: bool,
    /// Where `management` was given.
    pub set_at: Location,
}

/// `log FILE` / `log-append FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFile {
    /// The file.
    pub path: PathBuf,
    /// `log-append` (true) or `log` (truncate).
    pub append: bool,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    /// `verb` (default 1).
    pub verb: u32,
    /// `mute N`.
    pub mute: Option<u32>,
    /// `log`/`log-append`.
    pub file: Option<LogFile>,
    /// `syslog [PROGNAME]`: `Some(None)` for syslog without a name.
    pub syslog: Option<Option<String>>,
    /// `daemon [PROGNAME]`.
    pub daemon: Option<Option<String>>,
    /// `writepid FILE`.
    pub writepid: Option<PathBuf>,
    /// `suppress-timestamps`.
    pub suppress_timestamps: bool,
    /// `machine-readable-output`.
    pub machine_readable_output: bool,
    /// `errors-to-stderr`.
    pub errors_to_stderr: bool,
    /// `log-file-mode MODE` (Bulwark): permissions of the `log`/`log-append` file, set at every
    /// open (default 0600).
    pub log_file_mode: Option<u32>,
    /// `log-file-group GROUP` (Bulwark): group owner of the log file.
    pub log_file_group: Option<String>,
}

impl Logging {
    /// The syslog ident asked for: `syslog [NAME]`, else `daemon [NAME]`; `openvpn` without a name
    /// (as OpenVPN's default program name).
    pub fn syslog_ident(&self) -> Option<String> {
        self.syslog
            .as_ref()
            .or(self.daemon.as_ref())
            .map(|n| n.clone().unwrap_or_else(|| "openvpn".to_owned()))
    }
}

/// `status FILE [SECONDS]` and `status-version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The status file.
    pub path: PathBuf,
    /// Rewrite interval (default 60).
    pub interval: u32,
}

/// The compression setting, recorded for compatibility only: Bulwark never compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// No compression option given.
    Unset,
    /// `comp-lzo no`: LZO framing byte, never compressed.
    LzoStub,
    /// `compress` / `compress stub`: v1 stub framing.
    Stub,
    /// `compress stub-v2`.
    StubV2,
    /// `compress migrate`: push `comp-lzo no`-style stubs to clients that announce compression.
    Migrate,
}

/// `user`/`group` and privilege settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges {
    /// `user NAME`.
    pub user: Option<String>,
    /// `group NAME`.
    pub group: Option<String>,
    /// `chroot DIR` (Bulwark always chroots its workers; recorded only).
    pub chroot: Option<PathBuf>,
    /// `nice N`.
    pub nice: Option<i32>,
    /// `mlock`.
    pub mlock: bool,
}

/// The typed server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Configuration files read, in order (top file first).
    pub files: Vec<PathBuf>,
    /// The working directory relative paths were resolved against (after the last `cd`).
    pub cwd: PathBuf,
    /// `cd DIR` as written (last one).
    pub cd: Option<PathBuf>,
    /// Listening socket.
    pub transport: Transport,
    /// tun device.
    pub device: Device,
    /// `topology` (default net30).
    pub topology: Topology,
    /// `server` as written.
    pub server_v4: Option<ServerV4>,
    /// `server-ipv6` as written.
    pub server_v6: Option<ServerV6>,
    /// The server's IPv4 interface settings (explicit `ifconfig` or expanded).
    pub ifconfig_v4: Option<IfconfigV4>,
    /// The server's IPv6 interface settings.
    pub ifconfig_v6: Option<IfconfigV6>,
    /// IPv4 pool.
    pub pool_v4: Option<PoolV4>,
    /// IPv6 pool.
    pub pool_v6: Option<PoolV6>,
    /// `route-gateway` (as written or set by the `server` macro in subnet topology).
    pub route_gateway: Option<String>,
    /// `route-ipv6-gateway`.
    pub route_ipv6_gateway: Option<String>,
    /// `route-metric`.
    pub route_metric: Option<u32>,
    /// `route` entries of the server (including the one added by the `server` macro in
    /// net30/p2p topology).
    pub routes: Vec<Route>,
    /// `route-ipv6` entries.
    pub routes_v6: Vec<RouteV6>,
    /// Options pushed to every client, in order: config `push` lines, then what the macros
    /// add (`tun-ipv6`, `route`/`route-gateway`, `topology`, `ping`, `ping-restart`).
    pub push: Vec<String>,
    /// TLS.
    pub tls: Tls,
    /// Data channel.
    pub crypto: Crypto,
    /// Ping/keepalive timers.
    pub timers: Timers,
    /// Clients.
    pub clients: Clients,
    /// Scripts.
    pub scripts: Scripts,
    /// Management interface.
    pub management: Option<Management>,
    /// Logging.
    pub logging: Logging,
    /// Status file.
    pub status: Option<Status>,
    /// `status-version` (default 1).
    pub status_version: u8,
    /// `status-json FILE [SECONDS]` (Bulwark): the status as the versioned JSON document.
    pub status_json: Option<Status>,
    /// `status-file-mode MODE` (Bulwark): permissions of the status files (default 0644).
    pub status_file_mode: Option<u32>,
    /// `status-file-group GROUP` (Bulwark): group owner of the status files.
    pub status_file_group: Option<String>,
    /// Bulwark's management access-control directives (`management-client-role`,
    /// `management-default-role`, `management-max-clients`).
    pub management_access: ManagementAccess,
    /// `metrics-listen` (Bulwark): the Prometheus endpoint served by the broker (off by default).
    pub metrics: Option<MetricsListen>,
    /// `metrics-per-client N` (Bulwark): per-client series for at most N clients (default 0:
    /// none).
    pub metrics_per_client: u32,
    /// User/group.
    pub privileges: Privileges,
    /// Compression compatibility setting.
    pub compression: Compression,
    /// `allow-compression no` was given explicitly (it is also the default; any other value
    /// is refused).
    pub allow_compression_no: bool,
    /// `ignore-unknown-option` names, in order.
    pub ignore_unknown: Vec<String>,
}

/// Settings read from one client-config-dir file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CcdConfig {
    /// `ifconfig-push LOCAL REMOTE_NETMASK [ALIAS]`.
    pub ifconfig_push: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `ifconfig-ipv6-push ADDR/BITS [REMOTE]`.
    pub ifconfig_ipv6_push: Option<(Ipv6Addr, u8, Option<Ipv6Addr>)>,
    /// `iroute NET [MASK]`.
    pub iroutes: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// `iroute-ipv6 NET/BITS`.
    pub iroutes_v6: Vec<(Ipv6Addr, u8)>,
    /// `push-reset` (drops the global push list for this client).
    pub push_reset: bool,
    /// `push` lines.
    pub push: Vec<String>,
    /// `push-remove` lines.
    pub push_remove: Vec<String>,
    /// `disable`.
    pub disable: bool,
}

/// Bulwark's management access-control directives. Role names are already checked to be one
/// of `monitor`, `operator`, `auth`, `admin`; user and group names are resolved by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagementAccess {
    /// `management-client-role ROLE user|group NAME`, in configuration order (the first
    /// matching rule of its kind wins; user rules are checked before group rules).
    pub client_roles: Vec<ClientRole>,
    /// `management-default-role ROLE` (default `admin`, OpenVPN's behaviour).
    pub default_role: Option<String>,
    /// `management-max-clients N`: concurrent management sessions (default 16).
    pub max_clients: Option<u32>,
    /// `management-audit FILE|syslog`: where management audit records go (default: the
    /// daemon log at verb 3).
    pub audit: Option<AuditTarget>,
    /// `management-monitor-socket PATH`: a second unix management socket on which every
    /// connection has the `monitor` role.
    pub monitor_socket: Option<PathBuf>,
}

/// Where the Prometheus metrics endpoint listens (`metrics-listen`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricsListen {
    /// `metrics-listen IP PORT`: a loopback address (checked at load).
    Tcp {
        /// The loopback address.
        ip: std::net::IpAddr,
        /// The port.
        port: u16,
    },
    /// `metrics-listen PATH unix [GROUP]`: a unix socket (mode 0660, group GROUP or root's).
    Unix {
        /// The socket path.
        path: PathBuf,
        /// Group that may connect.
        group: Option<String>,
    },
}

/// Destination of management audit records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditTarget {
    /// Appended to this file (created 0600).
    File(PathBuf),
    /// Sent to syslog (`/dev/log`, facility authpriv).
    Syslog,
}

/// One `management-client-role` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRole {
    /// `monitor`, `operator`, `auth` or `admin`.
    pub role: String,
    /// Who gets it.
    pub subject: RoleSubject,
}

/// Whom a `management-client-role` rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleSubject {
    /// A user (name or numeric uid).
    User(String),
    /// A group (name or numeric gid), matched against primary and supplementary groups.
    Group(String),
}
