"""A local three-broker Kafka cluster (stack.kafka_brokers: 3): `stack up` / `status`, and a
broker killed (SIGKILL) under load with bridge and worker running.

Its own module-scoped stack (three KRaft nodes, Mosquitto), not the session's. Prints the
measured failover figures (`pytest -s`): the longest pause of the events topic and the
press -> opened alert latency before and during the failover.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import pytest
import yaml

import harness
from harness import REPO, Pipeline, wait_for
from load import RATE, Load, Timed, longest_gap, pct
from pipeline.config import Config, load_config
from pipeline.stack import kafka_server, local

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

BROKERS = 3
FAILOVER_WINDOW = 30  # seconds of load after the kill


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def consecutive_free_ports(n: int) -> int:
    """The first of `n` consecutive free loopback ports, below the ephemeral range."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 32000 - n)
        if all(_bindable(p) for p in range(base, base + n)):
            return base
    raise AssertionError(f"no {n} consecutive free ports found")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Mosquitto and three Kafka nodes (brokers on base..base+2, controllers on base+3..base+5)."""
    root = tmp_path_factory.mktemp("cluster")
    (root / "registry.yaml").write_text(yaml.safe_dump(harness.test_registry(200)))
    base = consecutive_free_ports(2 * BROKERS)
    raw = {
        "mqtt": {"url": f"mqtt://127.0.0.1:{consecutive_free_ports(1)}", "session_expiry_seconds": 600, "auth": False},
        "kafka": {"bootstrap": f"127.0.0.1:{base}"},
        "registry": str(root / "registry.yaml"),
        "stack": {"home": str(root / "home"), "kafka_brokers": BROKERS},
    }
    path = root / "stack.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, env={})
    started = time.monotonic()
    local.up(cfg)
    print(f"\ncluster: stack up with {BROKERS} brokers in {time.monotonic() - started:.1f} s")
    try:
        yield raw, cfg, path
    finally:
        local.down(cfg)


def status_cli(path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(path), "stack", "status"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )


def healthy(cfg: Config) -> dict[str, Any] | None:
    """The cluster's state when every node is up, in the quorum and every replica in sync."""
    if any(r["state"] != "ready" for r in local.status(cfg) if r["service"].startswith("kafka")):
        return None
    try:
        c = local.cluster(cfg)
    except Exception:  # noqa: BLE001 - not answering yet
        return None
    return c if c["voters"] == [1, 2, 3] and not c["silent"] and not c["under_replicated"] else None


def test_stack_up_runs_three_brokers_a_quorum_of_three_and_replicated_topics(cluster):
    raw, cfg, path = cluster
    rows = {r["service"]: r for r in local.status(cfg)}
    for node in kafka_server.nodes(cfg):
        assert rows[node.name]["state"] == "ready" and rows[node.name]["pid"], rows
        assert rows[node.name]["address"] == node.address
    assert cfg.kafka.bootstrap == ",".join(n.address for n in kafka_server.nodes(cfg))
    c = wait_for(lambda: healthy(cfg), 60, "a healthy cluster")
    assert c["leader"] in (1, 2, 3)
    for topic in cfg.topics.deployment():
        assert c["topics"][topic] == (3, "2"), topic
    out = status_cli(path)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    for i in (1, 2, 3):
        assert f"kafka-{i}" in out.stdout
    assert "voters=1,2,3" in out.stdout and "under-replicated: 0" in out.stdout


@pytest.mark.parametrize("victim", ["follower", "leader"])
def test_a_broker_killed_under_load_loses_no_acknowledged_event_and_no_press(cluster, workdir, victim, figures):
    raw, cfg, path = cluster
    wait_for(lambda: healthy(cfg), 180, "a healthy cluster before the test")
    p = Pipeline(raw, workdir, partitions=3)
    events = Timed(p.cfg, p.cfg.topics.events)
    alerts = Timed(p.cfg, p.cfg.topics.alerts)
    load = None
    try:
        p.start()
        c = local.cluster(cfg)
        internal = [p.cfg.topics.ticks, *p.cfg.topics.changelogs, f"{p.cfg.worker.app_id}-__assignor-__leader", "__consumer_offsets"]
        assert set(internal) <= set(c["topics"])
        assert {t: rf for t, rf in c["topics"].items() if rf != (3, "2")} == {}  # every topic: RF 3, min ISR 2
        schools = [f"t{i:02d}" for i in range(1, 201) if i != 60]  # t60-cam-1 is the pipeline's probe
        load = Load(p.cfg, schools).start()
        wait_for(lambda: len(load.presses) >= 20, 60, "a baseline of 20 presses")

        node = next(n for n in kafka_server.nodes(cfg) if (n.id == c["leader"]) == (victim == "leader"))
        svc = kafka_server.service(cfg, node)
        killed_at = time.time()
        os.kill(svc.pid(), signal.SIGKILL)
        degraded = wait_for(lambda: _under_replicated(cfg), 60, "under-replicated partitions")
        out = status_cli(path)
        print(out.stdout)
        assert out.returncode == 3 and f"{node.name:<10} stopped" in out.stdout and "degraded" in out.stdout, out.stdout
        if victim == "leader":
            assert degraded["leader"] != node.id
        # pacing, not a wait for a condition: the load must span the failover and some time after
        wait_for(lambda: time.time() > killed_at + FAILOVER_WINDOW, FAILOVER_WINDOW + 5, "the failover window to pass")
        load.stop()

        # every QoS 1 event the bridge acknowledged is on the events topic; every press opened its incident
        wait_for(lambda: all(info.is_published() for _, info in load.sent), 120, "every PUBACK")
        acked = {eid for eid, info in load.sent if info.is_published()}
        events.wait(lambda rs: acked <= {r.get("event_id") for r in rs}, 120, "every acknowledged event on Kafka")
        press_ids = {eid: (school, at) for school, eid, at, _ in load.presses}
        opened: dict[str, float] = {}

        def all_opened() -> bool:
            for t, a in list(alerts.arrivals):
                if a.get("stage") == "opened":
                    for e in a.get("evidence", []):
                        if e.get("event_id") in press_ids:
                            opened.setdefault(e["event_id"], t)
            return set(press_ids) <= set(opened)

        wait_for(all_opened, 120, "every press's opened alert")
        assert p.bridge.proc.poll() is None and p.worker.proc.poll() is None, "bridge and worker ran through the failover"

        # before: alerted before the kill; during: the rest (a press in flight at the kill too)
        before = [opened[e] - at for e, (_, at) in press_ids.items() if opened[e] < killed_at]
        during = [opened[e] - at for e, (_, at) in press_ids.items() if opened[e] >= killed_at and at <= killed_at + FAILOVER_WINDOW]
        arrivals = [t for t, r in events.arrivals if str(r.get("event_id", "")).startswith("hb-")]
        first = min(at for _, _, at, _ in load.presses)
        pause_before = longest_gap(arrivals, first, killed_at)
        pause_during = longest_gap(arrivals, killed_at, killed_at + FAILOVER_WINDOW)
        figures(
            f"broker failover ({RATE:.0f} msg/s, {victim} kafka-{node.id} killed; quorum leader was {c['leader']}, then {degraded['leader']}): "
            f"{len(acked)} acknowledged events all on Kafka, {len(press_ids)} presses all opened\n"
            f"  longest pause of the events topic: before {pause_before:.2f} s, during {pause_during:.2f} s\n"
            f"  press -> opened alert: before p50 {pct(before, .5) * 1000:.0f} ms p99 {pct(before, .99) * 1000:.0f} ms (n={len(before)}); "
            f"during p50 {pct(during, .5) * 1000:.0f} ms p99 {pct(during, .99) * 1000:.0f} ms max {max(during) * 1000:.0f} ms (n={len(during)})"
        )
        assert statistics.median(before) < 5

        # stack up again brings the node back; its replicas catch up
        restarted = time.monotonic()
        local.up(cfg)
        wait_for(lambda: healthy(cfg), 180, "the restarted broker back in sync")
        figures(f"  {node.name} restarted and every replica in sync after {time.monotonic() - restarted:.1f} s")
    finally:
        if load is not None:
            load.close()
        p.close()
        events.close()
        alerts.close()
        if any(s.pid() is None for s in kafka_server.services(cfg)):
            local.up(cfg)  # the next test gets the whole cluster


def _under_replicated(cfg: Config) -> dict[str, Any] | None:
    """The cluster's state once it reports under-replicated partitions (the dead broker fenced)."""
    try:
        c = local.cluster(cfg)
    except Exception:  # noqa: BLE001 - a broker being fenced may not answer
        return None
    return c if c["under_replicated"] else None
