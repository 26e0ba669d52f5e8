//! docs/plugin-guide.md, built and run as written: its files are taken out of the page
//! (the code blocks marked `file=`), the plugin is built for wasm32-wasip1, and the
//! job-wide total it teaches is checked exact with 1, 2 and 8 workers in `run`, in the
//! operator and behind `serve`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::harness::{Server, build_plugin_crate, free_port, spec_file, workspace_root};
use crate::run::Job;

/// The guide's code blocks: (info string, text), in order.
fn blocks() -> Vec<(String, String)> {
    let page = std::fs::read_to_string(workspace_root().join("docs/plugin-guide.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let mut text = String::new();
            for inner in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
                text.push_str(inner);
                text.push('\n');
            }
            blocks.push((info.to_string(), text));
        }
    }
    blocks
}

/// The block whose info string ends with `tag`.
fn block(tag: &str) -> String {
    blocks().into_iter().find(|(info, _)| info.ends_with(tag)).unwrap_or_else(|| panic!("no block {tag}")).1
}

/// The guide's plugin, built once.
fn langstats() -> &'static Path {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BUILT
        .get_or_init(|| {
            let sdk = workspace_root().join("guest-sdk");
            let manifest = block("file=Cargo.toml")
                .replace(r#"path = "../wasmbatch/guest-sdk""#, &format!("path = {:?}", sdk.display().to_string()));
            assert!(manifest.contains(&sdk.display().to_string()), "the guide's SDK path is where the test expects it");
            let dir = tempfile::tempdir().unwrap();
            let wasm =
                build_plugin_crate(dir.path(), &[("Cargo.toml", &manifest), ("src/lib.rs", &block("file=src/lib.rs"))])
                    .unwrap_or_else(|stderr| panic!("the guide's plugin does not build:\n{stderr}"));
            (dir, wasm)
        })
        .1
}

/// A job of 200 documents (every 50th empty), 7 a batch: the documents and the words
/// the total must show.
fn big_job(workers: u64) -> (Value, usize, usize) {
    let mut items = Vec::new();
    let (mut documents, mut words) = (0, 0);
    for i in 0..200usize {
        let n = if i % 50 == 0 { 0 } else { 1 + i % 13 };
        let text = vec!["word"; n].join(" ");
        if n > 0 {
            documents += 1;
            words += n;
        }
        items.push(json!({"id": format!("doc-{i:03}"), "text": text}));
    }
    (json!({"workers": workers, "item_list": {"items": items, "batch_size": 7}}), documents, words)
}

/// `out/<job_id>/total.json` of the only job under `out`.
fn total(out: &Path) -> Value {
    let dirs: Vec<_> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "one job's parts: {dirs:?}");
    serde_json::from_slice(&std::fs::read(dirs[0].join("total.json")).unwrap()).unwrap()
}

#[test]
fn the_guides_job_gives_the_total_it_shows() {
    let job: Value = serde_json::from_str(&block("file=job.json")).unwrap();
    let job = Job::new(&job);
    let out = job.run(&["--plugin", langstats().to_str().unwrap(), "--mount", job.path("mnt").to_str().unwrap()]);
    assert_eq!(out.status["status"], "completed_with_failures", "{}", out.stderr);
    let shown: Value = serde_json::from_str(&block("output=total.json")).unwrap();
    assert_eq!(total(&job.path("mnt")), shown, "the guide shows what the plugin writes");
    let letters = job.dead_letters();
    assert_eq!(letters.len(), 1);
    assert!(letters[0]["error"]["message"].as_str().unwrap().contains("document c is empty"), "{letters:?}");
    assert_eq!(letters[0]["error"]["kind"], "items_rejected", "{letters:?}");
    assert_eq!(letters[0]["attempts"], 1, "a rejected item is not tried again: {letters:?}");
    assert_eq!(letters[0]["items"], json!([{"id": "c", "text": ""}]));
    assert_eq!(out.status["items"], json!({"succeeded": 4, "dead_lettered": 1}), "items counted as well as batches");
}

#[test]
fn the_total_is_exact_with_any_number_of_workers() {
    for workers in [1, 2, 8] {
        let (job, documents, words) = big_job(workers);
        let job = Job::new(&job);
        let out = job.run(&["--plugin", langstats().to_str().unwrap(), "--mount", job.path("mnt").to_str().unwrap()]);
        assert_eq!(out.status["status"], "completed_with_failures", "{}", out.stderr);
        let total = total(&job.path("mnt"));
        assert_eq!(
            (total["documents"].as_u64(), total["words"].as_u64()),
            (Some(documents as u64), Some(words as u64)),
            "{workers} workers"
        );
        assert_eq!(out.status["items"], json!({"succeeded": documents, "dead_lettered": 200 - documents}));
    }
}

#[test]
fn the_total_is_exact_in_the_operator_and_behind_serve() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Behind the contract: two replicas of `serve`, driven by the job service, each
    // answering some of the batches; on-job-complete (on one of them) reads the whole
    // job's results from the service.
    let port = free_port();
    let mount = tempfile::tempdir().unwrap();
    let (_spec_dir, spec) = spec_file(&json!({"api_name": "langstats-served", "config": {"min_word_len": 1}}));
    let operator_url = format!("http://127.0.0.1:{port}");
    let replicas: Vec<Server> = (0..2)
        .map(|_| {
            Server::with(langstats())
                .args(["--job-spec", spec.to_str().unwrap(), "--mount", mount.path().to_str().unwrap()])
                .args(["--concurrency", "1", "--operator-url", operator_url.as_str()])
                .start()
        })
        .collect();
    let endpoints: Vec<String> = replicas.iter().map(|r| format!("{:?}", r.url(""))).collect();
    let config = dir.path().join("apis.toml");
    std::fs::write(
        &config,
        format!(
            "[[api]]\nname = \"langstats\"\nplugin = {:?}\nmount = \"out\"\nmax_workers = 4\n\
             [[api]]\nname = \"langstats-served\"\nendpoints = [{}]\nmax_workers = 4\n",
            langstats().display().to_string(),
            endpoints.join(", ")
        ),
    )
    .unwrap();
    let operator = crate::operator::Operator::start_on(&config, &dir.path().join("data"), port);

    // In process, in the operator.
    let (job, documents, words) = big_job(4);
    let job_id = operator.submit("langstats", &job);
    let status = operator.wait_done("langstats", &job_id);
    assert_eq!(status["job_status"]["status"], "completed_with_failures", "{status}");
    let sums = total(&out);
    assert_eq!((sums["documents"].as_u64(), sums["words"].as_u64()), (Some(documents as u64), Some(words as u64)));

    // Behind the replicas.
    let job_id = operator.submit("langstats-served", &job);
    let status = operator.wait_done("langstats-served", &job_id);
    assert_eq!(status["job_status"]["status"], "completed_with_failures", "{status}");
    assert_eq!(status["job_status"]["on_job_complete"], "succeeded", "{status}");
    for replica in &replicas {
        let metrics = replica.get("/metrics").body;
        let answered = metrics
            .lines()
            .find(|l| l.starts_with("cortex_batch_succeeded{") && l.contains(&format!("job_id=\"{job_id}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(answered > 0.0, "every replica answered some of the batches:\n{metrics}");
    }
    let total = total(mount.path());
    assert_eq!((total["documents"].as_u64(), total["words"].as_u64()), (Some(documents as u64), Some(words as u64)));
}

#[test]
fn serve_without_a_job_service_that_knows_the_job_says_why_there_are_no_results() {
    let mount = tempfile::tempdir().unwrap();
    let (_spec_dir, spec) = spec_file(&json!({"api_name": "langstats", "job_id": "s1"}));
    let server = Server::with(langstats())
        .args(["--job-spec", spec.to_str().unwrap(), "--mount", mount.path().to_str().unwrap()])
        .args(["--operator-url", "http://127.0.0.1:9"])
        .start();
    let reply = server.post("/", Some("s1"), r#"[{"id":"a","text":"one two"}]"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = server.post("/on-job-complete", Some("s1"), r#"{"message":"job_complete"}"#);
    assert_eq!(reply.status, 500, "{}", reply.body);
    let message = reply.message();
    assert!(
        message.contains("reading the results of job s1 of API langstats from the job service at http://127.0.0.1:9"),
        "{message}"
    );
    assert!(!mount.path().join("s1/total.json").exists(), "no total from a part of the results");
}
