//! What a handler can reach, granted: outbound HTTP to a local server, results,
//! single failed items, and the load-time refusal of an ungranted import. (Objects on
//! a real S3 server: `objects.rs`.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, free_port, plugin, workspace_root};
use crate::run::{Job, plugin_path, read_lines};

/// The HTTP peer of `tests/fixtures/http_peer.py`, killed on drop.
pub(crate) struct Peer {
    child: Child,
    pub(crate) port: u16,
}

impl Peer {
    pub(crate) fn start(record: &Path) -> Peer {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/fixtures/http_peer.py"))
            .arg(port.to_string())
            .arg(record)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        Peer { child, port }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Grants that let the reach plugin load and reach nothing that exists.
pub(crate) const REACH_LOADS: [&str; 6] =
    ["--allow-http", "http://127.0.0.1:1", "--allow-read", "file:///nowhere/", "--allow-write", "file:///nowhere/"];

/// The reach plugin's grants for `peer` and the job's directory.
fn grants(job: &Job, peer: &Peer) -> Vec<String> {
    let dir = format!("file://{}/", job.path("").display().to_string().trim_end_matches('/'));
    vec![
        "--allow-http".into(),
        format!("http://127.0.0.1:{}", peer.port),
        "--allow-read".into(),
        dir.clone(),
        "--allow-write".into(),
        format!("{dir}out/"),
    ]
}

#[test]
fn a_module_importing_a_capability_it_was_not_granted_is_refused_at_load() {
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": ["emit:1"], "batch_size": 1}}));
    let outcome = job.run(&["--plugin", plugin_path("reach")]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    for grant in ["allow_http", "allow_read", "allow_write"] {
        assert!(outcome.stderr.contains(&format!("needs the grant `{grant}`")), "{}", outcome.stderr);
    }
    assert!(outcome.stderr.contains("needs a grant it was not given"), "{}", outcome.stderr);
    // A module that imports none of them needs no grant (every other test shows it).
}

#[test]
fn outbound_http_reaches_granted_hosts_only_within_its_limits() {
    let job = Job::new(&json!({}));
    let peer = Peer::start(&job.path("peer.jsonl"));
    let items = json!([
        format!("http:{}", peer.url("/ok")),
        format!("http-post:{}:ping", peer.url("/echo")),
        "http:http://127.0.0.1:1/not-granted",
        format!("http:{}", peer.url("/slow?ms=3000")),
        format!("http:{}", peer.url("/big?kib=2048")),
    ]);
    std::fs::write(
        job.path("job.json"),
        json!({"workers": 1, "item_list": {"items": items, "batch_size": 5}}).to_string(),
    )
    .unwrap();
    let mut args = vec!["--plugin".to_string(), plugin_path("reach").into(), "--max-attempts".into(), "1".into()];
    args.extend(grants(&job, &peer));
    args.extend(["--http-timeout", "1s", "--max-response", "1MiB", "--results"].map(String::from));
    args.push(job.path("results.jsonl").display().to_string());
    let outcome = job.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);

    // The two calls that worked are results; the three that did not fail their items.
    let results: Vec<Value> = read_lines(&job.path("results.jsonl")).into_iter().map(|r| r["result"].clone()).collect();
    assert_eq!(
        results,
        vec![json!({"item": 0, "status": 200, "bytes": 5}), json!({"item": 1, "status": 200, "text": "ping"})]
    );
    let letters = job.dead_letters();
    assert_eq!(letters.len(), 1);
    let message = letters[0]["error"]["message"].as_str().unwrap();
    assert_eq!(letters[0]["error"]["kind"], "item_errors");
    assert!(message.contains("item 2: http://127.0.0.1:1/not-granted is not an allowed host"), "{message}");
    assert!(message.contains("item 3: GET ") && message.contains("no answer within 1s"), "{message}");
    assert!(message.contains("item 4: GET ") && message.contains("over the limit of 1048576 bytes"), "{message}");
    assert_eq!(letters[0]["items"].as_array().unwrap().len(), 3, "only the failed items are kept");
    // Nothing was sent to the host that was not granted; the peer saw the others.
    let seen: Vec<String> =
        read_lines(&job.path("peer.jsonl")).iter().map(|r| r["path"].as_str().unwrap().to_string()).collect();
    assert!(seen.contains(&"/ok".to_string()) && seen.iter().any(|p| p.starts_with("/slow")), "{seen:?}");
}

#[test]
fn the_batch_deadline_cuts_an_http_call_short() {
    let job = Job::new(&json!({}));
    let peer = Peer::start(&job.path("peer.jsonl"));
    let items = json!([format!("http:{}", peer.url("/slow?ms=20000"))]);
    std::fs::write(
        job.path("job.json"),
        json!({"workers": 1, "item_list": {"items": items, "batch_size": 1}}).to_string(),
    )
    .unwrap();
    let mut args = vec!["--plugin".to_string(), plugin_path("reach").into(), "--max-attempts".into(), "1".into()];
    args.extend(grants(&job, &peer));
    args.extend(["--batch-timeout", "1500ms"].map(String::from));
    let started = std::time::Instant::now();
    let outcome = job.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(started.elapsed() < Duration::from_secs(15), "the 20 s answer was not awaited");
    // The call ends at the deadline, and the batch with it, as a guest loop would.
    let letters = job.dead_letters();
    assert_eq!(letters[0]["error"]["kind"], "timeout", "{}", outcome.stderr);
    assert!(letters[0]["error"]["message"].as_str().unwrap().contains("within 1.5s"), "{}", outcome.stderr);
}

#[test]
fn results_are_kept_once_per_batch_and_failed_items_alone_are_retried_then_dead_lettered() {
    let items = json!(["emit:{\"a\":1}", "flaky:not yet", "emit:2", "emit:3", "fail:never works", "emit:4",]);
    let job = Job::new(&json!({"workers": 2, "item_list": {"items": items, "batch_size": 3}}));
    let peer = Peer::start(&job.path("peer.jsonl"));
    let mut args = vec!["--plugin".to_string(), plugin_path("reach").into(), "--max-attempts".into(), "3".into()];
    args.extend(grants(&job, &peer));
    args.extend(["--results".to_string(), job.path("results.jsonl").display().to_string()]);
    let outcome = job.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);
    assert_eq!(outcome.status["metrics"]["succeeded"], 1);
    assert_eq!(outcome.status["metrics"]["failed"], 1);

    let mut results: Vec<(u64, Value)> = read_lines(&job.path("results.jsonl"))
        .into_iter()
        .map(|r| (r["batch"].as_u64().unwrap(), r["result"].clone()))
        .collect();
    results.sort_by_key(|(batch, _)| *batch);
    // Batch 0: its emitted values, and the flaky item's result from its second
    // attempt (as item 0 of the smaller batch of failed items). Batch 1: the items that
    // worked, though the batch ended dead-lettered.
    assert_eq!(
        results,
        vec![(0, json!({"a": 1})), (0, json!(2)), (0, json!({"item": 0, "attempt": 2})), (1, json!(3)), (1, json!(4)),]
    );
    let letters = job.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["batch_index"], 1);
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["items"], json!(["fail:never works"]));
    assert_eq!(letters[0]["error"]["message"], "item 1: never works", "the index in the original batch");
}

#[test]
fn serve_answers_results_and_failed_items_in_its_200_body() {
    let server = Server::with(plugin("reach")).args(REACH_LOADS).start();
    let reply = server.batch(r#"["emit:{\"x\":1}","fail:no","emit:[2]"]"#);
    assert_eq!(reply.status, 200);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body, json!({"results": [{"x": 1}, [2]], "item_errors": [{"index": 1, "message": "no"}]}));
    let plain = Server::with(plugin("noop")).start().batch("[1]");
    assert_eq!((plain.status, plain.body.as_str()), (200, ""), "no results: an empty 200, as before");
}

#[test]
fn results_and_failed_items_travel_from_serve_to_run_endpoint() {
    let server = Server::with(plugin("reach")).args(REACH_LOADS).start();
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": ["emit:1", "fail:x", "emit:2"], "batch_size": 3}}));
    let results = job.path("results.jsonl").display().to_string();
    let endpoint = server.url("");
    let outcome = job.run(&["--endpoint", &endpoint, "--max-attempts", "2", "--results", &results]);
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);
    let kept: Vec<Value> = read_lines(Path::new(&results)).into_iter().map(|r| r["result"].clone()).collect();
    assert_eq!(kept, vec![json!(1), json!(2)]);
    let letters = job.dead_letters();
    assert_eq!((letters[0]["items"].clone(), letters[0]["attempts"].as_u64()), (json!(["fail:x"]), Some(2)));
    assert_eq!(letters[0]["error"]["message"], "item 1: x");
}

#[test]
fn a_guest_calls_a_granted_https_host_trusting_the_ca_file() {
    let scratch = tempfile::tempdir().unwrap();
    let peer = Peer::start(&scratch.path().join("peer.jsonl"));
    let pki = crate::tls::Pki::new();
    let front = crate::tls::TlsFront::start(&pki, ([127, 0, 0, 1], peer.port).into());
    let url = format!("https://localhost:{}/ok", front.addr.port());
    let grant = format!("localhost:{}", front.addr.port());
    let run = |extra: &[&str]| {
        let job = Job::new(&json!({"workers": 1, "item_list": {"items": [format!("http:{url}")], "batch_size": 1}}));
        let results = job.path("results.jsonl").display().to_string();
        let mut args = vec!["--plugin", plugin_path("reach"), "--max-attempts", "1", "--results", &results];
        args.extend(["--allow-http", &grant]);
        args.extend(["--allow-read", "file:///nowhere/", "--allow-write", "file:///nowhere/"]);
        args.extend_from_slice(extra);
        let mut command = job.command(&args);
        command.env_remove("WASMBATCH_CA_FILE").env_remove("SSL_CERT_FILE");
        let outcome = crate::run::finish(command.spawn().unwrap());
        (job, outcome)
    };
    let ca = pki.ca().display().to_string();
    let (job, outcome) = run(&["--ca-file", &ca]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(read_lines(&job.path("results.jsonl"))[0]["result"], json!({"item": 0, "status": 200, "bytes": 5}));
    // Without the CA: refused by the certificate check, and said so.
    let (job, outcome) = run(&[]);
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);
    let message = job.dead_letters()[0]["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(&format!("GET {url}")) && message.to_lowercase().contains("certificate"), "{message}");
}
