#!/usr/bin/env bash
# The same sample job, through the job service: writes a configuration hosting the
# textstats plugin as the API "textstats", starts `wasmbatch operator` on a free port
# with a fresh data directory, submits the sample job with `wasmbatch submit --watch`,
# shows it as `wasmbatch get` prints it, and stops the operator with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
build_all

work=$(mktemp -d)
trap 'kill "$operator" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/out"
cat > "$work/apis.toml" <<TOML
max_workers = 2

[[api]]
name = "textstats"
plugin = "$PLUGIN_DIR/textstats.wasm"
mount = "out"
max_workers = 2
allow_inputs = ["file://$PWD/samples/"]
TOML
# The sample job's input path made absolute: the operator reads it, not this shell.
python3 - "$PWD" > "$work/job.json" <<'PY'
import json, os, sys
root = sys.argv[1]
job = json.load(open(os.path.join(root, "samples", "textstats-job.json")))
for source in ("delimited_files", "file_path_lister"):
    if source in job:
        job[source]["s3_paths"] = [os.path.join(root, p) for p in job[source]["s3_paths"]]
print(json.dumps(job))
PY
"$BIN" --log-format json operator --config "$work/apis.toml" --data-dir "$work/data" --host 127.0.0.1 --port 0 \
  2> "$work/operator.log" &
operator=$!
addr=$(wait_listening "$work/operator.log" "$operator")
echo "wasmbatch operator is listening on $addr (journal in $work/data)"
export WASMBATCH_OPERATOR="http://$addr"
"$BIN" submit textstats "$work/job.json" --watch
job_id=$("$BIN" get textstats -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["jobs"][0]["job_id"])')
echo
"$BIN" get textstats "$job_id" | head -n 14
echo
echo "corpus summary: $(python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["documents"], "documents,", s["words"], "words")' "$work/out/$job_id/summary.json")"
kill -TERM "$operator"; wait "$operator"
echo "operator stopped cleanly"
