"""A Python handler run by native CPython over a JSON Lines file, in N processes: the
baseline of `wasmbatch run --plugin handler.py` with N workers.

    native_run.py HANDLER DOCS.jsonl BATCH_SIZE PROCESSES

Each process builds the handler once (as each wasmbatch instance does) and handles its
share of the batches; prints {"batches", "seconds"}.
"""

import importlib.util
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "stub"))

handler = None


def start(path):
    global handler
    spec = importlib.util.spec_from_file_location("handler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.Handler(config={"write_results": False}, job_spec={})


def handle(batch):
    handler.handle_batch(payload=json.loads(batch), batch_id="")
    return 1


def main():
    path, docs, size, processes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    lines = [line for line in open(docs) if line.strip()]
    batches = ["[" + ",".join(lines[i : i + size]) + "]" for i in range(0, len(lines), size)]
    started = time.monotonic()
    with multiprocessing.Pool(processes, initializer=start, initargs=(path,)) as pool:
        done = sum(pool.imap_unordered(handle, batches, chunksize=4))
    print(json.dumps({"batches": done, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
