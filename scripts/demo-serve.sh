#!/usr/bin/env bash
# The same sample job, through the container contract: starts `wasmbatch serve` with the
# textstats plugin on a free port, then `wasmbatch run --endpoint` sends it the batches
# as Cortex's dequeuer would (POST / with X-Cortex-Job-ID, then /on-job-complete), and
# the server is stopped with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
build_all

work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/mnt"
"$BIN" --log-format json serve --plugin "$PLUGIN_DIR/textstats.wasm" --host 127.0.0.1 --port 0 \
  --job-spec "$work/no-spec.json" --mount "$work/mnt" 2> "$work/serve.log" &
server=$!
addr=$(wait_listening "$work/serve.log" "$server")
echo "wasmbatch serve is listening on $addr"
"$BIN" run samples/textstats-job.json --endpoint "http://$addr" --dead-letter "$work/dead-letter.jsonl"
kill -TERM "$server"; wait "$server"
echo "server stopped cleanly"
