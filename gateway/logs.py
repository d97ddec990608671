"""Structured JSON logs: one line per event, never object bodies or secrets."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """Structured fields come in one `fields` mapping: `log.info("msg", extra=fields(uid=...))`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_event_stream: Any = None
"""Where `event` writes its lines: set by `setup_logging`; None means through `logging`."""


def event(logger: logging.Logger, msg: str, **values: Any) -> None:
    """One INFO line for a hot path (a line per decision).

    Built and written directly, in the formatter's shape: a `logging` record costs tens of
    microseconds, a good share of a decision. Honours the logger's level.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    if _event_stream is None:
        logger.info(msg, extra=fields(**values))
        return
    entry = {"ts": round(time.time(), 6), "level": "info", "logger": logger.name, "msg": msg, **values}
    _event_stream.write(orjson.dumps(entry, default=str).decode() + "\n")


def setup_logging(level: str = "INFO") -> None:
    global _event_stream
    _event_stream = sys.stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # casbin logs the whole model and policy at INFO on every load.
    logging.getLogger("casbin").setLevel(logging.WARNING)


def fields(**values: Any) -> dict[str, Any]:
    """The `extra=` argument that puts `values` into the JSON line."""
    return {"fields": values}
