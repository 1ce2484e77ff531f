//! Building the worker's [`EngineConfig`] from the parsed configuration.
//!
//! The parent reads every file the engine needs (CA, certificate chain, CRL, control-channel keys) and
//! ships the bytes; the worker opens nothing. The server's private key is not part of it: it stays here
//! and signs through the signer channel. Every value is checked here with the worker's own parsers, so
//! a bad key file or cipher name is reported at start-up with the config location, before any process
//! is spawned or any device touched.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use bulwark_config::{
    Compression, Config, ControlWrap, KeyDirection, Material, MaterialRef, Proto, Topology,
};
use bulwark_ipc::msg::engine::{EngineConfig, PoolData, TlsConfigData, TransportKind, WrapConfig};
use bulwark_worker::proto::data::Cipher;
use bulwark_worker::proto::wrap::{StaticKey, TlsCryptV2ServerKey};

/// Why the engine configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineConfigError {
    /// A key or certificate file could not be read.
    #[error("{location}: cannot read {what} '{path}': {source}")]
    Read {
        /// where the directive was
        location: String,
        /// what the file is
        what: &'static str,
        /// the path
        path: PathBuf,
        /// cause
        source: std::io::Error,
    },
    /// A file's content is invalid.
    #[error("{location}: invalid {what}: {why}")]
    Invalid {
        /// where the directive was
        location: String,
        /// what the file is
        what: &'static str,
        /// why
        why: String,
    },
    /// A required directive is missing.
    #[error("missing required option: {0}")]
    Missing(&'static str),
    /// A setting Bulwark cannot serve.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
}

fn read_material(m: &MaterialRef, what: &'static str) -> Result<Vec<u8>, EngineConfigError> {
    match &m.material {
        Material::Inline(s) => Ok(s.as_bytes().to_vec()),
        Material::File(p) => std::fs::read(p).map_err(|source| EngineConfigError::Read {
            location: m.set_at.to_string(),
            what,
            path: p.clone(),
            source,
        }),
    }
}

fn invalid(m: &MaterialRef, what: &'static str, why: impl ToString) -> EngineConfigError {
    EngineConfigError::Invalid {
        location: m.set_at.to_string(),
        what,
        why: why.to_string(),
    }
}

fn static_key(m: &MaterialRef, what: &'static str) -> Result<Vec<u8>, EngineConfigError> {
    let bytes = read_material(m, what)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid(m, what, "not text"))?;
    let key = StaticKey::parse(&text).map_err(|e| invalid(m, what, e))?;
    Ok(key.as_bytes().to_vec())
}

/// The OCC options string a 2.6 server sends (digest §5.6). Peers compare it only for warnings at
/// verb ≥ 7, but it is kept plausible.
pub fn options_string(cfg: &Config) -> String {
    let v6 = matches!(cfg.transport.family, bulwark_config::AddrFamily::V6);
    let proto = match (cfg.transport.proto, v6) {
        (Proto::Udp, false) => "UDPv4",
        (Proto::Udp, true) => "UDPv6",
        (Proto::TcpServer, false) => "TCPv4_SERVER",
        (Proto::TcpServer, true) => "TCPv6_SERVER",
    };
    let tun_mtu = cfg.device.tun_mtu;
    let auth = cfg.crypto.auth.clone().unwrap_or_else(|| "SHA1".into());
    let mut s = format!(
        "V4,dev-type tun,link-mtu {},tun-mtu {tun_mtu},proto {proto}",
        tun_mtu + 41
    );
    if !matches!(cfg.compression, Compression::Unset) {
        s.push_str(",comp-lzo");
    }
    if let ControlWrap::TlsAuth {
        direction: Some(d), ..
    } = &cfg.tls.control_wrap
    {
        s.push_str(match d {
            KeyDirection::Normal => ",keydir 0",
            KeyDirection::Inverse => ",keydir 1",
        });
    }
    s.push_str(&format!(",auth {auth},keysize 128"));
    if matches!(cfg.tls.control_wrap, ControlWrap::TlsAuth { .. }) {
        s.push_str(",tls-auth");
    }
    s.push_str(",key-method 2,tls-server");
    s
}

/// Options the parser accepts but this build does not implement yet. Those whose absence would weaken
/// security (authentication or per-client policy silently skipped) refuse to start; the others are
/// reported as warnings, once, at start-up.
pub fn unimplemented_options(cfg: &Config) -> (Vec<String>, Vec<String>) {
    let mut fatal = Vec::new();
    let mut warn = Vec::new();
    let nyi = "is not implemented in this build yet";
    let s = &cfg.scripts;
    if s.tls_verify.is_some() {
        fatal.push(format!("tls-verify {nyi}; refusing to start rather than skip the certificate check it implements"));
    }
    if cfg.clients.auth_gen_token.is_some() {
        fatal.push(format!("auth-gen-token {nyi}"));
    }
    if let Some(n) = cfg.privileges.nice {
        warn.push(format!(
            "nice {n} {nyi}; the processes keep their scheduling priority"
        ));
    }
    if cfg.privileges.mlock {
        warn.push(format!("mlock {nyi}; memory may be swapped"));
    }
    (fatal, warn)
}

/// Builds and checks the engine configuration.
pub fn build(cfg: &Config) -> Result<EngineConfig, EngineConfigError> {
    let ca = cfg
        .tls
        .ca
        .as_ref()
        .ok_or(EngineConfigError::Missing("ca"))?;
    let cert = cfg
        .tls
        .cert
        .as_ref()
        .ok_or(EngineConfigError::Missing("cert"))?;
    let ca_pem = read_material(ca, "CA certificate")?;
    let mut cert_chain_pem = read_material(cert, "certificate")?;
    if let Some(extra) = &cfg.tls.extra_certs {
        cert_chain_pem.push(b'\n');
        cert_chain_pem.extend(read_material(extra, "extra certificates")?);
    }
    let crl = match &cfg.tls.crl_verify {
        None => None,
        Some(c) if c.dir => {
            return Err(EngineConfigError::Unsupported(format!(
                "{}: crl-verify DIR dir (a directory of revoked serials) is not supported yet; use a CRL file",
                c.source.set_at
            )))
        }
        Some(c) => Some(read_material(&c.source, "CRL")?),
    };
    let auth = cfg
        .crypto
        .auth
        .clone()
        .unwrap_or_else(|| "SHA1".to_string());
    let wrap = match &cfg.tls.control_wrap {
        ControlWrap::None => WrapConfig::None,
        ControlWrap::TlsAuth { key, direction } => WrapConfig::TlsAuth {
            key: static_key(key, "tls-auth key")?,
            direction: direction.map(|d| match d {
                KeyDirection::Normal => 0,
                KeyDirection::Inverse => 1,
            }),
            digest: auth.clone(),
        },
        ControlWrap::TlsCrypt { key } => WrapConfig::TlsCrypt {
            key: static_key(key, "tls-crypt key")?,
        },
        ControlWrap::TlsCryptV2 { key, force_cookie } => {
            let bytes = read_material(key, "tls-crypt-v2 server key")?;
            let text = String::from_utf8(bytes)
                .map_err(|_| invalid(key, "tls-crypt-v2 server key", "not text"))?;
            TlsCryptV2ServerKey::parse(&text)
                .map_err(|e| invalid(key, "tls-crypt-v2 server key", e))?;
            WrapConfig::TlsCryptV2 {
                server_key: text.into_bytes(),
                force_cookie: *force_cookie,
            }
        }
    };
    // ciphers: checked with the engine's own parser
    for c in &cfg.crypto.data_ciphers {
        Cipher::parse(c)
            .map_err(|e| EngineConfigError::Unsupported(format!("data-ciphers: {e}")))?;
    }
    if let Some(f) = &cfg.crypto.data_ciphers_fallback {
        Cipher::parse(f)
            .map_err(|e| EngineConfigError::Unsupported(format!("data-ciphers-fallback: {e}")))?;
    }
    let pool_v4 = cfg.pool_v4.as_ref().ok_or(EngineConfigError::Missing(
        "server (or ifconfig-pool): Bulwark serves clients from an address pool",
    ))?;
    let ifc = cfg
        .ifconfig_v4
        .as_ref()
        .ok_or(EngineConfigError::Missing("server (or ifconfig)"))?;
    let subnet = match cfg.topology {
        Topology::Subnet => true,
        Topology::Net30 => false,
        Topology::P2p => {
            return Err(EngineConfigError::Unsupported(
                "topology p2p is not supported (use subnet or net30)".into(),
            ))
        }
    };
    let netmask = if subnet {
        pool_v4.netmask.unwrap_or(ifc.remote_or_netmask)
    } else {
        Ipv4Addr::new(255, 255, 255, 252)
    };
    let ipv6 = match (&cfg.ifconfig_v6, &cfg.pool_v6) {
        (Some(i6), Some(p6)) => Some((i6.local, p6.prefix_len, p6.base)),
        _ => None,
    };
    let tls = TlsConfigData {
        ca_pem,
        cert_chain_pem,
        crl,
        tls_version_min: cfg.tls.version_min.as_ref().map(|v| {
            if v.or_highest {
                format!("{} or-highest", v.version)
            } else {
                v.version.clone()
            }
        }),
        tls_version_max: cfg.tls.version_max.clone(),
        tls_cipher: cfg.tls.cipher.clone(),
        tls_ciphersuites: cfg.tls.ciphersuites.clone(),
        tls_groups: cfg
            .tls
            .groups
            .clone()
            .or_else(|| cfg.tls.ecdh_curve.clone()),
        tls_cert_profile: cfg.tls.cert_profile.clone(),
        verify_client_cert: match cfg.tls.verify_client_cert {
            bulwark_config::VerifyClientCert::None => "none",
            bulwark_config::VerifyClientCert::Optional => "optional",
            bulwark_config::VerifyClientCert::Require => "require",
        }
        .to_string(),
        remote_cert_tls_client: matches!(
            cfg.tls.remote_cert_tls,
            Some(bulwark_config::RemoteCertTls::Client)
        ),
        verify_x509_name: cfg
            .tls
            .verify_x509_name
            .as_ref()
            .map(|v| (v.name.clone(), v.kind.clone())),
        x509_username_field: cfg
            .tls
            .x509_username_field
            .first()
            .cloned()
            .unwrap_or_else(|| "CN".into()),
    };
    let reneg_sec = if cfg.tls.reneg_sec == 0 {
        None
    } else {
        // a server randomises the first renegotiation between 90% and 100% unless a minimum is given
        let max = cfg.tls.reneg_sec;
        let min = cfg.tls.reneg_sec_min.unwrap_or(max - max / 10);
        Some((max, min.min(max)))
    };
    let ec = EngineConfig {
        transport: match cfg.transport.proto {
            Proto::Udp => TransportKind::Udp,
            Proto::TcpServer => TransportKind::Tcp,
        },
        wrap,
        tls,
        data_ciphers: cfg.crypto.data_ciphers.clone(),
        data_ciphers_fallback: cfg.crypto.data_ciphers_fallback.clone(),
        auth,
        pool: PoolData {
            subnet,
            server_ip: ifc.local,
            netmask,
            start: pool_v4.start,
            end: pool_v4.end,
            ipv6,
        },
        push: cfg.push.clone(),
        ping: cfg.timers.ping,
        ping_restart: cfg.timers.ping_restart,
        reneg_sec,
        reneg_bytes: cfg.tls.reneg_bytes,
        reneg_pkts: cfg.tls.reneg_pkts,
        hand_window: cfg.tls.hand_window,
        tran_window: cfg.tls.tran_window,
        tls_timeout: cfg.tls.tls_timeout,
        replay_window: cfg
            .crypto
            .replay_window
            .map(|(n, t)| (n, t.unwrap_or(15)))
            .unwrap_or((64, 15)),
        mute_replay_warnings: cfg.crypto.mute_replay_warnings,
        client_to_client: cfg.clients.client_to_client,
        duplicate_cn: cfg.clients.duplicate_cn,
        max_clients: cfg.clients.max_clients,
        tun_mtu: u16::try_from(cfg.device.tun_mtu).map_err(|_| {
            EngineConfigError::Unsupported(format!("tun-mtu {} too large", cfg.device.tun_mtu))
        })?,
        tls_mtu: 1250,
        options_string: options_string(cfg),
        username_as_common_name: cfg.clients.username_as_common_name,
        explicit_exit_notify: cfg.timers.explicit_exit_notify.is_some(),
        defer_auth: false,
        connect_freq: cfg.clients.connect_freq,
        connect_freq_initial: cfg.clients.connect_freq_initial,
        coalesce_usecs: cfg
            .transport
            .coalesce_usecs
            .unwrap_or(bulwark_ipc::msg::engine::DEFAULT_COALESCE_USECS),
        inactive: cfg.timers.inactive.map(|(s, b)| (s, b.unwrap_or(0))),
    };
    ec.validate()
        .map_err(|e| EngineConfigError::Unsupported(e.to_string()))?;
    Ok(ec)
}

/// Builds the engine once in the parent (TLS settings, ciphers, keys, pool) so that every error is
/// reported before anything is spawned. `key_algorithm` is the server key's algorithm (from the signer).
pub fn check(
    ec: &EngineConfig,
    key_algorithm: rustls::SignatureAlgorithm,
) -> Result<(), EngineConfigError> {
    bulwark_worker::setup::check(ec, key_algorithm)
        .map_err(|e| EngineConfigError::Unsupported(e.to_string()))
}

/// Loads the server's private key (file or inline `<key>`) and certificate for the signer. The key is
/// checked against the certificate here, at start-up.
pub fn load_key_signer(cfg: &Config) -> Result<crate::signer::ServerKeySigner, EngineConfigError> {
    let key = cfg
        .tls
        .key
        .as_ref()
        .ok_or(EngineConfigError::Missing("key"))?;
    let cert = cfg
        .tls
        .cert
        .as_ref()
        .ok_or(EngineConfigError::Missing("cert"))?;
    let key_pem = read_material(key, "private key")?;
    let cert_pem = read_material(cert, "certificate")?;
    // One signature per handshake: the budget scales with the configured capacity so that a mass
    // reconnect of every client is served, while a compromised worker still cannot sign at will.
    let d = crate::signer::RateLimit::default();
    let limit = crate::signer::RateLimit {
        burst: d.burst.max(cfg.clients.max_clients),
        per_second: d.per_second.max(cfg.clients.max_clients / 10),
    };
    crate::signer::ServerKeySigner::from_pem(&key_pem, &cert_pem, limit, std::time::Instant::now())
        .map_err(|e| invalid(key, "private key", e))
}

/// The per-client settings of a parsed client-connect config (CCD file, client-connect script
/// output, management `client-auth` lines). `disable` is not represented: callers deny first.
pub fn overrides_from_ccd(
    ccd: &bulwark_config::CcdConfig,
) -> bulwark_ipc::msg::clients::ClientOverrides {
    let prefix =
        |mask: std::net::Ipv4Addr| u8::try_from(u32::from(mask).leading_ones()).unwrap_or(32);
    bulwark_ipc::msg::clients::ClientOverrides {
        ifconfig_push: ccd.ifconfig_push,
        ifconfig_ipv6_push: ccd.ifconfig_ipv6_push.map(|(a, b, _)| (a, b)),
        iroutes: ccd
            .iroutes
            .iter()
            .map(|(net, mask)| (*net, prefix(*mask)))
            .collect(),
        iroutes_v6: ccd.iroutes_v6.clone(),
        push_reset: ccd.push_reset,
        push_remove: ccd.push_remove.clone(),
        push: ccd.push.clone(),
        pool_hint: None,
        pool_hint_v6: None,
    }
}
