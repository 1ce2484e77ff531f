//! Rendering of `server.conf` and of inline `.ovpn` client profiles.
//!
//! API: [`ServerConfOptions`] (every knob of the generated server directory), [`Proto`], [`WrapMode`],
//! [`TlsCryptV2Keys`], [`ServerPaths`], [`render_server_conf`] and [`render_client_profile`].
//!
//! Invariants:
//! - Only standard OpenVPN 2.6 directives are emitted, so the same directory runs under the stock
//!   `openvpn` and under Bulwark.
//! - Every operator-supplied string that ends up in a file is checked to be a single line (no CR/LF,
//!   no NUL): a value can never inject a directive. Paths are emitted absolute and double-quoted when
//!   they contain whitespace; paths containing `"` or `\` are refused.
//! - Inline blocks hold exactly the PEM/key text handed in; the text itself must not contain the
//!   block's closing tag.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Errors of configuration rendering.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// A value would span several lines or contains NUL.
    #[error("{field}: value {value:?} must be a single line without NUL")]
    MultiLine {
        /// Which option.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A value is empty where one is required.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A path cannot be written into an OpenVPN config.
    #[error("path {0:?} is not valid UTF-8 or contains '\"' or '\\\\', which OpenVPN configs cannot quote here")]
    UnquotablePath(PathBuf),
    /// The netmask is not a contiguous prefix or the network has host bits set.
    #[error("invalid server network {network}/{netmask}")]
    BadNetwork {
        /// Network address.
        network: Ipv4Addr,
        /// Netmask.
        netmask: Ipv4Addr,
    },
    /// Port 0 was requested.
    #[error("port must be 1..=65535")]
    BadPort,
    /// Inline material contains its own closing tag.
    #[error("inline <{0}> material contains its closing tag")]
    InlineTag(&'static str),
    /// tls-crypt-v2 was requested without the key material.
    #[error("wrap mode tls-crypt-v2 needs ServerConfOptions::tls_crypt_v2 (server key and a client key for {0:?})")]
    MissingTlsCryptV2Key(String),
}

/// Transport protocol of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Proto {
    /// UDP over IPv4 (`proto udp`).
    #[default]
    Udp,
    /// TCP over IPv4 (`proto tcp`; server side `tcp-server`, client side `tcp-client`).
    Tcp,
    /// UDP over IPv6 (`proto udp6`).
    Udp6,
    /// TCP over IPv6 (`proto tcp6`).
    Tcp6,
}

impl Proto {
    /// The keyword used by the `proto` directive.
    pub fn keyword(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Udp6 => "udp6",
            Proto::Tcp6 => "tcp6",
        }
    }

    /// True for the UDP variants.
    pub fn is_udp(self) -> bool {
        matches!(self, Proto::Udp | Proto::Udp6)
    }
}

/// Control-channel wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WrapMode {
    /// No wrapping.
    None,
    /// `tls-auth` with `key-direction 0` (server) / `1` (client).
    TlsAuth,
    /// `tls-crypt` (the default).
    #[default]
    TlsCrypt,
    /// `tls-crypt-v2`: needs [`ServerConfOptions::tls_crypt_v2`].
    TlsCryptV2,
}

/// tls-crypt-v2 key material produced elsewhere (the stock `openvpn --genkey tls-crypt-v2-*` in tests).
#[derive(Clone, Default)]
pub struct TlsCryptV2Keys {
    /// The server key file text (`-----BEGIN OpenVPN tls-crypt-v2 server key-----` ...).
    pub server_key: String,
    /// Per-client key file text, by client common name.
    pub client_keys: Vec<(String, String)>,
}

impl std::fmt::Debug for TlsCryptV2Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.client_keys.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TlsCryptV2Keys")
            .field("server_key", &"<redacted>")
            .field("clients", &names)
            .finish()
    }
}

/// Everything configurable about the generated server directory.
#[derive(Clone, Debug)]
pub struct ServerConfOptions {
    /// Listening port (default 1194).
    pub port: u16,
    /// Transport (default UDP).
    pub proto: Proto,
    /// `server NETWORK NETMASK` (default 10.8.0.0/255.255.255.0, `topology subnet`).
    pub network: Ipv4Addr,
    /// Netmask of the VPN subnet.
    pub netmask: Ipv4Addr,
    /// Control-channel wrapping (default tls-crypt).
    pub wrap: WrapMode,
    /// `data-ciphers` list.
    pub data_ciphers: String,
    /// `keepalive PING RESTART` (default 10 60); `None` omits it.
    pub keepalive: Option<(u32, u32)>,
    /// `user` to drop to (default `nobody`); `None` omits it.
    pub user: Option<String>,
    /// `group` to drop to (default `nogroup`); `None` omits it.
    pub group: Option<String>,
    /// Status file; `None` means `DIR/openvpn-status.log`.
    pub status_file: Option<PathBuf>,
    /// Emit `crl-verify DIR/crl.pem` (default true).
    pub crl_verify: bool,
    /// `verb` level (default 3).
    pub verb: u8,
    /// Host (name or address) written into client profiles' `remote` line (default 127.0.0.1).
    pub remote_host: String,
    /// Extra lines appended verbatim (each must be one line) to `server.conf`.
    pub extra_server_lines: Vec<String>,
    /// Extra lines appended verbatim (each must be one line) to every client profile.
    pub extra_client_lines: Vec<String>,
    /// tls-crypt-v2 material, required when `wrap` is [`WrapMode::TlsCryptV2`].
    pub tls_crypt_v2: Option<TlsCryptV2Keys>,
}

impl Default for ServerConfOptions {
    fn default() -> Self {
        Self {
            port: 1194,
            proto: Proto::Udp,
            network: Ipv4Addr::new(10, 8, 0, 0),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            wrap: WrapMode::TlsCrypt,
            data_ciphers: "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305".to_string(),
            keepalive: Some((10, 60)),
            user: Some("nobody".to_string()),
            group: Some("nogroup".to_string()),
            status_file: None,
            crl_verify: true,
            verb: 3,
            remote_host: "127.0.0.1".to_string(),
            extra_server_lines: Vec::new(),
            extra_client_lines: Vec::new(),
            tls_crypt_v2: None,
        }
    }
}

/// Absolute paths of the files a `server.conf` refers to.
#[derive(Clone, Debug)]
pub struct ServerPaths {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// CRL.
    pub crl: PathBuf,
    /// tls-auth / tls-crypt / tls-crypt-v2 server key, if any.
    pub wrap_key: Option<PathBuf>,
    /// Status file.
    pub status: PathBuf,
}

/// Inline material for one client profile.
#[derive(Clone, Copy)]
pub struct ClientMaterial<'a> {
    /// CA certificate PEM.
    pub ca_pem: &'a str,
    /// Client certificate PEM.
    pub cert_pem: &'a str,
    /// Client private key PEM.
    pub key_pem: &'a str,
    /// Wrap key text (static key for tls-auth/tls-crypt, client key for tls-crypt-v2).
    pub wrap_key: Option<&'a str>,
}

fn single_line(field: &'static str, value: &str) -> Result<(), ConfError> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(ConfError::MultiLine {
            field,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn word(field: &'static str, value: &str) -> Result<(), ConfError> {
    single_line(field, value)?;
    if value.trim().is_empty() {
        return Err(ConfError::Empty(field));
    }
    Ok(())
}

fn quote_path(path: &Path) -> Result<String, ConfError> {
    let s = path
        .to_str()
        .ok_or_else(|| ConfError::UnquotablePath(path.to_path_buf()))?;
    if s.contains(['"', '\\', '\n', '\r', '\0']) || s.is_empty() {
        return Err(ConfError::UnquotablePath(path.to_path_buf()));
    }
    if s.contains(char::is_whitespace) {
        Ok(format!("\"{s}\""))
    } else {
        Ok(s.to_string())
    }
}

fn inline(out: &mut String, tag: &'static str, text: &str) -> Result<(), ConfError> {
    if text.contains(&format!("</{tag}>")) {
        return Err(ConfError::InlineTag(tag));
    }
    out.push_str(&format!("<{tag}>\n"));
    out.push_str(text.trim_end());
    out.push_str(&format!("\n</{tag}>\n"));
    Ok(())
}

fn check_common(opts: &ServerConfOptions) -> Result<(), ConfError> {
    if opts.port == 0 {
        return Err(ConfError::BadPort);
    }
    let mask = u32::from(opts.netmask);
    if mask.leading_ones() + mask.trailing_zeros() != 32
        || u32::from(opts.network) & !mask != 0
        || mask.leading_ones() > 30
        || mask.leading_ones() < 8
    {
        return Err(ConfError::BadNetwork {
            network: opts.network,
            netmask: opts.netmask,
        });
    }
    word("data_ciphers", &opts.data_ciphers)?;
    word("remote_host", &opts.remote_host)?;
    for l in &opts.extra_server_lines {
        single_line("extra_server_lines", l)?;
    }
    for l in &opts.extra_client_lines {
        single_line("extra_client_lines", l)?;
    }
    Ok(())
}

/// Renders `server.conf`.
pub fn render_server_conf(
    opts: &ServerConfOptions,
    paths: &ServerPaths,
) -> Result<String, ConfError> {
    check_common(opts)?;
    let mut c = String::new();
    c.push_str("# OpenVPN 2.6-compatible server configuration generated by `bulwark init`.\n");
    c.push_str("# Runs unchanged under Bulwark and under the stock openvpn.\n");
    c.push_str(&format!("port {}\n", opts.port));
    c.push_str(&format!("proto {}\n", opts.proto.keyword()));
    c.push_str("dev tun\n");
    c.push_str("topology subnet\n");
    c.push_str(&format!("server {} {}\n", opts.network, opts.netmask));
    c.push_str(&format!("ca {}\n", quote_path(&paths.ca)?));
    c.push_str(&format!("cert {}\n", quote_path(&paths.cert)?));
    c.push_str(&format!("key {}\n", quote_path(&paths.key)?));
    c.push_str("dh none\n");
    if opts.crl_verify {
        c.push_str(&format!("crl-verify {}\n", quote_path(&paths.crl)?));
    }
    match (opts.wrap, &paths.wrap_key) {
        (WrapMode::None, _) => {}
        (WrapMode::TlsAuth, Some(p)) => {
            c.push_str(&format!("tls-auth {} 0\n", quote_path(p)?));
        }
        (WrapMode::TlsCrypt, Some(p)) => {
            c.push_str(&format!("tls-crypt {}\n", quote_path(p)?));
        }
        (WrapMode::TlsCryptV2, Some(p)) => {
            c.push_str(&format!("tls-crypt-v2 {}\n", quote_path(p)?));
        }
        (_, None) => return Err(ConfError::Empty("wrap key path")),
    }
    c.push_str(&format!("data-ciphers {}\n", opts.data_ciphers));
    if let Some((ping, restart)) = opts.keepalive {
        c.push_str(&format!("keepalive {ping} {restart}\n"));
    }
    if let Some(user) = &opts.user {
        word("user", user)?;
        c.push_str(&format!("user {user}\n"));
    }
    if let Some(group) = &opts.group {
        word("group", group)?;
        c.push_str(&format!("group {group}\n"));
    }
    c.push_str("persist-key\n");
    c.push_str("persist-tun\n");
    c.push_str(&format!("status {}\n", quote_path(&paths.status)?));
    c.push_str(&format!("verb {}\n", opts.verb));
    for l in &opts.extra_server_lines {
        c.push_str(l);
        c.push('\n');
    }
    Ok(c)
}

/// Renders an inline `.ovpn` client profile for `common_name` that a stock 2.6 client accepts.
pub fn render_client_profile(
    opts: &ServerConfOptions,
    common_name: &str,
    material: ClientMaterial<'_>,
) -> Result<String, ConfError> {
    check_common(opts)?;
    word("common_name", common_name)?;
    let mut c = String::new();
    c.push_str(&format!(
        "# OpenVPN client profile for {common_name}, generated by `bulwark init`.\n"
    ));
    c.push_str("client\n");
    c.push_str("dev tun\n");
    c.push_str(&format!("proto {}\n", opts.proto.keyword()));
    c.push_str(&format!("remote {} {}\n", opts.remote_host, opts.port));
    c.push_str("nobind\n");
    c.push_str("persist-key\n");
    c.push_str("persist-tun\n");
    c.push_str("remote-cert-tls server\n");
    c.push_str(&format!("verb {}\n", opts.verb));
    if opts.wrap == WrapMode::TlsAuth {
        c.push_str("key-direction 1\n");
    }
    for l in &opts.extra_client_lines {
        c.push_str(l);
        c.push('\n');
    }
    inline(&mut c, "ca", material.ca_pem)?;
    inline(&mut c, "cert", material.cert_pem)?;
    inline(&mut c, "key", material.key_pem)?;
    let tag = match opts.wrap {
        WrapMode::None => None,
        WrapMode::TlsAuth => Some("tls-auth"),
        WrapMode::TlsCrypt => Some("tls-crypt"),
        WrapMode::TlsCryptV2 => Some("tls-crypt-v2"),
    };
    if let Some(tag) = tag {
        let key = material
            .wrap_key
            .ok_or_else(|| ConfError::MissingTlsCryptV2Key(common_name.to_string()))?;
        inline(&mut c, tag, key)?;
    }
    Ok(c)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn paths() -> ServerPaths {
        ServerPaths {
            ca: "/srv/vpn/ca.crt".into(),
            cert: "/srv/vpn/server.crt".into(),
            key: "/srv/vpn/server.key".into(),
            crl: "/srv/vpn/crl.pem".into(),
            wrap_key: Some("/srv/vpn dir/tls-crypt.key".into()),
            status: "/srv/vpn/openvpn-status.log".into(),
        }
    }

    #[test]
    fn default_server_conf() {
        let conf = render_server_conf(&ServerConfOptions::default(), &paths()).unwrap();
        for line in [
            "port 1194",
            "proto udp",
            "dev tun",
            "topology subnet",
            "server 10.8.0.0 255.255.255.0",
            "ca /srv/vpn/ca.crt",
            "dh none",
            "crl-verify /srv/vpn/crl.pem",
            "tls-crypt \"/srv/vpn dir/tls-crypt.key\"",
            "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
            "keepalive 10 60",
            "user nobody",
            "group nogroup",
            "persist-key",
            "persist-tun",
            "status /srv/vpn/openvpn-status.log",
            "verb 3",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "missing {line:?} in\n{conf}"
            );
        }
    }

    #[test]
    fn tls_auth_directions() {
        let opts = ServerConfOptions {
            wrap: WrapMode::TlsAuth,
            ..Default::default()
        };
        let conf = render_server_conf(&opts, &paths()).unwrap();
        assert!(conf.contains("tls-auth \"/srv/vpn dir/tls-crypt.key\" 0\n"));
        let m = ClientMaterial {
            ca_pem: "CA",
            cert_pem: "CERT",
            key_pem: "KEY",
            wrap_key: Some("STATIC"),
        };
        let p = render_client_profile(&opts, "client1", m).unwrap();
        assert!(p.contains("key-direction 1\n"));
        assert!(p.contains("<tls-auth>\nSTATIC\n</tls-auth>\n"));
    }

    #[test]
    fn refuses_injection_and_bad_values() {
        let opts = ServerConfOptions {
            user: Some("nobody\nscript-security 3".into()),
            ..Default::default()
        };
        assert!(matches!(
            render_server_conf(&opts, &paths()),
            Err(ConfError::MultiLine { field: "user", .. })
        ));
        let opts = ServerConfOptions {
            netmask: Ipv4Addr::new(255, 0, 255, 0),
            ..Default::default()
        };
        assert!(matches!(
            render_server_conf(&opts, &paths()),
            Err(ConfError::BadNetwork { .. })
        ));
        let opts = ServerConfOptions {
            network: Ipv4Addr::new(10, 8, 0, 1),
            ..Default::default()
        };
        assert!(render_server_conf(&opts, &paths()).is_err());
        let mut p = paths();
        p.key = "/a\"b".into();
        assert!(matches!(
            render_server_conf(&ServerConfOptions::default(), &p),
            Err(ConfError::UnquotablePath(_))
        ));
        let m = ClientMaterial {
            ca_pem: "x</ca>",
            cert_pem: "",
            key_pem: "",
            wrap_key: Some(""),
        };
        assert!(matches!(
            render_client_profile(&ServerConfOptions::default(), "c", m),
            Err(ConfError::InlineTag("ca"))
        ));
    }

    #[test]
    fn client_profile_shape() {
        let opts = ServerConfOptions {
            remote_host: "10.99.1.1".into(),
            port: 1195,
            proto: Proto::Tcp,
            ..Default::default()
        };
        let m = ClientMaterial {
            ca_pem: "CA\n",
            cert_pem: "CERT",
            key_pem: "KEY",
            wrap_key: Some("TC"),
        };
        let p = render_client_profile(&opts, "client1", m).unwrap();
        for line in [
            "client",
            "dev tun",
            "proto tcp",
            "remote 10.99.1.1 1195",
            "nobind",
            "remote-cert-tls server",
        ] {
            assert!(p.lines().any(|l| l == line), "missing {line:?}");
        }
        assert!(p.contains("<ca>\nCA\n</ca>\n<cert>\nCERT\n</cert>\n<key>\nKEY\n</key>\n<tls-crypt>\nTC\n</tls-crypt>\n"));
        let m = ClientMaterial {
            wrap_key: None,
            ..m
        };
        assert!(render_client_profile(&opts, "client1", m).is_err());
    }
}
