//! The container image (`scripts/image.sh`, which `scripts/test.sh` runs when a Docker
//! engine is reachable): `serve` in a real container, as a non-root user on a
//! read-only root file system, with the contract's mounts; `docker stop` with batches
//! in flight; a memory limit. Skipped, saying so, only when no Docker engine answers.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{free_port, plugin, workspace_root};

const IMAGE: &str = "wasmbatch:latest";

/// Whether the tests can run: a Docker engine answers. The image must exist then.
fn docker() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        // Under CI the premise must hold: a missing engine fails instead of passing.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no Docker engine is reachable (docker info failed): the container tests need one"
        );
        eprintln!("SKIPPED: no Docker engine is reachable (docker info failed); the container tests need one");
        return false;
    }
    let image = Command::new("docker").args(["image", "inspect", IMAGE]).output().unwrap();
    assert!(image.status.success(), "the image {IMAGE} is missing: build it with scripts/image.sh");
    true
}

/// A container, removed (forcibly) on drop.
struct Container {
    id: String,
}

impl Container {
    fn run(args: &[&str]) -> Container {
        let out = Command::new("docker").args(["run", "-d"]).args(args).output().unwrap();
        assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
        Container { id: String::from_utf8_lossy(&out.stdout).trim().to_string() }
    }

    fn logs(&self) -> String {
        let out = Command::new("docker").args(["logs", &self.id]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn inspect(&self, format: &str) -> String {
        let out = Command::new("docker").args(["inspect", "--format", format, &self.id]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits (bounded) until GET /healthz on `port` answers 200.
    fn wait_healthy(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the container never got ready:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// A directory the container's user (10001) can write.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    dir
}

fn plugins_dir() -> String {
    plugin("sum").parent().unwrap().display().to_string()
}

/// `serve` of the misbehave plugin (2 workers, no compile cache) with `docker_options`,
/// ready; and its published port.
fn serve_misbehave(docker_options: &[&str]) -> (Container, u16) {
    let port = free_port();
    let (publish, plugins) = (format!("127.0.0.1:{port}:8080"), format!("{}:/plugins:ro", plugins_dir()));
    let mut args: Vec<&str> = docker_options.to_vec();
    args.extend(["-p", &publish, "-v", &plugins, IMAGE, "serve", "--plugin", "/plugins/misbehave.wasm"]);
    args.extend(["--no-cache", "--concurrency", "2"]);
    let container = Container::run(&args);
    container.wait_healthy(port);
    (container, port)
}

fn post(port: u16, path: &str, job_id: &str, body: &str) -> (u16, String) {
    let request = ureq::post(&format!("http://127.0.0.1:{port}{path}"))
        .set("X-Cortex-Job-ID", job_id)
        .timeout(Duration::from_secs(60));
    match request.send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {path}: {e}"),
    }
}

#[test]
fn serve_in_the_image_keeps_the_contract_as_a_non_root_user_on_a_read_only_root() {
    if !docker() {
        return;
    }
    let mnt = shared_dir();
    let spec_dir = tempfile::tempdir().unwrap();
    let spec = json!({"job_id": "job-in-a-box", "api_name": "sum", "kind": "BatchAPI", "config": {"x": 1}});
    std::fs::write(spec_dir.path().join("job.json"), spec.to_string()).unwrap();
    let port = free_port();
    // A plain tmpfs on /tmp, as `docker run --read-only --tmpfs /tmp` gives it.
    let container = Container::run(&[
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/home/wasmbatch/.cache:uid=10001",
        "-e",
        "CORTEX_PORT=8080",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-v",
        &format!("{}:/plugins:ro", plugins_dir()),
        "-v",
        &format!("{}:/cortex/spec:ro", spec_dir.path().display()),
        "-v",
        &format!("{}:/mnt", mnt.path().display()),
        IMAGE,
        "serve",
        "--plugin",
        "/plugins/sum.wasm",
    ]);
    container.wait_healthy(port);
    assert_eq!(container.inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(container.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    // Ready only after the plugin's first instance started: the log says so in order.
    let logs = container.logs();
    let (ready, listening) = (logs.find("first instance ready"), logs.find("listening"));
    assert!(ready.is_some() && ready < listening, "{logs}");

    // A batch without a job ID header takes the spec's; results land in /mnt.
    assert_eq!(post(port, "/", "job-in-a-box", "[[1,2],[3,4]]").0, 200);
    // Both of Cortex's on-job-complete bodies.
    assert_eq!(post(port, "/on-job-complete", "job-in-a-box", r#"{"message":"job_complete"}"#).0, 200);
    assert_eq!(post(port, "/on-job-complete", "job-in-a-box", "job_complete").0, 200);
    let result: Value =
        serde_json::from_slice(&std::fs::read(mnt.path().join("job-in-a-box/result.json")).unwrap()).unwrap();
    assert_eq!(result["total"], 10.0, "{result}");
    // Written by the container's user, not root.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(mnt.path().join("job-in-a-box")).unwrap());
    assert_eq!(owner, 10001);
    // The image is small.
    let size: u64 = String::from_utf8_lossy(
        &Command::new("docker").args(["image", "inspect", IMAGE, "--format", "{{.Size}}"]).output().unwrap().stdout,
    )
    .trim()
    .parse()
    .unwrap();
    assert!(size < 45_000_000, "the image is {size} bytes");
}

#[test]
fn docker_stop_lets_batches_in_flight_finish_and_the_container_exits_0() {
    if !docker() {
        return;
    }
    let (container, port) = serve_misbehave(&["--read-only", "--tmpfs", "/tmp"]);
    let in_flight: Vec<_> =
        (0..2).map(|_| std::thread::spawn(move || post(port, "/", "j", r#"["sleep:2000"]"#))).collect();
    // Both are being handled: two instances busy.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().into_string().unwrap();
        if metrics.lines().any(|l| l.starts_with("wasmbatch_instances_busy") && l.ends_with(" 2")) {
            break;
        }
        assert!(Instant::now() < deadline, "the batches never started:\n{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let stop = Command::new("docker").args(["stop", "-t", "10", &container.id]).output().unwrap();
    assert!(stop.status.success());
    let took = started.elapsed();
    for request in in_flight {
        assert_eq!(request.join().unwrap().0, 200, "a batch in flight finished: {}", container.logs());
    }
    assert_eq!(container.inspect("{{.State.ExitCode}}"), "0", "{}", container.logs());
    assert!(took < Duration::from_secs(8), "stopped in {took:?}, well within the 10 s grace period");
}

#[test]
fn a_guest_that_eats_memory_fails_its_batch_and_the_memory_limited_container_survives() {
    if !docker() {
        return;
    }
    let (container, port) = serve_misbehave(&["--memory", "256m", "--memory-swap", "256m"]);
    // The memory per instance was fitted to the container's limit.
    assert!(container.logs().contains("memory per instance fitted to the container's limit"), "{}", container.logs());
    let (code, body) = post(port, "/", "j", r#"["oom"]"#);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("out_of_memory"), "{body}");
    // Still serving, and not restarted.
    assert_eq!(post(port, "/", "j", r#"["ok"]"#).0, 200);
    assert_eq!(container.inspect("{{.State.Running}} {{.State.OOMKilled}} {{.RestartCount}}"), "true false 0");
}

#[test]
fn the_deploy_examples_parse_and_name_what_the_image_provides() {
    // YAML parsed by Python's yaml (installed with moto); each file's images and ports
    // checked against the image: entry point /wasmbatch, serve on 8080, operator 8888.
    let root = workspace_root();
    let script = r#"
import json, sys, yaml
out = {}
for path in sys.argv[1:]:
    with open(path) as f:
        out[path] = list(yaml.safe_load_all(f))
print(json.dumps(out))
"#;
    let files = [
        "deploy/compose.yaml",
        "deploy/kubernetes/operator.yaml",
        "deploy/kubernetes/workers.yaml",
        "deploy/cortex/batch-api.yaml",
    ];
    let out = Command::new("python3").arg("-c").arg(script).args(files.iter().map(|f| root.join(f))).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let doc = |name: &str| parsed[root.join(name).display().to_string()].clone();
    let compose = &doc("deploy/compose.yaml")[0];
    assert_eq!(compose["services"]["operator"]["image"], "wasmbatch:latest");
    assert_eq!(compose["services"]["operator"]["command"][0], "operator");
    assert_eq!(compose["services"]["operator"]["ports"][0], "127.0.0.1:${WASMBATCH_OPERATOR_PORT:-8888}:8888");
    assert_eq!(compose["services"]["worker"]["command"][0], "worker");
    assert_eq!(compose["services"]["worker"]["deploy"]["replicas"], 3);
    assert!(Path::new(&root.join("deploy/config/apis.toml")).exists());
    let operator = doc("deploy/kubernetes/operator.yaml");
    let deployment = operator.as_array().unwrap().iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (container["image"].as_str(), container["args"][0].as_str()),
        (Some("wasmbatch:latest"), Some("operator"))
    );
    assert_eq!(container["ports"][0]["containerPort"], 8888);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    // The job API's tokens come from a Secret mounted read-only where --token-file says.
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let token_file = args[args.iter().position(|a| *a == "--token-file").expect("--token-file") + 1];
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = mounts.iter().find(|m| token_file.starts_with(m["mountPath"].as_str().unwrap())).unwrap();
    assert_eq!(mount["readOnly"], true);
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["secret"]["secretName"], "wasmbatch-tokens");
    let workers = &doc("deploy/kubernetes/workers.yaml")[0];
    assert_eq!(workers["spec"]["template"]["spec"]["containers"][0]["args"][0], "worker");
    let cortex = &doc("deploy/cortex/batch-api.yaml")[0][0];
    assert_eq!(cortex["kind"], "BatchAPI");
    assert_eq!(cortex["pod"]["port"], 8080);
    assert_eq!(cortex["pod"]["containers"][0]["readiness_probe"]["http_get"]["path"], "/healthz");
    assert_eq!(cortex["pod"]["containers"][0]["command"][0], "/wasmbatch");
    // The plugin image example builds FROM the image and precompiles its plugin.
    let dockerfile = std::fs::read_to_string(root.join("examples/textstats-image/Dockerfile")).unwrap();
    assert!(dockerfile.contains("FROM wasmbatch") && dockerfile.contains("\"compile\""), "{dockerfile}");
}

#[test]
fn a_plugin_image_is_from_wasmbatch_plus_the_precompiled_plugin_and_is_ready_at_once() {
    if !docker() {
        return;
    }
    let plugin = plugin("textstats");
    serve_example_image("textstats-image", &plugin, "textstats.wasm", r#"[{"id": "a", "text": "One sentence here."}]"#);
}

#[test]
fn a_python_handler_image_serves_the_sample_handler() {
    if !docker() || !crate::python::premise() {
        return;
    }
    let component = crate::python::built(&workspace_root().join("samples/python/textstats.py"));
    serve_example_image(
        "python-image",
        &component,
        "handler.wasm",
        r#"[{"id": "a", "text": "One sentence here. And two."}]"#,
    );
}

/// Builds the image of `examples/<example>/` with `plugin` copied in as `name`, runs it
/// read-only, and checks that it is ready from its precompiled plugin and answers
/// `batch` with 200.
fn serve_example_image(example: &str, plugin: &Path, name: &str, batch: &str) {
    let context = tempfile::tempdir().unwrap();
    let root = workspace_root();
    std::fs::copy(root.join("examples").join(example).join("Dockerfile"), context.path().join("Dockerfile")).unwrap();
    std::fs::copy(plugin, context.path().join(name)).unwrap();
    let tag = format!("wasmbatch-{example}:test{}", std::process::id());
    let build = Command::new("docker").args(["build", "-q", "-t", &tag]).arg(context.path()).output().unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let port = free_port();
    let container = Container::run(&[
        "--read-only",
        "--tmpfs",
        "/tmp:uid=10001",
        "--tmpfs",
        "/mnt:uid=10001",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        &tag,
    ]);
    container.wait_healthy(port);
    // Loaded from the artifact made at build time: nothing compiled at start.
    assert!(container.logs().contains("precompiled"), "{}", container.logs());
    let (status, body) = post(port, "/", "j", batch);
    assert_eq!(status, 200, "{body}\n{}", container.logs());
    drop(container);
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
}

/// A Compose project of `deploy/compose.yaml`, taken down (volumes too) on drop.
struct Compose {
    project: String,
    env: Vec<(String, String)>,
}

impl Compose {
    fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker-compose")
            .args(["--compatibility", "-p", &self.project, "-f"])
            .arg(workspace_root().join("deploy/compose.yaml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }

    fn container(&self, service: &str, n: usize) -> String {
        format!("{}_{service}_{n}", self.project)
    }

    fn logs(&self, name: &str) -> String {
        let out = Command::new("docker").args(["logs", name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.command(&["down", "-v", "-t", "1"]);
    }
}

/// GET or POST against the operator published on `port`.
fn operator_request(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let request = ureq::request(method, &format!("http://127.0.0.1:{port}{path}")).timeout(Duration::from_secs(30));
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn the_distributed_setup_in_containers_loses_nothing_when_workers_are_killed_or_cut_off() {
    if !docker() {
        return;
    }
    const RABBIT: &str = "wasmbatch-rabbitmq:latest";
    let have = Command::new("docker").args(["image", "inspect", RABBIT]).output().unwrap();
    assert!(have.status.success(), "the image {RABBIT} is missing: build it with scripts/rabbitmq-image.sh");
    // deploy/compose.yaml itself, with its variables pointing at this test's files.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("apis.toml"), "[[api]]\nname = \"sum\"\nmax_attempts = 3\n").unwrap();
    let mnt = shared_dir();
    let operator_port = free_port();
    let compose = Compose {
        project: format!("wbtest{}", std::process::id()),
        env: vec![
            ("WASMBATCH_OPERATOR_PORT".into(), operator_port.to_string()),
            ("WASMBATCH_CONFIG".into(), config.path().display().to_string()),
            ("WASMBATCH_PLUGINS".into(), plugins_dir()),
            ("WASMBATCH_RESULTS".into(), mnt.path().display().to_string()),
        ],
    };
    let up = compose.command(&["up", "-d"]);
    assert!(up.status.success(), "docker-compose up: {}", String::from_utf8_lossy(&up.stderr));
    let workers: Vec<String> = (1..=3).map(|n| compose.container("worker", n)).collect();
    let operator = compose.container("operator", 1);
    // Operator and workers wait for the broker (logged backoff), then consume.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !workers.iter().all(|w| compose.logs(w).contains("consuming"))
        || !compose.logs(&operator).contains("consuming outcomes")
    {
        assert!(
            Instant::now() < deadline,
            "the set-up did not start:\n{}\n{}",
            compose.logs(&operator),
            compose.logs(&workers[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let batches = 3000;
    let (code, body) =
        operator_request(operator_port, "POST", "/batch/sum", Some(&crate::broker::sum_job(batches).to_string()));
    assert_eq!(code, 200, "{body}");
    let job_id = serde_json::from_str::<Value>(&body).unwrap()["job_id"].as_str().unwrap().to_string();
    let status = || -> Value {
        let (_, text) = operator_request(operator_port, "GET", &format!("/batch/sum?jobID={job_id}"), None);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while crate::broker::succeeded(&status()) < 300 {
        assert!(Instant::now() < deadline, "the job did not start:\n{}", compose.logs(&operator));
        std::thread::sleep(Duration::from_millis(20));
    }
    // One worker killed, another cut off from the network, mid-job.
    assert!(Command::new("docker").args(["kill", &workers[0]]).status().unwrap().success());
    let network = format!("{}_default", compose.project);
    assert!(Command::new("docker").args(["network", "disconnect", &network, &workers[1]]).status().unwrap().success());
    let at_faults = crate::broker::succeeded(&status());
    assert!(at_faults < batches as u64, "the faults came mid-job");

    let deadline = Instant::now() + Duration::from_secs(180);
    let last = loop {
        let now = status();
        if !["pending", "running"].contains(&now["job_status"]["status"].as_str().unwrap_or("running")) {
            break now;
        }
        assert!(Instant::now() < deadline, "the job did not end: {now}\n{}", compose.logs(&operator));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(last["job_status"]["status"], "succeeded", "{last}");
    assert_eq!(crate::broker::succeeded(&last), batches as u64);
    crate::broker::check_sums(&[mnt.path().to_path_buf()], &job_id, batches);
    assert!(mnt.path().join(&job_id).join("result.json").exists(), "on-job-complete ran");
}
