//! Log output: the host's own events and the guest's lines, through `tracing`.
//!
//! Text for people by default, one JSON object per line (`--log-format json`) for
//! machines, with the key `message` as Cortex used. Guest output is tagged with the
//! API name, the job ID, the batch and the stream it came from, under the target
//! `guest`.

use tracing_subscriber::EnvFilter;

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The lowest level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal progress (the default).
    Info,
    /// Detail, the guests' debug lines included.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The progress bar drawn on stderr, if any: log lines are written above it.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Makes `bar` the one log lines are written above (`None`: no bar any more).
pub(crate) fn set_progress_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// The log's writer: stderr, with the progress bar cleared while a line is written
/// and drawn again after it, so that the two never mix on a terminal.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global subscriber, writing to stderr, at `level` when given, else by
/// `RUST_LOG` (a full filter, e.g. `info,guest=debug`), else at INFO.
pub(crate) fn init(format: LogFormat, level: Option<LogLevel>) {
    // The AMQP client logs every closed channel as an error, expected ones too (a
    // queue looked for before it exists); wasmbatch logs what matters itself. A
    // `RUST_LOG` that names `lapin` still shows them.
    let filter = match level {
        Some(level) => EnvFilter::new(format!("{},lapin=off", level.as_str())),
        None => match std::env::var("RUST_LOG") {
            Ok(filter) if filter.contains("lapin") => EnvFilter::new(filter),
            Ok(filter) => EnvFilter::try_new(format!("{filter},lapin=off")).unwrap_or_else(|_| EnvFilter::new("info")),
            Err(_) => EnvFilter::new("info,lapin=off"),
        },
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Stderr);
    // A second call (tests that run the CLI twice in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Who a guest line belongs to: the API, the job, and the batch when there is one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestTag<'a> {
    pub(crate) api_name: &'a str,
    pub(crate) job_id: &'a str,
    pub(crate) batch: Option<u64>,
}

/// Emits one guest event at a level, with the tag's fields (no `batch` outside batches).
macro_rules! guest_event {
    ($level:expr, $tag:expr, $($field:tt)*) => {{
        let tag: &GuestTag<'_> = $tag;
        let (api_name, job_id) = (tag.api_name, tag.job_id);
        match tag.batch {
            Some(batch) => tracing::event!(target: "guest", $level, api_name, job_id, batch, $($field)*),
            None => tracing::event!(target: "guest", $level, api_name, job_id, $($field)*),
        }
    }};
}

/// Logs a line a guest sent through the `log` import, at the level it asked for.
pub(crate) fn guest_log(tag: &GuestTag<'_>, level: i32, line: &str) {
    use tracing::Level;
    match level {
        0 => guest_event!(Level::ERROR, tag, "{line}"),
        1 => guest_event!(Level::WARN, tag, "{line}"),
        2 => guest_event!(Level::INFO, tag, "{line}"),
        3 => guest_event!(Level::DEBUG, tag, "{line}"),
        _ => guest_event!(Level::TRACE, tag, "{line}"),
    }
}

/// Logs what a guest wrote to `stream` during one call, a line per event: stdout at
/// INFO, stderr at WARN.
pub(crate) fn guest_output(tag: &GuestTag<'_>, stream: &'static str, bytes: &[u8], dropped: u64) {
    use tracing::Level;
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            if stream == "stderr" {
                guest_event!(Level::WARN, tag, stream, "{line}");
            } else {
                guest_event!(Level::INFO, tag, stream, "{line}");
            }
        }
    }
    if dropped > 0 {
        guest_event!(
            Level::WARN,
            tag,
            stream,
            dropped_bytes = dropped,
            "guest output over the per-call limit was dropped"
        );
    }
}
