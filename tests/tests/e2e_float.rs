//! Float: a connected stock OpenVPN 2.6 client whose packets start coming from another address
//! (here: the client's source address changes under it, as after a NAT rebinding or a roaming
//! laptop) keeps its session — the server accepts the authenticated data packets from the new
//! address (peer-id), logs OpenVPN's `peer N (CN) floated from OLD to NEW` line at verb 4, and the
//! status file shows the new real address. Nobody reconnects.

use std::time::Duration;

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);
const CLIENT_UP: Duration = Duration::from_secs(40);

#[test]
fn a_client_whose_address_changes_floats_without_reconnecting() {
    let Some(p) = require_privileged("float") else {
        return;
    };
    let dir = TestDir::new("float").expect("test dir");
    let net = NetPair::new(&p, "fl").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let status = dir.path().join("status.log");
    let extra = [
        "verb 4".to_string(),
        format!("status {} 1", status.display()),
        "status-version 2".to_string(),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start");
    server.wait_for_line(INIT_COMPLETE, SERVER_UP).expect("up");
    let mut client = start_stock_client(
        &dir,
        net.client_ns(),
        "client1",
        setup.profile("client1").expect("profile"),
        &ClientOverrides::default(),
    )
    .expect("client");
    client
        .wait_for_line(INIT_COMPLETE, CLIENT_UP)
        .expect("client up");
    ping(net.client_ns(), "10.8.0.1", 2, Duration::from_secs(10)).expect("tunnel up");
    let old = net.client_addr.to_string();
    wait_file_contains(&status, &format!("client1,{old}:"), Duration::from_secs(10))
        .expect("status lists the client at its first address");

    // The client's source address changes: a second address on its link becomes the preferred
    // source of the route to the server.
    let o = net.client_addr.octets();
    let new = std::net::Ipv4Addr::new(o[0], o[1], o[2], 3).to_string();
    let subnet = format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
    net.client
        .ip(&["addr", "add", &format!("{new}/24"), "dev", CLIENT_IF])
        .expect("second address");
    net.client
        .ip(&[
            "route", "replace", &subnet, "dev", CLIENT_IF, "proto", "kernel", "scope", "link",
            "src", &new,
        ])
        .expect("prefer the new source address");

    ping(net.client_ns(), "10.8.0.1", 3, Duration::from_secs(15))
        .expect("the tunnel keeps working from the new address");
    let line = server
        .wait_for_line("floated from", Duration::from_secs(10))
        .expect("float logged");
    assert!(
        line.contains("client1/")
            && line.contains("(client1) floated from ")
            && line.contains(&format!("to [AF_INET]{new}:")),
        "{line}"
    );
    let text = wait_file_contains(&status, &format!("client1,{new}:"), Duration::from_secs(10))
        .expect("status shows the new real address");
    assert!(!text.contains(&format!("client1,{old}:")), "{text}");
    assert_eq!(
        client.count_lines(INIT_COMPLETE),
        1,
        "the client did not reconnect: {}",
        tail(&client.log(), 20)
    );
    assert!(
        server.try_wait().expect("wait").is_none(),
        "daemon up (the float report is not a protocol violation)"
    );
    assert_eq!(server.count_lines("violated the IPC protocol"), 0);
}
