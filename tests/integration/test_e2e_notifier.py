"""`huxue notifier` against the session's real Kafka and fake receivers (aiohttp servers in
the test): a signed webhook that fails twice before it takes a page, a DingTalk robot that
checks 加签 and the markdown, a receiver that refuses everything (reported failing); a
`kill -9` and a restart (no second delivery); a press through a real bridge + worker.
Prints alert -> webhook latency p50/p99 over 50 alerts (`pytest -s`)."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from harness import Collector, Pipeline, Proc, free_port, wait_for
from pipeline import kafka_client, metrics
from pipeline.config import load_config
from pipeline.records import dumps, iso_utc, loads

pytestmark = pytest.mark.integration

HOOK_SECRET = "hook-secret-0123456789"
DING_SECRET = "SEC0123456789abcdef"


class FakeReceiver:
    """An HTTP server on a free port in its own thread; `answer(kind, request body, query)`
    decides each reply. Every request is kept in `hits` with what it was answered."""

    def __init__(self, answer):
        self.answer = answer
        self.port = free_port()
        self.hits: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        hit = {"at": time.time(), "path": request.path, "query": dict(request.query), "headers": dict(request.headers), "raw": raw}
        status, body = self.answer(hit)
        hit["status"], hit["answer"] = status, body
        self.hits.append(hit)
        return web.json_response(body, status=status)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class Hook:
    """A signed webhook: checks X-Huxue-Signature over the raw body; answers 500 `fail_first`
    times for identifiers listed in `flaky`, else 200."""

    def __init__(self):
        self.flaky: dict[str, int] = {}
        self.bad_signatures = 0
        self.server = FakeReceiver(self.answer)

    def answer(self, hit):
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), hit["raw"], hashlib.sha256).hexdigest()
        if not hmac.compare_digest(hit["headers"].get("X-Huxue-Signature", ""), expected):
            self.bad_signatures += 1
            return 401, {"error": "bad signature"}
        alert = loads(hit["raw"])
        assert hit["headers"]["Idempotency-Key"] == alert["identifier"]
        hit["identifier"] = alert["identifier"]
        if self.flaky.get(alert["identifier"], 0) > 0:
            self.flaky[alert["identifier"]] -= 1
            return 500, {"error": "try later"}
        return 200, {"ok": True}

    def delivered(self, path: str | None = None) -> collections.Counter:
        return collections.Counter(h["identifier"] for h in self.server.hits if h["status"] == 200 and path in (None, h["path"]))


class Ding:
    """A DingTalk custom robot: 加签 checked as DingTalk does, markdown fields checked."""

    def __init__(self):
        self.problems: list[str] = []
        self.server = FakeReceiver(self.answer)

    def answer(self, hit):
        q = hit["query"]
        if q.get("access_token") != "tok":
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}
        ts = q.get("timestamp", "0")
        sign = base64.b64encode(hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(), hashlib.sha256).digest()).decode()
        if abs(time.time() * 1000 - int(ts)) > 3600_000:
            return 200, {"errcode": 310000, "errmsg": "invalid timestamp"}
        if q.get("sign") != sign:
            self.problems.append(f"sign {q.get('sign')!r} != {sign!r}")
            return 200, {"errcode": 310000, "errmsg": "sign not match"}
        body = loads(hit["raw"])
        md = body.get("markdown", {})
        if body.get("msgtype") != "markdown" or not md.get("title") or not md.get("text", "").startswith("### "):
            self.problems.append(f"not a markdown message: {body}")
            return 200, {"errcode": 40035, "errmsg": "bad msgtype"}
        hit["text"] = md["text"]
        return 200, {"errcode": 0, "errmsg": "ok"}


class FakeSmtp:
    """A minimal SMTP server (no TLS, no AUTH: a local relay) keeping each mail's bytes."""

    def __init__(self):
        self.port = free_port()
        self.mails: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._session, "127.0.0.1", self.port), self.loop).result(10)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await say("220 fake ESMTP")
        while line := await reader.readline():
            verb = line.decode(errors="replace").strip().split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                await say("250-fake\r\n250 8BITMIME")
            elif verb == "DATA":
                await say("354 go ahead")
                data = await reader.readuntil(b"\r\n.\r\n")
                self.mails.append(data)
                await say("250 queued")
            elif verb == "QUIT":
                await say("221 bye")
                break
            else:
                await say("250 ok")
        writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def smtp():
    s = FakeSmtp()
    yield s
    s.close()


@pytest.fixture(scope="module")
def hook():
    h = Hook()
    yield h
    h.server.close()


@pytest.fixture(scope="module")
def ding():
    d = Ding()
    yield d
    d.server.close()


@pytest.fixture(scope="module")
def refuser():
    r = FakeReceiver(lambda hit: (400, {"error": "no"}))
    yield r
    r.close()


def notify_section(hook: Hook, ding: Ding, refuser: FakeReceiver, metrics_port: int, smtp: FakeSmtp | None = None) -> dict[str, Any]:
    mail = [{"name": "mail", "type": "email", "url": f"smtp://127.0.0.1:{smtp.port}", "starttls": False, "to": ["duty@school.example"], "from_addr": "huxue@school.example"}] if smtp else []
    return {
        "receivers": [
            *mail,
            {"name": "ops-hook", "type": "webhook", "url": hook.server.url("/huxue"), "secret_env": "HUXUE_TEST_HOOK_SECRET"},
            {"name": "duty-room", "type": "dingtalk", "url": ding.server.url("/robot/send?access_token=tok"), "secret_file": "ding.secret"},
            {"name": "broken", "type": "webhook", "url": refuser.url("/x")},
            {"name": "sms-gw", "type": "sms", "url": hook.server.url("/sms"), "to": ["+8613800000000"], "secret": HOOK_SECRET},
        ],
        "routes": [
            {"match": {"rule": "panic"}, "receivers": ["ops-hook", "duty-room"]},
            *([{"match": {"rule": "flood"}, "receivers": ["mail", "sms-gw"]}] if smtp else []),
            {"match": {"rule": "perimeter"}, "receivers": ["broken"]},
            {"receivers": ["ops-hook"]},
        ],
        "retry_initial_seconds": 0.2,
        "retry_max_seconds": 20,
        "failing_after": 1,
        "metrics_port": metrics_port,
    }


def alert(tag: str, n: int, **over: Any) -> dict[str, Any]:
    school = f"t{(n % 20) + 1:02d}"
    incident = f"inc-20261201-{school}-{n:04d}-{tag}"
    a = {
        "identifier": f"{incident}/opened", "incident_id": incident, "sent": iso_utc(time.time()), "status": "Actual",
        "msgType": "Alert", "school_id": school, "rule": "panic", "stage": "opened", "severity": "Extreme",
        "urgency": "Immediate", "certainty": "Likely", "headline": f"Panic button pressed ({n})",
        "notify": ["onsite", "mobile", "command"], "evidence": [], "zone": "gate",
    }
    a.update(over)
    return a


def by_outcome(records: list[dict[str, Any]], identifier: str, receiver: str) -> list[tuple[int, str]]:
    return [(r["attempt"], r["outcome"]) for r in records if r["identifier"] == identifier and r["receiver"] == receiver]


def test_notifier_delivers_retries_reports_and_survives_kill(stack, workdir: Path, hook, ding, refuser, smtp):
    tag = uuid.uuid4().hex[:6]
    (workdir / "ding.secret").write_text(DING_SECRET + "\n")
    metrics_port = free_port()
    raw = {
        **stack,
        "kafka": {**stack["kafka"], "topic_prefix": f"n-{tag}.", "partitions": 3},
        "notify": {**notify_section(hook, ding, refuser, metrics_port, smtp), "group_id": f"notifier-{tag}"},
    }
    path = workdir / "notifier.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, env={})
    t = cfg.topics
    kafka_client.ensure_topics(cfg, "admin", [t.alerts, t.notifications], 3)
    notes = Collector(cfg, t.notifications)
    producer = kafka_client.producer(cfg, "admin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    env["HUXUE_TEST_HOOK_SECRET"] = HOOK_SECRET
    notifier = Proc("notifier", ["--config", str(path), "notifier"], workdir / "notifier.log", env)

    def send(a: dict[str, Any]) -> None:
        producer.send(t.alerts, key=a["school_id"], value=dumps(a)).get(10)

    try:
        notifier.start()
        notifier.wait_log("notifier ready", 30)

        # 1. a panic: the webhook fails twice (500), then takes it; DingTalk takes it at once
        first = alert(tag, 0)
        hook.flaky[first["identifier"]] = 2
        send(first)
        notes.wait(lambda rs: len(by_outcome(rs, first["identifier"], "ops-hook")) >= 3 and by_outcome(rs, first["identifier"], "duty-room"), 45, "the first panic paged")
        records = list(notes.records)
        assert by_outcome(records, first["identifier"], "ops-hook") == [(1, "retrying"), (2, "retrying"), (3, "delivered")]
        assert by_outcome(records, first["identifier"], "duty-room") == [(1, "delivered")]
        tries = [r for r in records if r["identifier"] == first["identifier"] and r["receiver"] == "ops-hook"]
        assert [r["http_status"] for r in tries] == [500, 500, 200] and tries[0]["error"] == "HTTP 500"
        assert tries[-1]["latency_ms"] >= 0 and tries[-1]["type"] == "webhook" and tries[-1]["school_id"] == first["school_id"]
        assert set(tries[-1]) == {"identifier", "incident_id", "school_id", "receiver", "type", "attempt", "outcome", "http_status", "error", "latency_ms", "at", "rule"}
        assert tries[-1]["rule"] == "panic"
        ding_hit = next(h for h in ding.server.hits if h["answer"]["errcode"] == 0 and "Panic button pressed (0)" in h.get("text", ""))
        assert "Test School 1 (t01), zone gate" in ding_hit["text"] and "New incident" in ding_hit["text"]
        assert hook.bad_signatures == 0 and not ding.problems

        # 2. held back (not panic) and drills; a receiver that refuses everything is reported
        held = alert(tag, 1, rule="perimeter", held="lockdown", notify=[])
        drill = alert(tag, 2, status="Exercise")
        refused = alert(tag, 3, rule="perimeter", severity="Severe")
        flood = alert(tag, 4, rule="flood", severity="Moderate", headline="Camera flooding: t05-cam-1")
        for a in (held, drill, refused, flood):
            send(a)
        notes.wait(lambda rs: by_outcome(rs, flood["identifier"], "mail") == [(1, "delivered")], 20, "the flood alert mailed")
        mail = next(m for m in smtp.mails if flood["identifier"].encode() in m)
        assert b"Subject: Camera flooding: t05-cam-1" in mail and b"Test School 5 (t05)" in mail
        notes.wait(lambda rs: by_outcome(rs, flood["identifier"], "sms-gw") == [(1, "delivered")], 20, "the flood alert texted")
        sms = loads(next(h["raw"] for h in hook.server.hits if h["path"] == "/sms" and h["identifier"] == flood["identifier"]))
        assert sms["to"] == ["+8613800000000"] and sms["text"].startswith("Camera flooding: t05-cam-1 | Test School 5 | ")
        notes.wait(lambda rs: any(r["outcome"] == "receiver_failing" and r["receiver"] == "broken" for r in rs), 20, "broken reported failing")
        notes.wait(lambda rs: by_outcome(rs, drill["identifier"], "duty-room") and by_outcome(rs, held["identifier"], ""), 20, "drill paged, held recorded")
        records = list(notes.records)
        assert by_outcome(records, held["identifier"], "") == [(0, "skipped")]
        assert next(r for r in records if r["identifier"] == held["identifier"])["error"] == "held: lockdown"
        assert by_outcome(records, refused["identifier"], "broken") == [(1, "failed"), (0, "receiver_failing")]  # 400: no retry
        assert any("[DRILL]" in h.get("text", "") for h in ding.server.hits)
        notifier.wait_log("paging failing", 5)
        scraped = metrics.scrape(f"http://127.0.0.1:{metrics_port}/metrics", ("huxue_notifier_receiver_failing", "huxue_notifier_attempts_total"))
        assert scraped and scraped["huxue_notifier_receiver_failing"] == 1

        # 3. latency over 50 alerts, produced 20 ms apart
        batch = [alert(tag, 100 + i) for i in range(50)]
        sent_at = {}
        for a in batch:
            a["sent"] = iso_utc(time.time())
            sent_at[a["identifier"]] = time.time()
            producer.send(t.alerts, key=a["school_id"], value=dumps(a))
            time.sleep(0.02)
        producer.flush(10)
        wait_for(lambda: all(hook.delivered()[a["identifier"]] for a in batch), 30, "50 alerts at the webhook")
        arrival = {h["identifier"]: h["at"] for h in hook.server.hits if h["status"] == 200}
        lat = sorted((arrival[i] - sent_at[i]) * 1000 for i in sent_at)
        p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"\nnotifier latency alert produced -> webhook received over {len(lat)} alerts: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms")

        # 4. kill -9 in the middle of a batch, restart: nothing delivered twice
        second = [alert(tag, 200 + i) for i in range(30)]
        for a in second:
            producer.send(t.alerts, key=a["school_id"], value=dumps(a))
        producer.flush(10)
        wait_for(lambda: sum(hook.delivered()[a["identifier"]] for a in second) >= 5, 20, "part of the second batch delivered")
        notifier.kill()
        killed_at = iso_utc(time.time())
        send(first)  # a copy of an alert delivered long ago
        notifier.start()
        notifier.wait_log("notifier ready", 30)
        wait_for(lambda: all(hook.delivered()[a["identifier"]] for a in second), 30, "the whole second batch delivered after the restart")
        notes.wait(lambda rs: sum(1 for r in rs if r["identifier"] == first["identifier"] and r["outcome"] == "skipped") >= 2, 20, "the copy of the first alert skipped")
        records = list(notes.records)
        before_restart = {(r["identifier"], r["receiver"]) for r in records if r["outcome"] == "delivered" and r["at"] < killed_at}
        delivered = collections.Counter((r["identifier"], r["receiver"]) for r in records if r["outcome"] == "delivered")
        assert max(delivered.values()) == 1, [k for k, n in delivered.items() if n > 1]  # one delivered record per (identifier, receiver)
        at_hook = hook.delivered("/huxue")
        assert at_hook[first["identifier"]] == 1
        # what was recorded delivered before the crash is never paged again; a page the
        # crash caught between the 200 and its record may come twice, same Idempotency-Key
        again = [i for (i, rcv) in before_restart if rcv == "ops-hook" and at_hook[i] > 1]
        assert not again, again
        crash_window = [i for i, n in at_hook.items() if n > 1]
        recorded = sum(1 for a in second if (a["identifier"], "ops-hook") in before_restart)
        print(f"kill -9 during 30 alerts: {recorded} recorded delivered to ops-hook before the crash (never paged again), {len(crash_window)} paged twice (answered, record not yet on Kafka: the crash window)")

        # 5. SIGTERM: a clean stop within the stop timeout
        t0 = time.monotonic()
        notifier.stop(timeout=cfg.stack.stop_timeout_seconds)
        assert notifier.proc.returncode == 0, notifier.output()[-2000:]
        assert time.monotonic() - t0 < cfg.stack.stop_timeout_seconds
        assert "notifier stopped" in notifier.output()
        assert "Traceback" not in notifier.output()
    finally:
        notifier.kill()
        notes.close()
        producer.close()


def test_press_through_bridge_and_worker_is_paged(pipeline: Pipeline, workdir: Path, hook, ding, refuser):
    """The whole chain: MQTT press -> bridge -> worker -> alerts -> notifier -> webhook + DingTalk."""
    (workdir / "ding.secret").write_text(DING_SECRET + "\n")
    raw = {**pipeline.raw_cfg, "notify": {**notify_section(hook, ding, refuser, 0), "group_id": f"notifier-{uuid.uuid4().hex[:6]}"}}
    path = workdir / "notifier-pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    env["HUXUE_TEST_HOOK_SECRET"] = HOOK_SECRET
    notifier = Proc("notifier", ["--config", str(path), "notifier"], workdir / "notifier-pipeline.log", env)
    try:
        notifier.start()
        notifier.wait_log("notifier ready", 30)
        t0 = time.time()
        pipeline.press("t01-btn-1")
        opened = pipeline.wait_stage("t01", "opened", 20)
        wait_for(lambda: hook.delivered()[opened["identifier"]], 20, "the press at the webhook")
        wait_for(lambda: any(h["answer"].get("errcode") == 0 and opened["incident_id"] in h.get("text", "") for h in ding.server.hits), 20, "the press at DingTalk")
        at = next(h["at"] for h in hook.server.hits if h.get("identifier") == opened["identifier"] and h["status"] == 200)
        print(f"\npress -> webhook {1000 * (at - t0):.0f} ms (MQTT, bridge, worker, alerts topic, notifier)")
        # the ladder goes on (2/4/6 s): onsite_overdue is paged too
        overdue = pipeline.wait_stage("t01", "onsite_overdue", 20)
        wait_for(lambda: hook.delivered()[overdue["identifier"]], 20, "onsite_overdue at the webhook")
    finally:
        notifier.stop()


class Switch:
    """A webhook that answers 500 to every request until `ok` is set."""

    def __init__(self):
        self.ok = False
        self.server = FakeReceiver(self.answer)

    def answer(self, hit):
        hit["identifier"] = loads(hit["raw"]).get("identifier")
        return (200, {"ok": True}) if self.ok else (500, {"error": "down"})


def test_failing_receiver_is_an_incident_paged_elsewhere_until_it_works_again(pipeline: Pipeline, workdir: Path, hook):
    """Rule paging_health end to end: a press paged to a receiver that answers 500 -> the
    notifier calls it failing -> the worker opens "Paging to pager failing" at the school,
    paged to the healthy webhook and never to the failing one; operators ack it; the
    receiver answers 200 again -> its next page closes the incident (recovered)."""
    switch = Switch()
    notify = {
        "group_id": f"notifier-{uuid.uuid4().hex[:6]}",
        "receivers": [
            {"name": "pager", "type": "webhook", "url": switch.server.url("/pager")},
            {"name": "ops-hook", "type": "webhook", "url": hook.server.url("/health"), "secret": HOOK_SECRET},
        ],
        # the catch-all names the failing receiver too: routing must leave it out
        "routes": [{"match": {"rule": "panic"}, "receivers": ["pager"]}, {"receivers": ["pager", "ops-hook"]}],
        "retry_initial_seconds": 0.2,
        "retry_max_seconds": 1,
        "failing_after": 1,
        "metrics_port": 0,
    }
    path = workdir / "notifier-health.yaml"
    path.write_text(yaml.safe_dump({**pipeline.raw_cfg, "notify": notify}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    notifier = Proc("notifier", ["--config", str(path), "notifier"], workdir / "notifier-health.log", env)
    notes = Collector(pipeline.cfg, pipeline.cfg.topics.notifications)
    try:
        notifier.start()
        notifier.wait_log("notifier ready", 30)
        pipeline.press("t01-btn-1")
        panic = pipeline.wait_stage("t01", "opened", 20, rule="panic")
        incident = pipeline.wait_stage("t01", "opened", 30, rule="paging_health")
        assert (incident["msgType"], incident["status"], incident["severity"]) == ("Alert", "Actual", "Severe")  # a panic's page failed
        assert incident["headline"].startswith("Paging to pager failing at ") and incident["evidence"][0]["receiver"] == "pager"
        wait_for(lambda: hook.delivered("/health")[incident["identifier"]], 20, "the incident at the healthy receiver")
        failing = [r for r in notes.records if r["outcome"] == "receiver_failing" and r["receiver"] == "pager"]
        assert [r["school_id"] for r in failing] == ["t01"] and failing[0]["rule"] == "panic"

        # an operator acknowledges it, like any incident
        pipeline.command("ack", incident["incident_id"])
        acked = pipeline.wait_stage("t01", "acknowledged", 20, rule="paging_health")
        wait_for(lambda: hook.delivered("/health")[acked["identifier"]], 20, "the ack at the healthy receiver")

        # the receiver works again: the next page to it (the press resolved) closes the incident
        switch.ok = True
        pipeline.command("resolve", panic["incident_id"])
        restored = pipeline.wait_stage("t01", "recovered", 30, rule="paging_health")
        assert (restored["incident_id"], restored["msgType"]) == (incident["incident_id"], "Cancel")
        wait_for(lambda: hook.delivered("/health")[restored["identifier"]], 20, "the recovery at the healthy receiver")
        notes.wait(lambda rs: any(r["outcome"] == "receiver_recovered" and r["receiver"] == "pager" for r in rs), 20, "receiver_recovered")
        # paging about the failing receiver never went to it: one incident, never re-opened
        ours = {a["identifier"] for a in pipeline.alerts.records if a["rule"] == "paging_health"}
        assert not ours & {h["identifier"] for h in switch.server.hits}
        assert {a["incident_id"] for a in pipeline.alerts.records if a["rule"] == "paging_health"} == {incident["incident_id"]}
        assert "Traceback" not in pipeline.worker.output()
    finally:
        notifier.stop()
        notes.close()
        switch.server.close()


def test_notifier_with_sasl_and_acls(locked_stack, tmp_path_factory, hook):
    """On the locked stack (SASL/SCRAM + ACLs): the notifier's own account `huxue-notifier`
    reads alerts in its group and writes notifications, and may not write alerts."""
    from kafka.errors import TopicAuthorizationFailedError

    from harness import up_locked

    root = tmp_path_factory.mktemp("notifier-sasl")
    notify = {
        "group_id": "nauth-notifier",
        "receivers": [{"name": "ops-hook", "type": "webhook", "url": hook.server.url("/sasl"), "secret": HOOK_SECRET}],
        "routes": [{"receivers": ["ops-hook"]}],
        "metrics_port": 0,
    }
    _, cfg, path = up_locked(locked_stack, root, kafka={**locked_stack["kafka"], "topic_prefix": "nauth.", "partitions": 3}, notify=notify)
    t = cfg.topics
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    notifier = Proc("notifier", ["--config", str(path), "notifier"], root / "notifier.log", env)
    producer = kafka_client.producer(cfg, "admin")
    intruder = kafka_client.producer(cfg, "notifier", max_block_ms=5000)
    notes = Collector(cfg, t.notifications)
    try:
        notifier.start()
        notifier.wait_log("notifier ready", 30)
        a = alert(uuid.uuid4().hex[:6], 7)
        producer.send(t.alerts, key=a["school_id"], value=dumps(a)).get(10)
        wait_for(lambda: hook.delivered()[a["identifier"]], 20, "the alert at the webhook over SASL")
        notes.wait(lambda rs: by_outcome(rs, a["identifier"], "ops-hook") == [(1, "delivered")], 20, "the delivered record")
        with pytest.raises(TopicAuthorizationFailedError):
            intruder.send(t.alerts, key="t01", value=b"{}").get(10)
    finally:
        notifier.stop()
        notes.close()
        producer.close()
        intruder.close()
