//! Components: the plugins' own sources built for `wasm32-wasip2` (the guest SDK's
//! component build, the world `wasmbatch:handler`) pass the contract their core-module
//! twins pass, in the same sandbox and limits.

use serde_json::{Value, json};

use crate::harness::{Server, component_plugin, plugin};
use crate::run::{Job, read_lines};

/// Sends `command` to both twins; their statuses and failure kinds, module first.
fn both(module: &Server, component: &Server, command: &str) -> ((u16, String), (u16, String)) {
    let body = format!("[{}]", serde_json::to_string(command).unwrap());
    let m = module.batch(&body);
    let c = component.batch(&body);
    let kind = |r: &crate::harness::Reply| if r.status == 200 { String::new() } else { r.kind() };
    ((m.status, kind(&m)), (c.status, kind(&c)))
}

#[test]
fn a_component_fails_as_its_module_twin_does_and_the_host_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let start = |path| {
        Server::with(path)
            .args(["--batch-timeout", "2s", "--max-memory", "64MiB", "--output-limit", "4KiB"])
            .args(["--mount", dir.path().to_str().unwrap()])
            .start()
    };
    let module = start(plugin("misbehave"));
    let component = start(component_plugin("misbehave"));
    for command in [
        "ok",
        "error:a handler's own failure",
        "invalid:not a command",
        "trap",
        "stack",
        "loop",
        "oom",
        "alloc:16",
        "flood:5000",
        "exit:3",
        "sleep:20",
        "read:/etc/passwd",
        "env:HOME",
        "env:PATH",
        "log:warn:a guest's warning",
        "print:to stdout",
    ] {
        let (m, c) = both(&module, &component, command);
        assert_eq!(m, c, "{command}: the module answered {m:?}, the component {c:?}");
        assert_eq!(component.batch(r#"["ok"]"#).status, 200, "after {command}");
    }
    // A panic: the module reports it as such; a component (no panic import) traps,
    // with the message in its log.
    let (m, c) = both(&module, &component, "panic:the wheels came off");
    assert_eq!((m, c), ((500, "panic".into()), (500, "trap".into())));
    let logged = component.wait_for_log("the panic's message", |l| {
        l["message"].as_str().is_some_and(|m| m.contains("panicked") && m.contains("the wheels came off"))
    });
    assert_eq!(logged["level"], "ERROR", "{logged}");
    // The failure's message is the handler's own.
    let reply = component.batch(r#"["error:a handler's own failure"]"#);
    assert_eq!(reply.message(), "a handler's own failure", "{}", reply.body);
    let reply = component.batch(r#"["oom"]"#);
    assert!(reply.message().contains("64 MiB"), "{}", reply.body);
}

/// The spec at `/cortex/spec/job.json`, read-only: `sandbox::job_spec_is_visible_read_only_at_cortex_spec`
/// runs both twins. Here, the batch's identity, asked of the host.
#[test]
fn a_component_asks_the_host_for_its_batch_identity() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with(component_plugin("misbehave")).args(["--mount", dir.path().to_str().unwrap()]).start();
    let reply = server.post("/", Some("c1"), r#"["batch:/mnt/batch.jsonl"]"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = read_lines(&dir.path().join("batch.jsonl"));
    assert_eq!(seen[0]["attempt"], 1, "{seen:?}");
    assert_eq!(seen[0]["batch_id"].as_str().unwrap().len(), 32, "{seen:?}");
}

#[test]
fn the_textstats_component_sums_up_a_job_exactly_as_its_module_twin() {
    let docs: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("d{i}"), "text": format!("Document {i} speaks of rivers. Rivers rise and fall {i} times!")}))
        .collect();
    let mut summaries = Vec::new();
    for path in [plugin("textstats"), component_plugin("textstats")] {
        let job = Job::new(&json!({"workers": 2, "item_list": {"items": docs, "batch_size": 3}}));
        let out = job.run(&["--plugin", path.to_str().unwrap(), "--mount", job.mnt()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let job_id = out.status["job_id"].as_str().unwrap();
        let mut summary: Value =
            serde_json::from_slice(&std::fs::read(job.path("mnt").join(job_id).join("summary.json")).unwrap()).unwrap();
        summary["job_id"] = Value::Null;
        summaries.push(summary);
    }
    assert_eq!(summaries[0]["documents"], 40, "{}", summaries[0]);
    assert_eq!(summaries[0], summaries[1]);
}

#[test]
fn a_component_without_a_grant_is_refused_at_the_call() {
    let server = Server::with(component_plugin("reach")).start();
    let reply = server.batch(r#"["http:http://127.0.0.1:9/", "emit:1"]"#);
    // The item fails with the host's refusal naming the grant; the other item's result
    // stays (the module twin without the grant is refused at load instead).
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["results"], json!([1]), "{answer}");
    assert_eq!(answer["item_errors"][0]["index"], 0, "{answer}");
    assert!(answer["item_errors"][0]["message"].as_str().unwrap().contains("`allow_http`"), "{answer}");
    let (status, logs) = Server::with(plugin("reach")).try_start().err().expect("the module is refused at load");
    assert!(logs.contains("allow_http"), "{status}: {logs}");
}

#[test]
fn a_component_of_another_world_is_refused_at_load_with_the_world_named() {
    let (status, logs) = Server::with(crate::harness::guest_file("not-a-handler.wat"))
        .try_start()
        .err()
        .expect("a component that is not a handler must not load");
    assert!(logs.contains("does not fit the world wasmbatch:handler@1.0.0"), "{status}: {logs}");
    assert!(logs.contains("no export `handle-batch` found"), "the missing export is named: {logs}");
}

/// `examples/c-component/`, built by its own `build.sh` as a C author would (wit-bindgen's
/// C bindings, clang for WASI preview 1, `wasmbatch build`), once per test run: the
/// core module clang wrote and the component made of it. `None` when wit-bindgen is
/// not installed (under `CI=true` that fails the test).
fn c_component() -> Option<&'static (std::path::PathBuf, std::path::PathBuf)> {
    static BUILT: std::sync::OnceLock<Option<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let found =
                std::process::Command::new("wit-bindgen").arg("--version").output().is_ok_and(|o| o.status.success());
            if !found {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true and wit-bindgen is not installed: the C component test needs it (scripts/env.sh \
                     ensure_wit_bindgen)"
                );
                eprintln!("wit-bindgen is not installed: C component test skipped");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let out =
                std::process::Command::new(crate::harness::workspace_root().join("examples/c-component/build.sh"))
                    .arg(dir.path())
                    .env("WASMBATCH", env!("CARGO_BIN_EXE_wasmbatch"))
                    .output()
                    .unwrap();
            assert!(
                out.status.success(),
                "examples/c-component/build.sh failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let (core, component) = (dir.path().join("sum_core.wasm"), dir.path().join("sum.wasm"));
            Some((dir, core, component))
        })
        .as_ref()
        .map(|(_, core, component)| {
            // A `'static` pair out of the triple: leaked once per test run.
            &*Box::leak(Box::new((core.clone(), component.clone())))
        })
}

#[test]
fn a_c_component_built_as_the_example_says_runs_a_job_and_reads_its_results_back() {
    let Some((core, component)) = c_component() else { return };
    let header = |path: &std::path::Path| std::fs::read(path).unwrap()[..8].to_vec();
    assert_eq!(header(core), b"\0asm\x01\0\0\0", "clang writes a core module");
    assert_eq!(header(component), b"\0asm\x0d\0\x01\0", "`wasmbatch build` makes it a component");
    let items: Vec<Value> = (1..=30).map(|i| json!(i)).collect();
    // The component file, and the core module as clang wrote it (adapted on load).
    for plugin in [component, core] {
        let job = Job::new(&json!({"workers": 2, "item_list": {"items": items, "batch_size": 4}}));
        let out = job.run(&["--plugin", plugin.to_str().unwrap(), "--mount", job.mnt()]);
        assert_eq!(out.code, 0, "{}: {}", plugin.display(), out.stderr);
        let job_id = out.status["job_id"].as_str().unwrap();
        let results = read_lines(&job.path("results.jsonl"));
        assert_eq!(results.len(), 8, "one result a batch: {results:?}");
        let sum: f64 = results.iter().map(|r| r["result"]["sum"].as_f64().unwrap()).sum();
        assert_eq!(sum, 465.0, "{results:?}");
        assert!(results.iter().all(|r| r["result"]["attempt"] == 1 && r["result"]["batch"].is_string()), "{results:?}");
        // on-job-complete read the results back through the host and wrote through WASI.
        let total = std::fs::read_to_string(job.path("mnt").join(job_id).join("total.txt")).unwrap();
        assert_eq!(total, "465 from 8 batches\n");
    }
}

#[test]
fn a_c_component_fails_with_typed_failures_behind_serve() {
    let Some((_, component)) = c_component() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with(component).args(["--mount", dir.path().to_str().unwrap()]).start();
    server.wait_for_log("the C handler's init log line", |l| {
        l["message"].as_str().is_some_and(|m| m.starts_with("c component: init with a"))
    });
    let reply = server.batch("[1, 2.5,\n 3]");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["results"][0]["sum"], 6.5, "{}", reply.body);
    let reply = server.batch(r#"[1, "two"]"#);
    assert_eq!(
        (reply.status, reply.kind().as_str(), reply.message().as_str()),
        (400, "invalid_input", "every item must be a number")
    );
    assert_eq!(server.batch("[4]").status, 200, "the host stays up");
}

#[test]
fn wasmbatch_build_refuses_what_is_not_a_module_of_the_world_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let build = |input: &std::path::Path| {
        let out = crate::harness::wasmbatch()
            .arg("build")
            .arg(input)
            .arg("-o")
            .arg(dir.path().join("out.wasm"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // An ABI v1 module and a component run as they are.
    for plugin in [plugin("noop"), component_plugin("noop")] {
        let (code, stderr) = build(&plugin);
        assert_ne!(code, Some(0), "{stderr}");
        assert!(stderr.contains("carries no component type"), "{stderr}");
    }
    assert!(!dir.path().join("out.wasm").exists(), "nothing is written");
    let missing = dir.path().join("missing.wasm");
    let (code, stderr) = build(&missing);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("cannot read") && stderr.contains("missing.wasm"), "{stderr}");
}
