"""The exports of a Python handler's component: Cortex's `class Handler`, called as
Cortex called it, through the world `wasmbatch:handler`.

`wasmbatch build` puts this module beside the handler and names the handler's module
in `wasmbatch_target` (with the sources of the handler's directory, to scan). At build time (componentize-py's snapshot) it imports the
handler, every module the handler's files import anywhere (inside methods too), and
a set of standard-library modules that others import lazily: only what is imported
then exists at run time.
"""

import ast
import importlib
import inspect
import json
import os
import sys
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import Failure_Failed, Failure_InvalidInput

import wasmbatch
import wasmbatch_target

# Imported lazily by common modules (collections.Counter.most_common → heapq, …).
STANDARD = [
    "abc", "argparse", "array", "ast", "base64", "binascii", "bisect", "calendar", "collections",
    "collections.abc", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "enum", "fnmatch", "fractions", "functools", "gzip", "hashlib", "heapq", "hmac", "html", "io",
    "itertools", "json", "keyword", "locale", "logging", "math", "numbers", "operator", "pathlib",
    "pprint", "random", "re", "secrets", "shlex", "statistics", "string", "struct", "textwrap",
    "time", "traceback", "types", "typing", "unicodedata", "urllib.parse", "uuid", "warnings",
    "zlib", "zoneinfo",
    # Codecs looked up by name when first used (socket's host names go through idna).
    "encodings.ascii", "encodings.cp1252", "encodings.idna", "encodings.latin_1", "encodings.punycode",
    "encodings.raw_unicode_escape", "encodings.unicode_escape", "encodings.utf_16", "encodings.utf_32",
]


def _imported_names(name, source):
    """Every module a Python file imports, wherever the import is written."""
    try:
        tree = ast.parse(source, name)
    except SyntaxError:
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _preload():
    names = list(STANDARD)
    for name, source in wasmbatch_target.SOURCES.items():
        names.extend(_imported_names(name, source))
    missing = []
    for name in dict.fromkeys(names):
        try:
            importlib.import_module(name)
        except ImportError as e:
            # `from m import f` names a function as often as a module.
            if "." not in name or name.rsplit(".", 1)[0] not in sys.modules:
                missing.append(f"{name} ({e})")
        except Exception as e:
            missing.append(f"{name} ({type(e).__name__}: {e})")
    return missing


# At build time: what the handler can reach is imported now, so that it exists later.
MISSING = _preload()
if MISSING:
    print("wasmbatch build: cannot import " + "; ".join(MISSING), file=sys.stderr)
HANDLER_MODULE = importlib.import_module(wasmbatch_target.MODULE)
if not inspect.isclass(getattr(HANDLER_MODULE, "Handler", None)):
    raise SystemExit(f"wasmbatch build: {wasmbatch_target.MODULE}.py defines no class Handler")

_handler = None
# The parameters `handle_batch` declares, read once per instance.
_batch_parameters = set()


class _PythonClient:
    """What Cortex's `python_client` offered a handler that chains jobs."""

    def submit_job(self, api, job):
        return wasmbatch.submit_job(api, job)


class _MetricsClient:
    """What Cortex's `metrics_client` offered: metrics go to the host's log."""

    def put_metric(self, name, value, tags=None):
        wasmbatch.info(json.dumps({"metric": name, "value": value, "tags": tags or {}}))

    gauge = increment = histogram = put_metric


def _declared(function):
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


def _failed(what):
    """The exception in progress, its traceback logged, as a failed call."""
    error = sys.exc_info()[1]
    if isinstance(error, wasmbatch.InvalidInput):
        return Err(Failure_InvalidInput(str(error)))
    host.log(host.Level.ERROR, f"{what} raised:\n{traceback.format_exc().rstrip()}")
    return Err(Failure_Failed(f"{what} raised {type(error).__name__}: {error}"))


class WitWorld(wit_world.WitWorld):
    def init(self, job_spec):
        global _handler
        try:
            spec = json.loads(job_spec) if job_spec else {}
        except ValueError as e:
            raise Err(Failure_InvalidInput(f"the job spec is not JSON: {e}"))
        cls = HANDLER_MODULE.Handler
        offered = {
            "config": spec.get("config") or {},
            "job_spec": spec,
            "python_client": _PythonClient(),
            "metrics_client": _MetricsClient(),
        }
        wanted = _declared(cls.__init__) - {"self"}
        try:
            _handler = cls(**{k: v for k, v in offered.items() if k in wanted})
        except BaseException:
            raise _failed("Handler.__init__")
        global _batch_parameters
        _batch_parameters = _declared(_handler.handle_batch)

    def handle_batch(self, job_id, batch):
        try:
            payload = json.loads(batch)
        except ValueError as e:
            raise Err(Failure_InvalidInput(f"the batch is not JSON: {e}"))
        wanted = _batch_parameters
        arguments = {}
        if "payload" in wanted:
            arguments["payload"] = payload
        if "batch_id" in wanted:
            arguments["batch_id"] = host.batch_id() or ""
        if "job_id" in wanted:
            arguments["job_id"] = job_id
        try:
            result = _handler.handle_batch(**arguments)
        except BaseException:
            raise _failed("handle_batch")
        if result is not None:
            try:
                wasmbatch.emit(result)
            except (TypeError, ValueError, wasmbatch.HostError) as e:
                raise Err(Failure_Failed(f"handle_batch returned a value that cannot be a result: {e}"))

    def on_job_complete(self, job_id, summary):
        hook = getattr(_handler, "on_job_complete", None)
        if hook is None:
            return
        wanted = _declared(hook)
        arguments = {}
        if "summary" in wanted:
            arguments["summary"] = json.loads(summary)
        if "job_id" in wanted:
            arguments["job_id"] = job_id
        try:
            hook(**arguments)
        except BaseException:
            raise _failed("on_job_complete")
