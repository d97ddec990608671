"""Structured JSON logs: one line per event, never object bodies or secrets."""

from __future__ import annotations

import logging
import sys
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


def setup_logging(level: str = "INFO") -> None:
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
