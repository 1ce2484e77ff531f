//! The parent's client hooks: `client-config-dir` (+ `ccd-exclusive`, `disable`),
//! `auth-user-pass-verify`, `client-connect`, `client-disconnect`, `learn-address` and
//! `ifconfig-pool-persist`.
//!
//! A sandboxed process never executes anything: scripts are run here, by the parent, as the
//! unprivileged identity of the configured `user`/`group` (never root: std's `Command::uid`
//! also drops the supplementary groups), with an environment built from scratch in OpenVPN's
//! variable names (no inherited variable, a fixed `PATH`), `/` as working directory, stdin,
//! stdout and stderr on `/dev/null`, in their own process group, and a time limit
//! ([`SCRIPT_TIMEOUT`]) after which the whole group is killed and the script counts as failed.
//! Passwords reach `auth-user-pass-verify` only as OpenVPN does (`via-env` variable or a 0600
//! `via-file` removed afterwards) and never appear in a log line.
//!
//! CCD files are read by the parent (the directory may be root-only), size-capped, parsed with
//! the configuration crate's client-connect syntax. The persist file is read at start and
//! written (temporary file + rename) on every change of the address table, at most every
//! `ifconfig-pool-persist` interval, and at exit.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bulwark_config::Config;
use bulwark_ipc::msg::clients::{ClientAuthRequest, ClientOverrides};

use crate::router::ClientRecord;

/// How long a script may run before its process group is killed and it counts as failed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest CCD file or client-connect output read.
const MAX_CCD_BYTES: u64 = 64 * 1024;
/// `PATH` of every script.
const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of setting the hooks up.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// A script is configured but `script-security` forbids it.
    #[error("{directive}: WARNING: External program may not be called unless '--script-security 2' or higher is enabled. See --help text or man page for detailed info.")]
    ScriptSecurity {
        /// The directive.
        directive: &'static str,
    },
    /// A script command line cannot be split.
    #[error("{directive}: cannot parse the command line: {why}")]
    Command {
        /// The directive.
        directive: &'static str,
        /// Why.
        why: String,
    },
    /// The client-config-dir is not a directory.
    #[error("client-config-dir {0}: not a directory")]
    CcdDir(PathBuf),
    /// The persist file exists but cannot be read.
    #[error("ifconfig-pool-persist {path}: {source}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a client is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// For the server log.
    pub reason: String,
    /// For the client (`AUTH_FAILED,<reason>`).
    pub client_reason: Option<String>,
}

fn deny(reason: impl Into<String>) -> Deny {
    Deny {
        reason: reason.into(),
        client_reason: None,
    }
}

/// `via-env` or `via-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Env,
    File,
}

#[derive(Debug)]
struct Persist {
    path: PathBuf,
    /// 0 = read only.
    seconds: u32,
    table: Mutex<HashMap<String, (Ipv4Addr, Option<Ipv6Addr>)>>,
}

/// The configured hooks.
#[derive(Debug)]
pub struct ClientHooks {
    ccd_dir: Option<PathBuf>,
    ccd_exclusive: bool,
    auth_verify: Option<(Vec<String>, Via)>,
    client_connect: Option<Vec<String>>,
    client_disconnect: Option<Vec<String>>,
    learn_address: Option<Vec<String>>,
    uid: u32,
    gid: u32,
    tmp_dir: PathBuf,
    persist: Option<Persist>,
    daemon_env: Vec<(String, String)>,
    setenv: Vec<(String, String)>,
    timeout: Duration,
}

fn argv(directive: &'static str, cmd: &str) -> Result<Vec<String>, HooksError> {
    let v = bulwark_config::split_line(cmd).map_err(|e| HooksError::Command {
        directive,
        why: e.to_string(),
    })?;
    if v.is_empty() {
        return Err(HooksError::Command {
            directive,
            why: "empty".into(),
        });
    }
    Ok(v)
}

impl ClientHooks {
    /// Everything resolved and checked up front. `uid`/`gid`: the unprivileged identity scripts
    /// run as (`user`/`group`, else the sandbox user); `daemon_env`: the variables every
    /// environment ends with.
    pub fn from_config(
        cfg: &Config,
        uid: u32,
        gid: u32,
        daemon_env: Vec<(String, String)>,
    ) -> Result<Self, HooksError> {
        let s = &cfg.scripts;
        let need = |d: &'static str, present: bool| {
            if present && s.security < 2 {
                Err(HooksError::ScriptSecurity { directive: d })
            } else {
                Ok(())
            }
        };
        need("auth-user-pass-verify", s.auth_user_pass_verify.is_some())?;
        need("client-connect", s.client_connect.is_some())?;
        need("client-disconnect", s.client_disconnect.is_some())?;
        need("learn-address", s.learn_address.is_some())?;
        let auth_verify = match &s.auth_user_pass_verify {
            Some(a) => Some((
                argv("auth-user-pass-verify", &a.command)?,
                match a.method {
                    bulwark_config::PassMethod::ViaFile => Via::File,
                    bulwark_config::PassMethod::ViaEnv => Via::Env,
                },
            )),
            None => None,
        };
        let opt = |d, c: &Option<String>| c.as_deref().map(|c| argv(d, c)).transpose();
        if let Some(d) = &cfg.clients.config_dir {
            if !d.is_dir() {
                return Err(HooksError::CcdDir(d.clone()));
            }
        }
        let persist = match &cfg.clients.pool_persist {
            Some(p) => Some(Persist {
                table: Mutex::new(read_persist(&p.path)?),
                path: p.path.clone(),
                seconds: p.seconds,
            }),
            None => None,
        };
        let tmp_dir = s.tmp_dir.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
        Ok(ClientHooks {
            ccd_dir: cfg.clients.config_dir.clone(),
            ccd_exclusive: cfg.clients.ccd_exclusive,
            auth_verify,
            client_connect: opt("client-connect", &s.client_connect)?,
            client_disconnect: opt("client-disconnect", &s.client_disconnect)?,
            learn_address: opt("learn-address", &s.learn_address)?,
            uid,
            gid,
            tmp_dir,
            persist,
            daemon_env,
            setenv: s.setenv.clone(),
            timeout: SCRIPT_TIMEOUT,
        })
    }

    /// Whether a `client-connect` script is configured.
    pub fn has_client_connect(&self) -> bool {
        self.client_connect.is_some()
    }

    /// Whether the worker must ask before admitting clients.
    pub fn needs_defer(&self) -> bool {
        self.auth_verify.is_some()
            || self.client_connect.is_some()
            || self.ccd_dir.is_some()
            || self.persist.is_some()
    }

    fn client_env(&self, req: &ClientAuthRequest, script_type: &str) -> Vec<(String, String)> {
        let mut v = vec![("script_type".to_string(), script_type.to_string())];
        v.push(("common_name".into(), req.common_name.clone()));
        if let Some(u) = &req.username {
            v.push(("username".into(), u.clone()));
        }
        let ip = req.real_address.ip().to_string();
        let trusted = script_type != "user-pass-verify";
        let (ipn, portn) = if trusted {
            ("trusted_ip", "trusted_port")
        } else {
            ("untrusted_ip", "untrusted_port")
        };
        v.push((ipn.into(), ip));
        v.push((portn.into(), req.real_address.addr.port().to_string()));
        for l in &req.peer_info {
            if let Some((k, val)) = l.split_once('=') {
                v.push((k.to_string(), val.to_string()));
            }
        }
        v.extend(req.cert_env.iter().cloned());
        v.extend(self.daemon_env.iter().cloned());
        v.extend(self.setenv.iter().cloned());
        v
    }

    /// `auth-user-pass-verify`; `Err` = refuse.
    pub async fn authenticate(&self, req: &ClientAuthRequest) -> Result<(), Deny> {
        let Some((cmd, via)) = &self.auth_verify else {
            return Ok(());
        };
        let mut env = self.client_env(req, "user-pass-verify");
        let mut args = cmd.clone();
        let mut file = None;
        match via {
            Via::Env => {
                if let Some(p) = &req.password {
                    env.push(("password".into(), p.clone()));
                }
            }
            Via::File => {
                let f = self
                    .secret_file(&format!(
                        "{}\n{}\n",
                        req.username.as_deref().unwrap_or(""),
                        req.password.as_deref().unwrap_or("")
                    ))
                    .map_err(|e| {
                        deny(format!(
                            "auth-user-pass-verify: cannot write the via-file: {e}"
                        ))
                    })?;
                args.push(f.display().to_string());
                file = Some(f);
            }
        }
        let ok = self.run(&args, &env).await;
        if let Some(f) = file {
            let _ = std::fs::remove_file(f);
        }
        match ok {
            Ok(true) => {
                tracing::info!(
                    verb = 3u8,
                    "TLS: Username/Password authentication succeeded for username '{}'",
                    req.username.as_deref().unwrap_or("")
                );
                Ok(())
            }
            Ok(false) => {
                tracing::error!(
                    "{}/{} TLS Auth Error: Auth Username/Password verification failed for peer",
                    req.common_name,
                    req.real_address.addr
                );
                Err(deny("auth-user-pass-verify failed"))
            }
            Err(e) => {
                tracing::error!("WARNING: Failed running command ({}): {e}", cmd[0]);
                Err(deny("auth-user-pass-verify could not run"))
            }
        }
    }

    /// The CCD file (by common name; `DEFAULT` fallback), `ccd-exclusive`, `disable`, the
    /// client-connect script's output and the management `client-auth` lines, merged in that
    /// order (later settings win for addresses, lists accumulate), plus the persisted address.
    pub async fn connect(
        &self,
        req: &ClientAuthRequest,
        mgmt_lines: &[String],
    ) -> Result<ClientOverrides, Deny> {
        let mut o = ClientOverrides::default();
        if let Some(dir) = &self.ccd_dir {
            let own = ccd_name_ok(&req.common_name).then(|| dir.join(&req.common_name));
            let own_exists = own.as_ref().is_some_and(|p| p.is_file());
            if self.ccd_exclusive && !own_exists {
                let shown = own
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "[unusable name]".into());
                tracing::error!(
                    "TLS Auth Error: --client-config-dir authentication failed for common name '{}' file='{shown}'",
                    req.common_name
                );
                return Err(deny("client-config-dir authentication failed"));
            }
            let file = if own_exists {
                own
            } else {
                Some(dir.join("DEFAULT")).filter(|p| p.is_file())
            };
            if let Some(f) = file {
                let text = read_capped(&f).map_err(|e| {
                    tracing::error!("client-config-dir: cannot read {}: {e}", f.display());
                    deny("client-config-dir file unreadable")
                })?;
                merge_ccd(&mut o, &f, &text, &req.common_name)?;
            }
        }
        if let Some(cmd) = &self.client_connect {
            let out = self.secret_file("").map_err(|e| {
                deny(format!(
                    "client-connect: cannot create its output file: {e}"
                ))
            })?;
            let mut args = cmd.clone();
            args.push(out.display().to_string());
            let env = self.client_env(req, "client-connect");
            let r = self.run(&args, &env).await;
            let text = read_capped(&out).unwrap_or_default();
            let _ = std::fs::remove_file(&out);
            match r {
                Ok(true) => merge_ccd(&mut o, &out, &text, &req.common_name)?,
                Ok(false) => {
                    tracing::error!(
                        "{}/{} MULTI: client-connect script failed; client rejected",
                        req.common_name,
                        req.real_address.addr
                    );
                    return Err(deny("client-connect script failed"));
                }
                Err(e) => {
                    tracing::error!("WARNING: Failed running command ({}): {e}", cmd[0]);
                    return Err(deny("client-connect script could not run"));
                }
            }
        }
        if !mgmt_lines.is_empty() {
            let mut text = String::new();
            for l in mgmt_lines {
                text.push_str(l);
                text.push('\n');
            }
            merge_ccd(
                &mut o,
                Path::new("management client-auth"),
                text.as_bytes(),
                &req.common_name,
            )?;
        }
        if o.ifconfig_push.is_none() {
            if let Some(p) = &self.persist {
                if let Ok(t) = p.table.lock() {
                    if let Some((a, a6)) = t.get(&req.common_name) {
                        o.pool_hint = Some(*a);
                        o.pool_hint_v6 = *a6;
                    }
                }
            }
        }
        Ok(o)
    }

    /// learn-address `add` for each address, and the persisted address table.
    pub async fn established(&self, c: &ClientRecord) {
        if let Some(p) = &self.persist {
            if let Some(a) = c.vaddr {
                let changed = match p.table.lock() {
                    Ok(mut t) => {
                        t.insert(c.common_name.clone(), (a, c.vaddr6)) != Some((a, c.vaddr6))
                    }
                    Err(_) => false,
                };
                if changed && p.seconds > 0 {
                    self.flush_persist();
                }
            }
        }
        self.learn(c, "add").await;
    }

    /// client-disconnect (with byte counts and duration), learn-address `delete`.
    pub async fn disconnected(&self, c: &ClientRecord, bytes_in: u64, bytes_out: u64, secs: u64) {
        if let Some(cmd) = &self.client_disconnect {
            let mut env = vec![
                ("script_type".to_string(), "client-disconnect".to_string()),
                ("common_name".into(), c.common_name.clone()),
                ("bytes_received".into(), bytes_in.to_string()),
                ("bytes_sent".into(), bytes_out.to_string()),
                ("time_duration".into(), secs.to_string()),
                (
                    "trusted_port".into(),
                    c.real_address.addr.port().to_string(),
                ),
                ("trusted_ip".into(), c.real_address.ip().to_string()),
            ];
            if let Some(u) = &c.username {
                env.push(("username".into(), u.clone()));
            }
            if let Some(a) = c.vaddr {
                env.push(("ifconfig_pool_remote_ip".into(), a.to_string()));
            }
            env.extend(self.daemon_env.iter().cloned());
            env.extend(self.setenv.iter().cloned());
            match self.run(cmd, &env).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "WARNING: client-disconnect script failed for {}",
                    c.common_name
                ),
                Err(e) => tracing::error!("WARNING: Failed running command ({}): {e}", cmd[0]),
            }
        }
        self.learn(c, "delete").await;
    }

    async fn learn(&self, c: &ClientRecord, op: &str) {
        let Some(cmd) = &self.learn_address else {
            return;
        };
        let mut addrs: Vec<String> = Vec::new();
        addrs.extend(c.vaddr.map(|a| a.to_string()));
        addrs.extend(c.vaddr6.map(|a| a.to_string()));
        addrs.extend(c.iroutes.iter().map(|(n, b)| format!("{n}/{b}")));
        addrs.extend(c.iroutes_v6.iter().map(|(n, b)| format!("{n}/{b}")));
        for a in addrs {
            let mut args = cmd.clone();
            args.push(op.to_string());
            args.push(a.clone());
            if op != "delete" {
                args.push(c.common_name.clone());
            }
            let mut env = vec![
                ("script_type".to_string(), "learn-address".to_string()),
                ("common_name".into(), c.common_name.clone()),
            ];
            env.extend(self.daemon_env.iter().cloned());
            env.extend(self.setenv.iter().cloned());
            match self.run(&args, &env).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!("WARNING: learn-address script failed ({op} {a})"),
                Err(e) => tracing::error!("WARNING: Failed running command ({}): {e}", cmd[0]),
            }
        }
    }

    /// Writes the persist file now (temporary file + rename).
    pub fn flush_persist(&self) {
        let Some(p) = &self.persist else { return };
        if p.seconds == 0 {
            return;
        }
        let text = match p.table.lock() {
            Ok(t) => {
                let mut rows: Vec<_> = t.iter().collect();
                rows.sort();
                rows.into_iter()
                    .map(|(cn, (a, a6))| {
                        format!(
                            "{cn},{a},{}\n",
                            a6.map(|x| x.to_string()).unwrap_or_default()
                        )
                    })
                    .collect::<String>()
            }
            Err(_) => return,
        };
        if let Err(e) = crate::run::write_atomic(&p.path, text.as_bytes()) {
            tracing::error!(
                "ifconfig-pool-persist {}: cannot write: {e}",
                p.path.display()
            );
        }
    }

    /// A new 0600 file owned by the script identity in `tmp-dir`, holding `content`.
    fn secret_file(&self, content: &str) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| std::io::Error::other(e.to_string()))?;
        let path = self
            .tmp_dir
            .join(format!("bulwark_{}.tmp", hex::encode(rnd)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        f.write_all(content.as_bytes())?;
        if nix::unistd::geteuid().is_root() {
            nix::unistd::fchown(
                &f,
                Some(nix::unistd::Uid::from_raw(self.uid)),
                Some(nix::unistd::Gid::from_raw(self.gid)),
            )
            .map_err(std::io::Error::from)?;
        }
        Ok(path)
    }

    /// Runs a script: `Ok(true)` on exit status 0, `Ok(false)` on any other status or the
    /// timeout, `Err` when it cannot be started.
    async fn run(&self, args: &[String], env: &[(String, String)]) -> std::io::Result<bool> {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(&args[0]);
        c.args(&args[1..])
            .env_clear()
            .env("PATH", SCRIPT_PATH)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        if nix::unistd::geteuid().is_root() {
            // INVARIANT: never run a script as root; std drops supplementary groups with uid().
            c.uid(self.uid).gid(self.gid);
        }
        let mut child = c.spawn()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(st) = child.try_wait()? {
                tracing::info!(
                    verb = 3u8,
                    "AUDIT: ran {} as uid {} gid {}: {}",
                    args[0],
                    self.uid,
                    self.gid,
                    if st.success() {
                        "success".to_string()
                    } else {
                        format!("failed ({st})")
                    }
                );
                return Ok(st.success());
            }
            if tokio::time::Instant::now() >= deadline {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                tracing::error!(
                    "WARNING: script {} killed after {} s",
                    args[0],
                    self.timeout.as_secs()
                );
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether a common name can be a CCD file name (no path separator, not `.`/`..`, no NUL).
fn ccd_name_ok(cn: &str) -> bool {
    !cn.is_empty() && cn != "." && cn != ".." && !cn.contains('/') && !cn.contains('\0')
}

fn read_capped(p: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(p)?;
    let mut v = Vec::new();
    f.take(MAX_CCD_BYTES).read_to_end(&mut v)?;
    Ok(v)
}

/// Parses client-connect config text and merges it into `o`.
fn merge_ccd(o: &mut ClientOverrides, origin: &Path, text: &[u8], cn: &str) -> Result<(), Deny> {
    let (ccd, _w) = bulwark_config::parse_ccd(origin, text).map_err(|errs| {
        for e in &errs {
            tracing::error!("{e}");
        }
        deny(format!(
            "{}: invalid client configuration",
            origin.display()
        ))
    })?;
    if ccd.disable {
        tracing::error!("MULTI: client has been rejected due to 'disable' directive ({cn})");
        return Err(deny("disabled in client-config-dir"));
    }
    let n = crate::engine::overrides_from_ccd(&ccd);
    if n.ifconfig_push.is_some() {
        o.ifconfig_push = n.ifconfig_push;
    }
    if n.ifconfig_ipv6_push.is_some() {
        o.ifconfig_ipv6_push = n.ifconfig_ipv6_push;
    }
    o.iroutes.extend(n.iroutes);
    o.iroutes_v6.extend(n.iroutes_v6);
    o.push_reset |= n.push_reset;
    o.push_remove.extend(n.push_remove);
    o.push.extend(n.push);
    Ok(())
}

/// Reads an `ifconfig-pool-persist` file (`CN,IPv4[,IPv6]` per line; malformed lines are
/// skipped with a warning, as OpenVPN does). A missing file is an empty table.
fn read_persist(path: &Path) -> Result<HashMap<String, (Ipv4Addr, Option<Ipv6Addr>)>, HooksError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(HooksError::Persist {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok(parse_persist(&text))
}

fn parse_persist(text: &str) -> HashMap<String, (Ipv4Addr, Option<Ipv6Addr>)> {
    let mut m = HashMap::new();
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.trim().split(',').collect();
        if f.len() < 2 || f[0].is_empty() {
            continue;
        }
        match f[1].parse::<Ipv4Addr>() {
            Ok(a) => {
                let a6 = f.get(2).and_then(|s| s.parse::<Ipv6Addr>().ok());
                m.insert(f[0].to_string(), (a, a6));
            }
            Err(_) => tracing::warn!("ifconfig-pool-persist: line {} ignored: bad address", i + 1),
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_ipc::msg::mgmt::{RealAddr, TransportProto};
    use std::os::unix::fs::PermissionsExt;

    fn req() -> ClientAuthRequest {
        ClientAuthRequest {
            cid: 1,
            kid: 0,
            reauth: false,
            common_name: "alice".into(),
            username: Some("alice".into()),
            password: Some("s3cret pw".into()),
            real_address: RealAddr {
                proto: TransportProto::Udp,
                addr: "192.0.2.9:5000".parse().unwrap(),
            },
            peer_info: vec!["IV_VER=2.6.14".into()],
            cert_env: vec![("X509_0_CN".into(), "alice".into())],
        }
    }

    fn cfg(dir: &Path, extra: &str) -> Config {
        let text = format!(
            "dev tun\nserver 10.8.0.0 255.255.255.0\nca {d}/x\ncert {d}/x\nkey {d}/x\ndh none\n{extra}",
            d = dir.display()
        );
        let p = dir.join("server.conf");
        std::fs::write(&p, text).unwrap();
        bulwark_config::load_file(&p, &[]).unwrap().config
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn ids() -> (u32, u32) {
        if nix::unistd::geteuid().is_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        }
    }

    fn hooks(c: &Config, dir: &Path) -> ClientHooks {
        let (u, g) = ids();
        let mut h = ClientHooks::from_config(c, u, g, vec![("dev".into(), "tun0".into())]).unwrap();
        h.tmp_dir = dir.to_path_buf();
        h
    }

    fn world_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        // scripts run as nobody when the tests run as root
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        d
    }

    #[test]
    fn script_security_is_required() {
        let d = world_dir();
        let s = script(d.path(), "v.sh", "exit 0");
        // the configuration loader refuses it first (file:line); the hooks check again
        let p = d.path().join("server.conf");
        std::fs::write(
            &p,
            format!(
                "dev tun\nserver 10.8.0.0 255.255.255.0\nca /x\ncert /x\nkey /x\ndh none\nauth-user-pass-verify {} via-env\n",
                s.display()
            ),
        )
        .unwrap();
        let errs = bulwark_config::load_file(&p, &[]).unwrap_err();
        assert!(
            errs[0].to_string().contains("script-security 2"),
            "{errs:?}"
        );
        let mut c = cfg(
            d.path(),
            &format!(
                "script-security 2\nauth-user-pass-verify {} via-env\n",
                s.display()
            ),
        );
        c.scripts.security = 1;
        assert!(matches!(
            ClientHooks::from_config(&c, 1, 1, vec![]),
            Err(HooksError::ScriptSecurity { .. })
        ));
    }

    #[tokio::test]
    async fn auth_user_pass_verify_via_env_and_via_file() {
        let d = world_dir();
        let out = d.path().join("seen");
        let s = script(
            d.path(),
            "v.sh",
            &format!(
                "env > {o}.env; id -u > {o}.uid; [ -n \"$1\" ] && cat \"$1\" > {o}.file; [ \"$username\" = alice ] || [ \"$(head -1 \"$1\" 2>/dev/null)\" = alice ]",
                o = out.display()
            ),
        );
        let c = cfg(
            d.path(),
            &format!(
                "script-security 2\nauth-user-pass-verify {} via-env\n",
                s.display()
            ),
        );
        let h = hooks(&c, d.path());
        assert!(h.needs_defer());
        assert_eq!(h.authenticate(&req()).await, Ok(()));
        let env = std::fs::read_to_string(d.path().join("seen.env")).unwrap();
        assert!(env.contains("password=s3cret pw"), "{env}");
        assert!(env.contains("script_type=user-pass-verify"), "{env}");
        assert!(env.contains("untrusted_ip=192.0.2.9"), "{env}");
        assert!(env.contains("IV_VER=2.6.14"), "{env}");
        assert!(!env.contains("HOME="), "no inherited environment: {env}");
        let uid = std::fs::read_to_string(d.path().join("seen.uid")).unwrap();
        assert_eq!(uid.trim(), ids().0.to_string());
        let mut bad = req();
        bad.username = Some("mallory".into());
        assert!(h.authenticate(&bad).await.is_err());

        let c = cfg(
            d.path(),
            &format!(
                "script-security 2\nauth-user-pass-verify {} via-file\n",
                s.display()
            ),
        );
        let h = hooks(&c, d.path());
        assert_eq!(h.authenticate(&req()).await, Ok(()));
        let f = std::fs::read_to_string(d.path().join("seen.file")).unwrap();
        assert_eq!(f, "alice\ns3cret pw\n");
        let env = std::fs::read_to_string(d.path().join("seen.env")).unwrap();
        assert!(!env.contains("password="), "{env}");
        // the via-file is gone afterwards
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("bulwark_"))
            .collect();
        assert!(left.is_empty());
    }

    #[tokio::test]
    async fn ccd_default_exclusive_disable_and_client_connect() {
        let d = world_dir();
        let ccd = d.path().join("ccd");
        std::fs::create_dir(&ccd).unwrap();
        std::fs::write(
            ccd.join("alice"),
            "ifconfig-push 10.8.0.50 255.255.255.0\niroute 192.168.50.0 255.255.255.0\npush \"route 192.168.60.0 255.255.255.0\"\n",
        )
        .unwrap();
        std::fs::write(ccd.join("DEFAULT"), "push-reset\n").unwrap();
        std::fs::write(ccd.join("eve"), "disable\n").unwrap();
        let c = cfg(d.path(), &format!("client-config-dir {}\n", ccd.display()));
        let h = hooks(&c, d.path());
        let o = h.connect(&req(), &[]).await.unwrap();
        assert_eq!(
            o.ifconfig_push,
            Some((Ipv4Addr::new(10, 8, 0, 50), Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(o.iroutes, vec![(Ipv4Addr::new(192, 168, 50, 0), 24)]);
        assert_eq!(o.push, vec!["route 192.168.60.0 255.255.255.0".to_string()]);
        let mut bob = req();
        bob.common_name = "bob".into();
        assert!(
            h.connect(&bob, &[]).await.unwrap().push_reset,
            "DEFAULT applies"
        );
        let mut eve = req();
        eve.common_name = "eve".into();
        assert!(h.connect(&eve, &[]).await.is_err(), "disable");
        let mut dots = req();
        dots.common_name = "../alice".into();
        assert!(
            h.connect(&dots, &[]).await.unwrap().push_reset,
            "unusable name → DEFAULT"
        );

        let c = cfg(
            d.path(),
            &format!("client-config-dir {}\nccd-exclusive\n", ccd.display()),
        );
        let h = hooks(&c, d.path());
        assert!(
            h.connect(&bob, &[]).await.is_err(),
            "exclusive: DEFAULT does not count"
        );
        assert!(h.connect(&req(), &[]).await.is_ok());

        let s = script(
            d.path(),
            "cc.sh",
            "[ \"$script_type\" = client-connect ] || exit 1; echo 'push \"dhcp-option DNS 10.8.0.1\"' > \"$1\"",
        );
        let c = cfg(
            d.path(),
            &format!("script-security 2\nclient-connect {}\n", s.display()),
        );
        let h = hooks(&c, d.path());
        let o = h
            .connect(&req(), &["push \"echo mgmt\"".to_string()])
            .await
            .unwrap();
        assert_eq!(
            o.push,
            vec![
                "dhcp-option DNS 10.8.0.1".to_string(),
                "echo mgmt".to_string()
            ]
        );
    }

    #[tokio::test]
    async fn scripts_time_out() {
        let d = world_dir();
        let s = script(d.path(), "slow.sh", "sleep 60");
        let c = cfg(
            d.path(),
            &format!(
                "script-security 2\nauth-user-pass-verify {} via-env\n",
                s.display()
            ),
        );
        let h = hooks(&c, d.path());
        let mut h = h;
        h.timeout = Duration::from_secs(1);
        let started = std::time::Instant::now();
        assert!(
            h.authenticate(&req()).await.is_err(),
            "a timed-out script denies"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn persist_format() {
        let m = parse_persist("alice,10.8.0.5,\nbob,10.8.0.6,fd00::6\nbad line\ncarol,notanip\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m["alice"], (Ipv4Addr::new(10, 8, 0, 5), None));
        assert_eq!(m["bob"].1, Some("fd00::6".parse::<Ipv6Addr>().unwrap()));
        assert!(ccd_name_ok("client1"));
        assert!(!ccd_name_ok(".."));
        assert!(!ccd_name_ok("a/b"));
    }
}
