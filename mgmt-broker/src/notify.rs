//! Real-time notification encoders (`>LOG:`, `>STATE:`, `>ECHO:`, `>HOLD:`, `>CLIENT:...`,
//! `>NOTIFY:`, `>FATAL:`, `>BYTECOUNT_CLI:`), byte-compatible with OpenVPN 2.6.14.
//!
//! [`render_event`] appends the lines a given session must see for one [`MgmtEvent`], taking
//! into account that session's real-time flags and role ([`SessionView`]) and the process-wide
//! `env-filter` level. Every line ends in CRLF.
//!
//! `>CLIENT:ENV` blocks ([`client_block`]): CONNECT/REAUTH/ESTABLISHED/CR_RESPONSE start with the
//! synthetic `n_clients=` (only at env-filter 0); at levels ≥ 1 CONNECT/REAUTH/CR_RESPONSE print
//! the raw peer-info lines first; variables are then filtered by level (0 all; 1 `X509_*` plus
//! the level-2 list; 2 the fixed prefix list; ≥ 3 none) and — Bulwark — secrets are removed for
//! every role but `auth`. The block always ends with `>CLIENT:ENV,END`.

use crate::access::{is_secret_env, Role};
use crate::model::{ClientEventKind, EnvBlock, MgmtEvent};

/// The per-session facts that decide what a notification looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    /// `log on`.
    pub log_on: bool,
    /// `state on`.
    pub state_on: bool,
    /// `echo on`.
    pub echo_on: bool,
    /// Role of the connection.
    pub role: Role,
}

/// Append one CRLF-terminated line.
pub fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The `>HOLD:` prompt line (without CRLF).
pub fn hold_line(wait_secs: u64) -> String {
    format!(">HOLD:Waiting for hold release:{wait_secs}")
}

const LEVEL2_PREFIXES: &[&str] = &[
    "username=",
    "password=",
    "X509_0_CN=",
    "tls_serial_",
    "untrusted_ip=",
    "ifconfig_local=",
    "ifconfig_netmask=",
    "daemon_start_time=",
    "daemon_pid=",
    "dev=",
    "ifconfig_pool_remote_ip=",
    "ifconfig_pool_netmask=",
    "time_duration=",
    "bytes_sent=",
    "bytes_received=",
    "session_id=",
    "session_state=",
];

fn passes_filter(level: i32, name: &str, value: &str) -> bool {
    if level <= 0 {
        return true;
    }
    if level >= 3 {
        return false;
    }
    let nv = format!("{name}={value}");
    let listed = LEVEL2_PREFIXES.iter().any(|p| nv.starts_with(p));
    if level == 1 {
        listed || name.starts_with("X509_")
    } else {
        listed
    }
}

/// Append a complete `>CLIENT:` block (header, ENV lines, `>CLIENT:ENV,END`).
pub fn client_block(
    out: &mut Vec<u8>,
    cid: u64,
    kind: &ClientEventKind,
    n_clients: u32,
    env: &EnvBlock,
    env_filter: i32,
    role: Role,
) {
    let header = match kind {
        ClientEventKind::Connect { kid } => format!(">CLIENT:CONNECT,{cid},{kid}"),
        ClientEventKind::Reauth { kid } => format!(">CLIENT:REAUTH,{cid},{kid}"),
        ClientEventKind::Established => format!(">CLIENT:ESTABLISHED,{cid}"),
        ClientEventKind::Disconnect => format!(">CLIENT:DISCONNECT,{cid}"),
        ClientEventKind::CrResponse { kid, response } => {
            format!(">CLIENT:CR_RESPONSE,{cid},{kid},{response}")
        }
    };
    push_line(out, &header);
    let asks = matches!(
        kind,
        ClientEventKind::Connect { .. }
            | ClientEventKind::Reauth { .. }
            | ClientEventKind::CrResponse { .. }
    );
    if env_filter >= 1 && asks {
        for pi in &env.peer_info {
            push_line(out, &format!(">CLIENT:ENV,{pi}"));
        }
    }
    if env_filter <= 0 && !matches!(kind, ClientEventKind::Disconnect) {
        push_line(out, &format!(">CLIENT:ENV,n_clients={n_clients}"));
    }
    for (k, v) in &env.vars {
        if !role.sees_secrets() && is_secret_env(k) {
            continue;
        }
        if passes_filter(env_filter, k, v) {
            push_line(out, &format!(">CLIENT:ENV,{k}={v}"));
        }
    }
    push_line(out, ">CLIENT:ENV,END");
}

/// What the session must do after rendering an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEvent {
    /// Keep going.
    Continue,
    /// Close the session (after `>FATAL:`).
    Close,
}

/// Append the lines `view` must see for `ev`.
pub fn render_event(
    ev: &MgmtEvent,
    view: &SessionView,
    env_filter: i32,
    out: &mut Vec<u8>,
) -> AfterEvent {
    match ev {
        MgmtEvent::Log(r) => {
            if view.log_on {
                push_line(out, &format!(">LOG:{}", r.line()));
            }
        }
        MgmtEvent::State(s) => {
            if view.state_on {
                push_line(out, &format!(">STATE:{}", s.line()));
            }
        }
        MgmtEvent::Echo(e) => {
            if view.echo_on {
                push_line(out, &format!(">ECHO:{}", e.line()));
            }
        }
        MgmtEvent::Hold { wait_secs } => push_line(out, &hold_line(*wait_secs)),
        MgmtEvent::HoldReleased => {}
        MgmtEvent::Client {
            cid,
            kind,
            n_clients,
            env,
        } => {
            let asks = matches!(
                kind,
                ClientEventKind::Connect { .. }
                    | ClientEventKind::Reauth { .. }
                    | ClientEventKind::CrResponse { .. }
            );
            if !asks || view.role.receives_auth_requests() {
                client_block(out, *cid, kind, *n_clients, env, env_filter, view.role);
            }
        }
        MgmtEvent::ClientAddress { cid, addr, primary } => push_line(
            out,
            &format!(
                ">CLIENT:ADDRESS,{cid},{addr},{}",
                if *primary { 1 } else { 0 }
            ),
        ),
        MgmtEvent::Notify(t) => push_line(out, &format!(">NOTIFY:{t}")),
        MgmtEvent::Fatal(t) => {
            push_line(out, &format!(">FATAL:{t}"));
            return AfterEvent::Close;
        }
    }
    AfterEvent::Continue
}

/// `>BYTECOUNT_CLI:<cid>,<in>,<out>`.
pub fn bytecount_cli_line(cid: u64, bytes_in: u64, bytes_out: u64) -> String {
    format!(">BYTECOUNT_CLI:{cid},{bytes_in},{bytes_out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvBlock {
        EnvBlock {
            vars: vec![
                ("password".into(), "s3cret pass".into()),
                ("untrusted_ip".into(), "172.31.254.2".into()),
                ("common_name".into(), "client2".into()),
                ("IV_VER".into(), "2.6.14".into()),
                ("X509_1_CN".into(), "TestCA".into()),
                ("dev".into(), "tun0".into()),
                ("dev_type".into(), "tun".into()),
            ],
            peer_info: vec!["IV_VER=2.6.14".into()],
        }
    }

    fn render(kind: ClientEventKind, level: i32, role: Role) -> String {
        let mut out = Vec::new();
        client_block(&mut out, 0, &kind, 0, &env(), level, role);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn env_filter_levels() {
        let l0 = render(ClientEventKind::Connect { kid: 1 }, 0, Role::Auth);
        assert!(l0.starts_with(">CLIENT:CONNECT,0,1\r\n>CLIENT:ENV,n_clients=0\r\n>CLIENT:ENV,password=s3cret pass\r\n"));
        assert!(l0.ends_with(">CLIENT:ENV,dev_type=tun\r\n>CLIENT:ENV,END\r\n"));
        let l1 = render(ClientEventKind::Connect { kid: 1 }, 1, Role::Auth);
        assert_eq!(l1, ">CLIENT:CONNECT,0,1\r\n>CLIENT:ENV,IV_VER=2.6.14\r\n>CLIENT:ENV,password=s3cret pass\r\n>CLIENT:ENV,untrusted_ip=172.31.254.2\r\n>CLIENT:ENV,X509_1_CN=TestCA\r\n>CLIENT:ENV,dev=tun0\r\n>CLIENT:ENV,END\r\n");
        let l2 = render(ClientEventKind::Established, 2, Role::Auth);
        assert_eq!(l2, ">CLIENT:ESTABLISHED,0\r\n>CLIENT:ENV,password=s3cret pass\r\n>CLIENT:ENV,untrusted_ip=172.31.254.2\r\n>CLIENT:ENV,dev=tun0\r\n>CLIENT:ENV,END\r\n");
        let l3 = render(ClientEventKind::Disconnect, 3, Role::Auth);
        assert_eq!(l3, ">CLIENT:DISCONNECT,0\r\n>CLIENT:ENV,END\r\n");
    }

    #[test]
    fn secrets_redacted_for_non_auth_roles() {
        for role in [Role::Monitor, Role::Operator, Role::Admin] {
            let s = render(ClientEventKind::Established, 0, role);
            assert!(!s.contains("password"), "{role:?}");
            assert!(s.contains("common_name=client2"));
        }
    }

    #[test]
    fn auth_requests_only_to_answering_roles() {
        let ev = MgmtEvent::Client {
            cid: 0,
            kind: ClientEventKind::Connect { kid: 1 },
            n_clients: 0,
            env: env(),
        };
        let mut view = SessionView {
            log_on: false,
            state_on: false,
            echo_on: false,
            role: Role::Monitor,
        };
        let mut out = Vec::new();
        render_event(&ev, &view, 0, &mut out);
        assert!(out.is_empty());
        view.role = Role::Admin;
        render_event(&ev, &view, 0, &mut out);
        assert!(!out.is_empty());
    }
}
