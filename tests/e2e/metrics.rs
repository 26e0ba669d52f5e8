//! `/metrics`: Cortex's batch series under Cortex's names, and ours.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Server, free_port, plugin, spec_file, wasmbatch};

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[test]
fn serve_exposes_cortex_and_wasmbatch_metrics() {
    let (_spec_dir, spec) = spec_file(&json!({"job_id": "j", "api_name": "sum-api"}));
    let server = Server::with(plugin("misbehave")).args(["--job-spec", spec.to_str().unwrap()]).start();
    for body in [r#"["trap"]"#, r#"["ok"]"#, "{}", r#"["ok"]"#] {
        server.post("/", Some("job-9"), body);
    }
    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    let text = reply.body;
    let labels = r#"{api_name="sum-api",job_id="job-9"}"#;
    assert_eq!(value(&text, &format!("cortex_batch_succeeded{labels}")), Some(2.0), "{text}");
    assert_eq!(value(&text, &format!("cortex_batch_failed{labels}")), Some(2.0), "{text}");
    assert_eq!(value(&text, &format!("cortex_time_per_batch_count{labels}")), Some(2.0), "{text}");
    assert_eq!(value(&text, r#"wasmbatch_batch_failures_total{kind="trap"}"#), Some(1.0), "{text}");
    assert_eq!(value(&text, r#"wasmbatch_batch_failures_total{kind="invalid_input"}"#), Some(1.0), "{text}");
    // Compiled, or taken from the compile cache the test binary shares.
    let loads = ["compiled", "cache_hit"]
        .map(|o| value(&text, &format!(r#"wasmbatch_module_loads_total{{origin="{o}"}}"#)).unwrap_or(0.0));
    assert_eq!(loads.iter().sum::<f64>(), 1.0, "{text}");
    // The trapped instance was replaced by the next batch's; none is busy now.
    assert_eq!(value(&text, "wasmbatch_instances_alive"), Some(1.0), "{text}");
    assert_eq!(value(&text, "wasmbatch_instances_busy"), Some(0.0), "{text}");
    assert_eq!(value(&text, "wasmbatch_queue_depth"), Some(0.0), "{text}");
    assert!(value(&text, "wasmbatch_guest_memory_bytes").unwrap() > 0.0, "{text}");
    assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0, "{text}");
}

#[test]
fn run_serves_metrics_while_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    let items: Vec<&str> = std::iter::repeat_n("sleep:100", 30).collect();
    std::fs::write(&job, json!({"workers": 1, "item_list": {"items": items, "batch_size": 1}}).to_string()).unwrap();
    let port = free_port();
    // Its state and dead-letter file go to the scratch directory, not the repository.
    let mut child = wasmbatch()
        .current_dir(dir.path())
        .arg("run")
        .arg(&job)
        .args(["--progress", "off", "--no-mount", "--plugin"])
        .arg(plugin("misbehave"))
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--api-name", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        if let Ok(reply) = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call() {
            let text = reply.into_string().unwrap();
            if let Some(n) = text.lines().find_map(|l| {
                l.starts_with("cortex_batch_succeeded{api_name=\"slow\"")
                    .then(|| l.rsplit(' ').next().unwrap().to_string())
            }) {
                break n;
            }
        }
        assert!(Instant::now() < deadline, "metrics never showed a succeeded batch");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(seen.parse::<f64>().unwrap() >= 1.0);
    let _ = child.kill();
    let _ = child.wait();
}
