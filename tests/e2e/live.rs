//! The operator changed and watched while it runs: a configuration reload under load
//! (nothing dropped or run twice, running jobs keep their plugin version), a resume on
//! the version a job started with, the dashboard's reads and its login, and the page
//! itself driven in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{plugin, wasmbatch, workspace_root};
use crate::operator::{Operator, error_of};
use crate::reload::install;

/// The reach plugin's grants, as the config file writes them.
const REACH_GRANTS: &str = "allow_http = [\"http://127.0.0.1:1\"]\nallow_read = [\"file:///nowhere/\"]\n\
                            allow_write = [\"file:///nowhere/\"]\n";

/// An API `name` running the plugin file `file`, with `extra` settings.
fn api(name: &str, file: &Path, extra: &str) -> String {
    format!("[[api]]\nname = \"{name}\"\nplugin = \"{}\"\nmax_workers = 4\n{REACH_GRANTS}{extra}\n", file.display())
}

/// A job's results, `(batch, result)` each, in the order written.
fn results(operator: &Operator, api: &str, job_id: &str) -> Vec<(u64, Value)> {
    let (status, body) = operator.request("GET", &format!("/batch/{api}/jobs/{job_id}/results"), None);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["batch"].as_u64().unwrap(), v["result"].clone())
        })
        .collect()
}

/// The values of a job's results.
fn values(results: &[(u64, Value)]) -> Vec<Value> {
    results.iter().map(|(_, v)| v.clone()).collect()
}

fn job(items: usize, item: &str, workers: usize) -> Value {
    json!({"workers": workers, "item_list": {"items": vec![item; items], "batch_size": 1}})
}

fn succeeded(answer: &Value) -> u64 {
    answer["metrics"]["succeeded"].as_u64().unwrap()
}

/// Waits (bounded) until the job has `n` batches succeeded.
fn wait_progress(operator: &Operator, api: &str, job_id: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while succeeded(&operator.status(api, job_id)) < n {
        assert!(Instant::now() < deadline, "job {job_id} did not reach {n} batches");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn reload(operator: &Operator) -> (u16, Value) {
    let (status, body) = operator.request("POST", "/admin/reload", None);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_reload_under_load_drops_and_duplicates_nothing_and_running_jobs_keep_their_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let (work, config) = (dir.path().join("work.wasm"), dir.path().join("apis.toml"));
    install(&plugin("reach"), &work);
    let retired = dir.path().join("old.wasm");
    install(&plugin("misbehave"), &retired);
    let first =
        format!("max_workers = 6\nmax_running_jobs = 8\n{}{}", api("work", &work, ""), api("old", &retired, ""));
    std::fs::write(&config, &first).unwrap();
    let operator = Operator::start(&config, &dir.path().join("data"));

    // A long job on the first plugin (reach: each item emits 1), and one on the API to
    // be removed.
    const BIG: usize = 100_000;
    let big = operator.submit("work", &job(BIG, "emit:1", 2));
    let old = operator.submit("old", &job(40, "sleep:25", 1));
    wait_progress(&operator, "work", &big, 2_000);

    // New jobs every 100 ms throughout, each of 4 items emitting 2 (reach) or
    // nothing (noop).
    let stop = Arc::new(AtomicBool::new(false));
    let submitted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let submitter = {
        let (stop, submitted, url) = (stop.clone(), submitted.clone(), operator.url.clone());
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
            for _ in 0..600 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let answer = agent.post(&format!("{url}/batch/work")).send_string(&job(4, "emit:2", 1).to_string());
                let spec: Value = answer.expect("a submission during the reload is accepted").into_json().unwrap();
                submitted.lock().unwrap().push((spec["job_id"].as_str().unwrap().to_string(), Instant::now()));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // The second configuration: `work` runs noop, `old` is gone, `fresh` is new.
    let fresh = dir.path().join("fresh.wasm");
    install(&plugin("noop"), &fresh);
    install(&plugin("noop"), &work);
    let second =
        format!("max_workers = 6\nmax_running_jobs = 8\n{}{}", api("work", &work, ""), api("fresh", &fresh, ""));
    std::fs::write(&config, &second).unwrap();
    let asked = Instant::now();
    let (status, answer) = reload(&operator);
    let reloaded = Instant::now();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], json!(["work"]), "{answer}");
    assert_eq!(answer["added"], json!(["fresh"]), "{answer}");
    assert_eq!(answer["removed"], json!(["old"]), "{answer}");
    assert_eq!(answer["restart_needed"], json!([]), "{answer}");

    // A removed API takes no new job, and its running job goes on, readable.
    let refused = error_of(&operator.request("POST", "/batch/old", Some(&job(1, "ok", 1).to_string())));
    assert_eq!((refused.0, refused.1.as_str()), (400, "resources.api_not_deployed"), "{refused:?}");
    assert_eq!(operator.wait_done("old", &old)["job_status"]["status"], "succeeded");

    // A configuration with errors: refused whole, with every problem, and nothing
    // changes. Through `wasmbatch reload`, as an operator would.
    std::fs::write(
        &config,
        format!("{}{}", api("work", &dir.path().join("missing.wasm"), ""), api("fresh", &fresh, "max_attempts = 0")),
    )
    .unwrap();
    let out = wasmbatch().args(["reload", "--operator", &operator.url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config_invalid") || stderr.contains("not reloaded"), "{stderr}");
    assert!(stderr.contains("max_attempts"), "every problem is named: {stderr}");
    let (status, refused) = reload(&operator);
    assert_eq!((status, refused["kind"].as_str()), (400, Some("config_invalid")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("the running one stays"), "{refused}");

    // Then SIGHUP, with a valid file again: `late` appears.
    let late = dir.path().join("late.wasm");
    install(&plugin("noop"), &late);
    std::fs::write(&config, format!("{second}{}", api("late", &late, ""))).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(operator.pid(), libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !operator.logs.lock().unwrap().iter().any(|l| l.contains("configuration reloaded") && l.contains("late")) {
        assert!(Instant::now() < deadline, "no reload after SIGHUP:\n{}", operator.logs.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let on_late = operator.submit("late", &job(3, "x", 1));
    assert_eq!(operator.wait_done("late", &on_late)["job_status"]["status"], "succeeded");

    // The long job ends on its own plugin, with exact counts.
    let done = operator.wait_done("work", &big);
    stop.store(true, Ordering::Relaxed);
    submitter.join().unwrap();
    assert_eq!(done["job_status"]["status"], "succeeded", "{done}");
    assert_eq!(succeeded(&done), BIG as u64);
    assert_eq!(done["job_status"]["dead_lettered_batch_count"], 0);
    let lines = results(&operator, "work", &big);
    assert_eq!(lines.len(), BIG, "every batch's result once: the job ran on reach to its end");
    let batches: std::collections::BTreeSet<u64> = lines.iter().map(|(b, _)| *b).collect();
    assert_eq!((batches.len(), batches.last()), (BIG, Some(&(BIG as u64 - 1))), "each batch once");
    assert!(lines.iter().all(|(_, v)| *v == json!(1)), "{:?}", lines.iter().find(|(_, v)| *v != json!(1)));

    // Every job submitted meanwhile succeeded, on the plugin of when it was submitted.
    let submitted = submitted.lock().unwrap().clone();
    let (mut before, mut after) = (0, 0);
    for (job_id, answered) in &submitted {
        let status = operator.wait_done("work", job_id);
        assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
        assert_eq!(succeeded(&status), 4);
        let lines = values(&results(&operator, "work", job_id));
        if *answered < asked {
            assert_eq!(lines, vec![json!(2); 4], "job {job_id} was submitted before the reload");
            before += 1;
        } else if *answered > reloaded {
            assert!(lines.is_empty(), "job {job_id} was submitted after the reload: {lines:?}");
            after += 1;
        } else {
            assert!(lines.is_empty() || lines == vec![json!(2); 4], "one version a job: {lines:?}");
        }
    }
    assert!(before >= 3 && after >= 3, "jobs on both sides of the reload: {before} before, {after} after");

    // Two versions kept, by content.
    let kept = std::fs::read_dir(dir.path().join("data/plugins")).unwrap().count();
    assert!(kept >= 3, "reach, misbehave and noop are kept: {kept}");
}

#[test]
fn a_resumed_job_runs_the_plugin_it_started_with_or_says_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let (work, config, data) = (dir.path().join("work.wasm"), dir.path().join("apis.toml"), dir.path().join("data"));
    install(&plugin("reach"), &work);
    std::fs::write(&config, api("work", &work, "")).unwrap();
    const N: usize = 30_000;
    let job_id = {
        let operator = Operator::start(&config, &data);
        let job_id = operator.submit("work", &job(N, "emit:1", 2));
        wait_progress(&operator, "work", &job_id, 1_000);
        operator.kill();
        job_id
    };
    let done = succeeded(&{
        // The configuration now names another plugin; and the kept copy is gone.
        install(&plugin("noop"), &work);
        let kept: Vec<PathBuf> = std::fs::read_dir(data.join("plugins")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        let aside = dir.path().join("aside.wasm");
        std::fs::rename(&kept[0], &aside).unwrap();
        let operator = Operator::start(&config, &data);
        let status = operator.status("work", &job_id);
        let error = status["job_status"]["error"].as_str().unwrap_or_default().to_string();
        assert!(error.starts_with("cannot resume: it runs plugin version "), "{status}");
        assert!(error.contains("cannot be read"), "{error}");
        assert_eq!(status["job_status"]["status"], "running", "it stays as it is: {status}");
        operator.kill();
        std::fs::rename(&aside, &kept[0]).unwrap();
        status
    });
    assert!(done < N as u64, "the job was cut short ({done} of {N})");
    // With its plugin back, the job resumes on it, not on the configured one.
    let operator = Operator::start(&config, &data);
    let status = operator.wait_done("work", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!(succeeded(&status), N as u64);
    assert!(operator.logs.lock().unwrap().iter().any(|l| l.contains("\"resuming\"")));
    let lines = results(&operator, "work", &job_id);
    let batches: std::collections::BTreeSet<u64> = lines.iter().map(|(b, _)| *b).collect();
    assert_eq!(batches.len(), N, "every batch has its result (at least once: those in flight at the kill ran again)");
    assert!(lines.iter().all(|(_, v)| *v == json!(1)), "every result is reach's, none noop's");
    let fresh = operator.submit("work", &job(5, "emit:1", 1));
    operator.wait_done("work", &fresh);
    assert!(results(&operator, "work", &fresh).is_empty(), "a new job runs the configured plugin (noop)");
}

/// An operator with a token file, hosting `sum` and `misbehave`.
fn guarded(dir: &Path, token: &str) -> Operator {
    std::fs::write(dir.join("tokens"), format!("{token}\n")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let config = format!(
        "[[api]]\nname = \"sum\"\nplugin = \"{}\"\nmount = \"out\"\n\
         [[api]]\nname = \"misbehave\"\nplugin = \"{}\"\nmax_attempts = 1\n",
        plugin("sum").display(),
        plugin("misbehave").display()
    );
    std::fs::write(dir.join("apis.toml"), config).unwrap();
    let tokens = dir.join("tokens");
    Operator::start_with(&dir.join("apis.toml"), &dir.join("data"), &["--token-file", tokens.to_str().unwrap()])
}

fn raw(operator: &Operator, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, String) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).redirects(0).build();
    let mut request = agent.request(method, &format!("{}{path}", operator.url));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    match result {
        Ok(r) => {
            let cookie = r.header("set-cookie").map(str::to_owned);
            (r.status(), cookie.unwrap_or_else(|| r.into_string().unwrap()))
        }
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

#[test]
fn the_dashboard_is_behind_the_tokens_and_its_cookie_cannot_be_used_from_another_site() {
    let dir = tempfile::tempdir().unwrap();
    let token = "dashboard-token-0123456789";
    let operator = guarded(dir.path(), token);
    // The page is open (it holds no data); its data is not.
    let (status, page) = raw(&operator, "GET", "/ui/", &[], None);
    assert_eq!(status, 200);
    assert!(page.contains("/ui/app.js") && !page.contains("http://") && !page.contains("https://"), "no CDN");
    assert_eq!(raw(&operator, "GET", "/", &[], None).0, 303);
    for path in ["/apis", "/jobs", "/batch/sum/jobs/x/timeline"] {
        assert_eq!(raw(&operator, "GET", path, &[], None).0, 401, "{path}");
    }
    assert_eq!(raw(&operator, "POST", "/admin/reload", &[], None).0, 401);
    // A wrong token logs no one in; the right one gets the cookie.
    let wrong = raw(&operator, "POST", "/ui/login", &[], Some(r#"{"token":"dashboard-token-012345678"}"#));
    assert_eq!(wrong.0, 401, "{wrong:?}");
    assert_eq!(raw(&operator, "POST", "/ui/login", &[], Some("not json")).0, 400);
    let (status, set_cookie) = raw(&operator, "POST", "/ui/login", &[], Some(&json!({ "token": token }).to_string()));
    assert_eq!(status, 200);
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains(token), "the cookie does not carry the token as written: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let (status, apis) = raw(&operator, "GET", "/apis", &[("Cookie", &cookie)], None);
    assert_eq!(status, 200, "{apis}");
    let apis: Value = serde_json::from_str(&apis).unwrap();
    assert_eq!(apis["apis"][1]["name"], "sum");
    assert_eq!(apis["apis"][1]["version"].as_str().unwrap().len(), 64, "the plugin's content hash");
    // A change with only the cookie (a form of another site) is refused; the page's
    // header lets it through.
    let forged = raw(
        &operator,
        "POST",
        "/batch/sum",
        &[("Cookie", &cookie)],
        Some(r#"{"workers":1,"item_list":{"items":[1],"batch_size":1}}"#),
    );
    assert_eq!(forged.0, 401, "{forged:?}");
    assert!(forged.1.contains("X-Wasmbatch-UI"), "{forged:?}");
    let (status, _) = raw(
        &operator,
        "POST",
        "/batch/sum",
        &[("Cookie", &cookie), ("X-Wasmbatch-UI", "1")],
        Some(r#"{"workers":1,"item_list":{"items":[1],"batch_size":1}}"#),
    );
    assert_eq!(status, 200);
    // A cookie with a wrong token, or not hex, is no way in.
    for bad in ["wasmbatch_session=00", "wasmbatch_session=zz", "wasmbatch_session="] {
        assert_eq!(raw(&operator, "GET", "/apis", &[("Cookie", bad)], None).0, 401, "{bad}");
    }
    // Bad queries get precise errors.
    let operator = operator.with_token(token);
    for (path, says) in [
        ("/jobs?status=finished", "\"finished\" is not one of"),
        ("/jobs?limit=100000", "limit: a whole number from 0 to 500"),
        ("/jobs?offset=-1", "offset"),
        ("/jobs?api=nobody", "nobody"),
    ] {
        let (status, kind, message) = error_of(&operator.request("GET", path, None));
        assert_eq!(status, 400, "{path}: {message}");
        assert!(message.contains(says), "{path}: {kind} {message}");
    }
}

#[test]
fn the_dashboard_pages_jobs_and_draws_a_job_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let token = "dashboard-token-0123456789";
    let operator = guarded(dir.path(), token).with_token(token);
    let mut ids = Vec::new();
    for i in 0..7 {
        let items: Vec<Vec<u64>> = (0..(10 * (i + 1))).map(|n| vec![n]).collect();
        let spec = json!({"workers": 2, "item_list": {"items": items, "batch_size": 2}});
        ids.push(operator.submit("sum", &spec));
    }
    let failing = operator.submit(
        "misbehave",
        &json!({"workers": 1, "item_list": {"items": ["ok", "error:no <script>"], "batch_size": 1}}),
    );
    for id in &ids {
        operator.wait_done("sum", id);
    }
    operator.wait_done("misbehave", &failing);
    let page = |query: &str| -> Value {
        let (status, body) = operator.request("GET", &format!("/jobs?{query}"), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let first = page("limit=3");
    assert_eq!(first["total"], 8);
    let listed: Vec<&str> =
        first["jobs"].as_array().unwrap().iter().map(|j| j["job_status"]["job_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [failing.as_str(), &ids[6], &ids[5]], "newest first");
    let last = page("limit=3&offset=6");
    assert_eq!(last["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(page("api=sum&status=succeeded")["total"], 7);
    assert_eq!(page("status=completed_with_failures")["total"], 1);
    assert_eq!(page("status=pending,running")["total"], 0);
    assert_eq!(first["jobs"][1]["metrics"]["succeeded"], 35);

    let (status, timeline) = operator.request("GET", &format!("/batch/sum/jobs/{}/timeline", ids[6]), None);
    assert_eq!(status, 200, "{timeline}");
    let timeline: Value = serde_json::from_str(&timeline).unwrap();
    let points = timeline["points"].as_array().unwrap();
    let total: u64 = points.iter().map(|p| p["succeeded"].as_u64().unwrap()).sum();
    assert_eq!(total, 35, "every batch in the chart: {timeline}");
    assert!(points.iter().any(|p| p["p50"].as_f64().is_some()), "{timeline}");
    let (_, letters) = operator.request("GET", &format!("/batch/misbehave/jobs/{failing}/dead-letters/summary"), None);
    let letters: Value = serde_json::from_str(&letters).unwrap();
    assert_eq!(letters["total"], 1);
    assert_eq!(letters["dead_letters"][0]["head"], r#"["error:no <script>"]"#);
    assert!(letters["dead_letters"][0]["message"].as_str().unwrap().contains("no <script>"));
    let (status, _) = operator.request("GET", &format!("/batch/sum/jobs/{failing}/timeline"), None);
    assert_eq!(status, 400, "a job is found only under its own API");
}

/// Whether headless Chromium, its driver and Selenium are here; under `CI=true` their
/// absence fails the test.
fn browser_premise() -> bool {
    let chromium = Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    let selenium = Command::new("python3").args(["-c", "import selenium"]).status().is_ok_and(|s| s.success());
    if chromium && selenium {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and no browser: the dashboard test needs Debian's chromium and chromium-driver, and selenium \
         (scripts/env.sh ensure_browser)"
    );
    eprintln!("skipped: no chromium, chromium-driver or selenium here");
    false
}

#[test]
fn the_dashboard_in_a_real_browser_watches_stops_and_retries() {
    if !browser_premise() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = "browser-token-0123456789";
    let operator = guarded(dir.path(), token);
    // Screenshots go to docs/img when asked (`WASMBATCH_SCREENSHOTS=1`), else aside.
    let shots = if std::env::var("WASMBATCH_SCREENSHOTS").is_ok() {
        workspace_root().join("docs/img")
    } else {
        dir.path().join("shots")
    };
    std::fs::create_dir_all(&shots).unwrap();
    let script = workspace_root().join("tests/browser/dashboard.py");
    let out = Command::new("python3").arg(&script).args([&operator.url, token]).arg(&shots).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- operator ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        operator.logs.lock().unwrap().join("\n")
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["bar"], json!({"succeeded": "100", "failed": "0", "total": "100"}), "{seen}");
    assert_eq!(seen["stopped"], "stopped", "{seen}");
    assert_eq!(seen["retry"], 2, "the re-run has the two dead letters: {seen}");
    assert_eq!(seen["escaped"], true, "{seen}");
    assert!(seen["chart_bars"].as_u64().unwrap() >= 3, "{seen}");
    assert_eq!(seen["chart_lines"], 3, "p50, p90 and p99: {seen}");
    assert!(seen["reload"].as_str().unwrap().contains("configuration reloaded"), "{seen}");
    for name in ["dashboard-jobs", "dashboard-job", "dashboard-stop", "dashboard-dead-letters"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}.png");
    }
}
