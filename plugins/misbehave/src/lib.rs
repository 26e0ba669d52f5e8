//! `misbehave` — a test guest that does, on request, everything a guest should not.
//!
//! Each item of a batch is a command string, run in order:
//!
//! | command | what it does |
//! |---|---|
//! | `ok` | nothing |
//! | `error:MSG` / `invalid:MSG` | returns a failure / an invalid-input failure with MSG |
//! | `panic:MSG` | panics with MSG |
//! | `trap` | executes `unreachable` |
//! | `loop` | spins forever |
//! | `oom` | allocates until memory runs out |
//! | `alloc:MIB` | allocates and touches MIB mebibytes, then frees them |
//! | `stack` | recurses without end |
//! | `flood:N` | prints N lines to stdout |
//! | `print:TEXT` / `eprint:TEXT` | prints TEXT to stdout / stderr |
//! | `exit:CODE` | calls `exit(CODE)` |
//! | `sleep:MS` | sleeps MS milliseconds |
//! | `read:PATH` | reads PATH and prints its size; fails with the I/O error |
//! | `copy:FROM:TO` | copies a file (e.g. the job spec into `/mnt`) |
//! | `env:NAME` | fails if the environment variable NAME is visible |
//! | `flaky:PATH` | fails (`guest_error`) unless PATH exists, creating it: fails once, then succeeds |
//! | `fail-if:KEY` | fails if the job's `config.KEY` is `true` |
//! | `stats:PATH` | writes `{"inits":…,"batches":…,"job_id":…}` of this instance to PATH |
//! | `batch:PATH` | appends `{"batch_id":…,"attempt":…}` of this call to PATH, as a JSON line |
//! | `partial:TEXT` | prints TEXT to stdout without a newline |
//! | `log:LEVEL:TEXT` | logs TEXT at LEVEL (`error`, `warn`, `info`, `debug`, `trace`) |
//! | `submit:API:JOB` | submits JOB (a job submission's JSON) to API; appends the new job's ID to `/mnt/submitted.txt` |
//!
//! The job's `config.init` steers the init hook: one step or a list of steps, each
//! `fail`, `panic`, `sleep:MS` or `touch:PATH` (write an empty file). `config` also
//! takes `on_complete_file` (append each on-job-complete body there, as a JSON line),
//! `on_complete: "fail"`, and `on_complete_pause: [MARKER, MS]` (write MARKER, sleep MS
//! milliseconds, then do the rest: a window to kill the host in).
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p misbehave`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmbatch_guest::{Context, Error, JobComplete, Result, bail};

static INITS: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);

fn init(ctx: &Context) -> Result<()> {
    INITS.fetch_add(1, Ordering::Relaxed);
    match ctx.config().get("init") {
        Some(serde_json::Value::String(mode)) => init_step(mode),
        Some(serde_json::Value::Array(modes)) => modes.iter().try_for_each(|m| init_step(m.as_str().unwrap_or(""))),
        _ => Ok(()),
    }
}

fn init_step(mode: &str) -> Result<()> {
    let (verb, arg) = mode.split_once(':').unwrap_or((mode, ""));
    match verb {
        "" => {}
        "fail" => bail!("init failed on request"),
        "panic" => panic!("init panicked on request"),
        "sleep" => std::thread::sleep(Duration::from_millis(arg.parse().unwrap_or(0))),
        "touch" => std::fs::write(arg, b"")?,
        other => bail!("unknown init mode {other:?}"),
    }
    Ok(())
}

/// Recurses until `depth` reaches `limit`, which `stack` makes unreachable.
fn recurse(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    black_box(recurse(black_box(depth + 1), limit)) + 1
}

fn run(ctx: &Context, command: &str) -> Result<()> {
    let (verb, arg) = command.split_once(':').unwrap_or((command, ""));
    match verb {
        "ok" => {}
        "error" => bail!("{arg}"),
        "invalid" => return Err(Error::invalid_input(arg)),
        "panic" => panic!("{arg}"),
        "trap" => trap(),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "alloc" => {
            let mib: usize = arg.parse().map_err(|_| Error::invalid_input("alloc:MIB"))?;
            let block = black_box(vec![7u8; mib << 20]);
            drop(block);
        }
        "stack" => {
            black_box(recurse(0, u64::MAX));
        }
        "flood" => {
            for i in 0..arg.parse::<u64>().unwrap_or(0) {
                println!("flood line {i} of a guest that will not stop talking");
            }
        }
        "print" => println!("{arg}"),
        "partial" => print!("{arg}"),
        "log" => {
            let (level, text) = arg.split_once(':').unwrap_or(("info", arg));
            match level {
                "error" => wasmbatch_guest::error!("{text}"),
                "warn" => wasmbatch_guest::warn!("{text}"),
                "debug" => wasmbatch_guest::debug!("{text}"),
                "trace" => wasmbatch_guest::trace!("{text}"),
                _ => wasmbatch_guest::info!("{text}"),
            }
        }
        "submit" => {
            let (api, job) = arg.split_once(':').ok_or_else(|| Error::invalid_input("submit:API:JOB"))?;
            let job: serde_json::Value = serde_json::from_str(job).map_err(Error::invalid_input)?;
            let job_id = ctx.submit_job(api, &job)?;
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open("/mnt/submitted.txt")?;
            file.write_all(format!("{job_id}\n").as_bytes())?;
        }
        "batch" => {
            let record = serde_json::json!({ "batch_id": ctx.batch_id(), "attempt": ctx.attempt() });
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(arg)?;
            // One write of the whole line: appends of concurrent instances do not mix.
            file.write_all(format!("{record}\n").as_bytes())?;
        }
        "eprint" => eprintln!("{arg}"),
        "exit" => std::process::exit(arg.parse().unwrap_or(1)),
        "sleep" => std::thread::sleep(Duration::from_millis(arg.parse().unwrap_or(0))),
        "read" => {
            let bytes = std::fs::read(arg).map_err(|e| Error::msg(format!("read {arg}: {e}")))?;
            println!("read {} bytes from {arg}", bytes.len());
        }
        "copy" => {
            let (from, to) = arg.split_once(':').ok_or_else(|| Error::invalid_input("copy:FROM:TO"))?;
            std::fs::copy(from, to).map_err(|e| Error::msg(format!("copy {from} to {to}: {e}")))?;
        }
        "env" => {
            if let Ok(value) = std::env::var(arg) {
                bail!("environment variable {arg} is visible: {value}");
            }
        }
        "flaky" => {
            if std::fs::metadata(arg).is_err() {
                std::fs::write(arg, b"").map_err(|e| Error::msg(format!("write {arg}: {e}")))?;
                bail!("flaky: failing the first attempt");
            }
        }
        "fail-if" => {
            if ctx.config().get(arg).and_then(|v| v.as_bool()) == Some(true) {
                bail!("config.{arg} is true");
            }
        }
        "stats" => {
            let stats = serde_json::json!({
                "inits": INITS.load(Ordering::Relaxed),
                "batches": BATCHES.load(Ordering::Relaxed),
                "job_id": ctx.job_id(),
            });
            std::fs::write(arg, stats.to_string()).map_err(|e| Error::msg(format!("write {arg}: {e}")))?;
        }
        other => return Err(Error::invalid_input(format!("unknown command {other:?}"))),
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}

fn handle(ctx: &Context, commands: Vec<String>) -> Result<()> {
    BATCHES.fetch_add(1, Ordering::Relaxed);
    commands.iter().try_for_each(|c| run(ctx, c))
}

fn on_job_complete(ctx: &Context, done: &JobComplete) -> Result<()> {
    if let Some([marker, ms]) = ctx.config().get("on_complete_pause").and_then(|v| v.as_array()).map(|a| a.as_slice()) {
        std::fs::write(marker.as_str().unwrap_or("/mnt/pause"), b"")?;
        std::thread::sleep(Duration::from_millis(ms.as_u64().unwrap_or(0)));
    }
    if let Some(path) = ctx.config().get("on_complete_file").and_then(|v| v.as_str()) {
        let record = serde_json::json!({
            "job_id": ctx.job_id(),
            "message": done.message,
            "succeeded": done.succeeded,
            "failed": done.failed,
            "total": done.total,
        });
        let mut line = record.to_string();
        line.push('\n');
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(line.as_bytes())?;
    }
    if ctx.config().get("on_complete").and_then(|v| v.as_str()) == Some("fail") {
        bail!("on-job-complete failed on request");
    }
    Ok(())
}

// The declarative form, hooks in any order (the other plugins use the attributes).
wasmbatch_guest::plugin!(on_job_complete: on_job_complete, init: init, handle: handle);
