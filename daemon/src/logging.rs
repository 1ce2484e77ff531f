//! The parent's log sink: `tracing` events rendered as OpenVPN does (`YYYY-MM-DD HH:MM:SS message`)
//! to stderr, a log file (`log` / `log-append`) or syslog (`daemon` without `log`).
//!
//! Children's records arrive over their log channels and are re-emitted here with
//! [`emit_child_record`], so every line of the daemon goes through one sink. `verb` maps onto a
//! level filter (0: errors, 1–2: warnings, 3–4: info, 5+: debug, 7+: trace). The logging issue
//! refines this (mute, reopen on SIGHUP, management forwarding).
//!
//! Timestamps use the local UTC offset determined once at [`init`] (which must run while the process
//! is single-threaded, the only time the offset can be read soundly).

use std::fmt;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use time::{OffsetDateTime, UtcOffset};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use bulwark_ipc::msg::{LogOrigin, LogRecord, Severity};

/// Errors of setting up the log sink.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log file could not be opened.
    #[error("cannot open log file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The syslog socket could not be created.
    #[error("cannot create syslog socket: {0}")]
    Syslog(#[source] std::io::Error),
    /// A global subscriber was already installed.
    #[error("logging already initialised")]
    AlreadySet,
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output, as OpenVPN without `log`/`syslog`/`daemon`; with `errors-to-stderr`
    /// the fatal error lines go to standard error instead.
    Stdout {
        /// `errors-to-stderr`.
        errors_to_stderr: bool,
    },
    /// A file, truncated (`log`) or appended to (`log-append`).
    File {
        /// The path.
        path: PathBuf,
        /// Append instead of truncate.
        append: bool,
        /// Permissions, set at every open (`log-file-mode`, default 0600).
        mode: u32,
        /// Group owner, set at every open (`log-file-group`).
        gid: Option<u32>,
    },
    /// Syslog (`/dev/log`, facility daemon) with this ident (`syslog [NAME]`, `daemon [NAME]`).
    Syslog(String),
}

/// How a line starts (file and stderr sinks; syslog lines never carry a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinePrefix {
    /// `YYYY-MM-DD HH:MM:SS ` local time (with ` us=N` at verb 4 and above), OpenVPN's default.
    Timestamp,
    /// Nothing (`suppress-timestamps`).
    None,
    /// `SECONDS.MICROSECONDS FLAGS ` (`machine-readable-output`): FLAGS in hex as OpenVPN prints
    /// its message flags — the verbosity level, `0x20` for a non-fatal error (errors print `21`),
    /// `0x40` for a warning (`40`), `0x10` for a fatal error. OpenVPN also packs a mute category
    /// into the top byte; Bulwark's messages carry none, so that byte is always 0.
    MachineReadable,
}

struct OvpnFormat {
    offset: UtcOffset,
    prefix: LinePrefix,
}

/// The `machine-readable-output` flags of a record at `level`.
pub fn machine_flags(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 0x20 | 1,
        Level::WARN => 0x40,
        Level::INFO => 1,
        Level::DEBUG => 4,
        Level::TRACE => 7,
    }
}

/// The `machine-readable-output` prefix of a line written at `unix_micros`.
pub fn machine_prefix(unix_micros: i128, flags: u32) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let us = unix_micros.rem_euclid(1_000_000);
    format!("{secs}.{us:06} {flags:x} ")
}

/// One emitted log line as the management interface's log cache and `>LOG:` want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedLine {
    /// Unix time.
    pub time: i64,
    /// OpenVPN's `>LOG` flags.
    pub flags: bulwark_ipc::msg::mgmt::LogFlags,
    /// The message (without timestamp).
    pub message: String,
}

/// Capacity of the management log tap; lines beyond it are dropped and counted.
const FORWARD_CAPACITY: usize = 4096;

static FORWARD_TX: std::sync::OnceLock<tokio::sync::mpsc::Sender<ForwardedLine>> =
    std::sync::OnceLock::new();
static FORWARD_RX: Mutex<Option<tokio::sync::mpsc::Receiver<ForwardedLine>>> = Mutex::new(None);
static FORWARD_DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The current `verb`, applied to every line (changed at run time by `verb N`).
static VERB: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

thread_local! {
    /// Set while re-emitting a broker record: the broker already has it in its log cache.
    static FROM_BROKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The receiving end of the management log tap (once; later calls get `None`).
pub fn take_forwarder() -> Option<tokio::sync::mpsc::Receiver<ForwardedLine>> {
    FORWARD_RX.lock().ok().and_then(|mut g| g.take())
}

/// Lines the tap dropped because the management side did not keep up.
pub fn forward_drops() -> u64 {
    FORWARD_DROPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Changes the verbosity of the parent's log at once (management `verb N`).
pub fn set_verb(verb: u8) {
    VERB.store(verb, std::sync::atomic::Ordering::Relaxed);
}

/// The `mute` state: one for every line of every process, the parent being the only writer.
static MUTE: Mutex<crate::mute::Mute> = Mutex::new(crate::mute::Mute::new(0));

/// Sets the `mute` cut-off (start-up, SIGHUP reload, management `mute N`); 0 turns muting off.
pub fn set_mute(cutoff: u32) {
    match MUTE.lock() {
        Ok(mut m) => m.set_cutoff(cutoff),
        Err(p) => p.into_inner().set_cutoff(cutoff),
    }
}

/// The lowest `verb` at which an event of `level` without a `verb` field is shown: errors at
/// every verbosity, warnings and information (OpenVPN's M_INFO) from 1, debug from 5, trace
/// from 7.
pub fn default_verb_of(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        // OpenVPN's M_INFO: the daemon's own lifecycle lines (start, device, Initialization
        // Sequence Completed, signals, exit) show from verb 1; per-client lines carry `verb = 3`.
        Level::INFO => 1,
        Level::DEBUG => 5,
        Level::TRACE => 7,
    }
}

/// The fields of an event as the sink uses them: the message, the OpenVPN `verb` it belongs to
/// (a `verb = N` field; children's records carry theirs), `nomute` (the mute notices
/// themselves), `fatal` (OpenVPN's M_FATAL: the error
/// that ends the process, sent to stderr under `errors-to-stderr`), and any other field appended
/// as ` name=value`.
#[derive(Default)]
struct EventFields {
    message: String,
    rest: String,
    verb: Option<u8>,
    nomute: bool,
    fatal: bool,
}

impl tracing::field::Visit for EventFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "verb" {
            self.verb = Some(u8::try_from(value).unwrap_or(u8::MAX));
        } else {
            self.record_debug(field, &value);
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => self.record_debug(field, &value),
        }
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "nomute" {
            self.nomute = value;
        } else if field.name() == "fatal" {
            self.fatal = value;
        } else {
            self.record_debug(field, &value);
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

fn flags_for(level: &Level) -> bulwark_ipc::msg::mgmt::LogFlags {
    let mut f = bulwark_ipc::msg::mgmt::LogFlags::default();
    match *level {
        Level::ERROR => f.nonfatal = true,
        Level::WARN => f.warn = true,
        Level::INFO => f.info = true,
        Level::DEBUG | Level::TRACE => f.debug = true,
    }
    f
}

/// `YYYY-MM-DD HH:MM:SS` of `t`.
pub fn timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl<S, N> FormatEvent<S, N> for OvpnFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = event.metadata().level();
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let verb = fields.verb.unwrap_or_else(|| default_verb_of(level));
        if verb > VERB.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let mut msg = fields.message;
        msg.push_str(&fields.rest);
        if !fields.nomute {
            // As OpenVPN: muting applies to what the verbosity lets through.
            let category = crate::mute::category(&msg);
            let (notice, print) = match MUTE.lock() {
                Ok(mut m) => m.admit(category),
                Err(p) => p.into_inner().admit(category),
            };
            if let Some(n) = notice {
                // Printed before this event's line: the sink formats and writes a nested event
                // completely before it writes the line being formatted here.
                tracing::info!(verb = 1u8, nomute = true, "{n}");
            }
            if !print {
                return Ok(());
            }
        }
        // Read by the writer, which the sink makes after this line is formatted (a nested mute
        // notice above has been written already).
        FATAL_LINE.with(|c| c.set(fields.fatal));
        let now = OffsetDateTime::now_utc();
        if let Some(tx) = FORWARD_TX.get() {
            if !FROM_BROKER.with(|c| c.get()) {
                let line = ForwardedLine {
                    time: now.unix_timestamp(),
                    flags: flags_for(level),
                    message: msg.clone(),
                };
                if tx.try_send(line).is_err() {
                    FORWARD_DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        if self.prefix == LinePrefix::MachineReadable {
            let micros = now.unix_timestamp_nanos() / 1000;
            write!(writer, "{}", machine_prefix(micros, machine_flags(level)))?;
        } else if self.prefix == LinePrefix::Timestamp {
            write!(writer, "{} ", timestamp(now.to_offset(self.offset)))?;
            // As OpenVPN: at verb 4 and above the time gains microseconds (`us=`, not
            // zero-padded, omitted when 0).
            if VERB.load(std::sync::atomic::Ordering::Relaxed) >= 4 {
                let us = now.microsecond();
                if us != 0 {
                    write!(writer, "us={us} ")?;
                }
            }
        }
        writeln!(writer, "{msg}")
    }
}

thread_local! {
    /// Whether the line being written is a fatal error (see [`EventFields`]).
    static FATAL_LINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Standard output, or standard error for fatal lines under `errors-to-stderr`.
struct StdMaker {
    errors_to_stderr: bool,
}

impl<'a> MakeWriter<'a> for StdMaker {
    type Writer = Box<dyn Write + 'a>;
    fn make_writer(&'a self) -> Self::Writer {
        if self.errors_to_stderr && FATAL_LINE.with(|c| c.get()) {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(std::io::stdout().lock())
        }
    }
}

/// The `log`/`log-append` file, reopenable (SIGHUP after logrotate moved it away).
struct LogFile {
    path: PathBuf,
    mode: u32,
    gid: Option<u32>,
    file: Mutex<std::fs::File>,
}

static LOG_FILE: std::sync::OnceLock<std::sync::Arc<LogFile>> = std::sync::OnceLock::new();

struct LogFileMaker(std::sync::Arc<LogFile>);

/// A write to the log file; a poisoned lock (a panic while writing) loses the line.
struct LogFileWriter<'a>(Option<std::sync::MutexGuard<'a, std::fs::File>>);

/// Whether the last write to the log file failed (reported once per failure streak).
static LOG_WRITE_FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Lines lost during the current failure streak.
static LOG_LINES_LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Lines lost since start (metrics).
static LOG_LINES_LOST_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Log lines that could not be written to the log file since start.
pub fn lines_lost_total() -> u64 {
    LOG_LINES_LOST_TOTAL.load(std::sync::atomic::Ordering::Relaxed)
}

impl Write for LogFileWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let Some(f) = &mut self.0 else {
            return Ok(b.len());
        };
        match f.write_all(b) {
            Ok(()) => {
                if LOG_WRITE_FAILING.swap(false, Ordering::Relaxed) {
                    let lost = LOG_LINES_LOST.swap(0, Ordering::Relaxed);
                    let _ = writeln!(
                        f,
                        "log writes resumed; {lost} line(s) were lost while the file could not be written"
                    );
                }
                Ok(b.len())
            }
            Err(e) => {
                // A full disk must not turn every later line into an error report: the failure
                // is reported once (on stderr, the log itself being unwritable) and the lines
                // lost meanwhile are counted and reported when writing works again.
                LOG_LINES_LOST.fetch_add(1, Ordering::Relaxed);
                LOG_LINES_LOST_TOTAL.fetch_add(1, Ordering::Relaxed);
                if !LOG_WRITE_FAILING.swap(true, Ordering::Relaxed) {
                    let _ = writeln!(std::io::stderr(), "bulwark: cannot write the log file: {e}");
                }
                Ok(b.len())
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for LogFileMaker {
    type Writer = LogFileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.0.file.lock().ok())
    }
}

/// Reopens the log file (append), for log rotation; a no-op when logging to stderr or syslog.
pub fn reopen() -> Result<(), LoggingError> {
    let Some(lf) = LOG_FILE.get() else {
        return Ok(());
    };
    let f = open_log(&lf.path, true, lf.mode, lf.gid)?;
    match lf.file.lock() {
        Ok(mut g) => *g = f,
        Err(p) => *p.into_inner() = f,
    }
    tracing::info!("log file {} reopened", lf.path.display());
    Ok(())
}

/// Where syslog(3) sends its datagrams.
const SYSLOG_SOCKET: &str = "/dev/log";

/// Sends each formatted line as one syslog datagram to [`SYSLOG_SOCKET`], facility daemon, in
/// the form glibc's syslog(3) gives OpenVPN's lines: `<PRI>Mmm dd hh:mm:ss IDENT[PID]: message`
/// (local time).
struct SyslogMaker {
    sock: UnixDatagram,
    ident: String,
    offset: UtcOffset,
}

struct SyslogLine<'a> {
    maker: &'a SyslogMaker,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One syslog datagram (see [`SyslogMaker`]).
pub fn syslog_datagram(
    severity: u8,
    t: OffsetDateTime,
    ident: &str,
    pid: u32,
    text: &str,
) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(u8::from(t.month()) - 1)];
    // facility daemon (3) * 8 + severity
    format!(
        "<{}>{month} {:>2} {:02}:{:02}:{:02} {ident}[{pid}]: {text}",
        24 + u16::from(severity),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// OpenVPN's syslog level for a line: errors LOG_ERR, warnings LOG_WARNING, everything else
/// LOG_NOTICE (error.c).
pub fn syslog_severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        _ => 5,
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end_matches('\n');
        if text.is_empty() {
            return;
        }
        let now = OffsetDateTime::now_utc().to_offset(self.maker.offset);
        let msg = syslog_datagram(
            self.severity,
            now,
            &self.maker.ident,
            std::process::id(),
            text,
        );
        // Nowhere to report a failed log write (no syslog daemon: the line is lost, as with
        // syslog(3)).
        let _ = self.maker.sock.send_to(msg.as_bytes(), SYSLOG_SOCKET);
    }
}

impl<'a> MakeWriter<'a> for SyslogMaker {
    type Writer = SyslogLine<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            maker: self,
            severity: 5,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SyslogLine {
            maker: self,
            severity: syslog_severity(meta.level()),
            buf: Vec::new(),
        }
    }
}

/// Sends `lines` to syslog as errors (LOG_ERR, facility daemon) with `ident`, outside the logging
/// pipeline: for the configuration errors of a server that asked for syslog but never got as far as
/// setting up its logging. A missing syslog daemon loses the lines, as with syslog(3).
pub fn syslog_errors(ident: &str, lines: &[String]) -> Result<(), LoggingError> {
    let sock = UnixDatagram::unbound().map_err(LoggingError::Syslog)?;
    let offset = local_offset();
    for l in lines {
        let now = OffsetDateTime::now_utc().to_offset(offset);
        let msg = syslog_datagram(3, now, ident, std::process::id(), l);
        let _ = sock.send_to(msg.as_bytes(), SYSLOG_SOCKET);
    }
    Ok(())
}

/// The local UTC offset (call while single-threaded; falls back to UTC).
pub fn local_offset() -> UtcOffset {
    crate::sys::local_utc_offset_seconds()
        .and_then(|s| i32::try_from(s).ok())
        .and_then(|s| UtcOffset::from_whole_seconds(s).ok())
        .unwrap_or(UtcOffset::UTC)
}

/// Installs the global subscriber. `offset` comes from [`local_offset`] (read while single-threaded).
pub fn init(
    sink: &Sink,
    verb: u8,
    offset: UtcOffset,
    prefix: LinePrefix,
) -> Result<(), LoggingError> {
    let (writer, prefix) = match sink {
        Sink::Stdout { errors_to_stderr } => {
            TRACE_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
            (
                BoxMakeWriter::new(StdMaker {
                    errors_to_stderr: *errors_to_stderr,
                }),
                prefix,
            )
        }
        Sink::File {
            path,
            append,
            mode,
            gid,
        } => {
            let f = open_log(path, *append, *mode, *gid)?;
            let lf = std::sync::Arc::new(LogFile {
                path: path.clone(),
                mode: *mode,
                gid: *gid,
                file: Mutex::new(f),
            });
            let _ = LOG_FILE.set(std::sync::Arc::clone(&lf));
            (BoxMakeWriter::new(LogFileMaker(lf)), prefix)
        }
        Sink::Syslog(ident) => {
            let sock = UnixDatagram::unbound().map_err(LoggingError::Syslog)?;
            (
                BoxMakeWriter::new(SyslogMaker {
                    sock,
                    ident: ident.clone(),
                    offset,
                }),
                LinePrefix::None,
            )
        }
    };
    set_verb(verb);
    let (tx, rx) = tokio::sync::mpsc::channel(FORWARD_CAPACITY);
    if FORWARD_TX.set(tx).is_ok() {
        if let Ok(mut g) = FORWARD_RX.lock() {
            *g = Some(rx);
        }
    }
    // The level is filtered per event against the run-time verb (see `set_verb`).
    let subscriber = tracing_subscriber::fmt()
        .event_format(OvpnFormat { offset, prefix })
        .with_writer(writer)
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .finish();
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadySet)
}

/// Opens the log file (created, or truncated for `log`) and gives it `mode` and the group `gid`
/// whatever it had before: a file left by an earlier run with looser permissions is tightened.
fn open_log(
    path: &Path,
    append: bool,
    mode: u32,
    gid: Option<u32>,
) -> Result<std::fs::File, LoggingError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |source| LoggingError::Open {
        path: path.to_owned(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    // INVARIANT: created with the strictest of the configured mode and 0600, so the file is never
    // more open than configured, not even between the open and the chmod below.
    o.create(true)
        .mode(mode & 0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    let f = o.open(path).map_err(err)?;
    if let Some(g) = gid {
        std::os::unix::fs::fchown(&f, None, Some(g)).map_err(err)?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    Ok(f)
}

/// Runs `f` with the lines it logs kept out of the management log stream (`>LOG:` and the
/// `log` history): the management audit trail, whose lines would otherwise show every session
/// what the others did, and which OpenVPN's stream does not have.
pub fn without_management_forwarding(f: impl FnOnce()) {
    let before = FROM_BROKER.with(|c| c.replace(true));
    f();
    FROM_BROKER.with(|c| c.set(before));
}

/// Re-emits a child's log record through the parent's sink.
pub fn emit_child_record(rec: &LogRecord) {
    // The origin is not printed: OpenVPN's lines have no process tag and tools parse them as is.
    let broker = rec.origin == LogOrigin::Broker;
    FROM_BROKER.with(|c| c.set(broker));
    // The child applied its verbosity already; the record's verb level is kept so a verbosity
    // lowered meanwhile still applies, and a verb-1 information line (OpenVPN's M_INFO) shows at
    // verb 1.
    let verb = rec.verb;
    match rec.severity {
        // OpenVPN prints fatal errors at every verbosity.
        Severity::Fatal => tracing::error!(verb = 0u8, fatal = true, "{}", rec.message),
        Severity::Error => tracing::error!(verb, "{}", rec.message),
        Severity::Warning => tracing::warn!(verb, "{}", rec.message),
        Severity::Info => tracing::info!(verb, "{}", rec.message),
        Severity::Debug => tracing::debug!(verb, "{}", rec.message),
        Severity::PacketTrace => write_packet_trace(&rec.message),
    }
    FROM_BROKER.with(|c| c.set(false));
}

/// Where the verb-5 packet characters go, as OpenVPN's (written to its stderr, which is the log
/// file under `log`/`log-append`): the log file, standard error when logging to standard output,
/// nowhere under syslog.
static TRACE_TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `R`/`W`/`r`/`w` characters as they are (no time, no newline), only at exactly verb 5;
/// anything else in the text is not a packet character and is dropped.
fn write_packet_trace(text: &str) {
    if VERB.load(std::sync::atomic::Ordering::Relaxed) != 5 {
        return;
    }
    let chars: String = text
        .chars()
        .filter(|c| matches!(c, 'R' | 'W' | 'r' | 'w'))
        .collect();
    if chars.is_empty() {
        return;
    }
    if let Some(lf) = LOG_FILE.get() {
        let mut w = LogFileWriter(lf.file.lock().ok());
        let _ = w.write_all(chars.as_bytes());
    } else if TRACE_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = std::io::stderr().lock().write_all(chars.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_gets_the_configured_mode_whatever_it_had() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        open_log(&p, false, 0o600, None).unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_log(&p, true, 0o600, None).unwrap();
        assert_eq!(mode(&p), 0o600, "an existing looser file is tightened");
        open_log(&p, true, 0o640, None).unwrap();
        assert_eq!(mode(&p), 0o640);
        // a symlink is refused, not followed
        let l = dir.path().join("link.log");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(open_log(&l, true, 0o600, None).is_err());
    }

    #[test]
    fn syslog_datagrams_have_glibcs_form() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_334_454).unwrap(); // 2026-11-22 08:00:54
        assert_eq!(
            syslog_datagram(3, t, "myident", 28552, "Options error: x"),
            "<27>Nov 22 08:00:54 myident[28552]: Options error: x"
        );
        let t = OffsetDateTime::from_unix_timestamp(1_767_323_045).unwrap(); // 2026-01-02
        assert_eq!(
            syslog_datagram(5, t, "openvpn", 7, "m"),
            "<29>Jan  2 03:04:05 openvpn[7]: m"
        );
        assert_eq!(syslog_severity(&Level::ERROR), 3);
        assert_eq!(syslog_severity(&Level::WARN), 4);
        assert_eq!(syslog_severity(&Level::INFO), 5);
        assert_eq!(syslog_severity(&Level::DEBUG), 5);
    }

    #[test]
    fn timestamp_format() {
        let t = OffsetDateTime::from_unix_timestamp(1_767_323_045).unwrap();
        assert_eq!(timestamp(t), "2026-01-02 03:04:05");
    }

    #[test]
    fn verb_levels() {
        assert_eq!(default_verb_of(&Level::ERROR), 0);
        assert_eq!(default_verb_of(&Level::INFO), 1);
        assert_eq!(default_verb_of(&Level::DEBUG), 5);
        assert_eq!(default_verb_of(&Level::TRACE), 7);
    }

    /// `(seconds, microseconds, flags, message)` of a machine-readable-output line.
    pub(crate) fn parse_machine_line(l: &str) -> Option<(u64, u32, u32, &str)> {
        let (ts, rest) = l.split_once(' ')?;
        let (flags, msg) = rest.split_once(' ')?;
        let (secs, us) = ts.split_once('.')?;
        if us.len() != 6 {
            return None;
        }
        Some((
            secs.parse().ok()?,
            us.parse().ok()?,
            u32::from_str_radix(flags, 16).ok()?,
            msg,
        ))
    }

    #[test]
    fn machine_readable_prefix_has_openvpns_shape() {
        assert_eq!(
            machine_prefix(1_795_334_429_922_255, 1),
            "1795334429.922255 1 "
        );
        assert_eq!(
            machine_prefix(1_795_334_429_000_007, 0x40),
            "1795334429.000007 40 "
        );
        assert_eq!(machine_flags(&Level::ERROR), 0x21);
        assert_eq!(machine_flags(&Level::WARN), 0x40);
        assert_eq!(machine_flags(&Level::INFO), 1);
        // every line of OpenVPN 2.6.14's capture parses the way ours are built
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../shared/fixtures/openvpn-2.6/logging/server-verb3-machine-readable-output.stdout",
        );
        let Ok(text) = std::fs::read_to_string(&fixture) else {
            panic!("fixture {} missing", fixture.display());
        };
        for l in text.lines() {
            let (secs, us, flags, msg) =
                parse_machine_line(l).unwrap_or_else(|| panic!("fixture line {l:?}"));
            let ours = format!(
                "{}{msg}",
                machine_prefix(i128::from(secs) * 1_000_000 + i128::from(us), flags)
            );
            assert_eq!(ours, l);
        }
        assert!(text.contains("1795334429.925003 1 Initialization Sequence Completed"));
    }
}
