#![deny(unsafe_code)]
//! `bulwark_pki`: the engine of `bulwark init` — a complete, ready-to-run OpenVPN server directory.
//!
//! API:
//! - [`generate`]`(&InitOptions) -> Result<Pki, PkiError>`: a CA (basicConstraints CA:TRUE, keyUsage
//!   keyCertSign|cRLSign), a server certificate (CN `server`, CA:FALSE, keyUsage digitalSignature plus
//!   keyAgreement (EC) or keyEncipherment (RSA), EKU serverAuth — exactly what a stock client's
//!   `remote-cert-tls server` checks; no SAN, since OpenVPN does no hostname check), client
//!   certificates (CN `client1`.., CA:FALSE, keyUsage digitalSignature, EKU clientAuth), a CRL signed
//!   by the CA (empty, or listing [`InitOptions::revoked_clients`]) and a 2048-bit OpenVPN static key
//!   usable for tls-auth and tls-crypt. Keys are EC P-256 (default) or RSA 2048/3072 ([`KeyKind`]).
//! - [`Pki::revoke`] / [`Pki::revoke_serial`]: re-issue the CRL with another revoked certificate.
//! - [`write_dir`]`(&Pki, dir, &ServerConfOptions) -> Result<WrittenDir, PkiError>`: writes the files,
//!   `server.conf` (absolute paths) and one inline `.ovpn` profile per client under `clients/`.
//!
//! Invariants:
//! - Private keys (CA, server, clients, static/tls-crypt-v2 keys, profiles embedding a key) are
//!   created with mode 0600 via `create_new`: an existing file is never overwritten or widened.
//!   Certificates, the CRL and `server.conf` are 0644 and the directory 0755, because OpenVPN re-reads
//!   the CRL after dropping to `user nobody`.
//! - Private keys never appear in `Debug` output.
//! - Signatures are ECDSA-P256-SHA256 or sha256WithRSAEncryption; serial numbers are 16 random
//!   bytes (positive, fixed length).

pub mod conf;
pub mod rsa;
pub mod static_key;

pub use conf::{
    render_client_profile, render_server_conf, ClientMaterial, ConfError, Proto, ServerConfOptions,
    ServerPaths, TlsCryptV2Keys, WrapMode,
};
pub use static_key::{StaticKey, StaticKeyError, STATIC_KEY_LEN};

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber, SignatureAlgorithm,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

/// Errors of PKI generation and of writing the server directory.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// RSA key generation failed.
    #[error("RSA key generation failed: {0}")]
    Rsa(#[from] rsa::RsaError),
    /// Static key generation failed.
    #[error("static key: {0}")]
    StaticKey(#[from] StaticKeyError),
    /// EC key generation or key loading failed.
    #[error("creating the {kind:?} key pair for {what}: {source}")]
    KeyPair {
        /// Which key kind.
        kind: KeyKind,
        /// Which certificate the key is for.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Signing a certificate failed.
    #[error("issuing the certificate for {what}: {source}")]
    Certificate {
        /// Which certificate.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Signing the CRL failed.
    #[error("issuing the CRL: {0}")]
    Crl(rcgen::Error),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A common name is unusable (it is also a file name).
    #[error("invalid common name {0:?}: use 1..=64 characters from [A-Za-z0-9._@-], not starting with '.'")]
    InvalidName(String),
    /// Two certificates would get the same common name.
    #[error("duplicate common name {0:?}")]
    DuplicateName(String),
    /// A client to revoke or to write a profile for does not exist.
    #[error("no client certificate with common name {0:?}")]
    UnknownClient(String),
    /// A serial number to revoke is not one this CA issued.
    #[error("serial {0} was not issued by this CA")]
    UnknownSerial(String),
    /// A validity period of zero days was requested.
    #[error("validity periods must be at least one day")]
    BadValidity,
    /// Rendering a configuration failed.
    #[error("rendering configuration: {0}")]
    Conf(#[from] ConfError),
    /// Creating the output directory failed.
    #[error("creating directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Resolving the output directory to an absolute path failed.
    #[error("resolving {path}: {source}")]
    Canonicalize {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing a file failed (including: it already exists).
    #[error("writing {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Key algorithm for every key of the PKI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// ECDSA on NIST P-256 with SHA-256 signatures (default).
    #[default]
    EcP256,
    /// RSA 2048 bits, sha256WithRSAEncryption.
    Rsa2048,
    /// RSA 3072 bits, sha256WithRSAEncryption.
    Rsa3072,
}

impl KeyKind {
    /// Parses `ec`/`ec-p256`/`p256`, `rsa2048`/`rsa-2048`, `rsa3072`/`rsa-3072`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ec" | "ec-p256" | "p256" | "ecdsa" => Some(KeyKind::EcP256),
            "rsa" | "rsa2048" | "rsa-2048" => Some(KeyKind::Rsa2048),
            "rsa3072" | "rsa-3072" => Some(KeyKind::Rsa3072),
            _ => None,
        }
    }

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Rsa2048 | KeyKind::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn is_rsa(self) -> bool {
        !matches!(self, KeyKind::EcP256)
    }

    fn generate(self, what: &str) -> Result<KeyPair, PkiError> {
        let err = |source| PkiError::KeyPair {
            kind: self,
            what: what.to_string(),
            source,
        };
        match self {
            KeyKind::EcP256 => KeyPair::generate_for(self.algorithm()).map_err(err),
            KeyKind::Rsa2048 | KeyKind::Rsa3072 => {
                let bits = if self == KeyKind::Rsa2048 { 2048 } else { 3072 };
                let der = rsa::generate_pkcs8(bits)?;
                KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), self.algorithm())
                    .map_err(err)
            }
        }
    }

    fn load(self, what: &str, pem: &str) -> Result<KeyPair, PkiError> {
        KeyPair::from_pkcs8_pem_and_sign_algo(pem, self.algorithm()).map_err(|source| {
            PkiError::KeyPair {
                kind: self,
                what: what.to_string(),
                source,
            }
        })
    }
}

/// What [`generate`] produces.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Key algorithm for CA, server and clients.
    pub key_kind: KeyKind,
    /// Subject CN of the CA.
    pub ca_common_name: String,
    /// Subject CN of the server certificate.
    pub server_common_name: String,
    /// Client certificate common names (default: `client1`).
    pub clients: Vec<String>,
    /// Clients (by CN) listed as revoked in the initial CRL.
    pub revoked_clients: Vec<String>,
    /// Certificate validity in days (default 3650).
    pub validity_days: u32,
    /// CRL validity (nextUpdate) in days (default 3650); OpenVPN refuses every client once it passes.
    pub crl_validity_days: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            key_kind: KeyKind::EcP256,
            ca_common_name: "Bulwark CA".to_string(),
            server_common_name: "server".to_string(),
            clients: vec!["client1".to_string()],
            revoked_clients: Vec::new(),
            validity_days: 3650,
            crl_validity_days: 3650,
        }
    }
}

impl InitOptions {
    /// Default options with clients `client1..=clientN`.
    pub fn with_clients(n: usize) -> Self {
        Self {
            clients: (1..=n).map(|i| format!("client{i}")).collect(),
            ..Self::default()
        }
    }
}

/// One certificate with its private key.
#[derive(Clone)]
pub struct Credential {
    /// Subject CN.
    pub common_name: String,
    /// Serial number (big-endian bytes).
    pub serial: Vec<u8>,
    /// Certificate, PEM.
    pub cert_pem: String,
    key_pem: String,
}

impl Credential {
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The serial number as lowercase hex.
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("common_name", &self.common_name)
            .field("serial", &self.serial_hex())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A generated PKI: CA, server, clients, CRL and static key.
#[derive(Clone, Debug)]
pub struct Pki {
    /// Key algorithm used throughout.
    pub key_kind: KeyKind,
    /// The CA certificate and key.
    pub ca: Credential,
    /// The server certificate and key.
    pub server: Credential,
    /// Client certificates and keys, in the order requested.
    pub clients: Vec<Credential>,
    /// The tls-auth / tls-crypt key.
    pub static_key: StaticKey,
    crl_pem: String,
    revoked: Vec<Vec<u8>>,
    crl_number: u64,
    crl_validity_days: u32,
    ca_params: CertificateParams,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

fn random_serial(rng: &SystemRandom) -> Result<Vec<u8>, PkiError> {
    let mut s = vec![0u8; 16];
    rng.fill(&mut s).map_err(|_| PkiError::Random)?;
    // Positive and of fixed length: top bit clear, second bit set.
    s[0] = (s[0] & 0x7f) | 0x40;
    Ok(s)
}

fn leaf_params(cn: &str, serial: &[u8], now: OffsetDateTime, days: u32) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(i64::from(days));
    p.is_ca = IsCa::ExplicitNoCa;
    p.use_authority_key_identifier_extension = true;
    p
}

/// Generates a CA, a server certificate, the client certificates, the CRL and a static key.
pub fn generate(opts: &InitOptions) -> Result<Pki, PkiError> {
    if opts.validity_days == 0 || opts.crl_validity_days == 0 {
        return Err(PkiError::BadValidity);
    }
    if !valid_ca_name(&opts.ca_common_name) {
        return Err(PkiError::InvalidName(opts.ca_common_name.clone()));
    }
    for name in std::iter::once(&opts.server_common_name).chain(opts.clients.iter()) {
        if !valid_name(name) {
            return Err(PkiError::InvalidName(name.clone()));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in std::iter::once(&opts.server_common_name).chain(opts.clients.iter()) {
        if !seen.insert(name.as_str()) {
            return Err(PkiError::DuplicateName(name.clone()));
        }
    }
    for r in &opts.revoked_clients {
        if !opts.clients.contains(r) {
            return Err(PkiError::UnknownClient(r.clone()));
        }
    }

    let rng = SystemRandom::new();
    let now = OffsetDateTime::now_utc();
    let kind = opts.key_kind;

    // CA
    let ca_key = kind.generate("the CA")?;
    let ca_serial = random_serial(&rng)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, opts.ca_common_name.as_str());
    ca_params.serial_number = Some(SerialNumber::from_slice(&ca_serial));
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(i64::from(opts.validity_days));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| PkiError::Certificate {
            what: "the CA".into(),
            source,
        })?;
    let ca = Credential {
        common_name: opts.ca_common_name.clone(),
        serial: ca_serial,
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params.clone(), ca_key);

    // Server
    let server = server_credential(
        kind,
        &opts.server_common_name,
        &issuer,
        &rng,
        now,
        opts.validity_days,
    )?;

    // Clients
    let mut clients = Vec::with_capacity(opts.clients.len());
    for cn in &opts.clients {
        let key = kind.generate(cn)?;
        let serial = random_serial(&rng)?;
        let mut cp = leaf_params(cn, &serial, now, opts.validity_days);
        cp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = cp
            .signed_by(&key, &issuer)
            .map_err(|source| PkiError::Certificate {
                what: cn.clone(),
                source,
            })?;
        clients.push(Credential {
            common_name: cn.clone(),
            serial,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        });
    }

    let revoked = opts
        .revoked_clients
        .iter()
        .filter_map(|r| clients.iter().find(|c| &c.common_name == r))
        .map(|c| c.serial.clone())
        .collect();
    let mut pki = Pki {
        key_kind: kind,
        ca,
        server,
        clients,
        static_key: StaticKey::generate()?,
        crl_pem: String::new(),
        revoked,
        crl_number: 0,
        crl_validity_days: opts.crl_validity_days,
        ca_params,
    };
    pki.reissue_crl()?;
    Ok(pki)
}

/// A server certificate (serverAuth, the key usages stock OpenVPN clients check) and its new key,
/// signed by `issuer`.
fn server_credential(
    kind: KeyKind,
    common_name: &str,
    issuer: &Issuer<'_, KeyPair>,
    rng: &SystemRandom,
    now: OffsetDateTime,
    validity_days: u32,
) -> Result<Credential, PkiError> {
    let server_key = kind.generate(common_name)?;
    let server_serial = random_serial(rng)?;
    let mut sp = leaf_params(common_name, &server_serial, now, validity_days);
    sp.key_usages = if kind.is_rsa() {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ]
    };
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert =
        sp.signed_by(&server_key, issuer)
            .map_err(|source| PkiError::Certificate {
                what: common_name.to_string(),
                source,
            })?;
    Ok(Credential {
        common_name: common_name.to_string(),
        serial: server_serial,
        cert_pem: server_cert.pem(),
        key_pem: server_key.serialize_pem(),
    })
}

/// The CA's CN may contain spaces (it is never a file name).
fn valid_ca_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-' | '@'))
}

impl Pki {
    /// A new server certificate and key from this CA (certificate rotation), valid for
    /// `validity_days`; the PKI's own `server` credential is unchanged.
    pub fn issue_server(
        &self,
        common_name: &str,
        validity_days: u32,
    ) -> Result<Credential, PkiError> {
        if !valid_name(common_name) {
            return Err(PkiError::InvalidName(common_name.to_string()));
        }
        if validity_days == 0 {
            return Err(PkiError::BadValidity);
        }
        let ca_key = self.key_kind.load("the CA", &self.ca.key_pem)?;
        let issuer = Issuer::new(self.ca_params.clone(), ca_key);
        server_credential(
            self.key_kind,
            common_name,
            &issuer,
            &SystemRandom::new(),
            OffsetDateTime::now_utc(),
            validity_days,
        )
    }

    /// The client credential with this CN.
    pub fn client(&self, common_name: &str) -> Option<&Credential> {
        self.clients.iter().find(|c| c.common_name == common_name)
    }

    /// The current CRL, PEM.
    pub fn crl_pem(&self) -> &str {
        &self.crl_pem
    }

    /// Serials listed in the current CRL.
    pub fn revoked_serials(&self) -> &[Vec<u8>] {
        &self.revoked
    }

    /// Revokes the client with this CN and re-issues the CRL (a no-op re-issue if already revoked).
    pub fn revoke(&mut self, common_name: &str) -> Result<(), PkiError> {
        let serial = self
            .client(common_name)
            .ok_or_else(|| PkiError::UnknownClient(common_name.to_string()))?
            .serial
            .clone();
        self.revoke_serial(&serial)
    }

    /// Revokes the certificate with this serial (server or client) and re-issues the CRL.
    pub fn revoke_serial(&mut self, serial: &[u8]) -> Result<(), PkiError> {
        let known = self.server.serial == serial || self.clients.iter().any(|c| c.serial == serial);
        if !known {
            return Err(PkiError::UnknownSerial(hex::encode(serial)));
        }
        if !self.revoked.iter().any(|s| s == serial) {
            self.revoked.push(serial.to_vec());
        }
        self.reissue_crl()
    }

    fn reissue_crl(&mut self) -> Result<(), PkiError> {
        let now = OffsetDateTime::now_utc();
        let ca_key = self.key_kind.load("the CA", &self.ca.key_pem)?;
        let issuer = Issuer::new(self.ca_params.clone(), ca_key);
        self.crl_number += 1;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(i64::from(self.crl_validity_days)),
            crl_number: SerialNumber::from(self.crl_number),
            issuing_distribution_point: None,
            revoked_certs: self
                .revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.ca_params.key_identifier_method.clone(),
        };
        let crl = params.signed_by(&issuer).map_err(PkiError::Crl)?;
        self.crl_pem = crl.pem().map_err(PkiError::Crl)?;
        Ok(())
    }

    /// Renders the inline `.ovpn` profile of one client.
    pub fn client_profile(
        &self,
        common_name: &str,
        opts: &ServerConfOptions,
    ) -> Result<String, PkiError> {
        let client = self
            .client(common_name)
            .ok_or_else(|| PkiError::UnknownClient(common_name.to_string()))?;
        let static_text = self.static_key.to_file_string();
        let wrap_key = match opts.wrap {
            WrapMode::None => None,
            WrapMode::TlsAuth | WrapMode::TlsCrypt => Some(static_text.as_str()),
            WrapMode::TlsCryptV2 => Some(
                opts.tls_crypt_v2
                    .as_ref()
                    .and_then(|k| k.client_keys.iter().find(|(n, _)| n == common_name))
                    .map(|(_, k)| k.as_str())
                    .ok_or_else(|| ConfError::MissingTlsCryptV2Key(common_name.to_string()))?,
            ),
        };
        Ok(render_client_profile(
            opts,
            common_name,
            ClientMaterial {
                ca_pem: &self.ca.cert_pem,
                cert_pem: &client.cert_pem,
                key_pem: &client.key_pem,
                wrap_key,
            },
        )?)
    }
}

/// Paths of everything [`write_dir`] wrote (all absolute).
#[derive(Clone, Debug)]
pub struct WrittenDir {
    /// The directory itself.
    pub dir: PathBuf,
    /// `server.conf`.
    pub server_conf: PathBuf,
    /// Paths referenced by `server.conf`.
    pub paths: ServerPaths,
    /// The CA private key (`ca.key`, 0600) — keep it offline in production.
    pub ca_key: PathBuf,
    /// `clients/<cn>.ovpn`, by common name.
    pub client_profiles: Vec<(String, PathBuf)>,
}

impl WrittenDir {
    /// The profile path of one client.
    pub fn profile(&self, common_name: &str) -> Option<&Path> {
        self.client_profiles
            .iter()
            .find(|(n, _)| n == common_name)
            .map(|(_, p)| p.as_path())
    }
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    // The umask may have narrowed the mode; set it exactly (never wider than requested).
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Creates `path` (and missing parents) with `mode`; an existing directory keeps its mode.
fn make_dir(path: &Path, mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::CreateDir {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(err)?;
    // The umask may have narrowed the mode; set it exactly.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
}

/// Writes the server directory: `ca.crt`, `ca.key`, `server.crt`, `server.key`, `crl.pem`, the wrap
/// key (`tls-crypt.key`, `tls-auth.key` or `tls-crypt-v2-server.key`), `server.conf`, and
/// `clients/<cn>.ovpn` for every client. Refuses to overwrite any existing file. A directory created
/// here gets mode 0755 (`clients/`: 0700); an existing one keeps its mode.
pub fn write_dir(pki: &Pki, dir: &Path, opts: &ServerConfOptions) -> Result<WrittenDir, PkiError> {
    // Render everything first so that a configuration error leaves nothing behind.
    make_dir(dir, 0o755)?;
    let dir = dir
        .canonicalize()
        .map_err(|source| PkiError::Canonicalize {
            path: dir.to_path_buf(),
            source,
        })?;
    let wrap_key = match opts.wrap {
        WrapMode::None => None,
        WrapMode::TlsAuth => Some((dir.join("tls-auth.key"), pki.static_key.to_file_string())),
        WrapMode::TlsCrypt => Some((dir.join("tls-crypt.key"), pki.static_key.to_file_string())),
        WrapMode::TlsCryptV2 => {
            let keys = opts
                .tls_crypt_v2
                .as_ref()
                .ok_or_else(|| ConfError::MissingTlsCryptV2Key("the server".to_string()))?;
            Some((dir.join("tls-crypt-v2-server.key"), keys.server_key.clone()))
        }
    };
    let paths = ServerPaths {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        crl: dir.join("crl.pem"),
        wrap_key: wrap_key.as_ref().map(|(p, _)| p.clone()),
        status: opts
            .status_file
            .clone()
            .unwrap_or_else(|| dir.join("openvpn-status.log")),
    };
    let server_conf = render_server_conf(opts, &paths)?;
    let mut profiles = Vec::new();
    for c in &pki.clients {
        profiles.push((
            c.common_name.clone(),
            pki.client_profile(&c.common_name, opts)?,
        ));
    }

    write_new(&paths.ca, &pki.ca.cert_pem, 0o644)?;
    let ca_key = dir.join("ca.key");
    write_new(&ca_key, &pki.ca.key_pem, 0o600)?;
    write_new(&paths.cert, &pki.server.cert_pem, 0o644)?;
    write_new(&paths.key, &pki.server.key_pem, 0o600)?;
    write_new(&paths.crl, &pki.crl_pem, 0o644)?;
    if let Some((path, text)) = &wrap_key {
        write_new(path, text, 0o600)?;
    }
    let conf_path = dir.join("server.conf");
    write_new(&conf_path, &server_conf, 0o644)?;
    let clients_dir = dir.join("clients");
    make_dir(&clients_dir, 0o700)?;
    let mut client_profiles = Vec::new();
    for (cn, text) in profiles {
        let p = clients_dir.join(format!("{cn}.ovpn"));
        write_new(&p, &text, 0o600)?;
        client_profiles.push((cn, p));
    }
    Ok(WrittenDir {
        dir,
        server_conf: conf_path,
        paths,
        ca_key,
        client_profiles,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
