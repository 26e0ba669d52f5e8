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
        ended_at: None,
        total_batch_count: None,
        hook: Hook::Pending,
        error: None,
        plugin: None,
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

#[test]
fn the_dashboard_reads_pages_timelines_and_letter_heads_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    for i in 0..25 {
        let mut row = job(&format!("j{i:02}"));
        row.submitted_at = f64::from(i);
        row.api_name = if i % 5 == 0 { "other".into() } else { "sum".into() };
        row.plugin = Some(format!("{i:064x}"));
        journal.insert_job(&row, None).unwrap();
    }
    journal.set_status("j24", JobState::Running, None, None).unwrap();
    let page = |api: Option<&str>, states: Vec<JobState>, offset| {
        journal.jobs_page(&JobFilter { api: api.map(Into::into), states, offset, limit: 10 }).unwrap()
    };
    let all = page(None, vec![], 0);
    assert_eq!(all.total, 25);
    let ids: Vec<&str> = all.jobs.iter().map(|(r, _)| r.job_id.as_str()).collect();
    assert_eq!(ids[..3], ["j24", "j23", "j22"], "newest first");
    assert_eq!(all.jobs[0].0.plugin.as_deref(), Some(format!("{:064x}", 24).as_str()), "the plugin is kept");
    assert_eq!(page(None, vec![], 20).jobs.len(), 5, "the last page");
    assert_eq!(page(Some("other"), vec![], 0).total, 5);
    let running = page(Some("sum"), vec![JobState::Running, JobState::Pending], 0);
    assert_eq!(running.total, 20);
    assert_eq!(page(Some("sum"), vec![JobState::Running], 0).total, 1);
    assert!(journal.has_jobs("other").unwrap() && !journal.has_jobs("nobody").unwrap());

    let ledger = journal.ledger("j24");
    let times: Vec<(u64, Duration)> =
        (0..64).map(|i| (i, Duration::from_millis(if i < 60 { 2 } else { 50 }))).collect();
    ledger.succeeded(&times, Some(64)).unwrap();
    let error = AttemptError { kind: AttemptKind::Connection, message: "gone".into() };
    let body = format!("[{}]", "1,".repeat(500) + "1");
    ledger
        .dead_lettered(&[Record { index: 64, attempts: 3, error: &error, body: body.as_bytes(), items: None }])
        .unwrap();
    let timeline = journal.timeline("j24").unwrap();
    assert_eq!(timeline.points.len(), 1, "{timeline:?}");
    let point = &timeline.points[0];
    assert_eq!((point.succeeded, point.failed), (64, 1));
    assert!((1.5..2.5).contains(&point.p50.unwrap()), "{point:?}");
    assert!((37.5..62.5).contains(&point.p99.unwrap()), "{point:?}");
    assert!(journal.timeline("j00").unwrap().points.is_empty());
    assert_eq!(journal.read_counts("j24").unwrap(), journal.counts("j24").unwrap());
    let (heads, total) = journal.dead_letter_heads("j24", 0, 10, 16).unwrap();
    assert_eq!(total, 1);
    assert_eq!(heads[0].0.body, b"[1,1,1,1,1,1,1,1");
    assert_eq!(heads[0].1, body.len() as u64);
}

#[test]
fn ten_thousand_jobs_page_through_to_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    for i in 0..10_000 {
        let mut row = job(&format!("j{i:05}"));
        row.submitted_at = f64::from(i);
        row.status = if i % 100 == 0 { JobState::Running } else { JobState::Succeeded };
        journal.insert_job(&row, None).unwrap();
        if i % 100 == 0 {
            journal.set_status(&row.job_id, JobState::Running, None, None).unwrap();
        } else {
            journal.set_status(&row.job_id, JobState::Succeeded, Some("t"), None).unwrap();
        }
    }
    let filter = |states: Vec<JobState>, offset| JobFilter { api: Some("sum".into()), states, offset, limit: 500 };
    let mut seen = 0;
    let mut offset = 0;
    loop {
        let page = journal.jobs_page(&filter(vec![], offset)).unwrap();
        assert_eq!(page.total, 10_000);
        if page.jobs.is_empty() {
            break;
        }
        seen += page.jobs.len();
        offset += page.jobs.len() as u64;
    }
    assert_eq!(seen, 10_000);
    let last = journal.jobs_page(&filter(vec![], 9_999)).unwrap();
    assert_eq!(last.jobs[0].0.job_id, "j00000", "the oldest is last");
    assert_eq!(journal.jobs_page(&filter(vec![JobState::Running], 0)).unwrap().total, 100);
}
