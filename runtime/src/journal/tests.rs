//! The journal's unit tests.

use super::*;
use crate::job::dead_letter::Record;
use crate::job::executor::{AttemptError, AttemptKind};
use crate::job::ledger::Ledger;

fn job(id: &str) -> JobRow {
    JobRow {
        job_id: id.into(),
        api_name: "sum".into(),
        submission: b"{}".to_vec(),
        spec: serde_json::json!({"job_id": id}),
        status: JobState::Pending,
        submitted_at: 1.0,
        end_time: None,
        total_batch_count: None,
        hook: Hook::Pending,
        error: None,
    }
}

#[test]
fn outcomes_survive_reopening_and_add_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let journal = Journal::open(dir.path()).unwrap();
        journal.insert_job(&job("a"), None).unwrap();
        let ledger = journal.ledger("a");
        ledger.succeeded(&[(0, Duration::from_millis(10)), (2, Duration::from_millis(30))]).unwrap();
        let error = AttemptError { kind: AttemptKind::Connection, message: "gone".into() };
        ledger.dead_lettered(&[Record { index: 70, attempts: 3, error: &error, body: b"[1]" }]).unwrap();
        journal.set_total("a", 71).unwrap();
        journal.set_hook("a", Hook::Running).unwrap();
    }
    let journal = Journal::open(dir.path()).unwrap();
    let counts = journal.counts("a").unwrap();
    assert_eq!((counts.succeeded, counts.failed, counts.unhandled), (2, 1, 0));
    assert!((counts.average_time_per_batch.unwrap() - 0.02).abs() < 1e-9);
    let ended = journal.ended("a").unwrap();
    assert_eq!(ended, vec![0b101, 1 << 6]);
    let dead = journal.dead_letters("a").unwrap();
    assert_eq!((dead[0].index, dead[0].kind.as_str(), dead[0].body.as_slice()), (70, "connection", &b"[1]"[..]));
    let row = journal.job("a").unwrap().unwrap();
    assert_eq!((row.total_batch_count, row.hook, row.status), (Some(71), Hook::Running, JobState::Pending));
    assert_eq!(journal.unfinished().unwrap().len(), 1);
    assert_eq!(journal.ledger("a").totals(), Some((2, 1, 71)));
}
