//! The runner's unit tests.

use super::*;
use crate::job::dead_letter::DeadLetters;
use crate::job::status::ProgressMode;

/// An executor whose worker panics on one batch (a host bug, simulated).
struct PanicsOn(u64);

impl Executor for PanicsOn {
    type Worker = ();
    fn name(&self) -> &'static str {
        "test"
    }
    fn worker(&self, _index: usize) {}
    fn run(&self, _: &mut (), _: &str, attempt: Attempt<'_>) -> Result<crate::plugin::BatchOutput, AttemptError> {
        assert!(attempt.index != self.0, "boom on {}", attempt.index);
        Ok(Default::default())
    }
    fn on_job_complete(&self, _: Vec<()>, _: &str, _: Bytes) -> Completion {
        Completion::Succeeded
    }
    fn cancel(&self) {}
}

/// `n` one-item batches; the reader panics instead of giving batch `panic_at`.
struct Numbers {
    next: u64,
    n: u64,
    panic_at: Option<u64>,
}

impl BatchSource for Numbers {
    fn next_batch(&mut self) -> Result<Option<Batch>, super::super::source::SourceError> {
        assert!(Some(self.next) != self.panic_at, "the reader fell over");
        if self.next == self.n {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(Batch { index: self.next - 1, items: 1, body: format!("[{}]", self.next).into_bytes(), spans: None }))
    }
    fn total_batches(&self) -> Option<u64> {
        None
    }
}

fn job(dir: &tempfile::TempDir, source: Numbers, executor: PanicsOn) -> JobStatus {
    let plan = JobPlan {
        job_id: "j".into(),
        api_name: "a".into(),
        workers: 2,
        config: Value::Null,
        timeout: None,
        max_attempts: 3,
        ledger: Box::new(DeadLetters::create(&dir.path().join("dl.jsonl")).unwrap()),
        budget: None,
        start_time: SystemTime::now(),
    };
    let mut progress = ProgressView::new(ProgressMode::Off, Duration::from_secs(5));
    run(plan, Box::new(source), Arc::new(executor), StopFlag::default(), &mut progress, Metrics::new("a"))
}

#[test]
fn a_worker_panic_fails_the_job_loudly_and_loses_no_batch() {
    let dir = tempfile::tempdir().unwrap();
    let status = job(&dir, Numbers { next: 0, n: 6, panic_at: None }, PanicsOn(2));
    assert_eq!(status.status, JobState::WorkerError);
    assert_eq!(status.exit_code(), 1);
    assert_eq!((status.metrics.succeeded, status.metrics.failed, status.total_batch_count), (5, 1, 6));
    assert!(status.error.as_deref().unwrap().contains("panicked on batch 2: boom on 2"), "{:?}", status.error);
    assert_eq!(status.on_job_complete, HookOutcome::Skipped);
    let record: Value =
        serde_json::from_str(std::fs::read_to_string(dir.path().join("dl.jsonl")).unwrap().trim()).unwrap();
    assert_eq!((record["batch_index"].as_u64(), record["error"]["kind"].as_str()), (Some(2), Some("worker_panic")));
}

#[test]
fn a_reader_panic_fails_the_job_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let status = job(&dir, Numbers { next: 0, n: 6, panic_at: Some(3) }, PanicsOn(u64::MAX));
    assert_eq!(status.status, JobState::WorkerError);
    assert_eq!(status.exit_code(), 1);
    assert_eq!((status.total_batch_count, status.metrics.succeeded), (3, 3));
    assert!(status.error.as_deref().unwrap().contains("the input reader panicked: the reader fell over"));
    assert!(!dir.path().join("dl.jsonl").exists(), "no dead letters, no file");
}

#[test]
fn a_stop_wakes_sleepers_and_keeps_the_first_reason() {
    let stop = StopFlag::default();
    let sleeper = {
        let stop = stop.clone();
        thread::spawn(move || stop.sleep(Duration::from_secs(600)))
    };
    stop.set(StopReason::TimedOut);
    stop.stop();
    assert!(sleeper.join().unwrap(), "woken by the stop, not the 10 minutes");
    assert_eq!(stop.reason(), Some(StopReason::TimedOut));
}

#[test]
fn the_end_of_what_is_watched_wakes_its_watcher_without_a_stop() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = StopFlag::default();
    let ended = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, ended) = (stop.clone(), ended.clone());
        thread::spawn(move || stop.sleep_unless(Duration::from_secs(600), || ended.load(Ordering::Acquire)))
    };
    ended.store(true, Ordering::Release);
    stop.wake();
    assert!(!watcher.join().unwrap(), "woken by the end, not the 10 minutes, and no stop");
    assert_eq!(stop.reason(), None);
}
