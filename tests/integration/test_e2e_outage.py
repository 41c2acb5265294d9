"""Broker outages: the bridge holds, reconnects and loses nothing.

These restart the session's brokers, so they use only their own bridge and wait until
both brokers are ready again before handing back.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import yaml

from harness import Pipeline, wait_for
from pipeline import kafka_client
from pipeline.config import load_config
from pipeline.mqtt_client import wait_for_mqtt
from pipeline.records import iso_utc
from pipeline.stack import kafka_server, mosquitto_server

pytestmark = pytest.mark.integration


@pytest.fixture
def stack_cfg(stack, workdir):
    path = workdir / "stack.yaml"
    path.write_text(yaml.safe_dump(stack))
    return load_config(path, env={})


def publish_stream(p: Pipeline, device: str, ids: list[str], every: float) -> threading.Thread:
    def run() -> None:
        for eid in ids:
            p.publisher.publish(f"huxue/v1/devices/{device}/events", f'{{"event_id":"{eid}","type":"video.loiter","ts":"{iso_utc(time.time())}"}}', qos=1)
            time.sleep(every)  # pacing: the stream spans the outage

    t = threading.Thread(target=run)
    t.start()
    return t


def test_kafka_restart_mid_stream_loses_nothing(stack, stack_cfg, workdir):
    p = Pipeline(stack, workdir)
    try:
        p.start_bridge()
        p.wait_flowing()
        ids = [f"kafka-out-{i}-{p.event_id()}" for i in range(400)]
        wanted = set(ids)
        t = publish_stream(p, "t30-cam-1", ids, 0.01)
        p.events.wait(lambda rs: sum(r["event_id"] in wanted for r in rs) > 50, 30, "the stream to start")
        kafka = kafka_server.service(stack_cfg)
        assert kafka.stop(30) == "stopped"
        t.join(60)  # the rest of the stream is published while Kafka is down
        kafka_server.start(stack_cfg)
        kafka_client.wait_for_kafka(stack_cfg, "admin", 90)
        p.events.wait(lambda rs: wanted <= {r["event_id"] for r in rs}, 120, "every event after Kafka is back")
        assert "kafka has not confirmed records" in p.bridge.output() or "kafka did not take a record" in p.bridge.output()
    finally:
        kafka_client.wait_for_kafka(stack_cfg, "admin", 90)
        p.close()


def test_mosquitto_restart_bridge_reconnects_and_resumes(stack, stack_cfg, workdir):
    p = Pipeline(stack, workdir)
    try:
        p.start_bridge()
        p.wait_flowing()
        broker = mosquitto_server.service(stack_cfg)
        sessions = p.bridge.output().count("mqtt connected")  # main lane and priority lane
        assert broker.stop(30) == "stopped"
        p.bridge.wait_log("mqtt disconnected", 30)
        mosquitto_server.start(stack_cfg)
        wait_for_mqtt(stack_cfg, 30)
        # each session logs its reconnect, then traffic flows again
        wait_for(lambda: p.bridge.output().count("mqtt connected") >= 2 * sessions, 60, "the bridge's sessions to reconnect")
        assert "session_present=true" in p.bridge.output().split("mqtt disconnected")[-1]
        p.wait_flowing()  # the test's own publisher reconnects by itself too
    finally:
        wait_for_mqtt(stack_cfg, 30)
        p.close()


def test_worker_stops_on_sigterm_within_the_stop_timeout_while_kafka_is_down(stack, stack_cfg, workdir):
    """Faust's warm shutdown waits for Kafka; huxue's watchdog bounds it by stop_timeout."""
    stop_timeout = 6
    p = Pipeline(stack, workdir, config={"stack": {**stack["stack"], "stop_timeout_seconds": stop_timeout}})
    kafka = kafka_server.service(stack_cfg)
    try:
        p.start()
        p.press("t31-btn-1")
        p.wait_stage("t31", "opened")
        assert kafka.stop(30) == "stopped"
        p.press("t32-btn-1")  # the bridge holds it; the worker keeps trying to reach Kafka
        started = time.monotonic()
        os.killpg(p.worker.proc.pid, signal.SIGTERM)
        code = p.worker.proc.wait(stop_timeout + 15)
        took = time.monotonic() - started
        print(f"worker exited with {code} {took:.1f} s after SIGTERM (stop_timeout {stop_timeout} s)")
        assert took <= stop_timeout + 5, p.worker.output()[-2000:]
    finally:
        if kafka.pid() is None:
            kafka_server.start(stack_cfg)
        kafka_client.wait_for_kafka(stack_cfg, "admin", 90)
        p.close()
