"""The FastAPI baseline: the same contract as the noop plugin behind wasmbatch serve.

What most Cortex users ran: parse the JSON array body, answer 200. Started by
bench/run.py with uvicorn, one worker.
"""

from typing import Any, List

from fastapi import FastAPI, Response

app = FastAPI()


@app.get("/healthz")
def healthz():
    return Response(status_code=200)


@app.post("/")
def handle_batch(batch: List[Any]):
    return Response(status_code=200)


@app.post("/on-job-complete")
def on_job_complete():
    return Response(status_code=200)
