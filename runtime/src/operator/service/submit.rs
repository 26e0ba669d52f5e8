//! A submission's way in: Cortex's validation, the API's limits and grants, the
//! idempotency key, room on the disk, then the job's row before the answer; and a job's
//! dead letters submitted again as a new job.

use super::*;

/// A job just accepted: pending, nothing ended yet.
fn pending_row(job_id: &str, api: &Api, submission: Vec<u8>, spec: Value) -> JobRow {
    JobRow {
        job_id: job_id.into(),
        api_name: api.config.name.clone(),
        submission,
        spec,
        status: JobState::Pending,
        submitted_at: now_secs(),
        end_time: None,
        ended_at: None,
        total_batch_count: None,
        hook: Hook::Pending,
        error: None,
        plugin: api.version.clone(),
    }
}

impl Service {
    /// What a write that failed on a full disk is told: which directory, how much is
    /// free. Other errors stay journal errors.
    fn storage_error(&self, e: std::io::Error) -> ServiceError {
        if !crate::storage::is_full(&e) {
            return ServiceError::Journal(e);
        }
        let free = crate::storage::free_bytes(self.data_dir()).map(|n| format!("{n} bytes free")).unwrap_or_default();
        ServiceError::StorageFull(format!(
            "the data directory {} is full ({free}): the job was not recorded; retry once there is room",
            self.data_dir().display()
        ))
    }

    /// Whether the data directory has `min_free_space` left for a new job.
    fn check_room(&self) -> Result<(), ServiceError> {
        let floor = self.config().min_free_space;
        if floor == 0 {
            return Ok(());
        }
        let free = crate::storage::free_bytes(self.data_dir())?;
        if free < floor {
            let message = format!(
                "the data directory {} has {free} bytes free, below min_free_space ({floor} bytes): new jobs are \
                 refused so that running jobs keep room to record their batches",
                self.data_dir().display()
            );
            self.room.note(
                "submissions",
                &Err::<(), _>(std::io::Error::new(std::io::ErrorKind::StorageFull, message.clone())),
            );
            return Err(ServiceError::StorageFull(message));
        }
        Ok(())
    }

    /// Validates a submission (Cortex's rules) and, unless `dry_run`, records the job
    /// and starts it. With an idempotency `key`, a key used before (within the
    /// retention) with the same API and body gives that job again, with another body
    /// a conflict; a key and its job are recorded in one transaction.
    pub(crate) fn submit(
        self: &Arc<Self>,
        api_name: &str,
        body: &[u8],
        dry_run: bool,
        key: Option<&str>,
    ) -> Result<Submitted, ServiceError> {
        let api = self.api(api_name).ok_or_else(|| ServiceError::ApiNotDeployed(api_name.into()))?;
        let key = match key {
            Some(key) if !dry_run => Some(idempotency_key(key, api_name, body)?),
            _ => None,
        };
        // Lookup and insert of keyed submissions one at a time: two requests with the
        // same key cannot both miss and both create a job.
        let _keyed = key.as_ref().map(|_| self.keyed.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(key) = &key {
            let since = now_secs() - self.config().idempotency_retention.as_secs_f64();
            if let Some((api, digest, job_id)) = self.journal.idempotent(&key.key, since)? {
                if api != api_name || digest != key.digest {
                    return Err(ServiceError::KeyReused(key.key.clone()));
                }
                let row = self
                    .journal
                    .job(&job_id)?
                    .ok_or_else(|| ServiceError::JobNotFound { api: api_name.into(), job_id: job_id.clone() })?;
                tracing::info!(job_id, api_name, "a submission with a known idempotency key: the same job");
                return Ok(Submitted::Replayed(row.spec));
            }
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(cortex_error(SubmissionError::Parse {
                origin: "submission".into(),
                line: 1,
                column: 0,
                message: "EOF while parsing a value".into(),
            }));
        }
        let body = match api.config.default_workers {
            Some(n) if body.trim_ascii_start().starts_with(b"{") => with_default_workers(body, n),
            _ => body.to_vec(),
        };
        let submission = Submission::parse(&body, "submission").map_err(cortex_error)?;
        if let SourceSpec::ItemList { items, .. } = &submission.source
            && let Some((i, item)) = items.iter().enumerate().find(|(_, v)| v.get().len() > MAX_ITEM_SIZE)
        {
            return Err(ServiceError::Invalid {
                kind: ErrorKind::ItemSizeExceedsLimit,
                message: format!(
                    "item {i} has size {} bytes which exceeds the limit ({MAX_ITEM_SIZE} bytes)",
                    item.get().len()
                ),
            });
        }
        if self.dispatch.is_some()
            && let Some(n) = submission.max_attempts
            && n > api.config.max_attempts
        {
            return Err(ServiceError::Invalid {
                kind: ErrorKind::Error,
                message: format!(
                    "max_attempts: {n} is more than the broker delivers a batch of api {api_name} ({}, its max_attempts)",
                    api.config.max_attempts
                ),
            });
        }
        // Inputs only under the API's `allow_inputs`, refused before anything is listed.
        if let SourceSpec::DelimitedFiles(files) | SourceSpec::FilePathLister(files) = &submission.source {
            inputs::check_inputs(files, &api.config.allow_inputs)
                .map_err(|message| ServiceError::Invalid { kind: ErrorKind::InputNotAllowed, message })?;
        }
        if dry_run {
            return Ok(Submitted::DryRun(dry_run_text(&submission, &api.config.allow_inputs)?));
        }
        // The input must be readable now, not found broken when the job starts.
        if let SourceSpec::DelimitedFiles(files) | SourceSpec::FilePathLister(files) = &submission.source {
            inputs::list_files(files, Some(&api.config.allow_inputs))
                .map_err(|e| ServiceError::Invalid { kind: ErrorKind::Error, message: e.to_string() })?;
        }
        let queued = self.journal.unfinished_count()?;
        if queued >= self.config().max_queued_jobs {
            return Err(ServiceError::Busy(queued));
        }
        self.check_room()?;
        let now = SystemTime::now();
        let job_id = new_job_id(now);
        let workers = submission.workers.min(api.config.max_workers);
        let mut spec =
            crate::job::status::job_spec(&job_id, api_name, workers, &submission.config, submission.timeout, now);
        if let Some(dlq) = &submission.dead_letter_queue {
            spec["sqs_dead_letter_queue"] = dlq.clone();
        }
        let row = pending_row(&job_id, &api, body, spec.clone());
        let inserted = self.journal.insert_job(&row, key.as_ref());
        self.room.note("submissions", &inserted);
        inserted.map_err(|e| self.storage_error(e))?;
        tracing::info!(job_id, api_name, workers, "job submitted");
        for warning in &submission.warnings {
            tracing::warn!(job_id, api_name, "the submission: {warning}");
        }
        // The answer names the keys nobody reads (Cortex's clients ignore the field).
        let mut answer = spec;
        if !submission.warnings.is_empty() {
            answer["warnings"] = json!(submission.warnings);
        }
        self.spawn(row, Some(submission), api);
        Ok(Submitted::Job(answer))
    }

    /// Starts a new job of `api_name` whose batches are the dead letters of its job
    /// `job_id`, byte for byte, with that job's workers, config and timeout.
    pub(crate) fn retry_dead_letters(self: &Arc<Self>, api_name: &str, job_id: &str) -> Result<Value, ServiceError> {
        let (old, counts) = self.job(api_name, job_id)?;
        let api = self.api(api_name).ok_or_else(|| ServiceError::ApiNotDeployed(api_name.into()))?;
        if old.api_name != api_name {
            return Err(ServiceError::JobNotFound { api: api_name.into(), job_id: job_id.into() });
        }
        if counts.failed + counts.unhandled == 0 {
            return Err(ServiceError::Invalid {
                kind: ErrorKind::Error,
                message: format!("job {job_id} has no dead letters to re-run"),
            });
        }
        let queued = self.journal.unfinished_count()?;
        if queued >= self.config().max_queued_jobs {
            return Err(ServiceError::Busy(queued));
        }
        let now = SystemTime::now();
        let new_id = new_job_id(now);
        let mut spec = old.spec.clone();
        spec["job_id"] = json!(new_id);
        spec["start_time"] = json!(rfc3339(now));
        let submission = json!({
            "retry_of": job_id,
            "workers": spec["workers"],
            "config": spec["config"],
            "timeout": spec["timeout"],
        });
        let row = pending_row(&new_id, &api, submission.to_string().into_bytes(), spec.clone());
        self.check_room()?;
        let inserted = self.journal.insert_job(&row, None);
        self.room.note("submissions", &inserted);
        inserted.map_err(|e| self.storage_error(e))?;
        tracing::info!(job_id = new_id, retry_of = job_id, api_name, "dead letters re-submitted");
        self.spawn(row, None, api);
        Ok(spec)
    }
}

/// Cortex's dry-run answer: the matching paths, one per line, then `validations passed`.
fn dry_run_text(submission: &Submission, confine: &Prefixes) -> Result<String, ServiceError> {
    let mut text = String::new();
    if let SourceSpec::DelimitedFiles(files) | SourceSpec::FilePathLister(files) = &submission.source {
        let inputs = inputs::list_files(files, Some(confine))
            .map_err(|e| ServiceError::Invalid { kind: ErrorKind::Error, message: e.to_string() })?;
        for input in inputs {
            text.push_str(&input.name);
            text.push('\n');
        }
    }
    text.push_str("validations passed");
    Ok(text)
}
