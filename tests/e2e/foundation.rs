//! Faults that once lost batches, hung, or grew without bound — each found by probing
//! `run` and `serve` — and what happens now. docs/reliability.md has the table.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, free_port, guest_file, plugin, wasmbatch, workspace_root};
use crate::resilience::wait_for_metric;
use crate::run::{Job, commands, finish, finish_within, plugin_path, read_lines};

/// The Python server of the contract in `mode` (see the fixture's header), killed on
/// drop, with the file it records into.
struct Python {
    child: Child,
    port: u16,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl Python {
    fn start(mode: &str) -> Python {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record.jsonl");
        let port = free_port();
        let child = Command::new("python3")
            .arg(workspace_root().join("tests/fixtures/contract_server.py"))
            .arg(port.to_string())
            .arg(&record)
            .arg("0")
            .arg(mode)
            .spawn()
            .expect("python3 runs the fixture server");
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the Python server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Python { child, port, record, _dir: dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn records(&self) -> Vec<Value> {
        read_lines(&self.record)
    }

    /// Waits (bounded) until `n` records satisfy `pred`.
    fn wait_for(&self, n: usize, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.records().iter().filter(|r| pred(r)).count() < n {
            assert!(Instant::now() < deadline, "the server never recorded {n} such requests: {:?}", self.records());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sigint(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

// 1. Absurd numbers, panics and count mismatches.

#[test]
fn absurd_numbers_are_exit_2_naming_the_field() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.jsonl");
    std::fs::write(&input, (0..25).map(|i| format!("[{i}]\n")).collect::<String>()).unwrap();
    let cases = [
        (
            json!({"workers": 1, "delimited_files": {"s3_paths": [input], "batch_size": 4611686018427387904u64}}),
            "delimited_files.batch_size: must be at most 1000000, got 4611686018427387904",
        ),
        (
            json!({"workers": 1, "delimited_files": {"s3_paths": [input], "batch_size": 1e12}}),
            "delimited_files.batch_size: must be at most 1000000, got 1000000000000.0",
        ),
        (json!({"workers": 1e12, "item_list": {"items": [1], "batch_size": 1}}), "workers: must be at most 1024"),
        (
            json!({"workers": 1000000000000u64, "item_list": {"items": [1], "batch_size": 1}}),
            "workers: must be at most 1024",
        ),
    ];
    for (spec, says) in cases {
        let job = Job::new(&spec);
        let out = job.in_process("sum", &[]);
        assert_eq!(out.code, 2, "{spec}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{spec}: {}", out.stderr);
        assert!(!job.path("mnt").read_dir().unwrap().any(|_| true), "nothing ran");
    }
    // The same through --endpoint, and the options of serve.
    let job = Job::new(&json!({"workers": 1000000000000u64, "item_list": {"items": [1], "batch_size": 1}}));
    let out = job.run(&["--endpoint", "http://127.0.0.1:9"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("workers: must be at most 1024"), "{}", out.stderr);
    for (flag, value) in [("--queue-depth", "1000000000000"), ("--concurrency", "100000"), ("--max-body", "5GiB")] {
        let out = wasmbatch()
            .args(["serve", "--no-mount", "--port", "0", "--plugin"])
            .arg(plugin("noop"))
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

// 2. --retry-from and --dead-letter on the same file.

#[test]
fn retrying_into_the_file_being_retried_is_refused() {
    let job = Job::new(&commands(&["error:x"; 20], 1, 2, json!({})));
    let out = job.in_process("misbehave", &["--max-attempts", "1"]);
    assert_eq!(out.status["dead_lettered_batch_count"], 20, "{}", out.stderr);
    let file = job.path("dead-letter.jsonl");
    let before = std::fs::read(&file).unwrap();
    let out = job.in_process("misbehave", &["--retry-from", file.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--retry-from and --dead-letter name the same file"), "{}", out.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), before, "the dead letters are untouched");
}

// 3. Dead letters are on disk before they are counted.

#[test]
fn dead_letters_counted_before_a_sigkill_are_on_disk() {
    let items: Vec<String> = (0..400).map(|i| format!("error:batch {i}")).collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    let job = Job::new(&commands(&items, 1, 1, json!({})));
    let mut child = job
        .command(&["--plugin", plugin_path("misbehave"), "--no-mount", "--max-attempts", "1", "--log-format", "json"])
        .spawn()
        .unwrap();
    // Each "dead-lettered" log line follows the record's flush to disk.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut counted = 0;
    while counted < 25 {
        let line = lines.next().expect("the job logs").unwrap();
        if line.contains("batch failed for good; dead-lettered") {
            counted += 1;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(job.path("dead-letter.jsonl")).unwrap();
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("every line is whole")).collect();
    assert!(records.len() >= counted, "{} records on disk, {counted} counted", records.len());
    assert!(text.is_empty() || text.ends_with('\n'));
}

// 4. A malformed value part-way through the input.

#[test]
fn batches_read_before_a_bad_value_are_still_handled() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.jsonl");
    std::fs::write(&input, "[1]\n[2]\n[3]\n[4]\n[5\n").unwrap();
    let job = Job::new(&json!({"workers": 1, "delimited_files": {"s3_paths": [input], "batch_size": 3}}));
    let out = job.in_process("sum", &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let s = &out.status;
    assert_eq!(s["status"], "enqueue_failed");
    assert!(s["error"].as_str().unwrap().contains("in.jsonl: line 6"), "{s}");
    // [1],[2],[3] and then [4], the value just before the bad one: both batches ran.
    assert_eq!((s["total_batch_count"].as_u64(), s["total_item_count"].as_u64()), (Some(2), Some(4)));
    assert_eq!(s["metrics"]["succeeded"], 2, "{s}");
    assert_eq!(s["dead_lettered_batch_count"], 0);
    assert_eq!(s["on_job_complete"], "skipped");
    let dir = job.path("mnt").join(s["job_id"].as_str().unwrap());
    let mut files: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["batch-0.json", "batch-1.json"]);
}

// 5. Dead-letter records keep the batch byte for byte.

#[test]
fn dead_lettered_batches_are_retried_with_the_exact_bytes() {
    let python = Python::start("");
    let job = Job::new(&json!({}));
    let items =
        "[\n  {\"z\": 1,\n   \"a\": 123456789012345678901234567890},\n  \"fail\",\n  1e999999,\n  {\"k\": \"v\"}\n]";
    std::fs::write(
        job.path("job.json"),
        format!("{{\"workers\": 1, \"max_attempts\": 1, \"item_list\": {{\"batch_size\": 3, \"items\": {items}}}}}"),
    )
    .unwrap();
    let out = job.run(&["--endpoint", &python.url()]);
    assert_eq!(out.status["dead_lettered_batch_count"], 1, "{}", out.stderr);
    let first: Vec<String> =
        python.records().iter().filter_map(|r| r["received"].as_str().map(str::to_owned)).collect();
    assert_eq!(first.len(), 2);
    let failed = first.iter().find(|b| b.contains("\"fail\"")).unwrap().clone();
    assert!(failed.contains('\n') && failed.contains("123456789012345678901234567890"), "{failed}");
    assert!(failed.contains("1e999999"), "{failed}");
    let text = std::fs::read_to_string(job.path("dead-letter.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1, "one record per line: {text}");

    let again = Job::new(&json!({"workers": 1, "max_attempts": 1, "item_list": {"items": [0], "batch_size": 1}}));
    let out =
        again.run(&["--endpoint", &python.url(), "--retry-from", job.path("dead-letter.jsonl").to_str().unwrap()]);
    assert_eq!(out.status["total_batch_count"], 1, "{}", out.stderr);
    let received: Vec<String> =
        python.records().iter().filter_map(|r| r["received"].as_str().map(str::to_owned)).collect();
    assert_eq!(received.len(), 3);
    assert_eq!(received[2], failed, "the retried batch is the same bytes");
}

// 6. One instance lifecycle for run and serve.

#[test]
fn run_in_process_honours_recycle_after() {
    let items = ["stats:/mnt/s0.json", "stats:/mnt/s1.json", "stats:/mnt/s2.json"];
    let job = Job::new(&commands(&items, 1, 1, json!({})));
    let out = job.in_process("misbehave", &["--recycle-after", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for i in 0..3 {
        let stats: Value =
            serde_json::from_slice(&std::fs::read(job.path("mnt").join(format!("s{i}.json"))).unwrap()).unwrap();
        assert_eq!((stats["inits"].as_u64(), stats["batches"].as_u64()), (Some(1), Some(1)), "batch {i}");
    }
}

// 7. Every wait of `run --endpoint` has a deadline and ends on a stop.

#[test]
fn a_server_that_never_answers_fails_the_attempt_at_the_batch_timeout() {
    let python = Python::start("hang-batches");
    let job = Job::new(&json!({"workers": 1, "max_attempts": 2, "item_list": {"items": [1], "batch_size": 1}}));
    let out = job.run(&["--endpoint", &python.url(), "--batch-timeout", "300ms"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.status["status"], "completed_with_failures");
    let dead = job.dead_letters();
    assert_eq!((dead[0]["error"]["kind"].as_str(), dead[0]["attempts"].as_u64()), (Some("request_timeout"), Some(2)));
    assert!(dead[0]["error"]["message"].as_str().unwrap().contains("did not answer within 300ms"), "{dead:?}");
}

#[test]
fn a_health_route_that_never_answers_ends_at_the_ready_timeout() {
    let python = Python::start("hang-health");
    let job = Job::new(&commands(&["ok"], 1, 1, json!({})));
    let out = job.run(&["--endpoint", &python.url(), "--ready-timeout", "500ms"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("was not ready within 500ms"), "{}", out.stderr);
}

#[test]
fn an_on_job_complete_that_never_answers_ends_at_the_job_timeout() {
    let python = Python::start("hang-complete");
    let job = Job::new(&json!({"workers": 1, "timeout": 2, "item_list": {"items": [1, 2], "batch_size": 1}}));
    let out = job.run(&["--endpoint", &python.url()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.status["status"], "timed_out");
    assert_eq!(out.status["metrics"]["succeeded"], 2);
    assert_eq!(out.status["on_job_complete"], "failed");
}

#[test]
fn the_first_ctrl_c_ends_a_wait_on_a_silent_server() {
    let python = Python::start("hang-batches");
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": [1, 2, 3], "batch_size": 1}}));
    let child = job.command(&["--endpoint", &python.url()]).spawn().unwrap();
    python.wait_for(1, |r| r.get("received").is_some());
    sigint(&child);
    let out = finish_within(child, Duration::from_secs(30));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.status["status"], "stopped");
    assert_eq!(out.status["pending_batch_count"], 3, "left for --resume: {}", out.status);
}

// 8. serve drains in a bounded time.

#[test]
fn sigterm_does_not_wait_for_a_client_that_never_finishes_its_body() {
    let mut server = Server::with(plugin("noop")).start();
    let mut stuck = TcpStream::connect(server.addr).unwrap();
    stuck.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Cortex-Job-ID: j\r\nContent-Length: 1000\r\n\r\n[1,").unwrap();
    // Admitted (its bytes reserved) and now waiting for the rest of its body.
    wait_for_metric(&server, "wasmbatch_admitted_bytes", 1000.0);
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let mut answer = String::new();
    stuck.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = stuck.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 503"), "{answer}");
}

#[test]
fn sigterm_closes_a_connection_with_half_its_headers_at_once() {
    // A header timeout far beyond the harness's 60 s wait: only the drain can end it.
    let mut server = Server::with(plugin("noop")).args(["--header-timeout", "10m"]).start();
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert_eq!(server.batch("[1]").status, 200, "others are served meanwhile");
    let status = server.terminate();
    assert!(status.success(), "{status}");
    server.wait_for_log("the drain's end", |l| l["message"] == "all requests answered; stopped");
}

// 9 and 10. Admission by bytes before bodies are read; defaults serve a crowd.

#[test]
fn memory_for_bodies_is_bounded_by_admission_not_by_connections() {
    let server = Server::with(plugin("noop"))
        .args(["--queue-depth", "1", "--queue-bytes", "32MiB", "--queue-timeout", "5m", "--max-body", "16MiB"])
        .start();
    let body = format!("[\"{}\"]", "x".repeat((16 << 20) - 8));
    let body = std::sync::Arc::new(body);
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let (url, body) = (server.url("/"), body.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(300)).build();
                match agent.post(&url).set("X-Cortex-Job-ID", "big").send_string(&body) {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(code, _)) => code,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let answers: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers.iter().all(|&s| s == 200), "{answers:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    // 40 bodies of 16 MiB are 640 MiB; admission lets 2 in at a time.
    assert!(peak_kib < 300 << 10, "peak RSS {} MiB", peak_kib >> 10);
}

#[test]
fn default_settings_serve_32_connections_without_refusals() {
    let server = Server::with(plugin("noop")).args(["--concurrency", "2"]).start();
    let batch = r#"[{"id":1},{"id":2},{"id":3},{"id":4},{"id":5},{"id":6},{"id":7},{"id":8},{"id":9},{"id":10}]"#;
    let report = crate::harness::load(server.addr, 32, 3200, batch);
    assert_eq!((report.ok, report.errors), (3200, 0), "{report:?}");
    assert!(report.other.is_empty(), "refusals: {report:?}");
}

// 11 and 12. Busy servers and long answers.

#[test]
fn a_busy_server_is_asked_again_after_retry_after_not_failed() {
    let python = Python::start("busy:4");
    let job =
        Job::new(&json!({"workers": 2, "max_attempts": 1, "item_list": {"items": [1, 2, 3, 4], "batch_size": 1}}));
    let out = job.run(&["--endpoint", &python.url()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.status["metrics"]["succeeded"].as_u64(), out.status["retries"].as_u64()), (Some(4), Some(0)));
    let sums: f64 = python.records().iter().filter_map(|r| r["sum"].as_f64()).sum();
    assert_eq!(sums, 10.0, "each batch handled once");
}

#[test]
fn long_answer_bodies_are_not_kept() {
    let python = Python::start("big-answer:256");
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}));
    let child = job.command(&["--endpoint", &python.url()]).spawn().unwrap();
    let watcher = crate::harness::watch_peak_rss(child.id());
    let out = finish(child);
    let peak_kib = watcher.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(peak_kib < 128 << 10, "peak RSS {} MiB for 256 MiB answers", peak_kib >> 10);
}

#[test]
fn results_too_long_to_keep_fail_their_batch_for_good_and_say_so() {
    let python = Python::start("big-results:80");
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": [1], "batch_size": 1}}));
    let out = job.run(&["--endpoint", &python.url()]);
    assert_eq!(out.status["status"], "completed_with_failures", "{}", out.stderr);
    let letters = job.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0]["error"]["kind"].as_str(), letters[0]["attempts"].as_u64()),
        (Some("answer_too_large"), Some(1))
    );
    assert!(letters[0]["error"]["message"].as_str().unwrap().contains("its results cannot be kept"), "{letters:?}");
}

// 13 and 14. Whole error chains; job files and paths checked up front.

#[test]
fn run_shows_why_a_plugin_failed_to_load() {
    let job = Job::new(&commands(&["ok"], 1, 1, json!({})));
    let out = job.run(&["--plugin", guest_file("no-handle.wat").to_str().unwrap(), "--no-mount"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is not a wasmbatch guest: the module does not export `wasmbatch_handle`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_job_array_and_an_unwritable_dead_letter_path_are_refused_before_anything_runs() {
    let job = Job::new(&json!([2, null, null, null, null, null, {"items": ["touch"], "batch_size": 1}]));
    let out = job.in_process("misbehave", &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("the job must be a JSON object, but it is an array"), "{}", out.stderr);

    let job = Job::new(&commands(&["copy:/cortex/spec/job.json:/mnt/ran"], 1, 1, json!({})));
    // A directory where the dead-letter file should go: it cannot be written.
    std::fs::create_dir(job.path("dead-letter.jsonl")).unwrap();
    let out = job.in_process("misbehave", &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cannot write the dead-letter file"), "{}", out.stderr);
    assert!(!job.path("mnt/ran").exists(), "the job did not run");
}

// 22. The batch identifier and attempt.

#[test]
fn a_batch_run_twice_leaves_one_output() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::with(plugin("sum")).args(["--mount", dir.path().to_str().unwrap(), "--concurrency", "2"]).start();
    let post = |body: &str, headers: &[(&str, &str)]| {
        let mut request = ureq::post(&server.url("/")).set("X-Cortex-Job-ID", "j");
        for (name, value) in headers {
            request = request.set(name, value);
        }
        request.send_string(body).unwrap().status()
    };
    // The sender's identifier (our dispatcher sends one), twice: one file.
    assert_eq!(post("[[1,2]]", &[("X-Wasmbatch-Batch-ID", "7"), ("X-Wasmbatch-Attempt", "1")]), 200);
    assert_eq!(post("[[1,2]]", &[("X-Wasmbatch-Batch-ID", "7"), ("X-Wasmbatch-Attempt", "2")]), 200);
    // Cortex sends none: derived from the content, the same for both attempts.
    assert_eq!(post("[[10],[20]]", &[]), 200);
    assert_eq!(post("[[10],[20]]", &[]), 200);
    assert_eq!(server.post("/on-job-complete", Some("j"), "job_complete").status, 200);
    let result: Value = serde_json::from_slice(&std::fs::read(dir.path().join("j/result.json")).unwrap()).unwrap();
    assert_eq!((result["batches"].as_u64(), result["total"].as_f64()), (Some(2), Some(33.0)), "{result}");
    let reply = server.post("/", Some("j"), "[[1]]");
    assert_eq!(reply.status, 200);
    let bad =
        ureq::post(&server.url("/")).set("X-Cortex-Job-ID", "j").set("X-Wasmbatch-Batch-ID", "../x").send_string("[]");
    match bad {
        Err(ureq::Error::Status(400, r)) => assert!(r.into_string().unwrap().contains("X-Wasmbatch-Batch-ID")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn guests_see_a_stable_batch_id_and_the_attempt_number() {
    let job = Job::new(&commands(&["flaky:/mnt/once", "batch:/mnt/ids.jsonl"], 2, 1, json!({})));
    let out = job.in_process("misbehave", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seen = read_lines(&job.path("mnt/ids.jsonl"));
    // The first attempt failed at `flaky` before `batch` ran; the second recorded.
    assert_eq!(seen, vec![json!({"batch_id": "0", "attempt": 2})]);

    let python = Python::start("");
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": [1, 2, 3], "batch_size": 2}}));
    let out = job.run(&["--endpoint", &python.url()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ids: Vec<(Value, Value)> = python
        .records()
        .iter()
        .filter(|r| r.get("received").is_some())
        .map(|r| (r["batch_id"].clone(), r["attempt"].clone()))
        .collect();
    assert_eq!(ids, vec![(json!("0"), json!("1")), (json!("1"), json!("1"))]);
}

// 23. Guest output keeps its order and its levels.

#[test]
fn guest_output_keeps_its_order_and_level() {
    let server = Server::with(plugin("misbehave")).args(["--log-level", "debug"]).start();
    let reply = server.batch(r#"["partial:no newline", "log:info:logged after", "log:debug:a debug line"]"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(server.batch(r#"["print:next batch"]"#).status, 200);
    server.wait_for_log("the next batch's line", |l| l["message"] == "next batch");
    let guest: Vec<String> = server
        .logs()
        .iter()
        .filter(|l| l["target"] == "guest")
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(guest, ["no newline", "logged after", "a debug line", "next batch"]);
    let debug = server.wait_for_log("the debug line", |l| l["message"] == "a debug line");
    assert_eq!(debug["level"], "DEBUG");
}
