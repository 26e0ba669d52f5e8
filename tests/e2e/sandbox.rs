//! What a guest can and cannot reach.

use serde_json::json;

use crate::harness::{Server, component_plugin, guest_file, plugin, spec_file};

/// The module and its component twin (`components`), alike.
#[test]
fn job_spec_is_visible_read_only_at_cortex_spec() {
    for guest in [plugin("misbehave"), component_plugin("misbehave")] {
        let dir = tempfile::tempdir().unwrap();
        let spec_value =
            json!({"job_id": "69b18aa8a2f2a5e1", "api_name": "sum", "kind": "BatchAPI", "config": {"k": "v"}});
        let (_spec_dir, spec) = spec_file(&spec_value);
        let server = Server::with(&guest)
            .args(["--job-spec", spec.to_str().unwrap(), "--mount", dir.path().to_str().unwrap()])
            .start();
        let reply = server.batch(r#"["copy:/cortex/spec/job.json:/mnt/seen.json"]"#);
        assert_eq!(reply.status, 200, "{}: {}", guest.display(), reply.body);
        assert_eq!(std::fs::read(dir.path().join("seen.json")).unwrap(), std::fs::read(&spec).unwrap());

        let reply = server.batch(r#"["copy:/mnt/seen.json:/cortex/spec/job.json"]"#);
        assert_eq!(reply.status, 500, "the spec must be read-only: {}: {}", guest.display(), reply.body);
        assert_eq!(std::fs::read(dir.path().join("seen.json")).unwrap(), std::fs::read(&spec).unwrap());
    }
}

#[test]
fn sum_plugin_writes_to_mnt_and_aggregates_on_job_complete() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::with(plugin("sum")).args(["--mount", dir.path().to_str().unwrap(), "--concurrency", "2"]).start();
    assert_eq!(server.post("/", Some("j1"), "[[1,2],[3,4]]").status, 200);
    assert_eq!(server.post("/", Some("j1"), "[[10],[20,0.5]]").status, 200);
    assert_eq!(server.post("/on-job-complete", Some("j1"), "job_complete").status, 200);
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("j1").join("result.json")).unwrap()).unwrap();
    assert_eq!(result["batches"], 2);
    assert_eq!(result["items"], 4);
    assert_eq!(result["total"], 40.5);
}

#[test]
fn host_files_outside_the_mounts_are_unreachable() {
    let server = Server::with(plugin("misbehave")).start();
    for path in ["/etc/passwd", "/cortex/../etc/passwd", "/cortex/spec/../../etc/passwd", "/proc/self/environ"] {
        let reply = server.batch(&format!(r#"["read:{path}"]"#));
        assert_eq!((reply.status, reply.kind().as_str()), (500, "guest_error"), "{path}: {}", reply.body);
        assert!(reply.message().starts_with(&format!("read {path}:")), "{}", reply.message());
    }
}

#[test]
fn without_a_mount_there_is_no_mnt() {
    let server = Server::with(plugin("misbehave")).start();
    let reply = server.batch(r#"["copy:/cortex/spec/job.json:/mnt/x"]"#);
    assert_eq!(reply.status, 500, "{}", reply.body);
}

#[test]
fn host_environment_is_invisible() {
    let server = Server::with(plugin("misbehave")).start();
    for name in ["HOME", "PATH", "RUST_LOG"] {
        let reply = server.batch(&format!(r#"["env:{name}"]"#));
        assert_eq!(reply.status, 200, "{name} is visible: {}", reply.body);
    }
}

#[test]
fn every_wasi_socket_call_is_refused() {
    // The guest calls sock_accept, sock_recv, sock_send and sock_shutdown on
    // descriptors 0-63 and fails the batch if any of them is not refused.
    let server = Server::with(guest_file("sockets.wat")).start();
    let reply = server.batch("[1]");
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_guest_that_imports_socket_creation_is_refused_at_load() {
    let (status, logs) = Server::with(guest_file("sock-connect.wat")).try_start().err().expect("must not start");
    assert!(status.contains("exit status: 1"), "{status}");
    assert!(logs.contains("wasi_snapshot_preview1::sock_open"), "{logs}");
}
