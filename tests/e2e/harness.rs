//! Shared helpers: build the plugins once, start and stop the real binary, speak HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("runtime/ has a parent").to_path_buf()
}

/// The target directory this test binary was built in (`…/target`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // …/target/debug/deps/e2e-<hash>
    exe.ancestors().nth(3).expect("test binary lives in target/<profile>/deps").to_path_buf()
}

/// Path of a plugin's `.wasm`, building all of them on first use.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_plugins("wasm32-wasip1")).join(format!("{name}.wasm"))
}

/// Path of a plugin built for `wasm32-wasip2`: the same source as [`plugin`]'s, a
/// component of the world `wasmbatch:handler`.
pub fn component_plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_plugins("wasm32-wasip2")).join(format!("{name}.wasm"))
}

/// Builds every plugin crate under plugins/ for `target`; the directory of the files.
fn build_plugins(target: &str) -> PathBuf {
    let dir = target_dir().join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args(["build", "--release", "--target", target, "--target-dir"]).arg(&dir);
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("plugins"))
        .expect("plugins/")
        .map(|e| e.expect("plugins/ entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        cmd.args(["-p", name]);
    }
    let out = cmd.output().expect("run cargo to build the plugins");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains(target) && stderr.contains("target may not be installed") {
            format!("\nThe {target} target is missing: run `rustup target add {target}`.\n")
        } else {
            String::new()
        };
        panic!("building the test plugins for {target} failed{hint}\n{stderr}");
    }
    dir.join(target).join("release")
}

/// Builds the plugin crate made of `files` (path, content) in `dir` for
/// wasm32-wasip1, in the plugins' target directory and with the workspace's lock file,
/// so that the dependencies built for the plugins are reused; the `.wasm`, or cargo's
/// stderr.
pub fn build_plugin_crate(dir: &Path, files: &[(&str, &str)]) -> Result<PathBuf, String> {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    // The plugins first: their build fills the target directory this one reuses.
    plugin("noop");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = target_dir().join("wasm-plugins");
    let out = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip1", "--offline", "--target-dir"])
        .arg(&target)
        .output()
        .expect("run cargo");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
    let name = manifest["package"]["name"].as_str().unwrap().replace('-', "_");
    Ok(target.join("wasm32-wasip1").join("release").join(format!("{name}.wasm")))
}

/// One compile cache for every process this test binary starts: each plugin is
/// compiled once per test run, not once per test.
pub fn shared_cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::Builder::new().prefix("wasmbatch-e2e-cache-").tempdir().unwrap()).path()
}

/// A file in `tests/guests/`.
pub fn guest_file(name: &str) -> PathBuf {
    workspace_root().join("tests").join("guests").join(name)
}

pub fn wasmbatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmbatch"))
}

/// One running `wasmbatch serve`, killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

/// A fluent builder for `serve` arguments.
pub struct ServeBuilder {
    args: Vec<String>,
    plugin: PathBuf,
    port: u16,
}

impl ServeBuilder {
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Starts the server and waits until it logs that it is listening.
    pub fn start(self) -> Server {
        self.try_start().unwrap_or_else(|(status, logs)| {
            panic!("server exited early or did not listen in time ({status}):\n{logs}")
        })
    }

    /// Starts the server; `Err((exit status, logs))` if it exits before listening.
    pub fn try_start(self) -> Result<Server, (String, String)> {
        // Defaults for what the test did not set: one worker, no /mnt, the shared cache.
        let has = |flag: &str| self.args.iter().any(|a| a == flag);
        let mut defaults: Vec<String> = Vec::new();
        if !has("--concurrency") {
            defaults.extend(["--concurrency".into(), "1".into()]);
        }
        if !has("--mount") {
            defaults.push("--no-mount".into());
        }
        if !has("--cache-dir") {
            defaults.extend(["--cache-dir".into(), shared_cache().display().to_string()]);
        }
        let mut child = wasmbatch()
            .args(["--log-format", "json", "serve", "--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--plugin")
            .arg(&self.plugin)
            .args(&defaults)
            .args(&self.args)
            .env_remove("CORTEX_PORT")
            // The per-batch line of a success is at DEBUG.
            .env("RUST_LOG", "info,wasmbatch::http=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmbatch");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _ended = ended_tx;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => Ok(Server { child, addr: addr.parse().expect("listening addr"), logs }),
            Err(_) => {
                // Still running and not listening after the deadline: it is stopped, so
                // that the test fails instead of waiting for it forever.
                if child.try_wait().ok().flatten().is_none() {
                    let _ = child.kill();
                }
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                // The reader thread ends when the child's stderr closes: wait for that.
                let _ = ended.recv_timeout(Duration::from_secs(10));
                let logs = logs.lock().unwrap().join("\n");
                Err((status, logs))
            }
        }
    }
}

/// The outcome of one HTTP request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `error.kind` of a JSON error body.
    pub fn kind(&self) -> String {
        self.json()["error"]["kind"].as_str().unwrap_or_default().to_string()
    }

    /// `error.message` of a JSON error body.
    pub fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_string()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build()
}

pub fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    Reply { status, body: response.into_string().unwrap_or_default() }
}

impl Server {
    pub fn with(plugin: impl AsRef<Path>) -> ServeBuilder {
        ServeBuilder { args: Vec::new(), plugin: plugin.as_ref().to_path_buf(), port: 0 }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to `path` with the job ID header when given.
    pub fn post(&self, path: &str, job_id: Option<&str>, body: &str) -> Reply {
        let mut req = agent().post(&self.url(path)).set("Content-Type", "application/json");
        if let Some(id) = job_id {
            req = req.set("X-Cortex-Job-ID", id);
        }
        reply(req.send_string(body))
    }

    /// POSTs a batch to `/` for job `job-1`.
    pub fn batch(&self, body: &str) -> Reply {
        self.post("/", Some("job-1"), body)
    }

    pub fn get(&self, path: &str) -> Reply {
        reply(agent().get(&self.url(path)).call())
    }

    /// Every log line so far, parsed.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits (bounded) until a log line satisfies `pred`, and returns it.
    pub fn wait_for_log(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no log line {what} in:\n{}", self.logs.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn all_logs_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `path` exists.
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes a job spec to a temp dir and returns (dir, path).
pub fn spec_file(spec: &Value) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.json");
    std::fs::write(&path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    (dir, path)
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends `total` POSTs of `body` over `connections` kept-alive connections and counts
/// the answers (the benchmark suite's load generator).
pub fn load(addr: SocketAddr, connections: usize, total: u64, body: &str) -> wasmbatch_bench::load::Report {
    wasmbatch_bench::load::run(addr, connections, wasmbatch_bench::load::Until::Requests(total), body)
}

/// A process's resident memory in KiB and its open file descriptors, from /proc.
pub fn proc_usage(pid: i32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss, fds)
}

/// Follows a process until it exits and returns its peak resident memory (VmHWM) in
/// KiB, sampled from /proc every 10 ms; join the handle after waiting for the process.
pub fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak_kib = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(hwm) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak_kib = peak_kib.max(hwm.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak_kib
    })
}
