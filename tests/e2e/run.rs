//! `wasmbatch run`: job files, both executors, retries, dead letters, timeout, stop.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, free_port, plugin, shared_cache, wait_for_file, wasmbatch, workspace_root};

/// A finished `run`: exit code, the status printed as JSON, and stderr.
pub(crate) struct Outcome {
    pub(crate) code: i32,
    pub(crate) status: Value,
    pub(crate) stderr: String,
}

/// A scratch directory for one job: the job file, the dead-letter file, a mount.
pub(crate) struct Job {
    dir: tempfile::TempDir,
}

impl Job {
    pub(crate) fn new(job: &Value) -> Job {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.json"), serde_json::to_vec_pretty(job).unwrap()).unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Job { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare_command(args);
        cmd.arg(self.path("job.json")).arg("--state-dir").arg(self.path("state"));
        cmd
    }

    /// `run --resume` of this job's state.
    pub(crate) fn resume_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare_command(args);
        cmd.arg("--resume").arg(self.path("state"));
        cmd
    }

    fn bare_command(&self, args: &[&str]) -> Command {
        let mut cmd = wasmbatch();
        cmd.arg("run")
            .args(["--output", "json", "--progress", "off", "--dead-letter"])
            .arg(self.path("dead-letter.jsonl"))
            .arg("--cache-dir")
            .arg(shared_cache())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The results file in the job's scratch directory, not in the test's own.
        if !args.contains(&"--results") {
            cmd.arg("--results").arg(self.path("results.jsonl"));
        }
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Outcome {
        finish(self.command(args).spawn().unwrap())
    }

    /// Runs in-process with `plugin`, /mnt mounted on the job's `mnt/`.
    pub(crate) fn in_process(&self, plugin_name: &str, args: &[&str]) -> Outcome {
        let mut all = vec!["--plugin", plugin_path(plugin_name), "--mount", self.mnt()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    pub(crate) fn mnt(&self) -> &'static str {
        Box::leak(self.path("mnt").display().to_string().into_boxed_str())
    }

    pub(crate) fn dead_letters(&self) -> Vec<Value> {
        read_lines(&self.path("dead-letter.jsonl"))
    }
}

pub(crate) fn plugin_path(name: &str) -> &'static str {
    Box::leak(plugin(name).display().to_string().into_boxed_str())
}

/// Waits for a `run` to end — within 120 s, else the test fails (a hang is a bug).
pub(crate) fn finish(child: Child) -> Outcome {
    finish_within(child, Duration::from_secs(120))
}

pub(crate) fn finish_within(mut child: Child, limit: Duration) -> Outcome {
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not end within {limit:?}; stderr:\n{}", stderr.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let status = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Outcome { code, status, stderr }
}

pub(crate) fn read_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn commands(items: &[&str], batch_size: usize, workers: usize, config: Value) -> Value {
    json!({"workers": workers, "config": config, "item_list": {"items": items, "batch_size": batch_size}})
}

#[test]
fn item_list_job_runs_in_process_and_accounts_for_every_batch() {
    let items: Vec<Vec<u32>> = (1..=7).map(|i| vec![i, i]).collect();
    let job = Job::new(&json!({"workers": 2, "item_list": {"items": items, "batch_size": 3}}));
    let out = job.in_process("sum", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = &out.status;
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["kind"], "BatchAPI");
    assert_eq!((s["total_batch_count"].as_u64(), s["total_item_count"].as_u64()), (Some(3), Some(7)));
    assert_eq!((s["metrics"]["succeeded"].as_u64(), s["metrics"]["failed"].as_u64()), (Some(3), Some(0)));
    assert!(s["metrics"]["average_time_per_batch"].as_f64().unwrap() > 0.0);
    assert_eq!(s["on_job_complete"], "succeeded");
    let job_id = s["job_id"].as_str().unwrap();
    assert_eq!(job_id.len(), 16);
    let result: Value =
        serde_json::from_slice(&std::fs::read(job.path("mnt").join(job_id).join("result.json")).unwrap()).unwrap();
    assert_eq!((result["batches"].as_u64(), result["total"].as_f64()), (Some(3), Some(56.0)));
    assert!(!job.path("dead-letter.jsonl").exists());
}

#[test]
fn guests_get_the_job_spec_with_cortex_fields() {
    let job = Job::new(&commands(&["copy:/cortex/spec/job.json:/mnt/spec.json"], 1, 1, json!({"k": "v"})));
    let out = job.in_process("misbehave", &["--api-name", "my-api"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let spec: Value = serde_json::from_slice(&std::fs::read(job.path("mnt").join("spec.json")).unwrap()).unwrap();
    assert_eq!(spec["job_id"], out.status["job_id"]);
    assert_eq!((spec["api_name"].as_str(), spec["kind"].as_str()), (Some("my-api"), Some("BatchAPI")));
    assert_eq!((spec["workers"].as_u64(), spec["total_batch_count"].as_u64()), (Some(1), Some(1)));
    assert_eq!(spec["config"], json!({"k": "v"}));
    assert!(spec["start_time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn delimited_files_stream_across_files_and_the_job_reads_from_stdin() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("a.jsonl"), "[1]\n[2]\n\n[3]\n").unwrap();
    std::fs::write(data.path().join("b.jsonl"), "[4] [5]\n").unwrap();
    let job = json!({"workers": 1, "delimited_files": {"s3_paths": [data.path()], "includes": ["**.jsonl"], "batch_size": 2}});
    let mnt = tempfile::tempdir().unwrap();
    let mut child = wasmbatch()
        .args(["run", "-", "--output", "json", "--progress", "off", "--plugin", plugin_path("sum"), "--mount"])
        .arg(mnt.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), job.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.status["total_batch_count"].as_u64(), out.status["total_item_count"].as_u64()), (Some(3), Some(5)));
    let result: Value = serde_json::from_slice(
        &std::fs::read(mnt.path().join(out.status["job_id"].as_str().unwrap()).join("result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(result["total"], 15.0);
}

#[test]
fn invalid_jobs_exit_2_with_the_field_named() {
    let cases = [
        (json!({"workers": 0, "item_list": {"items": [1], "batch_size": 1}}), "workers: must be at least 1, got 0"),
        (
            json!({"workers": 1, "item_list": {"items": [], "batch_size": 1}}),
            "item_list.items: must contain at least one item",
        ),
        (
            json!({"workers": 1, "file_path_lister": {"s3_paths": ["ftp://b/k"], "batch_size": 1}}),
            "unsupported scheme ftp://",
        ),
        (
            json!({"workers": 1, "delimited_files": {"s3_paths": ["/no/such/path"], "batch_size": 1}}),
            "/no/such/path: No such file",
        ),
    ];
    for (spec, says) in cases {
        let job = Job::new(&spec);
        let out = job.in_process("noop", &[]);
        assert_eq!(out.code, 2, "{spec}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{spec}: {}", out.stderr);
    }
    let job = Job::new(&json!({}));
    std::fs::write(job.path("job.json"), "{\"workers\": 1,\n \"item_list\": {\"items\": [1,]}}").unwrap();
    let out = job.in_process("noop", &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("line 2, column"), "{}", out.stderr);
}

#[test]
fn bad_value_in_a_delimited_file_stops_the_job_as_enqueue_failed() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.jsonl"), "[1]\n[2]\n[3\n").unwrap();
    let job = Job::new(
        &json!({"workers": 1, "delimited_files": {"s3_paths": [data.path().join("in.jsonl")], "batch_size": 1}}),
    );
    let out = job.in_process("sum", &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.status["status"], "enqueue_failed");
    assert!(out.status["error"].as_str().unwrap().contains("in.jsonl: line 4"), "{}", out.status);
    assert_eq!(out.status["on_job_complete"], "skipped");
}

#[test]
fn failed_batches_are_retried_then_dead_lettered_then_rerun() {
    let job = Job::new(&commands(
        &["ok", "flaky:/mnt/flaky-1", "fail-if:broken", "ok", "invalid:never"],
        1,
        2,
        json!({"broken": true}),
    ));
    let out = job.in_process("misbehave", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let s = &out.status;
    assert_eq!(s["status"], "completed_with_failures");
    assert_eq!((s["metrics"]["succeeded"].as_u64(), s["metrics"]["failed"].as_u64()), (Some(3), Some(2)));
    assert_eq!(s["dead_lettered_batch_count"], 2);
    // flaky: 1 retry; fail-if: 2 retries (3 attempts); invalid input: never retried.
    assert_eq!(s["retries"], 3);
    let mut dead = job.dead_letters();
    dead.sort_by_key(|d| d["batch_index"].as_u64());
    assert_eq!(dead.len(), 2);
    assert_eq!((dead[0]["batch_index"].as_u64(), dead[0]["attempts"].as_u64()), (Some(2), Some(3)));
    assert_eq!(dead[0]["error"]["kind"], "guest_error");
    assert_eq!(dead[0]["items"], json!(["fail-if:broken"]));
    assert_eq!((dead[1]["attempts"].as_u64(), dead[1]["error"]["kind"].as_str()), (Some(1), Some("invalid_input")));

    // Fix the config and re-run only what failed.
    let rerun = Job::new(&commands(&["ok"], 1, 1, json!({"broken": false})));
    let failed_once = job.path("dead-letter.jsonl");
    let out = rerun.in_process("misbehave", &["--retry-from", failed_once.to_str().unwrap()]);
    assert_eq!(out.status["total_batch_count"], 2);
    assert_eq!(out.status["metrics"]["succeeded"], 1, "the fail-if batch now passes");
    assert_eq!(rerun.dead_letters().len(), 1, "invalid input stays invalid");
}

#[test]
fn timeout_interrupts_the_job_and_dead_letters_the_rest() {
    let items: Vec<&str> = std::iter::once("ok").chain(std::iter::repeat_n("loop", 5)).collect();
    let mut spec = commands(&items, 1, 2, json!({}));
    spec["timeout"] = json!(1);
    let job = Job::new(&spec);
    let out = job.in_process("misbehave", &["--batch-timeout", "10m"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let s = &out.status;
    assert_eq!(s["status"], "timed_out");
    assert_eq!(s["on_job_complete"], "skipped");
    assert_eq!(s["total_batch_count"], 6);
    assert_eq!(s["metrics"]["succeeded"], 1);
    assert_eq!(s["unhandled_batch_count"], 5);
    assert_eq!(job.dead_letters().len(), 5);
    assert!(job.dead_letters().iter().all(|d| d["error"]["kind"] == "timed_out"));
}

#[test]
fn on_job_complete_runs_exactly_once_with_counts_even_with_many_workers() {
    let items: Vec<String> = (0..60).map(|i| if i % 10 == 3 { "error:x".into() } else { "ok".into() }).collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    let job = Job::new(&commands(&items, 2, 8, json!({"on_complete_file": "/mnt/complete.jsonl"})));
    let out = job.in_process("misbehave", &["--max-attempts", "1"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let calls = read_lines(&job.path("mnt").join("complete.jsonl"));
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["job_id"], out.status["job_id"]);
    assert_eq!(
        (calls[0]["succeeded"].as_u64(), calls[0]["failed"].as_u64(), calls[0]["total"].as_u64()),
        (Some(24), Some(6), Some(30))
    );
}

#[test]
fn status_file_uses_cortex_names() {
    let job = Job::new(&commands(&["ok", "ok"], 1, 1, json!({})));
    let status_file = job.path("status.json");
    let out = job.in_process("misbehave", &["--status-file", status_file.to_str().unwrap()]);
    assert_eq!(out.code, 0);
    let s: Value = serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    for key in
        ["job_id", "api_name", "kind", "status", "workers", "start_time", "end_time", "total_batch_count", "metrics"]
    {
        assert!(s.get(key).is_some(), "missing {key}: {s}");
    }
    for key in ["succeeded", "failed", "average_time_per_batch"] {
        assert!(s["metrics"].get(key).is_some(), "missing metrics.{key}: {s}");
    }
}

#[test]
fn endpoint_executor_against_wasmbatch_serve_matches_in_process() {
    let items: Vec<Vec<u32>> = (1..=25).map(|i| vec![i, 2 * i]).collect();
    let spec = json!({"workers": 3, "item_list": {"items": items, "batch_size": 4}});

    let local = Job::new(&spec);
    let out = local.in_process("sum", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read_result = |dir: &Path, job_id: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(job_id).join("result.json")).unwrap()).unwrap()
    };
    let local_result = read_result(&local.path("mnt"), out.status["job_id"].as_str().unwrap());

    let remote = Job::new(&spec);
    let server = Server::with(plugin("sum")).args(["--mount", remote.mnt(), "--concurrency", "3"]).start();
    let out = remote.run(&["--endpoint", &server.url("")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status["executor"], "endpoint");
    assert_eq!(out.status["on_job_complete"], "succeeded");
    let remote_result = read_result(&remote.path("mnt"), out.status["job_id"].as_str().unwrap());

    for key in ["batches", "items", "total"] {
        assert_eq!(local_result[key], remote_result[key], "{key}");
    }
    assert_eq!(local_result["total"], 975.0);
}

#[test]
fn endpoint_executor_against_a_python_server_waits_for_readiness() {
    let record = tempfile::tempdir().unwrap();
    let record_file = record.path().join("record.jsonl");
    let port = free_port();
    let mut python = Command::new("python3")
        .arg(workspace_root().join("tests/fixtures/contract_server.py"))
        .arg(port.to_string())
        .arg(&record_file)
        .arg("1.0")
        .spawn()
        .expect("python3 runs the fixture server");
    let job = Job::new(
        &json!({"workers": 2, "max_attempts": 2, "item_list": {"items": [1, 2, 3, 4, "fail", 6, 7], "batch_size": 2}}),
    );
    let out = job.run(&["--endpoint", &format!("http://127.0.0.1:{port}")]);
    let _ = python.kill();
    let _ = python.wait();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let s = &out.status;
    assert_eq!(s["status"], "completed_with_failures");
    assert_eq!((s["metrics"]["succeeded"].as_u64(), s["metrics"]["failed"].as_u64()), (Some(3), Some(1)));
    let dead = job.dead_letters();
    assert_eq!((dead[0]["error"]["kind"].as_str(), dead[0]["attempts"].as_u64()), (Some("http_500"), Some(2)));
    assert_eq!(dead[0]["items"], json!(["fail", 6]));
    let lines = read_lines(&record_file);
    let sums: f64 = lines.iter().filter_map(|l| l["sum"].as_f64()).sum();
    assert_eq!(sums, 1.0 + 2.0 + 3.0 + 4.0 + 7.0);
    let complete: Vec<&Value> = lines.iter().filter(|l| l.get("complete").is_some()).collect();
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["complete"]["message"], "job_complete");
    assert_eq!(complete[0]["complete"]["total"], 4);
    assert!(lines.iter().all(|l| l["job_id"] == s["job_id"]));
}

#[test]
fn endpoint_that_never_gets_ready_is_a_clear_error() {
    let port = free_port();
    let job = Job::new(&commands(&["ok"], 1, 1, json!({})));
    let out = job.run(&["--endpoint", &format!("http://127.0.0.1:{port}"), "--ready-timeout", "500ms"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("was not ready within 500ms"), "{}", out.stderr);
}

#[test]
fn interrupt_stops_the_job_and_resume_finishes_the_same_job() {
    let items: Vec<&str> = std::iter::once("copy:/cortex/spec/job.json:/mnt/started")
        .chain(std::iter::repeat_n("sleep:200", 39))
        .collect();
    let job = Job::new(&commands(&items, 1, 1, json!({"on_complete_file": "/mnt/complete.jsonl"})));
    let plugin_args = ["--plugin", plugin_path("misbehave"), "--mount", job.mnt()];
    let child = job.command(&plugin_args).spawn().unwrap();
    wait_for_file(&job.path("mnt").join("started"));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = finish(child);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let s = &out.status;
    assert_eq!(s["status"], "stopped");
    let job_id = s["job_id"].as_str().unwrap().to_string();
    let (succeeded, pending) =
        (s["metrics"]["succeeded"].as_u64().unwrap(), s["pending_batch_count"].as_u64().unwrap());
    assert!(pending > 20, "{s}");
    assert_eq!(s["dead_lettered_batch_count"], 0, "stopped batches wait for the resume, not in the dead letters");
    assert_eq!(s["resume_with"], job.path("state").display().to_string());
    assert!(read_lines(&job.path("mnt/complete.jsonl")).is_empty());

    let out = finish(job.resume_command(&plugin_args).spawn().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = &out.status;
    assert_eq!((s["job_id"].as_str(), s["status"].as_str()), (Some(job_id.as_str()), Some("succeeded")));
    assert_eq!((s["metrics"]["succeeded"].as_u64(), s["total_batch_count"].as_u64()), (Some(40), Some(40)));
    assert!(s["total_item_count"].as_u64().unwrap() <= 40 - succeeded, "only the rest ran again: {s}");
    assert_eq!(s["items"], json!({"succeeded": 40, "dead_lettered": 0}), "the whole job's items, both runs': {s}");
    let complete = read_lines(&job.path("mnt/complete.jsonl"));
    assert_eq!(complete.len(), 1);
    assert_eq!((complete[0]["succeeded"].as_u64(), complete[0]["total"].as_u64()), (Some(40), Some(40)));
    let again = finish(job.resume_command(&plugin_args).spawn().unwrap());
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already ended (succeeded); nothing to resume"), "{}", again.stderr);
}

#[test]
fn a_sigkill_then_resume_loses_nothing_and_sums_right() {
    // 2,000 items of [i, i] in batches of 10: the sum is 2 × (0 + … + 1999).
    let items: Vec<Vec<u64>> = (0..2000).map(|i| vec![i, i]).collect();
    let job = Job::new(&json!({"workers": 2, "item_list": {"items": items, "batch_size": 10}}));
    let plugin_args = ["--plugin", plugin_path("sum"), "--mount", job.mnt()];
    let mut child = job.command(&plugin_args).spawn().unwrap();
    // Kill once about a third of the batches have written their output.
    let deadline = Instant::now() + Duration::from_secs(60);
    let job_dir = loop {
        let dirs: Vec<PathBuf> = std::fs::read_dir(job.path("mnt")).unwrap().map(|e| e.unwrap().path()).collect();
        if let Some(dir) = dirs.first()
            && std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0) >= 60
        {
            break dir.clone();
        }
        assert!(Instant::now() < deadline, "the job never got going");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let out = finish(job.resume_command(&plugin_args).spawn().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status["job_id"].as_str(), job_dir.file_name().unwrap().to_str());
    assert_eq!(
        (out.status["metrics"]["succeeded"].as_u64(), out.status["total_batch_count"].as_u64()),
        (Some(200), Some(200))
    );
    let result: Value = serde_json::from_slice(&std::fs::read(job_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!((result["batches"].as_u64(), result["items"].as_u64()), (Some(200), Some(2000)));
    assert_eq!(result["total"].as_f64(), Some(2.0 * (1999.0 * 2000.0 / 2.0)));
}

#[test]
fn a_large_streamed_input_runs_in_bounded_memory() {
    // 2M JSON Lines (about 60 MB): if the input were held in memory, RSS would pass it.
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("big.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..2_000_000u32 {
            writeln!(out, "{{\"id\":{i},\"v\":\"{:08x}\"}}", i.wrapping_mul(2_654_435_761)).unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let job = Job::new(&json!({"workers": 2, "delimited_files": {"s3_paths": [path], "batch_size": 1000}}));
    let child = job.command(&["--plugin", plugin_path("noop"), "--no-mount"]).spawn().unwrap();
    let watcher = crate::harness::watch_peak_rss(child.id());
    let out = finish(child);
    let peak_kib = watcher.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.status["total_batch_count"].as_u64(), out.status["total_item_count"].as_u64()),
        (Some(2000), Some(2_000_000))
    );
    eprintln!("streamed {} MB with a peak RSS of {} MB", size >> 20, peak_kib >> 10);
    assert!(peak_kib << 10 < size, "peak RSS {peak_kib} KiB for a {size}-byte input");
}

#[test]
fn textstats_sums_up_the_jobs_results_the_same_with_any_number_of_workers() {
    let docs: Vec<Value> = (0..60)
        .map(|i| json!({"id": format!("d{i}"), "text": format!("alpha beta{} gamma. delta {i}!", i % 7)}))
        .collect();
    let mut summaries = Vec::new();
    for workers in [1, 4] {
        let job = Job::new(&json!({"workers": workers, "item_list": {"items": docs, "batch_size": 7}}));
        let out = job.in_process("textstats", &["--recycle-after", "2"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let job_id = out.status["job_id"].as_str().unwrap();
        let summary: Value =
            serde_json::from_slice(&std::fs::read(job.path("mnt").join(job_id).join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["documents"], 60, "{summary}");
        assert_eq!(summary["words"], 60 * 4, "digits alone are not words: {summary}");
        assert_eq!(summary["distinct_words"], 3 + 7, "{summary}");
        assert_eq!(summary["top_words"][0], json!(["alpha", 60]), "{summary}");
        summaries.push((summary["words"].clone(), summary["top_words"].clone(), summary["mean_reading_ease"].clone()));
    }
    assert_eq!(summaries[0], summaries[1], "the same summary with 1 and 4 workers");
}

#[test]
fn textstats_behind_a_bare_server_writes_no_summary_and_says_why() {
    let mount = tempfile::tempdir().unwrap();
    let server = Server::with(plugin("textstats"))
        .args(["--mount", mount.path().to_str().unwrap(), "--operator-url", "http://127.0.0.1:9"])
        .start();
    assert_eq!(server.post("/", Some("j1"), r#"[{"id":"a","text":"one two"}]"#).status, 200);
    assert_eq!(server.post("/on-job-complete", Some("j1"), r#"{"message":"job_complete"}"#).status, 200);
    let line = server.wait_for_log("the warning", |l| {
        l["message"].as_str().is_some_and(|m| m.contains("no corpus summary") && m.contains("127.0.0.1:9"))
    });
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(!mount.path().join("j1/summary.json").exists(), "no summary of a share of the batches");
}

#[test]
fn a_new_job_refuses_a_results_file_an_earlier_job_wrote() {
    let docs: Vec<Value> = (0..4).map(|i| json!({"id": format!("d{i}"), "text": "Words here."})).collect();
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": docs, "batch_size": 2}}));
    let first = job.in_process("textstats", &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before = std::fs::read(job.path("results.jsonl")).unwrap();
    // Appending would keep the first job's results for the second's batches.
    let second = job.in_process("textstats", &[]);
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert!(second.stderr.contains("already holds results (of an earlier job)"), "{}", second.stderr);
    assert_eq!(std::fs::read(job.path("results.jsonl")).unwrap(), before, "the file is left as it was");
}

/// What a terminal shows of `text` (a pseudo-terminal's output, lines ending `\r\n`):
/// per line, what is left after the last carriage return, without escape sequences.
fn as_shown(text: &str) -> Vec<String> {
    let escapes = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    text.split('\n')
        .map(|line| {
            escapes.replace_all(line.trim_end_matches('\r').rsplit('\r').next().unwrap_or_default(), "").into_owned()
        })
        .collect()
}

#[test]
fn on_a_terminal_run_draws_a_bar_with_rate_and_eta_and_logs_above_it_and_plain_lines_when_piped() {
    let mut items = vec!["ok"; 39];
    items.insert(20, "log:warn:a guest's warning");
    let job = Job::new(&commands(&items, 1, 1, json!({})));
    // A pseudo-terminal: `script` runs the command on one and copies what it shows.
    let run = |job: &Job, progress: &[&str]| {
        let mut command = wasmbatch();
        command
            .args(["run", "--output", "json", "--cache-dir"])
            .arg(shared_cache())
            .args(["--plugin", plugin_path("misbehave"), "--no-mount"])
            .args(progress)
            .arg(job.path("job.json"))
            .arg("--results")
            .arg(job.path("results.jsonl"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let command = run(&job, &["--progress", "auto"]);
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("script").args(["-qfec", &line, "/dev/null"]).output().expect("script runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let shown = as_shown(&String::from_utf8_lossy(&out.stdout));
    let last_bar = shown.iter().rfind(|l| l.contains("40/40 batches")).unwrap_or_else(|| panic!("{shown:#?}"));
    assert!(last_bar.starts_with(&format!("[{}]", "#".repeat(30))), "{last_bar}");
    assert!(last_bar.contains(" items/s, 0 failed, ETA "), "{last_bar}");
    let warning = shown.iter().find(|l| l.contains("a guest's warning")).unwrap_or_else(|| panic!("{shown:#?}"));
    assert!(!warning.contains("batches"), "the log line is written apart from the bar: {warning:?}");
    assert!(
        shown.iter().all(|l| !(l.contains("40/40 batches") && l.contains("job ended"))),
        "the line after the finished bar is a line of its own: {shown:#?}"
    );

    // Piped: plain lines, no bar.
    let job = Job::new(&commands(&items, 1, 1, json!({})));
    let out = finish(run(&job, &["--progress", "auto", "--progress-interval", "1ms"]).spawn().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.lines().any(|l| l.starts_with("progress: ") && l.contains("/40 batches")), "{}", out.stderr);
    assert!(!out.stderr.contains('\r') && !out.stderr.contains("[#"), "{}", out.stderr);
}
