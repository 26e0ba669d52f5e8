//! The contract's routes and statuses, against `wasmbatch serve`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, free_port, plugin, spec_file, wait_for_file};

#[test]
fn batch_succeeds_with_200_and_an_empty_body() {
    let server = Server::with(plugin("noop")).start();
    let reply = server.batch(r#"[{"a":1},{"b":[2,3]},"x",4]"#);
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    assert_eq!(server.get("/healthz").status, 200);
    let line = server.wait_for_log("per batch", |l| l["message"] == "batch");
    assert_eq!(line["job_id"], "job-1");
    assert_eq!(line["items"], 4);
    assert_eq!(line["outcome"], "succeeded");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
}

#[test]
fn body_over_the_limit_gets_413_with_or_without_a_length() {
    let server = Server::with(plugin("noop")).args(["--max-body", "1KiB"]).start();
    let big = format!("[{}]", vec!["1"; 1000].join(","));
    let reply = server.batch(&big);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.kind(), "body_too_large");

    // Chunked, no Content-Length: the limit applies while reading.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "POST / HTTP/1.1\r\nHost: x\r\nX-Cortex-Job-ID: j\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for _ in 0..4 {
        let chunk = format!("[{}]", vec!["1"; 200].join(","));
        let _ = write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len());
    }
    let _ = write!(stream, "0\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    assert_eq!(server.batch("[1]").status, 200);
}

#[test]
fn missing_job_id_is_400_unless_the_spec_has_one() {
    let server = Server::with(plugin("noop")).args(["--job-spec", "/nonexistent/job.json"]).start();
    let reply = server.post("/", None, "[1]");
    assert_eq!((reply.status, reply.kind().as_str()), (400, "missing_job_id"));
    server.wait_for_log("about the missing spec", |l| l["message"] == "no job spec found; starting with an empty spec");

    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let (_spec_dir, spec) = spec_file(&json!({"job_id": "from-spec", "api_name": "t"}));
    let server = Server::with(plugin("misbehave"))
        .args(["--job-spec", spec.to_str().unwrap(), "--mount", dir.path().to_str().unwrap()])
        .start();
    let reply = server.post("/", None, r#"["stats:/mnt/stats.json"]"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(written["job_id"], "from-spec");
    // The header wins over the spec.
    assert_eq!(server.post("/", Some("from-header"), r#"["stats:/mnt/stats.json"]"#).status, 200);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(written["job_id"], "from-header");
}

#[test]
fn on_job_complete_accepts_both_cortex_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("complete.jsonl");
    let (_spec_dir, spec) = spec_file(&json!({"job_id": "j", "config": {"on_complete_file": "/mnt/complete.jsonl"}}));
    let server = Server::with(plugin("misbehave"))
        .args(["--job-spec", spec.to_str().unwrap(), "--mount", dir.path().to_str().unwrap()])
        .start();
    assert_eq!(server.post("/on-job-complete", Some("j1"), r#"{"message":"job_complete"}"#).status, 200);
    assert_eq!(server.post("/on-job-complete", Some("j2"), "job_complete").status, 200);
    let counted =
        server.post("/on-job-complete", Some("j3"), r#"{"message":"job_complete","succeeded":5,"failed":1,"total":6}"#);
    assert_eq!(counted.status, 200);
    let bad = server.post("/on-job-complete", Some("j4"), "[1,2]");
    assert_eq!((bad.status, bad.kind().as_str()), (400, "invalid_input"));

    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&record).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        json!({"job_id": "j1", "message": "job_complete", "succeeded": null, "failed": null, "total": null})
    );
    assert_eq!(lines[1]["job_id"], "j2");
    assert_eq!(lines[1]["message"], "job_complete");
    assert_eq!((lines[2]["succeeded"].as_u64(), lines[2]["total"].as_u64()), (Some(5), Some(6)));
}

#[test]
fn on_job_complete_is_404_without_a_hook_and_500_when_it_fails() {
    let server = Server::with(plugin("noop")).start();
    let reply = server.post("/on-job-complete", Some("j"), r#"{"message":"job_complete"}"#);
    assert_eq!((reply.status, reply.kind().as_str()), (404, "not_found"));

    let (_spec_dir, spec) = spec_file(&json!({"job_id": "j", "config": {"on_complete": "fail"}}));
    let server = Server::with(plugin("misbehave")).args(["--job-spec", spec.to_str().unwrap()]).start();
    let reply = server.post("/on-job-complete", Some("j"), "job_complete");
    assert_eq!((reply.status, reply.kind().as_str()), (500, "guest_error"));
    assert_eq!(reply.message(), "on-job-complete failed on request");
}

#[test]
fn port_is_bound_only_after_init_finished() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("init-done");
    // A slow init that marks its end, so that a premature bind would be seen.
    let (_spec_dir, spec) =
        spec_file(&json!({"job_id": "j", "config": {"init": ["sleep:800", "touch:/mnt/init-done"]}}));
    let port = free_port();
    let builder = Server::with(plugin("misbehave")).port(port).args([
        "--job-spec",
        spec.to_str().unwrap(),
        "--mount",
        dir.path().to_str().unwrap(),
    ]);
    let handle = std::thread::spawn(move || builder.start());
    // Poll the port; the first successful connection must find init already done.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(marker.exists(), "the port accepted a connection before init finished");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "port never opened");
        std::thread::sleep(Duration::from_millis(2));
    }
    let server = handle.join().unwrap();
    assert_eq!(server.batch(r#"["ok"]"#).status, 200);
}

#[test]
fn failing_init_keeps_the_port_closed_and_exits_with_the_reason() {
    let port = free_port();
    let (_spec_dir, spec) = spec_file(&json!({"job_id": "j", "config": {"init": "fail"}}));
    let (status, logs) = Server::with(plugin("misbehave"))
        .port(port)
        .args(["--job-spec", spec.to_str().unwrap()])
        .try_start()
        .err()
        .expect("server must not start");
    assert!(status.contains("exit status: 1"), "{status}");
    assert!(logs.contains("the plugin failed to start: guest_error: init failed on request"), "{logs}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn sigterm_finishes_the_batch_in_flight_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with(plugin("misbehave")).args(["--mount", dir.path().to_str().unwrap()]).start();
    let url = server.url("/");
    let in_flight = std::thread::spawn(move || {
        ureq::post(&url).set("X-Cortex-Job-ID", "j").send_string(
            r#"["copy:/cortex/spec/job.json:/mnt/started", "sleep:1000", "copy:/cortex/spec/job.json:/mnt/finished"]"#,
        )
        .map(|r| r.status())
        .map_err(|e| e.to_string())
    });
    wait_for_file(&dir.path().join("started"));
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(in_flight.join().unwrap(), Ok(200), "the in-flight batch is answered");
    assert!(dir.path().join("finished").exists());
    assert!(TcpStream::connect(server.addr).is_err(), "new connections are refused after the drain");
    let logs = server.all_logs_text();
    assert!(logs.contains("SIGTERM received"), "{logs}");
}

#[test]
fn json_logs_tag_guest_output_with_api_job_and_batch() {
    let (_spec_dir, spec) = spec_file(&json!({"job_id": "j", "api_name": "my-api"}));
    let server = Server::with(plugin("misbehave")).args(["--job-spec", spec.to_str().unwrap()]).start();
    assert_eq!(server.post("/", Some("job-7"), r#"["ok"]"#).status, 200);
    assert_eq!(
        server.post("/", Some("job-7"), r#"["print:hello from the guest", "eprint:and from stderr"]"#).status,
        200
    );
    let out = server.wait_for_log("guest stdout", |l| l["message"] == "hello from the guest");
    assert_eq!(
        (out["job_id"].as_str(), out["api_name"].as_str(), out["stream"].as_str(), out["target"].as_str()),
        (Some("job-7"), Some("my-api"), Some("stdout"), Some("guest"))
    );
    assert_eq!(out["batch"], 1, "the server's second batch");
    let err = server.wait_for_log("guest stderr", |l| l["message"] == "and from stderr");
    assert_eq!(err["stream"], "stderr");
    assert_eq!(err["level"], "WARN");
    let line = server.wait_for_log("the batch line", |l| l["message"] == "batch" && l["batch"] == 1);
    assert_eq!((line["api_name"].as_str(), line["job_id"].as_str()), (Some("my-api"), Some("job-7")));
}

#[test]
fn warm_instance_is_reused_and_replaced_after_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("s.json");
    let server = Server::with(plugin("misbehave")).args(["--mount", dir.path().to_str().unwrap()]).start();
    let read = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap() };
    for _ in 0..3 {
        assert_eq!(server.batch(r#"["stats:/mnt/s.json"]"#).status, 200);
    }
    assert_eq!((read()["inits"].as_u64(), read()["batches"].as_u64()), (Some(1), Some(3)));
    assert_eq!(server.batch(r#"["trap"]"#).status, 500);
    assert_eq!(server.batch(r#"["stats:/mnt/s.json"]"#).status, 200);
    assert_eq!((read()["inits"].as_u64(), read()["batches"].as_u64()), (Some(1), Some(1)), "a fresh instance");
    // A returned error keeps the instance.
    assert_eq!(server.batch(r#"["error:no"]"#).status, 500);
    assert_eq!(server.batch(r#"["stats:/mnt/s.json"]"#).status, 200);
    assert_eq!(read()["batches"].as_u64(), Some(3));
}

#[test]
fn recycle_after_gives_fresh_instances() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("s.json");
    let server = Server::with(plugin("misbehave"))
        .args(["--mount", dir.path().to_str().unwrap(), "--recycle-after", "1"])
        .start();
    for _ in 0..3 {
        assert_eq!(server.batch(r#"["stats:/mnt/s.json"]"#).status, 200);
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
        assert_eq!((s["inits"].as_u64(), s["batches"].as_u64()), (Some(1), Some(1)));
    }
}

#[test]
fn concurrent_batches_all_succeed() {
    let server = Server::with(plugin("noop")).args(["--concurrency", "2"]).start();
    let url = server.url("/");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = ureq::agent();
                (0..50)
                    .filter(|i| {
                        agent
                            .post(&url)
                            .set("X-Cortex-Job-ID", &format!("j{t}"))
                            .send_string(&format!("[{i},{t}]"))
                            .map(|r| r.status() == 200)
                            .unwrap_or(false)
                    })
                    .count()
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 400);
}
