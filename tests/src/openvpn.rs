//! Runners for the stock OpenVPN 2.6 (client and reference server) and for the Bulwark daemon.
//!
//! API:
//! - [`prepare_server`]: generate a PKI with `bulwark_pki` and write the server directory into the
//!   test directory (`DIR/server/`); for tls-crypt-v2 without supplied keys it creates them with the
//!   stock `openvpn --genkey tls-crypt-v2-server/-client` ([`genkey_tls_crypt_v2`], tests only).
//! - [`client_config`]: a client profile with [`ClientOverrides`] applied (replace `remote`/`proto`/
//!   `cipher`/`data-ciphers`, drop directives, append lines such as `comp-lzo` or `reneg-sec 10`).
//! - [`start_stock_client`], [`start_stock_server`], [`start_bulwark_server`]: spawn inside a
//!   namespace with logs captured by the [`TestDir`]; wait with [`Proc::wait_for_line`] on
//!   [`INIT_COMPLETE`].
//!
//! Invariant: generated configs that contain private keys are written 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_pki::{
    generate, write_dir, InitOptions, Pki, PkiError, Proto, ServerConfOptions, TlsCryptV2Keys,
    WrapMode, WrittenDir,
};

use crate::bins::{bulwark_bin, BinError};
use crate::process::{run_ok, Proc, ProcError, TestDir};

/// The stock OpenVPN binary (the interop judge).
pub const OPENVPN: &str = "/usr/sbin/openvpn";
/// The line both stock client and server print once up.
pub const INIT_COMPLETE: &str = "Initialization Sequence Completed";

/// Errors of the OpenVPN runners.
#[derive(Debug, thiserror::Error)]
pub enum OpenvpnError {
    /// PKI generation or directory writing failed.
    #[error("pki: {0}")]
    Pki(#[from] PkiError),
    /// A process or command failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A workspace binary is missing.
    #[error(transparent)]
    Bin(#[from] BinError),
    /// Reading or writing a config file failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// No profile for this client.
    #[error("no client profile for {0:?}")]
    NoProfile(String),
}

fn read(path: &Path) -> Result<String, OpenvpnError> {
    fs::read_to_string(path).map_err(|source| OpenvpnError::File {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, text: &str) -> Result<(), OpenvpnError> {
    let err = |source| OpenvpnError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// A generated server directory and its PKI.
#[derive(Debug)]
pub struct ServerSetup {
    /// The PKI (CA, server, clients, CRL, static key).
    pub pki: Pki,
    /// What was written where.
    pub written: WrittenDir,
    /// The options used (including generated tls-crypt-v2 keys).
    pub opts: ServerConfOptions,
}

impl ServerSetup {
    /// Path of `server.conf`.
    pub fn server_conf(&self) -> &Path {
        &self.written.server_conf
    }

    /// Path of a client's `.ovpn` profile.
    pub fn profile(&self, common_name: &str) -> Result<&Path, OpenvpnError> {
        self.written
            .profile(common_name)
            .ok_or_else(|| OpenvpnError::NoProfile(common_name.to_string()))
    }

    /// Rewrites `crl.pem` from the PKI's current CRL (after [`Pki::revoke`]).
    pub fn rewrite_crl(&self) -> Result<(), OpenvpnError> {
        let path = &self.written.paths.crl;
        let tmp = path.with_extension("pem.tmp");
        fs::write(&tmp, self.pki.crl_pem())
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(|source| OpenvpnError::File {
                path: path.clone(),
                source,
            })
    }
}

/// Creates tls-crypt-v2 keys with the stock openvpn under `work/tls-crypt-v2/`.
pub fn genkey_tls_crypt_v2(
    work: &Path,
    clients: &[String],
) -> Result<TlsCryptV2Keys, OpenvpnError> {
    let dir = work.join("tls-crypt-v2");
    fs::create_dir_all(&dir).map_err(|source| OpenvpnError::File {
        path: dir.clone(),
        source,
    })?;
    let server = dir.join("server.key");
    let timeout = Duration::from_secs(20);
    run_ok(
        None,
        OPENVPN,
        &[
            "--genkey".as_ref(),
            "tls-crypt-v2-server".as_ref(),
            server.as_os_str(),
        ],
        timeout,
    )?;
    let mut client_keys = Vec::new();
    for cn in clients {
        let path = dir.join(format!("{cn}.key"));
        run_ok(
            None,
            OPENVPN,
            &[
                "--tls-crypt-v2".as_ref(),
                server.as_os_str(),
                "--genkey".as_ref(),
                "tls-crypt-v2-client".as_ref(),
                path.as_os_str(),
            ],
            timeout,
        )?;
        client_keys.push((cn.clone(), read(&path)?));
    }
    Ok(TlsCryptV2Keys {
        server_key: read(&server)?,
        client_keys,
    })
}

/// Generates the PKI and writes the server directory to `DIR/server/`.
pub fn prepare_server(
    dir: &TestDir,
    init: &InitOptions,
    mut opts: ServerConfOptions,
) -> Result<ServerSetup, OpenvpnError> {
    if opts.wrap == WrapMode::TlsCryptV2 && opts.tls_crypt_v2.is_none() {
        opts.tls_crypt_v2 = Some(genkey_tls_crypt_v2(dir.path(), &init.clients)?);
    }
    let pki = generate(init)?;
    let written = write_dir(&pki, &dir.path().join("server"), &opts)?;
    Ok(ServerSetup { pki, written, opts })
}

/// Changes applied to a client profile by [`client_config`].
#[derive(Clone, Debug, Default)]
pub struct ClientOverrides {
    /// Replace `remote` with `remote HOST PORT`.
    pub remote: Option<(String, u16)>,
    /// Replace `proto`.
    pub proto: Option<Proto>,
    /// Set `cipher` (replacing any).
    pub cipher: Option<String>,
    /// Set `data-ciphers` (replacing any).
    pub data_ciphers: Option<String>,
    /// Remove every directive with one of these names (outside inline blocks).
    pub drop_directives: Vec<String>,
    /// Lines appended at the end (e.g. `comp-lzo`, `reneg-sec 10`).
    pub extra_lines: Vec<String>,
}

/// Applies `ov` to the profile text.
pub fn client_config(profile: &str, ov: &ClientOverrides) -> String {
    let mut drop: Vec<&str> = ov.drop_directives.iter().map(String::as_str).collect();
    if ov.remote.is_some() {
        drop.push("remote");
    }
    if ov.proto.is_some() {
        drop.push("proto");
    }
    if ov.cipher.is_some() {
        drop.push("cipher");
    }
    if ov.data_ciphers.is_some() {
        drop.push("data-ciphers");
    }
    let mut out = String::with_capacity(profile.len() + 256);
    let mut in_block: Option<String> = None;
    for line in profile.lines() {
        let t = line.trim();
        if let Some(tag) = &in_block {
            if t == format!("</{tag}>") {
                in_block = None;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if let Some(tag) = t.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
            if !tag.starts_with('/') {
                in_block = Some(tag.to_string());
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let word = t.split_whitespace().next().unwrap_or("");
        let word = word.trim_start_matches("--");
        if !word.is_empty() && drop.contains(&word) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some((host, port)) = &ov.remote {
        out.push_str(&format!("remote {host} {port}\n"));
    }
    if let Some(p) = ov.proto {
        out.push_str(&format!("proto {}\n", p.keyword()));
    }
    if let Some(c) = &ov.cipher {
        out.push_str(&format!("cipher {c}\n"));
    }
    if let Some(c) = &ov.data_ciphers {
        out.push_str(&format!("data-ciphers {c}\n"));
    }
    for l in &ov.extra_lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Starts the stock client in `ns` with the profile at `profile` plus overrides; its config is
/// written to `DIR/<name>.conf` and its log to `DIR/<name>.log`.
pub fn start_stock_client(
    dir: &TestDir,
    ns: &str,
    name: &str,
    profile: &Path,
    ov: &ClientOverrides,
) -> Result<Proc, OpenvpnError> {
    let conf = dir.path().join(format!("{name}.conf"));
    write_private(&conf, &client_config(&read(profile)?, ov))?;
    Ok(Proc::spawn(
        dir,
        name,
        Some(ns),
        OPENVPN,
        &["--config".as_ref(), conf.as_os_str()],
    )?)
}

/// Writes `conf` plus `extra_lines` to `DIR/<name>.conf` (or uses `conf` as is when there are none).
fn server_conf_with(
    dir: &TestDir,
    name: &str,
    conf: &Path,
    extra_lines: &[&str],
) -> Result<PathBuf, OpenvpnError> {
    if extra_lines.is_empty() {
        return Ok(conf.to_path_buf());
    }
    let mut text = read(conf)?;
    for l in extra_lines {
        text.push_str(l);
        text.push('\n');
    }
    let path = dir.path().join(format!("{name}.conf"));
    write_private(&path, &text)?;
    Ok(path)
}

/// Starts the stock client with the unchanged `client1` profile of `setup` in `ns` (log
/// `DIR/client1.log`) and waits until it prints `Initialization Sequence Completed`.
pub fn connect_client1(
    dir: &TestDir,
    ns: &str,
    setup: &ServerSetup,
    timeout: std::time::Duration,
) -> Result<Proc, OpenvpnError> {
    let profile = setup.profile("client1")?;
    let mut c = start_stock_client(dir, ns, "client1", profile, &ClientOverrides::default())?;
    c.wait_for_line(INIT_COMPLETE, timeout)?;
    Ok(c)
}

/// Sends `count` datagrams from `ns` to `target` that open like a client's first packet
/// (P_CONTROL_HARD_RESET_CLIENT_V2, key id 0, a distinct session id each) but carry garbage where
/// the tls-auth/tls-crypt wrapping belongs, 5 ms apart: each one fails the server's check of the
/// wrapping and is logged as a TLS error.
pub fn send_unauthenticated_resets(ns: &str, target: std::net::SocketAddr, count: u64) {
    crate::netns::in_netns(ns, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
        for i in 0..count {
            let mut pkt = vec![7u8 << 3];
            pkt.extend_from_slice(&(i + 1).to_be_bytes());
            pkt.extend_from_slice(&[0x5a; 64]);
            sock.send_to(&pkt, target).expect("send");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
}

/// Starts the stock OpenVPN server (the reference implementation) in `ns`.
pub fn start_stock_server(
    dir: &TestDir,
    ns: &str,
    name: &str,
    conf: &Path,
    extra_lines: &[&str],
) -> Result<Proc, OpenvpnError> {
    let conf = server_conf_with(dir, name, conf, extra_lines)?;
    Ok(Proc::spawn(
        dir,
        name,
        Some(ns),
        OPENVPN,
        &["--config".as_ref(), conf.as_os_str()],
    )?)
}

/// Starts the Bulwark daemon (`target/<profile>/bulwark --config CONF`) in `ns`.
pub fn start_bulwark_server(
    dir: &TestDir,
    ns: &str,
    name: &str,
    conf: &Path,
    extra_lines: &[&str],
) -> Result<Proc, OpenvpnError> {
    let bin = bulwark_bin()?;
    let conf = server_conf_with(dir, name, conf, extra_lines)?;
    Ok(Proc::spawn(
        dir,
        name,
        Some(ns),
        bin,
        &["--config".as_ref(), conf.as_os_str()],
    )?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PROFILE: &str = "client\ndev tun\nproto udp\nremote 127.0.0.1 1194\nnobind\n\
        <ca>\nproto inside-block\n</ca>\n<tls-crypt>\nremote x\n</tls-crypt>\n";

    #[test]
    fn overrides_replace_and_append_outside_blocks_only() {
        let ov = ClientOverrides {
            remote: Some(("10.99.1.1".into(), 1195)),
            proto: Some(Proto::Tcp),
            cipher: Some("AES-128-CBC".into()),
            drop_directives: vec!["nobind".into()],
            extra_lines: vec!["comp-lzo".into(), "reneg-sec 10".into()],
            ..Default::default()
        };
        let c = client_config(PROFILE, &ov);
        assert!(!c.contains("remote 127.0.0.1 1194"));
        assert!(!c.contains("proto udp"));
        assert!(!c.contains("nobind"));
        assert!(c.contains("<ca>\nproto inside-block\n</ca>\n"));
        assert!(c.contains("<tls-crypt>\nremote x\n</tls-crypt>\n"));
        assert!(c.ends_with(
            "remote 10.99.1.1 1195\nproto tcp\ncipher AES-128-CBC\ncomp-lzo\nreneg-sec 10\n"
        ));
    }

    #[test]
    fn no_overrides_is_identity() {
        assert_eq!(client_config(PROFILE, &ClientOverrides::default()), PROFILE);
    }
}
