//! `wasmbatch-bench`: the tools `scripts/bench.sh` runs. Each prints one JSON object.
//!
//! - `load ADDR CONNECTIONS SECONDS BODY_FILE`
//! - `native-server PORT` — the ceiling: parses the JSON array, answers 200
//! - `native WORKLOAD JSONL BATCH_SIZE THREADS [OUT]` — a plugin's work, compiled
//!   natively: `textstats` (analyze each document) or `reshape` (summarize each order;
//!   the summaries, serialized, are written to OUT as JSON Lines, as `run` writes the
//!   plugin's results)
//! - `startup URL -- COMMAND…` — milliseconds from spawning COMMAND to `URL/healthz` 200
//! - `http-native URL N` — N GET requests, one after another, with the HTTP client the
//!   host's `http_request` capability uses (ureq, one kept-alive connection)

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmbatch_bench::load::{self, Until};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("load") => cmd_load(&args[1..]),
        Some("native-server") => cmd_native_server(&args[1..]),
        Some("native") => cmd_native(&args[1..]),
        Some("startup") => cmd_startup(&args[1..]),
        Some("http-native") => cmd_http_native(&args[1..]),
        _ => Err("usage: wasmbatch-bench load|native-server|native|startup|http-native …".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i).and_then(|a| a.parse().ok()).ok_or_else(|| format!("missing or bad {what}"))
}

fn cmd_load(args: &[String]) -> Result<(), String> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let connections: usize = arg(args, 1, "CONNECTIONS")?;
    let seconds: f64 = arg(args, 2, "SECONDS")?;
    let body = std::fs::read_to_string(args.get(3).ok_or("missing BODY_FILE")?).map_err(|e| e.to_string())?;
    let r = load::run(addr, connections, Until::Elapsed(Duration::from_secs_f64(seconds)), body.trim());
    println!(
        "{}",
        json!({
            "connections": connections,
            "requests": r.ok + r.other.values().sum::<u64>(),
            "ok": r.ok,
            "other": r.other,
            "errors": r.errors,
            "seconds": r.elapsed.as_secs_f64(),
            "rate": r.rate(),
            "p50_us": r.latency_us(0.5),
            "p99_us": r.latency_us(0.99),
        })
    );
    Ok(())
}

fn cmd_native_server(args: &[String]) -> Result<(), String> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Method, Response, StatusCode};

    let port: u16 = arg(args, 0, "PORT")?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                let status = match (request.method(), request.uri().path()) {
                    (&Method::GET, "/healthz") => StatusCode::OK,
                    (&Method::POST, "/") => {
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        match serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body) {
                            Ok(_) => StatusCode::OK,
                            Err(_) => StatusCode::BAD_REQUEST,
                        }
                    }
                    _ => StatusCode::NOT_FOUND,
                };
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = status;
                Ok::<_, std::convert::Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    })
}

/// One batch of a workload, as its plugin does it: deserialize, work, keep the output
/// (serialized into `out` when the plugin's output is results).
fn native_batch(workload: &str, batch: &str, out: &mut Vec<u8>) -> Result<(), String> {
    match workload {
        "textstats" => {
            let docs: Vec<textstats::Document> = serde_json::from_str(batch).map_err(|e| e.to_string())?;
            let stats: Vec<textstats::Stats> = docs.iter().map(textstats::analyze).collect();
            std::hint::black_box(stats);
            Ok(())
        }
        "reshape" => {
            let orders: Vec<reshape::Order> = serde_json::from_str(batch).map_err(|e| e.to_string())?;
            // The plugin's results are serialized one by one (ctx.emit).
            for order in &orders {
                serde_json::to_writer(&mut *out, &reshape::summarize(order)).map_err(|e| e.to_string())?;
                out.push(b'\n');
            }
            Ok(())
        }
        other => Err(format!("unknown workload {other:?} (textstats, reshape)")),
    }
}

fn cmd_native(args: &[String]) -> Result<(), String> {
    let workload = args.first().ok_or("missing WORKLOAD")?.clone();
    let path = args.get(1).ok_or("missing JSONL")?;
    let batch_size: usize = arg(args, 2, "BATCH_SIZE")?;
    let threads: usize = arg(args, 3, "THREADS")?;
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let out = match args.get(4) {
        Some(out) => Some(std::sync::Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?,
        ))),
        None => None,
    };
    // The same shape of work as the plugin in wasmbatch: batches as JSON text, each
    // deserialized and handled by one of `threads` workers.
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let batches: Vec<String> = lines.chunks(batch_size).map(|chunk| format!("[{}]", chunk.join(","))).collect();
    native_batch(&workload, batches.first().map_or("[]", String::as_str), &mut Vec::new())?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { break };
                    let mut bytes = Vec::new();
                    native_batch(&workload, batch, &mut bytes).expect("checked on the first batch");
                    if let Some(out) = &out {
                        std::io::Write::write_all(&mut *out.lock().expect("not poisoned"), &bytes)
                            .expect("writing OUT");
                    }
                }
            });
        }
    });
    if let Some(out) = out {
        std::io::Write::flush(&mut out.into_inner().expect("not poisoned")).map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"items": lines.len(), "batches": batches.len(), "threads": threads, "seconds": seconds, "items_per_second": lines.len() as f64 / seconds})
    );
    Ok(())
}

fn cmd_startup(args: &[String]) -> Result<(), String> {
    let url = args.first().ok_or("missing URL")?;
    let split = args.iter().position(|a| a == "--").ok_or("missing -- COMMAND")?;
    let command = &args[split + 1..];
    let addr: SocketAddr =
        url.trim_start_matches("http://").trim_end_matches('/').parse().map_err(|e| format!("{url}: {e}"))?;
    let started = Instant::now();
    let mut child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = started + Duration::from_secs(600);
    let ready = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                break started.elapsed();
            }
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            return Err("the server never became ready".into());
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    println!("{}", json!({"ready_ms": ready.as_secs_f64() * 1e3, "idle_rss_kib": rss_kib}));
    Ok(())
}

fn cmd_http_native(args: &[String]) -> Result<(), String> {
    let url = args.first().ok_or("missing URL")?;
    let n: usize = arg(args, 1, "N")?;
    // Built as the host builds its client for guests: no redirects, a timeout per call.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let started = Instant::now();
    for _ in 0..n {
        let answer = agent.get(url).timeout(Duration::from_secs(30)).call().map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut answer.into_reader(), &mut body).map_err(|e| e.to_string())?;
        std::hint::black_box(body);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", json!({"requests": n, "seconds": seconds, "requests_per_second": n as f64 / seconds}));
    Ok(())
}
