//! A plugin replaced while `serve` serves: SIGHUP and `--watch` swap it under load with
//! no request failed; a plugin that does not start is refused and the old one stays.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::capabilities::REACH_LOADS as GRANTS;
use crate::harness::{Server, agent, component_plugin, guest_file, plugin, reply};

/// Puts `from` at `to` whole (a copy beside it, renamed over it), as a deployment would.
pub(crate) fn install(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

fn hang_up(server: &Server) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGHUP) }, 0);
}

/// Waits (bounded) until `n` log lines say a reload ended (`plugin reloaded` or
/// `reload refused`), and returns the `n`th.
fn reload_ended(server: &Server, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ended: Vec<_> = server
            .logs()
            .into_iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("plugin reloaded") || m.starts_with("reload refused"))
            })
            .collect();
        if ended.len() >= n {
            return ended[n - 1].clone();
        }
        assert!(Instant::now() < deadline, "no reload ended ({n}):\n{}", server.all_logs_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether an answer to `["emit:1"]` is `reach`'s (results `[1]`; `noop` answers none).
fn by_reach(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["results"] == serde_json::json!([1]))
}

fn answered_by_reach(server: &Server) -> bool {
    let reply = server.batch(r#"["emit:1"]"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    by_reach(&reply.body)
}

#[test]
fn sighup_swaps_the_plugin_under_32_connections_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.wasm");
    install(&plugin("noop"), &file);
    let server = Arc::new(Server::with(&file).args(["--concurrency", "2"]).args(GRANTS).start());
    assert!(!answered_by_reach(&server));

    const CLIENTS: usize = 32;
    // Each connection keeps sending until it has had this many answers after the
    // reload was logged (and gives up, failing the test, past a bound).
    const AFTER: usize = 20;
    const BOUND: usize = 50_000;
    let (done, reloaded) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (server, done, reloaded) = (server.clone(), done.clone(), reloaded.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let (mut answers, mut after) = (Vec::new(), 0);
                while after < AFTER {
                    assert!(answers.len() < BOUND, "the reload never came");
                    let counts = reloaded.load(Ordering::SeqCst);
                    let reply = reply(
                        agent
                            .post(&server.url("/"))
                            .set("X-Cortex-Job-ID", "job-1")
                            .set("Content-Type", "application/json")
                            .send_string(r#"["emit:1"]"#),
                    );
                    answers.push((reply.status, reply.status == 200 && by_reach(&reply.body), counts));
                    after += usize::from(counts);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                answers
            })
        })
        .collect();
    // The swap, with every connection busy.
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < CLIENTS * 10 {
        assert!(Instant::now() < deadline, "the load did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    install(&plugin("reach"), &file);
    hang_up(&server);
    let line = reload_ended(&server, 1);
    assert!(line["message"].as_str().unwrap().starts_with("plugin reloaded"), "{line}");
    reloaded.store(true, Ordering::SeqCst);

    let per_client: Vec<Vec<(u16, bool, bool)>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for answers in &per_client {
        assert!(answers.iter().all(|(status, _, _)| *status == 200), "a request failed across the swap: {answers:?}");
        // Sent after the reload was logged: the new plugin's.
        assert!(answers.iter().filter(|(_, _, after)| *after).all(|(_, new, _)| *new), "{answers:?}");
        // Once the swap is made every batch starts on the new plugin: never the old
        // again after the new.
        let first_new = answers.iter().position(|(_, new, _)| *new).unwrap_or(answers.len());
        assert!(answers[first_new..].iter().all(|(_, new, _)| *new), "old after new: {answers:?}");
    }
    // The answers counted before the swap was asked for are the old plugin's.
    let old = per_client.iter().flatten().filter(|(_, new, _)| !*new).count();
    assert!(old >= CLIENTS * 10, "{old} answers by the old plugin");
    assert!(answered_by_reach(&server), "batches now start on the new plugin");
}

#[test]
fn a_plugin_that_does_not_load_or_start_is_refused_and_the_running_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.wasm");
    install(&plugin("reach"), &file);
    let server = Server::with(&file).args(GRANTS).start();
    assert!(answered_by_reach(&server));

    // Not WebAssembly at all.
    std::fs::write(dir.path().join("junk"), b"definitely not wasm").unwrap();
    install(&dir.path().join("junk"), &file);
    hang_up(&server);
    let refused = reload_ended(&server, 1);
    let message = refused["message"].as_str().unwrap();
    assert!(message.starts_with("reload refused, the running plugin stays"), "{refused}");
    assert!(message.contains("is not a valid WebAssembly module"), "{refused}");
    assert!(answered_by_reach(&server), "the running plugin still serves");

    // A component of another world: it compiles, and does not fit.
    install(&guest_file("not-a-handler.wat"), &file);
    hang_up(&server);
    let refused = reload_ended(&server, 2);
    assert!(refused["message"].as_str().unwrap().contains("does not fit the world"), "{refused}");
    assert!(answered_by_reach(&server));

    // A plugin whose first instance fails: `init` panics on request.
    let spec = dir.path().join("job.json");
    std::fs::write(&spec, r#"{"job_id": "j", "config": {"init": "fail"}}"#).unwrap();
    drop(server);
    install(&plugin("reach"), &file);
    let server = Server::with(&file).args(["--job-spec", spec.to_str().unwrap()]).args(GRANTS).start();
    install(&plugin("misbehave"), &file);
    hang_up(&server);
    let refused = reload_ended(&server, 1);
    assert!(refused["message"].as_str().unwrap().contains("the plugin failed to start"), "{refused}");
    assert!(answered_by_reach(&server));
}

#[test]
fn watch_reloads_when_the_plugin_file_changes_module_to_component() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.wasm");
    install(&plugin("noop"), &file);
    let server = Server::with(&file).args(["--watch"]).args(GRANTS).start();
    assert!(!answered_by_reach(&server));
    // A component in place of a module: another engine, the same pool.
    install(&component_plugin("reach"), &file);
    let reloaded = reload_ended(&server, 1);
    assert!(reloaded["message"].as_str().unwrap().starts_with("plugin reloaded"), "{reloaded}");
    assert_eq!(reloaded["reason"], "--watch: the plugin changed", "{reloaded}");
    assert!(answered_by_reach(&server));
}
