//! Outcomes from the workers into the journal: grouped by job, the ones of batches
//! that ended already dropped, then recorded before they are acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use super::super::{DEAD, RESULTS, get_float, get_int, get_str, header};
use super::*;

impl Dispatch {
    /// Writes a group of outcomes to the journal; those of batches that have one
    /// already, or of jobs not dispatched any more, are dropped.
    pub(super) fn record(&self, from: From, incoming: Vec<Incoming>) -> std::io::Result<()> {
        let mut by_job: HashMap<String, Vec<Incoming>> = HashMap::new();
        for item in incoming {
            match get_str(item.headers.as_ref(), header::JOB) {
                Some(job) => by_job.entry(job).or_default().push(item),
                None => tracing::warn!("a message without a job on {RESULTS} or {DEAD}; dropped"),
            }
        }
        for (job_id, items) in by_job {
            let Some(track) = self.get_track(&job_id) else {
                tracing::debug!(job_id, n = items.len(), "outcomes of a job not dispatched any more; dropped");
                continue;
            };
            let mut state = track.lock();
            if state.closed {
                continue;
            }
            let info = self.apis.read().unwrap_or_else(|e| e.into_inner()).get(&track.api_name).cloned();
            let info = info.as_ref();
            let mut seen = HashSet::new();
            let mut succeeded = Vec::new();
            // Known only when every outcome says its batch's items.
            let mut succeeded_items = Some(0u64);
            let mut failed: Vec<Failed<'_>> = Vec::new();
            let mut hook = None;
            let mut results: Vec<(u64, &[u8])> = Vec::new();
            let mut kept: Vec<(u64, Vec<u8>)> = Vec::new();
            for item in &items {
                let headers = item.headers.as_ref();
                let kind = get_str(headers, header::KIND).unwrap_or_default();
                let index = get_int(headers, header::INDEX).map(|i| i as u64);
                let items = get_int(headers, header::ITEMS).map(|n| n.max(0) as u64);
                let attempts = get_int(headers, header::ATTEMPTS).unwrap_or(1).clamp(0, i64::from(u32::MAX)) as u32;
                match (from, kind.as_str(), index) {
                    (_, header::HOOK, _) => {
                        let outcome = get_str(headers, header::ERROR_KIND).unwrap_or_default();
                        let message = get_str(headers, header::ERROR).unwrap_or_default();
                        hook = Some(match (from, outcome.as_str()) {
                            (From::Dead, _) => Completion::Failed(format!(
                                "no worker reported an outcome of on-job-complete; the broker gave up after {} deliveries",
                                info.map_or(0, |i| i.max_attempts)
                            )),
                            (_, "succeeded") => Completion::Succeeded,
                            (_, "not_found") => Completion::NotFound,
                            _ => Completion::Failed(message),
                        });
                    }
                    (_, _, None) => tracing::warn!(job_id, kind, "an outcome without a batch index; dropped"),
                    (_, _, Some(i)) if state.has_ended(i) || !seen.insert(i) => {
                        tracing::debug!(job_id, index = i, "a batch's second outcome (it ran twice); dropped");
                    }
                    (From::Results, header::SUCCEEDED, Some(i)) => {
                        let elapsed = get_float(headers, header::ELAPSED).unwrap_or(0.0).max(0.0);
                        succeeded.push((i, Duration::from_secs_f64(elapsed)));
                        succeeded_items = succeeded_items.zip(items).map(|(a, b)| a + b);
                        if !item.data.is_empty() {
                            results.push((i, item.data.as_slice()));
                        }
                    }
                    (From::Results, _, Some(i)) => {
                        if let Some(partial) = get_str(headers, header::RESULTS) {
                            kept.push((i, partial.into_bytes()));
                        }
                        let kind = get_str(headers, header::ERROR_KIND).unwrap_or_else(|| "failed".into());
                        let message = get_str(headers, header::ERROR).unwrap_or_default();
                        let error = AttemptError { kind: AttemptKind::Remote(kind), message };
                        failed.push(Failed { index: i, attempts, error, body: &item.data, items });
                    }
                    (From::Dead, _, Some(i)) => {
                        let deliveries = info.map_or(0, |i| i.max_attempts);
                        let message = format!(
                            "delivered {deliveries} times and no worker reported an outcome (each worker holding it \
                             was lost: killed, cut off, or out of time); the broker dead-lettered it"
                        );
                        let error = AttemptError { kind: AttemptKind::Remote("delivery_limit".into()), message };
                        failed.push(Failed { index: i, attempts: deliveries, error, body: &item.data, items });
                    }
                }
            }
            let ledger = self.journal.ledger(&job_id);
            results.extend(kept.iter().map(|(i, r)| (*i, r.as_slice())));
            if !results.is_empty() {
                ledger.results(&results)?;
            }
            if !succeeded.is_empty() {
                ledger.succeeded(&succeeded, succeeded_items)?;
            }
            if !failed.is_empty() {
                let records: Vec<Record<'_>> = failed
                    .iter()
                    .map(|f| Record {
                        index: f.index,
                        attempts: f.attempts,
                        error: &f.error,
                        body: f.body,
                        items: f.items,
                    })
                    .collect();
                ledger.dead_lettered(&records)?;
            }
            if let Some(completion) = &hook {
                let outcome = match completion {
                    Completion::Succeeded => HookOutcome::Succeeded,
                    Completion::NotFound => HookOutcome::NotFound,
                    Completion::Failed(e) => {
                        self.journal.set_error(&job_id, Some(&format!("on-job-complete failed: {e}")))?;
                        HookOutcome::Failed
                    }
                };
                self.journal.set_hook(&job_id, Hook::Done(outcome))?;
                state.hook = Some(completion.clone());
            }
            for (index, elapsed) in &succeeded {
                state.set_ended(*index);
                if let Some(info) = info {
                    info.metrics.batch_succeeded(&job_id, *elapsed);
                }
            }
            for Failed { index, error, .. } in &failed {
                state.set_ended(*index);
                if let Some(info) = info {
                    info.metrics.batch_failed(&job_id);
                }
                tracing::error!(job_id, batch = index, kind = %error.kind, error = %error.message, "batch failed for good; dead-lettered");
            }
            drop(state);
            track.changed.notify_all();
        }
        Ok(())
    }
}

/// A batch a worker (or the broker) reported failed for good.
struct Failed<'a> {
    index: u64,
    attempts: u32,
    error: AttemptError,
    body: &'a [u8],
    /// The whole batch's items, when the outcome says.
    items: Option<u64>,
}
