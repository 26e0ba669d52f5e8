"""Text statistics over documents: the sample job's handler, in Python.

A Cortex batch handler, unchanged in form: `Handler(config, job_spec)`,
`handle_batch(payload, batch_id)`, `on_job_complete()`. Each item is a document
`{"id": ..., "text": ...}`; each batch returns its documents' statistics and its word
counts (the batch's results). On job completion it reads the job's results and writes
`/mnt/<job_id>/summary.json`: documents, words, mean reading ease, top words — the
same summary as the Rust `textstats` plugin.

    wasmbatch run samples/textstats-job.json --plugin samples/python/textstats.py --mount out
"""

import json
import os
import re
from collections import Counter

import wasmbatch

STOP_WORDS = set(
    "a an and are as at be but by for from had has have he her his i in is it its not of on or she so that the "
    "their them there they this to was we were which who with would you".split()
)
SENTENCE_END = re.compile(r"[.!?]")


def syllables(word):
    count, previous_vowel = 0, False
    for c in word:
        vowel = c in "aeiouy"
        if vowel and not previous_vowel:
            count += 1
        previous_vowel = vowel
    if word.endswith("e") and not word.endswith("le") and count > 1:
        count -= 1
    return max(count, 1)


def word_counts(text):
    counts = Counter()
    for raw in re.split(r"[^\w']|_", text):
        word = raw.strip("'").lower()
        if word and any(c.isalpha() for c in word):
            counts[word] += 1
    return counts


def top_words(counts, n=10):
    ranked = sorted(
        ((w, c) for w, c in counts.items() if len(w) > 1 and w not in STOP_WORDS), key=lambda wc: (-wc[1], wc[0])
    )
    return [[w, c] for w, c in ranked[:n]]


def analyze(doc):
    text = doc["text"]
    sentences = max(sum(1 for s in SENTENCE_END.split(text) if any(c.isalnum() for c in s)), 1)
    counts = word_counts(text)
    words = sum(counts.values())
    syllable_total = sum(syllables(w) * n for w, n in counts.items())
    ease = 0.0 if words == 0 else 206.835 - 1.015 * (words / sentences) - 84.6 * (syllable_total / words)
    return {
        "id": doc["id"],
        "sentences": sentences,
        "words": words,
        "syllables": syllable_total,
        "distinct_words": len(counts),
        "reading_ease": round(ease, 2),
        "top_words": top_words(counts),
    }


class Handler:
    def __init__(self, config, job_spec):
        self.job_id = job_spec.get("job_id", "")
        self.write_results = config.get("write_results", True)
        self.batches = 0  # kept across this instance's batches

    def handle_batch(self, payload, batch_id):
        self.batches += 1
        stats = [analyze(doc) for doc in payload]
        if not self.write_results:
            return None
        batch_words = Counter()
        for doc in payload:
            batch_words.update(word_counts(doc["text"]))
        wasmbatch.debug(f"batch {batch_id}: {len(payload)} documents")
        return {"documents": stats, "batch_words": batch_words}

    def on_job_complete(self):
        if not self.write_results or not os.path.isdir("/mnt"):
            return
        documents, words, ease_sum, corpus = 0, 0, 0.0, Counter()
        try:
            results = list(wasmbatch.results())
        except wasmbatch.HostError as e:
            wasmbatch.warn(f"no corpus summary: {e}")
            return
        for _, result in results:
            for s in result["documents"]:
                documents += 1
                words += s["words"]
                ease_sum += s["reading_ease"]
            corpus.update(result["batch_words"])
        mean_ease = 0.0 if documents == 0 else round(ease_sum / documents, 2)
        summary = {
            "job_id": self.job_id,
            "documents": documents,
            "words": words,
            "distinct_words": len(corpus),
            "mean_reading_ease": mean_ease,
            "top_words": top_words(corpus),
        }
        os.makedirs(f"/mnt/{self.job_id}", exist_ok=True)
        with open(f"/mnt/{self.job_id}/summary.json", "w") as f:
            json.dump(summary, f, indent=2)
        wasmbatch.info(f"summary: {documents} documents, {words} words, mean reading ease {mean_ease}")
