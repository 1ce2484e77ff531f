//! `ServerTlsSettings`: the TLS part of the server configuration, as plain serialisable data, and its
//! translation from OpenVPN/OpenSSL spellings into what rustls (ring provider) can do.
//!
//! The parent parses the config and ships a [`ServerTlsSettings`] to the worker over IPC; the worker
//! turns it into a rustls configuration with [`super::TlsServer::new`]. [`ServerTlsSettings::resolve`]
//! performs every check that does not need the signer, so the parent can call it at config-load time
//! and report errors before anything starts.
//!
//! Translation rules (rustls 0.23 with the *ring* provider):
//! - `tls-version-min/max`: rustls speaks TLS 1.2 and 1.3 only. A minimum of 1.0/1.1 therefore means
//!   "1.2 and up"; a maximum below 1.2 is an error. `or-highest` clamps a minimum above 1.3 to 1.3.
//! - `tls-cipher`: an OpenSSL cipher string for TLS <= 1.2 (names, IANA names as OpenVPN accepts them,
//!   keywords such as `DEFAULT`, `HIGH`, `ECDHE`, `AESGCM`, `aRSA`, `+`-combinations, `!`/`-`/`+`
//!   prefixes, `@SECLEVEL=n`, `@STRENGTH`). Unknown names are an error listing them; explicitly named
//!   suites rustls cannot do (CBC, DHE, static RSA, ...) are an error listing them. The result keeps the
//!   configured order (the server's preference order is used, as OpenVPN sets
//!   `SSL_OP_CIPHER_SERVER_PREFERENCE`).
//! - `tls-ciphersuites`: TLS 1.3 names (`TLS_AES_256_GCM_SHA384`...; `-` is accepted for `_`).
//! - `tls-groups`: OpenSSL spellings (`X25519`, `prime256v1`/`secp256r1`/`P-256`, `secp384r1`/`P-384`).
//!   X448, P-521 and the FFDHE groups are not available in the ring provider: clear error.
//! - `tls-cert-profile`: `legacy` and `preferred` impose nothing beyond what webpki already enforces
//!   (RSA >= 2048 bits, no SHA-1/MD5 signatures; that is about OpenSSL security level 2, i.e. already
//!   stricter than `legacy`). `suiteb` restricts suites to ECDHE-ECDSA AES-GCM (TLS 1.2) and AES-GCM
//!   (TLS 1.3), groups to P-256/P-384, and certificate signatures to ECDSA P-256/P-384. `insecure`
//!   (security level 0) cannot be honoured: error.

use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::SupportedKxGroup;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};
use serde::{Deserialize, Serialize};

/// Errors from validating/translating [`ServerTlsSettings`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// A `tls-version-min`/`tls-version-max` value that is not `1.0`, `1.1`, `1.2` or `1.3`.
    #[error("invalid TLS version '{value}' (expected 1.0, 1.1, 1.2 or 1.3)")]
    BadVersion {
        /// The offending value.
        value: String,
    },
    /// `tls-version-min` trailing word other than `or-highest`.
    #[error("invalid tls-version-min qualifier '{value}' (expected 'or-highest')")]
    BadVersionQualifier {
        /// The offending value.
        value: String,
    },
    /// `tls-version-max` below what rustls supports.
    #[error(
        "tls-version-max {value} is not supported: rustls only implements TLS 1.2 and TLS 1.3"
    )]
    VersionMaxUnsupported {
        /// The configured maximum.
        value: String,
    },
    /// `tls-version-min` above `tls-version-max`.
    #[error("tls-version-min {min} is greater than tls-version-max {max}")]
    VersionRange {
        /// Configured minimum.
        min: String,
        /// Configured maximum.
        max: String,
    },
    /// `tls-cipher` contains names that are neither OpenSSL/IANA cipher names nor keywords.
    #[error("tls-cipher: unknown cipher name(s): {}", names.join(", "))]
    UnknownCiphers {
        /// The unknown names.
        names: Vec<String>,
    },
    /// `tls-cipher` names suites that exist but rustls does not implement.
    #[error(
        "tls-cipher: cipher(s) not supported by rustls: {} (supported TLS 1.2 suites: {})",
        names.join(", "),
        SUPPORTED_TLS12_NAMES
    )]
    UnsupportedCiphers {
        /// The unsupported names.
        names: Vec<String>,
    },
    /// `tls-cipher` leaves no usable TLS 1.2 suite although TLS 1.2 is enabled.
    #[error("tls-cipher '{value}' selects no TLS 1.2 cipher suite that rustls supports")]
    NoTls12Ciphers {
        /// The configured string.
        value: String,
    },
    /// `tls-ciphersuites` contains unknown TLS 1.3 names.
    #[error("tls-ciphersuites: unknown TLS 1.3 cipher suite name(s): {}", names.join(", "))]
    UnknownCipherSuites {
        /// The unknown names.
        names: Vec<String>,
    },
    /// `tls-ciphersuites` names TLS 1.3 suites that rustls does not implement.
    #[error(
        "tls-ciphersuites: suite(s) not supported by rustls: {} (supported: \
         TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256)",
        names.join(", ")
    )]
    UnsupportedCipherSuites {
        /// The unsupported names.
        names: Vec<String>,
    },
    /// `tls-ciphersuites` leaves no TLS 1.3 suite although TLS 1.3 is enabled.
    #[error("tls-ciphersuites '{value}' selects no TLS 1.3 cipher suite")]
    NoTls13Ciphers {
        /// The configured string.
        value: String,
    },
    /// `tls-groups` contains unknown group names.
    #[error("tls-groups: unknown group name(s): {}", names.join(", "))]
    UnknownGroups {
        /// The unknown names.
        names: Vec<String>,
    },
    /// `tls-groups` names groups the ring provider does not implement.
    #[error(
        "tls-groups: group(s) not supported by rustls/ring: {} (supported: X25519, prime256v1, secp384r1)",
        names.join(", ")
    )]
    UnsupportedGroups {
        /// The unsupported names.
        names: Vec<String>,
    },
    /// `tls-groups` (possibly after a `tls-cert-profile` restriction) is empty.
    #[error("tls-groups '{value}' leaves no key exchange group")]
    NoGroups {
        /// The configured string (or the profile).
        value: String,
    },
    /// Unknown `tls-cert-profile` name.
    #[error("invalid tls-cert-profile '{value}' (expected legacy, preferred, suiteb or insecure)")]
    BadCertProfile {
        /// The offending value.
        value: String,
    },
    /// `tls-cert-profile insecure` (OpenSSL security level 0) cannot be provided by rustls/webpki.
    #[error(
        "tls-cert-profile insecure is not supported: rustls/webpki cannot accept SHA-1/MD5 signed or \
         short-key certificates"
    )]
    InsecureProfileUnsupported,
    /// Unknown `verify-client-cert` value.
    #[error("invalid verify-client-cert '{value}' (expected none, optional or require)")]
    BadVerifyClientCert {
        /// The offending value.
        value: String,
    },
    /// Unknown `remote-cert-tls` value.
    #[error("invalid remote-cert-tls '{value}' (expected client or server)")]
    BadRemoteCertTls {
        /// The offending value.
        value: String,
    },
    /// Unknown `verify-x509-name` type.
    #[error("invalid verify-x509-name type '{value}' (expected subject, name or name-prefix)")]
    BadX509NameType {
        /// The offending value.
        value: String,
    },
    /// `x509-username-field ext:<name>` with an unsupported extension.
    #[error("x509-username-field '{value}' is not supported (only ext:subjectAltName and ext:issuerAltName)")]
    UnsupportedUsernameExtension {
        /// The configured field.
        value: String,
    },
    /// `x509-username-field` names an attribute that is not a known X.509 name attribute or OID.
    #[error("Invalid X509 attribute name '{value}'")]
    UnknownUsernameField {
        /// The configured field.
        value: String,
    },
    /// More than the 16 `x509-username-field` parameters OpenVPN accepts.
    #[error("too many x509-username-field parameters ({count}, at most 15)")]
    TooManyUsernameFields {
        /// How many were given.
        count: usize,
    },
}

/// The TLS 1.2 suites rustls/ring can do, by OpenSSL name, for error messages.
const SUPPORTED_TLS12_NAMES: &str =
    "ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, \
     ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256, \
     ECDHE-RSA-CHACHA20-POLY1305";

/// A TLS protocol version as spelled in OpenVPN options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.0 (not available in rustls)
    V1_0,
    /// TLS 1.1 (not available in rustls)
    V1_1,
    /// TLS 1.2
    V1_2,
    /// TLS 1.3
    V1_3,
}

impl TlsVersion {
    /// Parses `1.0`, `1.1`, `1.2`, `1.3`.
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        match s {
            "1.0" => Ok(Self::V1_0),
            "1.1" => Ok(Self::V1_1),
            "1.2" => Ok(Self::V1_2),
            "1.3" => Ok(Self::V1_3),
            _ => Err(SettingsError::BadVersion {
                value: s.to_string(),
            }),
        }
    }

    /// The OpenVPN spelling (`1.2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
        }
    }
}

/// `tls-version-min <version> ['or-highest']`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsVersionMin {
    /// The minimum version.
    pub version: TlsVersion,
    /// `or-highest`: if `version` is above what the library supports, use the highest supported.
    pub or_highest: bool,
}

impl TlsVersionMin {
    /// Parses the option arguments (`["1.2"]` or `["1.3", "or-highest"]`).
    pub fn parse(version: &str, qualifier: Option<&str>) -> Result<Self, SettingsError> {
        let or_highest = match qualifier {
            None => false,
            Some("or-highest") => true,
            Some(other) => {
                return Err(SettingsError::BadVersionQualifier {
                    value: other.to_string(),
                })
            }
        };
        // OpenVPN accepts an unknown version together with or-highest (it means "the highest").
        match TlsVersion::parse(version) {
            Ok(v) => Ok(Self {
                version: v,
                or_highest,
            }),
            Err(_) if or_highest => Ok(Self {
                version: TlsVersion::V1_3,
                or_highest,
            }),
            Err(e) => Err(e),
        }
    }
}

/// `verify-client-cert none|optional|require`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VerifyClientCert {
    /// Do not request a client certificate.
    None,
    /// Request one; a client without a certificate is accepted (then needs another auth method).
    Optional,
    /// Require a valid client certificate (the default).
    #[default]
    Require,
}

impl VerifyClientCert {
    /// Parses `none`, `optional`, `require`.
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        match s {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "require" => Ok(Self::Require),
            _ => Err(SettingsError::BadVerifyClientCert {
                value: s.to_string(),
            }),
        }
    }
}

/// `remote-cert-tls client|server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteCertTls {
    /// The peer must be a TLS client (keyUsage present, EKU `TLS Web Client Authentication`).
    Client,
    /// The peer must be a TLS server (keyUsage present, EKU `TLS Web Server Authentication`).
    Server,
}

impl RemoteCertTls {
    /// Parses `client` or `server`.
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        match s {
            "client" => Ok(Self::Client),
            "server" => Ok(Self::Server),
            _ => Err(SettingsError::BadRemoteCertTls {
                value: s.to_string(),
            }),
        }
    }

    /// The EKU OpenVPN requires for this setting (OpenSSL long name).
    pub fn eku(self) -> &'static str {
        match self {
            Self::Client => "TLS Web Client Authentication",
            Self::Server => "TLS Web Server Authentication",
        }
    }
}

/// The comparison mode of `verify-x509-name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum X509NameKind {
    /// Compare the whole subject (`C=.., O=.., CN=..` as OpenVPN prints it) — the default.
    #[default]
    Subject,
    /// Compare the common name (the username per `x509-username-field`).
    Name,
    /// The common name must start with the given string.
    NamePrefix,
}

impl X509NameKind {
    /// Parses `subject`, `name`, `name-prefix`.
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        match s {
            "subject" => Ok(Self::Subject),
            "name" => Ok(Self::Name),
            "name-prefix" => Ok(Self::NamePrefix),
            _ => Err(SettingsError::BadX509NameType {
                value: s.to_string(),
            }),
        }
    }
}

/// `verify-x509-name NAME [type]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyX509Name {
    /// The expected name.
    pub name: String,
    /// How it is compared.
    pub kind: X509NameKind,
}

/// `tls-cert-profile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertProfile {
    /// OpenSSL security level 1 (OpenVPN 2.6 default).
    Legacy,
    /// OpenSSL security level 2.
    Preferred,
    /// NSA Suite B (ECDSA P-256/P-384 only).
    SuiteB,
    /// OpenSSL security level 0 — not supported.
    Insecure,
}

impl CertProfile {
    /// Parses `legacy`, `preferred`, `suiteb`, `insecure`.
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        match s {
            "legacy" => Ok(Self::Legacy),
            "preferred" => Ok(Self::Preferred),
            "suiteb" => Ok(Self::SuiteB),
            "insecure" => Ok(Self::Insecure),
            _ => Err(SettingsError::BadCertProfile {
                value: s.to_string(),
            }),
        }
    }
}

/// The TLS settings of a server, as plain data (the parent sends this to the worker).
///
/// Contains no private key: the key stays in the parent, see [`super::KeySigner`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTlsSettings {
    /// `ca`: PEM bundle of CA certificates trusted for client certificates. Self-signed
    /// certificates become trust anchors; other certificates in the bundle are used as intermediates
    /// (as OpenSSL does without `X509_V_FLAG_PARTIAL_CHAIN`).
    pub ca_pem: Vec<u8>,
    /// `cert` (+ `extra-certs`): PEM chain, leaf first. No private key.
    pub cert_chain_pem: Vec<u8>,
    /// `crl-verify`: PEM (one or more `X509 CRL` blocks) or a single DER CRL.
    pub crl: Option<Vec<u8>>,
    /// `tls-version-min`.
    pub tls_version_min: Option<TlsVersionMin>,
    /// `tls-version-max`.
    pub tls_version_max: Option<TlsVersion>,
    /// `tls-cipher` (TLS <= 1.2, OpenSSL cipher string).
    pub tls_cipher: Option<String>,
    /// `tls-ciphersuites` (TLS 1.3).
    pub tls_ciphersuites: Option<String>,
    /// `tls-groups`.
    pub tls_groups: Option<String>,
    /// `tls-cert-profile`.
    pub tls_cert_profile: Option<CertProfile>,
    /// `verify-client-cert`.
    pub verify_client_cert: VerifyClientCert,
    /// `remote-cert-tls`.
    pub remote_cert_tls: Option<RemoteCertTls>,
    /// `remote-cert-ku` values (hex in the config, e.g. `a0` → `0xa0`). Empty: no check unless
    /// `remote-cert-tls` is set (which only requires the extension to be present).
    pub remote_cert_ku: Vec<u16>,
    /// `remote-cert-eku` (OID or OpenSSL long name). Overrides the EKU implied by `remote-cert-tls`.
    pub remote_cert_eku: Option<String>,
    /// `verify-x509-name`.
    pub verify_x509_name: Option<VerifyX509Name>,
    /// `x509-username-field` parameters. Empty means `CN`.
    pub x509_username_field: Vec<String>,
    /// `peer-fingerprint`: SHA-256 fingerprints of acceptable client certificates. With an empty
    /// `ca_pem` they replace CA verification (self-signed client certificates, OpenVPN's
    /// "fingerprint only" mode); with a CA they are an additional check on the client certificate.
    pub peer_fingerprint: Vec<[u8; 32]>,
}

impl Default for ServerTlsSettings {
    fn default() -> Self {
        Self {
            ca_pem: Vec::new(),
            cert_chain_pem: Vec::new(),
            crl: None,
            tls_version_min: None,
            tls_version_max: None,
            tls_cipher: None,
            tls_ciphersuites: None,
            tls_groups: None,
            tls_cert_profile: None,
            verify_client_cert: VerifyClientCert::Require,
            remote_cert_tls: None,
            remote_cert_ku: Vec::new(),
            remote_cert_eku: None,
            verify_x509_name: None,
            x509_username_field: Vec::new(),
            peer_fingerprint: Vec::new(),
        }
    }
}

/// The negotiable parameters after translation.
#[derive(Debug, Clone)]
pub struct ResolvedCrypto {
    /// Enabled protocol versions (highest first).
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// Enabled cipher suites, in server preference order (TLS 1.3 suites first).
    pub suites: Vec<SupportedCipherSuite>,
    /// Enabled key exchange groups, in preference order.
    pub kx_groups: Vec<&'static dyn SupportedKxGroup>,
    /// `tls-cert-profile suiteb` is active.
    pub suite_b: bool,
}

/// OpenVPN's `remote-cert-ku` marker meaning "the extension must be present, any value".
pub const KU_REQUIRED: u16 = 0xFFFF;

/// The certificate checks OpenVPN performs on the peer's leaf, resolved from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertPolicy {
    /// Expected keyUsage values; `[KU_REQUIRED]` = extension must exist; empty = no check.
    pub ku: Vec<u16>,
    /// Expected EKU (long name or dotted OID); `None` = no check.
    pub eku: Option<String>,
    /// `verify-x509-name`.
    pub x509_name: Option<VerifyX509Name>,
    /// Normalised `x509-username-field` list (never empty).
    pub username_fields: Vec<String>,
    /// `peer-fingerprint` SHA-256 values (empty: no fingerprint check).
    pub fingerprints: Vec<[u8; 32]>,
}

impl ServerTlsSettings {
    /// Translates versions, suites and groups; errors name the offending option values.
    pub fn resolve(&self) -> Result<ResolvedCrypto, SettingsError> {
        let suite_b = match self.tls_cert_profile {
            Some(CertProfile::Insecure) => return Err(SettingsError::InsecureProfileUnsupported),
            Some(CertProfile::SuiteB) => true,
            _ => false,
        };
        let (tls12, tls13) = self.resolve_versions()?;
        let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
        if tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if tls12 {
            versions.push(&rustls::version::TLS12);
        }

        let mut suites = Vec::new();
        if tls13 {
            let mut s13 = match &self.tls_ciphersuites {
                Some(list) => parse_tls13_suites(list)?,
                None => default_tls13_suites(),
            };
            if suite_b {
                s13.retain(|s| s.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
            }
            if s13.is_empty() {
                return Err(SettingsError::NoTls13Ciphers {
                    value: self.tls_ciphersuites.clone().unwrap_or_default(),
                });
            }
            suites.extend(s13);
        }
        if tls12 {
            let mut s12 = match &self.tls_cipher {
                Some(list) => parse_tls12_cipher_string(list)?,
                None => TLS12_SUITES.iter().map(|d| d.suite).collect(),
            };
            if suite_b {
                s12.retain(|s| {
                    matches!(
                        s.suite(),
                        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                            | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    )
                });
            }
            if s12.is_empty() {
                return Err(SettingsError::NoTls12Ciphers {
                    value: self.tls_cipher.clone().unwrap_or_default(),
                });
            }
            suites.extend(s12);
        }

        let mut kx_groups = match &self.tls_groups {
            Some(list) => parse_groups(list)?,
            None => vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        };
        if suite_b {
            kx_groups.retain(|g| {
                matches!(
                    g.name(),
                    rustls::NamedGroup::secp256r1 | rustls::NamedGroup::secp384r1
                )
            });
        }
        if kx_groups.is_empty() {
            return Err(SettingsError::NoGroups {
                value: self
                    .tls_groups
                    .clone()
                    .unwrap_or_else(|| "(tls-cert-profile suiteb)".into()),
            });
        }
        Ok(ResolvedCrypto {
            versions,
            suites,
            kx_groups,
            suite_b,
        })
    }

    /// Which of TLS 1.2 / TLS 1.3 are enabled.
    fn resolve_versions(&self) -> Result<(bool, bool), SettingsError> {
        let max = self.tls_version_max.unwrap_or(TlsVersion::V1_3);
        if max < TlsVersion::V1_2 {
            return Err(SettingsError::VersionMaxUnsupported {
                value: max.as_str().to_string(),
            });
        }
        let mut min = match self.tls_version_min {
            None => TlsVersion::V1_2,
            Some(m) => m.version,
        };
        if let Some(m) = self.tls_version_min {
            if m.or_highest && m.version > max {
                min = max;
            }
        }
        if min > max {
            return Err(SettingsError::VersionRange {
                min: min.as_str().to_string(),
                max: max.as_str().to_string(),
            });
        }
        // rustls has nothing below 1.2: a lower minimum means "1.2 and up".
        let min = min.max(TlsVersion::V1_2);
        Ok((min <= TlsVersion::V1_2, max >= TlsVersion::V1_3))
    }

    /// The OpenVPN leaf-certificate checks implied by the settings.
    pub fn peer_cert_policy(&self) -> Result<PeerCertPolicy, SettingsError> {
        let mut ku = self.remote_cert_ku.clone();
        let mut eku = self.remote_cert_eku.clone();
        if let Some(rct) = self.remote_cert_tls {
            if ku.is_empty() {
                ku.push(KU_REQUIRED);
            }
            if eku.is_none() {
                eku = Some(rct.eku().to_string());
            }
        }
        if self.x509_username_field.len() > 15 {
            return Err(SettingsError::TooManyUsernameFields {
                count: self.x509_username_field.len(),
            });
        }
        let mut username_fields = Vec::new();
        for f in &self.x509_username_field {
            let f = normalize_username_field(f);
            if let Some(ext) = f.strip_prefix("ext:") {
                if ext != "subjectAltName" && ext != "issuerAltName" {
                    return Err(SettingsError::UnsupportedUsernameExtension { value: f });
                }
            } else if f != "serialNumber" && super::x509::attribute_oid(&f).is_none() {
                return Err(SettingsError::UnknownUsernameField { value: f });
            }
            username_fields.push(f);
        }
        if username_fields.is_empty() {
            username_fields.push("CN".to_string());
        }
        Ok(PeerCertPolicy {
            ku,
            eku,
            x509_name: self.verify_x509_name.clone(),
            username_fields,
            fingerprints: self.peer_fingerprint.clone(),
        })
    }
}

/// OpenVPN 2.6 upper-cases `x509-username-field` values that contain no upper-case letter
/// (`ou` → `OU`) and leaves mixed case (`emailAddress`) and `ext:` values alone.
pub fn normalize_username_field(field: &str) -> String {
    if field.starts_with("ext:") || field.chars().any(|c| c.is_ascii_uppercase()) {
        field.to_string()
    } else {
        field.to_ascii_uppercase()
    }
}

// ---------------------------------------------------------------------------------------------
// TLS 1.2 cipher strings

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Ecdsa,
    Rsa,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Enc {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20,
}

struct Tls12Def {
    openssl: &'static str,
    suite: SupportedCipherSuite,
    auth: Auth,
    enc: Enc,
}

/// rustls' default TLS 1.2 order (ring provider).
static TLS12_SUITES: [Tls12Def; 6] = [
    Tls12Def {
        openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
        suite: cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        auth: Auth::Ecdsa,
        enc: Enc::Aes256Gcm,
    },
    Tls12Def {
        openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
        suite: cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        auth: Auth::Ecdsa,
        enc: Enc::Aes128Gcm,
    },
    Tls12Def {
        openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
        suite: cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        auth: Auth::Ecdsa,
        enc: Enc::Chacha20,
    },
    Tls12Def {
        openssl: "ECDHE-RSA-AES256-GCM-SHA384",
        suite: cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        auth: Auth::Rsa,
        enc: Enc::Aes256Gcm,
    },
    Tls12Def {
        openssl: "ECDHE-RSA-AES128-GCM-SHA256",
        suite: cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        auth: Auth::Rsa,
        enc: Enc::Aes128Gcm,
    },
    Tls12Def {
        openssl: "ECDHE-RSA-CHACHA20-POLY1305",
        suite: cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        auth: Auth::Rsa,
        enc: Enc::Chacha20,
    },
];

/// OpenSSL names of TLS <= 1.2 suites that exist but rustls cannot do (recognised so that the error
/// says "not supported" instead of "unknown").
static KNOWN_UNSUPPORTED_TLS12: &[&str] = &[
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-CHACHA20-POLY1305",
    "DHE-DSS-AES256-GCM-SHA384",
    "DHE-DSS-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "DHE-RSA-AES256-SHA256",
    "DHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "DHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "DHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-CCM",
    "ECDHE-ECDSA-AES128-CCM",
    "ECDHE-ECDSA-AES256-CCM8",
    "ECDHE-ECDSA-AES128-CCM8",
    "DHE-RSA-AES256-CCM",
    "DHE-RSA-AES128-CCM",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "AES256-SHA256",
    "AES128-SHA256",
    "AES256-SHA",
    "AES128-SHA",
    "AES256-CCM",
    "AES128-CCM",
    "DES-CBC3-SHA",
    "ECDHE-RSA-DES-CBC3-SHA",
    "EDH-RSA-DES-CBC3-SHA",
    "RC4-SHA",
    "RC4-MD5",
    "CAMELLIA256-SHA",
    "CAMELLIA128-SHA",
    "DHE-RSA-CAMELLIA256-SHA",
    "DHE-RSA-CAMELLIA128-SHA",
    "SEED-SHA",
    "IDEA-CBC-SHA",
    "NULL-SHA",
    "NULL-SHA256",
    "NULL-MD5",
    "PSK-AES256-GCM-SHA384",
    "PSK-AES128-GCM-SHA256",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "SRP-AES-256-CBC-SHA",
    "ECDHE-ARIA256-GCM-SHA384",
    "ECDHE-ECDSA-ARIA256-GCM-SHA384",
];

/// What a keyword selects among the rustls suites.
fn keyword_matches(word: &str, d: &Tls12Def) -> Option<bool> {
    let m = match word {
        "ALL" | "DEFAULT" | "HIGH" | "TLSv1.2" | "ECDHE" | "EECDH" | "kECDHE" | "kEECDH"
        | "AEAD" | "FIPS" => true,
        "aECDSA" | "ECDSA" => d.auth == Auth::Ecdsa,
        "aRSA" | "RSA" => d.auth == Auth::Rsa,
        "AESGCM" | "AES" => d.enc != Enc::Chacha20,
        "AES128" => d.enc == Enc::Aes128Gcm,
        "AES256" => d.enc == Enc::Aes256Gcm,
        "CHACHA20" => d.enc == Enc::Chacha20,
        "SHA256" => d.enc != Enc::Aes256Gcm,
        "SHA384" => d.enc == Enc::Aes256Gcm,
        // keywords that exist in OpenSSL but select no suite rustls implements
        "COMPLEMENTOFDEFAULT"
        | "COMPLEMENTOFALL"
        | "EXP"
        | "EXPORT"
        | "LOW"
        | "MEDIUM"
        | "NULL"
        | "eNULL"
        | "aNULL"
        | "ADH"
        | "AECDH"
        | "kDH"
        | "kDHr"
        | "kDHd"
        | "kECDH"
        | "kECDHr"
        | "kECDHe"
        | "aECDH"
        | "DH"
        | "ECDH"
        | "DSS"
        | "aDSS"
        | "PSK"
        | "kPSK"
        | "kECDHEPSK"
        | "kDHEPSK"
        | "kRSAPSK"
        | "aPSK"
        | "SRP"
        | "kSRP"
        | "aSRP"
        | "RC4"
        | "MD5"
        | "3DES"
        | "DES"
        | "SHA1"
        | "SHA"
        | "CAMELLIA"
        | "CAMELLIA128"
        | "CAMELLIA256"
        | "SEED"
        | "IDEA"
        | "ARIA"
        | "ARIA128"
        | "ARIA256"
        | "ARIAGCM"
        | "DHE"
        | "EDH"
        | "kDHE"
        | "kEDH"
        | "SSLv3"
        | "TLSv1"
        | "TLSv1.0"
        | "CCM"
        | "CCM8"
        | "AESCCM"
        | "AESCCM8"
        | "kRSA"
        | "aGOST"
        | "aGOST01"
        | "kGOST"
        | "GOST94"
        | "GOST89MAC"
        | "SUITEB128"
        | "SUITEB128ONLY"
        | "SUITEB192"
        | "CBC"
        | "RC2"
        | "aCERT" => match word {
            "SUITEB128" | "SUITEB128ONLY" | "SUITEB192" => {
                d.auth == Auth::Ecdsa && d.enc != Enc::Chacha20
            }
            _ => false,
        },
        _ => return None,
    };
    Some(m)
}

/// Classification of one `+`-free cipher-string token.
enum Token {
    /// A single suite rustls implements (index into `TLS12_SUITES`).
    Suite(usize),
    /// A keyword (set of rustls suites, possibly empty).
    Keyword(String),
    /// A suite name that exists but rustls cannot do.
    Unsupported,
    /// Not recognised.
    Unknown,
}

fn classify(token: &str) -> Token {
    if let Some(i) = TLS12_SUITES.iter().position(|d| d.openssl == token) {
        return Token::Suite(i);
    }
    // IANA names as OpenVPN accepts them: TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384 (or with '_').
    let iana = token.replace('-', "_").to_ascii_uppercase();
    if iana.starts_with("TLS_") && iana.contains("_WITH_") {
        if let Some(i) = TLS12_SUITES
            .iter()
            .position(|d| format!("{:?}", d.suite.suite()) == iana)
        {
            return Token::Suite(i);
        }
        return Token::Unsupported;
    }
    if KNOWN_UNSUPPORTED_TLS12.contains(&token) {
        return Token::Unsupported;
    }
    if keyword_matches(token, &TLS12_SUITES[0]).is_some() {
        return Token::Keyword(token.to_string());
    }
    Token::Unknown
}

/// Parses a `tls-cipher` OpenSSL cipher string into rustls TLS 1.2 suites (in order).
pub fn parse_tls12_cipher_string(list: &str) -> Result<Vec<SupportedCipherSuite>, SettingsError> {
    let mut selected: Vec<usize> = Vec::new();
    let mut banned = [false; 6];
    let mut unknown = Vec::new();
    let mut unsupported = Vec::new();
    for item in list
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if item.starts_with('@') {
            // @SECLEVEL=n / @STRENGTH: ordering/security-level directives; webpki's floor applies.
            let known = item == "@STRENGTH" || item.starts_with("@SECLEVEL=");
            if !known {
                unknown.push(item.to_string());
            }
            continue;
        }
        let (op, body) = match item.as_bytes()[0] {
            b'!' | b'-' | b'+' => (item.as_bytes()[0], &item[1..]),
            _ => (0u8, item),
        };
        // A '+'-combination selects the intersection of its parts.
        let mut set = [true; 6];
        let mut item_ok = true;
        let parts: Vec<&str> = body.split('+').collect();
        for part in &parts {
            match classify(part) {
                Token::Suite(i) => {
                    for (j, s) in set.iter_mut().enumerate() {
                        *s &= j == i;
                    }
                }
                Token::Keyword(k) => {
                    for (j, s) in set.iter_mut().enumerate() {
                        *s &= keyword_matches(&k, &TLS12_SUITES[j]).unwrap_or(false);
                    }
                }
                Token::Unsupported => {
                    // Excluding something rustls cannot do anyway is fine.
                    if op == 0 || op == b'+' {
                        unsupported.push((*part).to_string());
                        item_ok = false;
                    }
                    set = [false; 6];
                }
                Token::Unknown => {
                    unknown.push((*part).to_string());
                    item_ok = false;
                }
            }
        }
        if !item_ok {
            continue;
        }
        match op {
            b'!' => {
                for (j, s) in set.iter().enumerate() {
                    if *s {
                        banned[j] = true;
                    }
                }
                selected.retain(|j| !set[*j]);
            }
            b'-' => selected.retain(|j| !set[*j]),
            b'+' => {
                let (moved, kept): (Vec<usize>, Vec<usize>) =
                    selected.iter().partition(|j| set[**j]);
                selected = kept;
                selected.extend(moved);
            }
            _ => {
                for (j, s) in set.iter().enumerate() {
                    if *s && !banned[j] && !selected.contains(&j) {
                        selected.push(j);
                    }
                }
            }
        }
    }
    if !unknown.is_empty() {
        return Err(SettingsError::UnknownCiphers { names: unknown });
    }
    if !unsupported.is_empty() {
        return Err(SettingsError::UnsupportedCiphers { names: unsupported });
    }
    Ok(selected
        .into_iter()
        .map(|i| TLS12_SUITES[i].suite)
        .collect())
}

/// The OpenSSL name of a rustls suite (`ECDHE-RSA-AES256-GCM-SHA384`, `TLS_AES_256_GCM_SHA384`).
pub fn openssl_suite_name(suite: rustls::CipherSuite) -> String {
    if let Some(d) = TLS12_SUITES.iter().find(|d| d.suite.suite() == suite) {
        return d.openssl.to_string();
    }
    match suite {
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384".into(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256".into(),
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => {
            "TLS_CHACHA20_POLY1305_SHA256".into()
        }
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// TLS 1.3 suites and groups

fn default_tls13_suites() -> Vec<SupportedCipherSuite> {
    vec![
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ]
}

/// Parses `tls-ciphersuites`.
pub fn parse_tls13_suites(list: &str) -> Result<Vec<SupportedCipherSuite>, SettingsError> {
    let mut out: Vec<SupportedCipherSuite> = Vec::new();
    let mut unknown = Vec::new();
    let mut unsupported = Vec::new();
    for item in list.split(':').map(str::trim).filter(|s| !s.is_empty()) {
        let norm = item.replace('-', "_").to_ascii_uppercase();
        let suite = match norm.as_str() {
            "TLS_AES_256_GCM_SHA384" => Some(cipher_suite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_128_GCM_SHA256" => Some(cipher_suite::TLS13_AES_128_GCM_SHA256),
            "TLS_CHACHA20_POLY1305_SHA256" => Some(cipher_suite::TLS13_CHACHA20_POLY1305_SHA256),
            "TLS_AES_128_CCM_SHA256" | "TLS_AES_128_CCM_8_SHA256" => {
                unsupported.push(item.to_string());
                None
            }
            _ => {
                unknown.push(item.to_string());
                None
            }
        };
        if let Some(s) = suite {
            if !out.iter().any(|o| o.suite() == s.suite()) {
                out.push(s);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(SettingsError::UnknownCipherSuites { names: unknown });
    }
    if !unsupported.is_empty() {
        return Err(SettingsError::UnsupportedCipherSuites { names: unsupported });
    }
    Ok(out)
}

/// Parses `tls-groups` (OpenSSL spellings, case-insensitive).
pub fn parse_groups(list: &str) -> Result<Vec<&'static dyn SupportedKxGroup>, SettingsError> {
    let mut out: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    let mut unknown = Vec::new();
    let mut unsupported = Vec::new();
    for item in list.split(':').map(str::trim).filter(|s| !s.is_empty()) {
        let lower = item.to_ascii_lowercase();
        let g: Option<&'static dyn SupportedKxGroup> = match lower.as_str() {
            "x25519" => Some(kx_group::X25519),
            "prime256v1" | "secp256r1" | "p-256" => Some(kx_group::SECP256R1),
            "secp384r1" | "p-384" => Some(kx_group::SECP384R1),
            "x448"
            | "secp521r1"
            | "p-521"
            | "ffdhe2048"
            | "ffdhe3072"
            | "ffdhe4096"
            | "ffdhe6144"
            | "ffdhe8192"
            | "secp224r1"
            | "p-224"
            | "secp256k1"
            | "brainpoolp256r1"
            | "brainpoolp384r1"
            | "brainpoolp512r1"
            | "x25519mlkem768"
            | "secp256r1mlkem768"
            | "mlkem768"
            | "mlkem1024"
            | "x25519kyber768draft00" => {
                unsupported.push(item.to_string());
                None
            }
            _ => {
                unknown.push(item.to_string());
                None
            }
        };
        if let Some(g) = g {
            if !out.iter().any(|o| o.name() == g.name()) {
                out.push(g);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(SettingsError::UnknownGroups { names: unknown });
    }
    if !unsupported.is_empty() {
        return Err(SettingsError::UnsupportedGroups { names: unsupported });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite as CS;

    fn names(v: &[SupportedCipherSuite]) -> Vec<CS> {
        v.iter().map(|s| s.suite()).collect()
    }

    #[test]
    fn openvpn_default_cipher_string_selects_all_six() {
        let s =
            parse_tls12_cipher_string("DEFAULT:!EXP:!LOW:!MEDIUM:!kDH:!kECDH:!DSS:!PSK:!SRP:!kRSA")
                .unwrap();
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn explicit_names_keep_order_and_iana_names_work() {
        let s = parse_tls12_cipher_string(
            "ECDHE-RSA-AES128-GCM-SHA256:TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
        )
        .unwrap();
        assert_eq!(
            names(&s),
            vec![
                CS::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CS::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            ]
        );
    }

    #[test]
    fn keyword_combinations_and_exclusions() {
        let s = parse_tls12_cipher_string("EECDH+AESGCM:EDH+AESGCM:!aRSA").unwrap();
        assert_eq!(
            names(&s),
            vec![
                CS::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CS::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]
        );
        let s = parse_tls12_cipher_string("HIGH:-CHACHA20:+AES128").unwrap();
        assert_eq!(
            names(&s),
            vec![
                CS::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CS::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CS::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CS::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]
        );
    }

    #[test]
    fn unknown_and_unsupported_names_are_listed() {
        let e = parse_tls12_cipher_string("ECDHE-RSA-AES256-GCM-SHA384:FOO-BAR:BAZ").unwrap_err();
        assert_eq!(
            e,
            SettingsError::UnknownCiphers {
                names: vec!["FOO-BAR".into(), "BAZ".into()]
            }
        );
        let e = parse_tls12_cipher_string(
            "TLS-DHE-RSA-WITH-AES-256-GCM-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
        )
        .unwrap_err();
        assert_eq!(
            e,
            SettingsError::UnsupportedCiphers {
                names: vec![
                    "TLS-DHE-RSA-WITH-AES-256-GCM-SHA384".into(),
                    "ECDHE-RSA-AES256-SHA384".into()
                ]
            }
        );
        assert!(e.to_string().contains("not supported by rustls"));
        // excluding an unsupported suite is fine
        assert_eq!(
            parse_tls12_cipher_string("ECDHE-RSA-AES256-GCM-SHA384:!DHE-RSA-AES256-GCM-SHA384")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn tls13_and_groups() {
        let s = parse_tls13_suites("TLS_CHACHA20_POLY1305_SHA256:TLS-AES-256-GCM-SHA384").unwrap();
        assert_eq!(
            names(&s),
            vec![
                CS::TLS13_CHACHA20_POLY1305_SHA256,
                CS::TLS13_AES_256_GCM_SHA384
            ]
        );
        assert!(matches!(
            parse_tls13_suites("TLS_AES_128_CCM_SHA256"),
            Err(SettingsError::UnsupportedCipherSuites { .. })
        ));
        assert!(matches!(
            parse_tls13_suites("TLS_FOO"),
            Err(SettingsError::UnknownCipherSuites { .. })
        ));
        let g = parse_groups("X25519:prime256v1:secp384r1").unwrap();
        assert_eq!(g.len(), 3);
        let g = parse_groups("secp256r1:P-384").unwrap();
        assert_eq!(g[0].name(), rustls::NamedGroup::secp256r1);
        assert_eq!(
            parse_groups("X448:x25519").unwrap_err(),
            SettingsError::UnsupportedGroups {
                names: vec!["X448".into()]
            }
        );
        assert!(matches!(
            parse_groups("bogus"),
            Err(SettingsError::UnknownGroups { .. })
        ));
    }

    #[test]
    fn versions() {
        let mut s = ServerTlsSettings::default();
        let r = s.resolve().unwrap();
        assert_eq!(r.versions.len(), 2);
        s.tls_version_min = Some(TlsVersionMin::parse("1.3", None).unwrap());
        let r = s.resolve().unwrap();
        assert_eq!(r.versions.len(), 1);
        assert!(r
            .suites
            .iter()
            .all(|s| s.version() == &rustls::version::TLS13));
        s.tls_version_max = Some(TlsVersion::V1_2);
        assert!(matches!(
            s.resolve(),
            Err(SettingsError::VersionRange { .. })
        ));
        s.tls_version_min = Some(TlsVersionMin::parse("1.3", Some("or-highest")).unwrap());
        let r = s.resolve().unwrap();
        assert_eq!(r.versions, vec![&rustls::version::TLS12]);
        s.tls_version_max = Some(TlsVersion::V1_1);
        assert!(matches!(
            s.resolve(),
            Err(SettingsError::VersionMaxUnsupported { .. })
        ));
        s.tls_version_max = None;
        s.tls_version_min = Some(TlsVersionMin::parse("1.0", None).unwrap());
        assert_eq!(s.resolve().unwrap().versions.len(), 2);
        assert!(TlsVersionMin::parse("1.2", Some("foo")).is_err());
    }

    #[test]
    fn cert_profiles() {
        let s = ServerTlsSettings {
            tls_cert_profile: Some(CertProfile::SuiteB),
            ..Default::default()
        };
        let r = s.resolve().unwrap();
        assert!(r.suite_b);
        assert!(r.suites.iter().all(|s| !matches!(
            s.suite(),
            CS::TLS13_CHACHA20_POLY1305_SHA256
                | CS::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | CS::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | CS::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                | CS::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        )));
        assert_eq!(r.kx_groups.len(), 2);
        let s = ServerTlsSettings {
            tls_cert_profile: Some(CertProfile::parse("insecure").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            s.resolve().unwrap_err(),
            SettingsError::InsecureProfileUnsupported
        );
        assert!(CertProfile::parse("strict").is_err());
    }

    #[test]
    fn peer_policy_from_remote_cert_tls_and_username_fields() {
        let s = ServerTlsSettings {
            remote_cert_tls: Some(RemoteCertTls::Client),
            x509_username_field: vec![
                "ou".into(),
                "emailAddress".into(),
                "ext:subjectAltName".into(),
            ],
            ..Default::default()
        };
        let p = s.peer_cert_policy().unwrap();
        assert_eq!(p.ku, vec![KU_REQUIRED]);
        assert_eq!(p.eku.as_deref(), Some("TLS Web Client Authentication"));
        assert_eq!(
            p.username_fields,
            vec!["OU", "emailAddress", "ext:subjectAltName"]
        );
        let s = ServerTlsSettings {
            x509_username_field: vec!["ext:keyUsage".into()],
            ..Default::default()
        };
        assert!(matches!(
            s.peer_cert_policy(),
            Err(SettingsError::UnsupportedUsernameExtension { .. })
        ));
        let s = ServerTlsSettings {
            x509_username_field: vec!["NoSuchAttr".into()],
            ..Default::default()
        };
        assert!(matches!(
            s.peer_cert_policy(),
            Err(SettingsError::UnknownUsernameField { .. })
        ));
    }
}
