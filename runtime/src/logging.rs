//! Log output: the host's own events and the guest's lines, through `tracing`.
//!
//! Text for people by default, one JSON object per line (`--log-format json`) for
//! machines, with the key `message` as Cortex used. Guest output is tagged with the
//! job ID and the stream it came from, under the target `guest`.

use tracing_subscriber::EnvFilter;

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides the
/// default filter (`info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second call (tests that run the CLI twice in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Logs a line a guest sent through the `log` import, at the level it asked for.
pub(crate) fn guest_log(job_id: &str, level: i32, line: &str) {
    match level {
        0 => tracing::error!(target: "guest", job_id, "{line}"),
        1 => tracing::warn!(target: "guest", job_id, "{line}"),
        2 => tracing::info!(target: "guest", job_id, "{line}"),
        3 => tracing::debug!(target: "guest", job_id, "{line}"),
        _ => tracing::trace!(target: "guest", job_id, "{line}"),
    }
}

/// Logs what a guest wrote to `stream` during one call, a line per event.
pub(crate) fn guest_output(job_id: &str, stream: &'static str, bytes: &[u8], dropped: u64) {
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            tracing::info!(target: "guest", job_id, stream, "{line}");
        }
    }
    if dropped > 0 {
        tracing::warn!(target: "guest", job_id, stream, dropped_bytes = dropped, "guest output over the per-call limit was dropped");
    }
}
