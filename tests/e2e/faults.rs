//! Misbehaving guests: each failure has its kind, the host stays up, and the next
//! batch on the same server succeeds.

use crate::harness::{Server, plugin};

/// Sends `command`, expects `status` and `kind`, then checks that the server still
/// handles a good batch. Returns the error message.
fn expect_failure(server: &Server, command: &str, status: u16, kind: &str) -> String {
    let reply = server.batch(&format!("[{}]", serde_json::to_string(command).unwrap()));
    assert_eq!(reply.status, status, "{command}: {}", reply.body);
    assert_eq!(reply.kind(), kind, "{command}: {}", reply.body);
    let next = server.batch(r#"["ok"]"#);
    assert_eq!(next.status, 200, "after {command}: {}", next.body);
    assert_eq!(server.get("/healthz").status, 200);
    reply.message()
}

#[test]
fn panic_is_reported_with_its_message() {
    let server = Server::with(plugin("misbehave")).start();
    let message = expect_failure(&server, "panic:the wheels came off", 500, "panic");
    assert!(message.contains("the wheels came off"), "{message}");
}

#[test]
fn trap_and_stack_overflow_are_traps() {
    let server = Server::with(plugin("misbehave")).start();
    let message = expect_failure(&server, "trap", 500, "trap");
    assert!(message.contains("unreachable"), "{message}");
    let message = expect_failure(&server, "stack", 500, "trap");
    assert!(message.contains("stack"), "{message}");
}

#[test]
fn infinite_loop_times_out() {
    let server = Server::with(plugin("misbehave")).args(["--batch-timeout", "300ms"]).start();
    let message = expect_failure(&server, "loop", 500, "timeout");
    assert!(message.contains("300ms"), "{message}");
}

#[test]
fn memory_bomb_is_out_of_memory_and_the_limit_is_per_instance() {
    let server = Server::with(plugin("misbehave")).args(["--max-memory", "64MiB"]).start();
    let message = expect_failure(&server, "oom", 500, "out_of_memory");
    assert!(message.contains("64 MiB"), "{message}");
    // Within the limit, allocation works.
    assert_eq!(server.batch(r#"["alloc:32"]"#).status, 200);
}

#[test]
fn a_batch_larger_than_guest_memory_allows_is_out_of_memory() {
    let server = Server::with(plugin("misbehave")).args(["--max-memory", "4MiB", "--max-body", "64MiB"]).start();
    let huge = format!("[\"ok\",\"{}\"]", "x".repeat(8 << 20));
    let reply = server.batch(&huge);
    assert_eq!((reply.status, reply.kind().as_str()), (500, "out_of_memory"), "{}", &reply.body);
    assert_eq!(server.batch(r#"["ok"]"#).status, 200);
}

#[test]
fn stdout_flood_is_bounded_and_does_not_fail_the_batch() {
    let server = Server::with(plugin("misbehave")).args(["--output-limit", "4KiB"]).start();
    let reply = server.batch(r#"["flood:20000"]"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let dropped = server
        .wait_for_log("about dropped output", |l| l["message"] == "guest output over the per-call limit was dropped");
    assert!(dropped["dropped_bytes"].as_u64().unwrap() > 500_000, "{dropped}");
    let printed = server.logs().iter().filter(|l| l["target"] == "guest" && l["stream"] == "stdout").count();
    assert!(printed < 200, "{printed} lines logged from a 4 KiB limit");
    assert_eq!(server.batch(r#"["ok"]"#).status, 200);
}

#[test]
fn exit_reports_the_code() {
    let server = Server::with(plugin("misbehave")).start();
    let reply = server.batch(r#"["exit:3"]"#);
    assert_eq!((reply.status, reply.kind().as_str()), (500, "exit"));
    assert_eq!(reply.json()["error"]["exit_code"], 3);
    assert_eq!(server.batch(r#"["ok"]"#).status, 200);
}

#[test]
fn guest_error_and_invalid_input_keep_their_messages() {
    let server = Server::with(plugin("misbehave")).start();
    assert_eq!(expect_failure(&server, "error:bad row 7", 500, "guest_error"), "bad row 7");
    assert_eq!(expect_failure(&server, "invalid:no such column", 400, "invalid_input"), "no such column");
    // Items that do not deserialize into the handler's type never reach it.
    let reply = server.batch("[1, 2]");
    assert_eq!((reply.status, reply.kind().as_str()), (400, "invalid_input"));
    assert!(reply.message().starts_with("item 0 does not match the handler's item type"), "{}", reply.message());
}

#[test]
fn stderr_tail_comes_with_the_failure() {
    let server = Server::with(plugin("misbehave")).start();
    let reply = server.batch(r#"["eprint:last words", "panic:gone"]"#);
    assert_eq!(reply.status, 500);
    assert!(reply.json()["error"]["stderr"].as_str().unwrap().contains("last words"), "{}", reply.body);
}
