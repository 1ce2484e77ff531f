//! X.509 helpers that reproduce what OpenVPN 2.6 (OpenSSL 3 backend) derives from a certificate:
//! the subject string (`tls_id_N`, log lines), `X509_N_<attr>` variables, the username per
//! `x509-username-field`, serials, fingerprints, keyUsage/EKU values, and the key/signature
//! descriptions of the `Control Channel:` log line.
//!
//! Formats (from `ssl_verify.c`, `ssl_verify_openssl.c`, `ssl_openssl.c` of 2.6.14):
//! - subject: OpenSSL `X509_NAME_print_ex(XN_FLAG_SEP_CPLUS_SPC | XN_FLAG_FN_SN | UTF8_CONVERT |
//!   ESC_CTRL)`: attributes in certificate order, `SN=value`, `, ` between RDNs, ` + ` inside a
//!   multi-valued RDN, control bytes as `\XX`; then OpenVPN maps bytes < 0x20 and 0x7f to `_` and
//!   leading `-` to `_`.
//! - `X509_N_<SN>`: every attribute with a known short name, value converted to UTF-8, bytes < 0x20
//!   and 0x7f mapped to `_`; repeated names get `_1`, `_2`, ... suffixes.
//! - serial: decimal (`tls_serial_N`) and lower-case colon hex of the magnitude bytes
//!   (`tls_serial_hex_N`); fingerprints lower-case colon hex (`tls_digest_N` SHA-1,
//!   `tls_digest_sha256_N`).
//! - username: the *last* attribute of the named type, at most 64 bytes, valid UTF-8 and without NUL
//!   (we reject names OpenVPN would silently truncate at a NUL); `ext:subjectAltName` /
//!   `ext:issuerAltName`: the last rfc822Name; `serialNumber`: `0x` + upper-case hex serial.
//!
//! Everything here parses untrusted DER: every failure is an error value.

use sha1::Digest as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

/// OpenVPN's `TLS_USERNAME_LEN`.
pub const USERNAME_MAX_LEN: usize = 64;

/// Errors from certificate field extraction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum X509Error {
    /// The DER certificate could not be parsed.
    #[error("cannot parse certificate: {reason}")]
    Parse {
        /// Parser message.
        reason: String,
    },
    /// The certificate has an empty subject.
    #[error("could not extract X509 subject string from certificate")]
    EmptySubject,
    /// The username field is missing, too long, not valid UTF-8 or contains a NUL byte.
    #[error(
        "could not extract {field} from X509 subject string ('{subject}') -- note that the field \
         length is limited to {USERNAME_MAX_LEN} characters"
    )]
    Username {
        /// The field (`CN`, `ext:subjectAltName`, ...).
        field: String,
        /// The certificate's subject string.
        subject: String,
    },
    /// The joined username (several `x509-username-field`s) exceeds OpenVPN's 255-byte buffer.
    #[error(
        "could not append {field} from X509 certificate -- note that the username length is limited \
         to 255 characters"
    )]
    UsernameTooLong {
        /// The field that overflowed.
        field: String,
    },
    /// A malformed extension (keyUsage, extendedKeyUsage, subjectAltName).
    #[error("malformed certificate extension {oid}")]
    BadExtension {
        /// Dotted OID of the extension.
        oid: String,
    },
}

/// Parses a DER certificate.
pub fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(X509Error::Parse {
            reason: e.to_string(),
        }),
    }
}

/// (dotted OID, OpenSSL short name, OpenSSL long name) of the name attributes OpenSSL knows.
static ATTRIBUTES: &[(&str, &str, &str)] = &[
    ("2.5.4.3", "CN", "commonName"),
    ("2.5.4.4", "SN", "surname"),
    ("2.5.4.5", "serialNumber", "serialNumber"),
    ("2.5.4.6", "C", "countryName"),
    ("2.5.4.7", "L", "localityName"),
    ("2.5.4.8", "ST", "stateOrProvinceName"),
    ("2.5.4.9", "street", "streetAddress"),
    ("2.5.4.10", "O", "organizationName"),
    ("2.5.4.11", "OU", "organizationalUnitName"),
    ("2.5.4.12", "title", "title"),
    ("2.5.4.13", "description", "description"),
    ("2.5.4.15", "businessCategory", "businessCategory"),
    ("2.5.4.16", "postalAddress", "postalAddress"),
    ("2.5.4.17", "postalCode", "postalCode"),
    ("2.5.4.18", "postOfficeBox", "postOfficeBox"),
    ("2.5.4.20", "telephoneNumber", "telephoneNumber"),
    ("2.5.4.41", "name", "name"),
    ("2.5.4.42", "GN", "givenName"),
    ("2.5.4.43", "initials", "initials"),
    ("2.5.4.44", "generationQualifier", "generationQualifier"),
    ("2.5.4.45", "x500UniqueIdentifier", "x500UniqueIdentifier"),
    ("2.5.4.46", "dnQualifier", "dnQualifier"),
    ("2.5.4.51", "houseIdentifier", "houseIdentifier"),
    ("2.5.4.65", "pseudonym", "pseudonym"),
    ("2.5.4.72", "role", "role"),
    (
        "2.5.4.97",
        "organizationIdentifier",
        "organizationIdentifier",
    ),
    ("1.2.840.113549.1.9.1", "emailAddress", "emailAddress"),
    (
        "1.2.840.113549.1.9.2",
        "unstructuredName",
        "unstructuredName",
    ),
    ("0.9.2342.19200300.100.1.1", "UID", "userId"),
    ("0.9.2342.19200300.100.1.25", "DC", "domainComponent"),
    (
        "1.3.6.1.4.1.311.60.2.1.1",
        "jurisdictionL",
        "jurisdictionLocalityName",
    ),
    (
        "1.3.6.1.4.1.311.60.2.1.2",
        "jurisdictionST",
        "jurisdictionStateOrProvinceName",
    ),
    (
        "1.3.6.1.4.1.311.60.2.1.3",
        "jurisdictionC",
        "jurisdictionCountryName",
    ),
];

/// Resolves an attribute name as OpenSSL's `OBJ_txt2obj(name, 0)` does (short name, long name, or
/// dotted OID) to a dotted OID.
pub fn attribute_oid(name: &str) -> Option<String> {
    if let Some((oid, _, _)) = ATTRIBUTES.iter().find(|(_, sn, _)| *sn == name) {
        return Some((*oid).to_string());
    }
    if let Some((oid, _, _)) = ATTRIBUTES.iter().find(|(_, _, ln)| *ln == name) {
        return Some((*oid).to_string());
    }
    let is_dotted = name.split('.').count() >= 2
        && name
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if is_dotted {
        return Some(name.to_string());
    }
    None
}

fn short_name(oid: &str) -> Option<&'static str> {
    ATTRIBUTES
        .iter()
        .find(|(o, _, _)| *o == oid)
        .map(|(_, sn, _)| *sn)
}

/// Dotted form of DER OID content bytes (`None` if malformed).
pub fn oid_to_string(content: &[u8]) -> Option<String> {
    if content.is_empty() {
        return None;
    }
    let mut arcs: Vec<u128> = Vec::new();
    let mut acc: u128 = 0;
    let mut in_arc = false;
    for &b in content {
        if !in_arc && b == 0x80 {
            return None; // non-minimal encoding
        }
        acc = acc.checked_mul(128)?.checked_add(u128::from(b & 0x7f))?;
        in_arc = true;
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
            in_arc = false;
        }
    }
    if in_arc {
        return None;
    }
    let first = arcs[0];
    let (a, b) = if first < 40 {
        (0, first)
    } else if first < 80 {
        (1, first - 40)
    } else {
        (2, first - 80)
    };
    let mut s = format!("{a}.{b}");
    for arc in &arcs[1..] {
        s.push('.');
        s.push_str(&arc.to_string());
    }
    Some(s)
}

/// One DER TLV: (tag byte, contents, rest). Only definite lengths up to 4 length bytes.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&l0, mut rest) = rest.split_first()?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

// ---------------------------------------------------------------------------------------------
// string conversion

/// Converts an attribute value to UTF-8 bytes as OpenSSL's printing does (`UTF8_CONVERT`):
/// UTF8String bytes unchanged, BMPString/UniversalString decoded, every other type Latin-1.
fn value_bytes_for_print(tag: u32, data: &[u8]) -> Vec<u8> {
    match tag {
        12 => data.to_vec(),
        30 => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            char::decode_utf16(units)
                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect::<String>()
                .into_bytes()
        }
        28 => data
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect::<String>()
            .into_bytes(),
        _ => data
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into_bytes(),
    }
}

/// `ASN1_STRING_to_UTF8`: like [`value_bytes_for_print`] but fails on invalid input (invalid UTF-8
/// in a UTF8String, odd-length BMPString, invalid code points).
fn value_to_utf8(tag: u32, data: &[u8]) -> Option<String> {
    match tag {
        12 => std::str::from_utf8(data).ok().map(str::to_string),
        30 => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        28 => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
        }
        _ => Some(data.iter().map(|&b| char::from(b)).collect()),
    }
}

/// OpenVPN's `string_mod(s, CC_PRINT, CC_CRLF, '_')`: bytes < 0x20 and 0x7f become `_`.
fn remap_bytes(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b < 0x20 || b == 0x7f { b'_' } else { b })
        .collect()
}

fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The subject as OpenVPN prints and exports it (`tls_id_N`, `VERIFY OK: depth=N, <subject>`).
pub fn format_subject(name: &X509Name<'_>) -> Result<String, X509Error> {
    let mut out: Vec<u8> = Vec::new();
    let mut any = false;
    for (ri, rdn) in name.iter().enumerate() {
        for (ai, atv) in rdn.iter().enumerate() {
            if ai > 0 {
                out.extend_from_slice(b" + ");
            } else if ri > 0 {
                out.extend_from_slice(b", ");
            }
            any = true;
            let oid = oid_to_string(atv.attr_type().as_bytes()).unwrap_or_else(|| "UNDEF".into());
            match short_name(&oid) {
                Some(sn) => out.extend_from_slice(sn.as_bytes()),
                None => out.extend_from_slice(oid.as_bytes()),
            }
            out.push(b'=');
            let v = atv.attr_value();
            for b in value_bytes_for_print(v.tag().0, v.data) {
                if b < 0x20 || b == 0x7f {
                    out.extend_from_slice(format!("\\{b:02X}").as_bytes());
                } else {
                    out.push(b);
                }
            }
        }
    }
    if !any {
        return Err(X509Error::EmptySubject);
    }
    let mut out = remap_bytes(&out);
    for b in out.iter_mut() {
        if *b == b'-' {
            *b = b'_';
        } else {
            break;
        }
    }
    Ok(lossy(out))
}

/// `X509_N_<SN>` pairs for one certificate's subject (names without the `X509_N_` prefix; repeated
/// names already carry their `_1`, `_2` suffix).
pub fn subject_fields(name: &X509Name<'_>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for atv in name.iter_attributes() {
        let Some(oid) = oid_to_string(atv.attr_type().as_bytes()) else {
            continue;
        };
        let Some(sn) = short_name(&oid) else {
            continue;
        };
        let v = atv.attr_value();
        let Some(val) = value_to_utf8(v.tag().0, v.data) else {
            continue;
        };
        let val = lossy(remap_bytes(val.as_bytes()));
        let mut key = sn.to_string();
        let mut counter = 1u32;
        while out.iter().any(|(k, _)| *k == key) && counter < 1000 {
            key = format!("{sn}_{counter}");
            counter += 1;
        }
        if counter < 1000 {
            out.push((key, val));
        }
    }
    out
}

/// Lower-case colon-separated hex (`format_hex_ex(.., 1, ":")`).
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The magnitude bytes of the serial as OpenSSL stores them (no sign-padding zero byte).
fn serial_bytes(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.tbs_certificate.serial.to_bytes_be()
}

/// The username as OpenVPN derives it (`x509-username-field`, joined with `_`, then remapped).
pub fn extract_username(
    cert: &X509Certificate<'_>,
    fields: &[String],
    subject: &str,
) -> Result<String, X509Error> {
    let mut joined = String::new();
    for (i, field) in fields.iter().enumerate() {
        let fail = || X509Error::Username {
            field: field.clone(),
            subject: subject.to_string(),
        };
        let value = extract_one(cert, field).ok_or_else(fail)?;
        if value.len() > USERNAME_MAX_LEN || value.contains('\0') {
            return Err(fail());
        }
        let add = if i == 0 { value } else { format!("_{value}") };
        if joined.len() + add.len() > 255 {
            return Err(X509Error::UsernameTooLong {
                field: field.clone(),
            });
        }
        joined.push_str(&add);
    }
    Ok(lossy(remap_bytes(joined.as_bytes())))
}

fn extract_one(cert: &X509Certificate<'_>, field: &str) -> Option<String> {
    if let Some(ext) = field.strip_prefix("ext:") {
        let want_issuer = match ext {
            "subjectAltName" => false,
            "issuerAltName" => true,
            _ => return None,
        };
        let mut last = None;
        for e in cert.extensions() {
            let names = match (e.parsed_extension(), want_issuer) {
                (ParsedExtension::SubjectAlternativeName(san), false) => &san.general_names,
                (ParsedExtension::IssuerAlternativeName(ian), true) => &ian.general_names,
                _ => continue,
            };
            for n in names {
                if let GeneralName::RFC822Name(s) = n {
                    last = Some((*s).to_string());
                }
            }
        }
        return last;
    }
    if field == "serialNumber" {
        let hex: String = serial_bytes(cert)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        return Some(format!("0x{hex}"));
    }
    let oid = attribute_oid(field)?;
    let mut last = None;
    for atv in cert.subject().iter_attributes() {
        if oid_to_string(atv.attr_type().as_bytes()).as_deref() == Some(oid.as_str()) {
            last = Some(atv);
        }
    }
    let v = last?.attr_value();
    value_to_utf8(v.tag().0, v.data)
}

/// OpenVPN's keyUsage value (`x509_verify_cert_ku`): the first byte of the bit string, bit 0
/// (digitalSignature) = 0x80. `Ok(None)` when the extension is absent.
pub fn key_usage_value(cert: &X509Certificate<'_>) -> Result<Option<u16>, X509Error> {
    match cert.key_usage() {
        Ok(None) => Ok(None),
        Ok(Some(ku)) => {
            let flags = ku.value.flags;
            let mut nku: u16 = 0;
            for i in 0..8 {
                if flags & (1 << i) != 0 {
                    nku |= 1 << (7 - i);
                }
            }
            Ok(Some(nku))
        }
        Err(_) => Err(X509Error::BadExtension {
            oid: "2.5.29.15".into(),
        }),
    }
}

/// The extendedKeyUsage OIDs in certificate order (dotted). `Ok(None)` when absent.
pub fn eku_oids(cert: &X509Certificate<'_>) -> Result<Option<Vec<String>>, X509Error> {
    let bad = || X509Error::BadExtension {
        oid: "2.5.29.37".into(),
    };
    let Some(ext) = cert
        .extensions()
        .iter()
        .find(|e| oid_to_string(e.oid.as_bytes()).as_deref() == Some("2.5.29.37"))
    else {
        return Ok(None);
    };
    let (tag, mut content, rest) = der_tlv(ext.value).ok_or_else(bad)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad());
    }
    let mut out = Vec::new();
    while !content.is_empty() {
        let (t, oid, r) = der_tlv(content).ok_or_else(bad)?;
        if t != 0x06 {
            return Err(bad());
        }
        out.push(oid_to_string(oid).ok_or_else(bad)?);
        content = r;
    }
    Ok(Some(out))
}

/// OpenSSL long names of extended key usages (as `OBJ_obj2txt(.., 0)` prints them).
pub fn eku_long_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.3.6.1.5.5.7.3.1" => "TLS Web Server Authentication",
        "1.3.6.1.5.5.7.3.2" => "TLS Web Client Authentication",
        "1.3.6.1.5.5.7.3.3" => "Code Signing",
        "1.3.6.1.5.5.7.3.4" => "E-mail Protection",
        "1.3.6.1.5.5.7.3.5" => "IPSec End System",
        "1.3.6.1.5.5.7.3.6" => "IPSec Tunnel",
        "1.3.6.1.5.5.7.3.7" => "IPSec User",
        "1.3.6.1.5.5.7.3.8" => "Time Stamping",
        "1.3.6.1.5.5.7.3.9" => "OCSP Signing",
        "1.3.6.1.5.5.7.3.17" => "ipsec Internet Key Exchange",
        "2.5.29.37.0" => "Any Extended Key Usage",
        "1.3.6.1.4.1.311.2.1.21" => "Microsoft Individual Code Signing",
        "1.3.6.1.4.1.311.2.1.22" => "Microsoft Commercial Code Signing",
        "1.3.6.1.4.1.311.10.3.1" => "Microsoft Trust List Signing",
        "1.3.6.1.4.1.311.10.3.3" => "Microsoft Server Gated Crypto",
        "1.3.6.1.4.1.311.10.3.4" => "Microsoft Encrypted File System",
        "1.3.6.1.4.1.311.20.2.2" => "Microsoft Smartcard Login",
        "2.16.840.1.113730.4.1" => "Netscape Server Gated Crypto",
        _ => return None,
    })
}

/// `<bits> bits <type><curve>` as OpenVPN prints a public key with OpenSSL 3
/// (`256 bits ECprime256v1`, `2048 bits RSA`, `253 bits ED25519`).
pub fn describe_public_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let alg = oid_to_string(spki.algorithm.algorithm.as_bytes()).unwrap_or_default();
    match alg.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => {
            let name = if alg.ends_with(".1") {
                "RSA"
            } else {
                "RSA-PSS"
            };
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => 0,
            };
            format!("{bits} bits {name}")
        }
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .filter(|p| p.tag().0 == 6)
                .and_then(|p| oid_to_string(p.data))
                .unwrap_or_default();
            let (bits, name) = match curve.as_str() {
                "1.2.840.10045.3.1.7" => (256, "prime256v1"),
                "1.3.132.0.34" => (384, "secp384r1"),
                "1.3.132.0.35" => (521, "secp521r1"),
                "1.3.132.0.10" => (256, "secp256k1"),
                "1.3.132.0.33" => (224, "secp224r1"),
                "1.3.36.3.3.2.8.1.1.7" => (256, "brainpoolP256r1"),
                "1.3.36.3.3.2.8.1.1.11" => (384, "brainpoolP384r1"),
                "1.3.36.3.3.2.8.1.1.13" => (512, "brainpoolP512r1"),
                _ => (0, "(error getting curve name)"),
            };
            format!("{bits} bits EC{name}")
        }
        "1.3.101.112" => "253 bits ED25519".to_string(),
        "1.3.101.113" => "456 bits ED448".to_string(),
        _ => "0 bits (error getting public key type)".to_string(),
    }
}

/// OpenSSL short name of a certificate signature algorithm (`ecdsa-with-SHA256`, ...).
pub fn signature_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.4" => "RSA-MD5",
        "1.2.840.113549.1.1.5" => "RSA-SHA1",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.11" => "RSA-SHA256",
        "1.2.840.113549.1.1.12" => "RSA-SHA384",
        "1.2.840.113549.1.1.13" => "RSA-SHA512",
        "1.2.840.113549.1.1.14" => "RSA-SHA224",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        _ => return None,
    })
}

/// `, peer certificate: <key>, signature: <alg>` part of the `Control Channel:` line.
pub fn describe_peer_certificate(der: &[u8]) -> Result<String, X509Error> {
    let cert = parse_cert(der)?;
    let key = describe_public_key(cert.public_key());
    let sig = oid_to_string(cert.signature_algorithm.algorithm.as_bytes())
        .as_deref()
        .and_then(signature_short_name)
        .map(|s| format!(", signature: {s}"))
        .unwrap_or_default();
    Ok(format!(", peer certificate: {key}{sig}"))
}

/// What OpenVPN exports about one certificate of the peer's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Chain depth (0 = the peer's own certificate).
    pub depth: u32,
    /// `tls_id_N`: the subject string.
    pub subject: String,
    /// `X509_N_<name>` values in certificate order; names without the `X509_N_` prefix.
    pub subject_fields: Vec<(String, String)>,
    /// `tls_serial_N`: decimal serial.
    pub serial: String,
    /// `tls_serial_hex_N`: lower-case colon hex serial.
    pub serial_hex: String,
    /// `tls_digest_N`: SHA-1 fingerprint, lower-case colon hex.
    pub sha1_fingerprint: String,
    /// `tls_digest_sha256_N`: SHA-256 fingerprint, lower-case colon hex.
    pub sha256_fingerprint: String,
}

impl CertInfo {
    /// Extracts the exported fields from a DER certificate.
    pub fn from_der(der: &[u8], depth: u32) -> Result<Self, X509Error> {
        let cert = parse_cert(der)?;
        Self::from_parsed(&cert, der, depth)
    }

    /// Same as [`CertInfo::from_der`] for an already parsed certificate (`der` is its encoding).
    pub fn from_parsed(
        cert: &X509Certificate<'_>,
        der: &[u8],
        depth: u32,
    ) -> Result<Self, X509Error> {
        let subject = format_subject(cert.subject())?;
        Ok(Self {
            depth,
            subject,
            subject_fields: subject_fields(cert.subject()),
            serial: cert.tbs_certificate.serial.to_string(),
            serial_hex: colon_hex(&serial_bytes(cert)),
            sha1_fingerprint: colon_hex(&sha1::Sha1::digest(der)),
            sha256_fingerprint: colon_hex(&sha2::Sha256::digest(der)),
        })
    }

    /// The variables in the order OpenVPN sets them for this depth: `X509_N_*`, `tls_id_N`,
    /// `tls_digest_N`, `tls_digest_sha256_N`, `tls_serial_N`, `tls_serial_hex_N`.
    pub fn env(&self) -> Vec<(String, String)> {
        let d = self.depth;
        let mut v: Vec<(String, String)> = self
            .subject_fields
            .iter()
            .map(|(k, val)| (format!("X509_{d}_{k}"), val.clone()))
            .collect();
        v.push((format!("tls_id_{d}"), self.subject.clone()));
        v.push((format!("tls_digest_{d}"), self.sha1_fingerprint.clone()));
        v.push((
            format!("tls_digest_sha256_{d}"),
            self.sha256_fingerprint.clone(),
        ));
        v.push((format!("tls_serial_{d}"), self.serial.clone()));
        v.push((format!("tls_serial_hex_{d}"), self.serial_hex.clone()));
        v
    }
}

/// The authenticated identity of a client, extracted while its certificate chain was verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// OpenVPN's `common_name`: the username per `x509-username-field` (default CN), remapped.
    pub common_name: String,
    /// The chain, index = depth (0 = client certificate, last = trust anchor).
    pub chain: Vec<CertInfo>,
}

impl PeerIdentity {
    /// The client certificate's info (depth 0).
    pub fn leaf(&self) -> Option<&CertInfo> {
        self.chain.first()
    }

    /// Whether `other` presented the very same chain (SHA-256 of every certificate), as OpenVPN
    /// requires for renegotiations (`cert_hash_compare`).
    pub fn same_chain(&self, other: &PeerIdentity) -> bool {
        self.chain.len() == other.chain.len()
            && self
                .chain
                .iter()
                .zip(&other.chain)
                .all(|(a, b)| a.sha256_fingerprint == b.sha256_fingerprint)
    }

    /// All certificate variables in the order OpenVPN sets them (deepest certificate first, depth 0
    /// last). `>CLIENT:ENV` prints an env newest-first, i.e. this list reversed.
    pub fn env(&self) -> Vec<(String, String)> {
        self.chain.iter().rev().flat_map(CertInfo::env).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_decoding() {
        assert_eq!(
            oid_to_string(&[0x55, 0x04, 0x03]).as_deref(),
            Some("2.5.4.3")
        );
        assert_eq!(
            oid_to_string(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).as_deref(),
            Some("1.2.840.113549.1.9.1")
        );
        assert_eq!(oid_to_string(&[]), None);
        assert_eq!(oid_to_string(&[0x55, 0x84]), None);
        assert_eq!(oid_to_string(&[0x55, 0x80, 0x01]), None);
        assert_eq!(oid_to_string(&[0xff; 40]), None);
    }

    #[test]
    fn attribute_lookup_like_openssl() {
        assert_eq!(attribute_oid("CN").as_deref(), Some("2.5.4.3"));
        assert_eq!(attribute_oid("commonName").as_deref(), Some("2.5.4.3"));
        assert_eq!(
            attribute_oid("emailAddress").as_deref(),
            Some("1.2.840.113549.1.9.1")
        );
        assert_eq!(attribute_oid("2.5.4.11").as_deref(), Some("2.5.4.11"));
        assert_eq!(attribute_oid("cn"), None);
        assert_eq!(attribute_oid("1."), None);
    }

    #[test]
    fn der_tlv_is_bounded() {
        assert!(der_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(der_tlv(&[0x30, 0x82, 0xff]).is_none());
        assert!(der_tlv(&[0x30, 0x03, 1]).is_none());
        let (t, c, r) = der_tlv(&[0x06, 0x01, 0x2a, 0x00]).unwrap();
        assert_eq!((t, c, r), (6, &[0x2a][..], &[0][..]));
    }

    #[test]
    fn colon_hex_format() {
        assert_eq!(colon_hex(&[0x64, 0xfd, 0x0a]), "64:fd:0a");
        assert_eq!(colon_hex(&[]), "");
    }

    #[test]
    fn garbage_der_is_an_error() {
        assert!(matches!(
            CertInfo::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00], 0),
            Err(X509Error::Parse { .. })
        ));
        assert!(describe_peer_certificate(b"nonsense").is_err());
    }
}
