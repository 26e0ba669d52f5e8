"""A Cortex Python handler behind FastAPI + uvicorn: what Cortex's Python serving ran.

The handler file is named by WASMBATCH_BENCH_HANDLER; `POST /` parses the batch and
calls `handle_batch(payload, batch_id)`, as Cortex did. Started by bench/run.py.
"""

import importlib.util
import os
import sys
from typing import Any, List

from fastapi import FastAPI, Header, Response

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "stub"))
path = os.environ["WASMBATCH_BENCH_HANDLER"]
spec = importlib.util.spec_from_file_location("handler", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.Handler(config={})

app = FastAPI()


@app.get("/healthz")
def healthz():
    return Response(status_code=200)


@app.post("/")
def handle_batch(batch: List[Any], x_cortex_job_id: str = Header(default="")):
    handler.handle_batch(payload=batch, batch_id="")
    return Response(status_code=200)


@app.post("/on-job-complete")
def on_job_complete():
    return Response(status_code=200)
