//! `classify` — typed state from `#[init]`, typed config, rejected items, typed
//! results added up in on-job-complete, and chaining, in one small plugin.
//!
//! Each item is `{"id": "...", "score": <number>}`. `#[init]` reads the job's config
//! (`{"bands": [{"label": "low", "below": 10}, …], "then": "<api>"}`, every field with
//! a default) into a lookup table, once per instance. The handler labels each item
//! with the first band its score is below and returns `{"id", "label"}` as the batch's
//! results; an item without a finite score is rejected (dead-lettered at once, never
//! retried). On-job-complete counts the labels over the job's results — each batch's
//! once, so the counts are exact with any number of workers — writes them to
//! `/mnt/<job_id>/labels.json` when `/mnt` is mounted, and, when the config names an
//! API in `then`, submits the counts to it as a new job (one item per label).
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p classify`
//! Run:   `wasmbatch run job.json --plugin target/wasm32-wasip1/release/classify.wasm --mount ./out`

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;
use wasmbatch_guest::{Context, ErrorContext, JobComplete, Result, info, invalid};

/// The job's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bands, in order: an item takes the first whose `below` its score is under.
    #[serde(default = "default_bands")]
    pub bands: Vec<Band>,
    /// An API to submit the label counts to as a new job (chaining).
    #[serde(default)]
    pub then: Option<String>,
}

/// One band of scores.
#[derive(Debug, Clone, Deserialize)]
pub struct Band {
    /// Its label.
    pub label: String,
    /// Scores under this take it; none: every score left.
    #[serde(default)]
    pub below: Option<f64>,
}

fn default_bands() -> Vec<Band> {
    vec![Band { label: "low".into(), below: Some(0.5) }, Band { label: "high".into(), below: None }]
}

/// What `#[init]` builds once per instance: the bands, checked.
pub struct Model {
    bands: Vec<Band>,
}

impl Model {
    /// The label of `score`.
    pub fn label(&self, score: f64) -> &str {
        let band = self.bands.iter().find(|b| b.below.is_none_or(|below| score < below));
        band.map_or("unbanded", |b| b.label.as_str())
    }
}

/// One item.
#[derive(Deserialize)]
pub struct Item {
    id: String,
    #[serde(default)]
    score: Option<f64>,
}

/// One result.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Labelled {
    /// The item's ID.
    pub id: String,
    /// Its label.
    pub label: String,
}

#[wasmbatch_guest::init]
fn init(ctx: &Context) -> Result<Model> {
    let config: Config = ctx.config_as()?;
    if config.bands.is_empty() {
        invalid!("config.bands is empty: give at least one band");
    }
    Ok(Model { bands: config.bands })
}

#[wasmbatch_guest::handler]
fn handle(ctx: &Context, model: &mut Model, items: Vec<Item>) -> Result<Vec<Labelled>> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item.score {
            Some(score) if score.is_finite() => {
                out.push(Labelled { label: model.label(score).to_string(), id: item.id });
            }
            _ => ctx.reject_item(i, format!("item {} has no finite score", item.id)),
        }
    }
    Ok(out)
}

#[wasmbatch_guest::on_job_complete]
fn on_job_complete(ctx: &Context, _model: &mut Model, done: &JobComplete) -> Result<()> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for labelled in ctx.results::<Labelled>()? {
        *counts.entry(labelled?.label).or_default() += 1;
    }
    info!("labels: {counts:?} ({:?} of {:?} batches succeeded)", done.succeeded, done.total);
    let id = ctx.job_id();
    if Path::new("/mnt").is_dir() && !id.is_empty() && !id.contains(['/', '\\']) && !id.starts_with('.') {
        let dir = Path::new("/mnt").join(id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("labels.json"), serde_json::to_vec_pretty(&counts)?).context("writing labels.json")?;
    }
    let config: Config = ctx.config_as()?;
    if let Some(api) = config.then {
        let items: Vec<_> = counts.iter().map(|(label, n)| json!([label, n])).collect();
        let job = json!({"workers": 1, "item_list": {"items": items, "batch_size": 16}});
        let child = ctx.submit_job(&api, &job)?;
        info!("submitted job {child} to {api} with the label counts");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_by_the_first_band_a_score_is_under() {
        let model = Model { bands: default_bands() };
        assert_eq!((model.label(0.1), model.label(0.5), model.label(9.0)), ("low", "high", "high"));
    }

    #[test]
    fn an_item_without_a_score_is_rejected_and_the_others_labelled() {
        let spec = json!({});
        let ctx = Context::for_batch("j", &spec, "0", 1);
        let mut model = Model { bands: default_bands() };
        let items = vec![Item { id: "a".into(), score: Some(0.2) }, Item { id: "b".into(), score: None }];
        let out = handle(&ctx, &mut model, items).unwrap();
        assert_eq!(out, vec![Labelled { id: "a".into(), label: "low".into() }]);
        assert_eq!(wasmbatch_guest::take_rejected_items(), vec![(1, "item b has no finite score".to_string())]);
    }

    #[test]
    fn on_job_complete_counts_the_jobs_results() {
        let spec = json!({});
        let ctx = Context::new("", &spec);
        let results = [(0, json!({"id": "a", "label": "low"})), (3, json!({"id": "b", "label": "low"}))];
        wasmbatch_guest::give_job_results(results);
        let done = JobComplete { message: "job_complete".into(), succeeded: Some(2), failed: Some(0), total: Some(2) };
        on_job_complete(&ctx, &mut Model { bands: default_bands() }, &done).unwrap();
    }
}
