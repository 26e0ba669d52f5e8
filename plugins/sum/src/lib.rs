//! `sum` — the Cortex "sum" example as a wasmbatch plugin: state lives in `/mnt`.
//!
//! Each item is an array of numbers. Each batch writes the sums of its items to
//! `/mnt/<job_id>/batch-<batch_id>.json`; on-job-complete reads them all back and writes
//! `/mnt/<job_id>/result.json` with every sum, their count and their total. Because the
//! batches' results are files, this is correct with any number of workers (the Cortex
//! original kept them in memory, which is only correct with one); because each file is
//! named by the batch identifier, which every attempt at a batch shares, a batch that
//! runs twice (a retry, a redelivery) leaves one file, and the total stays right.
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p sum`
//! Run:   `wasmbatch serve --plugin target/wasm32-wasip1/release/sum.wasm --mount ./out`
//! then   `curl -d '[[1,2],[3,4]]' -H 'X-Cortex-Job-ID: j1' localhost:8080/`
//! and    `curl -d '{"message":"job_complete"}' -H 'X-Cortex-Job-ID: j1' localhost:8080/on-job-complete`

use std::fs;
use std::path::PathBuf;

use serde_json::json;
use wasmbatch_guest::{Context, ErrorContext, JobComplete, Result, info, invalid};

fn job_dir(ctx: &Context) -> Result<PathBuf> {
    let id = ctx.job_id();
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        invalid!("job id {id:?} cannot name a directory");
    }
    Ok(PathBuf::from("/mnt").join(id))
}

#[wasmbatch_guest::handler]
fn handle(ctx: &Context, items: Vec<Vec<f64>>) -> Result<()> {
    let sums: Vec<f64> = items.iter().map(|item| item.iter().sum()).collect();
    let dir = job_dir(ctx)?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Written whole under a temporary name, then renamed: a reader never sees half a
    // file, and a second attempt at the batch replaces the first one's output.
    let path = dir.join(format!("batch-{}.json", ctx.batch_id()));
    let partial = dir.join(format!(".partial-{}-{}", ctx.batch_id(), ctx.attempt()));
    fs::write(&partial, serde_json::to_vec(&sums)?).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[wasmbatch_guest::on_job_complete]
fn on_job_complete(ctx: &Context, _done: &JobComplete) -> Result<()> {
    let dir = job_dir(ctx)?;
    let mut sums = Vec::new();
    let mut batches = 0;
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let is_batch = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("batch-"));
        if is_batch {
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let batch: Vec<f64> =
                serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
            sums.extend(batch);
            batches += 1;
        }
    }
    let total: f64 = sums.iter().sum();
    let result =
        json!({ "job_id": ctx.job_id(), "batches": batches, "items": sums.len(), "total": total, "sums": sums });
    fs::write(dir.join("result.json"), serde_json::to_vec_pretty(&result)?).context("writing result.json")?;
    info!("aggregated {} sums from {batches} batches: total {total}", sums.len());
    Ok(())
}
