"""The service's log lines: JSON, one object a line, on stderr.

`configure_logging(level)` sends the `service` loggers (the access log `service.access` among
them; service.api.middleware.observe writes it) and, under `python -m service.api`, uvicorn's
own to stderr as JSON lines, once per process.
"""

from __future__ import annotations

import logging
import math
import sys
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonLines(logging.Formatter):
    """One JSON object a line: time, level, logger, then the record's `fields` or its message.
    The time is ISO 8601 in UTC to the millisecond; the part up to the second is formatted once
    a second (one line a request: the access log)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def stamp(self, created: float) -> str:
        """datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"), "Z" for
        "+00:00" (the same rounding: to the microsecond, then cut to the millisecond)."""
        fraction, whole = math.modf(created)  # as datetime.fromtimestamp splits it
        second, micro = int(whole), round(fraction * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        elif micro < 0:
            second, micro = second - 1, micro + 1_000_000
        if second != self._second:
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._stamp}.{micro // 1000:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": self.stamp(record.created),
                                "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    embed_json = True

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, *others: str) -> None:
    """Send the `service` loggers (and the `others`: "uvicorn" under python -m service.api) to
    stderr as JSON lines at `level` (once per process)."""
    for name in ("service", *others):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(getattr(handler, "embed_json", False) for handler in logger.handlers):
            handler = StderrHandler()
            handler.setFormatter(JsonLines())
            logger.addHandler(handler)
