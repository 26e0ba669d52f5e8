//! Loading plugins: precompiled artifacts, the compile cache, ABI validation, and a
//! guest written in WAT from the ABI document alone.

use serde_json::{Value, json};

use crate::harness::{Server, guest_file, plugin, wasmbatch};
use crate::run::{Job, read_lines};

#[test]
fn compiled_artifact_is_served_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("noop.cwasm");
    let out = wasmbatch().arg("compile").arg(plugin("noop")).arg("-o").arg(&artifact).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::with(&artifact).start();
    let loaded = server.wait_for_log("plugin loaded", |l| l["message"] == "plugin loaded");
    assert_eq!(loaded["module"], "precompiled");
    assert_eq!(server.batch("[1,2,3]").status, 200);
}

#[test]
fn second_start_hits_the_compile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap().to_string();
    let first = Server::with(plugin("textstats")).args(["--cache-dir", &cache_arg]).start();
    let line = first.wait_for_log("plugin loaded", |l| l["message"] == "plugin loaded");
    assert_eq!(line["module"], "compiled");
    drop(first);
    let second = Server::with(plugin("textstats")).args(["--cache-dir", &cache_arg]).start();
    let line = second.wait_for_log("plugin loaded", |l| l["message"] == "plugin loaded");
    assert_eq!(line["module"], "cache_hit");
    let docs = r#"[{"id":"a","text":"One sentence here. And another one!"}]"#;
    assert_eq!(second.batch(docs).status, 200);
}

#[test]
fn hand_written_wat_guest_handles_batches() {
    let server = Server::with(guest_file("minimal.wat")).start();
    assert_eq!(server.batch("[1,2]").status, 200);
    server.wait_for_log("WASI stdout of the WAT guest", |l| {
        l["message"] == "minimal: handled a batch" && l["job_id"] == "job-1"
    });
    server.wait_for_log("log import of the WAT guest", |l| l["message"] == "minimal guest called");
    let reply = server.batch("[]");
    assert_eq!((reply.status, reply.kind().as_str(), reply.message().as_str()), (500, "guest_error", "empty batch"));
    // A batch larger than the initial page makes the guest grow its memory.
    let big = format!("[{}]", vec!["123456789"; 20_000].join(","));
    assert_eq!(server.batch(&big).status, 200);
}

#[test]
fn a_guest_taking_item_offsets_gets_them_from_the_hosts_one_scan() {
    // serve: the offsets come from the check every body gets; the guest emits each
    // item's text as they delimit it, so the results are exactly the items.
    let server = Server::with(guest_file("items.wat")).start();
    let reply = server.batch(r#" [ 1 , {"a": [2, "]"]},"x\"y" ,null]  "#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer["results"], json!([1, {"a": [2, "]"]}, "x\"y", null]));
    let reply = server.batch("[]");
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));

    // run: the offsets of the batches the source builds.
    let items = json!([1, {"b": "x y"}, [3], "z"]);
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": items, "batch_size": 3}}));
    let guest = guest_file("items.wat");
    let out = job.run(&["--plugin", guest.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut results: Vec<(u64, Value)> = read_lines(&job.path("results.jsonl"))
        .into_iter()
        .map(|r| (r["batch"].as_u64().unwrap(), r["result"].clone()))
        .collect();
    results.sort_by_key(|(batch, _)| *batch);
    let expected = [(0, json!(1)), (0, json!({"b": "x y"})), (0, json!([3])), (1, json!("z"))];
    assert_eq!(results, expected);
}

#[test]
fn invalid_plugins_are_refused_by_name() {
    let (status, logs) = Server::with(guest_file("no-handle.wat")).try_start().err().expect("must not start");
    assert!(status.contains("exit status: 1"), "{status}");
    assert!(logs.contains("does not export `wasmbatch_handle`"), "{logs}");

    let (_, logs) = Server::with(guest_file("abi-v2.wat")).try_start().err().expect("must not start");
    assert!(logs.contains("implements ABI version 2, but this host speaks version 1"), "{logs}");

    let out = wasmbatch().arg("compile").arg(guest_file("no-handle.wat")).arg("-o").arg("/dev/null").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wasmbatch_handle"));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let (_, logs) = Server::with(&junk).try_start().err().expect("must not start");
    assert!(logs.contains("is not a valid WebAssembly module"), "{logs}");
}

/// `tests/guests/c/sum.c`, compiled now with clang for wasm32-wasi as docs/abi.md
/// says (scripts/test.sh installs clang, lld and wasi-libc when they are missing).
fn c_guest() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = crate::harness::shared_cache().join("c-sum.wasm");
            let result = std::process::Command::new("clang")
                .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-o"])
                .arg(&out)
                .arg(guest_file("c/sum.c"))
                .output()
                .expect("clang runs (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)");
            assert!(result.status.success(), "clang failed:\n{}", String::from_utf8_lossy(&result.stderr));
            out
        })
        .clone()
}

#[test]
fn a_c_guest_built_from_the_abi_document_handles_batches() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with(c_guest()).args(["--mount", dir.path().to_str().unwrap()]).start();
    server.wait_for_log("the C guest's init log line", |l| {
        l["message"].as_str().is_some_and(|m| m.starts_with("c guest: init with a"))
    });
    let send = |body: &str, id: &str, attempt: &str| {
        ureq::post(&server.url("/"))
            .set("X-Cortex-Job-ID", "c-job")
            .set("X-Wasmbatch-Batch-ID", id)
            .set("X-Wasmbatch-Attempt", attempt)
            .send_string(body)
            .map(|r| r.status())
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(code, _) => code,
                other => panic!("{other}"),
            })
    };
    assert_eq!(send("[1, 2.5,\n 3]", "b7", "2"), 200);
    let reply = server.batch(r#"[1, "two"]"#);
    assert_eq!(
        (reply.status, reply.kind().as_str(), reply.message().as_str()),
        (400, "invalid_input", "every item must be a number")
    );
    let sums = std::fs::read_to_string(dir.path().join("c-job/sums.txt")).unwrap();
    assert_eq!(sums, "b7 2 6.5\n");
    server.wait_for_log("the C guest's stdout", |l| l["message"] == "c guest: batch b7 summed to 6.5");
}
