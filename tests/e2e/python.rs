//! Python handlers: a Cortex handler file (`class Handler`), made a component by
//! `wasmbatch build` (componentize-py) or by `--plugin handler.py`, run unchanged by
//! `run`, `serve` and the operator, in the same sandbox and limits as modules.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::harness::{Server, wasmbatch, workspace_root};
use crate::operator::Operator;
use crate::run::{Job, commands, read_lines};

/// Whether componentize-py is there; under `CI=true` its absence fails the test.
pub(crate) fn premise() -> bool {
    let found =
        std::process::Command::new("componentize-py").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and componentize-py is not installed: the Python tests need it (scripts/env.sh \
             ensure_componentize_py)"
        );
        eprintln!("componentize-py is not installed: Python handler test skipped");
    }
    found
}

fn handler_file() -> PathBuf {
    workspace_root().join("tests/python/cortex_handler.py")
}

/// The test handler's component, built once per test run with `wasmbatch build`.
fn component() -> &'static Path {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BUILT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let output = dir.path().join("cortex_handler.wasm");
            let out = wasmbatch().arg("build").arg(handler_file()).arg("-o").arg(&output).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "wasmbatch build failed:\n{stderr}");
            assert!(stderr.contains("built ") && stderr.contains(" MB) in "), "{stderr}");
            (dir, output)
        })
        .1
}

/// The component of the handler at `handler`, built once per test run.
pub(crate) fn built(handler: &Path) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(PathBuf, tempfile::TempDir)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, dir)) = built.iter().find(|(h, _)| h == handler) {
        return dir.path().join("handler.wasm");
    }
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("handler.wasm");
    let out = wasmbatch().arg("build").arg(handler).arg("-o").arg(&output).output().unwrap();
    assert!(
        out.status.success(),
        "wasmbatch build {} failed:\n{}",
        handler.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    built.push((handler.to_path_buf(), dir));
    output
}

fn run_python(job: &Job, plugin: &Path, extra: &[&str]) -> crate::run::Outcome {
    let mut args = vec!["--plugin", plugin.to_str().unwrap(), "--mount", job.mnt()];
    args.extend_from_slice(extra);
    job.run(&args)
}

#[test]
fn a_cortex_handler_runs_unchanged_in_process_keeping_state_and_writing_to_mnt() {
    if !premise() {
        return;
    }
    let items = ["ok", "print:hello from python", "ok", "ok", "ok", "ok", "ok"];
    let job = Job::new(&commands(&items, 3, 1, json!({"words": ["b", "a", "b"]})));
    let out = run_python(&job, component(), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status["status"], "succeeded", "{}", out.status);
    assert_eq!(out.status["metrics"]["succeeded"], 3, "{}", out.status);
    assert!(out.stderr.contains("hello from python"), "the handler's print reaches the log:\n{}", out.stderr);
    // The returned values are the results, one a batch, with the batch's identifier.
    let results = read_lines(&job.path("results.jsonl"));
    assert_eq!(results.len(), 3, "{results:?}");
    let mut seen: Vec<(String, u64)> = results
        .iter()
        .map(|r| (r["result"]["batch_id"].as_str().unwrap().to_string(), r["result"]["items"].as_u64().unwrap()))
        .collect();
    seen.sort();
    assert_eq!(seen, [("0".to_string(), 3), ("1".to_string(), 3), ("2".to_string(), 1)]);
    // State kept across batches, on_job_complete writing to /mnt, and `Counter.most_common`
    // (which imports heapq inside the method) working.
    let job_id = out.status["job_id"].as_str().unwrap();
    let done: Value =
        serde_json::from_slice(&std::fs::read(job.path("mnt").join(format!("{job_id}.json"))).unwrap()).unwrap();
    assert_eq!(done, json!({"items": 7, "batches": 3, "top": [["b", 2]]}));
}

#[test]
fn a_python_file_as_the_plugin_is_built_once_through_the_cache() {
    if !premise() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let handler = dir.path().join("greet.py");
    std::fs::write(
        &handler,
        "class Handler:\n    def __init__(self, config):\n        self.greeting = config['greeting']\n\n    \
         def handle_batch(self, payload):\n        from textutil import shout\n\n        \
         return [shout(f'{self.greeting}, {name}') for name in payload]\n",
    )
    .unwrap();
    // A pure-Python package beside the handler, as `pip install --target` leaves one.
    std::fs::create_dir(dir.path().join("textutil")).unwrap();
    std::fs::write(dir.path().join("textutil/__init__.py"), "def shout(text):\n    return text.upper()\n").unwrap();
    let cache = dir.path().join("cache");
    let job = Job::new(
        &json!({"workers": 2, "config": {"greeting": "hi"}, "item_list": {"items": ["a", "b"], "batch_size": 1}}),
    );
    let cache_arg = cache.to_str().unwrap();
    for round in 0..2 {
        let out = python_run(&job, &handler, cache_arg, &format!("results-{round}.jsonl"));
        assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        let built = out.stderr.contains("built the Python handler's component");
        assert_eq!(built, round == 0, "built on the first run only, round {round}:\n{}", out.stderr);
    }
    let results: Vec<Value> =
        read_lines(&job.path("results-1.jsonl")).into_iter().map(|r| r["result"].clone()).collect();
    assert!(results.contains(&json!(["HI, A"])) && results.contains(&json!(["HI, B"])), "{results:?}");
    assert_eq!(std::fs::read_dir(cache.join("python")).unwrap().count(), 1, "one component in the cache");

    // A change in the handler's directory, a package's file included, builds again.
    std::fs::write(dir.path().join("textutil/__init__.py"), "def shout(text):\n    return text + '!'\n").unwrap();
    let out = python_run(&job, &handler, cache_arg, "results-2.jsonl");
    assert!(out.stderr.contains("built the Python handler's component"), "{}", out.stderr);
    let results: Vec<Value> =
        read_lines(&job.path("results-2.jsonl")).into_iter().map(|r| r["result"].clone()).collect();
    assert!(results.contains(&json!(["hi, a!"])), "{results:?}");
}

/// `run` with the handler file as the plugin and a compile cache of the test's own (not
/// the shared one `Job::run` gives).
fn python_run(job: &Job, handler: &Path, cache: &str, results: &str) -> crate::run::Outcome {
    let mut command = wasmbatch();
    command
        .args(["run", "--output", "json", "--progress", "off", "--plugin", handler.to_str().unwrap(), "--no-mount"])
        .args(["--cache-dir", cache, "--results"])
        .arg(job.path(results))
        .arg("--dead-letter")
        .arg(job.path("dead-letter.jsonl"))
        .arg(job.path("job.json"))
        .arg("--state-dir")
        .arg(job.path("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    crate::run::finish(command.spawn().unwrap())
}

#[test]
fn failures_of_a_python_handler_are_typed_and_the_host_stays_up() {
    if !premise() {
        return;
    }
    let items = [
        "raise:boom",
        "invalid:not a document",
        "ok",
        "loop",
        "ok",
        "oom",
        "socket:127.0.0.1:9",
        "http:http://127.0.0.1:9/",
        "thread",
        "subprocess",
    ];
    let job = Job::new(&commands(&items, 1, 1, json!({})));
    let out =
        run_python(&job, component(), &["--max-attempts", "1", "--batch-timeout", "3s", "--max-memory", "256MiB"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.status["metrics"]["succeeded"], 2, "{}", out.status);
    let letters = job.dead_letters();
    let by_item = |item: &str| {
        letters
            .iter()
            .find(|l| l["items"][0] == item)
            .unwrap_or_else(|| panic!("no dead letter for {item}: {letters:?}"))
            .clone()
    };
    let raised = by_item("raise:boom");
    assert_eq!(raised["error"]["kind"], "guest_error", "{raised}");
    assert_eq!(raised["error"]["message"], "handle_batch raised RuntimeError: boom", "{raised}");
    assert!(out.stderr.contains("Traceback (most recent call last)"), "the traceback is logged:\n{}", out.stderr);
    assert_eq!(by_item("invalid:not a document")["error"]["kind"], "invalid_input");
    assert_eq!(by_item("loop")["error"]["kind"], "timeout");
    assert_eq!(by_item("oom")["error"]["kind"], "out_of_memory", "{}", by_item("oom"));
    let socket = by_item("socket:127.0.0.1:9");
    assert_eq!(socket["error"]["kind"], "guest_error", "{socket}");
    // Refused before any packet: the sandbox resolves no address, numeric ones included.
    assert!(socket["error"]["message"].as_str().unwrap().contains("handle_batch raised gaierror"), "{socket}");
    // No threads, no processes: each raises, and fails its batch alone.
    for item in ["thread", "subprocess"] {
        let letter = by_item(item);
        assert_eq!(letter["error"]["kind"], "guest_error", "{letter}");
        assert!(letter["error"]["message"].as_str().unwrap().starts_with("handle_batch raised"), "{letter}");
    }
    let http = by_item("http:http://127.0.0.1:9/");
    assert!(http["error"]["message"].as_str().unwrap().contains("Refused"), "{http}");
    assert!(http["error"]["message"].as_str().unwrap().contains("allow_http"), "{http}");
}

#[test]
fn serve_runs_a_python_handler_behind_the_contract() {
    if !premise() {
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let (_spec_dir, spec) = crate::harness::spec_file(&json!({"job_id": "py1", "config": {"words": ["x"]}}));
    let server = Server::with(component())
        .args(["--job-spec", spec.to_str().unwrap(), "--mount", mnt.path().to_str().unwrap(), "--concurrency", "2"])
        .args(["--batch-timeout", "3s"])
        .start();
    for _ in 0..5 {
        let reply = server.post("/", Some("py1"), r#"["ok","ok"]"#);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let reply = server.post("/", Some("py1"), r#"["raise:nope"]"#);
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(reply.kind(), "guest_error", "{}", reply.body);
    let reply = server.post("/", Some("py1"), r#"["loop"]"#);
    assert_eq!(reply.kind(), "timeout", "{}", reply.body);
    // The next batch runs on a fresh instance.
    assert_eq!(server.post("/", Some("py1"), r#"["ok"]"#).status, 200);
    let reply = server.post("/on-job-complete", Some("py1"), "{}");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let done: Value = serde_json::from_slice(&std::fs::read(mnt.path().join("py1.json")).unwrap()).unwrap();
    assert_eq!(done["top"], json!([["x", 1]]), "{done}");
}

#[test]
fn the_operator_runs_a_python_api_and_refuses_what_it_was_not_granted() {
    if !premise() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let config = dir.path().join("apis.toml");
    std::fs::write(
        &config,
        format!(
            "[[api]]\nname = \"py\"\nplugin = {:?}\nmount = {:?}\n",
            handler_file().display().to_string(),
            mnt.display().to_string()
        ),
    )
    .unwrap();
    let operator = Operator::start(&config, &dir.path().join("data"));
    let job = json!({"workers": 2, "config": {}, "item_list": {"items": ["ok", "ok", "ok", "ok", "http:http://127.0.0.1:9/"], "batch_size": 1}});
    let job_id = operator.submit("py", &job);
    let status = operator.wait_done("py", &job_id);
    assert_eq!(status["metrics"]["succeeded"], 4, "{status}");
    assert_eq!(status["job_status"]["on_job_complete"], "succeeded", "{status}");
    assert!(mnt.join(format!("{job_id}.json")).is_file(), "on_job_complete wrote to /mnt");
    // The call without its grant was refused, its batch dead-lettered with the reason.
    let (_, text) = operator.request("GET", &format!("/batch/py/jobs/{job_id}/dead-letters"), None);
    let letter: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(letter["items"], json!(["http:http://127.0.0.1:9/"]), "{letter}");
    let message = letter["error"]["message"].as_str().unwrap();
    assert!(message.contains("Refused") && message.contains("`allow_http`"), "{message}");
}

/// `wasmbatch build` of `handler`, which must fail: what it said.
fn build_fails(handler: &Path, componentize_py: Option<&Path>) -> String {
    let mut command = wasmbatch();
    command.arg("build").arg(handler);
    if let Some(path) = componentize_py {
        command.env("WASMBATCH_COMPONENTIZE_PY", path);
    }
    let out = command.output().unwrap();
    assert!(!out.status.success(), "{} built", handler.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_handler_that_cannot_be_built_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let no_class = dir.path().join("no_class.py");
    std::fs::write(&no_class, "def handle_batch(payload):\n    pass\n").unwrap();
    // Without componentize-py: what to install.
    let stderr = build_fails(&no_class, Some(&dir.path().join("nowhere")));
    assert!(stderr.contains("pip install componentize-py==0.25.1"), "{stderr}");
    // A file name that is not a module name.
    let dashed = dir.path().join("my-handler.py");
    std::fs::write(&dashed, "class Handler: pass\n").unwrap();
    let stderr = build_fails(&dashed, None);
    assert!(stderr.contains("\"my-handler\" is not a Python module name: rename the file"), "{stderr}");
    if !premise() {
        return;
    }
    // No `class Handler`: componentize-py's build stops, and says so.
    let stderr = build_fails(&no_class, None);
    assert!(stderr.contains("no_class.py defines no class Handler"), "{stderr}");
    // A syntax error: the line is shown.
    let broken = dir.path().join("broken.py");
    std::fs::write(&broken, "class Handler:\n    def handle_batch(self, payload)\n        pass\n").unwrap();
    let stderr = build_fails(&broken, None);
    assert!(stderr.contains("SyntaxError"), "{stderr}");
}
