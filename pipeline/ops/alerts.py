"""`huxue alerts tail`: alerts as one readable line each (or raw JSON)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from kafka import TopicPartition

from pipeline import kafka_client
from pipeline.config import Config
from pipeline.records import loads, parse_ts
from pipeline.registry import Registry

MARK = {"Alert": "NEW ", "Update": "UPD ", "Cancel": "END "}


def format_line(alert: dict, registry: Registry | None = None) -> str:
    """`07:41:03 NEW  Extreme  panic/opened  inc-20261129-zx-01-0001  Panic button pressed at ...`

    The clock is the school's local time, as the people on site read it.
    """
    school = registry.school(alert.get("school_id", "")) if registry else None
    tz = ZoneInfo(school.timezone) if school else None
    try:
        clock = datetime.fromtimestamp(parse_ts(alert["sent"]), tz=tz).strftime("%H:%M:%S")
    except (KeyError, ValueError):
        clock = "--:--:--"
    drill = " DRILL" if alert.get("status") == "Exercise" else ""
    if alert.get("held"):
        drill += f" (held: {alert['held']})"
    return (
        f"{clock} {MARK.get(alert.get('msgType', ''), '?   ')}{alert.get('severity', '?'):<8} "
        f"{alert.get('rule', '?')}/{alert.get('stage', '?'):<15} {alert.get('incident_id', '?')}{drill}  "
        f"{alert.get('headline', '')}"
    )


def follow(cfg: Config, topic: str, *, from_beginning: bool, poll_s: float = 0.5, role: str = "operator", **settings: Any) -> Iterator[dict | None]:
    """Yield decoded records of `topic` forever; None on each idle poll (lets callers stop)."""
    consumer = kafka_client.consumer(cfg, role, group_id=None, enable_auto_commit=False, **settings)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        if from_beginning:
            consumer.seek_to_beginning(*parts)
        else:
            consumer.seek_to_end(*parts)
            for tp in parts:
                consumer.position(tp)  # resolve "end" now, before the caller acts
        yield None  # positioned: anything produced from now on will be seen
        while True:
            batch = consumer.poll(timeout_ms=int(poll_s * 1000))
            if not batch:
                yield None
                continue
            records = [r for rs in batch.values() for r in rs]
            for r in sorted(records, key=lambda r: r.timestamp):
                try:
                    yield loads(r.value)
                except ValueError:
                    continue
    finally:
        consumer.close()
