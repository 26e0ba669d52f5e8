"""What a Python batch handler can ask of the wasmbatch host, inside its sandbox.

The stand-in for what a handler reached for outside one: `requests` (`http`),
`boto3` (`get`, `read`, `put`), the Cortex client (`submit_job`), and the batch's
identity (`batch_id`, `attempt`). Results go out with `emit` (or by returning a value
from `handle_batch`); items that failed with `fail_item` and `reject_item`.

Every call that reaches out is checked against the API's grants (`allow_http`,
`allow_read`, `allow_write`): without one, it raises `Refused`.
"""

import json as _json

from wit_world.imports import host as _host
from componentize_py_types import Err as _Err

__all__ = [
    "Refused", "Failed", "NotFound", "HostError", "InvalidInput", "Response",
    "batch_id", "attempt", "emit", "fail_item", "reject_item", "submit_job",
    "http", "get", "read", "put", "results",
    "error", "warn", "info", "debug", "trace",
]


class HostError(Exception):
    """A call to the host did not succeed."""


class Refused(HostError):
    """Not granted, or not a valid request: nothing was sent."""


class Failed(HostError):
    """Sent, and failed: no connection, a timeout, an answer over the limit."""


class NotFound(HostError, FileNotFoundError):
    """There is no such object."""


class InvalidInput(Exception):
    """Raise it from a handler for a batch that can never succeed: it is not tried again."""


def _call(function, *args):
    try:
        return function(*args)
    except _Err as e:
        error = e.value
        name = type(error).__name__
        message = getattr(error, "value", error)
        if name.endswith("Refused"):
            raise Refused(message) from None
        if name.endswith("NotFound"):
            raise NotFound(message) from None
        if name.endswith("Failed"):
            raise Failed(message) from None
        raise HostError(message) from None


def batch_id():
    """The identifier of the batch in progress (the same on every attempt); None outside one."""
    return _host.batch_id()


def attempt():
    """The attempt at the batch in progress, 1 for the first; 0 outside one."""
    return _host.attempt()


def emit(value):
    """Adds one result (anything `json.dumps` takes) to the batch's results."""
    _call(_host.emit, _json.dumps(value))


def fail_item(index, message):
    """Fails the batch's item `index` (from 0): it is tried again alone."""
    _host.item_error(index, str(message))


def reject_item(index, message):
    """Rejects the batch's item `index`: it will never succeed and is not tried again."""
    _host.item_reject(index, str(message))


def submit_job(api, job):
    """Submits `job` (a job submission, a dict) to the API `api`; the new job's ID."""
    return _call(_host.submit_job, api, _json.dumps(job))


class Response:
    """An HTTP answer: `status`, `headers` (a list of pairs), `content` (bytes)."""

    def __init__(self, status, headers, content):
        self.status = self.status_code = status
        self.headers = headers
        self.content = content

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def json(self):
        return _json.loads(self.content)

    def header(self, name):
        """The first value of the header `name`, or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def http(method, url, headers=None, body=b"", json=None):
    """Sends an HTTP request to a host of `allow_http`, under the batch's deadline."""
    headers = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
    if json is not None:
        body = _json.dumps(json).encode()
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode()
    answer = _call(_host.http_request, _host.Request(method.upper(), url, headers, bytes(body)))
    return Response(answer.status, answer.headers, answer.body)


def get(url):
    """Reads a whole object (`allow_read`): `s3://`, `gs://`, `az://` or `file://`."""
    return _call(_host.object_get, url)


def read(url, offset, length):
    """Reads `length` bytes of an object from `offset` (`allow_read`); fewer at its end."""
    return _call(_host.object_read, url, offset, length)


def put(url, data):
    """Writes an object whole (`allow_write`); `data` is bytes or text."""
    if isinstance(data, str):
        data = data.encode()
    _call(_host.object_put, url, bytes(data))


def results():
    """In `on_job_complete`: the job's results, in order, as `(batch, result)` pairs."""
    _call(_host.results_open)
    while True:
        line = _call(_host.results_next)
        if line is None:
            return
        record = _json.loads(line)
        yield record["batch"], record["result"]


def _logger(level):
    def log(message, *args):
        _host.log(level, str(message) % args if args else str(message))
    return log


error = _logger(_host.Level.ERROR)
warn = _logger(_host.Level.WARN)
info = _logger(_host.Level.INFO)
debug = _logger(_host.Level.DEBUG)
trace = _logger(_host.Level.TRACE)
