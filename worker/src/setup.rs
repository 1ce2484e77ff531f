//! Turning the [`EngineConfig`] received over IPC into a running [`Server`] engine.
//!
//! The parent runs [`check`] on the same configuration before it spawns anything, so every error here
//! is also reported at start-up with the operator's wording; in the worker a failure is fatal and is
//! reported to the parent.

use std::sync::Arc;
use std::time::Duration;

use bulwark_ipc::msg::engine::{EngineConfig, TlsConfigData, WrapConfig};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::proto::data::{Cipher, Digest};
use crate::proto::pool::{Pool, Pool6Config, PoolConfig, Topology};
use crate::proto::server::Server;
use crate::proto::session::PeerConfig;
use crate::proto::tls::{
    CertProfile, KeySigner, RemoteCertTls, ServerTlsSettings, SignError, TlsServer, TlsVersion,
    TlsVersionMin, VerifyClientCert, VerifyX509Name, X509NameKind,
};
use crate::proto::wrap::{
    AuthDigest, GroupWrap, KeyDirection, ReplayParams, ServerWrap, StaticKey, TlsCryptV2ServerKey,
};

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A TLS option is invalid.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A cipher or digest name is invalid.
    #[error("data channel: {0}")]
    Data(String),
    /// A key is invalid.
    #[error("control channel key: {0}")]
    Wrap(String),
    /// The address pool is invalid.
    #[error("address pool: {0}")]
    Pool(String),
}

fn tls_settings(t: &TlsConfigData) -> Result<ServerTlsSettings, SetupError> {
    let e = |x: crate::proto::tls::SettingsError| SetupError::Tls(x.to_string());
    let tls_version_min = match &t.tls_version_min {
        None => None,
        Some(v) => {
            let mut it = v.split_whitespace();
            let ver = it.next().unwrap_or("");
            Some(TlsVersionMin::parse(ver, it.next()).map_err(e)?)
        }
    };
    Ok(ServerTlsSettings {
        ca_pem: t.ca_pem.clone(),
        cert_chain_pem: t.cert_chain_pem.clone(),
        crl: t.crl.clone(),
        tls_version_min,
        tls_version_max: t
            .tls_version_max
            .as_deref()
            .map(TlsVersion::parse)
            .transpose()
            .map_err(e)?,
        tls_cipher: t.tls_cipher.clone(),
        tls_ciphersuites: t.tls_ciphersuites.clone(),
        tls_groups: t.tls_groups.clone(),
        tls_cert_profile: t
            .tls_cert_profile
            .as_deref()
            .map(CertProfile::parse)
            .transpose()
            .map_err(e)?,
        verify_client_cert: VerifyClientCert::parse(&t.verify_client_cert).map_err(e)?,
        remote_cert_tls: t.remote_cert_tls_client.then_some(RemoteCertTls::Client),
        remote_cert_ku: Vec::new(),
        remote_cert_eku: None,
        verify_x509_name: match &t.verify_x509_name {
            None => None,
            Some((name, kind)) => Some(VerifyX509Name {
                name: name.clone(),
                kind: X509NameKind::parse(kind).map_err(e)?,
            }),
        },
        x509_username_field: vec![t.x509_username_field.clone()],
        peer_fingerprint: Vec::new(),
    })
}

fn server_wrap(ec: &EngineConfig) -> Result<(ServerWrap, Option<[u8; 256]>), SetupError> {
    let replay = ReplayParams {
        packets: ec.replay_window.0,
        seconds: ec.replay_window.1,
    };
    let key256 = |k: &[u8]| -> Result<[u8; 256], SetupError> {
        <[u8; 256]>::try_from(k)
            .map_err(|_| SetupError::Wrap(format!("{} bytes, need 256", k.len())))
    };
    Ok(match &ec.wrap {
        WrapConfig::None => (ServerWrap::new(GroupWrap::None, None, replay), None),
        WrapConfig::TlsAuth {
            key,
            direction,
            digest,
        } => {
            let k = key256(key)?;
            let dir = match direction {
                None => KeyDirection::Bidirectional,
                Some(0) => KeyDirection::Normal,
                Some(_) => KeyDirection::Inverse,
            };
            let digest =
                AuthDigest::from_name(digest).map_err(|e| SetupError::Wrap(e.to_string()))?;
            (
                ServerWrap::new(
                    GroupWrap::TlsAuth {
                        key: StaticKey::from_bytes(k),
                        dir,
                        digest,
                    },
                    None,
                    replay,
                ),
                Some(k),
            )
        }
        WrapConfig::TlsCrypt { key } => {
            let k = key256(key)?;
            (
                ServerWrap::new(GroupWrap::TlsCrypt(StaticKey::from_bytes(k)), None, replay),
                Some(k),
            )
        }
        WrapConfig::TlsCryptV2 { server_key, .. } => {
            let text = std::str::from_utf8(server_key)
                .map_err(|_| SetupError::Wrap("tls-crypt-v2 server key is not text".into()))?;
            let k =
                TlsCryptV2ServerKey::parse(text).map_err(|e| SetupError::Wrap(e.to_string()))?;
            (ServerWrap::new(GroupWrap::None, Some(k), replay), None)
        }
    })
}

fn pool(ec: &EngineConfig) -> Result<Pool, SetupError> {
    let p = &ec.pool;
    Pool::new(PoolConfig {
        topology: if p.subnet {
            Topology::Subnet
        } else {
            Topology::Net30
        },
        server_ip: p.server_ip,
        netmask: p.netmask,
        start: p.start,
        end: p.end,
        ipv6: p.ipv6.map(|(server_ip, prefix_len, start)| Pool6Config {
            server_ip,
            prefix_len,
            start,
        }),
    })
    .map_err(|e| SetupError::Pool(e.to_string()))
}

fn peer_config(ec: &EngineConfig, tls: Arc<TlsServer>) -> Result<PeerConfig, SetupError> {
    let data_ciphers = ec
        .data_ciphers
        .iter()
        .map(|c| Cipher::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SetupError::Data(e.to_string()))?;
    let data_ciphers_fallback = ec
        .data_ciphers_fallback
        .as_deref()
        .map(Cipher::parse)
        .transpose()
        .map_err(|e| SetupError::Data(e.to_string()))?;
    Digest::parse(&ec.auth).map_err(|e| SetupError::Data(e.to_string()))?;
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    Ok(PeerConfig {
        tls,
        data_ciphers,
        data_ciphers_fallback,
        auth: ec.auth.clone(),
        push: ec.push.clone(),
        ping: ec.ping.filter(|p| *p > 0).map(secs),
        ping_restart: ec.ping_restart.filter(|p| *p > 0).map(secs),
        reneg_sec: ec.reneg_sec,
        reneg_bytes: ec.reneg_bytes,
        reneg_pkts: ec.reneg_pkts,
        hand_window: secs(ec.hand_window),
        tran_window: secs(ec.tran_window),
        tls_timeout: secs(ec.tls_timeout),
        replay_window: ec.replay_window,
        mute_replay_warnings: ec.mute_replay_warnings,
        client_to_client: ec.client_to_client,
        duplicate_cn: ec.duplicate_cn,
        max_clients: ec.max_clients,
        tun_mtu: ec.tun_mtu,
        options_string: ec.options_string.clone(),
        tls_mtu: usize::from(ec.tls_mtu),
        username_as_common_name: ec.username_as_common_name,
        explicit_exit_notify: ec.explicit_exit_notify,
        defer_auth: ec.defer_auth,
        inactive: ec
            .inactive
            .map(|(secs, bytes)| (Duration::from_secs(u64::from(secs)), bytes)),
        connect_freq: ec
            .connect_freq
            .map(|(n, secs)| (n, Duration::from_secs(u64::from(secs)))),
        connect_freq_initial: ec
            .connect_freq_initial
            .map(|(n, secs)| (n, Duration::from_secs(u64::from(secs)))),
    })
}

/// Builds the TLS server of `tls` whose signatures go through `signer` (start-up, and the SIGHUP
/// reload of certificates for new handshakes).
pub fn tls_server(
    tls: &TlsConfigData,
    signer: Arc<dyn KeySigner>,
) -> Result<TlsServer, SetupError> {
    TlsServer::new(&tls_settings(tls)?, signer).map_err(|e| SetupError::Tls(e.to_string()))
}

/// Builds the engine. `signer` reaches the parent's private key; `rng` is the OS generator.
pub fn build(
    ec: &EngineConfig,
    signer: Arc<dyn KeySigner>,
    cookie_secret: [u8; 32],
    rng: crate::proto::io::Rng,
) -> Result<Server, SetupError> {
    let tls = tls_server(&ec.tls, signer)?;
    let (wrap, group_key) = server_wrap(ec)?;
    let pool = pool(ec)?;
    let cfg = peer_config(ec, Arc::new(tls))?;
    Ok(Server::new(cfg, wrap, group_key, pool, cookie_secret, rng))
}

/// A signer that refuses everything: used by [`check`], which builds the TLS server without ever
/// handshaking.
#[derive(Debug)]
struct CheckOnlySigner(SignatureAlgorithm);

impl KeySigner for CheckOnlySigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.0
    }
    fn sign(&self, _scheme: SignatureScheme, _msg: &[u8]) -> Result<Vec<u8>, SignError> {
        Err(SignError::Refused {
            reason: "configuration check only".into(),
        })
    }
}

/// Checks the whole engine configuration (the parent calls this before spawning the worker).
/// `key_algorithm` is the algorithm of the server's private key.
pub fn check(ec: &EngineConfig, key_algorithm: SignatureAlgorithm) -> Result<(), SetupError> {
    build(
        ec,
        Arc::new(CheckOnlySigner(key_algorithm)),
        [0u8; 32],
        Box::new(|b: &mut [u8]| b.fill(0)),
    )
    .map(|_| ())
}
