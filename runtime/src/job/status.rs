//! What the user sees of a job: its ID, progress while it runs, and its final status
//! with Cortex's names.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

/// A job ID in Cortex's form: `%x` of `i64::MAX − nanoseconds since the epoch`, 16 hex
/// characters that decrease over time, so that listings sort newest first.
pub fn new_job_id(now: SystemTime) -> String {
    let nanos = now.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    format!("{:x}", i64::MAX - nanos)
}

/// A job's spec as Cortex gives it (`BatchJob`, also `/cortex/spec/job.json`):
/// `total_batch_count` is added once known.
pub fn job_spec(
    job_id: &str,
    api_name: &str,
    workers: usize,
    config: &Value,
    timeout: Option<u64>,
    start_time: SystemTime,
) -> Value {
    serde_json::json!({
        "job_id": job_id,
        "api_name": api_name,
        "kind": "BatchAPI",
        "workers": workers,
        "sqs_dead_letter_queue": null,
        "config": config,
        "timeout": timeout,
        "api_id": "",
        "sqs_url": "",
        "start_time": rfc3339(start_time),
    })
}

/// `SystemTime` as RFC 3339 in UTC, to the second (`2026-11-27T18:04:05Z`).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH)).to_string()
}

/// Item counts of a run (batches are what Cortex counts; items are what a user has).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ItemCounts {
    /// Items handled successfully.
    pub succeeded: u64,
    /// Items dead-lettered.
    pub dead_lettered: u64,
}

/// Batch counts, as Cortex's status reports them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    /// Batches that succeeded.
    pub succeeded: u64,
    /// Batches that failed on every attempt (and went to the dead-letter file).
    pub failed: u64,
    /// Mean seconds per succeeded batch (`null` when none succeeded).
    pub average_time_per_batch: Option<f64>,
}

/// A job's status, with Cortex's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Submitted, not started yet.
    Pending,
    /// Batches are being handled (also: interrupted by a shutdown, to be resumed).
    Running,
    /// Every batch succeeded.
    Succeeded,
    /// Every batch was handled; some failed for good.
    CompletedWithFailures,
    /// The job's timeout passed.
    TimedOut,
    /// The job was stopped.
    Stopped,
    /// The input could not be read (or was malformed part-way).
    EnqueueFailed,
    /// The host failed: a worker or the reader panicked, a dead-letter record could not
    /// be written, or the counts do not add up.
    WorkerError,
}

impl JobState {
    /// Whether the job has ended (Cortex's `IsCompleted`).
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    /// Every state.
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::CompletedWithFailures,
        JobState::TimedOut,
        JobState::Stopped,
        JobState::EnqueueFailed,
        JobState::WorkerError,
    ];

    /// The state named `name` (as [`JobState::as_str`] gives it).
    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The name Cortex gives the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::CompletedWithFailures => "completed_with_failures",
            JobState::TimedOut => "timed_out",
            JobState::Stopped => "stopped",
            JobState::EnqueueFailed => "enqueue_failed",
            JobState::WorkerError => "worker_error",
        }
    }
}

/// How the job's on-job-complete call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookOutcome {
    /// It ran and succeeded.
    Succeeded,
    /// The handler has none.
    NotFound,
    /// It failed (the reason is the status's `error`).
    Failed,
    /// It was not called: the job did not complete.
    Skipped,
}

impl HookOutcome {
    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HookOutcome::Succeeded => "succeeded",
            HookOutcome::NotFound => "not_found",
            HookOutcome::Failed => "failed",
            HookOutcome::Skipped => "skipped",
        }
    }
}

/// The final status of a job (`--status-file`, `--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The job's ID.
    pub job_id: String,
    /// The API name given to the job.
    pub api_name: String,
    /// Always `BatchAPI`.
    pub kind: &'static str,
    /// The job's status.
    pub status: JobState,
    /// Workers.
    pub workers: usize,
    /// The job's config.
    pub config: Value,
    /// The job's timeout in seconds.
    pub timeout: Option<u64>,
    /// When the job started (RFC 3339).
    pub start_time: String,
    /// When it ended (RFC 3339).
    pub end_time: String,
    /// Batches read from the input.
    pub total_batch_count: u64,
    /// Items in those batches.
    pub total_item_count: u64,
    /// Batch counts.
    pub metrics: Metrics,
    /// Batches that never got a complete attempt because the job timed out or stopped.
    pub unhandled_batch_count: u64,
    /// Batches written to the dead-letter file (failed + unhandled).
    pub dead_lettered_batch_count: u64,
    /// Batches left for a resume: not handled when the job was interrupted.
    pub pending_batch_count: u64,
    /// The state directory to resume the job from, when it can be resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_with: Option<String>,
    /// Items of the batches that ended, when this run saw them all (not after a
    /// resume): those that succeeded, and those dead-lettered (with their batch, or
    /// alone when they failed alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemCounts>,
    /// What the guests saw at `/mnt`, and why (`run` with a plugin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// The dead-letter file, when anything was written to it.
    pub dead_letter_file: Option<String>,
    /// Attempts beyond the first, over all batches.
    pub retries: u64,
    /// `in_process` or `endpoint`.
    pub executor: &'static str,
    /// How on-job-complete went.
    pub on_job_complete: HookOutcome,
    /// What went wrong with the job as a whole (input errors, hook failures).
    pub error: Option<String>,
}

impl JobStatus {
    /// The process exit code: 0 all succeeded (and the counts add up), 2 invalid
    /// input, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            JobState::Succeeded if self.on_job_complete != HookOutcome::Failed && self.accounted() => 0,
            JobState::EnqueueFailed => 2,
            _ => 1,
        }
    }

    /// Whether every batch read is succeeded, dead-lettered or left for a resume.
    pub fn accounted(&self) -> bool {
        self.metrics.succeeded + self.dead_lettered_batch_count + self.pending_batch_count == self.total_batch_count
    }

    /// The human summary printed at the end of a job.
    pub fn summary(&self) -> String {
        let m = &self.metrics;
        let mut s = format!(
            "job {} {}: {} batches ({} items) — {} succeeded, {} dead-lettered",
            self.job_id,
            self.status.as_str(),
            self.total_batch_count,
            self.total_item_count,
            m.succeeded,
            self.dead_lettered_batch_count
        );
        if self.dead_lettered_batch_count > 0 {
            s.push_str(&format!(" ({} failed, {} unhandled)", m.failed, self.unhandled_batch_count));
        }
        let accounted = m.succeeded + self.dead_lettered_batch_count + self.pending_batch_count;
        let check = if self.accounted() { "✓" } else { "✗ MISMATCH" };
        if self.pending_batch_count > 0 {
            s.push_str(&format!(
                "\n  {} + {} + {} pending = {} of {} batches {check}",
                m.succeeded,
                self.dead_lettered_batch_count,
                self.pending_batch_count,
                accounted,
                self.total_batch_count
            ));
        } else {
            s.push_str(&format!(
                "\n  {} + {} = {} of {} batches {check}",
                m.succeeded, self.dead_lettered_batch_count, accounted, self.total_batch_count
            ));
        }
        if let Some(items) = &self.items {
            s.push_str(&format!(
                "\n  items: {} succeeded, {} dead-lettered, of {}",
                items.succeeded, items.dead_lettered, self.total_item_count
            ));
        }
        if let Some(avg) = m.average_time_per_batch {
            s.push_str(&format!("\n  average time per batch: {:.1} ms; retries: {}", avg * 1e3, self.retries));
        }
        if let Some(file) = &self.dead_letter_file {
            s.push_str(&format!("\n  dead-letter file: {file} (re-run with --retry-from)"));
        }
        s.push_str(&format!("\n  on-job-complete: {}", self.on_job_complete.as_str()));
        if let Some(mount) = &self.mount {
            s.push_str(&format!("\n  guests' /mnt: {mount}"));
        }
        if let Some(dir) = &self.resume_with {
            s.push_str(&format!("\n  resume with: wasmbatch run --resume {dir} (and the same --plugin or --endpoint)"));
        }
        if let Some(error) = &self.error {
            s.push_str(&format!("\n  error: {error}"));
        }
        s
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// A bar redrawn in place (drawn only on a terminal).
    Bar,
    /// A line every few seconds.
    Lines,
    /// Nothing.
    Off,
}

/// A snapshot of a running job, for the progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Batches finished (any outcome).
    pub done: u64,
    /// Items in finished batches, when known (else the rate is in batches).
    pub items: Option<u64>,
    /// Batches dead-lettered so far.
    pub failed: u64,
    /// Total batches, when known.
    pub total: Option<u64>,
}

/// Draws progress on stderr: a bar (indicatif) with rate and ETA on a terminal, a
/// plain line every `interval` otherwise.
pub struct ProgressView {
    mode: ProgressMode,
    started: Instant,
    last: Instant,
    interval: Duration,
    bar: Option<ProgressBar>,
}

impl ProgressView {
    /// A view in `mode` (resolving `auto` by whether stderr is a terminal).
    pub fn new(mode: ProgressMode, interval: Duration) -> ProgressView {
        use std::io::IsTerminal;
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines,
            other => other,
        };
        let now = Instant::now();
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(Self::style(false));
            crate::logging::set_progress_bar(Some(bar.clone()));
            bar
        });
        ProgressView { mode, started: now, last: now, interval, bar }
    }

    /// The bar's look: a bar, counts, rate, failures and ETA when the total is known;
    /// a spinner, counts, rate, failures and the time so far when it is not.
    fn style(total_known: bool) -> ProgressStyle {
        let template = if total_known {
            "[{bar:30}] {pos}/{len} batches, {msg}, ETA {eta}"
        } else {
            "{spinner} {pos} batches, {msg}, {elapsed}"
        };
        ProgressStyle::with_template(template).expect("a valid template").progress_chars("#>-")
    }

    /// The rate (items per second when items are counted, else batches) and failures.
    fn rate_and_failures(&self, p: Progress) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = match p.items {
            Some(items) => format!("{:.0} items/s", items as f64 / secs),
            None => format!("{:.1} batches/s", p.done as f64 / secs),
        };
        format!("{rate}, {} failed", p.failed)
    }

    fn line(&self, p: Progress) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut s = match p.total {
            Some(total) => format!("{}/{} batches", p.done, total),
            None => format!("{} batches", p.done),
        };
        s.push_str(&format!(", {}", self.rate_and_failures(p)));
        if let Some(total) = p.total.filter(|_| p.done > 0) {
            let eta = secs / p.done as f64 * total.saturating_sub(p.done) as f64;
            s.push_str(&format!(", ETA {eta:.0}s"));
        }
        s
    }

    /// Shows `p`: the bar at once (indicatif limits its redraws to 10 a second), a line
    /// when `interval` has passed since the last.
    pub fn update(&mut self, p: Progress) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                if let Some(total) = p.total
                    && bar.length() != Some(total)
                {
                    bar.set_length(total);
                    bar.set_style(Self::style(true));
                }
                bar.set_position(p.done);
                bar.set_message(self.rate_and_failures(p));
            }
            (None, ProgressMode::Lines) => {
                if self.last.elapsed() >= self.interval {
                    eprintln!("progress: {}", self.line(p));
                    self.last = Instant::now();
                }
            }
            (None, _) => {}
        }
    }

    /// Ends the display: the bar drawn a last time with the final counts, and left.
    pub fn finish(&mut self, p: Progress) {
        self.update(p);
        if let Some(bar) = self.bar.take() {
            bar.finish();
            crate::logging::set_progress_bar(None);
            // What follows starts on a line of its own.
            if !bar.is_hidden() {
                eprintln!();
            }
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        // Ended without `finish` (an error): the bar stays as it was, and log lines
        // are written plainly again.
        if let Some(bar) = self.bar.take() {
            bar.abandon();
            crate::logging::set_progress_bar(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_16_hex_and_decrease_with_time() {
        let a = new_job_id(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let b = new_job_id(UNIX_EPOCH + Duration::from_secs(1_700_000_001));
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(b < a);
    }

    #[test]
    fn progress_lines_show_counts_rate_failures_and_eta() {
        let view = ProgressView::new(ProgressMode::Lines, Duration::from_secs(5));
        let known = view.line(Progress { done: 10, items: Some(100), failed: 2, total: Some(40) });
        assert!(known.starts_with("10/40 batches, "), "{known}");
        assert!(known.contains(" items/s, 2 failed, ETA "), "{known}");
        let streamed = view.line(Progress { done: 3, items: Some(30), failed: 0, total: None });
        assert!(streamed.starts_with("3 batches, ") && !streamed.contains("ETA"), "{streamed}");
        let watched = view.line(Progress { done: 3, items: None, failed: 0, total: Some(6) });
        assert!(watched.contains(" batches/s, 0 failed"), "{watched}");
    }

    #[test]
    fn summary_checks_that_the_counts_add_up() {
        let mut status = JobStatus {
            job_id: "j".into(),
            api_name: "a".into(),
            kind: "BatchAPI",
            status: JobState::CompletedWithFailures,
            workers: 1,
            config: Value::Null,
            timeout: None,
            start_time: String::new(),
            end_time: String::new(),
            total_batch_count: 5,
            total_item_count: 9,
            metrics: Metrics { succeeded: 3, failed: 1, average_time_per_batch: Some(0.002) },
            unhandled_batch_count: 1,
            dead_lettered_batch_count: 2,
            pending_batch_count: 0,
            resume_with: None,
            items: None,
            mount: None,
            dead_letter_file: Some("dl.jsonl".into()),
            retries: 4,
            executor: "in_process",
            on_job_complete: HookOutcome::Succeeded,
            error: None,
        };
        let summary = status.summary();
        assert!(summary.contains("3 + 2 = 5 of 5 batches ✓"), "{summary}");
        assert!(summary.contains("(1 failed, 1 unhandled)"), "{summary}");
        assert_eq!(status.exit_code(), 1);
        status.status = JobState::Succeeded;
        status.on_job_complete = HookOutcome::Failed;
        assert_eq!(status.exit_code(), 1);
        status.on_job_complete = HookOutcome::NotFound;
        assert_eq!(status.exit_code(), 0);
        status.dead_lettered_batch_count = 1;
        assert!(status.summary().contains("✗ MISMATCH"));
        assert_eq!(status.exit_code(), 1, "counts that do not add up are never a success");
        status.status = JobState::EnqueueFailed;
        assert_eq!(status.exit_code(), 2);
        assert_eq!(serde_json::to_value(JobState::WorkerError).unwrap(), "worker_error");
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_798_761_600)), "2027-01-01T00:00:00Z");
    }
}
