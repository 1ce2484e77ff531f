#![deny(unsafe_code)]
//! `bulwark-tests`: the out-of-process test harness shared by every `tests/tests/e2e_*.rs` file and by
//! `bench/`.
//!
//! Typical use:
//! ```no_run
//! use bulwark_tests::*;
//! use std::time::Duration;
//! let Some(p) = require_privileged("my_test") else { return };
//! let dir = TestDir::new("my_test").unwrap();        // logs dumped if the test panics
//! let net = NetPair::new(&p, "my").unwrap();         // two namespaces + veth, removed on drop
//! let opts = bulwark_pki::ServerConfOptions {
//!     remote_host: net.server_addr.to_string(),
//!     ..Default::default()
//! };
//! let setup = prepare_server(&dir, &bulwark_pki::InitOptions::default(), opts).unwrap();
//! let mut server =
//!     start_stock_server(&dir, net.server_ns(), "server", setup.server_conf(), &[]).unwrap();
//! server.wait_for_line(INIT_COMPLETE, Duration::from_secs(20)).unwrap();
//! let mut client = start_stock_client(&dir, net.client_ns(), "client1",
//!     setup.profile("client1").unwrap(), &ClientOverrides::default()).unwrap();
//! client.wait_for_line(INIT_COMPLETE, Duration::from_secs(30)).unwrap();
//! ping(net.client_ns(), "10.8.0.1", 3, Duration::from_secs(10)).unwrap();
//! ```
//! Declare `TestDir` first, then the `NetPair`, then processes: they drop in reverse order
//! (processes stopped, namespaces deleted, logs dumped on failure).
//!
//! Modules: [`netns`] (privilege gate, namespaces, ping), [`process`] (test dirs, processes, commands
//! with timeouts), [`bins`] (workspace binaries), [`openvpn`] (stock OpenVPN and Bulwark runners),
//! [`mgmt`] (a management client), [`replay`] (normalised replay of the OpenVPN management captures).

pub mod bins;
pub mod mgmt;
pub mod netns;
pub mod openvpn;
pub mod process;
pub mod replay;

pub use bins::{bin_dir, bulwark_bin, mgmt_bin, worker_bin, workspace_bin, BinError};
pub use mgmt::MgmtClient;
pub use netns::{
    in_netns, ping, require_privileged, NetPair, Netns, NetnsError, Privileged, CLIENT_IF,
    SERVER_IF,
};
pub use openvpn::{
    client_config, connect_client1, genkey_tls_crypt_v2, prepare_server,
    send_unauthenticated_resets, start_bulwark_server, start_stock_client, start_stock_server,
    ClientOverrides, OpenvpnError, ServerSetup, INIT_COMPLETE, OPENVPN,
};
pub use process::{
    child_named, children_of, killed_by, mgmt_pid, read_file, run, run_ok, tail,
    wait_file_contains, Proc, ProcError, TestDir,
};
