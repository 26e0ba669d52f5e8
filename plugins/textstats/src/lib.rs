//! `textstats` — text statistics over documents: the real CPU-bound workload.
//!
//! Each item is a document `{"id": "...", "text": "..."}`. For each one the plugin
//! counts sentences, words, syllables and distinct words, computes the Flesch reading
//! ease score, and finds the most frequent words (stop words left out). Each batch's
//! results are its documents' statistics and the batch's word counts; on-job-complete
//! reads the job's results (each batch's once, however many instances, workers or
//! servers handled them) and writes `/mnt/<job_id>/summary.json` (documents, words,
//! mean reading ease, the corpus's top words) when `/mnt` is mounted. Behind a sender
//! that keeps no results (Cortex, `curl`) it writes no summary and says why. Set
//! `"write_results": false` in the job's `config` to compute only (what the benchmarks
//! do).
//!
//! The analysis is plain Rust in [`analyze`], so the same code also builds natively.
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p textstats`
//! Run:   `wasmbatch serve --plugin target/wasm32-wasip1/release/textstats.wasm --mount ./out`

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wasmbatch_guest::{Context, ErrorContext, JobComplete, Result, info, invalid, warn};

/// One input document. Its strings borrow from the batch (copied only when they hold
/// escapes).
#[derive(Debug, Deserialize)]
pub struct Document<'a> {
    /// The document's name, carried into its result.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The text to analyze.
    #[serde(borrow)]
    pub text: Cow<'a, str>,
}

/// What [`analyze`] finds in one document.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// The document's ID.
    pub id: String,
    /// Sentences (runs ending in `.`, `!` or `?`, at least one).
    pub sentences: u64,
    /// Words.
    pub words: u64,
    /// Syllables, by a vowel-group heuristic.
    pub syllables: u64,
    /// Distinct words, case-folded.
    pub distinct_words: u64,
    /// Flesch reading ease (higher is easier).
    pub reading_ease: f64,
    /// The most frequent words that are not stop words, with their counts.
    pub top_words: Vec<(String, u64)>,
}

const TOP: usize = 10;

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "had", "has", "have", "he", "her", "his",
    "i", "in", "is", "it", "its", "not", "of", "on", "or", "she", "so", "that", "the", "their", "them", "there",
    "they", "this", "to", "was", "we", "were", "which", "who", "with", "would", "you",
];

fn syllables(word: &str) -> u64 {
    let mut count = 0;
    let mut previous_vowel = false;
    for c in word.chars() {
        let vowel = matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y');
        if vowel && !previous_vowel {
            count += 1;
        }
        previous_vowel = vowel;
    }
    if word.ends_with('e') && !word.ends_with("le") && count > 1 {
        count -= 1;
    }
    count.max(1)
}

/// Counts words per distinct word, case-folded, letters and apostrophes only.
fn word_counts(text: &str) -> (HashMap<String, u64>, u64, u64) {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let (mut words, mut syllable_total) = (0, 0);
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let word = raw.trim_matches('\'').to_lowercase();
        if word.is_empty() || !word.chars().any(char::is_alphabetic) {
            continue;
        }
        words += 1;
        syllable_total += syllables(&word);
        *counts.entry(word).or_default() += 1;
    }
    (counts, words, syllable_total)
}

fn top_words(counts: &HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut ranked: Vec<(&String, &u64)> =
        counts.iter().filter(|(w, _)| w.len() > 1 && !STOP_WORDS.contains(&w.as_str())).collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    ranked.into_iter().take(n).map(|(w, c)| (w.clone(), *c)).collect()
}

/// Analyzes one document.
pub fn analyze(doc: &Document<'_>) -> Stats {
    let sentences =
        doc.text.split(['.', '!', '?']).filter(|s| s.chars().any(char::is_alphanumeric)).count().max(1) as u64;
    let (counts, words, syllables) = word_counts(&doc.text);
    let reading_ease = if words == 0 {
        0.0
    } else {
        206.835 - 1.015 * (words as f64 / sentences as f64) - 84.6 * (syllables as f64 / words as f64)
    };
    Stats {
        id: doc.id.to_string(),
        sentences,
        words,
        syllables,
        distinct_words: counts.len() as u64,
        reading_ease: (reading_ease * 100.0).round() / 100.0,
        top_words: top_words(&counts, TOP),
    }
}

fn output_dir(ctx: &Context) -> Result<Option<PathBuf>> {
    if !writes_results(ctx) || !Path::new("/mnt").is_dir() {
        return Ok(None);
    }
    let id = ctx.job_id();
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        invalid!("job id {id:?} cannot name a directory");
    }
    Ok(Some(PathBuf::from("/mnt").join(id)))
}

/// `"write_results": false` in the job's config: compute only.
fn writes_results(ctx: &Context) -> bool {
    ctx.config().get("write_results").and_then(|v| v.as_bool()) != Some(false)
}

/// What a batch emits: each document's statistics, and the batch's word counts (so
/// that the corpus's top words are exact).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Emitted {
    Document(Stats),
    Words { batch_words: HashMap<String, u64> },
}

#[wasmbatch_guest::handler]
fn handle(ctx: &Context, docs: Vec<Document<'_>>) -> Result<Vec<Emitted>> {
    if !writes_results(ctx) {
        for doc in &docs {
            std::hint::black_box(analyze(doc));
        }
        return Ok(Vec::new());
    }
    let mut emitted: Vec<Emitted> = docs.iter().map(|doc| Emitted::Document(analyze(doc))).collect();
    let mut batch_words: HashMap<String, u64> = HashMap::new();
    for doc in &docs {
        for (word, n) in word_counts(&doc.text).0 {
            *batch_words.entry(word).or_default() += n;
        }
    }
    emitted.push(Emitted::Words { batch_words });
    Ok(emitted)
}

#[wasmbatch_guest::on_job_complete]
fn on_job_complete(ctx: &Context, done: &JobComplete) -> Result<()> {
    let Some(dir) = output_dir(ctx)? else { return Ok(()) };
    let results = match ctx.results::<Emitted>() {
        Ok(results) => results,
        Err(e) => {
            // A sender that keeps no results (Cortex itself, `curl`): no summary, said
            // out loud, rather than a summary of this server's share of the batches.
            warn!("no corpus summary: {e}");
            return Ok(());
        }
    };
    let (mut documents, mut words, mut ease_sum) = (0u64, 0u64, 0.0);
    let mut corpus: HashMap<String, u64> = HashMap::new();
    for emitted in results {
        match emitted? {
            Emitted::Document(s) => {
                documents += 1;
                words += s.words;
                ease_sum += s.reading_ease;
            }
            Emitted::Words { batch_words } => {
                for (w, c) in batch_words {
                    *corpus.entry(w).or_default() += c;
                }
            }
        }
    }
    let mean_ease = if documents == 0 { 0.0 } else { (ease_sum / documents as f64 * 100.0).round() / 100.0 };
    let summary = serde_json::json!({
        "job_id": ctx.job_id(),
        "documents": documents,
        "words": words,
        "distinct_words": corpus.len(),
        "mean_reading_ease": mean_ease,
        "top_words": top_words(&corpus, 10),
        "batches": { "succeeded": done.succeeded, "failed": done.failed, "total": done.total },
    });
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = fs::File::create(dir.join("summary.json"))?;
    file.write_all(&serde_json::to_vec_pretty(&summary)?)?;
    info!("summary: {documents} documents, {words} words, mean reading ease {mean_ease}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_small_text() {
        let doc = Document { id: "d".into(), text: "The cat sat. The cat ran away! Did it?".into() };
        let s = analyze(&doc);
        assert_eq!((s.sentences, s.words, s.distinct_words), (3, 9, 7));
        assert_eq!(s.top_words[0], ("cat".to_string(), 2));
    }

    #[test]
    fn empty_text_has_no_words() {
        let s = analyze(&Document { id: "e".into(), text: "  ".into() });
        assert_eq!((s.words, s.reading_ease), (0, 0.0));
    }
}
