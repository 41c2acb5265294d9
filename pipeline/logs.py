"""Structured, quiet logging: one logfmt line per event, `extra=` fields appended.

    2026-11-29T07:41:03.250Z INFO huxue.bridge mqtt connected session_present=false

huxue's own loggers log state changes at INFO; libraries are held at WARNING unless
`--log-level debug`.
"""

from __future__ import annotations

import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _value(v: object) -> str:
    s = str(v).lower() if isinstance(v, bool) else str(v)
    return f'"{s}"' if (" " in s or "=" in s or s == "") else s


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = " ".join(f"{k}={_value(v)}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{ts} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if lvl <= logging.DEBUG else logging.WARNING)
    logging.getLogger("huxue").setLevel(lvl)
    if lvl > logging.DEBUG:
        # The Kafka clients log transient connection trouble as ERROR; huxue reports the
        # state changes that matter itself (kafka unavailable / connected again).
        for name in ("kafka", "aiokafka"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
