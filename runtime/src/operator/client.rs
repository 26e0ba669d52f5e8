//! The command-line client of the job service: `wasmbatch submit`, `get`, `stop`.
//!
//! `get` prints what `cortex get` prints, laid out the same way (key/value blocks
//! aligned on the longest key, tables padded to the widest cell plus three spaces,
//! times as `02 Jan 06 15:04:05 UTC`); `-o json` prints the raw answer.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use crate::http::client::{Connection, Endpoint};
use crate::job::status::JobState;

/// A failed call, with the exit code it maps to (2: the operator refused the input).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ClientError {
    /// What happened.
    pub message: String,
    /// 2 for a refused submission or an unknown API or job, else 1.
    pub exit_code: u8,
}

/// A connection to one operator.
pub(crate) struct Client {
    runtime: OwnRuntime,
    connection: Connection,
    /// `Bearer <token>`, when the operator wants one.
    authorization: Option<String>,
}

/// The client's own runtime, which may be dropped anywhere: a guest's submitter ends
/// with its store, which may be on a task of `serve`'s runtime, where dropping a
/// runtime the usual way (waiting for its blocking threads) panics.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Client {
    /// The most of a job's results [`Client::results`] reads.
    pub(crate) const RESULTS_KEPT: usize = 1 << 30;

    /// A client of the operator at `url` (`http://` or `https://`), sending `token`
    /// with every request when given.
    pub(crate) fn new(url: &str, token: Option<&str>) -> Result<Client, ClientError> {
        let endpoint = Endpoint::parse(url).map_err(|message| ClientError { message, exit_code: 2 })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError { message: e.to_string(), exit_code: 1 })?;
        let authorization = token.map(str::trim).filter(|t| !t.is_empty()).map(|t| format!("Bearer {t}"));
        let connection = Connection::new(endpoint).keeping(Self::RESULTS_KEPT);
        Ok(Client { runtime: OwnRuntime(Some(runtime)), connection, authorization })
    }

    /// Sends a request; a non-200 answer becomes an error with the operator's message.
    fn call(&mut self, method: Method, path: &str, body: Bytes) -> Result<Bytes, ClientError> {
        self.call_with(method, path, body, None)
    }

    /// The same, with an `Idempotency-Key`: then a request that got no answer (the
    /// connection refused or lost) is sent again with the same key, up to 6 times over
    /// about 30 s — the operator makes one job of them, whichever arrived.
    fn call_with(&mut self, method: Method, path: &str, body: Bytes, key: Option<&str>) -> Result<Bytes, ClientError> {
        let mut headers: Vec<(&str, &str)> =
            self.authorization.as_deref().map(|a| ("authorization", a)).into_iter().collect();
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        let tries = if key.is_some() { 6 } else { 1 };
        let mut pause = Duration::from_millis(500);
        let mut attempt = 1;
        let answer = loop {
            let sent = self.runtime.get().block_on(self.connection.send(
                method.clone(),
                path,
                &headers,
                body.clone(),
                Duration::from_secs(60),
            ));
            match sent {
                Ok(answer) => break answer,
                Err(e) if attempt < tries => {
                    eprintln!(
                        "{e}; sending again in {pause:?} (attempt {} of {tries}, same idempotency key)",
                        attempt + 1
                    );
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
                Err(e) => return Err(ClientError { message: e.to_string(), exit_code: 1 }),
            }
        };
        if answer.status.is_success() {
            return Ok(answer.body);
        }
        let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let message = match parsed.as_ref().and_then(|v| v["message"].as_str()) {
            Some(m) => format!(
                "{} ({})",
                m.split("\n\n").next().unwrap_or(m),
                parsed.as_ref().unwrap()["kind"].as_str().unwrap_or("")
            ),
            None => String::from_utf8_lossy(&answer.body).trim().to_string(),
        };
        Err(ClientError { message, exit_code: if answer.status.as_u16() == 400 { 2 } else { 1 } })
    }

    fn json(&mut self, method: Method, path: &str, body: Bytes) -> Result<Value, ClientError> {
        let bytes = self.call(method, path, body)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError { message: format!("the operator's answer is not JSON: {e}"), exit_code: 1 })
    }

    /// `POST /batch/<api>` with an idempotency key of its own: the job spec. A lost
    /// answer is asked for again, and never makes a second job.
    pub(crate) fn submit(&mut self, api: &str, job: Vec<u8>) -> Result<Value, ClientError> {
        let key = new_idempotency_key(&job);
        let bytes = self.call_with(Method::POST, &format!("/batch/{api}"), Bytes::from(job), Some(&key))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError { message: format!("the operator's answer is not JSON: {e}"), exit_code: 1 })
    }

    /// `GET /batch/<api>?jobID=`.
    pub(crate) fn job(&mut self, api: &str, job_id: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &format!("/batch/{api}?jobID={job_id}"), Bytes::new())
    }

    /// `GET /batch/<api>/jobs/<id>/results`: the job's results, JSON Lines.
    pub(crate) fn results(&mut self, api: &str, job_id: &str) -> Result<Bytes, ClientError> {
        self.call(Method::GET, &format!("/batch/{api}/jobs/{job_id}/results"), Bytes::new())
    }

    /// `GET /batch/<api>/jobs`.
    pub(crate) fn jobs(&mut self, api: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &format!("/batch/{api}/jobs"), Bytes::new())
    }

    /// `DELETE /batch/<api>?jobID=`: the operator's message.
    pub(crate) fn stop(&mut self, api: &str, job_id: &str) -> Result<String, ClientError> {
        let answer = self.json(Method::DELETE, &format!("/batch/{api}?jobID={job_id}"), Bytes::new())?;
        Ok(answer["message"].as_str().unwrap_or_default().to_string())
    }

    /// Asks the operator to re-read its configuration file; what changed, as lines.
    pub(crate) fn reload(&mut self) -> Result<String, ClientError> {
        let answer = self.json(Method::POST, "/admin/reload", Bytes::new())?;
        let mut lines = vec!["configuration reloaded".to_string()];
        for (key, label) in [
            ("added", "added"),
            ("removed", "removed (running jobs finish)"),
            ("changed", "changed (for jobs submitted from now)"),
            ("unchanged", "unchanged"),
            ("restart_needed", "applies at the next start"),
        ] {
            let names: Vec<&str> = answer[key].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            if !names.is_empty() {
                lines.push(format!("  {label}: {}", names.join(", ")));
            }
        }
        Ok(lines.join("\n"))
    }
}

/// A key no other submission has: the time, this process and the job's bytes, hashed.
fn new_idempotency_key(job: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hash = Sha256::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hash.update(now.as_nanos().to_le_bytes());
    hash.update(std::process::id().to_le_bytes());
    hash.update(SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
    hash.update(job);
    let digest = hash.finalize();
    format!("wasmbatch-{}", digest[..16].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Chaining under `serve`: a guest's job is POSTed to the operator.
pub(crate) struct RemoteSubmitter {
    client: std::sync::Mutex<Client>,
    from: String,
    allowed: Vec<String>,
}

impl RemoteSubmitter {
    /// Submits to the operator at `url` (with `token`) for API `from`, to the APIs in
    /// `allowed`.
    pub(crate) fn new(
        url: &str,
        token: Option<&str>,
        from: &str,
        allowed: Vec<String>,
    ) -> Result<RemoteSubmitter, ClientError> {
        Ok(RemoteSubmitter { client: std::sync::Mutex::new(Client::new(url, token)?), from: from.into(), allowed })
    }
}

impl crate::plugin::Submitter for RemoteSubmitter {
    fn submit(&self, api: &str, job: &[u8]) -> Result<String, String> {
        super::service::check_chain(&self.from, &self.allowed, api)?;
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let spec = client.submit(api, job.to_vec()).map_err(|e| e.message)?;
        Ok(spec["job_id"].as_str().unwrap_or_default().to_string())
    }
}

/// on-job-complete's results under `serve` and on workers: the job service's
/// `GET /batch/<api>/jobs/<id>/results`, which holds every batch's results whichever
/// server or worker handled it.
pub(crate) struct RemoteResults {
    url: String,
    token: Option<String>,
    api: String,
}

impl RemoteResults {
    /// The results of API `api`'s jobs at the job service at `url`, asked with `token`.
    pub(crate) fn new(url: &str, token: Option<&str>, api: &str) -> RemoteResults {
        RemoteResults { url: url.to_string(), token: token.map(str::to_string), api: api.to_string() }
    }
}

impl crate::plugin::JobResults for RemoteResults {
    fn open(&self, job_id: &str) -> Result<Box<dyn std::io::BufRead + Send>, String> {
        let failed = |e: ClientError| {
            format!("reading the results of job {job_id} of API {} from the job service at {}: {e}", self.api, self.url)
        };
        if self.api.is_empty() {
            return Err(format!(
                "reading the results of job {job_id}: the job spec names no api_name to ask the job service at {} with",
                self.url
            ));
        }
        let mut client = Client::new(&self.url, self.token.as_deref()).map_err(failed)?;
        let bytes = client.results(&self.api, job_id).map_err(failed)?;
        if bytes.len() >= Client::RESULTS_KEPT {
            return Err(failed(ClientError {
                message: format!("the results are over {} bytes", Client::RESULTS_KEPT),
                exit_code: 1,
            }));
        }
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }
}

/// The message `cortex get` shows for a status.
pub(crate) fn status_message(status: &str) -> &str {
    match status {
        "completed_with_failures" => "completed with failures",
        "enqueue_failed" => "failed while enqueuing",
        "timed_out" => "timed out",
        "worker_error" => "worker error",
        other => other,
    }
}

/// The exit code for a job that ended with `status`, as `run`'s.
pub(crate) fn exit_code(status: &str) -> u8 {
    match JobState::parse(status) {
        Some(JobState::Succeeded) => 0,
        Some(JobState::EnqueueFailed) => 2,
        _ => 1,
    }
}

/// RFC 3339 (`2026-11-29T21:16:22Z`) as Cortex's CLI shows it: `29 Nov 26 21:16:22 UTC`.
pub(crate) fn cortex_time(rfc3339: &str) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let parse = || -> Option<String> {
        let (date, time) = rfc3339.split_once('T')?;
        let mut d = date.split('-');
        let (y, m, day) = (d.next()?, d.next()?.parse::<usize>().ok()?, d.next()?);
        let time = time.trim_end_matches('Z');
        let time = time.split('.').next()?;
        Some(format!("{day} {} {} {time} UTC", MONTHS.get(m.checked_sub(1)?)?, &y[y.len().saturating_sub(2)..]))
    };
    parse().unwrap_or_else(|| rfc3339.to_string())
}

/// Seconds since the epoch of an RFC 3339 UTC time.
fn epoch_secs(rfc3339: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    let secs = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Go's `Duration.String()` truncated to seconds: `45s`, `1m3s`, `2h0m5s`.
pub(crate) fn go_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// A key/value block: values aligned one space after the longest key and its colon.
fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:"))).collect()
}

/// A table: each column as wide as its widest cell (in terminal columns) plus three
/// spaces, no borders, trailing spaces trimmed: `cortex get`'s layout, by comfy-table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING).set_header(headers.to_vec()).add_rows(rows.iter().cloned());
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    format!("{}\n", table.trim_fmt())
}

/// `wasmbatch get <api> <job_id>`, as `cortex get` prints it.
pub(crate) fn describe_job(answer: &Value, now: i64) -> String {
    let s = &answer["job_status"];
    let status = s["status"].as_str().unwrap_or("unknown");
    let start = s["start_time"].as_str().unwrap_or_default();
    let end = s["end_time"].as_str();
    let duration = epoch_secs(start).map(|b| go_duration(end.and_then(epoch_secs).unwrap_or(now) - b));
    let mut out = key_values(&[
        ("job id", s["job_id"].as_str().unwrap_or_default().into()),
        ("status", status_message(status).into()),
    ]);
    out.push('\n');
    out.push_str(&key_values(&[
        ("start time", cortex_time(start)),
        ("end time", end.map(cortex_time).unwrap_or_else(|| "-".into())),
        ("duration", duration.unwrap_or_else(|| "-".into())),
    ]));
    let m = &answer["metrics"];
    let cell = |v: &Value| v.as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let average = m["average_time_per_batch"]
        .as_f64()
        .map(|a| format!("{}ms", (a * 1000.0) as u64))
        .unwrap_or_else(|| "-".into());
    let total = s["total_batch_count"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    out.push_str("\nbatch stats\n");
    out.push_str(&table(
        &["total", "succeeded", "failed attempts", "avg time per batch"],
        &[vec![total, cell(&m["succeeded"]), cell(&m["failed"]), average]],
    ));
    // Ours: what the job's items came to (batches are what Cortex counts).
    if m["items"].is_object() {
        out.push_str("\nitem stats\n");
        out.push_str(&table(
            &["succeeded", "dead-lettered"],
            &[vec![cell(&m["items"]["succeeded"]), cell(&m["items"]["dead_lettered"])]],
        ));
    }
    out.push('\n');
    match JobState::parse(status) {
        Some(state) if state.is_terminal() => {
            out.push_str("worker stats are not available because this job is not currently running\n")
        }
        Some(JobState::Pending) => out.push_str("still enqueuing, workers have not been allocated for this job yet\n"),
        _ => {
            out.push_str("worker stats\n");
            out.push_str(&table(&["Requested"], &[vec![cell(&s["workers"])]]));
        }
    }
    let endpoint = answer["endpoint"].as_str().unwrap_or_default();
    out.push_str(&format!("\njob endpoint: {endpoint}\n"));
    // Ours: where the job's results and dead letters are downloaded.
    let base = endpoint.split('?').next().unwrap_or_default();
    let job_id = s["job_id"].as_str().unwrap_or_default();
    let letters = s["dead_lettered_batch_count"].as_u64().unwrap_or(0);
    out.push_str(&key_values(&[
        ("results", format!("{base}/jobs/{job_id}/results")),
        ("dead letters", format!("{base}/jobs/{job_id}/dead-letters ({letters})")),
    ]));
    let mut spec = s.clone();
    if let Some(object) = spec.as_object_mut() {
        for key in ["status", "end_time", "batches_in_queue", "dead_lettered_batch_count", "on_job_complete", "error"] {
            object.remove(key);
        }
    }
    out.push_str("\njob configuration\n");
    out.push_str(&serde_json::to_string_pretty(&spec).unwrap_or_default());
    out.push('\n');
    out
}

/// `wasmbatch get <api>`: the API's jobs, as `cortex get <api>` lists them.
pub(crate) fn describe_jobs(list: &Value, now: i64) -> String {
    let jobs = list["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        return "no submitted batch jobs\n".into();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let start = j["start_time"].as_str().unwrap_or_default();
            let end = j["end_time"].as_str().and_then(epoch_secs).unwrap_or(now);
            vec![
                j["job_id"].as_str().unwrap_or_default().to_string(),
                status_message(j["status"].as_str().unwrap_or("unknown")).to_string(),
                j["total_batch_count"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                cortex_time(start),
                epoch_secs(start).map(|s| go_duration(end - s)).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["job id", "status", "total batches", "start time", "duration"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_and_durations_read_as_cortex_prints_them() {
        assert_eq!(cortex_time("2023-03-21T10:04:05Z"), "21 Mar 23 10:04:05 UTC");
        assert_eq!(go_duration(63), "1m3s");
        assert_eq!(go_duration(7205), "2h0m5s");
        assert_eq!(go_duration(9), "9s");
        assert_eq!(epoch_secs("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(epoch_secs("2024-03-01T00:00:00Z"), Some(1_709_251_200));
    }

    #[test]
    fn a_job_is_described_in_cortex_get_layout() {
        let answer = json!({
            "job_status": {"job_id": "69d6faf7ea3b4b49", "status": "running", "start_time": "2023-03-21T10:04:05Z",
                           "workers": 1, "total_batch_count": 5, "api_name": "sum"},
            "metrics": {"succeeded": 3, "failed": 0, "average_time_per_batch": 0.0123},
            "endpoint": "http://op/batch/sum?jobID=69d6faf7ea3b4b49",
        });
        let text = describe_job(&answer, epoch_secs("2023-03-21T10:05:08Z").unwrap());
        let expected_head = "job id: 69d6faf7ea3b4b49\nstatus: running\n\nstart time: 21 Mar 23 10:04:05 UTC\nend time:   -\nduration:   1m3s\n\nbatch stats\ntotal   succeeded   failed attempts   avg time per batch\n5       3           0                 12ms\n\nworker stats\nRequested\n1\n\njob endpoint: http://op/batch/sum?jobID=69d6faf7ea3b4b49\nresults:      http://op/batch/sum/jobs/69d6faf7ea3b4b49/results\ndead letters: http://op/batch/sum/jobs/69d6faf7ea3b4b49/dead-letters (0)\n\njob configuration\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert_eq!(describe_jobs(&json!({"jobs": []}), 0), "no submitted batch jobs\n");
    }

    #[test]
    fn tables_align_by_terminal_columns_not_bytes() {
        let rows =
            [vec!["café".to_string(), "1".into()], vec!["日本".into(), "2".into()], vec!["x".into(), "3".into()]];
        assert_eq!(table(&["api", "n"], &rows), "api    n\ncafé   1\n日本   2\nx      3\n");
    }
}
