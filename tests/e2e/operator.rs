//! `wasmbatch operator`: Cortex's job API, durable state, and what a SIGKILL at any
//! point does (nothing lost, succeeded batches not run again, on-job-complete once).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{plugin, shared_cache, wait_for_file, wasmbatch, workspace_root};
use crate::run::read_lines;

/// A scratch place for an operator: its config, data directory and mount.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    /// A config hosting `sum` and `misbehave` (both mounted on `out/`), plus `extra`.
    fn new(extra: &str) -> Place {
        Place::with_budget(4, extra)
    }

    /// The same, with a worker budget of `budget`.
    fn with_budget(budget: usize, extra: &str) -> Place {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let config = format!(
            "max_workers = {budget}\n\
             [[api]]\nname = \"sum\"\nplugin = \"{}\"\nmount = \"out\"\n\
             [[api]]\nname = \"misbehave\"\nplugin = \"{}\"\nmount = \"out\"\nmax_workers = 2\nmax_attempts = 2\n{extra}",
            plugin("sum").display(),
            plugin("misbehave").display()
        );
        std::fs::write(dir.path().join("apis.toml"), config).unwrap();
        Place { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self) -> Operator {
        Operator::start(&self.path("apis.toml"), &self.path("data"))
    }
}

/// A running operator, killed on drop.
pub(crate) struct Operator {
    child: Child,
    pub(crate) url: String,
    pub(crate) logs: Arc<Mutex<Vec<String>>>,
    /// Sent as `Authorization: Bearer` by `request`, when set.
    token: Option<String>,
}

impl Operator {
    pub(crate) fn start(config: &Path, data: &Path) -> Operator {
        Operator::start_with(config, data, &[])
    }

    /// An operator with `extra` arguments (e.g. `--broker URL`).
    pub(crate) fn start_with(config: &Path, data: &Path, extra: &[&str]) -> Operator {
        Operator::start_env(config, data, extra, &[])
    }

    /// An operator listening on `port`.
    pub(crate) fn start_on(config: &Path, data: &Path, port: u16) -> Operator {
        Operator::start_full(config, data, port, &[], &[])
    }

    /// An operator with `extra` arguments and `env` added to its environment.
    pub(crate) fn start_env(config: &Path, data: &Path, extra: &[&str], env: &[(&str, String)]) -> Operator {
        Operator::start_full(config, data, 0, extra, env)
    }

    fn start_full(config: &Path, data: &Path, port: u16, extra: &[&str], env: &[(&str, String)]) -> Operator {
        let port = port.to_string();
        let mut child = wasmbatch()
            .args(["--log-format", "json", "operator", "--host", "127.0.0.1", "--port", &port, "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .arg("--cache-dir")
            .arg(shared_cache())
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the operator did not start:\n{}", logs.lock().unwrap().join("\n"))
        });
        Operator { child, url: format!("http://{addr}"), logs, token: None }
    }

    /// The same operator, called with `token` from now on.
    pub(crate) fn with_token(mut self, token: &str) -> Operator {
        self.token = Some(token.to_string());
        self
    }

    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        let mut request = agent.request(method, &format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        match result {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    pub(crate) fn submit(&self, api: &str, job: &Value) -> String {
        let (status, body) = self.request("POST", &format!("/batch/{api}"), Some(&job.to_string()));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["job_id"].as_str().unwrap().to_string()
    }

    pub(crate) fn status(&self, api: &str, job_id: &str) -> Value {
        let (status, body) = self.request("GET", &format!("/batch/{api}?jobID={job_id}"), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls (bounded) until the job's status is final; returns the GET answer.
    pub(crate) fn wait_done(&self, api: &str, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status(api, job_id);
            let state = status["job_status"]["status"].as_str().unwrap().to_string();
            if !["pending", "running"].contains(&state.as_str()) {
                return status;
            }
            assert!(Instant::now() < deadline, "job {job_id} still {state}:\n{}", self.logs.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The operator's process ID.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the operator did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn error_of(answer: &(u16, String)) -> (u16, String, String) {
    let v: Value = serde_json::from_str(&answer.1).unwrap_or(Value::Null);
    (answer.0, v["kind"].as_str().unwrap_or_default().into(), v["message"].as_str().unwrap_or_default().into())
}

#[test]
fn a_cortex_script_runs_unchanged() {
    let place = Place::new("");
    let operator = place.start();
    let out = Command::new("python3")
        .arg(workspace_root().join("tests/fixtures/cortex_script.py"))
        .args([operator.url.as_str(), "sum", "25", "4"])
        .output()
        .expect("python3 runs the Cortex script");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = status["job_status"]["job_id"].as_str().unwrap();
    assert_eq!(status["metrics"]["succeeded"], 7);
    assert_eq!(status["job_status"]["config"], json!({"dest": "results"}));
    assert_eq!(status["endpoint"], format!("{}/batch/sum?jobID={job_id}", operator.url));
    // on-job-complete wrote exactly one result, over every item.
    let results: Vec<_> = std::fs::read_dir(place.path("out").join(job_id))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() == "result.json")
        .collect();
    assert_eq!(results.len(), 1);
    let result: Value =
        serde_json::from_slice(&std::fs::read(place.path("out").join(job_id).join("result.json")).unwrap()).unwrap();
    assert_eq!((result["items"].as_u64(), result["total"].as_f64()), (Some(25), Some(900.0)));
}

#[test]
fn every_route_and_error_kind() {
    let place = Place::new("");
    let operator = place.start();
    let docs = "job submission schema can be found at https://docs.cortex.dev/v/0.42/";
    for (body, kind, message) in [
        ("", "error", "EOF while parsing"),
        ("{\"workers\": 1,", "error", "line 1"),
        (
            r#"{"workers": 1}"#,
            "job.specify_exactly_one_key",
            "specify exactly one of the following keys: item_list, file_path_lister, or delimited_files",
        ),
        (
            r#"{"workers": 1, "item_list": {"items": [1], "batch_size": 1}, "delimited_files": {"s3_paths": ["x"], "batch_size": 1}}"#,
            "job.conflicting_fields",
            "please specify either the item_list or file_path_lister field",
        ),
        (
            r#"{"workers": 1, "item_list": {"items": [], "batch_size": 1}}"#,
            "configreader.too_few_elements",
            "items: must contain at least 1 elements",
        ),
        (
            r#"{"workers": 1, "item_list": {"items": [1], "batch_size": 0}}"#,
            "configreader.must_be_greater_than_or_equal_to",
            "item_list: batch_size: must be greater than or equal to 1 (got 0)",
        ),
        (
            r#"{"item_list": {"items": [1], "batch_size": 1}}"#,
            "configreader.must_be_greater_than_or_equal_to",
            "workers: must be greater than or equal to 1 (got 0)",
        ),
    ] {
        let (status, got_kind, got_message) = error_of(&operator.request("POST", "/batch/sum", Some(body)));
        assert_eq!((status, got_kind.as_str()), (400, kind), "{body}: {got_message}");
        assert!(got_message.contains(message), "{body}: {got_message}");
        assert!(got_message.ends_with(docs), "{body}: {got_message}");
    }
    let big_item = format!("\"{}\"", "x".repeat(256_000));
    let (status, kind, message) = error_of(&operator.request(
        "POST",
        "/batch/sum",
        Some(&format!(r#"{{"workers": 1, "item_list": {{"items": [1, {big_item}], "batch_size": 1}}}}"#)),
    ));
    assert_eq!(
        (status, kind.as_str(), message.as_str()),
        (
            400,
            "batchapi.item_size_exceeds_limit",
            "item 1 has size 256002 bytes which exceeds the limit (256000 bytes)"
        )
    );
    let huge = format!("{{\"workers\": 1, \"pad\": \"{}\"}}", "x".repeat(10 << 20));
    assert_eq!(
        error_of(&operator.request("POST", "/batch/sum", Some(&huge))),
        (400, "error".into(), "http: request body too large".into())
    );
    assert_eq!(
        error_of(&operator.request("POST", "/batch/nope", Some("{}"))),
        (400, "resources.api_not_deployed".into(), "nope is not deployed".into())
    );
    assert_eq!(
        error_of(&operator.request("GET", "/batch/sum", None)),
        (400, "endpoints.query_param_required".into(), "query param required: jobID".into())
    );
    assert_eq!(error_of(&operator.request("DELETE", "/batch/sum", None)).1, "endpoints.query_param_required");
    assert_eq!(
        error_of(&operator.request("GET", "/batch/sum?jobID=0123", None)),
        (400, "job.not_found".into(), "failed to get job state: unable to find BatchAPI job 0123 (sum api)".into())
    );
    assert_eq!(error_of(&operator.request("DELETE", "/batch/sum?jobID=0123", None)).1, "job.not_found");

    // Dry runs answer text and create nothing.
    let job = r#"{"workers": 1, "item_list": {"items": [[1]], "batch_size": 1}}"#;
    assert_eq!(operator.request("POST", "/batch/sum?dryRun=true", Some(job)), (200, "validations passed".into()));
    let (status, text) = operator.request(
        "POST",
        "/batch/sum?dryRun=true",
        Some(r#"{"workers": 1, "item_list": {"items": [], "batch_size": 1}}"#),
    );
    assert_eq!(status, 400);
    assert!(text.starts_with("\nitems: must contain at least 1 elements"), "{text:?}");
    let (_, listed) = operator.request("GET", "/batch/sum/jobs", None);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap()["jobs"], json!([]), "the dry runs created nothing");

    // A job, its list, its status, its stop.
    let job_id = operator.submit("sum", &json!({"workers": 1, "item_list": {"items": [[1, 2]], "batch_size": 1}}));
    let status = operator.wait_done("sum", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded");
    assert_eq!(status["api_spec"]["name"], "sum");
    let (_, listed) = operator.request("GET", "/batch/sum/jobs", None);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap()["jobs"][0]["job_id"], job_id);
    assert_eq!(
        operator.request("DELETE", &format!("/batch/sum?jobID={job_id}"), None),
        (200, format!(r#"{{"message":"stopped job {job_id}"}}"#))
    );
    assert_eq!(operator.status("sum", &job_id)["job_status"]["status"], "succeeded", "a finished job stays as it was");
    assert_eq!(operator.request("GET", "/healthz", None).0, 200);
    let (_, metrics) = operator.request("GET", "/metrics", None);
    assert!(
        metrics.contains(&format!("cortex_batch_succeeded{{api_name=\"sum\",job_id=\"{job_id}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("wasmbatch_jobs{status=\"succeeded\"} 1"), "{metrics}");
    assert_eq!(error_of(&operator.request("GET", "/nowhere", None)).0, 404);
}

#[test]
fn failures_are_retried_then_kept_as_dead_letters() {
    let place = Place::new("");
    let operator = place.start();
    let job_id = operator.submit(
        "misbehave",
        &json!({"workers": 2, "item_list": {"items": ["ok", "error:bad row", "ok", "invalid:never"], "batch_size": 1}}),
    );
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(status["job_status"]["status"], "completed_with_failures");
    assert_eq!((status["metrics"]["succeeded"].as_u64(), status["metrics"]["failed"].as_u64()), (Some(2), Some(2)));
    let (code, text) = operator.request("GET", &format!("/batch/misbehave/jobs/{job_id}/dead-letters"), None);
    assert_eq!(code, 200);
    let letters: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 2);
    assert_eq!((letters[0]["batch_index"].as_u64(), letters[0]["attempts"].as_u64()), (Some(1), Some(2)));
    assert_eq!(
        (letters[0]["error"]["kind"].as_str(), letters[0]["items"].clone()),
        (Some("guest_error"), json!(["error:bad row"]))
    );
    assert_eq!(
        (letters[1]["error"]["kind"].as_str(), letters[1]["attempts"].as_u64()),
        (Some("invalid_input"), Some(1))
    );
}

#[test]
fn two_jobs_run_at_once_and_a_stop_and_a_timeout_end_theirs() {
    // A budget of 2 workers, which the big job alone could fill: the small job submitted
    // after it still gets its turns.
    let place = Place::with_budget(2, "");
    let operator = place.start();
    let slow: Vec<&str> = std::iter::once("copy:/cortex/spec/job.json:/mnt/slow-started")
        .chain(std::iter::repeat_n("sleep:100", 40))
        .collect();
    let slow_id = operator.submit("misbehave", &json!({"workers": 1, "item_list": {"items": slow, "batch_size": 1}}));
    wait_for_file(&place.path("out/slow-started"));
    // A small job submitted later is not starved by the big one.
    let small_id =
        operator.submit("sum", &json!({"workers": 2, "item_list": {"items": [[1], [2], [3]], "batch_size": 1}}));
    assert_eq!(operator.wait_done("sum", &small_id)["job_status"]["status"], "succeeded");
    assert_eq!(operator.status("misbehave", &slow_id)["job_status"]["status"], "running");
    let (code, _) = operator.request("DELETE", &format!("/batch/misbehave?jobID={slow_id}"), None);
    assert_eq!(code, 200);
    let stopped = operator.status("misbehave", &slow_id);
    assert_eq!(stopped["job_status"]["status"], "stopped", "recorded before DELETE answered");
    assert!(stopped["job_status"]["dead_lettered_batch_count"].as_u64().unwrap() > 0, "{stopped}");
    assert_eq!(stopped["job_status"]["on_job_complete"], "skipped");

    let loops: Vec<&str> = std::iter::repeat_n("loop", 3).collect();
    let timed = operator
        .submit("misbehave", &json!({"workers": 1, "timeout": 1, "item_list": {"items": loops, "batch_size": 1}}));
    let status = operator.wait_done("misbehave", &timed);
    assert_eq!(status["job_status"]["status"], "timed_out");
    assert_eq!(status["job_status"]["dead_lettered_batch_count"], 3);
}

/// Lines written whole so far (the writer may be half-way through one).
fn complete_lines(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

/// `n` batches for `misbehave`, each recording its attempt in `out/attempts.jsonl`
/// and then sleeping `ms`.
fn recorded_items(n: usize, ms: u64) -> Vec<String> {
    (0..n).flat_map(|_| ["batch:/mnt/attempts.jsonl".to_string(), format!("sleep:{ms}")]).collect()
}

#[test]
fn a_sigkill_during_the_batches_loses_nothing_and_redoes_only_what_was_in_flight() {
    let place = Place::new("");
    let operator = place.start();
    let job = json!({
        "workers": 2,
        "config": {"on_complete_file": "/mnt/complete.jsonl"},
        "item_list": {"items": recorded_items(60, 20), "batch_size": 2},
    });
    let job_id = operator.submit("misbehave", &job);
    let attempts = place.path("out/attempts.jsonl");
    // Kill once a third of the batches have run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while complete_lines(&attempts) < 20 {
        assert!(Instant::now() < deadline, "the job never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    operator.kill();
    let operator = place.start();
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!(status["metrics"]["succeeded"], 60);
    let seen = read_lines(&attempts);
    let mut ids: Vec<u64> = seen.iter().map(|r| r["batch_id"].as_str().unwrap().parse().unwrap()).collect();
    ids.sort();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, (0..60).collect::<Vec<u64>>(), "every batch ran");
    // A batch whose outcome was journaled is not run again: only the 2 workers'
    // batches in flight at the kill may repeat (at-least-once).
    let repeats = ids.len() - unique.len();
    assert!(repeats <= 2, "{repeats} batches ran twice");
    let complete = read_lines(&place.path("out/complete.jsonl"));
    assert_eq!(complete.len(), 1, "on-job-complete ran once");
    assert_eq!(
        (complete[0]["succeeded"].as_u64(), complete[0]["total"].as_u64()),
        (Some(60), Some(60)),
        "with the whole job's counts"
    );
}

#[test]
fn a_sigkill_right_after_the_submission_still_runs_the_job() {
    let place = Place::new("");
    let operator = place.start();
    let job_id =
        operator.submit("sum", &json!({"workers": 1, "item_list": {"items": [[1], [2], [3], [4]], "batch_size": 1}}));
    operator.kill();
    let operator = place.start();
    let status = operator.wait_done("sum", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded");
    let result: Value =
        serde_json::from_slice(&std::fs::read(place.path("out").join(&job_id).join("result.json")).unwrap()).unwrap();
    assert_eq!((result["batches"].as_u64(), result["total"].as_f64()), (Some(4), Some(10.0)));
}

#[test]
fn a_sigkill_during_on_job_complete_runs_it_again_to_its_end_once() {
    let place = Place::new("");
    let operator = place.start();
    let job = json!({
        "workers": 1,
        "config": {"on_complete_file": "/mnt/complete.jsonl", "on_complete_pause": ["/mnt/hook-started", 1000]},
        "item_list": {"items": ["ok", "ok", "error:x"], "batch_size": 1},
    });
    let job_id = operator.submit("misbehave", &job);
    wait_for_file(&place.path("out/hook-started"));
    operator.kill();
    assert!(read_lines(&place.path("out/complete.jsonl")).is_empty(), "killed before the hook's end");
    let operator = place.start();
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(status["job_status"]["status"], "completed_with_failures", "{status}");
    assert_eq!(status["job_status"]["on_job_complete"], "succeeded");
    let complete = read_lines(&place.path("out/complete.jsonl"));
    assert_eq!(complete.len(), 1);
    assert_eq!(
        (complete[0]["succeeded"].as_u64(), complete[0]["failed"].as_u64(), complete[0]["total"].as_u64()),
        (Some(2), Some(1), Some(3))
    );
}

#[test]
fn sigterm_leaves_the_job_to_the_next_start() {
    let place = Place::new("");
    let operator = place.start();
    let job = json!({
        "workers": 1,
        "config": {"on_complete_file": "/mnt/complete.jsonl"},
        "item_list": {"items": recorded_items(30, 50), "batch_size": 2},
    });
    let job_id = operator.submit("misbehave", &job);
    let attempts = place.path("out/attempts.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while complete_lines(&attempts) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = operator.terminate();
    assert!(status.success(), "{status}");
    let operator = place.start();
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(
        (status["job_status"]["status"].as_str(), status["metrics"]["succeeded"].as_u64()),
        (Some("succeeded"), Some(30))
    );
    assert_eq!(read_lines(&place.path("out/complete.jsonl")).len(), 1);
    let mut ids: Vec<String> =
        read_lines(&attempts).iter().map(|r| r["batch_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "every batch ran");
}

#[test]
fn a_bad_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apis.toml");
    std::fs::write(&config, "[[api]]\nname = \"Sum\"\nplugin = \"nope.wasm\"\n[[api]]\nname = \"x\"\n").unwrap();
    let out = wasmbatch()
        .args(["operator", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("api \"Sum\": name: must be lowercase"), "{stderr}");
    assert!(stderr.contains("api \"Sum\": plugin:") && stderr.contains("nope.wasm is not a file"), "{stderr}");
    assert!(stderr.contains("api \"x\": plugin: give `plugin` or `endpoints`"), "{stderr}");
}

#[test]
fn the_command_line_client_submits_watches_gets_and_stops() {
    let place = Place::new("");
    let operator = place.start();
    let job_file = place.path("job.json");
    std::fs::write(
        &job_file,
        json!({"workers": 2, "item_list": {"items": [[1], [2], [3]], "batch_size": 1}}).to_string(),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = wasmbatch().args(args).args(["--operator", &operator.url]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = cli(&["submit", "sum", job_file.to_str().unwrap(), "--watch"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(" succeeded: 3 succeeded, 0 failed"), "{stdout}");
    assert!(stdout.contains("\n  items: 3 succeeded, 0 dead-lettered, of 3\n"), "{stdout}");
    let job_id = stderr.split("submitted job ").nth(1).unwrap().split(' ').next().unwrap().to_string();

    let (code, stdout, _) = cli(&["get", "sum", &job_id]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with(&format!("job id: {job_id}\nstatus: succeeded\n\nstart time: ")), "{stdout}");
    assert!(
        stdout
            .contains("batch stats\ntotal   succeeded   failed attempts   avg time per batch\n3       3           0 "),
        "{stdout}"
    );
    assert!(stdout.contains("worker stats are not available because this job is not currently running"), "{stdout}");
    let (_, json_out, _) = cli(&["get", "sum", &job_id, "-o", "json"]);
    assert_eq!(serde_json::from_str::<Value>(&json_out).unwrap()["metrics"]["succeeded"], 3);
    let (_, listed, _) = cli(&["get", "sum"]);
    assert!(listed.starts_with("job id             status      total batches   start time"), "{listed}");
    assert!(listed.contains(&job_id), "{listed}");

    // A refused submission exits 2 with Cortex's message; stop answers with its message.
    std::fs::write(&job_file, r#"{"workers": 1, "item_list": {"items": [], "batch_size": 1}}"#).unwrap();
    let (code, _, stderr) = cli(&["submit", "sum", job_file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("items: must contain at least 1 elements (configreader.too_few_elements)"), "{stderr}");
    let (code, stdout, _) = cli(&["stop", "sum", &job_id]);
    assert_eq!((code, stdout.trim()), (Some(0), format!("stopped job {job_id}").as_str()));
    let (code, _, stderr) = cli(&["get", "sum", "0000"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn a_handler_fans_out_a_job_to_another_api_and_a_refused_chain_fails_clearly() {
    // `fanout` (the misbehave plugin) may submit to `sum`, and to nothing else.
    let place = Place::new(&format!(
        "[[api]]\nname = \"fanout\"\nplugin = \"{}\"\nmount = \"out\"\nmax_attempts = 1\nmay_submit_to = [\"sum\"]\n",
        plugin("misbehave").display()
    ));
    let operator = place.start();
    let child = json!({"workers": 2, "item_list": {"items": [[1, 2], [3], [4, 5, 6]], "batch_size": 1}});
    let fan = json!({"workers": 1, "item_list": {"items": [format!("submit:sum:{child}")], "batch_size": 1}});
    let parent = operator.submit("fanout", &fan);
    assert_eq!(operator.wait_done("fanout", &parent)["job_status"]["status"], "succeeded");
    let submitted = std::fs::read_to_string(place.path("out/submitted.txt")).unwrap();
    let child_id = submitted.trim();
    let status = operator.wait_done("sum", child_id);
    assert_eq!(status["job_status"]["status"], "succeeded");
    let result: Value =
        serde_json::from_slice(&std::fs::read(place.path("out").join(child_id).join("result.json")).unwrap()).unwrap();
    assert_eq!((result["batches"].as_u64(), result["total"].as_f64()), (Some(3), Some(21.0)));

    // Towards an API it does not declare: the batch fails with the reason.
    let refused = json!({"workers": 1, "item_list": {"items": [format!("submit:misbehave:{child}")], "batch_size": 1}});
    let job_id = operator.submit("fanout", &refused);
    assert_eq!(operator.wait_done("fanout", &job_id)["job_status"]["status"], "completed_with_failures");
    let (_, letters) = operator.request("GET", &format!("/batch/fanout/jobs/{job_id}/dead-letters"), None);
    let letter: Value = serde_json::from_str(letters.lines().next().unwrap()).unwrap();
    assert_eq!(
        letter["error"]["message"],
        "submitting a job to misbehave: api \"fanout\" may not submit jobs to \"misbehave\" (it may submit to sum; see may_submit_to)"
    );
}

#[test]
fn serve_chains_by_posting_to_the_operator() {
    let place = Place::new("");
    let operator = place.start();
    let mount = tempfile::tempdir().unwrap();
    let (_spec_dir, spec) = crate::harness::spec_file(&json!({"job_id": "pod-job", "api_name": "pod"}));
    let server = crate::harness::Server::with(plugin("misbehave"))
        .args(["--job-spec", spec.to_str().unwrap(), "--mount", mount.path().to_str().unwrap()])
        .args(["--operator-url", operator.url.as_str(), "--may-submit-to", "sum"])
        .start();
    let child = json!({"workers": 1, "item_list": {"items": [[7], [8]], "batch_size": 1}});
    let reply = server.batch(&json!([format!("submit:sum:{child}")]).to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let child_id = std::fs::read_to_string(mount.path().join("submitted.txt")).unwrap().trim().to_string();
    let status = operator.wait_done("sum", &child_id);
    assert_eq!(
        (status["job_status"]["status"].as_str(), status["metrics"]["succeeded"].as_u64()),
        (Some("succeeded"), Some(2))
    );
    // Not declared: refused before any request is made.
    let reply = server.batch(&json!([format!("submit:other:{child}")]).to_string());
    assert_eq!(reply.status, 500);
    assert!(reply.message().contains("may not submit jobs to \"other\""), "{}", reply.message());
}

/// POSTs `job` to `url` with an `Idempotency-Key`: (status, replayed, body), or `None`
/// when no answer came (the operator was killed).
fn keyed_submit(url: &str, key: &str, job: &str) -> Option<(u16, bool, String)> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let result = agent.post(&format!("{url}/batch/sum")).set("Idempotency-Key", key).send_string(job);
    let answer = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let replayed = answer.header("Idempotent-Replayed") == Some("true");
    Some((answer.status(), replayed, answer.into_string().ok()?))
}

#[test]
fn an_idempotency_key_names_one_job_through_retries_conflicts_and_a_sigkill() {
    let place = Place::new("");
    let operator = place.start();
    let job = |i: usize| json!({"workers": 1, "item_list": {"items": [[i]], "batch_size": 1}}).to_string();
    let (code, replayed, first) = keyed_submit(&operator.url, "key-0", &job(0)).unwrap();
    assert_eq!((code, replayed), (200, false), "{first}");
    let (code, replayed, again) = keyed_submit(&operator.url, "key-0", &job(0)).unwrap();
    assert_eq!((code, replayed), (200, true), "{again}");
    let id = |text: &str| serde_json::from_str::<Value>(text).unwrap()["job_id"].as_str().unwrap().to_string();
    assert_eq!(id(&first), id(&again));
    let (code, _, conflict) = keyed_submit(&operator.url, "key-0", &job(1)).unwrap();
    assert_eq!(code, 409, "{conflict}");
    assert!(conflict.contains("idempotency_key_reused"), "{conflict}");
    let (code, _, bad) = keyed_submit(&operator.url, &"k".repeat(300), &job(1)).unwrap();
    assert_eq!(code, 400, "{bad}");

    // 8 clients, 25 keyed submissions each; the operator is killed mid-way and started
    // again; every client sends what got no answer again, with the same key.
    let url = Arc::new(Mutex::new(operator.url.clone()));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (url, answered) = (url.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                let mut retried = 0;
                for n in 0..25 {
                    let (key, body) = (format!("client-{c}-{n}"), job(1000 + c * 100 + n));
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        let at = url.lock().unwrap().clone();
                        match keyed_submit(&at, &key, &body) {
                            Some((200, _, text)) => {
                                ids.push(id(&text));
                                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                break;
                            }
                            other => {
                                assert!(Instant::now() < deadline, "{key}: {other:?}");
                                retried += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
                (ids, retried)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 60 {
        assert!(Instant::now() < deadline, "the clients do not get answers");
        std::thread::sleep(Duration::from_millis(5));
    }
    operator.kill();
    let restarted = place.start();
    *url.lock().unwrap() = restarted.url.clone();
    let mut all = Vec::new();
    let mut retried = 0;
    for client in clients {
        let (ids, r) = client.join().unwrap();
        all.extend(ids);
        retried += r;
    }
    assert!(retried > 0, "the kill cost no answer: the test proved nothing");
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200), "one job per key");
    let (_, list) = restarted.request("GET", "/batch/sum/jobs?limit=1000", None);
    let listed: Vec<Value> = serde_json::from_str::<Value>(&list).unwrap()["jobs"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 201, "the 200 keyed jobs and key-0's, no duplicate");
}

#[test]
fn submit_sends_again_with_its_key_when_the_operator_is_not_there_yet() {
    let place = Place::new("");
    std::fs::write(place.path("job.json"), r#"{"workers": 1, "item_list": {"items": [[1]], "batch_size": 1}}"#)
        .unwrap();
    let port = crate::harness::free_port();
    let mut submit = wasmbatch()
        .args(["submit", "sum"])
        .arg(place.path("job.json"))
        .args(["--operator", &format!("http://127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The operator comes up on that port once the first attempt has failed.
    let mut stderr = BufReader::new(submit.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("cannot connect") && first.contains("same idempotency key"), "{first}");
    let mut child = wasmbatch()
        .args(["operator", "--host", "127.0.0.1", "--port", &port.to_string(), "--config"])
        .arg(place.path("apis.toml"))
        .arg("--data-dir")
        .arg(place.path("data"))
        .arg("--cache-dir")
        .arg(shared_cache())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = submit.wait_with_output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{first}{rest}");
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(spec["job_id"].is_string(), "{spec}");
}
