//! What a plugin author sees when something is slightly off: a misspelt job key, a
//! bad job file, a guest that writes to `/mnt` with nothing mounted.

use serde_json::{Value, json};

use crate::operator::Operator;
use crate::run::Job;

#[test]
fn a_misspelt_key_runs_the_job_and_is_named_once_with_the_nearest_known_key() {
    let job = Job::new(&json!({"workers": 1, "confg": {"a": 1}, "item_list": {"items": ["ok"], "batch_size": 1}}));
    let out = job.run(&["--plugin", crate::harness::plugin("misbehave").to_str().unwrap(), "--no-mount"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let hint = r#""confg": unknown key, ignored — did you mean "config"?"#;
    assert_eq!(out.stderr.matches(hint).count(), 1, "{}", out.stderr);
}

#[test]
fn a_bad_job_file_is_said_once() {
    let job = Job::new(&json!({"workers": 0, "item_list": {"items": [1], "batch_size": 1}}));
    let out = job.run(&["--plugin", crate::harness::plugin("misbehave").to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.matches("workers: must be at least 1, got 0").count(), 1, "{}", out.stderr);
}

#[test]
fn the_operator_answers_warnings_for_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apis.toml");
    std::fs::write(
        &config,
        format!("[[api]]\nname = \"m\"\nplugin = \"{}\"\n", crate::harness::plugin("misbehave").display()),
    )
    .unwrap();
    let operator = Operator::start(&config, &dir.path().join("data"));
    let job = json!({"workers": 1, "timout": 5, "item_list": {"items": ["ok"], "batch_size": 1}});
    let (status, body) = operator.request("POST", "/batch/m", Some(&job.to_string()));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["warnings"], json!([r#""timout": unknown key, ignored — did you mean "timeout"?"#]));
    let clean = json!({"workers": 1, "item_list": {"items": ["ok"], "batch_size": 1}});
    let (_, body) = operator.request("POST", "/batch/m", Some(&clean.to_string()));
    assert!(serde_json::from_str::<Value>(&body).unwrap().get("warnings").is_none(), "{body}");
}

#[test]
fn a_guest_writing_to_an_unmounted_mnt_is_told_why() {
    let job = Job::new(
        &json!({"workers": 1, "item_list": {"items": ["copy:/cortex/spec/job.json:/mnt/x"], "batch_size": 1}}),
    );
    let out = job.run(&[
        "--plugin",
        crate::harness::plugin("misbehave").to_str().unwrap(),
        "--no-mount",
        "--max-attempts",
        "1",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let letters = job.dead_letters();
    let message = letters[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("nothing is mounted at /mnt: give --mount DIR"), "{message}");

    let mounted = job.run(&[
        "--plugin",
        crate::harness::plugin("misbehave").to_str().unwrap(),
        "--mount",
        job.path("mnt").to_str().unwrap(),
    ]);
    assert_eq!(mounted.code, 0, "{}", mounted.stderr);
    assert!(job.path("mnt/x").is_file());
    assert!(mounted.stderr.contains("guests' /mnt is --mount"), "{}", mounted.stderr);
    assert!(mounted.status["mount"].as_str().unwrap().ends_with("(--mount)"), "{}", mounted.status);
    assert_eq!(out.status["mount"], "nothing mounted", "the summary says what /mnt was");
}

/// Builds a plugin crate whose `src/lib.rs` is `source`; whether it built, and
/// cargo's stderr.
///
/// Each crate gets a name of its own. Cargo hashes a root package by its path
/// relative to its workspace, the same in every temporary directory, so crates of
/// one name share a fingerprint: a source written while another test's build of
/// that name was running is older than the fingerprint that build leaves, and
/// counts as already built, whether it compiles or not.
fn build_plugin_source(source: &str) -> (bool, String) {
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("author-{}-{}", std::process::id(), BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let root = crate::harness::workspace_root();
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\nwasmbatch-guest = {{ path = {:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n",
        root.join("guest-sdk").display().to_string()
    );
    let dir = tempfile::tempdir().unwrap();
    match crate::harness::build_plugin_crate(dir.path(), &[("Cargo.toml", &manifest), ("src/lib.rs", source)]) {
        Ok(_) => (true, String::new()),
        Err(stderr) => (false, stderr),
    }
}

#[test]
fn a_handler_with_a_wrong_signature_is_a_compile_error_listing_the_accepted_shapes() {
    let (built, stderr) = build_plugin_source(
        "use wasmbatch_guest::{Context, Result};\n\n#[wasmbatch_guest::handler]\n\
         fn handle(items: Vec<u32>, ctx: &Context) -> Result<()> {\n    let _ = (items, ctx);\n    Ok(())\n}\n",
    );
    assert!(!built, "a handler taking its items before its context must not build");
    assert!(stderr.contains("is not a batch handler"), "{stderr}");
    assert!(stderr.contains("fn(ctx: &Context, items: Vec<T>) -> Result<O>"), "{stderr}");

    let (built, stderr) = build_plugin_source(
        "use wasmbatch_guest::{Context, JobComplete, Result};\n\n#[wasmbatch_guest::handler]\n\
         fn handle(_: &Context, _: Vec<u32>) -> Result<()> {\n    Ok(())\n}\n\n#[wasmbatch_guest::on_job_complete]\n\
         fn done(_: &Context) -> Result<()> {\n    Ok(())\n}\n",
    );
    assert!(!built, "an on-job-complete hook without its argument must not build");
    assert!(stderr.contains("is not an on-job-complete hook"), "{stderr}");
}

#[test]
fn a_hook_whose_state_is_not_what_init_returns_does_not_compile() {
    let plugin = |handler_state: &str| {
        format!(
            "use wasmbatch_guest::{{Context, JobComplete, Result}};\n\n\
             pub struct State {{ seen: u64 }}\n\n\
             #[wasmbatch_guest::init]\nfn init(_: &Context) -> Result<State> {{\n    Ok(State {{ seen: 0 }})\n}}\n\n\
             #[wasmbatch_guest::handler]\nfn handle(_: &Context, state: &mut {handler_state}, items: Vec<u32>) -> Result<()> {{\n    \
             let _ = (state, items);\n    Ok(())\n}}\n\n\
             #[wasmbatch_guest::on_job_complete]\nfn done(_: &Context, state: &mut State, _: &JobComplete) -> Result<()> {{\n    \
             state.seen += 1;\n    Ok(())\n}}\n"
        )
    };
    let (built, stderr) = build_plugin_source(&plugin("State"));
    assert!(built, "the same state builds:\n{stderr}");
    let (built, stderr) = build_plugin_source(&plugin("u64"));
    assert!(!built, "a handler taking `&mut u64` while init returns State must not build");
    assert!(stderr.contains("this hook takes `&mut u64`, but `#[init]` returns `Result<State>`"), "{stderr}");
}

/// A `classify` job of `n` items, every tenth without a score: the labels expected.
fn classify_job(n: usize, workers: usize, then: Option<&str>) -> (Value, u64, u64, u64) {
    let (mut low, mut high, mut rejected) = (0, 0, 0);
    let items: Vec<Value> = (0..n)
        .map(|i| {
            if i % 10 == 3 {
                rejected += 1;
                return json!({"id": format!("i{i}")});
            }
            let score = (i % 7) as f64;
            if score < 2.0 {
                low += 1
            } else {
                high += 1
            }
            json!({"id": format!("i{i}"), "score": score})
        })
        .collect();
    let mut config = json!({"bands": [{"label": "low", "below": 2}, {"label": "high"}]});
    if let Some(api) = then {
        config["then"] = json!(api);
    }
    (json!({"workers": workers, "config": config, "item_list": {"items": items, "batch_size": 6}}), low, high, rejected)
}

#[test]
fn the_classify_example_counts_its_labels_exactly_and_rejects_what_has_no_score() {
    for workers in [1, 3] {
        let (job, low, high, rejected) = classify_job(90, workers, None);
        let job = Job::new(&job);
        let out = job.in_process("classify", &["--recycle-after", "3"]);
        assert_eq!(out.status["status"], "completed_with_failures", "{}", out.stderr);
        let job_id = out.status["job_id"].as_str().unwrap();
        let labels: Value =
            serde_json::from_slice(&std::fs::read(job.path("mnt").join(job_id).join("labels.json")).unwrap()).unwrap();
        assert_eq!(labels, json!({"low": low, "high": high}), "{workers} workers");
        let letters = job.dead_letters();
        assert_eq!(letters.len() as u64, rejected, "{letters:?}");
        assert!(letters.iter().all(|l| l["error"]["kind"] == "items_rejected" && l["attempts"] == 1), "{letters:?}");
    }
}

#[test]
fn the_classify_example_chains_its_counts_to_the_next_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apis.toml");
    std::fs::write(
        &config,
        format!(
            "[[api]]\nname = \"classify\"\nplugin = {:?}\nmay_submit_to = [\"noop\"]\n\
             [[api]]\nname = \"noop\"\nplugin = {:?}\n",
            crate::harness::plugin("classify").display().to_string(),
            crate::harness::plugin("noop").display().to_string()
        ),
    )
    .unwrap();
    let operator = Operator::start(&config, &dir.path().join("data"));
    let (job, low, high, rejected) = classify_job(60, 2, Some("noop"));
    let job_id = operator.submit("classify", &job);
    let status = operator.wait_done("classify", &job_id);
    assert_eq!(status["job_status"]["on_job_complete"], "succeeded", "{status}");
    // Items counted beside batches, in the job API and in `get`.
    assert_eq!(status["metrics"]["items"], json!({"succeeded": low + high, "dead_lettered": rejected}), "{status}");
    let get =
        crate::harness::wasmbatch().args(["get", "classify", &job_id, "--operator", &operator.url]).output().unwrap();
    let text = String::from_utf8_lossy(&get.stdout);
    assert!(get.status.success(), "{text}");
    let stats = format!("item stats\nsucceeded   dead-lettered\n{:<12}{rejected}\n", low + high);
    assert!(text.contains(&stats), "{text}");
    let (code, body) = operator.request("GET", "/batch/noop/jobs", None);
    assert_eq!(code, 200, "{body}");
    let jobs: Value = serde_json::from_str(&body).unwrap();
    let child = jobs["jobs"][0]["job_id"].as_str().expect("a job chained to noop").to_string();
    let done = operator.wait_done("noop", &child);
    assert_eq!(done["job_status"]["status"], "succeeded", "{done}");
    // One item per label: the counts.
    assert_eq!(done["job_status"]["total_batch_count"], 1, "{done}");
}
