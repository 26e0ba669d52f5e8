//! The journal's file: opened (or created), checked, and brought to the current
//! schema. A damaged journal, one of a newer schema, or a directory that cannot be
//! written is refused with what to do, and left as it is.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::{Journal, JournalError};

/// The journal's schema version (`PRAGMA user_version`). A journal of a newer version
/// is refused, never changed; an older one is brought up by the migrations below.
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// `MIGRATIONS[v]` takes a journal from version `v` to `v + 1` (after [`SCHEMA`], which
/// creates what is missing). 0 → 1: a journal written before versions were kept (the
/// same tables). 1 → 2: the `idempotency` table (made by `SCHEMA`). 2 → 3: item counts
/// beside batch counts (`NULL` in the rows written before: their jobs count no items).
/// 3 → 4: the plugin a job runs (content hash), when it ended to the millisecond (its
/// `end_time` is Cortex's, to the second), when outcomes were recorded and the
/// batch times of each group of successes (`NULL` before: those jobs have no chart),
/// and an index of all jobs by time (the dashboard's list).
const MIGRATIONS: &[&str] = &[
    "",
    "",
    "ALTER TABLE succeeded ADD COLUMN items INTEGER; \
     ALTER TABLE outcomes ADD COLUMN items INTEGER; \
     ALTER TABLE outcomes ADD COLUMN dead_items INTEGER",
    "ALTER TABLE jobs ADD COLUMN plugin TEXT; \
     ALTER TABLE jobs ADD COLUMN ended_at REAL; \
     ALTER TABLE succeeded ADD COLUMN at REAL; \
     ALTER TABLE succeeded ADD COLUMN hist BLOB; \
     ALTER TABLE outcomes ADD COLUMN at REAL; \
     CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (submitted_at)",
];

/// How long the integrity check of an existing journal may take at start; beyond, the
/// check is cut short with a warning (a large journal still starts).
const CHECK_TIME: Duration = Duration::from_secs(20);

pub(super) const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY,
        api_name TEXT NOT NULL,
        submission BLOB NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        submitted_at REAL NOT NULL,
        end_time TEXT,
        total_batch_count INTEGER,
        hook TEXT NOT NULL DEFAULT 'pending',
        error TEXT
    );
    CREATE INDEX IF NOT EXISTS jobs_by_api ON jobs (api_name, submitted_at);
    CREATE TABLE IF NOT EXISTS succeeded (
        job_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        elapsed REAL NOT NULL,
        indexes BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS succeeded_by_job ON succeeded (job_id);
    CREATE TABLE IF NOT EXISTS outcomes (
        job_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        state INTEGER NOT NULL,
        elapsed REAL,
        attempts INTEGER,
        kind TEXT,
        message TEXT,
        body BLOB,
        PRIMARY KEY (job_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY,
        api_name TEXT NOT NULL,
        digest BLOB NOT NULL,
        job_id TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS published (
        job_id TEXT PRIMARY KEY,
        upto INTEGER NOT NULL
    ) WITHOUT ROWID;
";

impl Journal {
    /// Opens (or creates) `dir/journal.sqlite`. An existing journal is checked first
    /// (SQLite's `quick_check`, cut short after 20 s) and its schema version read; a
    /// damaged journal, one written by a newer wasmbatch, or a directory that cannot
    /// be written is an error that says what to do — nothing is changed or reset.
    pub(crate) fn open(dir: &Path) -> Result<Journal, JournalError> {
        let path = dir.join("journal.sqlite");
        let fail = |e: &dyn std::fmt::Display| JournalError { path: path.clone(), error: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let writable = |e: rusqlite::Error| {
            let text = e.to_string();
            if text.contains("readonly") || text.contains("read-only") || text.contains("unable to open") {
                fail(&format!(
                    "{text}: the data directory {} cannot be written (a read-only file system or its permissions); \
                     give --data-dir a writable directory",
                    dir.display()
                ))
            } else {
                fail(&e)
            }
        };
        let existed = path.exists();
        let conn = Connection::open(&path).map_err(writable)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(|e| fail(&e))?;
        if existed {
            Self::check(&conn).map_err(|e| fail(&e))?;
        }
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| fail(&e))?;
        if version > SCHEMA_VERSION {
            return Err(fail(&format!(
                "written by a newer wasmbatch (journal schema {version}; this one knows up to {SCHEMA_VERSION}): run \
                 that version, or point --data-dir elsewhere; the journal is left as it is"
            )));
        }
        conn.execute_batch(SCHEMA).map_err(writable)?;
        for (from, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = from as i64 + 1;
            conn.execute_batch(&format!("BEGIN; {step}; PRAGMA user_version = {to}; COMMIT;")).map_err(writable)?;
        }
        Ok(Journal { conn: Arc::new(Mutex::new(conn)), reader: Arc::default(), path, results: Arc::default() })
    }

    /// SQLite's `quick_check` of an existing journal, cut short after [`CHECK_TIME`].
    fn check(conn: &Connection) -> Result<(), String> {
        // A watchdog interrupts the check at its deadline; it ends as soon as the
        // check does (the channel closes).
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let handle = conn.get_interrupt_handle();
        let watchdog = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(CHECK_TIME) {
                handle.interrupt();
            }
        });
        let outcome = conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0));
        drop(done);
        let _ = watchdog.join();
        match outcome {
            Ok(ok) if ok == "ok" => Ok(()),
            Ok(problem) => Err(format!(
                "damaged: the integrity check found {problem:?}; restore it from a backup or move it away (the \
                 journal is left as it is)"
            )),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                tracing::warn!("the journal's integrity check did not end within {CHECK_TIME:?}; it was cut short");
                Ok(())
            }
            Err(e) => Err(format!(
                "damaged or not a journal ({e}); restore it from a backup or move it away (the journal is left as it \
                 is)"
            )),
        }
    }
}
