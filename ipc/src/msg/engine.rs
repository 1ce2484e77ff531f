//! [`EngineConfig`]: the protocol engine's share of the OpenVPN options, computed and checked by the
//! parent, shipped to the worker inside [`WorkerConfig`](super::WorkerConfig).
//!
//! Everything is plain data: key material arrives as bytes (the worker opens no files), names stay as
//! the operator wrote them and are parsed again by the worker's engine (the parent has already parsed
//! them once with the same code, so a failure there is a bug, reported loudly).
//! The server's private key is deliberately absent: it never leaves the parent.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::validate::ValidationError;

/// Largest PEM bundle (CA, chain, CRL) accepted over IPC.
pub const MAX_PEM_LEN: usize = 192 * 1024;
/// Most `push` options.
pub const MAX_PUSH_OPTIONS: usize = 1024;
/// Longest pushed option (OpenVPN's `OPTION_PARM_SIZE` is 256).
pub const MAX_PUSH_OPTION_LEN: usize = 255;
/// Most clients a server may be configured for.
pub const MAX_CLIENTS_LIMIT: u32 = 0x00FF_FFFE;

/// Transport of the server socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportKind {
    /// UDP (stateless cookie handshake)
    Udp,
    /// TCP server (one session per connection)
    Tcp,
}

/// Control-channel wrapping and its key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WrapConfig {
    /// no wrapping
    None,
    /// `tls-auth`: the 256-byte static key and the key direction (`None` = bidirectional)
    TlsAuth {
        /// static key (256 bytes)
        key: Vec<u8>,
        /// 0 or 1, or none
        direction: Option<u8>,
        /// HMAC digest name (`auth`)
        digest: String,
    },
    /// `tls-crypt`: the 256-byte static key
    TlsCrypt {
        /// static key (256 bytes)
        key: Vec<u8>,
    },
    /// `tls-crypt-v2`: the server key file's text (already parsed once by the parent)
    TlsCryptV2 {
        /// server key file content
        server_key: Vec<u8>,
        /// refuse clients that do not support the cookie exchange (`force-cookie`)
        force_cookie: bool,
    },
}

/// TLS settings (names as in the config; the engine maps them to rustls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfigData {
    /// `ca` PEM bytes
    pub ca_pem: Vec<u8>,
    /// `cert` PEM bytes (the chain; no private key)
    pub cert_chain_pem: Vec<u8>,
    /// `crl-verify` PEM/DER bytes
    pub crl: Option<Vec<u8>>,
    /// `tls-version-min` (e.g. `1.2`, `1.3 or-highest`)
    pub tls_version_min: Option<String>,
    /// `tls-version-max`
    pub tls_version_max: Option<String>,
    /// `tls-cipher`
    pub tls_cipher: Option<String>,
    /// `tls-ciphersuites`
    pub tls_ciphersuites: Option<String>,
    /// `tls-groups`
    pub tls_groups: Option<String>,
    /// `tls-cert-profile`
    pub tls_cert_profile: Option<String>,
    /// `verify-client-cert` (`none`, `optional`, `require`)
    pub verify_client_cert: String,
    /// `remote-cert-tls client`
    pub remote_cert_tls_client: bool,
    /// `verify-x509-name NAME TYPE`
    pub verify_x509_name: Option<(String, String)>,
    /// `x509-username-field` (default `CN`)
    pub x509_username_field: String,
}

/// Address pool (the `server` / `server-ipv6` expansion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolData {
    /// `true` for topology subnet, `false` for net30
    pub subnet: bool,
    /// the server's tunnel address
    pub server_ip: Ipv4Addr,
    /// tunnel netmask
    pub netmask: Ipv4Addr,
    /// first pool address
    pub start: Ipv4Addr,
    /// last pool address
    pub end: Ipv4Addr,
    /// IPv6: server address, prefix length, first pool address
    pub ipv6: Option<(Ipv6Addr, u8, Ipv6Addr)>,
}

/// The engine's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// UDP or TCP
    pub transport: TransportKind,
    /// control-channel wrapping
    pub wrap: WrapConfig,
    /// TLS
    pub tls: TlsConfigData,
    /// `data-ciphers` (colon list split)
    pub data_ciphers: Vec<String>,
    /// `data-ciphers-fallback`
    pub data_ciphers_fallback: Option<String>,
    /// `auth`
    pub auth: String,
    /// address pool
    pub pool: PoolData,
    /// the global push list, in order
    pub push: Vec<String>,
    /// server keepalive ping interval (seconds)
    pub ping: Option<u32>,
    /// server ping-restart (seconds)
    pub ping_restart: Option<u32>,
    /// `reneg-sec max [min]`
    pub reneg_sec: Option<(u32, u32)>,
    /// `reneg-bytes`
    pub reneg_bytes: Option<u64>,
    /// `reneg-pkts`
    pub reneg_pkts: Option<u64>,
    /// `hand-window` seconds
    pub hand_window: u32,
    /// `tran-window` seconds
    pub tran_window: u32,
    /// `tls-timeout` seconds
    pub tls_timeout: u32,
    /// `replay-window n t`
    pub replay_window: (u32, u32),
    /// `mute-replay-warnings`: rejected replays are counted but not logged
    pub mute_replay_warnings: bool,
    /// `client-to-client`
    pub client_to_client: bool,
    /// `duplicate-cn`
    pub duplicate_cn: bool,
    /// `max-clients`
    pub max_clients: u32,
    /// `tun-mtu`
    pub tun_mtu: u16,
    /// `tls-mtu`
    pub tls_mtu: u16,
    /// OCC options string
    pub options_string: String,
    /// `username-as-common-name`
    pub username_as_common_name: bool,
    /// `explicit-exit-notify` on the server
    pub explicit_exit_notify: bool,
    /// Ask the parent before admitting a client (`WorkerToParent::AuthRequest`): set when any
    /// hook is configured (auth-user-pass-verify, client-connect, client-config-dir,
    /// management-client-auth, ifconfig-pool-persist). Without it the engine admits every client
    /// whose certificate verifies and reports only `Client` events.
    pub defer_auth: bool,
    /// `connect-freq N SECONDS`: at most N new client sessions per SECONDS.
    pub connect_freq: Option<(u32, u32)>,
    /// `connect-freq-initial N SECONDS`: at most N stateless replies to initial packets (UDP hard
    /// resets) per SECONDS; `None` = OpenVPN's default, 100 per 10 s.
    pub connect_freq_initial: Option<(u32, u32)>,
    /// `inactive SECONDS [BYTES]`: end a session after SECONDS with fewer than BYTES (default 0:
    /// any traffic) of tunnel traffic in that time.
    pub inactive: Option<(u32, u64)>,
    /// `coalesce-usecs`: after an event-loop turn that handled at least two packets the worker's data
    /// path waits this many microseconds before it looks for new events (0 = never); at most
    /// [`MAX_COALESCE_USECS`].
    pub coalesce_usecs: u32,
}

pub use bulwark_config::{DEFAULT_COALESCE_USECS, MAX_COALESCE_USECS};

impl EngineConfig {
    /// A small valid configuration (UDP, no wrapping, a /24 pool) for tests of the IPC layer, which
    /// do not run the engine. The certificate fields hold placeholders the engine would reject.
    pub fn minimal_for_tests() -> Self {
        EngineConfig {
            transport: TransportKind::Udp,
            wrap: WrapConfig::None,
            tls: TlsConfigData {
                ca_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
                cert_chain_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
                crl: None,
                tls_version_min: None,
                tls_version_max: None,
                tls_cipher: None,
                tls_ciphersuites: None,
                tls_groups: None,
                tls_cert_profile: None,
                verify_client_cert: "require".into(),
                remote_cert_tls_client: false,
                verify_x509_name: None,
                x509_username_field: "CN".into(),
            },
            data_ciphers: vec!["AES-256-GCM".into()],
            data_ciphers_fallback: None,
            auth: "SHA1".into(),
            pool: PoolData {
                subnet: true,
                server_ip: Ipv4Addr::new(10, 8, 0, 1),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                start: Ipv4Addr::new(10, 8, 0, 2),
                end: Ipv4Addr::new(10, 8, 0, 254),
                ipv6: None,
            },
            push: Vec::new(),
            ping: Some(10),
            ping_restart: Some(120),
            reneg_sec: Some((3600, 3240)),
            reneg_bytes: None,
            reneg_pkts: None,
            hand_window: 60,
            tran_window: 3600,
            tls_timeout: 2,
            replay_window: (64, 15),
            mute_replay_warnings: false,
            client_to_client: false,
            duplicate_cn: false,
            max_clients: 1024,
            tun_mtu: 1500,
            tls_mtu: 1250,
            options_string: "V4,dev-type tun".into(),
            username_as_common_name: false,
            explicit_exit_notify: false,
            defer_auth: false,
            connect_freq: None,
            connect_freq_initial: None,
            inactive: None,
            coalesce_usecs: DEFAULT_COALESCE_USECS,
        }
    }
}

/// A global push list: at most [`MAX_PUSH_OPTIONS`] options of at most [`MAX_PUSH_OPTION_LEN`]
/// bytes, no comma, no NUL.
pub fn check_push(push: &[String]) -> Result<(), ValidationError> {
    if push.len() > MAX_PUSH_OPTIONS {
        return Err(bad("push", format!("more than {MAX_PUSH_OPTIONS} options")));
    }
    if let Some(p) = push
        .iter()
        .find(|p| p.len() > MAX_PUSH_OPTION_LEN || p.contains(',') || p.contains('\0'))
    {
        return Err(bad("push", format!("invalid pushed option '{p}'")));
    }
    Ok(())
}

fn bad(field: &'static str, why: String) -> ValidationError {
    ValidationError::Field { field, why }
}

impl TlsConfigData {
    /// Checks sizes: CA and certificate present, every PEM within [`MAX_PEM_LEN`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (name, v) in [
            ("tls.ca_pem", Some(&self.ca_pem)),
            ("tls.cert_chain_pem", Some(&self.cert_chain_pem)),
            ("tls.crl", self.crl.as_ref()),
        ] {
            if let Some(v) = v {
                if v.len() > MAX_PEM_LEN {
                    return Err(bad(
                        name,
                        format!("{} bytes exceeds {MAX_PEM_LEN}", v.len()),
                    ));
                }
            }
        }
        if self.ca_pem.is_empty() || self.cert_chain_pem.is_empty() {
            return Err(bad("tls", "CA and certificate are required".into()));
        }
        Ok(())
    }
}

impl EngineConfig {
    /// Checks sizes and ranges of every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match &self.wrap {
            WrapConfig::None => {}
            WrapConfig::TlsAuth {
                key,
                direction,
                digest,
            } => {
                if key.len() != 256 {
                    return Err(bad(
                        "wrap.tls_auth.key",
                        format!("{} bytes, need 256", key.len()),
                    ));
                }
                if direction.is_some_and(|d| d > 1) {
                    return Err(bad("wrap.tls_auth.direction", "must be 0 or 1".into()));
                }
                if digest.is_empty() || digest.len() > 32 {
                    return Err(bad("wrap.tls_auth.digest", "bad digest name".into()));
                }
            }
            WrapConfig::TlsCrypt { key } => {
                if key.len() != 256 {
                    return Err(bad(
                        "wrap.tls_crypt.key",
                        format!("{} bytes, need 256", key.len()),
                    ));
                }
            }
            WrapConfig::TlsCryptV2 { server_key, .. } => {
                if server_key.is_empty() || server_key.len() > 4096 {
                    return Err(bad(
                        "wrap.tls_crypt_v2.server_key",
                        format!(
                            "{} bytes, expected a key file of at most 4096",
                            server_key.len()
                        ),
                    ));
                }
            }
        }
        self.tls.validate()?;
        if self.data_ciphers.is_empty() || self.data_ciphers.len() > 32 {
            return Err(bad("data_ciphers", "1..=32 ciphers required".into()));
        }
        check_push(&self.push)?;
        if u32::from(self.pool.end) < u32::from(self.pool.start) {
            return Err(bad("pool", "empty range".into()));
        }
        if self.max_clients == 0 || self.max_clients > MAX_CLIENTS_LIMIT {
            return Err(bad(
                "max_clients",
                format!("{} out of range", self.max_clients),
            ));
        }
        if self.hand_window == 0 || self.tls_timeout == 0 {
            return Err(bad("hand_window", "timers must be positive".into()));
        }
        if !(154..=2048).contains(&self.tls_mtu) {
            return Err(bad(
                "tls_mtu",
                format!("{} outside 154..=2048", self.tls_mtu),
            ));
        }
        if self.options_string.len() >= 512 {
            return Err(bad("options_string", "512 bytes or more".into()));
        }
        if self.connect_freq.is_some_and(|(n, s)| n == 0 || s == 0) {
            return Err(bad("connect_freq", "both values must be positive".into()));
        }
        if self
            .connect_freq_initial
            .is_some_and(|(n, s)| n == 0 || s == 0)
        {
            return Err(bad(
                "connect_freq_initial",
                "both values must be positive".into(),
            ));
        }
        if self.coalesce_usecs > MAX_COALESCE_USECS {
            return Err(bad(
                "coalesce_usecs",
                format!("at most {MAX_COALESCE_USECS} microseconds"),
            ));
        }
        if self.inactive.is_some_and(|(s, _)| s == 0) {
            return Err(bad("inactive", "seconds must be positive".into()));
        }
        if self.replay_window.0 == 0 || self.replay_window.0 > 65536 {
            return Err(bad("replay_window", "window out of range".into()));
        }
        Ok(())
    }
}
