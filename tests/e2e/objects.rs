//! Object storage against a real S3-protocol server: moto in server mode (from PyPI;
//! `scripts/test.sh` installs it), started per test on a free port. Job inputs on
//! `s3://`, and guests reading and writing objects under their grants.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{free_port, plugin};
use crate::operator::Operator;
use crate::run::{Job, plugin_path, read_lines};

/// A moto S3 server, killed on drop.
struct S3 {
    child: Child,
    port: u16,
}

impl S3 {
    fn start() -> S3 {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto (scripts/test.sh installs it: pip install 'moto[server]')");
        let s3 = S3 { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start (pip install 'moto[server]')");
            std::thread::sleep(Duration::from_millis(50));
        }
        s3
    }

    /// The environment that points `object_store` at this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Runs a boto3 snippet against this server (`s3` is the client), returns its
    /// standard output.
    fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json, sys\n\
             s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{}', aws_access_key_id='test', \
             aws_secret_access_key='test', region_name='us-east-1')\n{code}\n",
            self.port
        );
        let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn put(&self, key: &str, body: &[u8]) {
        let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
        self.boto(&format!("s3.put_object(Bucket='bucket', Key='{key}', Body=bytes.fromhex('{hex}'))"));
    }

    fn get(&self, key: &str) -> String {
        self.boto(&format!("sys.stdout.write(s3.get_object(Bucket='bucket', Key='{key}')['Body'].read().decode())"))
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reach plugin granted reads of `s3://bucket/images/` and writes of
/// `s3://bucket/results/`, then `extra`.
fn reach_on_s3<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--plugin", plugin_path("reach"), "--allow-read", "s3://bucket/images/"];
    args.extend(["--allow-write", "s3://bucket/results/", "--allow-http", "https://unused.example"]);
    args.extend_from_slice(extra);
    args
}

fn run_with(job: &Job, s3: &S3, args: &[&str]) -> crate::run::Outcome {
    let mut command = job.command(args);
    for (key, value) in s3.env() {
        command.env(key, value);
    }
    crate::run::finish(command.spawn().unwrap())
}

#[test]
fn a_path_lister_job_over_s3_reads_each_object_and_writes_a_result_object() {
    let s3 = S3::start();
    s3.boto("s3.create_bucket(Bucket='bucket')");
    for (key, body) in [
        ("images/cat.jpg", "one\ntwo\n"),
        ("images/dog.jpg", "one\n"),
        ("images/notes.txt", "not an image\n"),
        ("images/skip/old.jpg", "excluded\n"),
        ("secret/key.jpg", "outside the grant\n"),
    ] {
        s3.put(key, body.as_bytes());
    }
    let job = Job::new(&json!({
        "workers": 2,
        "config": {"out": "s3://bucket/results/", "results_prefix": "s3://bucket/results/jobs/"},
        "file_path_lister": {
            "s3_paths": ["s3://bucket/images"],
            "includes": ["**.jpg"],
            "excludes": ["**/skip/**"],
            "batch_size": 1
        }
    }));
    let results = job.path("results.jsonl").display().to_string();
    let outcome = run_with(&job, &s3, &reach_on_s3(&["--results", &results]));
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.status["total_batch_count"], 2, "cat and dog only: {}", outcome.status);
    let mut seen: Vec<Value> = read_lines(Path::new(&results)).into_iter().map(|r| r["result"].clone()).collect();
    seen.sort_by_key(|r| r["url"].as_str().unwrap().to_string());
    assert_eq!(
        seen,
        vec![
            json!({"url": "s3://bucket/images/cat.jpg", "bytes": 8, "lines": 2}),
            json!({"url": "s3://bucket/images/dog.jpg", "bytes": 4, "lines": 1}),
        ]
    );
    let written: Value = serde_json::from_str(&s3.get("results/cat.jpg.json")).unwrap();
    assert_eq!(written, json!({"url": "s3://bucket/images/cat.jpg", "bytes": 8, "lines": 2}));
    // The job's results, copied to the prefix its config gave (under the write grant).
    let copied = s3.get(&format!("results/jobs/{}.jsonl", outcome.status["job_id"].as_str().unwrap()));
    assert_eq!(copied, std::fs::read_to_string(&results).unwrap());

    // Outside the grants: refused by the host, the item fails with the reason.
    let job = Job::new(&json!({"workers": 1, "item_list": {"items": [
        "get:s3://bucket/secret/key.jpg", "put:s3://bucket/images/x:nope", "get:s3://bucket/images/../secret/key.jpg"
    ], "batch_size": 3}}));
    let outcome = run_with(&job, &s3, &reach_on_s3(&["--max-attempts", "1"]));
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);
    let message = job.dead_letters()[0]["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message
            .contains("item 0: reading an object: s3://bucket/secret/key.jpg is not under a prefix the API may read"),
        "{message}"
    );
    assert!(
        message.contains("item 1: writing an object: s3://bucket/images/x is not under a prefix the API may write"),
        "{message}"
    );
    assert!(
        message.contains("item 2: reading an object:") && message.contains("`.` and `..` are not allowed"),
        "{message}"
    );
}

#[test]
fn delimited_files_on_s3_stream_through_bounded_reads() {
    let s3 = S3::start();
    s3.boto("s3.create_bucket(Bucket='bucket')");
    // About 10 MB of JSON lines in one object (read in 4 MiB ranges), and a second one.
    let padding = "x".repeat(1000);
    s3.boto(&format!(
        "s3.put_object(Bucket='bucket', Key='data/big.jsonl', Body=''.join('{{\"n\":%d,\"pad\":\"{padding}\"}}\\n' % i for i in range(10240)).encode())"
    ));
    s3.put("data/small.jsonl", b"[1]\n[2]\n");
    let job = Job::new(&json!({
        "workers": 1,
        "delimited_files": {"s3_paths": ["s3://bucket/data/"], "batch_size": 1000}
    }));
    let outcome = run_with(&job, &s3, &["--plugin", plugin_path("noop")]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.status["total_item_count"], 10240 + 2, "{}", outcome.status);
    assert_eq!(outcome.status["total_batch_count"], 11);
}

#[test]
fn the_operator_dry_run_lists_s3_objects_and_serves_the_results() {
    let s3 = S3::start();
    s3.boto("s3.create_bucket(Bucket='bucket')");
    s3.put("in/a.jpg", b"a\n");
    s3.put("in/b.jpg", b"bb\n");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[api]]\nname = \"reach\"\nplugin = \"{}\"\nallow_read = [\"s3://bucket/in/\"]\n\
         allow_inputs = [\"s3://bucket/in/\"]\nallow_write = [\"s3://bucket/out/\"]\nallow_http = [\"https://unused.example\"]\n",
        plugin("reach").display()
    );
    std::fs::write(dir.path().join("apis.toml"), config).unwrap();
    let operator = Operator::start_env(&dir.path().join("apis.toml"), &dir.path().join("data"), &[], &s3.env());
    let job = json!({"workers": 1, "config": {"out": "s3://bucket/out/"},
        "file_path_lister": {"s3_paths": ["s3://bucket/in/"], "batch_size": 1}});
    let (code, text) = operator.request("POST", "/batch/reach?dryRun=true", Some(&job.to_string()));
    assert_eq!((code, text.as_str()), (200, "s3://bucket/in/a.jpg\ns3://bucket/in/b.jpg\nvalidations passed"));
    let job_id = operator.submit("reach", &job);
    let status = operator.wait_done("reach", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    let (code, text) = operator.request("GET", &format!("/batch/reach/jobs/{job_id}/results"), None);
    assert_eq!(code, 200);
    let mut urls: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["result"]["url"].as_str().unwrap().to_string())
        .collect();
    urls.sort();
    assert_eq!(urls, vec!["s3://bucket/in/a.jpg", "s3://bucket/in/b.jpg"]);
    assert_eq!(serde_json::from_str::<Value>(&s3.get("out/b.jpg.json")).unwrap()["bytes"], 3);
}

/// Runs `job` with `args`, the S3 credentials, and `env` on top.
fn run_env(job: &Job, args: &[&str], env: &[(&str, String)]) -> crate::run::Outcome {
    let mut command = job.command(args);
    command.envs([("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")]);
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command.env_remove("AWS_ALLOW_HTTP").env_remove("WASMBATCH_CA_FILE");
    crate::run::finish(command.spawn().unwrap())
}

#[test]
fn object_storage_over_https_trusts_the_ca_file_and_plain_http_stays_opt_in() {
    let s3 = S3::start();
    s3.boto("s3.create_bucket(Bucket='bucket')");
    s3.put("images/cat.jpg", b"one\ntwo\n");
    let pki = crate::tls::Pki::new();
    let front = crate::tls::TlsFront::start(&pki, ([127, 0, 0, 1], s3.port).into());
    let https = vec![("AWS_ENDPOINT", format!("https://localhost:{}", front.addr.port()))];
    let ca = pki.ca().display().to_string();
    let get = || {
        Job::new(&json!({"workers": 1, "item_list": {"items": ["get:s3://bucket/images/cat.jpg"], "batch_size": 1}}))
    };

    // Guests' reads and the job's input listing, over TLS, trusting the test's CA.
    let job = get();
    let results = job.path("results.jsonl").display().to_string();
    let outcome = run_env(&job, &reach_on_s3(&["--ca-file", &ca, "--results", &results]), &https);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(read_lines(Path::new(&results))[0]["result"], json!({"item": 0, "bytes": 8}));
    let lister =
        Job::new(&json!({"workers": 1, "file_path_lister": {"s3_paths": ["s3://bucket/images/"], "batch_size": 1}}));
    let outcome = run_env(&lister, &reach_on_s3(&["--ca-file", &ca]), &https);
    assert_eq!((outcome.code, outcome.status["total_batch_count"].as_u64()), (0, Some(1)), "{}", outcome.stderr);
    // The same through the standard variable instead of the flag.
    let job = get();
    let mut env = https.clone();
    env.push(("SSL_CERT_FILE", ca.clone()));
    let outcome = run_env(&job, &reach_on_s3(&[]), &env);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);

    // Without the CA, the server's certificate is refused: the item fails, nothing read.
    let job = get();
    let outcome = run_env(&job, &reach_on_s3(&["--max-attempts", "1"]), &https);
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);
    let message = job.dead_letters()[0]["error"]["message"].as_str().unwrap().to_string();
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    // Plain HTTP only when AWS_ALLOW_HTTP says so.
    let job = get();
    let plain = vec![("AWS_ENDPOINT", format!("http://127.0.0.1:{}", s3.port))];
    let outcome = run_env(&job, &reach_on_s3(&["--max-attempts", "1"]), &plain);
    assert_eq!(outcome.status["status"], "completed_with_failures", "{}", outcome.stderr);
    let message = job.dead_letters()[0]["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("item 0: reading an object: s3://bucket/images/cat.jpg"), "{message}");
}
