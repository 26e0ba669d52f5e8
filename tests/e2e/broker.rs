//! The operator and `wasmbatch worker`s through a real RabbitMQ: each test starts a
//! RabbitMQ node of its own (Debian's package, on free ports, in a temporary
//! directory), an operator with `--broker`, and workers; then kills, cuts off or
//! restarts one of them mid-job and checks the counts and the sums.
//!
//! Every wait is on an observable event (a log line, a file, a status) with a deadline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{free_port, plugin, shared_cache, wasmbatch};
use crate::operator::{Operator, error_of};
use crate::run::read_lines;

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A RabbitMQ node of the test's own, killed (the whole process group) on drop.
struct Rabbit {
    child: Child,
    node: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Rabbit {
    fn start() -> Rabbit {
        Rabbit::start_on(free_port())
    }

    /// A node whose AMQP listener is on `port`; returns once it accepts connections.
    fn start_on(port: u16) -> Rabbit {
        Rabbit::start_configured(port, None)
    }

    /// A node with a TLS listener (`amqps://`) on `tls_port` too, serving `pki`'s
    /// server certificate; returns once both listeners accept connections.
    fn start_tls(pki: &crate::tls::Pki, tls_port: u16) -> Rabbit {
        let config = format!(
            "listeners.ssl.default = {tls_port}
             ssl_options.cacertfile = {}
             ssl_options.certfile = {}
             ssl_options.keyfile = {}
             ssl_options.verify = verify_none
             ssl_options.fail_if_no_peer_cert = false
",
            pki.ca().display(),
            pki.cert().display(),
            pki.key().display()
        );
        let rabbit = Rabbit::start_configured(free_port(), Some(&config));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(Instant::now() < deadline, "RabbitMQ's TLS listener did not start:\n{}", rabbit.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        rabbit
    }

    /// A node on `port`, with `config` as its `rabbitmq.conf` when given.
    fn start_configured(port: u16, config: Option<&str>) -> Rabbit {
        assert!(
            Path::new(SERVER).exists(),
            "RabbitMQ is not installed: scripts/test.sh installs it (apt-get install rabbitmq-server)"
        );
        static NODES: AtomicUsize = AtomicUsize::new(0);
        let node = format!("wbtest{}n{}@localhost", std::process::id(), NODES.fetch_add(1, Ordering::SeqCst));
        let dir = tempfile::tempdir().unwrap();
        if let Some(config) = config {
            std::fs::write(dir.path().join("rabbitmq.conf"), config).unwrap();
        }
        // epmd outlives the nodes; started apart, with no pipe of ours to hold.
        let _ = Command::new("epmd").arg("-daemon").stdout(Stdio::null()).stderr(Stdio::null()).status();
        let log = std::fs::File::create(dir.path().join("rabbit.log")).unwrap();
        let mut command = Command::new(SERVER);
        command
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_PID_FILE", dir.path().join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.path().join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.path().join("rabbitmq"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap();
        let rabbit = Rabbit { child, node, port, _dir: dir };
        rabbit.wait_listening();
        rabbit
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "RabbitMQ did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("rabbit.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Runs `rabbitmqctl` against this node.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(CTL).arg("-n").arg(&self.node).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rabbitmqctl {args:?}: {text}");
        text
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A running `wasmbatch worker`, killed on drop.
struct Worker {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
    /// Set when its stderr closes: it exited.
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Worker {
    /// Starts a worker of `api` and waits until it consumes.
    fn start(url: &str, api: &str, plugin_name: &str, mount: &Path, concurrency: u32) -> Worker {
        let worker = Worker::spawn(url, api, plugin_name, mount, concurrency);
        worker.wait_for("consuming", |_| true);
        worker
    }

    fn spawn(url: &str, api: &str, plugin_name: &str, mount: &Path, concurrency: u32) -> Worker {
        let mut args: Vec<String> = vec!["--plugin".into(), plugin(plugin_name).display().to_string()];
        args.extend(["--mount".into(), mount.display().to_string()]);
        Worker::spawn_args(url, api, concurrency, &args)
    }

    /// A worker with its handler given by `handler` (`--plugin …` or `--endpoint …`).
    fn spawn_args(url: &str, api: &str, concurrency: u32, handler: &[String]) -> Worker {
        let mut child = wasmbatch()
            .args(["--log-format", "json", "worker", "--broker", url, "--api", api])
            .args(handler)
            .args(["--concurrency", &concurrency.to_string(), "--cache-dir"])
            .arg(shared_cache())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sink, flag) = (logs.clone(), ended.clone());
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str::<Value>(&line).unwrap_or_else(|_| json!({"message": line}));
                sink.lock().unwrap().push(value);
            }
            flag.store(true, Ordering::SeqCst);
        });
        Worker { child, logs, ended }
    }

    fn count(&self, message: &str) -> usize {
        self.logs.lock().unwrap().iter().filter(|l| l["message"].as_str().is_some_and(|m| m.contains(message))).count()
    }

    /// Waits (bounded) for a log line containing `message` that satisfies `pred`.
    fn wait_for(&self, message: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if self
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l["message"].as_str().is_some_and(|m| m.contains(message)) && pred(l))
            {
                return;
            }
            if self.ended.load(Ordering::SeqCst) {
                panic!("the worker exited before logging {message:?}:\n{}", self.text());
            }
            assert!(Instant::now() < deadline, "the worker never logged {message:?}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until `message` was logged `n` times.
    fn wait_for_count(&self, message: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count(message) < n {
            assert!(Instant::now() < deadline, "the worker never logged {message:?} {n} times:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        self.logs.lock().unwrap().iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n")
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the worker did not exit after SIGTERM:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch place: the operator's config (APIs `sum` and `misbehave`, handled by
/// workers), its data, and the workers' mounts.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new(max_attempts: u32) -> Place {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[[api]]\nname = \"sum\"\nmax_attempts = {max_attempts}\n\
             [[api]]\nname = \"misbehave\"\nmax_attempts = {max_attempts}\n"
        );
        std::fs::write(dir.path().join("apis.toml"), config).unwrap();
        Place { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if name.starts_with("out") {
            std::fs::create_dir_all(&path).unwrap();
        }
        path
    }

    fn operator(&self, rabbit_url: &str) -> Operator {
        Operator::start_with(&self.path("apis.toml"), &self.path("data"), &["--broker", rabbit_url])
    }
}

/// A `sum` job of `batches` batches of two items, `[i, 1]` each: item i sums to i + 1.
pub(crate) fn sum_job(batches: usize) -> Value {
    let items: Vec<Value> = (0..batches * 2).map(|i| json!([i, 1])).collect();
    json!({"workers": 1, "item_list": {"items": items, "batch_size": 2}})
}

/// The sums the `sum` plugin wrote under each mount, by batch: checks that every batch
/// of a [`sum_job`] is there exactly with its sums, and returns how many batches were
/// written under more than one mount (ran twice).
pub(crate) fn check_sums(mounts: &[PathBuf], job_id: &str, batches: usize) -> usize {
    let mut found: HashMap<u64, Vec<f64>> = HashMap::new();
    let mut twice = 0;
    for mount in mounts {
        let Ok(entries) = std::fs::read_dir(mount.join(job_id)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let Some(id) = name.strip_prefix("batch-").and_then(|n| n.strip_suffix(".json")) else { continue };
            let sums: Vec<f64> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            if found.insert(id.parse().unwrap(), sums).is_some() {
                twice += 1;
            }
        }
    }
    assert_eq!(found.len(), batches, "every batch written once at least");
    for (index, sums) in &found {
        let first = (index * 2) as f64;
        assert_eq!(sums, &vec![first + 1.0, first + 2.0], "batch {index}");
    }
    twice
}

/// Polls the job's status (bounded) until `pred` holds.
fn wait_status(operator: &Operator, api: &str, job_id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = operator.status(api, job_id);
        if pred(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "job {job_id}: {status}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until `path` has at least `n` lines.
fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if path.exists() {
            let lines = read_lines(path);
            if lines.len() >= n {
                return lines;
            }
        }
        assert!(Instant::now() < deadline, "{} never had {n} lines", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn succeeded(status: &Value) -> u64 {
    status["metrics"]["succeeded"].as_u64().unwrap_or(0)
}

#[test]
fn a_worker_killed_mid_job_loses_nothing_and_only_its_batches_in_flight_run_twice() {
    let rabbit = Rabbit::start();
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mounts: Vec<PathBuf> = (0..3).map(|i| place.path(&format!("out{i}"))).collect();
    let mut workers: Vec<Worker> = mounts.iter().map(|m| Worker::start(&rabbit.url(), "sum", "sum", m, 2)).collect();
    let batches = 3000;
    let job_id = operator.submit("sum", &sum_job(batches));
    // Killed once it has written 100 batches of its own.
    let own = mounts[0].join(&job_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&own).map(|d| d.count()).unwrap_or(0) < 100 {
        assert!(Instant::now() < deadline, "worker 0 never wrote 100 batches:\n{}", workers[0].text());
        std::thread::sleep(Duration::from_millis(5));
    }
    workers[0].kill();
    let at_kill = succeeded(&operator.status("sum", &job_id));
    assert!(at_kill < batches as u64, "the kill came mid-job ({at_kill} of {batches} done)");

    let status = operator.wait_done("sum", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!((succeeded(&status), status["metrics"]["failed"].as_u64()), (batches as u64, Some(0)));
    assert_eq!(status["job_status"]["total_batch_count"], batches);
    let twice = check_sums(&mounts, &job_id, batches);
    // At-least-once: only what the killed worker held ran again — at most its prefetch
    // (4 × its concurrency of 2): batches running, or finished with their outcomes not
    // yet confirmed while its threads went on with the next ones.
    assert!(twice <= 8, "{twice} batches ran twice");
    // on-job-complete ran once, on one of the survivors.
    let hooks: usize = workers.iter().map(|w| w.count("on-job-complete ran")).sum();
    assert_eq!(hooks, 1);
    assert_eq!(mounts.iter().filter(|m| m.join(&job_id).join("result.json").exists()).count(), 1);
}

#[test]
fn the_operator_killed_mid_job_resumes_it_and_on_job_complete_runs_once() {
    let rabbit = Rabbit::start();
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let workers: Vec<Worker> = (0..3).map(|_| Worker::start(&rabbit.url(), "sum", "sum", &mount, 2)).collect();
    // More than the 4096 batches a job may have out at once: the kill comes while the
    // operator is still publishing, and the new one goes on from its mark.
    let batches = 5000;
    let job_id = operator.submit("sum", &sum_job(batches));
    wait_status(&operator, "sum", &job_id, |s| succeeded(s) >= 300);
    operator.kill();

    let operator = place.operator(&rabbit.url());
    let status = operator.wait_done("sum", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!((succeeded(&status), status["metrics"]["failed"].as_u64()), (batches as u64, Some(0)));
    assert_eq!(status["job_status"]["on_job_complete"], "succeeded");
    check_sums(std::slice::from_ref(&mount), &job_id, batches);
    let hooks: usize = workers.iter().map(|w| w.count("on-job-complete ran")).sum();
    assert_eq!(hooks, 1, "on-job-complete ran {hooks} times");
    let result: Value =
        serde_json::from_slice(&std::fs::read(mount.join(&job_id).join("result.json")).unwrap()).unwrap();
    assert_eq!(
        (result["batches"].as_u64(), result["items"].as_u64()),
        (Some(batches as u64), Some(batches as u64 * 2))
    );
}

#[test]
fn a_broker_restart_mid_job_loses_nothing() {
    let rabbit = Rabbit::start();
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let workers: Vec<Worker> = (0..3).map(|_| Worker::start(&rabbit.url(), "sum", "sum", &mount, 2)).collect();
    let batches = 3000;
    let job_id = operator.submit("sum", &sum_job(batches));
    wait_status(&operator, "sum", &job_id, |s| succeeded(s) >= 300);
    rabbit.ctl(&["stop_app"]);
    for worker in &workers {
        worker.wait_for("lost the broker connection", |_| true);
    }
    rabbit.ctl(&["start_app"]);
    rabbit.wait_listening();

    let status = operator.wait_done("sum", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!((succeeded(&status), status["metrics"]["failed"].as_u64()), (batches as u64, Some(0)));
    check_sums(std::slice::from_ref(&mount), &job_id, batches);
    assert!(operator.logs.lock().unwrap().iter().any(|l| l.contains("lost the broker connection")));
    for worker in &workers {
        worker.wait_for_count("consuming", 2);
    }
}

#[test]
fn a_batch_that_always_fails_is_dead_lettered_after_max_attempts_deliveries() {
    let rabbit = Rabbit::start();
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let _workers: Vec<Worker> =
        (0..2).map(|_| Worker::start(&rabbit.url(), "misbehave", "misbehave", &mount, 1)).collect();
    // Batches of two commands: [ok, ok], [record, fail], [ok, ok], [invalid, ok].
    let items =
        json!(["ok", "ok", "batch:/mnt/calls.jsonl", "error:always broken", "ok", "ok", "invalid:never valid", "ok"]);
    let job = json!({"workers": 1, "item_list": {"items": items, "batch_size": 2}});
    let job_id = operator.submit("misbehave", &job);
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(status["job_status"]["status"], "completed_with_failures", "{status}");
    assert_eq!((succeeded(&status), status["metrics"]["failed"].as_u64()), (2, Some(2)));
    let (code, text) = operator.request("GET", &format!("/batch/misbehave/jobs/{job_id}/dead-letters"), None);
    assert_eq!(code, 200);
    let letters: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 2, "{text}");
    assert_eq!(
        (letters[0]["error"]["kind"].as_str(), letters[0]["attempts"].as_u64()),
        (Some("guest_error"), Some(3)),
        "{text}"
    );
    assert!(letters[0]["error"]["message"].as_str().unwrap().contains("always broken"), "{text}");
    assert_eq!(letters[0]["items"], json!(["batch:/mnt/calls.jsonl", "error:always broken"]));
    // Input the handler rejects is not tried again.
    assert_eq!(
        (letters[1]["error"]["kind"].as_str(), letters[1]["attempts"].as_u64()),
        (Some("invalid_input"), Some(1)),
        "{text}"
    );
    // Three deliveries, numbered 1, 2, 3 by the broker's delivery count.
    let calls = read_lines(&mount.join("calls.jsonl"));
    let attempts: Vec<u64> = calls.iter().map(|c| c["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
}

#[test]
fn a_batch_whose_workers_die_each_time_is_dead_lettered_by_the_broker() {
    let rabbit = Rabbit::start();
    let place = Place::new(2);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let job =
        json!({"workers": 1, "item_list": {"items": ["batch:/mnt/calls.jsonl", "sleep:600000"], "batch_size": 2}});
    let mut first = Worker::start(&rabbit.url(), "misbehave", "misbehave", &mount, 1);
    let job_id = operator.submit("misbehave", &job);
    wait_lines(&mount.join("calls.jsonl"), 1);
    first.kill();
    let mut second = Worker::start(&rabbit.url(), "misbehave", "misbehave", &mount, 1);
    wait_lines(&mount.join("calls.jsonl"), 2);
    second.kill();
    // Two deliveries, both lost: the broker dead-letters it; a third worker gets only
    // on-job-complete.
    let third = Worker::start(&rabbit.url(), "misbehave", "misbehave", &mount, 1);
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(status["job_status"]["status"], "completed_with_failures", "{status}");
    assert_eq!((succeeded(&status), status["metrics"]["failed"].as_u64()), (0, Some(1)));
    let (_, text) = operator.request("GET", &format!("/batch/misbehave/jobs/{job_id}/dead-letters"), None);
    let letter: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!((letter["error"]["kind"].as_str(), letter["attempts"].as_u64()), (Some("delivery_limit"), Some(2)));
    assert!(letter["error"]["message"].as_str().unwrap().contains("no worker reported an outcome"), "{letter}");
    assert_eq!(letter["items"], json!(["batch:/mnt/calls.jsonl", "sleep:600000"]));
    assert_eq!(read_lines(&mount.join("calls.jsonl")).len(), 2, "the third worker never ran it");
    assert_eq!(third.count("on-job-complete ran"), 1);
}

#[test]
fn a_worker_cut_off_mid_batch_has_its_batch_delivered_again() {
    let rabbit = Rabbit::start();
    rabbit.ctl(&["add_user", "cut", "cut"]);
    rabbit.ctl(&["set_permissions", "-p", "/", "cut", ".*", ".*", ".*"]);
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let url = format!("amqp://cut:cut@127.0.0.1:{}/%2f", rabbit.port);
    let worker = Worker::start(&url, "misbehave", "misbehave", &mount, 1);
    let job = json!({"workers": 1, "item_list": {"items": ["batch:/mnt/calls.jsonl", "sleep:15000"], "batch_size": 2}});
    let job_id = operator.submit("misbehave", &job);
    wait_lines(&mount.join("calls.jsonl"), 1);
    // The broker drops the worker's connection mid-batch (the batch sleeps 15 s;
    // rabbitmqctl itself takes a second to start, several on a loaded machine).
    rabbit.ctl(&["close_all_user_connections", "cut", "cut off by the test"]);
    assert_eq!(succeeded(&operator.status("misbehave", &job_id)), 0, "the cut came mid-batch");
    worker.wait_for("lost the broker connection", |_| true);

    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!(succeeded(&status), 1);
    let attempts: Vec<u64> =
        read_lines(&mount.join("calls.jsonl")).iter().map(|c| c["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, vec![1, 2], "delivered again after the cut:\n{}", worker.text());
    worker.wait_for_count("consuming", 2);
}

#[test]
fn sigterm_lets_a_worker_finish_what_it_holds_and_exit_zero() {
    let rabbit = Rabbit::start();
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let mut worker = Worker::start(&rabbit.url(), "misbehave", "misbehave", &mount, 2);
    let items = json!(["batch:/mnt/calls.jsonl", "sleep:1000", "batch:/mnt/calls.jsonl", "sleep:1000"]);
    let job = json!({"workers": 1, "item_list": {"items": items, "batch_size": 2}});
    let job_id = operator.submit("misbehave", &job);
    wait_lines(&mount.join("calls.jsonl"), 2);
    let started = Instant::now();
    let exit = worker.terminate();
    assert!(exit.success(), "{exit}:\n{}", worker.text());
    assert!(started.elapsed() < Duration::from_secs(10), "drained in {:?}", started.elapsed());
    // Both finished and were reported before the exit; nothing ran twice. A new
    // worker runs on-job-complete.
    let _next = Worker::start(&rabbit.url(), "misbehave", "misbehave", &mount, 1);
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!((status["job_status"]["status"].as_str(), succeeded(&status)), (Some("succeeded"), 2), "{status}");
    assert_eq!(read_lines(&mount.join("calls.jsonl")).len(), 2);
}

#[test]
fn an_unreachable_broker_is_waited_for_and_refused_credentials_fail_fast() {
    let port = free_port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let place = Place::new(3);
    // The operator starts, says why it waits, and accepts jobs meanwhile.
    let operator = place.operator(&url);
    let job_id = operator.submit("sum", &sum_job(20));
    let mount = place.path("out");
    let worker = Worker::spawn(&url, "sum", "sum", &mount, 2);
    worker.wait_for("is unreachable", |l| l["tries"].as_u64() >= Some(2));
    assert!(operator.logs.lock().unwrap().iter().any(|l| l.contains("is unreachable")));

    let rabbit = Rabbit::start_on(port);
    worker.wait_for("consuming", |_| true);
    let status = operator.wait_done("sum", &job_id);
    assert_eq!((status["job_status"]["status"].as_str(), succeeded(&status)), (Some("succeeded"), 20), "{status}");
    check_sums(std::slice::from_ref(&mount), &job_id, 20);

    // Wrong credentials: the broker's reason, at once, exit 1.
    let wrong = format!("amqp://guest:wrong@127.0.0.1:{}/%2f", rabbit.port);
    let started = Instant::now();
    let out = wasmbatch()
        .args(["worker", "--broker", &wrong, "--api", "sum", "--plugin"])
        .arg(plugin("sum"))
        .arg("--cache-dir")
        .arg(shared_cache())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the connection") && stderr.contains("ACCESS_REFUSED"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // A URL that is not one: exit 2, before any connection.
    let out = wasmbatch()
        .args(["worker", "--broker", "http://x", "--api", "sum", "--endpoint", "http://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with amqp://"));
    // A job that asks for more attempts than the broker delivers is refused.
    let answer = operator.request(
        "POST",
        "/batch/sum",
        Some(&json!({"workers": 1, "max_attempts": 9, "item_list": {"items": [[1]], "batch_size": 1}}).to_string()),
    );
    let (code, _, message) = error_of(&answer);
    assert_eq!(code, 400, "{answer:?}");
    assert!(message.contains("max_attempts: 9 is more than the broker delivers"), "{message}");
}

#[test]
fn a_stop_dead_letters_what_is_left_and_the_workers_skip_it() {
    let rabbit = Rabbit::start();
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let worker = Worker::start(&rabbit.url(), "misbehave", "misbehave", &mount, 1);
    let items: Vec<Value> = (0..40).flat_map(|_| [json!("batch:/mnt/calls.jsonl"), json!("sleep:100")]).collect();
    let job_id = operator.submit("misbehave", &json!({"workers": 1, "item_list": {"items": items, "batch_size": 2}}));
    wait_lines(&mount.join("calls.jsonl"), 3);
    let (code, body) = operator.request("DELETE", &format!("/batch/misbehave?jobID={job_id}"), None);
    assert_eq!(code, 200, "{body}");
    let status = operator.wait_done("misbehave", &job_id);
    assert_eq!(status["job_status"]["status"], "stopped", "{status}");
    let done = succeeded(&status);
    let (_, text) = operator.request("GET", &format!("/batch/misbehave/jobs/{job_id}/dead-letters"), None);
    let letters: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(done + letters.len() as u64, 40, "every batch succeeded or is a dead letter");
    assert!(letters.iter().all(|l| l["error"]["kind"] == "stopped" && l["attempts"] == 0), "{text}");
    // Told of the stop, the worker skips the batches still queued.
    worker.wait_for("job ended early", |_| true);
    let calls = read_lines(&mount.join("calls.jsonl")).len();
    assert!(calls < 20, "{calls} batches ran after a stop after 3");
}

#[test]
fn a_worker_in_front_of_a_contract_server_waits_for_it_then_delivers_every_batch() {
    let rabbit = Rabbit::start();
    let place = Place::new(3);
    let operator = place.operator(&rabbit.url());
    let mount = place.path("out");
    let port = free_port();
    // The worker starts before the pod's server and waits for it, as Cortex's dequeuer.
    let metrics_port = free_port();
    let endpoint = vec![
        "--endpoint".to_string(),
        format!("http://127.0.0.1:{port}"),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics_port}"),
    ];
    let worker = Worker::spawn_args(&rabbit.url(), "sum", 2, &endpoint);
    worker.wait_for("waiting for the endpoint to be ready", |_| true);
    let server = crate::harness::Server::with(plugin("sum"))
        .port(port)
        .args(["--mount".to_string(), mount.display().to_string(), "--concurrency".into(), "2".into()])
        .start();
    worker.wait_for("consuming", |_| true);
    let batches = 200;
    let job_id = operator.submit("sum", &sum_job(batches));
    let status = operator.wait_done("sum", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!(status["job_status"]["on_job_complete"], "succeeded");
    assert_eq!(succeeded(&status), batches as u64);
    // The worker sends each batch's index as its identifier: serve names the files by it.
    check_sums(std::slice::from_ref(&mount), &job_id, batches);
    let result: Value =
        serde_json::from_slice(&std::fs::read(mount.join(&job_id).join("result.json")).unwrap()).unwrap();
    assert_eq!(result["items"].as_u64(), Some(batches as u64 * 2), "{result}");
    // The worker's own metrics count what it handled.
    let metrics = ureq::get(&format!("http://127.0.0.1:{metrics_port}/metrics")).call().unwrap().into_string().unwrap();
    let line =
        metrics.lines().find(|l| l.starts_with("cortex_batch_succeeded{")).unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(&format!(" {batches}")), "{line}");
    drop(server);
}

#[test]
fn results_and_failed_items_come_back_through_the_broker() {
    let rabbit = Rabbit::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apis.toml"), "[[api]]\nname = \"reach\"\nmax_attempts = 2\n").unwrap();
    let operator =
        Operator::start_with(&dir.path().join("apis.toml"), &dir.path().join("data"), &["--broker", &rabbit.url()]);
    let mut handler = vec!["--plugin".to_string(), plugin("reach").display().to_string()];
    handler.extend(crate::capabilities::REACH_LOADS.map(String::from));
    let worker = Worker::spawn_args(&rabbit.url(), "reach", 2, &handler);
    worker.wait_for("consuming", |_| true);
    let items = json!(["emit:1", "emit:2", "emit:3", "fail:no"]);
    let job_id = operator.submit("reach", &json!({"workers": 1, "item_list": {"items": items, "batch_size": 2}}));
    let status = operator.wait_done("reach", &job_id);
    assert_eq!(status["job_status"]["status"], "completed_with_failures", "{status}");
    assert_eq!(status["metrics"]["items"], json!({"succeeded": 3, "dead_lettered": 1}), "{status}");
    let (_, text) = operator.request("GET", &format!("/batch/reach/jobs/{job_id}/results"), None);
    let mut results: Vec<Value> = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect();
    results.sort_by_key(|r| (r["batch"].as_u64(), r["result"].to_string()));
    // Batch 1 ended with a failed item; its other item's result is kept all the same.
    assert_eq!(
        results,
        vec![json!({"batch": 0, "result": 1}), json!({"batch": 0, "result": 2}), json!({"batch": 1, "result": 3})]
    );
    let (_, text) = operator.request("GET", &format!("/batch/reach/jobs/{job_id}/dead-letters"), None);
    let letter: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!((letter["items"].clone(), letter["attempts"].as_u64()), (json!(["fail:no"]), Some(2)));
    assert_eq!(letter["error"]["message"], "item 1: no");
}

#[test]
fn on_job_complete_on_a_worker_reads_every_workers_results_from_the_operator() {
    let summary = textstats_on_two_workers(&plugin("textstats"), 80);
    assert_eq!((summary["documents"].as_u64(), summary["words"].as_u64()), (Some(80), Some(240)));
}

/// A textstats job of `docs` documents (three words each) on two workers, each with a
/// `/mnt` of its own (two "machines"), `plugin` their handler: the one summary that
/// on-job-complete, run once by one of them, wrote from every worker's results.
fn textstats_on_two_workers(plugin: &Path, docs: usize) -> Value {
    let rabbit = Rabbit::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apis.toml"), "[[api]]\nname = \"textstats\"\n").unwrap();
    let operator =
        Operator::start_with(&dir.path().join("apis.toml"), &dir.path().join("data"), &["--broker", &rabbit.url()]);
    let mounts: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("mnt{i}"))).collect();
    let workers: Vec<Worker> = mounts
        .iter()
        .map(|mount| {
            std::fs::create_dir(mount).unwrap();
            let handler: Vec<String> = [
                "--plugin",
                &plugin.display().to_string(),
                "--mount",
                &mount.display().to_string(),
                "--operator-url",
                &operator.url,
                "--prefetch",
                "1",
            ]
            .map(String::from)
            .to_vec();
            let worker = Worker::spawn_args(&rabbit.url(), "textstats", 1, &handler);
            worker.wait_for("consuming", |_| true);
            worker
        })
        .collect();
    let docs: Vec<Value> = (0..docs).map(|i| json!({"id": format!("d{i}"), "text": "one two three"})).collect();
    let job_id = operator.submit("textstats", &json!({"workers": 2, "item_list": {"items": docs, "batch_size": 2}}));
    let status = operator.wait_done("textstats", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!(status["job_status"]["on_job_complete"], "succeeded", "{status}");
    let handled: Vec<usize> = workers.iter().map(|w| w.count("on-job-complete ran")).collect();
    assert_eq!(handled.iter().sum::<usize>(), 1, "{handled:?}");
    let mut summaries: Vec<Value> = mounts
        .iter()
        .filter_map(|m| std::fs::read(m.join(&job_id).join("summary.json")).ok())
        .map(|b| serde_json::from_slice(&b).unwrap())
        .collect();
    assert_eq!(summaries.len(), 1, "one summary, by the worker that ran on-job-complete");
    summaries.remove(0)
}

#[test]
fn the_operator_and_workers_speak_amqps_trusting_the_ca_file() {
    let pki = crate::tls::Pki::new();
    let tls_port = free_port();
    let _rabbit = Rabbit::start_tls(&pki, tls_port);
    let url = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
    let ca = pki.ca().display().to_string();
    let place = Place::new(3);
    let operator =
        Operator::start_with(&place.path("apis.toml"), &place.path("data"), &["--broker", &url, "--ca-file", &ca]);
    let mount = place.path("out");
    let sum = plugin("sum").display().to_string();
    let handler = |ca: Option<&str>| {
        let mut args = vec!["--plugin".to_string(), sum.clone(), "--mount".into(), mount.display().to_string()];
        if let Some(ca) = ca {
            args.extend(["--ca-file".to_string(), ca.to_string()]);
        }
        args
    };
    let worker = Worker::spawn_args(&url, "sum", 2, &handler(Some(&ca)));
    worker.wait_for("consuming", |_| true);
    let job_id = operator.submit("sum", &sum_job(40));
    let status = wait_status(&operator, "sum", &job_id, |s| {
        s["job_status"]["status"] != "running" && s["job_status"]["status"] != "pending"
    });
    assert_eq!((status["job_status"]["status"].as_str(), succeeded(&status)), (Some("succeeded"), 40), "{status}");
    check_sums(std::slice::from_ref(&mount), &job_id, 40);
    // A worker that does not trust the CA does not connect, and says why.
    let untrusting = Worker::spawn_args(&url, "sum", 1, &handler(None));
    untrusting.wait_for("certificate", |_| true);
    assert_eq!(untrusting.count("consuming"), 0);
}

#[test]
fn a_python_handler_on_two_workers_sums_up_the_job_through_the_operator() {
    if !crate::python::premise() {
        return;
    }
    let component = crate::python::built(&crate::harness::workspace_root().join("samples/python/textstats.py"));
    let summary = textstats_on_two_workers(&component, 60);
    assert_eq!((summary["documents"].as_u64(), summary["words"].as_u64()), (Some(60), Some(180)));
}
