"""The bridge under hostile input and floods, on real brokers: it never dies on input,
a panic press never waits behind another device's flood, and SIGTERM is honoured
within stack.stop_timeout_seconds even when Kafka is unreachable."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from harness import Pipeline, Proc, free_port, wait_for
from pipeline.config import load_config
from pipeline.records import dumps, iso_utc, loads

pytestmark = pytest.mark.integration

DEEP = '{"x":' + "[" * 299 + "]" * 299 + "}"  # 300 containers: orjson cannot even write it


def hostile(eid: str) -> list[tuple[bytes, str]]:
    """(payload, expected reason code) of a camera's event each breaking one limit."""
    head = f'{{"event_id":"{eid}-%d","type":"video.fall","ts":"{iso_utc(time.time())}","attrs":'
    return [
        ((head % 0 + DEEP + "}").encode(), "too_deep"),
        ((head % 1 + '{"n":18446744073709551616}}').encode(), "number_out_of_range"),
        ((head % 2 + '{"n":9007199254740993}}').encode(), "number_out_of_range"),
        ((head % 3 + '{"n":NaN}}').encode(), "bad_json"),
        ((head % 4 + dumps({"s": "x" * 5000}).decode() + "}").encode(), "string_too_long"),
        ((head % 5 + dumps({"l": list(range(2000))}).decode() + "}").encode(), "too_many_items"),
    ]


def test_hostile_payloads_go_to_the_dlq_and_a_press_right_after_opens_also_after_a_restart(pipeline):
    p = pipeline
    for round_, school in enumerate(("t20", "t21")):
        if round_ == 1:  # the bridge restarted: nothing hostile is stuck in its session
            p.bridge.stop()
            p.start_bridge()
        tag = f"hostile-{uuid.uuid4().hex[:6]}"
        cases = hostile(tag)
        for payload, _ in cases:
            p.publish(f"{school}-cam-1", payload)
        p.press(f"{school}-btn-1")
        p.wait_stage(school, "opened", timeout=30)
        entries = p.dlq.wait(lambda rs: [e for e in rs if tag in e.get("payload", "")] if sum(tag in e.get("payload", "") for e in rs) >= len(cases) else None, 30, "every hostile payload in the DLQ")
        assert sorted(e["reason_code"] for e in entries) == sorted(code for _, code in cases)
        assert all(e["device_id"] == f"{school}-cam-1" and e["reason"] for e in entries)
        assert p.bridge.proc.poll() is None, "the bridge is still running"
    assert "Traceback" not in p.bridge.output()


def test_a_press_is_not_held_up_by_another_devices_flood(stack, workdir):
    total = 20_000
    p = Pipeline(stack, workdir, config={"bridge": {"client_id": f"bridge-{uuid.uuid4().hex[:6]}", "metrics_port": free_port(), "device_rate_per_second": 20, "device_burst": 200}})
    flood = None
    try:
        p.start()
        assert "priority lane" in p.bridge.output() and "topics=120" in p.bridge.output()  # 60 schools x 2 buttons
        # a separate publisher with an unbounded in-flight window: the flood is at the broker as fast as it can be
        flood = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv311)
        flood.max_inflight_messages_set(0)
        acked = []
        flood.on_publish = lambda c, u, mid, rc, props: acked.append(mid)
        flood.connect(p.cfg.mqtt.host, p.cfg.mqtt.port, keepalive=60)
        flood.loop_start()
        tag = f"flood-{uuid.uuid4().hex[:6]}"
        ts = iso_utc(time.time())
        t0 = time.monotonic()
        for i in range(total):
            flood.publish("huxue/v1/devices/t40-cam-1/events", f'{{"event_id":"{tag}-{i}","type":"device.heartbeat","ts":"{ts}","attrs":{{"battery":90}}}}', qos=1)
        wait_for(lambda: len(acked) >= total, 120, f"the broker to take all {total} flood messages")
        queued_in = time.monotonic() - t0

        press = p.press("t41-btn-1")  # returns once the broker acknowledged it
        published = time.time()
        alert = p.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "t41" and a["stage"] == "opened"], 30, "the press's incident")[0]
        seen = time.time()
        raw = next(r for r in p.alerts.raw if loads(r.value).get("identifier") == alert["identifier"])
        latency, produced = seen - published, raw.timestamp / 1000 - published
        print(f"flood: {total} messages queued at the broker in {queued_in:.1f} s; press -> opened alert {latency * 1000:.0f} ms (alert produced after {produced * 1000:.0f} ms)")
        assert any(e["event_id"] == press["event_id"] for e in alert["evidence"])
        assert latency <= 2.0, f"the press waited {latency:.2f} s behind the flood"

        # the flood drains: every message an event or a rate_limited DLQ entry, nothing lost
        def accounted() -> int:
            ids = {e["event_id"] for e in p.events.records if e["event_id"].startswith(tag)}
            ids |= {loads(e["payload"])["event_id"] for e in p.dlq.records if tag in e.get("payload", "")}
            return len(ids)

        wait_for(lambda: accounted() >= total, 180, "every flood message in Kafka", interval=1.0)
        limited = [e for e in p.dlq.records if e["reason_code"] == "rate_limited"]
        assert limited and {e["device_id"] for e in limited} == {"t40-cam-1"}
        forwarded = sum(1 for e in p.events.records if e["event_id"].startswith(tag))
        assert 200 <= forwarded < total // 2
        assert not [e for e in p.dlq.records if e.get("device_id") == "t41-btn-1"]
        lines = p.bridge.output().count("device rate-limited")
        assert 1 <= lines <= 1 + int((time.monotonic() - t0) // 60)  # one line per device per minute
        # both sessions received the press; Kafka has it once
        p.sentinel("t41", "t41-btn-2")
        assert sum(1 for e in p.events.records if e["event_id"] == press["event_id"]) == 1
        print(f"flood: {forwarded} forwarded, {total - forwarded} rate-limited to the DLQ")
    finally:
        if flood is not None:
            flood.loop_stop()
            flood.disconnect()
        p.close()


def test_sigterm_while_kafka_is_unreachable_stops_within_the_stop_timeout(stack, workdir):
    closed = free_port()  # nothing listens there
    raw = {
        **stack,
        "kafka": {**stack["kafka"], "bootstrap": f"127.0.0.1:{closed}"},
        "bridge": {"client_id": f"bridge-{uuid.uuid4().hex[:6]}", "metrics_port": free_port()},
        "stack": {**stack["stack"], "stop_timeout_seconds": 5},
    }
    path = workdir / "unreachable.yaml"
    path.write_text(yaml.safe_dump(raw))
    load_config(path, env={})  # valid
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    bridge = Proc("bridge", ["--config", str(path), "bridge"], workdir / "bridge-unreachable.log", env).start()
    try:
        # metrics are served just before the Kafka bootstrap, which blocks ~30 s on a closed port
        bridge.wait_log("metrics", 30)
        t0 = time.monotonic()
        os.killpg(bridge.proc.pid, signal.SIGTERM)
        try:
            code = bridge.proc.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the bridge ignored SIGTERM:\n{bridge.output()[-2000:]}") from None
        took = time.monotonic() - t0
        print(f"SIGTERM with Kafka unreachable: exited {code} after {took:.2f} s")
        assert took <= 5.0
        assert code == 0, bridge.output()[-2000:]
    finally:
        bridge.kill()
