"""Logs every process writes alike: one JSON object per line, carrying its request and job.

The API, ``ntk serve`` and the workers each call ``configure(settings)`` once. A line holds
``ts``, ``level``, ``logger`` and ``msg``, then whichever of ``request_id``, ``job_id``,
``method``, ``path``, ``status`` and ``duration_ms`` apply (``exc`` with a traceback). The request
and job ids live in context variables: the API binds them per request (ntk.api.middleware.
RequestContext), the workers per task (ntk.core.broker.LogContext), and Dramatiq messages carry them
from one to the other, so every line written on behalf of a request carries its id without being
passed along by hand.

Headers and bodies are never logged: API keys travel in a header, and bodies are user data.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

from ntk.core.settings import Settings

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)
CONTEXT = {"request_id": request_id, "job_id": job_id}

# what an access line adds (``log.info(..., extra={...})``)
REQUEST_FIELDS = ("method", "path", "status", "duration_ms")


@contextmanager
def bound(**values: str | None):
    """Bind context variables of CONTEXT for the duration of a block."""
    tokens = {name: CONTEXT[name].set(value) for name, value in values.items()}
    try:
        yield
    finally:
        for name, token in tokens.items():
            CONTEXT[name].reset(token)


def fields(record: logging.LogRecord) -> dict:
    """The context and request fields a record carries, set ones only."""
    out = {name: var.get() for name, var in CONTEXT.items()}
    out.update({name: getattr(record, name) for name in REQUEST_FIELDS if hasattr(record, name)})
    return {name: value for name, value in out.items() if value is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "msg": record.getMessage(), **fields(record)}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{name}={value}" for name, value in fields(record).items())
        return f"{text} [{context}]" if context else text


def configure(settings: Settings) -> None:
    """Send every logger's records to stderr in the chosen format: ours, Dramatiq's, warnings, and
    uvicorn's when it runs with ``log_config=None`` (ntk.cli.serve)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)
