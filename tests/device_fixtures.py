"""The verbatim third-party payloads in tests/fixtures/devices (see its README)."""

from __future__ import annotations

import os
import re
from pathlib import Path

FIXTURES = Path(os.environ.get("HUXUE_DEVICE_FIXTURES", Path(__file__).resolve().parent / "fixtures" / "devices"))


def fixture(name: str) -> tuple[str, bytes]:
    """(topic, payload) of a verbatim fixture, byte-exact."""
    topic = (FIXTURES / f"{name}.topic").read_bytes().decode("utf-8")
    body = FIXTURES / f"{name}.json"
    if not body.exists():
        body = FIXTURES / f"{name}.raw"
    return topic, body.read_bytes()


def fixture_retain() -> dict[str, bool]:
    """The producer's retain flag per fixture, from the README table."""
    out = {}
    for line in (FIXTURES / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| (\w+)\.(?:json|raw) \| ([^|]+) \| (yes|no) \|", line)
        if m:
            out[m.group(1)] = m.group(3) == "yes"
    return out
