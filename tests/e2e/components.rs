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
