//! The contract's server through the embedding API, in this process: a plugin loaded
//! and bound with `wasmbatch::plugin`, an `InstancePool`, `wasmbatch::http::serve` on a
//! listener of our own, stopped by a future of our own. The bulk of the HTTP cases
//! run here; `serve.rs` keeps those that need the real binary (signals, readiness of
//! the port, logs, exit codes).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use wasmbatch::http::{ServerConfig, serve};
use wasmbatch::metrics::Metrics;
use wasmbatch::plugin::{CallLimits, JobContext, LoadOptions, Plugin};
use wasmbatch::pool::{InstancePool, PoolConfig};

use crate::harness::{Reply, agent, plugin, reply, shared_cache, wait_for_file};

/// A server in this process; dropped, it is shut down and waited for.
struct Embedded {
    addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

struct Options {
    spec: serde_json::Value,
    mount: Option<std::path::PathBuf>,
    max_body: usize,
    queue_depth: usize,
    queue_timeout: Duration,
    /// Instances running batches at once.
    concurrency: usize,
    /// The runtime's worker threads (connections and guests alike).
    io_threads: usize,
    batch_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            spec: json!({}),
            mount: None,
            max_body: 16 << 20,
            queue_depth: 64,
            queue_timeout: Duration::from_secs(10),
            concurrency: 1,
            io_threads: 2,
            batch_timeout: wasmbatch::plugin::CallLimits::DEFAULT_TIMEOUT,
        }
    }
}

impl Embedded {
    fn start(plugin_name: &str, options: Options) -> Embedded {
        let limits = CallLimits { batch_timeout: options.batch_timeout, ..CallLimits::default() };
        let load = LoadOptions {
            instances: options.concurrency + 1,
            cache_dir: Some(shared_cache().to_path_buf()),
            limits,
            ..LoadOptions::default()
        };
        let loaded = Arc::new(Plugin::load(&plugin(plugin_name), &load, Metrics::new("in-process")).unwrap());
        let spec = serde_json::to_vec(&options.spec).unwrap();
        let bound =
            loaded.bind(JobContext { spec: Arc::from(spec), mount: options.mount, ..JobContext::default() }).unwrap();
        let pool_config = PoolConfig {
            concurrency: options.concurrency,
            queue_depth: options.queue_depth,
            queue_bytes: 64 << 20,
            queue_timeout: options.queue_timeout,
            recycle_after: None,
        };
        let pool = Arc::new(InstancePool::new(Arc::new(bound), &pool_config, None));
        let config = ServerConfig {
            max_body: options.max_body,
            default_job_id: options.spec["job_id"].as_str().map(str::to_owned),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let io_threads = options.io_threads;
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(io_threads).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve(listener, pool, config, async {
                    let _ = rx.await;
                })
                .await
            })
        });
        Embedded { addr, shutdown: Some(tx), thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn post(&self, path: &str, job_id: Option<&str>, body: &str) -> Reply {
        let mut request = agent().post(&self.url(path));
        if let Some(id) = job_id {
            request = request.set("X-Cortex-Job-ID", id);
        }
        reply(request.send_string(body))
    }

    fn batch(&self, body: &str) -> Reply {
        self.post("/", Some("job-1"), body)
    }

    fn request(&self, method: &str, path: &str) -> Reply {
        reply(agent().request(method, &self.url(path)).call())
    }

    /// Resolves the shutdown future and waits for `serve` to return.
    fn shut_down(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.thread.take().map(|t| t.join().expect("the server thread panicked")).unwrap_or(Ok(()))
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

#[test]
fn batches_and_routes_answer_as_the_contract_says() {
    let server = Embedded::start("noop", Options::default());
    let ok = server.batch(r#"[{"a":1},{"b":[2,3]},"x",4]"#);
    assert_eq!((ok.status, ok.body.as_str()), (200, ""));
    for (body, says) in [
        (r#"{"items":[1]}"#, "the body is an object"),
        ("42", "the body is a number"),
        ("", "the body is empty"),
        ("[1, 2", "not valid JSON"),
    ] {
        let reply = server.batch(body);
        assert_eq!((reply.status, reply.kind().as_str()), (400, "invalid_input"), "{body}");
        assert!(reply.message().contains(says), "{body}: {}", reply.message());
    }
    assert_eq!(server.request("GET", "/healthz").status, 200);
    let wrong = server.request("GET", "/");
    assert_eq!((wrong.status, wrong.kind().as_str()), (405, "method_not_allowed"));
    assert_eq!(server.request("PUT", "/on-job-complete").status, 405);
    let unknown = server.post("/batch", Some("j"), "[]");
    assert_eq!((unknown.status, unknown.kind().as_str()), (404, "not_found"));
    let missing = server.post("/", None, "[1]");
    assert_eq!((missing.status, missing.kind().as_str()), (400, "missing_job_id"));
    let hook = server.post("/on-job-complete", Some("j"), r#"{"message":"job_complete"}"#);
    assert_eq!((hook.status, hook.kind().as_str()), (404, "not_found"), "noop has no on-job-complete");
    assert_eq!(server.batch("[]").status, 200, "the server is unharmed");
}

#[test]
fn a_body_over_the_limit_gets_413_and_the_spec_names_the_job() {
    let server =
        Embedded::start("noop", Options { max_body: 1024, spec: json!({"job_id": "from-spec"}), ..Options::default() });
    let big = format!("[{}]", vec!["1"; 1000].join(","));
    let reply = server.batch(&big);
    assert_eq!((reply.status, reply.kind().as_str()), (413, "body_too_large"));
    assert_eq!(server.post("/", None, "[1]").status, 200, "the spec's job_id stands in for the header");
}

#[test]
fn a_full_pool_answers_503_and_a_shutdown_lets_the_batch_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Embedded::start(
        "misbehave",
        Options {
            mount: Some(dir.path().to_path_buf()),
            queue_depth: 0,
            queue_timeout: Duration::ZERO,
            ..Options::default()
        },
    );
    let url = server.url("/");
    let slow = std::thread::spawn(move || {
        ureq::post(&url)
            .set("X-Cortex-Job-ID", "j")
            .send_string(r#"["copy:/cortex/spec/job.json:/mnt/started", "sleep:1500"]"#)
            .map(|r| r.status())
            .map_err(|e| e.to_string())
    });
    wait_for_file(&dir.path().join("started"));
    let busy = server.batch(r#"["ok"]"#);
    assert_eq!((busy.status, busy.kind().as_str()), (503, "busy"), "{}", busy.body);
    // The shutdown future resolves while the slow batch runs: serve drains it.
    server.shut_down().unwrap();
    assert_eq!(slow.join().unwrap(), Ok(200), "the batch in flight finished");
    assert!(std::net::TcpStream::connect(server.addr).is_err(), "the listener is closed after serve returns");
}

#[test]
fn a_guest_computing_for_seconds_does_not_hold_up_other_connections_on_its_thread() {
    // One thread for everything: connections, their batches and both guests. The long
    // guest loops until its 10 s deadline; it yields at every epoch tick, so the other
    // connection's batches are answered meanwhile, on the same thread.
    let dir = tempfile::tempdir().unwrap();
    let server = Embedded::start(
        "misbehave",
        Options {
            mount: Some(dir.path().to_path_buf()),
            concurrency: 2,
            io_threads: 1,
            batch_timeout: Duration::from_secs(10),
            ..Options::default()
        },
    );
    let url = server.url("/");
    let long = std::thread::spawn(move || {
        let reply = reply(
            agent()
                .post(&url)
                .set("X-Cortex-Job-ID", "j")
                .send_string(r#"["copy:/cortex/spec/job.json:/mnt/started", "loop"]"#),
        );
        (reply.status, reply.kind())
    });
    wait_for_file(&dir.path().join("started"));
    for n in 0..20 {
        let quick = server.batch(r#"["ok", "ok"]"#);
        assert_eq!(quick.status, 200, "batch {n}: {}", quick.body);
    }
    assert!(!long.is_finished(), "20 batches were answered while the long one still ran");
    assert_eq!(long.join().unwrap(), (500, "timeout".to_string()), "the deadline still stops the loop");
    assert_eq!(server.batch(r#"["ok"]"#).status, 200, "and the server goes on");

    // A guest that sleeps (WASI `poll_oneoff`) waits without holding the thread either.
    let url = server.url("/");
    let sleeper = std::thread::spawn(move || {
        let body = r#"["copy:/cortex/spec/job.json:/mnt/sleeping", "sleep:5000"]"#;
        reply(agent().post(&url).set("X-Cortex-Job-ID", "j").send_string(body)).status
    });
    wait_for_file(&dir.path().join("sleeping"));
    for n in 0..20 {
        assert_eq!(server.batch(r#"["ok"]"#).status, 200, "batch {n} beside the sleeper");
    }
    assert!(!sleeper.is_finished(), "20 batches were answered while the sleeper slept");
    assert_eq!(sleeper.join().unwrap(), 200);
}
