//! Unit tests of certificate profiles, CRL contents, signatures and the written directory.

use super::*;
use std::os::unix::fs::PermissionsExt;
use x509_parser::prelude::*;

fn der_of(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    p.contents
}

fn verify_sig(kind: KeyKind, issuer_der: &[u8], signed: &[u8], sig: &[u8]) {
    let (_, issuer) = parse_x509_certificate(issuer_der).unwrap();
    let spk = &issuer.public_key().subject_public_key.data;
    let alg: &dyn ring::signature::VerificationAlgorithm = match kind {
        KeyKind::EcP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        _ => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
    };
    ring::signature::UnparsedPublicKey::new(alg, spk.as_ref())
        .verify(signed, sig)
        .expect("signature verifies against the CA key");
}

fn check_pki(kind: KeyKind) {
    let opts = InitOptions {
        key_kind: kind,
        revoked_clients: vec!["client2".into()],
        ..InitOptions::with_clients(2)
    };
    let pki = generate(&opts).unwrap();
    let ca_der = der_of(&pki.ca.cert_pem);
    let (_, ca) = parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(ca.version(), X509Version::V3);
    verify_sig(
        kind,
        &ca_der,
        ca.tbs_certificate.as_ref(),
        &ca.signature_value.data,
    );

    let srv_der = der_of(&pki.server.cert_pem);
    let (_, srv) = parse_x509_certificate(&srv_der).unwrap();
    assert!(!srv.is_ca());
    assert_eq!(
        srv.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "server"
    );
    let ku = srv.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    if kind == KeyKind::EcP256 {
        assert!(ku.key_agreement() && !ku.key_encipherment());
    } else {
        assert!(ku.key_encipherment() && !ku.key_agreement());
    }
    let eku = srv.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert_eq!(srv.raw_serial(), pki.server.serial.as_slice());
    verify_sig(
        kind,
        &ca_der,
        srv.tbs_certificate.as_ref(),
        &srv.signature_value.data,
    );

    for (i, c) in pki.clients.iter().enumerate() {
        assert_eq!(c.common_name, format!("client{}", i + 1));
        let der = der_of(&c.cert_pem);
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        assert_eq!(cert.issuer(), ca.subject());
        verify_sig(
            kind,
            &ca_der,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        );
        assert!(c.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    let crl_der = der_of(pki.crl_pem());
    let (_, crl) = parse_x509_crl(&crl_der).unwrap();
    let revoked: Vec<&[u8]> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial())
        .collect();
    assert_eq!(
        revoked,
        vec![pki.client("client2").unwrap().serial.as_slice()]
    );
    assert!(crl.next_update().is_some());
    verify_sig(
        kind,
        &ca_der,
        crl.tbs_cert_list.as_ref(),
        &crl.signature_value.data,
    );
}

#[test]
fn ec_pki_profiles() {
    check_pki(KeyKind::EcP256);
}

#[test]
fn rsa2048_pki_profiles() {
    check_pki(KeyKind::Rsa2048);
}

#[test]
fn revoke_reissues_crl() {
    let mut pki = generate(&InitOptions::with_clients(3)).unwrap();
    assert!(pki.revoked_serials().is_empty());
    let empty_der = der_of(pki.crl_pem());
    let (_, empty) = parse_x509_crl(&empty_der).unwrap();
    assert_eq!(empty.iter_revoked_certificates().count(), 0);
    pki.revoke("client3").unwrap();
    pki.revoke("client1").unwrap();
    pki.revoke("client1").unwrap();
    let crl_der = der_of(pki.crl_pem());
    let (_, crl) = parse_x509_crl(&crl_der).unwrap();
    let mut revoked: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    revoked.sort();
    let mut want = vec![
        pki.client("client1").unwrap().serial.clone(),
        pki.client("client3").unwrap().serial.clone(),
    ];
    want.sort();
    assert_eq!(revoked, want);
    assert_eq!(crl.crl_number().unwrap().to_u64_digits(), vec![4]);
    assert!(matches!(
        pki.revoke("nobody"),
        Err(PkiError::UnknownClient(_))
    ));
    assert!(matches!(
        pki.revoke_serial(&[1, 2, 3]),
        Err(PkiError::UnknownSerial(_))
    ));
}

#[test]
fn rejects_bad_options() {
    let bad_name = InitOptions {
        clients: vec!["../etc".into()],
        ..Default::default()
    };
    assert!(matches!(generate(&bad_name), Err(PkiError::InvalidName(_))));
    let dup = InitOptions {
        clients: vec!["a".into(), "a".into()],
        ..Default::default()
    };
    assert!(matches!(generate(&dup), Err(PkiError::DuplicateName(_))));
    let unknown = InitOptions {
        revoked_clients: vec!["client9".into()],
        ..Default::default()
    };
    assert!(matches!(
        generate(&unknown),
        Err(PkiError::UnknownClient(_))
    ));
    let zero = InitOptions {
        validity_days: 0,
        ..Default::default()
    };
    assert!(matches!(generate(&zero), Err(PkiError::BadValidity)));
}

#[test]
fn key_kind_parse() {
    assert_eq!(KeyKind::parse("EC"), Some(KeyKind::EcP256));
    assert_eq!(KeyKind::parse("rsa3072"), Some(KeyKind::Rsa3072));
    assert_eq!(KeyKind::parse("dsa"), None);
}

#[test]
fn debug_output_hides_private_keys() {
    let pki = generate(&InitOptions::default()).unwrap();
    let dbg = format!("{pki:?}");
    assert!(!dbg.contains("PRIVATE KEY"));
    assert!(dbg.contains("<redacted>"));
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn write_dir_layout_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("srv");
    let pki = generate(&InitOptions::with_clients(2)).unwrap();
    let w = write_dir(&pki, &dir, &ServerConfOptions::default()).unwrap();
    assert_eq!(mode(&w.dir), 0o755);
    assert_eq!(mode(&w.paths.key), 0o600);
    assert_eq!(mode(&w.ca_key), 0o600);
    assert_eq!(mode(w.paths.wrap_key.as_ref().unwrap()), 0o600);
    assert_eq!(mode(&w.paths.ca), 0o644);
    assert_eq!(mode(&w.paths.crl), 0o644);
    assert_eq!(mode(&w.server_conf), 0o644);
    assert_eq!(mode(&w.dir.join("clients")), 0o700);
    let profile = w.profile("client2").unwrap();
    assert_eq!(mode(profile), 0o600);
    let text = fs::read_to_string(profile).unwrap();
    assert!(text.contains(
        &pki.client("client2")
            .unwrap()
            .cert_pem
            .trim_end()
            .to_string()
    ));
    assert!(text.contains("<tls-crypt>\n#\n# 2048 bit OpenVPN static key\n"));
    let conf = fs::read_to_string(&w.server_conf).unwrap();
    assert!(conf.contains(&format!(
        "tls-crypt {}\n",
        w.dir.join("tls-crypt.key").display()
    )));
    assert!(conf.contains(&format!("key {}\n", w.dir.join("server.key").display())));
    let key_text = fs::read_to_string(w.paths.wrap_key.as_ref().unwrap()).unwrap();
    assert_eq!(StaticKey::parse(&key_text).unwrap(), pki.static_key);

    // Never overwrites.
    assert!(matches!(
        write_dir(&pki, &dir, &ServerConfOptions::default()),
        Err(PkiError::WriteFile { .. })
    ));
}

#[test]
fn write_dir_tls_crypt_v2_needs_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = generate(&InitOptions::default()).unwrap();
    let opts = ServerConfOptions {
        wrap: WrapMode::TlsCryptV2,
        ..Default::default()
    };
    assert!(matches!(
        write_dir(&pki, &tmp.path().join("a"), &opts),
        Err(PkiError::Conf(ConfError::MissingTlsCryptV2Key(_)))
    ));
    // Nothing but the directory was written.
    assert_eq!(fs::read_dir(tmp.path().join("a")).unwrap().count(), 0);
    let opts = ServerConfOptions {
        wrap: WrapMode::TlsCryptV2,
        tls_crypt_v2: Some(TlsCryptV2Keys {
            server_key: "SERVER-V2".into(),
            client_keys: vec![("client1".into(), "CLIENT1-V2".into())],
        }),
        ..Default::default()
    };
    let w = write_dir(&pki, &tmp.path().join("b"), &opts).unwrap();
    let conf = fs::read_to_string(&w.server_conf).unwrap();
    assert!(conf.contains("tls-crypt-v2 "));
    let profile = fs::read_to_string(w.profile("client1").unwrap()).unwrap();
    assert!(profile.contains("<tls-crypt-v2>\nCLIENT1-V2\n</tls-crypt-v2>\n"));
}

#[test]
fn issue_server_rotates_the_server_certificate_under_the_same_ca() {
    let pki = generate(&InitOptions::default()).unwrap();
    let new = pki.issue_server("server2", 30).unwrap();
    assert_ne!(new.key_pem, pki.server.key_pem);
    assert_ne!(new.serial, pki.server.serial);
    let der = der_of(&new.cert_pem);
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "server2");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let ca_der = der_of(&pki.ca.cert_pem);
    verify_sig(
        pki.key_kind,
        &ca_der,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    );
    assert!(matches!(
        pki.issue_server("bad name/", 30),
        Err(PkiError::InvalidName(_))
    ));
    assert!(matches!(
        pki.issue_server("server3", 0),
        Err(PkiError::BadValidity)
    ));
}
