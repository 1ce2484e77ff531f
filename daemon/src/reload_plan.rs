//! What a SIGHUP reload does with each changed option: the pure decision, separate from the
//! parent's supervisor that carries it out (`run.rs::reload`).
//!
//! [`plan`] compares the running configuration with the newly loaded one and sorts every change
//! into one of three classes (the table in `docs/reload.md` lists them option by option):
//!
//! - **live**: applied to the running processes, nobody is disconnected — verbosity, the push list
//!   (for clients that connect from now on), the CRL and the certificates/CA/TLS options (for
//!   handshakes from now on, renegotiations included, when the key algorithm is unchanged),
//!   per-connection files and scripts (CCD, client-connect, ... are read at each connection);
//! - **worker restart**: the data channel or the control-channel wrapping changed, which running
//!   sessions cannot adopt; the worker is restarted with the new settings and clients reconnect,
//!   as with OpenVPN's SIGHUP;
//! - **daemon restart only**: options bound to what the parent created at start-up (sockets, TUN
//!   device, addresses and routes, management listeners, status files, identities, the log path);
//!   each such change is reported and the running value stays until bulwark itself is restarted.
//!
//! The decision depends only on its inputs: no I/O, no clock.

use bulwark_config::Config;
use bulwark_ipc::msg::engine::EngineConfig;
use rustls::SignatureAlgorithm;

/// A change that applies without disconnecting anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveChange {
    /// `verb`
    Verb,
    /// `push` / `push-reset` lines of the configuration file
    Push,
    /// `crl-verify` (only the CRL changed)
    Crl,
    /// `cert`/`key`/`ca`/`crl-verify`/`tls-*` options: a new TLS server for new handshakes
    Tls,
    /// management access rules (`management-client-user/-group`, `management-client-role`,
    /// `management-default-role`, the password file): new management connections use them
    ManagementAccess,
    /// the interval of `status` / `status-json`
    StatusInterval,
}

/// What the reload does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// Applied to the running processes, in this order.
    pub live: Vec<LiveChange>,
    /// Engine settings that need a new worker (clients reconnect); empty: no worker restart.
    pub worker_restart: Vec<&'static str>,
    /// Start-up bound options that changed: reported, their running value stays.
    pub restart_only: Vec<&'static str>,
}

/// Sorts the changes between the running (`old`) and the reloaded (`new`) configuration.
/// `old_key`/`new_key` are the algorithms of the running and the reloaded private key: a
/// certificate with a key of another algorithm cannot be swapped under running sessions (the
/// worker's signer is set up for one algorithm), so that is a worker restart.
pub fn plan(
    old: &Config,
    new: &Config,
    old_engine: &EngineConfig,
    new_engine: &EngineConfig,
    old_key: SignatureAlgorithm,
    new_key: SignatureAlgorithm,
) -> ReloadPlan {
    let mut p = ReloadPlan {
        restart_only: restart_only_changes(old, new),
        ..ReloadPlan::default()
    };
    if old.logging.verb != new.logging.verb {
        p.live.push(LiveChange::Verb);
    }
    // Management access and status intervals live in the broker: independent of the worker.
    if !p.restart_only.contains(&MANAGEMENT) && management_access(old) != management_access(new) {
        p.live.push(LiveChange::ManagementAccess);
    }
    if !p.restart_only.contains(&STATUS) && status_intervals(old) != status_intervals(new) {
        p.live.push(LiveChange::StatusInterval);
    }
    // The engine's share, field by field. Start-up-bound fields (transport, pool, defer_auth)
    // are reported above and keep their running value; they are not compared here.
    let (a, b) = (old_engine, new_engine);
    let mut restart = |changed: bool, what: &'static str| {
        if changed {
            p.worker_restart.push(what);
        }
    };
    restart(a.wrap != b.wrap, "tls-auth/tls-crypt/tls-crypt-v2");
    restart(
        a.data_ciphers != b.data_ciphers
            || a.data_ciphers_fallback != b.data_ciphers_fallback
            || a.auth != b.auth,
        "data-ciphers/data-ciphers-fallback/auth",
    );
    restart(
        a.ping != b.ping || a.ping_restart != b.ping_restart,
        "keepalive/ping/ping-restart",
    );
    restart(
        a.reneg_sec != b.reneg_sec
            || a.reneg_bytes != b.reneg_bytes
            || a.reneg_pkts != b.reneg_pkts,
        "reneg-sec/reneg-bytes/reneg-pkts",
    );
    restart(
        a.hand_window != b.hand_window
            || a.tran_window != b.tran_window
            || a.tls_timeout != b.tls_timeout,
        "hand-window/tran-window/tls-timeout",
    );
    restart(
        a.replay_window != b.replay_window || a.mute_replay_warnings != b.mute_replay_warnings,
        "replay-window/mute-replay-warnings",
    );
    restart(
        a.client_to_client != b.client_to_client
            || a.duplicate_cn != b.duplicate_cn
            || a.max_clients != b.max_clients
            || a.username_as_common_name != b.username_as_common_name
            || a.explicit_exit_notify != b.explicit_exit_notify
            || a.connect_freq != b.connect_freq
            || a.connect_freq_initial != b.connect_freq_initial
            || a.inactive != b.inactive,
        "client-to-client/duplicate-cn/max-clients/username-as-common-name/explicit-exit-notify/connect-freq/connect-freq-initial/inactive",
    );
    restart(
        a.tun_mtu != b.tun_mtu || a.tls_mtu != b.tls_mtu,
        "tun-mtu/tls-mtu",
    );
    restart(a.coalesce_usecs != b.coalesce_usecs, "coalesce-usecs");
    restart(
        a.options_string != b.options_string,
        "the OCC options string",
    );
    let tls_changed = a.tls != b.tls;
    let only_crl = {
        let (mut x, mut y) = (a.tls.clone(), b.tls.clone());
        x.crl = None;
        y.crl = None;
        x == y
    };
    restart(
        tls_changed && old_key != new_key,
        "the private key's algorithm (key/cert)",
    );
    if p.worker_restart.is_empty() {
        if a.push != b.push {
            p.live.push(LiveChange::Push);
        }
        if tls_changed {
            // Removing a CRL altogether also goes through the TLS server swap.
            if only_crl && b.tls.crl.is_some() {
                p.live.push(LiveChange::Crl);
            } else {
                p.live.push(LiveChange::Tls);
            }
        }
    }
    p
}

const MANAGEMENT: &str = "management (listeners and their options other than access rules)";
const STATUS: &str = "status/status-json (path)/status-version/status-file-mode/status-file-group";

/// The management configuration without what a reload applies live (access rules, password
/// file): the listeners and the options bound to them.
fn management_listeners(c: &Config) -> (Option<bulwark_config::Management>, impl PartialEq) {
    let m = c.management.clone().map(|mut m| {
        m.client_user = None;
        m.client_group = None;
        m.password_file = None;
        m
    });
    let a = &c.management_access;
    (
        m,
        (a.max_clients, a.audit.clone(), a.monitor_socket.clone()),
    )
}

/// The access rules a reload applies to new management connections.
fn management_access(c: &Config) -> impl PartialEq {
    let m = c.management.as_ref();
    (
        m.and_then(|m| m.client_user.clone()),
        m.and_then(|m| m.client_group.clone()),
        m.and_then(|m| m.password_file.clone()),
        c.management_access.client_roles.clone(),
        c.management_access.default_role.clone(),
    )
}

fn status_files(c: &Config) -> impl PartialEq {
    (
        c.status.as_ref().map(|s| s.path.clone()),
        c.status_json.as_ref().map(|s| s.path.clone()),
    )
}

fn status_intervals(c: &Config) -> impl PartialEq {
    (
        c.status.as_ref().map(|s| s.interval),
        c.status_json.as_ref().map(|s| s.interval),
    )
}

/// Options bound to what the parent created at start-up: reported by a reload, applied by a
/// restart of bulwark.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |changed: bool, what: &'static str| {
        if changed {
            v.push(what);
        }
    };
    // the engine's share of `Transport` (coalesce-usecs) is a worker restart, compared below
    let bound = |c: &Config| bulwark_config::Transport {
        coalesce_usecs: None,
        data_threads: None,
        ..c.transport.clone()
    };
    check(bound(old) != bound(new), "proto/port/local");
    check(
        old.transport.data_threads != new.transport.data_threads,
        "data-threads",
    );
    check(old.device != new.device, "dev/tun-mtu/txqueuelen");
    check(old.topology != new.topology, "topology");
    check(
        old.server_v4 != new.server_v4
            || old.server_v6 != new.server_v6
            || old.ifconfig_v4 != new.ifconfig_v4
            || old.ifconfig_v6 != new.ifconfig_v6
            || old.pool_v4 != new.pool_v4
            || old.pool_v6 != new.pool_v6,
        "server/server-ipv6/ifconfig-pool",
    );
    check(
        old.routes != new.routes || old.routes_v6 != new.routes_v6,
        "route/route-ipv6",
    );
    check(
        management_listeners(old) != management_listeners(new),
        MANAGEMENT,
    );
    check(
        status_files(old) != status_files(new)
            || old.status_version != new.status_version
            || old.status_file_mode != new.status_file_mode
            || old.status_file_group != new.status_file_group,
        STATUS,
    );
    check(old.privileges != new.privileges, "user/group");
    check(
        old.logging.file != new.logging.file
            || old.logging.log_file_mode != new.logging.log_file_mode
            || old.logging.log_file_group != new.logging.log_file_group,
        "log/log-append/log-file-mode/log-file-group",
    );
    check(
        old.logging.syslog != new.logging.syslog
            || old.logging.daemon != new.logging.daemon
            || old.logging.errors_to_stderr != new.logging.errors_to_stderr
            || old.logging.suppress_timestamps != new.logging.suppress_timestamps
            || old.logging.machine_readable_output != new.logging.machine_readable_output,
        "syslog/daemon/errors-to-stderr/suppress-timestamps/machine-readable-output",
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text =
            format!("dev tun\nserver 10.8.0.0 255.255.255.0\nca /ca\ncert /c\nkey /k\n{extra}");
        bulwark_config::load_str("t", &text, "/").unwrap().config
    }

    fn engine() -> EngineConfig {
        EngineConfig::minimal_for_tests()
    }

    const RSA: SignatureAlgorithm = SignatureAlgorithm::RSA;
    const EC: SignatureAlgorithm = SignatureAlgorithm::ECDSA;

    #[test]
    fn nothing_changed_nothing_happens() {
        let p = plan(&cfg(""), &cfg(""), &engine(), &engine(), RSA, RSA);
        assert_eq!(p, ReloadPlan::default());
    }

    #[test]
    fn verb_and_push_apply_live() {
        let mut e2 = engine();
        e2.push.push("route 10.9.0.0 255.255.255.0".into());
        let p = plan(&cfg("verb 3"), &cfg("verb 4"), &engine(), &e2, RSA, RSA);
        assert_eq!(p.live, vec![LiveChange::Verb, LiveChange::Push]);
        assert!(
            p.worker_restart.is_empty() && p.restart_only.is_empty(),
            "{p:?}"
        );
    }

    #[test]
    fn crl_alone_is_a_crl_update_and_certificates_swap_the_tls_server() {
        let mut with_crl = engine();
        with_crl.tls.crl = Some(b"-----BEGIN X509 CRL-----".to_vec());
        let p = plan(&cfg(""), &cfg(""), &engine(), &with_crl, RSA, RSA);
        assert_eq!(p.live, vec![LiveChange::Crl]);
        // removing the CRL goes through the TLS server swap
        let p = plan(&cfg(""), &cfg(""), &with_crl, &engine(), RSA, RSA);
        assert_eq!(p.live, vec![LiveChange::Tls]);
        let mut new_cert = engine();
        new_cert.tls.cert_chain_pem = b"another chain".to_vec();
        new_cert.tls.ca_pem = b"another CA".to_vec();
        let p = plan(&cfg(""), &cfg(""), &engine(), &new_cert, RSA, RSA);
        assert_eq!(p.live, vec![LiveChange::Tls]);
        assert!(p.worker_restart.is_empty());
    }

    #[test]
    fn a_key_of_another_algorithm_restarts_the_worker() {
        let mut new_cert = engine();
        new_cert.tls.cert_chain_pem = b"an EC chain".to_vec();
        let p = plan(&cfg(""), &cfg(""), &engine(), &new_cert, RSA, EC);
        assert_eq!(
            p.worker_restart,
            vec!["the private key's algorithm (key/cert)"]
        );
        assert!(p.live.is_empty(), "{p:?}");
    }

    #[test]
    fn data_channel_changes_restart_the_worker_which_also_carries_the_push_list() {
        let mut e2 = engine();
        e2.data_ciphers = vec!["AES-128-GCM".into()];
        e2.push.push("route 10.9.0.0 255.255.255.0".into());
        e2.ping = Some(5);
        let p = plan(&cfg(""), &cfg(""), &engine(), &e2, RSA, RSA);
        assert_eq!(
            p.worker_restart,
            vec![
                "data-ciphers/data-ciphers-fallback/auth",
                "keepalive/ping/ping-restart"
            ]
        );
        assert!(
            p.live.is_empty(),
            "the restarted worker gets the push list: {p:?}"
        );
    }

    #[test]
    fn start_up_bound_options_are_reported_not_applied() {
        let p = plan(
            &cfg("port 1194\nverb 3"),
            &cfg("port 1195\nroute 10.1.0.0 255.255.0.0\nmanagement /run/m.sock unix\nverb 3"),
            &engine(),
            &engine(),
            RSA,
            RSA,
        );
        assert_eq!(
            p.restart_only,
            vec!["proto/port/local", "route/route-ipv6", MANAGEMENT]
        );
        assert!(p.live.is_empty() && p.worker_restart.is_empty(), "{p:?}");
    }

    #[test]
    fn transport_tuning_is_classed_by_what_it_needs() {
        // coalesce-usecs: the worker's; data-threads: the sockets and TUN queues the parent made
        let p = plan(
            &cfg("coalesce-usecs 50\nverb 3"),
            &cfg("coalesce-usecs 20\ndata-threads 1\nverb 3"),
            &engine(),
            &EngineConfig {
                coalesce_usecs: 20,
                ..engine()
            },
            RSA,
            RSA,
        );
        assert_eq!(p.restart_only, vec!["data-threads"], "{p:?}");
        assert_eq!(p.worker_restart, vec!["coalesce-usecs"], "{p:?}");
    }

    #[test]
    fn management_access_rules_and_status_intervals_apply_live() {
        let base = "management /run/m.sock unix\nstatus /run/s.log 60\n";
        let p = plan(
            &cfg(&format!("{base}management-default-role monitor")),
            &cfg("management /run/m.sock unix\nstatus /run/s.log 5\nmanagement-default-role admin\nmanagement-client-role operator user nobody"),
            &engine(),
            &engine(),
            RSA,
            RSA,
        );
        assert_eq!(
            p.live,
            vec![LiveChange::ManagementAccess, LiveChange::StatusInterval]
        );
        assert!(
            p.restart_only.is_empty() && p.worker_restart.is_empty(),
            "{p:?}"
        );
        // ... and they still apply when the worker restarts for another change
        let mut e2 = engine();
        e2.auth = "SHA512".into();
        let p = plan(
            &cfg(base),
            &cfg("management /run/m.sock unix\nstatus /run/s.log 5\n"),
            &engine(),
            &e2,
            RSA,
            RSA,
        );
        assert_eq!(p.live, vec![LiveChange::StatusInterval]);
        assert_eq!(p.worker_restart.len(), 1);
    }

    #[test]
    fn a_new_listener_or_status_path_is_start_up_bound_and_carries_nothing_live() {
        let p = plan(
            &cfg("management /run/m.sock unix\nstatus /run/s.log 60\n"),
            &cfg("management 127.0.0.1 7505\nstatus /run/other.log 5\nmanagement-default-role monitor\n"),
            &engine(),
            &engine(),
            RSA,
            RSA,
        );
        assert_eq!(p.restart_only, vec![MANAGEMENT, STATUS]);
        assert!(p.live.is_empty(), "{p:?}");
    }
}
