//! The journal's unit tests.

use super::*;
use crate::job::dead_letter::Record;
use crate::job::executor::{AttemptError, AttemptKind};
use crate::job::ledger::Ledger;
use std::time::Duration;

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
        ledger.succeeded(&[(0, Duration::from_millis(10)), (2, Duration::from_millis(30))], Some(5)).unwrap();
        let error = AttemptError { kind: AttemptKind::Connection, message: "gone".into() };
        // Batch 70 had 3 items; one failed alone.
        let record = Record { index: 70, attempts: 3, error: &error, body: b"[1]", items: Some(3) };
        ledger.dead_lettered(&[record]).unwrap();
        journal.set_total("a", 71).unwrap();
        journal.set_hook("a", Hook::Running).unwrap();
    }
    let journal = Journal::open(dir.path()).unwrap();
    let counts = journal.counts("a").unwrap();
    assert_eq!((counts.succeeded, counts.failed, counts.unhandled), (2, 1, 0));
    assert!((counts.average_time_per_batch.unwrap() - 0.02).abs() < 1e-9);
    assert_eq!(counts.items, Some(ItemCounts { succeeded: 5 + 2, dead_lettered: 1 }));
    let ended = journal.ended("a").unwrap();
    assert_eq!(ended, vec![0b101, 1 << 6]);
    let dead = journal.dead_letters("a").unwrap();
    assert_eq!((dead[0].index, dead[0].kind.as_str(), dead[0].body.as_slice()), (70, "connection", &b"[1]"[..]));
    let row = journal.job("a").unwrap().unwrap();
    assert_eq!((row.total_batch_count, row.hook, row.status), (Some(71), Hook::Running, JobState::Pending));
    assert_eq!(journal.unfinished().unwrap().len(), 1);
    assert_eq!(journal.ledger("a").totals(), Some((2, 1, 71)));
}

#[test]
fn a_journal_of_schema_2_gains_item_counts_and_its_old_jobs_count_none() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch("PRAGMA user_version = 2").unwrap();
        conn.execute(
            "INSERT INTO succeeded (job_id, n, elapsed, indexes) VALUES ('old', 1, 0.1, ?1)",
            [0u64.to_le_bytes().to_vec()],
        )
        .unwrap();
    }
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.counts("old").unwrap().items, None, "its rows predate item counts");
    journal.insert_job(&job("new"), None).unwrap();
    journal.ledger("new").succeeded(&[(0, Duration::from_millis(1))], Some(4)).unwrap();
    let counts = journal.counts("new").unwrap();
    assert_eq!((counts.succeeded, counts.items), (1, Some(ItemCounts { succeeded: 4, dead_lettered: 0 })));
    let version: i64 = rusqlite::Connection::open(dir.path().join("journal.sqlite"))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}
