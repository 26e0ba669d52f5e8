#!/usr/bin/env bash
# The main job on the bundled sample data: builds wasmbatch and the plugins, then runs
# samples/textstats-job.json (a Cortex job file) in-process with the textstats plugin,
# prints the job's summary and the corpus summary the plugin wrote to /mnt.
#
#   scripts/demo.sh          the Rust plugin
#   scripts/demo.sh python   the same job with the Python handler
#                            samples/python/textstats.py (built with componentize-py)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
build_all
plugin="$PLUGIN_DIR/textstats.wasm"
if [ "${1:-}" = python ]; then
  ensure_componentize_py
  plugin=samples/python/textstats.py
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
"$BIN" run samples/textstats-job.json --plugin "$plugin" --mount "$out" \
  --status-file "$out/status.json" --dead-letter "$out/dead-letter.jsonl" || status=$?

job_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job_id"])' "$out/status.json")
echo "corpus summary written by the plugin to /mnt/$job_id/summary.json:"
python3 - "$out/$job_id/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  documents: {s['documents']}, words: {s['words']}, distinct words: {s['distinct_words']}")
print(f"  mean reading ease (Flesch): {s['mean_reading_ease']}")
print("  top words: " + ", ".join(f"{w} ({n})" for w, n in s["top_words"]))
PY
exit "$status"
