//! Command line of `bulwark-hsload`.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// Upper bounds that keep a run finite and the process inside its file-descriptor budget.
pub const MAX_COUNT: u64 = 1_000_000;
/// Sessions in flight at most (one UDP socket each).
pub const MAX_CONCURRENCY: usize = 4096;
/// Longest overall run.
pub const MAX_TIMEOUT_S: u64 = 3600;
/// Highest total data rate (inner packets per second).
pub const MAX_DATA_PPS: u64 = 2_000_000;
/// Default inner packet size of the data load.
pub const DEFAULT_DATA_SIZE: usize = 1200;

/// The usage text.
pub const USAGE: &str = "\
usage: bulwark-hsload --server ADDR:PORT --ca FILE --cert FILE --key FILE [--tls-crypt FILE]
                      [--count N] [--concurrency C] [--timeout S] [--session-timeout S]
                      [--push-request-tick MS] [--exit-wait S] [--bind IP] [--port-base P]
                      [--hold S [--data-pps N --data-dst IP:PORT [--data-size BYTES]]]

Runs N OpenVPN 2.6 client handshakes (UDP, key-method 2, TLS with the client certificate, PUSH_REPLY)
against the server, C at a time from one thread, each from its own UDP socket (source port), then
ends each session with EXIT (cc-exit) or OCC_EXIT, and prints one JSON line with the results.

  --server ADDR:PORT       the OpenVPN/Bulwark server (UDP)
  --ca, --cert, --key      PEM files: CA, client certificate (chain), client private key
  --tls-crypt FILE         the tls-crypt static key (client direction); without it: no wrapping
  --count N                handshakes in total (default 100, at most 1000000)
  --concurrency C          sessions in their handshake at once (default 20, at most 4096)
  --timeout S              bound of the whole run in seconds (default 60, at most 3600); sessions
                           still running then count as failed (timeout_<phase>)
  --session-timeout S      one handshake may take this long (default 60 = OpenVPN's hand-window)
  --push-request-tick MS   PUSH_REQUEST goes out at the first multiple of MS (from the session start)
                           after the key exchange unless PUSH_REPLY came first, as a 2.6 client's
                           1-second timer does (default 1000); 0 = right after the key exchange
  --exit-wait S            wait at most S seconds for the server's ACK of EXIT (default 5)
  --bind IP                local address of the sockets (default: any of the server's family)
  --port-base P            source ports are P, P+1, ... (wrapping to P after 65535; default 20000),
                           so no port is used twice within a run of up to 65535-P sessions

Data mode:
  --hold S                 keep each completed session open for S seconds (default 0 = end it at
                           once), then end it as above; --timeout must be longer than S
  --data-pps N             while sessions are held, send N inner packets per second in total, spread
                           evenly over the held sessions, each encrypted as P_DATA with the session's
                           data key (at most 2000000; default 0 = none; needs --hold and --data-dst)
  --data-dst IP:PORT       inner destination (IPv4/UDP; e.g. the server's tunnel address and a port
                           a sink listens on); the inner source is the session's pushed ifconfig address
  --data-size BYTES        inner IPv4 packet size, headers included (28..=1500, default 1200)
";

/// Errors of the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// `--help`.
    #[error("{USAGE}")]
    Help,
    /// An option this program does not know.
    #[error("unknown argument {0:?}\n{USAGE}")]
    Unknown(String),
    /// An option without its value.
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    /// A value that does not parse or is out of range.
    #[error("{option}: {value:?} is not {expected}")]
    BadValue {
        /// The option.
        option: &'static str,
        /// What was given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A required option is missing.
    #[error("{0} is required\n{USAGE}")]
    Required(&'static str),
}

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Server address.
    pub server: SocketAddr,
    /// CA file.
    pub ca: PathBuf,
    /// Client certificate file.
    pub cert: PathBuf,
    /// Client key file.
    pub key: PathBuf,
    /// tls-crypt key file.
    pub tls_crypt: Option<PathBuf>,
    /// Handshakes in total.
    pub count: u64,
    /// Sessions in their handshake at once.
    pub concurrency: usize,
    /// Bound of the run.
    pub timeout: Duration,
    /// Bound of one handshake.
    pub session_timeout: Duration,
    /// PUSH_REQUEST tick.
    pub push_request_tick: Duration,
    /// EXIT ACK wait.
    pub exit_wait: Duration,
    /// Local address.
    pub bind: Option<IpAddr>,
    /// First source port.
    pub port_base: u16,
    /// How long a completed session is kept open (zero: ended at once).
    pub hold: Duration,
    /// Inner packets per second over all held sessions (0: none).
    pub data_pps: u64,
    /// Inner IPv4 packet size.
    pub data_size: usize,
    /// Inner destination.
    pub data_dst: Option<SocketAddrV4>,
}

fn num<T: std::str::FromStr + PartialOrd>(
    option: &'static str,
    value: &str,
    lo: T,
    hi: T,
    expected: &'static str,
) -> Result<T, CliError> {
    value
        .parse::<T>()
        .ok()
        .filter(|v| *v >= lo && *v <= hi)
        .ok_or_else(|| CliError::BadValue {
            option,
            value: value.to_string(),
            expected,
        })
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, CliError> {
    let mut it = args.into_iter();
    let mut server = None;
    let (mut ca, mut cert, mut key, mut tls_crypt) = (None, None, None, None);
    let mut count = 100u64;
    let mut concurrency = 20usize;
    let mut timeout = 60u64;
    let mut session_timeout = 60u64;
    let mut tick_ms = 1000u64;
    let mut exit_wait = 5u64;
    let mut bind = None;
    let mut port_base = 20000u16;
    let mut hold = 0u64;
    let mut data_pps = 0u64;
    let mut data_size = DEFAULT_DATA_SIZE;
    let mut data_dst = None;
    while let Some(a) = it.next() {
        let opt: &'static str = match a.as_str() {
            "-h" | "--help" => return Err(CliError::Help),
            "--server" => "--server",
            "--ca" => "--ca",
            "--cert" => "--cert",
            "--key" => "--key",
            "--tls-crypt" => "--tls-crypt",
            "--count" => "--count",
            "--concurrency" => "--concurrency",
            "--timeout" => "--timeout",
            "--session-timeout" => "--session-timeout",
            "--push-request-tick" => "--push-request-tick",
            "--exit-wait" => "--exit-wait",
            "--bind" => "--bind",
            "--port-base" => "--port-base",
            "--hold" => "--hold",
            "--data-pps" => "--data-pps",
            "--data-size" => "--data-size",
            "--data-dst" => "--data-dst",
            _ => return Err(CliError::Unknown(a)),
        };
        let v = it.next().ok_or(CliError::MissingValue(opt))?;
        match opt {
            "--server" => {
                server = Some(v.parse::<SocketAddr>().map_err(|_| CliError::BadValue {
                    option: opt,
                    value: v.clone(),
                    expected: "an IP address and port (1.2.3.4:1194, [::1]:1194)",
                })?)
            }
            "--ca" => ca = Some(PathBuf::from(v)),
            "--cert" => cert = Some(PathBuf::from(v)),
            "--key" => key = Some(PathBuf::from(v)),
            "--tls-crypt" => tls_crypt = Some(PathBuf::from(v)),
            "--count" => count = num(opt, &v, 1, MAX_COUNT, "a count 1..=1000000")?,
            "--concurrency" => concurrency = num(opt, &v, 1, MAX_CONCURRENCY, "a count 1..=4096")?,
            "--timeout" => timeout = num(opt, &v, 1, MAX_TIMEOUT_S, "seconds 1..=3600")?,
            "--session-timeout" => {
                session_timeout = num(opt, &v, 1, MAX_TIMEOUT_S, "seconds 1..=3600")?
            }
            "--push-request-tick" => tick_ms = num(opt, &v, 0, 60_000, "milliseconds 0..=60000")?,
            "--exit-wait" => exit_wait = num(opt, &v, 0, 60, "seconds 0..=60")?,
            "--bind" => {
                bind = Some(v.parse::<IpAddr>().map_err(|_| CliError::BadValue {
                    option: opt,
                    value: v.clone(),
                    expected: "an IP address",
                })?)
            }
            "--port-base" => port_base = num(opt, &v, 1024, 65535, "a port 1024..=65535")?,
            "--hold" => hold = num(opt, &v, 0, MAX_TIMEOUT_S, "seconds 0..=3600")?,
            "--data-pps" => data_pps = num(opt, &v, 0, MAX_DATA_PPS, "a rate 0..=2000000")?,
            "--data-size" => {
                data_size = num(
                    opt,
                    &v,
                    crate::load::MIN_SIZE,
                    crate::load::MAX_SIZE,
                    "bytes 28..=1500",
                )?
            }
            "--data-dst" => {
                data_dst = Some(v.parse::<SocketAddrV4>().map_err(|_| CliError::BadValue {
                    option: opt,
                    value: v.clone(),
                    expected: "an IPv4 address and port (10.8.0.1:9000)",
                })?)
            }
            _ => return Err(CliError::Unknown(a)),
        }
    }
    if hold > 0 && timeout <= hold {
        return Err(CliError::BadValue {
            option: "--timeout",
            value: timeout.to_string(),
            expected: "longer than --hold",
        });
    }
    if data_pps > 0 {
        if hold == 0 {
            return Err(CliError::Required("--hold (with --data-pps)"));
        }
        if data_dst.is_none() {
            return Err(CliError::Required("--data-dst (with --data-pps)"));
        }
    }
    Ok(Args {
        server: server.ok_or(CliError::Required("--server"))?,
        ca: ca.ok_or(CliError::Required("--ca"))?,
        cert: cert.ok_or(CliError::Required("--cert"))?,
        key: key.ok_or(CliError::Required("--key"))?,
        tls_crypt,
        count,
        concurrency,
        timeout: Duration::from_secs(timeout),
        session_timeout: Duration::from_secs(session_timeout),
        push_request_tick: Duration::from_millis(tick_ms),
        exit_wait: Duration::from_secs(exit_wait),
        bind,
        port_base,
        hold: Duration::from_secs(hold),
        data_pps,
        data_size,
        data_dst,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_a_full_command_line() {
        let a = parse(args(
            "--server 10.99.50.1:1194 --ca ca.crt --cert c.crt --key c.key --tls-crypt tc.key \
             --count 500 --concurrency 50 --timeout 30 --push-request-tick 0 --port-base 30000",
        ))
        .unwrap();
        assert_eq!(a.server, "10.99.50.1:1194".parse().unwrap());
        assert_eq!(a.tls_crypt, Some(PathBuf::from("tc.key")));
        assert_eq!((a.count, a.concurrency), (500, 50));
        assert_eq!(a.timeout, Duration::from_secs(30));
        assert_eq!(a.session_timeout, Duration::from_secs(60));
        assert_eq!(a.push_request_tick, Duration::ZERO);
        assert_eq!(a.exit_wait, Duration::from_secs(5));
        assert_eq!(a.port_base, 30000);
        assert_eq!((a.hold, a.data_pps, a.data_dst), (Duration::ZERO, 0, None));
        assert_eq!(a.data_size, 1200);
    }

    #[test]
    fn parses_the_data_mode() {
        let base = "--server 10.0.0.1:1194 --ca a --cert b --key c";
        let a = parse(args(&format!(
            "{base} --hold 10 --timeout 40 --data-pps 150000 --data-dst 10.8.0.1:9000 --data-size 1400"
        )))
        .unwrap();
        assert_eq!(a.hold, Duration::from_secs(10));
        assert_eq!(a.data_pps, 150_000);
        assert_eq!(a.data_dst, Some("10.8.0.1:9000".parse().unwrap()));
        assert_eq!(a.data_size, 1400);
        // holding without data is allowed
        assert!(parse(args(&format!("{base} --hold 5"))).is_ok());
        // the run must outlast the hold
        assert!(matches!(
            parse(args(&format!("{base} --hold 60"))),
            Err(CliError::BadValue {
                option: "--timeout",
                ..
            })
        ));
        assert!(matches!(
            parse(args(&format!("{base} --data-pps 10 --data-dst 10.8.0.1:9"))),
            Err(CliError::Required(_))
        ));
        assert!(matches!(
            parse(args(&format!("{base} --hold 5 --data-pps 10"))),
            Err(CliError::Required(_))
        ));
        for bad in [
            "--data-size 27",
            "--data-size 1501",
            "--data-pps 2000001",
            "--data-dst [::1]:9",
            "--data-dst 10.8.0.1",
        ] {
            assert!(
                matches!(
                    parse(args(&format!("{base} --hold 5 {bad}"))),
                    Err(CliError::BadValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_bad_input() {
        let base = "--server 10.0.0.1:1194 --ca a --cert b --key c";
        assert!(parse(args(base)).is_ok());
        assert_eq!(
            parse(args("--ca a --cert b --key c")),
            Err(CliError::Required("--server"))
        );
        assert!(matches!(
            parse(args(&format!("{base} --count 0"))),
            Err(CliError::BadValue {
                option: "--count",
                ..
            })
        ));
        assert!(matches!(
            parse(args(&format!("{base} --concurrency 5000"))),
            Err(CliError::BadValue { .. })
        ));
        assert_eq!(
            parse(args(&format!("{base} --count"))),
            Err(CliError::MissingValue("--count"))
        );
        assert!(matches!(
            parse(args(&format!("{base} --frobnicate 1"))),
            Err(CliError::Unknown(_))
        ));
        assert!(matches!(
            parse(args("--server 10.0.0.1 --ca a --cert b --key c")),
            Err(CliError::BadValue {
                option: "--server",
                ..
            })
        ));
    }
}
