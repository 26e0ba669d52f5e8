//! The trust boundary, attacked from outside: a client of the job API without a token
//! (or with a wrong, malformed or oversized one), a job naming inputs outside its
//! API's `allow_inputs` in every spelling, a guest reaching for objects outside its
//! grants through traversal, encodings and links, and TLS where it must hold (the
//! operator's listener; object storage, guests' calls and the broker in `tls_e2e`).

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{plugin, wasmbatch};
use crate::operator::{Operator, error_of};
use crate::run::{Job, plugin_path, read_lines};
use crate::tls::Pki;

const TOKEN: &str = "first-token-0123456789abcdef";
const OTHER_TOKEN: &str = "second-token-ZYXWVUTSRQ";

/// A scratch place with a config hosting `sum` (mounted on `out/`), `extra` added.
fn place(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let config = format!(
        "max_workers = 2\n[[api]]\nname = \"sum\"\nplugin = \"{}\"\nmount = \"out\"\n{extra}",
        plugin("sum").display()
    );
    std::fs::write(dir.path().join("apis.toml"), config).unwrap();
    std::fs::write(dir.path().join("tokens"), format!("# who may call\n{TOKEN}\n\n  {OTHER_TOKEN}  \n")).unwrap();
    dir
}

/// An operator of `dir` (see [`place`]) with its token file, and `extra` arguments.
fn guarded(dir: &tempfile::TempDir, extra: &[&str]) -> Operator {
    let tokens = dir.path().join("tokens").display().to_string();
    let mut args = vec!["--token-file", tokens.as_str()];
    args.extend_from_slice(extra);
    Operator::start_with(&dir.path().join("apis.toml"), &dir.path().join("data"), &args)
}

/// An answer: status, `WWW-Authenticate`, body.
fn call(url: &str, method: &str, path: &str, authorization: Option<&str>, body: Option<&str>) -> (u16, String, String) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let mut request = agent.request(method, &format!("{url}{path}"));
    if let Some(value) = authorization {
        request = request.set("Authorization", value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let answer = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let challenge = answer.header("WWW-Authenticate").unwrap_or_default().to_string();
    (answer.status(), challenge, answer.into_string().unwrap())
}

/// Sends raw bytes as a request and returns the answer's status line.
fn raw(url: &str, request: &[u8]) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string()
}

const ITEMS: &str = r#"{"workers": 1, "item_list": {"items": [[1, 2], [3]], "batch_size": 1}}"#;

#[test]
fn every_route_but_healthz_needs_a_valid_token() {
    let dir = place("");
    let operator = guarded(&dir, &[]);
    let url = operator.url.clone();
    let routes: &[(&str, &str, Option<&str>)] = &[
        ("POST", "/batch/sum", Some(ITEMS)),
        ("POST", "/batch/sum?dryRun=true", Some(ITEMS)),
        ("GET", "/batch/sum?jobID=x", None),
        ("DELETE", "/batch/sum?jobID=x", None),
        ("GET", "/batch/sum/jobs", None),
        ("GET", "/batch/sum/jobs/x/dead-letters", None),
        ("GET", "/batch/sum/jobs/x/results", None),
        ("POST", "/batch/sum/jobs/x/dead-letters/retry", Some("")),
        // No API and no route is told apart from a real one before the token.
        ("GET", "/batch/not-an-api?jobID=x", None),
        ("GET", "/no/such/route", None),
    ];
    let wrong = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}x");
    let huge = format!("Bearer {}", "A".repeat(8 << 10));
    let basic = format!("Basic {TOKEN}");
    let bare = TOKEN.to_string();
    let two = format!("Bearer {TOKEN} {OTHER_TOKEN}");
    for (method, path, body) in routes {
        for (auth, error) in [
            (None, None),
            (Some(wrong.as_str()), Some("invalid_token")),
            (Some(longer.as_str()), Some("invalid_token")),
            (Some("Bearer"), Some("invalid_request")),
            (Some(basic.as_str()), Some("invalid_request")),
            (Some(bare.as_str()), Some("invalid_request")),
            (Some(two.as_str()), Some("invalid_request")),
            (Some(huge.as_str()), Some("invalid_request")),
        ] {
            let (status, challenge, text) = call(&url, method, path, auth, *body);
            assert_eq!(status, 401, "{method} {path} with {:?}: {text}", auth.map(|a| &a[..a.len().min(40)]));
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["kind"], "unauthorized", "{text}");
            assert!(challenge.starts_with("Bearer realm=\"wasmbatch\""), "{challenge}");
            if let Some(error) = error {
                assert!(challenge.contains(error), "{method} {path}: {challenge}");
            }
            assert!(!text.contains(TOKEN) && !text.contains(OTHER_TOKEN), "a token is echoed: {text}");
        }
    }
    // Two Authorization headers, one of them right; a header that is not UTF-8.
    let status = raw(
        &url,
        format!("GET /batch/sum/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nAuthorization: Bearer nope-nope-nope-nope\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(status.contains(" 401 "), "{status}");
    let binary = b"GET /batch/sum/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd-not-utf8-token\r\nConnection: close\r\n\r\n";
    assert!(raw(&url, binary).contains(" 401 "));

    // What stays open: /healthz, and /metrics without --metrics-auth.
    assert_eq!(call(&url, "GET", "/healthz", None, None).0, 200);
    assert_eq!(call(&url, "GET", "/metrics", None, None).0, 200);

    // Either token works, with any case of the scheme and spaces around.
    let good = format!("Bearer {TOKEN}");
    let (status, _, text) = call(&url, "POST", "/batch/sum", Some(&good), Some(ITEMS));
    assert_eq!(status, 200, "{text}");
    let job_id = serde_json::from_str::<Value>(&text).unwrap()["job_id"].as_str().unwrap().to_string();
    let other = format!("bearer   {OTHER_TOKEN}  ");
    let (status, _, text) = call(&url, "GET", &format!("/batch/sum?jobID={job_id}"), Some(&other), None);
    assert_eq!(status, 200, "{text}");
    // Tokens are never logged, even those that were refused.
    let logs = operator.logs.lock().unwrap().join("\n");
    assert!(!logs.contains(TOKEN) && !logs.contains(OTHER_TOKEN) && !logs.contains("AAAAAAAA"), "{logs}");
}

#[test]
fn metrics_auth_closes_metrics_and_an_open_operator_warns() {
    let dir = place("");
    let closed = guarded(&dir, &["--metrics-auth"]);
    assert_eq!(call(&closed.url, "GET", "/metrics", None, None).0, 401);
    assert_eq!(call(&closed.url, "GET", "/metrics", Some(&format!("Bearer {TOKEN}")), None).0, 200);
    assert_eq!(call(&closed.url, "GET", "/healthz", None, None).0, 200);
    drop(closed);
    let open = Operator::start(&dir.path().join("apis.toml"), &dir.path().join("data2"));
    let logs = open.logs.lock().unwrap().join("\n");
    assert!(logs.contains("the job API is open: no --token-file"), "{logs}");
    assert_eq!(call(&open.url, "GET", "/batch/sum/jobs", None, None).0, 200);
}

#[test]
fn a_token_file_that_cannot_protect_anything_stops_the_start() {
    let dir = place("");
    for (text, expected) in [("# only comments\n", "holds no token"), ("short\n", "line 1")] {
        std::fs::write(dir.path().join("bad-tokens"), text).unwrap();
        let out = wasmbatch()
            .args(["operator", "--port", "0", "--config"])
            .arg(dir.path().join("apis.toml"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--token-file")
            .arg(dir.path().join("bad-tokens"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Runs the command line against an operator; (exit code, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = wasmbatch()
        .args(args)
        .env_remove("WASMBATCH_TOKEN")
        .env_remove("WASMBATCH_CA_FILE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_command_line_sends_its_token_over_https_trusting_its_ca_file() {
    let pki = Pki::new();
    let dir = place("");
    let operator =
        guarded(&dir, &["--tls-cert", pki.cert().to_str().unwrap(), "--tls-key", pki.key().to_str().unwrap()]);
    let https = operator.url.replace("http://", "https://").replace("127.0.0.1", "localhost");
    std::fs::write(dir.path().join("job.json"), ITEMS).unwrap();
    let job = dir.path().join("job.json");
    let job = job.to_str().unwrap();
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let with_token = [("WASMBATCH_TOKEN", TOKEN)];

    let (code, stdout, stderr) =
        cli(&["--ca-file", ca, "submit", "sum", job, "--watch", "--operator", &https], &with_token);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("succeeded: 2 succeeded, 0 failed"), "{stdout}");
    let (code, stdout, stderr) = cli(
        &["get", "sum", "-o", "json", "--operator", &https],
        &[("WASMBATCH_CA_FILE", ca), ("WASMBATCH_TOKEN", TOKEN)],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let job_id = serde_json::from_str::<Value>(&stdout).unwrap()["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let (code, stdout, _) =
        cli(&["--ca-file", ca, "stop", "sum", &job_id, "--operator", &https, "--token", OTHER_TOKEN], &[]);
    assert_eq!((code, stdout.trim()), (Some(0), format!("stopped job {job_id}").as_str()));

    // Without the token: refused, and said so.
    let (code, _, stderr) = cli(&["--ca-file", ca, "get", "sum", "--operator", &https], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("requires a token") && stderr.contains("(unauthorized)"), "{stderr}");
    // Without the CA, or trusting another one: the certificate is not accepted.
    for trust in [None, Some(pki.other_ca())] {
        let mut args: Vec<String> = Vec::new();
        if let Some(other) = &trust {
            args.extend(["--ca-file".into(), other.display().to_string()]);
        }
        args.extend(["get", "sum", "--operator", &https].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = cli(&args, &with_token);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("TLS with https://localhost") && stderr.contains("certificate"), "{stderr}");
    }
    // Plain HTTP to the TLS port gets no answer.
    let (code, _, stderr) = cli(&["get", "sum", "--operator", &operator.url], &with_token);
    assert_eq!(code, Some(1), "{stderr}");
    // A CA file that holds no certificate is refused at once.
    let (code, _, stderr) = cli(&["--ca-file", job, "get", "sum", "--operator", &https], &with_token);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--ca-file") && stderr.contains("holds no certificate"), "{stderr}");
}

#[test]
fn chaining_from_serve_sends_the_token() {
    let dir = place("");
    let operator = guarded(&dir, &[]).with_token(TOKEN);
    let mount = tempfile::tempdir().unwrap();
    let (_spec_dir, spec) = crate::harness::spec_file(&json!({"job_id": "pod-job", "api_name": "pod"}));
    let child = json!({"workers": 1, "item_list": {"items": [[7], [8]], "batch_size": 1}});
    let batch = json!([format!("submit:sum:{child}")]).to_string();
    for (token, ok) in [(None, false), (Some(TOKEN), true)] {
        let mut server = crate::harness::Server::with(plugin("misbehave"))
            .args(["--job-spec", spec.to_str().unwrap(), "--mount", mount.path().to_str().unwrap()])
            .args(["--operator-url", operator.url.as_str(), "--may-submit-to", "sum"]);
        if let Some(token) = token {
            server = server.args(["--token", token]);
        }
        let server = server.start();
        let reply = server.batch(&batch);
        if ok {
            assert_eq!(reply.status, 200, "{}", reply.body);
            let child_id = std::fs::read_to_string(mount.path().join("submitted.txt")).unwrap().trim().to_string();
            assert_eq!(operator.wait_done("sum", &child_id)["job_status"]["status"], "succeeded");
        } else {
            assert_eq!(reply.status, 500, "{}", reply.body);
            assert!(reply.message().contains("requires a token"), "{}", reply.message());
        }
    }
}

/// A data folder with `in/` (granted) and a secret beside it, and links planted in
/// `in/` that lead out.
fn inputs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::create_dir_all(base.join("in/sub")).unwrap();
    std::fs::write(base.join("in/a.jsonl"), "[1, 2]\n[3]\n").unwrap();
    std::fs::write(base.join("in/sub/b.jsonl"), "[4]\n").unwrap();
    std::fs::write(base.join("secret.jsonl"), "[1000000]\n").unwrap();
    symlink(base.join("secret.jsonl"), base.join("in/leak.jsonl")).unwrap();
    symlink(base, base.join("in/up")).unwrap();
    dir
}

#[test]
fn a_job_reads_inputs_only_under_its_apis_allow_inputs() {
    let data = inputs();
    let base = data.path().display().to_string();
    let dir = place(&format!("allow_inputs = [\"file://{base}/in/\"]\n"));
    let operator = Operator::start(&dir.path().join("apis.toml"), &dir.path().join("data"));
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let job = |path: &str| json!({"workers": 1, "delimited_files": {"s3_paths": [path], "batch_size": 10}}).to_string();
    let lister = |path: &str| {
        json!({"workers": 1, "file_path_lister": {"s3_paths": [path], "includes": ["**shadow*"], "batch_size": 1}})
            .to_string()
    };
    for path in [
        "/etc/".to_string(),
        "file:///etc/".to_string(),
        format!("file://{home}/"),
        format!("{base}/secret.jsonl"),
        format!("{base}/in/../secret.jsonl"),
        format!("{base}/in/./a.jsonl"),
        format!("{base}/in//a.jsonl"),
        format!("{base}/inside/"),
        "relative/in/a.jsonl".to_string(),
        "s3://bucket/in/".to_string(),
    ] {
        for body in [job(&path), lister(&path)] {
            for query in ["?dryRun=true", ""] {
                let answer = operator.request("POST", &format!("/batch/sum{query}"), Some(&body));
                assert_eq!(answer.0, 400, "{path}{query}: {}", answer.1);
                assert!(!answer.1.contains("shadow") && !answer.1.contains("1000000"), "{}", answer.1);
                // A dry run answers its validation errors as text, as Cortex does.
                let message = if query.is_empty() {
                    let (_, kind, message) = error_of(&answer);
                    assert_eq!(kind, "job.input_not_allowed", "{path}: {}", answer.1);
                    message
                } else {
                    answer.1.trim().to_string()
                };
                assert!(
                    message.contains("; see its allow_inputs")
                        || message.contains("not allowed")
                        || message.contains("absolute path"),
                    "{path}{query}: {message}"
                );
            }
        }
    }
    // Percent-encoded dots in a file:// path are a file's name, not a way up.
    let answer = operator.request("POST", "/batch/sum", Some(&job(&format!("file://{base}/in/%2e%2e/secret.jsonl"))));
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert!(!answer.1.contains("1000000"));

    // Under the grant: the files, not the links that lead out of it.
    let (code, text) = operator.request("POST", "/batch/sum?dryRun=true", Some(&job(&format!("{base}/in/"))));
    assert_eq!(code, 200, "{text}");
    assert_eq!(text, format!("{base}/in/a.jsonl\n{base}/in/sub/b.jsonl\nvalidations passed"));
    let job_id = operator.submit("sum", &serde_json::from_str(&job(&format!("file://{base}/in/"))).unwrap());
    let status = operator.wait_done("sum", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    let result: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out").join(&job_id).join("result.json")).unwrap())
            .unwrap();
    assert_eq!(result["total"].as_f64(), Some(10.0), "only in/a.jsonl and in/sub/b.jsonl: {result}");

    // An API without allow_inputs takes item lists only.
    let bare = place("");
    let operator = Operator::start(&bare.path().join("apis.toml"), &bare.path().join("data"));
    let answer = operator.request("POST", "/batch/sum", Some(&job(&format!("{base}/in/"))));
    let (code, kind, message) = error_of(&answer);
    assert_eq!((code, kind.as_str()), (400, "job.input_not_allowed"), "{message}");
    assert!(message.contains("allowed: none"), "{message}");
    assert_eq!(operator.request("POST", "/batch/sum", Some(ITEMS)).0, 200);
}

#[test]
fn a_guest_cannot_leave_its_object_grants_by_spelling_or_by_links() {
    let job = Job::new(&json!({}));
    let base = job.path("").display().to_string().trim_end_matches('/').to_string();
    let b = Path::new(&base);
    std::fs::create_dir_all(b.join("in")).unwrap();
    std::fs::create_dir_all(b.join("out")).unwrap();
    std::fs::create_dir_all(b.join("elsewhere")).unwrap();
    std::fs::write(b.join("in/ok.txt"), "fine\n").unwrap();
    std::fs::write(b.join("secret.txt"), "TOP SECRET\n").unwrap();
    std::fs::write(b.join("elsewhere/victim.txt"), "untouched").unwrap();
    symlink(b.join("secret.txt"), b.join("in/link.txt")).unwrap();
    symlink("../secret.txt", b.join("in/rel-link.txt")).unwrap();
    symlink(b, b.join("in/up")).unwrap();
    symlink(b.join("elsewhere"), b.join("out/away")).unwrap();
    symlink(b.join("elsewhere/victim.txt"), b.join("out/victim.txt")).unwrap();
    let items = [
        format!("get:file://{base}/in/ok.txt"),
        format!("get:file://{base}/in/../secret.txt"),
        format!("get:file://{base}/in/%2e%2e/secret.txt"),
        format!("get:file://{base}/in/%2E%2e/secret.txt"),
        format!("get:file://{base}/in/.%2e/secret.txt"),
        format!("get:file://{base}/in/..%2fsecret.txt"),
        format!("get:file://{base}/in/%2e%2e%2fsecret.txt"),
        format!("get:file://{base}/in//../secret.txt"),
        format!("get:file://{base}/in/..\\secret.txt"),
        format!("get:file://localhost{base}/in/../secret.txt"),
        format!("get:file://evil.example{base}/in/ok.txt"),
        format!("get:file://{base}/in/link.txt"),
        format!("get:file://{base}/in/rel-link.txt"),
        format!("get:file://{base}/in/up/secret.txt"),
        format!("read:file://{base}/in/link.txt:0:100"),
        format!("read:file://{base}/in/up/secret.txt:0:100"),
        format!("get:file://{base}/secret.txt"),
        format!("get:file://{base}/in-other/x"),
        format!("put:file://{base}/out/../pwned.txt:x"),
        format!("put:file://{base}/out/%2e%2e/pwned.txt:x"),
        format!("put:file://{base}/out/away/pwned.txt:x"),
        format!("put:file://{base}/out/victim.txt:replaced"),
        format!("put:file://{base}/out/new/deep/ok.txt:made"),
    ];
    std::fs::write(
        job.path("job.json"),
        json!({"workers": 1, "item_list": {"items": items, "batch_size": items.len()}}).to_string(),
    )
    .unwrap();
    let outcome = job.run(&[
        "--plugin",
        plugin_path("reach"),
        "--max-attempts",
        "1",
        "--allow-read",
        &format!("file://{base}/in/"),
        "--allow-write",
        &format!("file://{base}/out/"),
        "--allow-http",
        "http://127.0.0.1:1",
        "--results",
        job.path("results.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);
    let results: Vec<Value> = read_lines(&job.path("results.jsonl")).into_iter().map(|r| r["result"].clone()).collect();
    let ok: Vec<u64> = results.iter().filter_map(|r| r["item"].as_u64()).collect();
    assert_eq!(ok, vec![0, 21, 22], "only the reads and writes inside the grants: {results:?}");
    let letters = job.dead_letters();
    let message = letters[0]["error"]["message"].as_str().unwrap().to_string();
    for i in 1..=20 {
        assert!(message.contains(&format!("item {i}: ")), "item {i} is not refused:\n{message}");
    }
    assert!(
        !message.contains("TOP SECRET")
            && !std::fs::read_to_string(job.path("results.jsonl")).unwrap().contains("SECRET")
    );
    assert!(message.contains("outside the granted folder"), "{message}");
    assert!(message.contains("`.` and `..` are not allowed"), "{message}");
    assert!(message.contains("an encoded `.` (%2e) is not allowed"), "{message}");
    // Nothing was written outside `out/`, the link's target is untouched, the link
    // itself was replaced by the object.
    assert!(!b.join("pwned.txt").exists() && !b.join("elsewhere/pwned.txt").exists());
    assert_eq!(std::fs::read_to_string(b.join("elsewhere/victim.txt")).unwrap(), "untouched");
    assert_eq!(std::fs::read_to_string(b.join("out/victim.txt")).unwrap(), "replaced");
    assert_eq!(std::fs::read_to_string(b.join("out/new/deep/ok.txt")).unwrap(), "made");
}

#[test]
fn unknown_apis_and_other_apis_jobs_are_not_found_as_cortex_says() {
    let dir = place(&format!("[[api]]\nname = \"other\"\nplugin = \"{}\"\n", plugin("noop").display()));
    let operator = Operator::start(&dir.path().join("apis.toml"), &dir.path().join("data"));
    for (method, path, body) in [
        ("GET", "/batch/nope?jobID=x", None),
        ("DELETE", "/batch/nope?jobID=x", None),
        ("POST", "/batch/nope", Some(ITEMS)),
        ("GET", "/batch/nope/jobs", None),
        ("GET", "/batch/nope/jobs/x/results", None),
        ("GET", "/batch/nope/jobs/x/dead-letters", None),
        ("POST", "/batch/nope/jobs/x/dead-letters/retry", Some("")),
    ] {
        let answer = operator.request(method, path, body);
        assert_eq!(
            error_of(&answer),
            (400, "resources.api_not_deployed".into(), "nope is not deployed".into()),
            "{path}"
        );
    }
    let job_id = operator.submit("sum", &serde_json::from_str(ITEMS).unwrap());
    operator.wait_done("sum", &job_id);
    for path in [format!("/batch/other?jobID={job_id}"), format!("/batch/other/jobs/{job_id}/results")] {
        let (code, kind, _) = error_of(&operator.request("GET", &path, None));
        assert_eq!((code, kind.as_str()), (400, "job.not_found"), "{path}");
    }
}

#[test]
fn the_dead_letter_queue_field_is_checked_as_cortex_checks_it() {
    let dir = place("");
    let operator = Operator::start(&dir.path().join("apis.toml"), &dir.path().join("data"));
    let with = |dlq: Value| {
        let job = json!({"workers": 1, "sqs_dead_letter_queue": dlq, "item_list": {"items": [[1]], "batch_size": 1}});
        operator.request("POST", "/batch/sum", Some(&job.to_string()))
    };
    let (code, kind, message) = error_of(&with(json!({"arn": "", "max_receive_count": 3})));
    assert_eq!((code, kind.as_str()), (400, "configreader.cannot_be_empty"));
    assert!(message.starts_with("sqs_dead_letter_queue: arn: cannot be empty"), "{message}");
    let (code, kind, message) = error_of(&with(json!({"arn": "arn:aws:sqs:us-west-2:1:dlq", "max_receive_count": 0})));
    assert_eq!((code, kind.as_str()), (400, "configreader.must_be_greater_than_or_equal_to"), "{message}");
    let dlq = json!({"arn": "arn:aws:sqs:us-west-2:123456789012:dlq", "max_receive_count": 2});
    let (code, text) = with(dlq.clone());
    assert_eq!(code, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["sqs_dead_letter_queue"], dlq);
}
