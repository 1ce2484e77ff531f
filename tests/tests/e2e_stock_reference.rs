//! Stock OpenVPN 2.6 server vs stock OpenVPN 2.6 client on the output of `bulwark_pki`.
//!
//! Validates the generated PKI, `server.conf` and `.ovpn` profiles against the interop judge, and the
//! harness itself (namespaces, process logs, ping). Server in one namespace, client in another,
//! joined by a veth pair; the client must print `Initialization Sequence Completed` and ping the
//! server's tunnel address 10.8.0.1. A revoked client must be refused by the CRL.

use std::time::Duration;

use bulwark_pki::{InitOptions, KeyKind, Proto, ServerConfOptions, WrapMode};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(30);

fn connect_and_ping(test: &str, kind: KeyKind, wrap: WrapMode, proto: Proto) {
    let Some(p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, "ref").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        wrap,
        proto,
        ..Default::default()
    };
    let init = InitOptions {
        key_kind: kind,
        ..InitOptions::with_clients(1)
    };
    let setup = prepare_server(&dir, &init, opts).expect("server directory");
    let mut server = start_stock_server(&dir, net.server_ns(), "server", setup.server_conf(), &[])
        .expect("start stock server");
    server
        .wait_for_line(INIT_COMPLETE, SERVER_UP)
        .expect("stock server up");
    let mut client = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("start stock client");
    client
        .wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("stock client connected");
    ping(net.client_ns(), "10.8.0.1", 3, Duration::from_secs(10)).expect("ping through tunnel");
    // The server saw the client by its certificate CN and gave it the first pool address.
    server
        .wait_for_line("client1/", Duration::from_secs(5))
        .expect("server names the client by CN");
    let line = client
        .wait_for_line("net_addr_v4_add: 10.8.0.2/24", Duration::from_secs(5))
        .expect("client got 10.8.0.2/24");
    assert!(line.contains("tun"), "{line}");
}

#[test]
fn stock_reference_ec_tls_crypt() {
    connect_and_ping(
        "stock_reference_ec_tls_crypt",
        KeyKind::EcP256,
        WrapMode::TlsCrypt,
        Proto::Udp,
    );
}

#[test]
fn stock_reference_rsa2048_tls_crypt() {
    connect_and_ping(
        "stock_reference_rsa2048_tls_crypt",
        KeyKind::Rsa2048,
        WrapMode::TlsCrypt,
        Proto::Udp,
    );
}

#[test]
fn stock_reference_ec_tls_auth() {
    connect_and_ping(
        "stock_reference_ec_tls_auth",
        KeyKind::EcP256,
        WrapMode::TlsAuth,
        Proto::Udp,
    );
}

#[test]
fn stock_reference_ec_tls_crypt_v2() {
    connect_and_ping(
        "stock_reference_ec_tls_crypt_v2",
        KeyKind::EcP256,
        WrapMode::TlsCryptV2,
        Proto::Udp,
    );
}

#[test]
fn stock_reference_ec_tls_crypt_tcp() {
    connect_and_ping(
        "stock_reference_ec_tls_crypt_tcp",
        KeyKind::EcP256,
        WrapMode::TlsCrypt,
        Proto::Tcp,
    );
}

#[test]
fn stock_reference_revoked_client_is_refused() {
    let test = "stock_reference_revoked_client_is_refused";
    let Some(p) = require_privileged(test) else {
        return;
    };
    let dir = TestDir::new(test).expect("test dir");
    let net = NetPair::new(&p, "crl").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let init = InitOptions {
        revoked_clients: vec!["client2".into()],
        ..InitOptions::with_clients(2)
    };
    let setup = prepare_server(&dir, &init, opts).expect("server directory");
    let mut server = start_stock_server(&dir, net.server_ns(), "server", setup.server_conf(), &[])
        .expect("start stock server");
    server
        .wait_for_line(INIT_COMPLETE, SERVER_UP)
        .expect("stock server up");
    let mut revoked = start_stock_client(
        &dir,
        net.client_ns(),
        "client2",
        setup.profile("client2").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("start revoked client");
    let line = server
        .wait_for_line("certificate revoked", CLIENT_UP)
        .expect("server rejects the revoked certificate");
    assert!(line.contains("CN=client2"), "{line}");
    assert_eq!(revoked.count_lines(INIT_COMPLETE), 0);
    revoked.stop().expect("stop revoked client");
    assert_eq!(revoked.count_lines(INIT_COMPLETE), 0);

    // The CRL does not block the other client.
    let mut good = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("start good client");
    good.wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("unrevoked client connects");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("ping through tunnel");
}
