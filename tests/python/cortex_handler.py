"""A Cortex batch handler, written for Cortex, that the tests run unchanged.

Each item is a command string, run in order (the Python twin of `misbehave`):

    ok              nothing
    raise:MSG       raises RuntimeError(MSG): the batch fails, its traceback logged
    invalid:MSG     raises wasmbatch.InvalidInput: the batch is not tried again
    loop            spins forever (the batch's timeout stops it)
    oom             allocates until memory runs out
    socket:HOST:PORT opens a TCP connection (refused in the sandbox)
    http:URL        GETs URL through the host (refused without allow_http)
    thread          starts a thread (there are none in the sandbox)
    subprocess      runs a process (there are none either)
    print:TEXT      prints TEXT
    mean            uses the statistics module, imported inside this method

The handler keeps state across batches (`self.items`) and, on job completion, writes
what this instance saw to `/mnt/<job_id>.json`.
"""

import json


class Handler:
    def __init__(self, config, job_spec):
        self.config = config
        self.job_id = job_spec["job_id"]
        self.items = 0
        self.batches = []
        if config.get("fail_init"):
            raise ValueError("init failed on request")

    def handle_batch(self, payload, batch_id):
        for item in payload:
            verb, _, arg = str(item).partition(":")
            if verb == "raise":
                raise RuntimeError(arg)
            if verb == "invalid":
                import wasmbatch

                raise wasmbatch.InvalidInput(arg)
            if verb == "loop":
                n = 0
                while True:
                    n += 1
            if verb == "oom":
                hoard = []
                while True:
                    hoard.append(bytearray(1 << 20))
            if verb == "socket":
                import socket

                host, _, port = arg.rpartition(":")
                socket.create_connection((host, int(port)), timeout=2)
            if verb == "http":
                import wasmbatch

                print(wasmbatch.http("GET", arg).text)
            if verb == "thread":
                import threading

                threading.Thread(target=print).start()
            if verb == "subprocess":
                import subprocess

                subprocess.run(["true"])
            if verb == "print":
                print(arg)
        self.items += len(payload)
        self.batches.append(batch_id)
        import statistics

        return {"batch_id": batch_id, "items": len(payload), "mean_length": statistics.mean(len(str(i)) for i in payload)}

    def on_job_complete(self):
        from collections import Counter

        words = Counter(self.config.get("words", []))
        with open(f"/mnt/{self.job_id}.json", "w") as f:
            json.dump({"items": self.items, "batches": len(self.batches), "top": words.most_common(1)}, f)
