//! What the dashboard reads: jobs a page at a time (filtered by API and status), a
//! job's counts, its timeline (batches a second and batch-time percentiles over its
//! life), and the first bytes of its dead letters. Read on the journal's second,
//! read-only connection, so that a page open on a job of a million batches does not
//! hold up the job recording its outcomes.
//!
//! Batch times are kept per group of successes as a [`Histogram`]: log-scaled buckets,
//! four to a doubling (a time is known within 25 %), of microseconds; a group's is a
//! few bytes (the buckets it uses), and the buckets of any span of time add up.

use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::{Counts, JobRow, Journal};
use crate::job::status::JobState;

/// Batch times, counted in log-scaled buckets of microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
}

/// Buckets: `0..4` are 0–3 µs one each; above, four to a doubling, up to `u64::MAX`.
const BUCKETS: usize = 252;

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS] }
    }
}

impl Histogram {
    /// The bucket of `micros`.
    fn bucket(micros: u64) -> usize {
        if micros < 4 {
            return micros as usize;
        }
        let b = 63 - micros.leading_zeros() as usize;
        let sub = ((micros >> (b - 2)) & 3) as usize;
        4 * (b - 1) + sub
    }

    /// The middle of bucket `i`, in microseconds.
    fn middle(i: usize) -> f64 {
        if i < 4 {
            return i as f64;
        }
        let (b, sub) = (i / 4 + 1, (i % 4) as u64);
        let width = 1u64 << (b - 2);
        ((4 + sub) * width) as f64 + width as f64 / 2.0
    }

    /// The histogram of `times`.
    #[cfg(test)]
    pub(crate) fn of(times: impl IntoIterator<Item = Duration>) -> Histogram {
        let mut h = Histogram::default();
        for t in times {
            h.counts[Self::bucket(t.as_micros().min(u64::MAX as u128) as u64)] += 1;
        }
        h
    }

    /// The encoding of `times`' histogram, without making the histogram (a group of
    /// successes is recorded on the batch path: a few dozen times, sorted by bucket).
    pub(crate) fn encode_times(times: impl IntoIterator<Item = Duration>) -> Vec<u8> {
        let mut buckets: Vec<u8> =
            times.into_iter().map(|t| Self::bucket(t.as_micros().min(u64::MAX as u128) as u64) as u8).collect();
        buckets.sort_unstable();
        let mut out = Vec::new();
        for run in buckets.chunk_by(|a, b| a == b) {
            out.push(run[0]);
            out.extend_from_slice(&(run.len().min(u32::MAX as usize) as u32).to_le_bytes());
        }
        out
    }

    /// The buckets in use, each as its index (1 byte) and count (4 bytes, LE): the
    /// format of [`Histogram::encode_times`], which the tests hold it to.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &n) in self.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            out.push(i as u8);
            out.extend_from_slice(&(n.min(u32::MAX as u64) as u32).to_le_bytes());
        }
        out
    }

    /// Adds an encoded histogram's counts (a damaged one is ignored past its damage).
    pub(crate) fn add_encoded(&mut self, bytes: &[u8]) {
        for pair in bytes.chunks_exact(5) {
            let i = pair[0] as usize;
            if i < BUCKETS {
                self.counts[i] += u64::from(u32::from_le_bytes(pair[1..5].try_into().expect("4 bytes")));
            }
        }
    }

    /// The times counted.
    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0 < q ≤ 1) in milliseconds, within its bucket's 25 %; `None`
    /// when nothing was counted.
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::middle(i) / 1000.0);
            }
        }
        None
    }
}

/// Which jobs a page lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobFilter {
    /// Only this API's.
    pub api: Option<String>,
    /// Only jobs in one of these states (none: all).
    pub states: Vec<JobState>,
    /// Jobs skipped, newest first.
    pub offset: u64,
    /// Jobs on the page.
    pub limit: u64,
}

/// One page of jobs, newest first, with their counts, and how many match in all.
pub(crate) struct JobPage {
    /// The jobs, with their counts.
    pub jobs: Vec<(JobRow, Counts)>,
    /// How many jobs match the filter.
    pub total: u64,
}

/// A job's life in equal steps of time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Timeline {
    /// Seconds since the epoch of the first step's start (the first outcome's time).
    pub start: f64,
    /// Seconds since the epoch of the last outcome.
    pub end: f64,
    /// Seconds a step.
    pub step: f64,
    /// The steps, in order.
    pub points: Vec<Point>,
}

/// One step of a [`Timeline`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Point {
    /// Batches that succeeded in the step.
    pub succeeded: u64,
    /// Batches dead-lettered in the step.
    pub failed: u64,
    /// Batch time percentiles of the step's successes, in milliseconds.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// The steps a timeline is cut into, at most.
pub(crate) const TIMELINE_POINTS: usize = 120;

/// A step of whole seconds that cuts `span` into at most [`TIMELINE_POINTS`] steps.
fn step_for(span: f64) -> f64 {
    const NICE: [f64; 14] = [1., 2., 5., 10., 15., 30., 60., 120., 300., 600., 900., 1800., 3600., 7200.];
    let want = span / (TIMELINE_POINTS - 1) as f64;
    NICE.iter().copied().find(|&s| s >= want).unwrap_or_else(|| (want / 3600.0).ceil() * 3600.0)
}

impl Journal {
    /// Runs `f` on the read-only connection (opened on first use).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> std::io::Result<T> {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |e: rusqlite::Error| std::io::Error::other(format!("journal {}: {e}", self.path.display()));
        if reader.is_none() {
            let conn = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(fail)?;
            conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
            *reader = Some(conn);
        }
        f(reader.as_ref().expect("opened")).map_err(fail)
    }

    /// A page of jobs, newest first, with their counts.
    pub(crate) fn jobs_page(&self, filter: &JobFilter) -> std::io::Result<JobPage> {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        // The states as a JSON array: one parameter, whatever their number.
        let states = (!states.is_empty()).then(|| serde_json::to_string(&states).expect("strings"));
        let filter_sql =
            "(?1 IS NULL OR api_name = ?1) AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2)))";
        self.read(|c| {
            let total: i64 = c
                .prepare_cached(&format!("SELECT COUNT(*) FROM jobs WHERE {filter_sql}"))?
                .query_row(params![filter.api, states], |r| r.get(0))?;
            let rows: Vec<JobRow> = c
                .prepare_cached(&format!(
                    "SELECT {} FROM jobs WHERE {filter_sql} ORDER BY submitted_at DESC, job_id DESC LIMIT ?3 OFFSET ?4",
                    Self::COLUMNS
                ))?
                .query_map(
                    params![filter.api, states, filter.limit.min(i64::MAX as u64) as i64, filter.offset as i64],
                    Self::row,
                )?
                .collect::<Result<_, _>>()?;
            let mut jobs = Vec::with_capacity(rows.len());
            for row in rows {
                let counts = Self::counts_in(c, &row.job_id)?;
                jobs.push((row, counts));
            }
            Ok(JobPage { jobs, total: total as u64 })
        })
    }

    /// A job's counts, read beside the writers (a client watching a job of a million
    /// batches does not hold up its recording).
    pub(crate) fn read_counts(&self, job_id: &str) -> std::io::Result<Counts> {
        self.read(|c| Self::counts_in(c, job_id))
    }

    /// Whether any job of `api_name` is in the journal.
    pub(crate) fn has_jobs(&self, api_name: &str) -> std::io::Result<bool> {
        self.read(|c| {
            c.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE api_name = ?1)")?
                .query_row([api_name], |r| r.get(0))
        })
    }

    /// A job's timeline: its outcomes' times cut into at most [`TIMELINE_POINTS`]
    /// steps of whole seconds; empty when nothing was recorded with a time.
    pub(crate) fn timeline(&self, job_id: &str) -> std::io::Result<Timeline> {
        self.read(|c| {
            let mut successes: Vec<(f64, u64, Vec<u8>)> = Vec::new();
            let mut q = c.prepare_cached("SELECT at, n, hist FROM succeeded WHERE job_id = ?1 AND at IS NOT NULL")?;
            for row in q.query_map([job_id], |r| {
                Ok((
                    r.get::<_, f64>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
                ))
            })? {
                successes.push(row?);
            }
            let mut failures: Vec<f64> = Vec::new();
            let mut q = c.prepare_cached("SELECT at FROM outcomes WHERE job_id = ?1 AND at IS NOT NULL")?;
            for at in q.query_map([job_id], |r| r.get::<_, f64>(0))? {
                failures.push(at?);
            }
            let times = successes.iter().map(|s| s.0).chain(failures.iter().copied());
            let (start, end) = times.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| (lo.min(t), hi.max(t)));
            if !start.is_finite() {
                return Ok(Timeline { start: 0.0, end: 0.0, step: 1.0, points: Vec::new() });
            }
            let step = step_for(end - start);
            let n = ((end - start) / step).floor() as usize + 1;
            let slot = |t: f64| (((t - start) / step).floor() as usize).min(n - 1);
            let mut hists = vec![Histogram::default(); n];
            let mut points = vec![Point { succeeded: 0, failed: 0, p50: None, p90: None, p99: None }; n];
            for (at, count, hist) in &successes {
                let i = slot(*at);
                points[i].succeeded += count;
                hists[i].add_encoded(hist);
            }
            for at in failures {
                points[slot(at)].failed += 1;
            }
            for (point, hist) in points.iter_mut().zip(&hists) {
                point.p50 = hist.quantile_ms(0.5);
                point.p90 = hist.quantile_ms(0.9);
                point.p99 = hist.quantile_ms(0.99);
            }
            Ok(Timeline { start, end, step, points })
        })
    }

    /// A job's dead letters from `offset`, at most `limit`, each with its body's first
    /// `head` bytes and the body's length; and how many it has in all.
    pub(crate) fn dead_letter_heads(
        &self,
        job_id: &str,
        offset: u64,
        limit: u64,
        head: usize,
    ) -> std::io::Result<(Vec<(super::DeadLetter, u64)>, u64)> {
        self.read(|c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM outcomes WHERE job_id = ?1")?
                .query_row([job_id], |r| r.get(0))?;
            let mut q = c.prepare_cached(
                "SELECT idx, attempts, kind, message, substr(body, 1, ?4), length(body) FROM outcomes
                 WHERE job_id = ?1 ORDER BY idx LIMIT ?2 OFFSET ?3",
            )?;
            let rows = q
                .query_map(params![job_id, limit as i64, offset as i64, head as i64], |r| {
                    Ok((
                        super::DeadLetter {
                            index: r.get::<_, i64>(0)? as u64,
                            attempts: r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u32,
                            kind: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                            message: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            body: r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
                        },
                        r.get::<_, Option<i64>>(5)?.unwrap_or(0) as u64,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            Ok((rows, total as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_knows_a_time_within_a_quarter() {
        for micros in [0u64, 1, 3, 4, 7, 8, 100, 999, 1000, 12_345, 1_000_000, 7_000_000_000] {
            let h = Histogram::of([Duration::from_micros(micros)]);
            let got = h.quantile_ms(0.5).unwrap() * 1000.0;
            let error = (got - micros as f64).abs() / (micros as f64).max(1.0);
            assert!(error <= 0.25, "{micros} µs read as {got}");
        }
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn histograms_add_up_through_their_encoding() {
        let times = |ms: &[u64]| ms.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let (a, b) = (Histogram::of(times(&[1; 90])), Histogram::of(times(&[100; 10])));
        let mut sum = Histogram::default();
        sum.add_encoded(&a.encode());
        sum.add_encoded(&b.encode());
        sum.add_encoded(&[7, 1]); // a damaged tail is ignored
        assert_eq!(sum.total(), 100);
        let p50 = sum.quantile_ms(0.5).unwrap();
        let p99 = sum.quantile_ms(0.99).unwrap();
        assert!((0.75..1.25).contains(&p50), "{p50}");
        assert!((75.0..125.0).contains(&p99), "{p99}");
        assert_eq!(a.encode().len(), 5, "one bucket used, five bytes");
        let mixed = times(&[5, 1, 100, 1, 5, 0, 7_000]);
        assert_eq!(Histogram::encode_times(mixed.clone()), Histogram::of(mixed).encode());
        assert!(Histogram::encode_times([]).is_empty());
    }

    #[test]
    fn a_timeline_has_whole_second_steps_and_at_most_its_points() {
        assert_eq!(step_for(0.0), 1.0);
        assert_eq!(step_for(119.0), 1.0);
        assert_eq!(step_for(121.0), 2.0);
        assert_eq!(step_for(3600.0), 60.0);
        assert_eq!(step_for(30.0 * 24.0 * 3600.0), 7.0 * 3600.0);
        for span in [0.0, 5.0, 500.0, 86_400.0, 1e7] {
            assert!(((span / step_for(span)).floor() as usize) < TIMELINE_POINTS, "{span}");
        }
    }
}
