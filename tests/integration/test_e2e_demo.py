"""`huxue demo` end to end: the README's first command really works, on the locked stack
(MQTT accounts and TLS, Kafka SASL/SCRAM and ACLs), as a city would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from harness import REPO, free_port
from pipeline import kafka_client
from pipeline.config import load_config
from pipeline.records import dumps

pytestmark = pytest.mark.integration


def test_demo_plays_the_scenario_and_cleans_up(locked_stack, workdir):
    demo = yaml.safe_load((REPO / "pipeline" / "data" / "demo.yaml").read_text())
    stack = locked_stack
    cfg = {**demo, "mqtt": stack["mqtt"], "kafka": stack["kafka"], "stack": stack["stack"], "registry": str(REPO / "pipeline" / "data" / "registry.yaml"),
           "console": {**demo["console"], "port": free_port(), "store": f"sqlite:///{workdir / 'demo-history.sqlite3'}"},
           "bridge": {"metrics_port": 0}, "worker": {"metrics_port": 0}}
    path = workdir / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # an earlier run's incident left open at the demo school: the demo clears it first, or the
    # press would join it and the script would wait for stages that already passed
    leftover = f"inc-20261201-zx-01-0001-{os.urandom(3).hex()}"
    loaded = load_config(path, env={})
    kafka_client.ensure_topics(loaded, "admin", loaded.topics.contract(), loaded.kafka.partitions)
    producer = kafka_client.producer(loaded, "admin")
    producer.send(loaded.topics.alerts, key="zx-01", value=dumps({"identifier": f"{leftover}/opened", "incident_id": leftover, "school_id": "zx-01",
                                                                  "rule": "panic", "stage": "opened", "sent": "2026-12-01T00:00:00Z", "severity": "Extreme",
                                                                  "status": "Actual", "msgType": "Alert", "headline": "Panic button pressed (earlier run)"})).get(30)
    producer.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(path), "demo", "--exit-when-done"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"CLEAN  {leftover} was left open by an earlier run: resolve" in out, out
    assert "CAMERA" in out
    order = ["PRESS", "panic/opened", "panic/corroborated", "panic/onsite_overdue", "OPERATOR guard-zx01-02: ack", "panic/acknowledged",
             "panic/mobile_late", "OPERATOR patrol-unit-7: arrive", "panic/arrived", "panic/resolved", "DONE"]
    positions = [out.find(marker) for marker in order]
    assert -1 not in positions, out
    assert positions == sorted(positions), out
    assert "mobile_overdue" not in out  # arrival came before the 5-minute limit
    # the 3-5: the units on patrol are listed, the nearest is sent, and it is the one on scene
    sent = re.search(r"OPERATOR duty-officer-li: dispatch inc-\S+ (\S+) ", out)
    assert sent, out
    unit = sent.group(1)
    listed = re.search(r"UNITS  nearest: (\S+) ", out)
    assert listed and listed.group(1) == unit, out
    steps = [out.find(m) for m in ("panic/opened", "UNITS  nearest", "dispatch inc-", "panic/dispatched-1", "panic/arrived", f"({unit}), resolved")]
    assert -1 not in steps and steps == sorted(steps), out
    # the demo found the brokers running, so it stopped only what it started
    assert "bridge: stopped" in out and "worker: stopped" in out and "console: stopped" in out
    assert f"CONSOLE http://127.0.0.1:{cfg['console']['port']}/" in out
    assert "stack: kafka: stopped" not in out
    assert result.stderr.count("ERROR") == 0, result.stderr
