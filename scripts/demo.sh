#!/usr/bin/env bash
# The main job on the bundled sample data: builds wasmbatch and the plugins, starts
# `wasmbatch serve` with the textstats plugin, posts the sample documents to it in
# batches of 4 as Cortex would (POST / with X-Cortex-Job-ID), calls /on-job-complete,
# prints the job's summary, and stops the server with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_wasm_target
scripts/build-plugins.sh
cargo build -p wasmbatch
BIN="$CARGO_TARGET_DIR/debug/wasmbatch"

work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/mnt" "$work/spec"
job_id=$(printf '%016x' $(( 0x7fffffffffffffff - $(date +%s%N) )))
cat > "$work/spec/job.json" <<JSON
{"job_id": "$job_id", "api_name": "textstats", "kind": "BatchAPI", "workers": 1, "config": {}}
JSON

"$BIN" --log-format json serve --plugin "$PLUGIN_DIR/textstats.wasm" --host 127.0.0.1 --port 0 \
  --job-spec "$work/spec/job.json" --mount "$work/mnt" 2> "$work/log" &
server=$!
for _ in $(seq 1 600); do
  addr=$(sed -n 's/.*"message":"listening".*"addr":"\([^"]*\)".*/\1/p; s/.*"addr":"\([^"]*\)".*"message":"listening".*/\1/p' "$work/log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start" >&2; cat "$work/log" >&2; exit 1; }
echo "wasmbatch serve is listening on $addr (job $job_id)"

# Split the JSON Lines sample into batches of 4 items, each a JSON array.
python3 - "$work" <<'PY'
import json, sys
docs = [json.loads(l) for l in open("samples/documents.jsonl") if l.strip()]
for n, i in enumerate(range(0, len(docs), 4)):
    with open(f"{sys.argv[1]}/batch-{n}.json", "w") as f:
        json.dump(docs[i:i + 4], f)
PY
for batch in "$work"/batch-*.json; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -H "X-Cortex-Job-ID: $job_id" --data-binary @"$batch" "http://$addr/")
  echo "POST / $(basename "$batch") -> $code"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Cortex-Job-ID: $job_id" \
  -d '{"message":"job_complete"}' "http://$addr/on-job-complete")
echo "POST /on-job-complete -> $code"

echo "summary written by the plugin to /mnt/$job_id/summary.json:"
python3 - "$work/mnt/$job_id/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  documents: {s['documents']}, words: {s['words']}, distinct words: {s['distinct_words']}")
print(f"  mean reading ease (Flesch): {s['mean_reading_ease']}")
print("  top words: " + ", ".join(f"{w} ({n})" for w, n in s["top_words"]))
PY
kill -TERM "$server"; wait "$server"
echo "server stopped cleanly"
