"""pipeline/notify/service.py delivery loop against a local HTTP server, Kafka replaced by a
list: retries, give-up, de-duplication, receiver health. (The Kafka side is in
tests/integration/test_e2e_notifier.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from pipeline.config import load_config
from pipeline.notify.service import Notifier
from pipeline.records import dumps, iso_utc


def alert(n: int = 1, **over: Any) -> dict[str, Any]:
    a = {"identifier": f"inc-{n}/opened", "incident_id": f"inc-{n}", "school_id": "zx-01", "rule": "panic", "stage": "opened",
         "severity": "Extreme", "status": "Actual", "headline": "Panic", "sent": iso_utc(time.time()), "notify": ["onsite"]}
    a.update(over)
    return a


async def run(tmp_path: Path, answers: list[tuple[int, Any]] | None, alerts: list[dict[str, Any]], **notify: Any) -> tuple[list[dict], list[bytes]]:
    """Deliver `alerts` to a webhook answering `answers` in turn (the last one repeats;
    None: a server that never answers in time)."""
    hits: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(await request.read())
        if answers is None:
            await asyncio.sleep(1)
        status, body = answers[min(len(hits), len(answers)) - 1]
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    kind = notify.pop("type", "webhook")
    raw = {"notify": {"receivers": [{"name": "r", "type": kind, "url": f"http://127.0.0.1:{port}/x"}], "routes": [{"receivers": ["r"]}],
                      "retry_initial_seconds": 0.05, "retry_cap_seconds": 0.2, **notify}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    n = Notifier(load_config(tmp_path / "c.yaml", env={}), None)
    n.loop = asyncio.get_running_loop()
    n.session = aiohttp.ClientSession()
    records: list[dict] = []

    async def publish(rec: dict) -> None:
        records.append(rec)

    n.publish = publish  # type: ignore[method-assign]
    try:
        for a in alerts:
            await n.handle(dumps(a))
    finally:
        await n.session.close()
        await runner.cleanup()
    return records, hits


def outcomes(records: list[dict]) -> list[tuple[int, str]]:
    return [(r["attempt"], r["outcome"]) for r in records]


def test_retries_5xx_then_delivers_once(tmp_path):
    records, hits = asyncio.run(run(tmp_path, [(500, {}), (503, {}), (200, {})], [alert(), alert()]))
    assert outcomes(records) == [(1, "retrying"), (2, "retrying"), (3, "delivered"), (0, "skipped")]
    assert records[-1]["error"] == "already delivered" and len(hits) == 3
    assert records[2]["latency_ms"] is not None and records[2]["http_status"] == 200


def test_4xx_is_final_and_reports_the_receiver(tmp_path):
    records, hits = asyncio.run(run(tmp_path, [(404, {})], [alert(1), alert(2)], failing_after=2))
    assert outcomes(records) == [(1, "failed"), (1, "failed"), (0, "receiver_failing")]
    assert "paging to r failing: 2 deliveries in a row failed" in records[-1]["error"] and len(hits) == 2


def test_recovery_is_recorded(tmp_path):
    records, _ = asyncio.run(run(tmp_path, [(400, {}), (200, {})], [alert(1), alert(2)], failing_after=1))
    assert outcomes(records) == [(1, "failed"), (0, "receiver_failing"), (1, "delivered"), (0, "receiver_recovered")]


def test_gives_up_after_retry_max_seconds(tmp_path):
    t0 = time.monotonic()
    records, _ = asyncio.run(run(tmp_path, [(429, {})], [alert()], retry_max_seconds=0.5))
    assert outcomes(records)[-1][1] == "failed" and all(o == "retrying" for _, o in outcomes(records)[:-1])
    assert len(records) >= 3 and time.monotonic() - t0 < 3


def test_timeouts_are_retried(tmp_path):
    records, _ = asyncio.run(run(tmp_path, None, [alert()], timeout_seconds=0.2, retry_max_seconds=0.6))
    assert records[0]["outcome"] == "retrying" and records[0]["http_status"] is None and "Timeout" in records[0]["error"]


def test_robot_errcode_decides(tmp_path):
    records, _ = asyncio.run(run(tmp_path, [(200, {"errcode": 45009, "errmsg": "freq"}), (200, {"errcode": 0})], [alert()], type="wecom"))
    assert outcomes(records) == [(1, "retrying"), (2, "delivered")] and "45009" in records[0]["error"]
    records, _ = asyncio.run(run(tmp_path, [(200, {"errcode": 93000, "errmsg": "invalid webhook url"})], [alert()], type="wecom"))
    assert outcomes(records) == [(1, "failed")]


def test_held_and_invalid_are_skipped(tmp_path):
    records, hits = asyncio.run(run(tmp_path, [(200, {})], [alert(rule="perimeter", held="lockdown", notify=[]), alert(2, sent="2020-01-01T00:00:00Z")]))
    assert [(r["outcome"], r["error"].split(":")[0]) for r in records] == [("skipped", "held"), ("skipped", "too_old")] and not hits


def test_failing_is_told_to_each_school_once_and_recovery_to_all_of_them(tmp_path):
    """rule paging_health opens one incident per school whose pages fail: each school gets
    one receiver_failing record per failing spell, and every one of them the recovery."""
    alerts = [alert(1), alert(2, school_id="bh-02"), alert(3), alert(4), alert(5, school_id="bh-02")]
    records, _ = asyncio.run(run(tmp_path, [(400, {}), (400, {}), (400, {}), (200, {})], alerts, failing_after=1))
    assert [(r["school_id"], r["outcome"]) for r in records] == [
        ("zx-01", "failed"), ("zx-01", "receiver_failing"),
        ("bh-02", "failed"), ("bh-02", "receiver_failing"),
        ("zx-01", "failed"),  # told already
        ("zx-01", "delivered"), ("bh-02", "receiver_recovered"), ("zx-01", "receiver_recovered"),
        ("bh-02", "delivered"),
    ]
    own, other = records[7], records[6]
    assert (own["identifier"], own["rule"]) == ("inc-4/opened", "panic")
    assert other["identifier"] == other["incident_id"] == other["rule"] == ""  # not an alert of that school
