#!/usr/bin/env python3
"""Runs every wasmbatch benchmark side by side and prints one table.

Driven by scripts/bench.sh, which builds the binaries and the FastAPI virtualenv and
sets WASMBATCH_BIN, BENCH_BIN, PLUGIN_DIR, VENV_PYTHON and OUT_DIR. Each comparison runs
its candidates back to back in this one invocation and is reported as a ratio as well
as absolute figures, because a 2-core shared machine is noisy. All load goes to
127.0.0.1 and every run is bounded in time.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

WASMBATCH = os.environ["WASMBATCH_BIN"]
BENCH = os.environ["BENCH_BIN"]
PLUGINS = Path(os.environ["PLUGIN_DIR"])
VENV_PYTHON = os.environ.get("VENV_PYTHON")
OUT = Path(os.environ.get("OUT_DIR", tempfile.mkdtemp()))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ROOT = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.mkdtemp(prefix="wasmbatch-bench-"))
QUIET = dict(os.environ, RUST_LOG="warn")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server never became ready")


def start(cmd, port, cwd=None):
    proc = subprocess.Popen(cmd, env=QUIET, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, proc)
    return proc


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_kib(pid, field="VmRSS"):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_json(cmd, **kw):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=QUIET, **kw).stdout
    return json.loads(out.strip().splitlines()[-1])


def load(port, connections, body_file):
    return run_json([BENCH, "load", f"127.0.0.1:{port}", str(connections), str(SECONDS), str(body_file)])


def timed(cmd):
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=QUIET)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    return elapsed, out.stdout


def batch_body():
    items = [
        {"id": f"item-{i:04d}", "user": f"u-{1234567 + i}", "score": round(0.123456 * (i + 1), 6), "tags": ["alpha", "beta"], "ok": True}
        for i in range(10)
    ]
    path = WORK / "batch.json"
    path.write_text(json.dumps(items, separators=(",", ":")))
    return path


def http_path(results):
    body = batch_body()
    print(f"\n## HTTP contract path (noop handler, {body.stat().st_size}-byte batch of 10 items; "
          f"{ROUNDS} alternating rounds of {SECONDS:.0f} s runs, median)")
    servers = []
    port = free_port()
    servers.append(("wasmbatch serve", [WASMBATCH, "serve", "--plugin", str(PLUGINS / "noop.wasm"), "--host", "127.0.0.1",
                                        "--port", str(port), "--no-mount", "--concurrency", "2", "--queue-depth", "64",
                                        "--job-spec", "/nonexistent"], port, None))
    port = free_port()
    servers.append(("native hyper (ceiling)", [BENCH, "native-server", str(port)], port, None))
    if VENV_PYTHON:
        port = free_port()
        servers.append(("FastAPI + uvicorn", [VENV_PYTHON, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
                                              "--workers", "1", "--log-level", "warning", "--no-access-log"], port, ROOT / "bench"))
    rows = {name: {"runs": {1: [], 32: []}} for name, *_ in servers}
    # Rounds that alternate the servers, so that a slow spell of the shared machine hits
    # all of them alike; each figure is the run with the median rate.
    for round_ in range(ROUNDS):
        for name, cmd, port, cwd in servers:
            proc = start(cmd, port, cwd)
            if round_ == 0:
                rows[name]["idle_rss_kib"] = rss_kib(proc.pid)
            for connections in (1, 32):
                rows[name]["runs"][connections].append(load(port, connections, body))
            rows[name]["peak_rss_kib"] = max(rows[name].get("peak_rss_kib", 0), rss_kib(proc.pid, "VmHWM"))
            stop(proc)
    for row in rows.values():
        for connections, runs in row.pop("runs").items():
            row[connections] = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    results["http"] = rows
    ceiling = rows["native hyper (ceiling)"]
    print("| server | conns | batches/s | p50 µs | p99 µs | errors/non-200 | vs native | vs FastAPI |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        for c in (1, 32):
            r = row[c]
            vs_native = r["rate"] / ceiling[c]["rate"]
            fast = rows.get("FastAPI + uvicorn")
            vs_fast = f"{r['rate'] / fast[c]['rate']:.1f}×" if fast else "—"
            bad = r["errors"] + sum(r["other"].values())
            print(f"| {name} | {c} | {r['rate']:,.0f} | {r['p50_us']} | {r['p99_us']} | {bad} | {vs_native:.2f} | {vs_fast} |")


def item_list_job(batches, path):
    items = list(range(batches * 10))
    path.write_text(json.dumps({"workers": 2, "item_list": {"items": items, "batch_size": 10}}))
    return path


def in_process_vs_http(results):
    batches = int(os.environ.get("BENCH_JOB_BATCHES", "50000"))
    job = item_list_job(batches, WORK / "noop-job.json")
    print(f"\n## In-process vs HTTP (the same job: {batches:,} batches of 10 items, 2 workers, noop)")
    common = ["--progress", "off", "--output", "json", "--dead-letter", str(WORK / "dl.jsonl")]
    inproc, _ = timed([WASMBATCH, "run", str(job), "--plugin", str(PLUGINS / "noop.wasm"), "--no-mount", *common])
    port = free_port()
    proc = start([WASMBATCH, "serve", "--plugin", str(PLUGINS / "noop.wasm"), "--host", "127.0.0.1", "--port", str(port),
                  "--no-mount", "--concurrency", "2", "--queue-depth", "64", "--job-spec", "/nonexistent"], port)
    http, _ = timed([WASMBATCH, "run", str(job), "--endpoint", f"http://127.0.0.1:{port}", *common])
    stop(proc)
    results["in_process_vs_http"] = {"batches": batches, "in_process_s": inproc, "http_s": http}
    print("| executor | wall s | batches/s | µs per batch (all costs) | ratio |")
    print("|---|---|---|---|---|")
    for name, secs in (("run --plugin (in-process)", inproc), ("run --endpoint → serve", http)):
        print(f"| {name} | {secs:.2f} | {batches / secs:,.0f} | {secs / batches * 1e6:.1f} | {inproc / secs:.2f} |")


def operator_config(path, mount):
    path.write_text(
        "max_workers = 2\n"
        f"[[api]]\nname = \"noop\"\nplugin = \"{PLUGINS / 'noop.wasm'}\"\nmax_workers = 2\n"
        f"[[api]]\nname = \"sum\"\nplugin = \"{PLUGINS / 'sum.wasm'}\"\nmount = \"{mount}\"\nmax_workers = 2\n"
    )
    return path


def start_operator(config, data):
    port = free_port()
    proc = start([WASMBATCH, "operator", "--config", str(config), "--data-dir", str(data), "--host", "127.0.0.1",
                  "--port", str(port)], port)
    return proc, f"http://127.0.0.1:{port}"


def http_json(method, url, body=None):
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def submit_and_wait(base, api, job_bytes, poll=0.01):
    job_id = http_json("POST", f"{base}/batch/{api}", job_bytes)["job_id"]
    while True:
        status = http_json("GET", f"{base}/batch/{api}?jobID={job_id}")
        if status["job_status"]["status"] not in ("pending", "running"):
            return job_id, status
        time.sleep(poll)


def operator(results):
    batches = int(os.environ.get("BENCH_JOB_BATCHES", "50000"))
    job = item_list_job(batches, WORK / "op-job.json")
    mount = WORK / "op-out"
    mount.mkdir(exist_ok=True)
    config = operator_config(WORK / "apis.toml", mount)
    print(f"\n## Job service (operator with its SQLite journal) vs `run` (same job: {batches:,} batches of 10 items, "
          "2 workers, noop)")
    common = ["--progress", "off", "--output", "json", "--dead-letter", str(WORK / "dl.jsonl")]
    runs, ops = [], []
    for _ in range(ROUNDS):
        secs, _ = timed([WASMBATCH, "run", str(job), "--plugin", str(PLUGINS / "noop.wasm"), "--no-mount", *common])
        runs.append(secs)
        data = WORK / f"op-data-{len(ops)}"
        proc, base = start_operator(config, data)
        started = time.perf_counter()
        _, status = submit_and_wait(base, "noop", job.read_bytes())
        ops.append(time.perf_counter() - started)
        assert status["job_status"]["status"] == "succeeded", status
        stop(proc)
    run_s, op_s = statistics.median(runs), statistics.median(ops)
    print("| path | wall s (median) | batches/s | ratio to run |")
    print("|---|---|---|---|")
    print(f"| run --plugin (in-process, journaled) | {run_s:.2f} | {batches / run_s:,.0f} | 1.00 |")
    print(f"| operator: POST, run, poll until succeeded | {op_s:.2f} | {batches / op_s:,.0f} | {run_s / op_s:.2f} |")

    # Submission to the first batch's output, one batch of the sum plugin.
    proc, base = start_operator(config, WORK / "op-latency")
    latencies = []
    one = json.dumps({"workers": 1, "item_list": {"items": [[1, 2]], "batch_size": 1}}).encode()
    for _ in range(20):
        started = time.perf_counter()
        job_id = http_json("POST", f"{base}/batch/sum", one)["job_id"]
        output = mount / job_id / "batch-0.json"
        while not output.exists():
            time.sleep(0.0005)
        latencies.append(time.perf_counter() - started)
    stop(proc)
    latency_ms = statistics.median(latencies) * 1e3
    print(f"\nsubmit → first batch handled (output written), median of 20: {latency_ms:.1f} ms (goal < 20 ms)")

    # Restart to resumed work, a job of 1,000,000 batches interrupted by SIGKILL.
    big = WORK / "million.json"
    big.write_text(json.dumps({"workers": 2, "item_list": {"items": list(range(1_000_000)), "batch_size": 1}}))
    data = WORK / "op-restart"
    proc, base = start_operator(config, data)
    job_id = http_json("POST", f"{base}/batch/noop", big.read_bytes())["job_id"]
    while http_json("GET", f"{base}/batch/noop?jobID={job_id}")["metrics"]["succeeded"] < 100_000:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = None
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([WASMBATCH, "operator", "--config", str(config), "--data-dir", str(data), "--host",
                             "127.0.0.1", "--port", str(port)], env=QUIET, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_ready(port, proc)
    ready = time.perf_counter() - started
    base = f"http://127.0.0.1:{port}"
    while True:
        succeeded = http_json("GET", f"{base}/batch/noop?jobID={job_id}")["metrics"]["succeeded"]
        if done_before is None:
            done_before = succeeded
        elif succeeded > done_before:
            break
        time.sleep(0.002)
    resumed = time.perf_counter() - started
    stop(proc)
    print(f"restart of a 1,000,000-batch job killed after {done_before:,} batches: listening after {ready * 1e3:.0f} ms, "
          f"new batches recorded after {resumed * 1e3:.0f} ms (goal < 2 s)")
    results["operator"] = {"batches": batches, "run_s": run_s, "operator_s": op_s, "ratio": run_s / op_s,
                           "submit_to_first_batch_ms": latency_ms, "restart_ready_ms": ready * 1e3,
                           "restart_resumed_ms": resumed * 1e3}


def corpus(path, docs):
    lines = [l for l in (ROOT / "samples" / "documents.jsonl").read_text().splitlines() if l.strip()]
    with open(path, "w") as f:
        for i in range(docs):
            doc = json.loads(lines[i % len(lines)])
            words = doc["text"].split()
            # Vary each copy a little (rotate the words) so no two documents are equal.
            k = i % len(words)
            text = " ".join(words[k:] + words[:k])
            f.write(json.dumps({"id": f"{doc['id']}-{i}", "text": text * 4}) + "\n")
    return path


def wasm_vs_native(results):
    docs = int(os.environ.get("BENCH_DOCS", "20000"))
    data = corpus(WORK / "corpus.jsonl", docs)
    print(f"\n## Wasm vs native (textstats, {docs:,} documents of ~350 words, batches of 20; median of 3)")
    rows = []
    for workers in (1, 2):
        job = WORK / f"textstats-{workers}.json"
        job.write_text(json.dumps({"workers": workers, "config": {"write_results": False},
                                   "delimited_files": {"s3_paths": [str(data)], "batch_size": 20}}))
        native_runs, wasm_runs = [], []
        # Both sides timed the same way (the whole process, reading the file included),
        # alternating, three times each; the median counts.
        for _ in range(3):
            native_runs.append(timed([BENCH, "textstats-native", str(data), "20", str(workers)])[0])
            wasm_runs.append(timed([WASMBATCH, "run", str(job), "--plugin", str(PLUGINS / "textstats.wasm"), "--no-mount",
                                    "--progress", "off", "--output", "json", "--dead-letter", str(WORK / "dl.jsonl")])[0])
        rows.append({"workers": workers, "native_items_s": docs / statistics.median(native_runs),
                     "wasm_items_s": docs / statistics.median(wasm_runs)})
    results["wasm_vs_native"] = rows
    print("| workers | native items/s | wasmbatch run items/s | wasm / native |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['native_items_s']:,.0f} | {r['wasm_items_s']:,.0f} | {r['wasm_items_s'] / r['native_items_s']:.2f} |")
    print(f"scaling 1 → 2 workers: native {rows[1]['native_items_s'] / rows[0]['native_items_s']:.2f}×, "
          f"wasm {rows[1]['wasm_items_s'] / rows[0]['wasm_items_s']:.2f}×")


def startup(results):
    print("\n## Start-up (process start → GET /healthz 200, textstats plugin; median of 5)")
    cwasm = WORK / "textstats.cwasm"
    subprocess.run([WASMBATCH, "compile", str(PLUGINS / "textstats.wasm"), "-o", str(cwasm)], check=True, capture_output=True)

    def once(plugin, cache):
        port = free_port()
        cmd = [WASMBATCH, "serve", "--plugin", str(plugin), "--host", "127.0.0.1", "--port", str(port), "--no-mount",
               "--concurrency", "2", "--job-spec", "/nonexistent", "--cache-dir", str(cache)]
        return run_json([BENCH, "startup", f"http://127.0.0.1:{port}", "--", *cmd])

    cold = []
    for i in range(5):
        cache = WORK / f"cold-cache-{i}"
        cold.append(once(PLUGINS / "textstats.wasm", cache))
    warm_cache = WORK / "warm-cache"
    once(PLUGINS / "textstats.wasm", warm_cache)
    warm = [once(PLUGINS / "textstats.wasm", warm_cache) for _ in range(5)]
    pre = [once(cwasm, WORK / "unused-cache") for _ in range(5)]
    rows = {"raw .wasm, cold cache": cold, "raw .wasm, warm cache": warm, "precompiled .cwasm": pre}
    results["startup"] = {k: [r["ready_ms"] for r in v] for k, v in rows.items()}
    print("| plugin file | ready ms (median) | min | max | idle RSS MiB |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        ms = [r["ready_ms"] for r in runs]
        print(f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} | {runs[-1]['idle_rss_kib'] / 1024:.1f} |")
    http = results.get("http", {}).get("wasmbatch serve")
    if http:
        print(f"\nwasmbatch serve (noop) RSS: idle {http['idle_rss_kib'] / 1024:.1f} MiB, "
              f"peak under the 32-connection load {http['peak_rss_kib'] / 1024:.1f} MiB")


def main():
    print(f"# wasmbatch benchmarks — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")
    results = {}
    sections = sys.argv[1:] or ["http", "jobs", "operator", "native", "startup"]
    if "http" in sections:
        http_path(results)
    if "jobs" in sections:
        in_process_vs_http(results)
    if "operator" in sections:
        operator(results)
    if "native" in sections:
        wasm_vs_native(results)
    if "startup" in sections:
        startup(results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latest.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
