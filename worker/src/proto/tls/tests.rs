//! In-memory handshakes between [`TlsServer`] and a rustls client, with a test PKI made by rcgen.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, DnValue,
    ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose as Ku,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::SigningKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SignatureAlgorithm, SignatureScheme};

use super::*;

const RSA_KEY: &str = include_str!("testdata/rsa2048.pem");

// ------------------------------------------------------------------------------------------------
// test PKI

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Self {
        Self::with_validity(cn, 1975, 4096)
    }

    fn with_validity(cn: &str, from: i32, to: i32) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    fn issue(&self, leaf: &Leaf) -> Issued {
        let key = match leaf.rsa {
            true => KeyPair::from_pem(RSA_KEY).unwrap(),
            false => KeyPair::generate_for(leaf.alg).unwrap(),
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in &leaf.dn {
            params.distinguished_name.push(t.clone(), v.clone());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = leaf.ku.clone();
        params.extended_key_usages = leaf.eku.clone();
        params.subject_alt_names = leaf.san.clone();
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        params.not_before = rcgen::date_time_ymd(leaf.valid.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(leaf.valid.1, 1, 1);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().as_ref().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    fn crl(&self, revoked: &[u64], next_update_year: i32) -> Vec<u8> {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(next_update_year, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(&issuer)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }
}

struct Leaf {
    dn: Vec<(DnType, DnValue)>,
    ku: Vec<Ku>,
    eku: Vec<Eku>,
    san: Vec<SanType>,
    serial: u64,
    alg: &'static rcgen::SignatureAlgorithm,
    rsa: bool,
    valid: (i32, i32),
}

impl Leaf {
    fn client(cn: &str, serial: u64) -> Self {
        Self {
            dn: vec![(DnType::CommonName, cn.into())],
            ku: vec![Ku::DigitalSignature],
            eku: vec![Eku::ClientAuth],
            san: vec![],
            serial,
            alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            rsa: false,
            valid: (1975, 4096),
        }
    }

    fn server(rsa: bool) -> Self {
        Self {
            dn: vec![(DnType::CommonName, "server".into())],
            ku: vec![Ku::DigitalSignature, Ku::KeyEncipherment],
            eku: vec![Eku::ServerAuth],
            san: vec![SanType::DnsName("server".try_into().unwrap())],
            serial: 3,
            alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            rsa,
            valid: (1975, 4096),
        }
    }
}

struct Issued {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Issued {
    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key_der.clone()).unwrap()
    }
}

// ------------------------------------------------------------------------------------------------
// signer and clock

#[derive(Debug)]
struct CountingSigner {
    key: Arc<dyn SigningKey>,
    calls: AtomicUsize,
    schemes: Mutex<Vec<SignatureScheme>>,
}

impl CountingSigner {
    fn new(issued: &Issued) -> Arc<Self> {
        let key = rustls::crypto::ring::sign::any_supported_type(&issued.private_key()).unwrap();
        Arc::new(Self {
            key,
            calls: AtomicUsize::new(0),
            schemes: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl KeySigner for CountingSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.key.algorithm()
    }

    fn sign(&self, scheme: SignatureScheme, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.schemes.lock().unwrap().push(scheme);
        let signer = self
            .key
            .choose_scheme(&[scheme])
            .ok_or_else(|| SignError::Refused {
                reason: "scheme".into(),
            })?;
        signer.sign(msg).map_err(|e| SignError::Refused {
            reason: e.to_string(),
        })
    }
}

#[derive(Debug)]
struct FixedTime(u64);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            self.0,
        )))
    }
}

/// 2026-01-01T00:00:00Z
const NOW_2026: u64 = 1_767_225_600;

// ------------------------------------------------------------------------------------------------
// fixture

struct Fixture {
    ca: Ca,
    server: TlsServer,
    signer: Arc<CountingSigner>,
}

fn settings_for(ca: &Ca, server_cert: &Issued) -> ServerTlsSettings {
    ServerTlsSettings {
        ca_pem: ca.pem.clone().into_bytes(),
        cert_chain_pem: server_cert.cert_pem.clone().into_bytes(),
        ..Default::default()
    }
}

fn fixture_with(rsa_server: bool, tweak: impl FnOnce(&mut ServerTlsSettings, &Ca)) -> Fixture {
    let ca = Ca::new("TestCA");
    let server_cert = ca.issue(&Leaf::server(rsa_server));
    let signer = CountingSigner::new(&server_cert);
    let mut settings = settings_for(&ca, &server_cert);
    tweak(&mut settings, &ca);
    let server = TlsServer::new(&settings, signer.clone() as Arc<dyn KeySigner>)
        .unwrap()
        .with_time_provider(Arc::new(FixedTime(NOW_2026)));
    Fixture { ca, server, signer }
}

fn fixture(rsa_server: bool) -> Fixture {
    fixture_with(rsa_server, |_, _| {})
}

fn client_config(
    ca: &Ca,
    client: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    client_config_with_provider(
        ca,
        client,
        versions,
        rustls::crypto::ring::default_provider(),
    )
}

fn client_config_with_provider(
    ca: &Ca,
    client: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    provider: rustls::crypto::CryptoProvider,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let b = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some(c) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(c.cert_der.clone())],
                c.private_key(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

fn connect(cfg: Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(cfg, ServerName::try_from("server").unwrap()).unwrap()
}

/// Runs the handshake; returns the server-side error, if any.
fn handshake(client: &mut ClientConnection, server: &mut TlsSession) -> Result<(), String> {
    for _ in 0..32 {
        let mut c2s = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut c2s).unwrap();
        }
        if !c2s.is_empty() {
            if let Err(e) = server.feed_ciphertext(&c2s) {
                let mut alert = Vec::new();
                server.take_ciphertext(&mut alert);
                let _ = client.read_tls(&mut &alert[..]);
                let _ = client.process_new_packets();
                return Err(e.to_string());
            }
        }
        let mut s2c = Vec::new();
        server.take_ciphertext(&mut s2c);
        let mut rest = &s2c[..];
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client
                .process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

fn messages(s: &TlsSession) -> Vec<String> {
    s.take_verify_events()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

fn run(
    f: &Fixture,
    client: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsSession, ClientConnection, Result<(), String>) {
    let mut server = f.server.new_session().unwrap();
    let mut client = connect(client_config(&f.ca, client, versions));
    let r = handshake(&mut client, &mut server);
    (server, client, r)
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

// ------------------------------------------------------------------------------------------------
// tests

#[test]
fn full_handshakes_tls12_tls13_ec_rsa() {
    let cases = [
        (false, TLS13, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        (true, TLS13, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        (false, TLS12, "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        (true, TLS12, "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"),
    ];
    for (rsa, versions, version, suite) in cases {
        let f = fixture(rsa);
        let c1 = f.ca.issue(&Leaf::client("client1", 4));
        let (mut server, mut client, r) = run(&f, Some(&c1), versions);
        r.unwrap();
        assert_eq!(server.protocol_version(), Some(version));
        assert_eq!(server.cipher_suite_name().as_deref(), Some(suite));
        // the handshake signature went through the KeySigner, exactly once
        assert_eq!(f.signer.calls(), 1, "{version} rsa={rsa}");
        let scheme = f.signer.schemes.lock().unwrap()[0];
        if rsa {
            assert_eq!(scheme, SignatureScheme::RSA_PSS_SHA512);
        } else {
            assert_eq!(scheme, SignatureScheme::ECDSA_NISTP256_SHA256);
        }
        assert_eq!(
            messages(&server),
            vec![
                "VERIFY OK: depth=1, CN=TestCA",
                "VERIFY OK: depth=0, CN=client1"
            ]
        );
        let line = server.control_channel_line().unwrap();
        assert_eq!(
            line,
            format!(
                "Control Channel: {version}, cipher {version} {suite}, peer certificate: 256 bits \
                 ECprime256v1, signature: ecdsa-with-SHA256, peer temporary key: 253 bits X25519"
            )
        );
        // EKM equal on both sides (no context)
        let s_keys: [u8; 256] = server.export_keying_material(EKM_LABEL_DATAKEYS).unwrap();
        let c_keys = client
            .export_keying_material([0u8; 256], EKM_LABEL_DATAKEYS, None)
            .unwrap();
        assert_eq!(s_keys, c_keys);
        let s_dyn: [u8; 256] = server
            .export_keying_material(EKM_LABEL_DYNAMIC_TLS_CRYPT)
            .unwrap();
        assert_ne!(s_dyn, s_keys);
        // no session tickets or anything else pending after the handshake
        assert!(!server.wants_write());
        // plaintext both ways
        std::io::Write::write_all(&mut client.writer(), b"key-method-2 message").unwrap();
        let mut c2s = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut c2s).unwrap();
        }
        server.feed_ciphertext(&c2s).unwrap();
        let mut got = Vec::new();
        assert_eq!(server.read_plaintext(&mut got), 20);
        assert_eq!(got, b"key-method-2 message");
        server.write_plaintext(b"PUSH_REPLY,ping 10\0").unwrap();
        let mut s2c = Vec::new();
        server.take_ciphertext(&mut s2c);
        client.read_tls(&mut &s2c[..]).unwrap();
        client.process_new_packets().unwrap();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut client.reader(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"PUSH_REPLY,ping 10\0");
        // identity
        let id = server.peer_identity().unwrap();
        assert_eq!(id.common_name, "client1");
        assert_eq!(id.chain.len(), 2);
    }
}

#[test]
fn identity_matches_openvpn_env_format() {
    let f = fixture_with(false, |s, _| {
        s.x509_username_field = vec!["emailAddress".into()];
    });
    let mut leaf = Leaf::client("client1", 0x1234_5678_9abc_def0);
    leaf.dn = vec![
        (
            DnType::CountryName,
            DnValue::PrintableString("DE".try_into().unwrap()),
        ),
        (DnType::OrganizationName, "Acme".into()),
        (DnType::OrganizationalUnitName, "VPN".into()),
        // rcgen keeps one value per DnType: spell the second OU as a custom type with OU's OID
        (DnType::CustomDnType(vec![2, 5, 4, 11]), "Ops".into()),
        (DnType::CommonName, "client1".into()),
        (
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String("c1@example.org".try_into().unwrap()),
        ),
    ];
    let c1 = f.ca.issue(&leaf);
    let (server, _client, r) = run(&f, Some(&c1), TLS13);
    r.unwrap();
    let subject = "C=DE, O=Acme, OU=VPN, OU=Ops, CN=client1, emailAddress=c1@example.org";
    assert_eq!(
        messages(&server),
        vec![
            "VERIFY OK: depth=1, CN=TestCA".to_string(),
            format!("VERIFY OK: depth=0, {subject}")
        ]
    );
    let id = server.peer_identity().unwrap();
    assert_eq!(id.common_name, "c1@example.org");
    let leaf = id.leaf().unwrap();
    assert_eq!(leaf.subject, subject);
    assert_eq!(leaf.serial, "1311768467463790320");
    assert_eq!(leaf.serial_hex, "12:34:56:78:9a:bc:de:f0");
    use sha1::Digest as _;
    assert_eq!(
        leaf.sha1_fingerprint,
        x509::colon_hex(&sha1::Sha1::digest(&c1.cert_der))
    );
    assert_eq!(
        leaf.sha256_fingerprint,
        x509::colon_hex(&sha2::Sha256::digest(&c1.cert_der))
    );
    assert_eq!(leaf.sha256_fingerprint.len(), 32 * 3 - 1);
    let env = id.env();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "X509_1_CN",
            "tls_id_1",
            "tls_digest_1",
            "tls_digest_sha256_1",
            "tls_serial_1",
            "tls_serial_hex_1",
            "X509_0_C",
            "X509_0_O",
            "X509_0_OU",
            "X509_0_OU_1",
            "X509_0_CN",
            "X509_0_emailAddress",
            "tls_id_0",
            "tls_digest_0",
            "tls_digest_sha256_0",
            "tls_serial_0",
            "tls_serial_hex_0",
        ]
    );
    assert_eq!(env[9].1, "Ops");
    assert_eq!(env[12].1, subject);
}

#[test]
fn username_fields_ou_san_serial() {
    for (fields, expected) in [
        (vec!["ou"], "VPN"),
        (vec!["ext:subjectAltName"], "second@example.org"),
        (vec!["serialNumber"], "0x0ABCDEF012"),
        (vec!["CN", "OU"], "client1_VPN"),
    ] {
        let f = fixture_with(false, |s, _| {
            s.x509_username_field = fields.iter().map(|s| s.to_string()).collect();
        });
        let mut leaf = Leaf::client("client1", 0x0a_bcde_f012);
        leaf.dn.push((DnType::OrganizationalUnitName, "VPN".into()));
        leaf.san = vec![
            SanType::Rfc822Name("first@example.org".try_into().unwrap()),
            SanType::DnsName("host.example.org".try_into().unwrap()),
            SanType::Rfc822Name("second@example.org".try_into().unwrap()),
        ];
        let c = f.ca.issue(&leaf);
        let (server, _client, r) = run(&f, Some(&c), TLS13);
        r.unwrap();
        assert_eq!(server.peer_identity().unwrap().common_name, expected);
    }
    // a missing field at depth 0 is fatal, with OpenVPN's wording
    let f = fixture_with(false, |s, _| s.x509_username_field = vec!["OU".into()]);
    let c = f.ca.issue(&Leaf::client("client1", 9));
    let (server, _client, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec![
            "VERIFY OK: depth=1, CN=TestCA",
            "VERIFY ERROR: could not extract OU from X509 subject string ('CN=client1') -- note \
             that the field length is limited to 64 characters"
        ]
    );
    assert!(server.peer_identity().is_none());
    // a CN longer than 64 characters is rejected
    let f = fixture(false);
    let long = "x".repeat(65);
    let c = f.ca.issue(&Leaf::client(&long, 9));
    let (_server, _client, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    let c = f.ca.issue(&Leaf::client(&"y".repeat(64), 9));
    assert!(run(&f, Some(&c), TLS13).2.is_ok());
}

#[test]
fn revoked_client_rejected_and_crl_reload() {
    let f = fixture_with(false, |s, ca| s.crl = Some(ca.crl(&[0x0102], 2090)));
    let c1 = f.ca.issue(&Leaf::client("client1", 0x0101));
    let c2 = f.ca.issue(&Leaf::client("client2", 0x0102));
    let (_s, _c, r) = run(&f, Some(&c1), TLS13);
    r.unwrap();
    let (server, mut client, r) = run(&f, Some(&c2), TLS13);
    let err = r.unwrap_err();
    assert!(err.contains("Revoked"), "{err}");
    assert_eq!(
        messages(&server),
        vec!["VERIFY ERROR: depth=0, error=certificate revoked: CN=client2, serial=258"]
    );
    assert!(server.peer_identity().is_none());
    assert!(server.has_failed());
    // the client got a fatal alert
    assert!(client.process_new_packets().is_err() || client.is_handshaking());
    // a failed session stays failed
    let mut s = server;
    assert!(matches!(
        s.feed_ciphertext(b"\x16\x03\x03\x00\x01\x00"),
        Err(SessionError::Failed)
    ));

    // a CRL from an unrelated CA: every certificate lacks its CRL → warnings, accepted
    let other = Ca::new("OtherCA");
    f.server.set_crl(Some(&other.crl(&[0x0102], 2090))).unwrap();
    let (server, _c, r) = run(&f, Some(&c2), TLS13);
    r.unwrap();
    let events = server.take_verify_events();
    assert_eq!(
        events[..2]
            .iter()
            .map(|e| (e.level.log_class().verb(), e.message.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (
                3,
                "VERIFY WARNING: depth=0, unable to get certificate CRL: CN=client2"
            ),
            (
                3,
                "VERIFY WARNING: depth=1, unable to get certificate CRL: CN=TestCA"
            ),
        ]
    );

    // reload: a CRL without client2 lets it in, new handshakes only
    f.server.set_crl(Some(&f.ca.crl(&[0x0101], 2090))).unwrap();
    run(&f, Some(&c2), TLS13).2.unwrap();
    assert!(run(&f, Some(&c1), TLS13).2.is_err());
    // garbage CRL: error, previous CRL stays in force
    assert!(f.server.set_crl(Some(b"not a crl")).is_err());
    assert!(run(&f, Some(&c1), TLS13).2.is_err());
    // DER CRL accepted; None disables checking
    let pem = f.ca.crl(&[0x0102], 2090);
    let der = CertificateRevocationListDer::from_pem_slice(&pem).unwrap();
    f.server.set_crl(Some(der.as_ref())).unwrap();
    assert!(run(&f, Some(&c2), TLS13).2.is_err());
    f.server.set_crl(None).unwrap();
    run(&f, Some(&c2), TLS13).2.unwrap();
}

use rustls::pki_types::CertificateRevocationListDer;

#[test]
fn expired_crl_fails_closed_like_openssl() {
    let f = fixture_with(false, |s, ca| s.crl = Some(ca.crl(&[], 2025)));
    let c1 = f.ca.issue(&Leaf::client("client1", 5));
    let (server, _c, r) = run(&f, Some(&c1), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec!["VERIFY ERROR: depth=0, error=CRL has expired: CN=client1, serial=5"]
    );
}

#[test]
fn certificate_from_another_ca_rejected() {
    let f = fixture(false);
    let other = Ca::new("OtherCA");
    let intruder = other.issue(&Leaf::client("intruder", 77));
    let (server, _c, r) = run(&f, Some(&intruder), TLS13);
    assert!(r.unwrap_err().contains("UnknownIssuer"));
    assert_eq!(
        messages(&server),
        vec!["VERIFY ERROR: depth=0, error=unable to get local issuer certificate: CN=intruder, serial=77"]
    );
}

#[test]
fn expired_client_and_expired_ca() {
    let f = fixture(false);
    let mut leaf = Leaf::client("old", 6);
    leaf.valid = (2000, 2010);
    let c = f.ca.issue(&leaf);
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec![
            "VERIFY OK: depth=1, CN=TestCA",
            "VERIFY ERROR: depth=0, error=certificate has expired: CN=old, serial=6"
        ]
    );
    let mut leaf = Leaf::client("future", 7);
    leaf.valid = (2030, 2040);
    let c = f.ca.issue(&leaf);
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec![
            "VERIFY OK: depth=1, CN=TestCA",
            "VERIFY ERROR: depth=0, error=certificate is not yet valid: CN=future, serial=7"
        ]
    );

    // webpki does not check the trust anchor's dates; OpenSSL does, and so do we
    let old_ca = Ca::with_validity("OldCA", 2000, 2025);
    let server_cert = old_ca.issue(&Leaf::server(false));
    let signer = CountingSigner::new(&server_cert);
    let server = TlsServer::new(&settings_for(&old_ca, &server_cert), signer)
        .unwrap()
        .with_time_provider(Arc::new(FixedTime(NOW_2026)));
    let c = old_ca.issue(&Leaf::client("client1", 8));
    let mut s = server.new_session().unwrap();
    // the client must not check the (expired) server chain for this test: use a fixed-time client
    let mut cfg = (*client_config(&old_ca, Some(&c), TLS13)).clone();
    cfg.time_provider = Arc::new(FixedTime(1_600_000_000));
    let mut client = connect(Arc::new(cfg));
    assert!(handshake(&mut client, &mut s).is_err());
    assert_eq!(
        messages(&s),
        vec![
            "VERIFY ERROR: depth=1, error=certificate has expired: CN=OldCA, serial=?"
                .replace("serial=?", &format!("serial={}", serial_of(&old_ca.pem)))
        ]
    );
}

fn serial_of(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    CertInfo::from_der(der.as_ref(), 0).unwrap().serial
}

#[test]
fn remote_cert_tls_client() {
    let f = fixture_with(false, |s, _| {
        s.remote_cert_tls = Some(RemoteCertTls::Client)
    });
    // good client certificate
    let good = f.ca.issue(&Leaf::client("client1", 10));
    let (server, _c, r) = run(&f, Some(&good), TLS13);
    r.unwrap();
    assert_eq!(
        messages(&server),
        vec![
            "VERIFY OK: depth=1, CN=TestCA",
            "VERIFY KU OK",
            "Validating certificate extended key usage",
            "++ Certificate has EKU (str) TLS Web Client Authentication, expects TLS Web Client \
             Authentication",
            "VERIFY EKU OK",
            "VERIFY OK: depth=0, CN=client1",
        ]
    );
    // serverAuth-only certificate: rejected (already by the client purpose check)
    let mut leaf = Leaf::client("srv-as-client", 11);
    leaf.eku = vec![Eku::ServerAuth];
    let c = f.ca.issue(&leaf);
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec!["VERIFY ERROR: depth=0, error=unsupported certificate purpose: CN=srv-as-client, serial=11"]
    );
    // no EKU at all: passes the purpose check, fails remote-cert-tls
    let mut leaf = Leaf::client("no-eku", 12);
    leaf.eku = vec![];
    let c = f.ca.issue(&leaf);
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec![
            "VERIFY OK: depth=1, CN=TestCA",
            "VERIFY KU OK",
            "Certificate does not have extended key usage extension",
            "VERIFY EKU ERROR",
        ]
    );
    // no keyUsage
    let mut leaf = Leaf::client("no-ku", 13);
    leaf.ku = vec![];
    let c = f.ca.issue(&leaf);
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec![
            "VERIFY OK: depth=1, CN=TestCA",
            "Certificate does not have key usage extension",
            "VERIFY KU ERROR",
        ]
    );
    // several EKUs: OpenVPN logs str and oid forms until one matches
    let mut leaf = Leaf::client("multi", 14);
    leaf.eku = vec![Eku::EmailProtection, Eku::ClientAuth];
    let c = f.ca.issue(&leaf);
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    r.unwrap();
    let m = messages(&server);
    assert_eq!(
        m[2..5],
        [
            "Validating certificate extended key usage",
            "++ Certificate has EKU (str) E-mail Protection, expects TLS Web Client Authentication",
            "++ Certificate has EKU (oid) 1.3.6.1.5.5.7.3.4, expects TLS Web Client Authentication",
        ]
    );
}

#[test]
fn remote_cert_ku_values() {
    let f = fixture_with(false, |s, _| s.remote_cert_ku = vec![0xa0, 0x88]);
    let mut leaf = Leaf::client("ku", 15);
    leaf.ku = vec![Ku::DigitalSignature, Ku::KeyAgreement];
    let c = f.ca.issue(&leaf);
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    r.unwrap();
    assert_eq!(
        messages(&server)[1..3],
        ["Validating certificate key usage", "VERIFY KU OK"]
    );
    let f = fixture_with(false, |s, _| s.remote_cert_ku = vec![0xa0]);
    let c = f.ca.issue(&Leaf::client("ku2", 16));
    let (server, _c, r) = run(&f, Some(&c), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server)[1..5],
        [
            "Validating certificate key usage",
            "ERROR: Certificate has key usage 0080, expected one of:",
            " * 00a0",
            "VERIFY KU ERROR",
        ]
    );
}

#[test]
fn verify_x509_name_modes() {
    let cases = [
        (X509NameKind::Name, "client1", true),
        (X509NameKind::Name, "client", false),
        (X509NameKind::NamePrefix, "client", true),
        (X509NameKind::NamePrefix, "server", false),
        (X509NameKind::Subject, "O=Acme, CN=client1", true),
        (X509NameKind::Subject, "CN=client1", false),
    ];
    for (kind, name, ok) in cases {
        let f = fixture_with(false, |s, _| {
            s.verify_x509_name = Some(VerifyX509Name {
                name: name.into(),
                kind,
            })
        });
        let mut leaf = Leaf::client("client1", 20);
        leaf.dn.insert(0, (DnType::OrganizationName, "Acme".into()));
        let c = f.ca.issue(&leaf);
        let (server, _c, r) = run(&f, Some(&c), TLS13);
        let m = messages(&server);
        if ok {
            r.unwrap();
            assert_eq!(m[1], "VERIFY X509NAME OK: O=Acme, CN=client1");
        } else {
            assert!(r.is_err());
            assert_eq!(
                m.last().unwrap(),
                &format!("VERIFY X509NAME ERROR: O=Acme, CN=client1, must be {name}")
            );
        }
    }
}

#[test]
fn verify_client_cert_none_and_optional() {
    let f = fixture_with(false, |s, _| s.verify_client_cert = VerifyClientCert::None);
    let (server, _c, r) = run(&f, None, TLS13);
    r.unwrap();
    assert!(server.peer_identity().is_none());
    let line = server.control_channel_line().unwrap();
    assert_eq!(
        line,
        "Control Channel: TLSv1.3, cipher TLSv1.3 TLS_AES_256_GCM_SHA384, peer temporary key: 253 bits X25519"
    );

    let f = fixture_with(false, |s, _| {
        s.verify_client_cert = VerifyClientCert::Optional
    });
    run(&f, None, TLS13).2.unwrap();
    let c1 = f.ca.issue(&Leaf::client("client1", 21));
    let (server, _c, r) = run(&f, Some(&c1), TLS13);
    r.unwrap();
    assert_eq!(server.peer_identity().unwrap().common_name, "client1");

    // require (default): no certificate → handshake fails
    let f = fixture(false);
    assert!(run(&f, None, TLS13).2.is_err());
}

#[test]
fn accepts_what_an_openvpn_2_6_client_offers() {
    // §4.1: a 2.6.14 client sends a key share for x25519 only, offers P-256/P-384 too, all three
    // TLS 1.3 suites and the ECDHE AEAD TLS 1.2 suites. Check each alternative individually.
    let base = rustls::crypto::ring::default_provider();
    let f = fixture(false);
    let c1 = f.ca.issue(&Leaf::client("client1", 30));
    let groups: [&'static dyn rustls::crypto::SupportedKxGroup; 3] = [
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    for g in groups {
        let p = rustls::crypto::CryptoProvider {
            kx_groups: vec![g],
            ..base.clone()
        };
        let mut server = f.server.new_session().unwrap();
        let mut client = connect(client_config_with_provider(&f.ca, Some(&c1), TLS13, p));
        handshake(&mut client, &mut server).unwrap();
    }
    for suite in base.cipher_suites.iter().copied() {
        let p = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..base.clone()
        };
        let versions: &[&rustls::SupportedProtocolVersion] = &[suite.version()];
        let mut server = f.server.new_session().unwrap();
        let mut client = connect(client_config_with_provider(&f.ca, Some(&c1), versions, p));
        let r = handshake(&mut client, &mut server);
        let ecdsa_server = !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        );
        // an EC server key cannot do ECDHE-RSA suites (as with OpenSSL)
        assert_eq!(r.is_ok(), ecdsa_server, "{:?}", suite.suite());
    }
}

#[test]
fn configured_suites_and_groups_are_enforced() {
    let f = fixture_with(false, |s, _| {
        s.tls_groups = Some("secp384r1".into());
        s.tls_ciphersuites = Some("TLS_CHACHA20_POLY1305_SHA256".into());
    });
    let c1 = f.ca.issue(&Leaf::client("client1", 31));
    let (server, _c, r) = run(&f, Some(&c1), TLS13);
    r.unwrap();
    assert_eq!(
        server.cipher_suite_name().as_deref(),
        Some("TLS_CHACHA20_POLY1305_SHA256")
    );
    assert!(server
        .control_channel_line()
        .unwrap()
        .ends_with("peer temporary key: 384 bits ECsecp384r1"));
    let f = fixture_with(false, |s, _| {
        s.tls_version_min = Some(TlsVersionMin {
            version: TlsVersion::V1_3,
            or_highest: false,
        })
    });
    assert!(run(&f, Some(&c1), TLS12).2.is_err());
}

#[test]
fn build_errors() {
    let ca = Ca::new("TestCA");
    let ec = ca.issue(&Leaf::server(false));
    let rsa = ca.issue(&Leaf::server(true));
    // signer key type differs from the certificate's
    let e = TlsServer::new(&settings_for(&ca, &ec), CountingSigner::new(&rsa)).unwrap_err();
    assert!(
        matches!(e, TlsError::KeyType(KeyTypeError::Mismatch { .. })),
        "{e}"
    );
    // private key in the chain PEM
    let mut s = settings_for(&ca, &ec);
    s.cert_chain_pem
        .extend_from_slice(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert!(matches!(
        TlsServer::new(&s, CountingSigner::new(&ec)),
        Err(TlsError::PrivateKeyInCertificate)
    ));
    // empty chain / CA bundle / bad CRL
    let mut s = settings_for(&ca, &ec);
    s.cert_chain_pem.clear();
    assert!(matches!(
        TlsServer::new(&s, CountingSigner::new(&ec)),
        Err(TlsError::ServerCertificate { .. })
    ));
    let mut s = settings_for(&ca, &ec);
    s.ca_pem = ec.cert_pem.clone().into_bytes(); // only a non-self-signed cert
    assert!(matches!(
        TlsServer::new(&s, CountingSigner::new(&ec)),
        Err(TlsError::Verifier(VerifyError::CaBundle { .. }))
    ));
    let mut s = settings_for(&ca, &ec);
    s.crl = Some(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_vec());
    assert!(matches!(
        TlsServer::new(&s, CountingSigner::new(&ec)),
        Err(TlsError::Verifier(VerifyError::Crl { .. }))
    ));
    // Suite B with an RSA key
    let mut s = settings_for(&ca, &rsa);
    s.tls_cert_profile = Some(CertProfile::SuiteB);
    assert!(matches!(
        TlsServer::new(&s, CountingSigner::new(&rsa)),
        Err(TlsError::SuiteBKey)
    ));
    // settings errors pass through
    let mut s = settings_for(&ca, &ec);
    s.tls_cipher = Some("NOPE".into());
    assert!(matches!(
        build_server_config(&s, CountingSigner::new(&ec), VerifyLog::new()),
        Err(TlsError::Settings(SettingsError::UnknownCiphers { .. }))
    ));
    // a good server certificate raises no warning; one without EKU/KU does
    let server = TlsServer::new(&settings_for(&ca, &ec), CountingSigner::new(&ec)).unwrap();
    assert!(server.server_cert_warnings().is_empty());
    let mut bare = Leaf::server(false);
    bare.eku = vec![];
    bare.ku = vec![];
    let bare = ca.issue(&bare);
    let server = TlsServer::new(&settings_for(&ca, &bare), CountingSigner::new(&bare)).unwrap();
    assert_eq!(server.server_cert_warnings().len(), 2);
}

#[test]
fn session_misuse_and_garbage() {
    let f = fixture(false);
    let mut s = f.server.new_session().unwrap();
    assert!(matches!(
        s.write_plaintext(b"early"),
        Err(SessionError::StillHandshaking)
    ));
    assert!(s.export_keying_material::<32>(b"x").is_err());
    assert!(s.peer_identity().is_none());
    assert!(s.control_channel_line().is_none());
    assert!(matches!(
        s.feed_ciphertext(b"GET / HTTP/1.1\r\n\r\n"),
        Err(SessionError::Tls(_))
    ));
    let mut alert = Vec::new();
    s.take_ciphertext(&mut alert);
    assert_eq!(alert.first(), Some(&0x15), "a TLS alert record is queued");
    assert!(s.has_failed());

    let c1 = f.ca.issue(&Leaf::client("client1", 40));
    let (mut server, _c, r) = run(&f, Some(&c1), TLS13);
    r.unwrap();
    assert!(matches!(
        server.write_plaintext(&[b'x'; MAX_PLAINTEXT_MESSAGE + 1]),
        Err(SessionError::MessageTooLong { .. })
    ));
    server
        .write_plaintext(&[b'x'; MAX_PLAINTEXT_MESSAGE])
        .unwrap();
    // feeding nothing is harmless
    server.feed_ciphertext(&[]).unwrap();
}

#[test]
fn signer_failure_aborts_the_handshake() {
    #[derive(Debug)]
    struct Refusing(SignatureAlgorithm);
    impl KeySigner for Refusing {
        fn algorithm(&self) -> SignatureAlgorithm {
            self.0
        }
        fn sign(&self, _: SignatureScheme, _: &[u8]) -> Result<Vec<u8>, SignError> {
            Err(SignError::Refused {
                reason: "rate limit".into(),
            })
        }
    }
    let ca = Ca::new("TestCA");
    let ec = ca.issue(&Leaf::server(false));
    let server = TlsServer::new(
        &settings_for(&ca, &ec),
        Arc::new(Refusing(SignatureAlgorithm::ECDSA)),
    )
    .unwrap();
    let c1 = ca.issue(&Leaf::client("client1", 41));
    let mut s = server.new_session().unwrap();
    let mut client = connect(client_config(&ca, Some(&c1), TLS13));
    let e = handshake(&mut client, &mut s).unwrap_err();
    assert!(e.contains("remote signer"), "{e}");
}

#[test]
fn renegotiation_identity_comparison() {
    let f = fixture(false);
    let c1 = f.ca.issue(&Leaf::client("client1", 60));
    let c1b = f.ca.issue(&Leaf::client("client1", 61));
    let a = run(&f, Some(&c1), TLS13).0.peer_identity().unwrap();
    let b = run(&f, Some(&c1), TLS12).0.peer_identity().unwrap();
    let c = run(&f, Some(&c1b), TLS13).0.peer_identity().unwrap();
    assert!(a.same_chain(&b));
    assert_eq!(a.common_name, c.common_name);
    assert!(!a.same_chain(&c), "same CN, different certificate");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Certificate field extraction never panics on corrupted DER.
    #[test]
    fn corrupted_certificates_never_panic(
        flips in proptest::collection::vec((0usize..2000, proptest::prelude::any::<u8>()), 1..8),
        cut in 0usize..2000,
    ) {
        let ca = Ca::new("TestCA");
        let mut leaf = Leaf::client("client1", 70);
        leaf.eku = vec![Eku::ClientAuth, Eku::EmailProtection];
        leaf.san = vec![SanType::Rfc822Name("a@b.c".try_into().unwrap())];
        let mut der = ca.issue(&leaf).cert_der;
        for (pos, val) in flips {
            let n = der.len();
            der[pos % n] ^= val;
        }
        der.truncate(cut.max(1).min(der.len()));
        let _ = CertInfo::from_der(&der, 0);
        let _ = x509::describe_peer_certificate(&der);
        let _ = signer::key_type_of_cert(&der);
        if let Ok(cert) = x509::parse_cert(&der) {
            let _ = x509::eku_oids(&cert);
            let _ = x509::key_usage_value(&cert);
            for f in ["CN", "ext:subjectAltName", "serialNumber", "emailAddress"] {
                let _ = x509::extract_username(&cert, &[f.to_string()], "s");
            }
        }
    }

    /// Option strings never panic the translators.
    #[test]
    fn option_strings_never_panic(s in "\\PC{0,64}") {
        let _ = settings::parse_tls12_cipher_string(&s);
        let _ = settings::parse_tls13_suites(&s);
        let _ = settings::parse_groups(&s);
    }
}

fn self_signed_client(cn: &str) -> Issued {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![Ku::DigitalSignature];
    params.extended_key_usages = vec![Eku::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().as_ref().to_vec(),
        key_der: key.serialize_der(),
    }
}

fn sha256(der: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(der).into()
}

#[test]
fn peer_fingerprint_without_ca() {
    let selfie = self_signed_client("selfie");
    let stranger = self_signed_client("stranger");
    let fp = sha256(&selfie.cert_der);
    let f = fixture_with(false, |s, _| {
        s.ca_pem.clear();
        s.peer_fingerprint = vec![[0u8; 32], fp];
    });
    let (server, _c, r) = run(&f, Some(&selfie), TLS13);
    r.unwrap();
    assert_eq!(messages(&server), vec!["VERIFY OK: depth=0, CN=selfie"]);
    let id = server.peer_identity().unwrap();
    assert_eq!(id.common_name, "selfie");
    assert_eq!(id.chain.len(), 1);

    let (server, _c, r) = run(&f, Some(&stranger), TLS13);
    assert!(r.is_err());
    assert_eq!(
        messages(&server),
        vec![format!(
            "TLS Error: --tls-verify/--peer-fingerprint certificate hash verification failed. (got \
             certificate fingerprint: {})",
            x509::colon_hex(&sha256(&stranger.cert_der))
        )]
    );
    // without fingerprints, an empty CA bundle is a configuration error
    let ca = Ca::new("TestCA");
    let ec = ca.issue(&Leaf::server(false));
    let mut s = settings_for(&ca, &ec);
    s.ca_pem.clear();
    assert!(matches!(
        TlsServer::new(&s, CountingSigner::new(&ec)),
        Err(TlsError::Verifier(VerifyError::CaBundle { .. }))
    ));
}

#[test]
fn peer_fingerprint_with_ca_is_an_extra_check() {
    let ca = Ca::new("TestCA");
    let c1 = ca.issue(&Leaf::client("client1", 80));
    let c2 = ca.issue(&Leaf::client("client2", 81));
    let server_cert = ca.issue(&Leaf::server(false));
    let signer = CountingSigner::new(&server_cert);
    let mut s = settings_for(&ca, &server_cert);
    s.peer_fingerprint = vec![sha256(&c1.cert_der)];
    let server = TlsServer::new(&s, signer.clone()).unwrap();
    let f = Fixture { ca, server, signer };
    run(&f, Some(&c1), TLS13).2.unwrap();
    let (server, _c, r) = run(&f, Some(&c2), TLS13);
    assert!(r.is_err());
    let m = messages(&server);
    assert_eq!(m[0], "VERIFY OK: depth=1, CN=TestCA");
    assert!(m[1].starts_with("TLS Error: --tls-verify/--peer-fingerprint"));
}

/// The engine logs each verification line at the verbosity OpenVPN prints it: a refusal from verb 1
/// (`D_TLS_ERRORS`), an accepted certificate from verb 2 (`D_HANDSHAKE`).
#[test]
fn verify_lines_are_logged_at_openvpns_verbosity() {
    use crate::proto::io::LogClass;
    let f = fixture_with(false, |s, ca| s.crl = Some(ca.crl(&[0x0102], 2090)));
    let ok = f.ca.issue(&Leaf::client("client1", 0x0101));
    let revoked = f.ca.issue(&Leaf::client("client2", 0x0102));
    let (server, _c, r) = run(&f, Some(&ok), TLS13);
    r.unwrap();
    let events = server.take_verify_events();
    assert!(!events.is_empty());
    for e in &events {
        assert!(e.message.starts_with("VERIFY OK"), "{e:?}");
        assert_eq!(e.level.log_class(), LogClass::Handshake);
        assert_eq!(e.level.log_class().verb(), 2);
    }
    let (server, _c, r) = run(&f, Some(&revoked), TLS13);
    assert!(r.is_err());
    let events = server.take_verify_events();
    let refusal = events
        .iter()
        .find(|e| e.message.starts_with("VERIFY ERROR"))
        .expect("a VERIFY ERROR line");
    assert_eq!(refusal.level.log_class(), LogClass::Error);
    assert_eq!(refusal.level.log_class().verb(), 1);
}
