//! Management access control against a running daemon (privileged): real local users and
//! groups (created with useradd/groupadd under unique names, removed afterwards also on
//! failure) connect to the unix management socket as themselves (`setpriv` + `socat`), and
//! their roles come from `management-client-role` rules matched against the uid, the primary
//! group and the supplementary groups; `management-default-role` covers unlisted users.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bulwark_pki::{InitOptions, ServerConfOptions};
use bulwark_tests::*;

const SERVER_UP: Duration = Duration::from_secs(20);

/// Local users and groups created for the test; removed on drop.
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    fn group(&mut self, name: &str) {
        let st = Command::new("groupadd").arg(name).status().unwrap();
        assert!(st.success(), "groupadd {name}");
        self.groups.push(name.to_string());
    }

    /// A user with primary group `primary` and supplementary groups `extra`.
    fn user(&mut self, name: &str, primary: &str, extra: &[&str]) {
        let mut c = Command::new("useradd");
        c.args(["-M", "-N", "-s", "/usr/sbin/nologin", "-g", primary]);
        if !extra.is_empty() {
            c.args(["-G", &extra.join(",")]);
        }
        let st = c.arg(name).status().unwrap();
        assert!(st.success(), "useradd {name}");
        self.users.push(name.to_string());
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).status();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).status();
        }
    }
}

/// Sends `cmds` on the management socket as `user` (with its groups) and returns all output.
fn session(user: &str, sock: &Path, cmds: &[&str]) -> String {
    let mut input = String::new();
    for c in cmds {
        input.push_str(c);
        input.push('\n');
    }
    let mut args: Vec<String> = Vec::new();
    if user != "root" {
        args.extend(
            ["setpriv", "--reuid", user, "--regid", user, "--init-groups"]
                .iter()
                .map(|s| s.to_string()),
        );
        // --regid takes a group; the user's primary group is looked up by id below.
        let gid = String::from_utf8(
            Command::new("id")
                .args(["-g", user])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        args[4] = gid.trim().to_string();
    }
    args.extend(
        [
            "timeout",
            "10",
            "socat",
            "-t",
            "2",
            "-",
            &format!("UNIX-CONNECT:{}", sock.display()),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // Commands one at a time so that every reply arrives before the next line.
        for line in input.lines() {
            stdin.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn denied(out: &str, n: usize) -> bool {
    out.matches("ERROR: permission denied").count() == n
}

#[test]
fn roles_by_user_primary_and_supplementary_group() {
    let Some(p) = require_privileged("mgmt_access_roles") else {
        return;
    };
    let tag = std::process::id() % 100_000;
    let g_ops = format!("bwo{tag}");
    let g_auth = format!("bwa{tag}");
    let g_none = format!("bwn{tag}");
    let u_ops = format!("bwuo{tag}"); // primary group g_ops → operator
    let u_sup = format!("bwus{tag}"); // supplementary g_auth → auth
    let u_none = format!("bwun{tag}"); // no rule → default monitor
    let mut acc = Accounts {
        users: Vec::new(),
        groups: Vec::new(),
    };
    acc.group(&g_ops);
    acc.group(&g_auth);
    acc.group(&g_none);
    acc.user(&u_ops, &g_ops, &[]);
    acc.user(&u_sup, &g_none, &[&g_auth]);
    acc.user(&u_none, &g_none, &[]);

    let dir = TestDir::new("mgmt_access_roles").expect("test dir");
    let net = NetPair::new(&p, "ma").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let sockdir = tempfile::Builder::new()
        .prefix("bw-mgmt-access")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(sockdir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = sockdir.path().join("m.sock");
    let lines = [
        format!("management {} unix", sock.display()),
        format!("management-client-role operator group {g_ops}"),
        format!("management-client-role auth group {g_auth}"),
        "management-client-role admin user root".to_string(),
        "management-default-role monitor".to_string(),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start bulwark");
    server
        .wait_for_line(INIT_COMPLETE, SERVER_UP)
        .expect("bulwark up");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();

    let monitor_cmds = ["status", "state", "version", "pid", "log 1"];
    let operator_cmds = ["kill nosuchcn", "signal SIGUSR2"];
    let auth_cmds = ["client-auth-nt 99 1"];
    let admin_cmds = ["verb 4"];
    let all: Vec<&str> = monitor_cmds
        .iter()
        .chain(&operator_cmds)
        .chain(&auth_cmds)
        .chain(&admin_cmds)
        .copied()
        .collect();

    // Unlisted user: monitor only — 4 denials, monitor commands answered.
    let out = session(&u_none, &sock, &all);
    assert!(
        out.contains("OpenVPN CLIENT LIST") || out.contains("TITLE"),
        "{out}"
    );
    assert!(out.contains("pid="), "{out}");
    assert!(denied(&out, 4), "{u_none}: {out}");
    assert!(!out.contains("common name 'nosuchcn' not found"), "{out}");

    // Primary group → operator: kill ran (not found), signal SIGUSR2 ran; auth + admin denied.
    let out = session(&u_ops, &sock, &all);
    assert!(
        out.contains("common name 'nosuchcn' not found"),
        "{u_ops}: {out}"
    );
    assert!(denied(&out, 2), "{u_ops}: {out}");

    // Supplementary group → auth: client-auth-nt is dispatched (unknown client), verb denied.
    let out = session(&u_sup, &sock, &all);
    assert!(
        out.contains("common name 'nosuchcn' not found"),
        "{u_sup}: {out}"
    );
    assert!(denied(&out, 1), "{u_sup}: {out}");
    assert!(
        out.contains("ERROR: permission denied") && !out.contains("verb level changed"),
        "{out}"
    );

    // root → admin: nothing denied, verb changed.
    let out = session("root", &sock, &all);
    assert!(denied(&out, 0), "root: {out}");
    assert!(out.contains("SUCCESS: verb"), "root: {out}");

    server.stop().expect("stop bulwark");
    drop(acc);
}

#[test]
fn client_group_matches_supplementary_groups() {
    let Some(p) = require_privileged("mgmt_access_client_group") else {
        return;
    };
    let tag = std::process::id() % 100_000;
    let g_mgmt = format!("bwg{tag}");
    let g_other = format!("bwx{tag}");
    let u_in = format!("bwui{tag}"); // supplementary member of g_mgmt
    let u_out = format!("bwuz{tag}"); // not a member
    let mut acc = Accounts {
        users: Vec::new(),
        groups: Vec::new(),
    };
    acc.group(&g_mgmt);
    acc.group(&g_other);
    acc.user(&u_in, &g_other, &[&g_mgmt]);
    acc.user(&u_out, &g_other, &[]);

    let dir = TestDir::new("mgmt_access_client_group").expect("test dir");
    let net = NetPair::new(&p, "mc").expect("namespaces");
    let opts = ServerConfOptions {
        remote_host: net.server_addr.to_string(),
        ..Default::default()
    };
    let setup = prepare_server(&dir, &InitOptions::with_clients(1), opts).expect("server dir");
    let sockdir = tempfile::Builder::new()
        .prefix("bw-mgmt-group")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(sockdir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = sockdir.path().join("m.sock");
    let lines = [
        format!("management {} unix", sock.display()),
        format!("management-client-group {g_mgmt}"),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut server =
        start_bulwark_server(&dir, net.server_ns(), "bulwark", setup.server_conf(), &refs)
            .expect("start bulwark");
    server
        .wait_for_line(INIT_COMPLETE, SERVER_UP)
        .expect("bulwark up");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();

    // Supplementary member: admitted with OpenVPN's default role (admin).
    let out = session(&u_in, &sock, &["verb 4"]);
    assert!(
        out.contains(">INFO:OpenVPN Management Interface"),
        "{u_in}: {out}"
    );
    assert!(out.contains("SUCCESS: verb"), "{u_in}: {out}");

    // Non-member: closed without a byte, OpenVPN's log line, and the command never ran.
    let out = session(&u_out, &sock, &["verb 9"]);
    assert_eq!(out, "", "{u_out}");
    server
        .wait_for_line(
            "MANAGEMENT: unix domain socket client connection rejected -- GID of socket peer",
            Duration::from_secs(10),
        )
        .expect("rejection logged");
    assert!(server
        .log()
        .contains("as given by --management-client-group"));
    // The rejected `verb 9` did not run: the level is still the 4 set by the member.
    let out = session(&u_in, &sock, &["verb"]);
    assert!(out.contains("SUCCESS: verb=4"), "{out}");
    // root is not a member either.
    assert_eq!(session("root", &sock, &["verb"]), "");

    server.stop().expect("stop bulwark");
    drop(acc);
}
