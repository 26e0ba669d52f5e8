//! `sum` — the Cortex "sum" example as a wasmbatch plugin: state lives in `/mnt`.
//!
//! Each item is an array of numbers. Each batch writes the sums of its items to
//! `/mnt/<job_id>/batch-<id>.json`; on-job-complete reads them all back and writes
//! `/mnt/<job_id>/result.json` with every sum, their count and their total. Because the
//! batches' results are files, this is correct with any number of workers (the Cortex
//! original kept them in memory, which is only correct with one).
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p sum`
//! Run:   `wasmbatch serve --plugin target/wasm32-wasip1/release/sum.wasm --mount ./out`
//! then   `curl -d '[[1,2],[3,4]]' -H 'X-Cortex-Job-ID: j1' localhost:8080/`
//! and    `curl -d '{"message":"job_complete"}' -H 'X-Cortex-Job-ID: j1' localhost:8080/on-job-complete`

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use wasmbatch_guest::{Context, Error, JobComplete, Result};

fn job_dir(ctx: &Context) -> Result<PathBuf> {
    let id = ctx.job_id();
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(Error::invalid_input(format!("job id {id:?} cannot name a directory")));
    }
    Ok(PathBuf::from("/mnt").join(id))
}

/// A name no other batch of this job uses: time, a per-instance counter and the content.
fn batch_name(sums: &[f64]) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sums.iter().flat_map(|s| s.to_le_bytes()).chain(nanos.to_le_bytes()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("batch-{nanos:x}-{n}-{h:016x}.json")
}

fn handle(ctx: &Context, items: Vec<Vec<f64>>) -> Result<()> {
    let sums: Vec<f64> = items.iter().map(|item| item.iter().sum()).collect();
    let dir = job_dir(ctx)?;
    fs::create_dir_all(&dir).map_err(|e| Error::msg(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(batch_name(&sums));
    fs::write(&path, serde_json::to_vec(&sums)?).map_err(|e| Error::msg(format!("writing {}: {e}", path.display())))?;
    Ok(())
}

fn on_job_complete(ctx: &Context, _done: &JobComplete) -> Result<()> {
    let dir = job_dir(ctx)?;
    let mut sums = Vec::new();
    let mut batches = 0;
    let entries = fs::read_dir(&dir).map_err(|e| Error::msg(format!("reading {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry?.path();
        let is_batch = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("batch-"));
        if is_batch {
            let batch: Vec<f64> = serde_json::from_slice(&fs::read(&path)?)?;
            sums.extend(batch);
            batches += 1;
        }
    }
    let total: f64 = sums.iter().sum();
    let result =
        json!({ "job_id": ctx.job_id(), "batches": batches, "items": sums.len(), "total": total, "sums": sums });
    fs::write(dir.join("result.json"), serde_json::to_vec_pretty(&result)?)?;
    println!("aggregated {} sums from {batches} batches: total {total}", sums.len());
    Ok(())
}

wasmbatch_guest::plugin!(handle: handle, on_job_complete: on_job_complete);
