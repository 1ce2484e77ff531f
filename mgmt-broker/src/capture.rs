//! The naming convention of the OpenVPN 2.6.14 management captures (`shared/fixtures/openvpn-2.6`,
//! see its README): a capture's file name encodes the commands that were sent. Shared by the
//! in-process replays (`replay_tests.rs`) and the live replays of the test harness
//! (`bulwark_tests::replay`).

/// The commands a capture's file stem encodes: `_` is a space, `+` separates commands, `__`
/// starts a note; `kill_IP_PORT` is `kill IP:PORT`; `no-command…` and
/// `management-client-user-mismatch…` sent nothing.
pub fn commands_from_name(stem: &str) -> Vec<String> {
    let head = stem.split("__").next().unwrap_or("");
    if head == "no-command" || head == "management-client-user-mismatch" {
        return vec![];
    }
    head.split('+')
        .map(|c| {
            let parts: Vec<&str> = c.split('_').collect();
            if parts[0] == "kill" && parts.len() == 3 {
                format!("kill {}:{}", parts[1], parts[2])
            } else {
                parts.join(" ")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_commands() {
        assert_eq!(
            commands_from_name("kill_1.2.3.4_5000"),
            ["kill 1.2.3.4:5000"]
        );
        assert_eq!(commands_from_name("log_on_all+pid"), ["log on all", "pid"]);
        assert_eq!(
            commands_from_name("client-kill_1__with-unsolicited"),
            ["client-kill 1"]
        );
        assert!(commands_from_name("no-command__x").is_empty());
    }
}
