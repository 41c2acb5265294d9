"""Mobile units, the ingest half (issue 13), on real brokers: a unit's reports go through the
bridge to the compacted units topic, keyed "<unit>/<aspect>"; a malformed report is
dead-lettered with its reason; `huxue simulate` patrols the units; on the locked stack
(`stack up` with MQTT accounts and Kafka ACLs) each unit publishes through its own account
and the worker's and the console's accounts read the topic."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from harness import REPO, Collector, Pipeline, free_port, test_registry as make_registry, up_locked, wait_for
from pipeline import kafka_client
from pipeline.mqtt_client import AsDevices
from pipeline.records import dumps, iso_utc

pytestmark = pytest.mark.integration

CAR, MOTO = "u-car-1", "u-moto-1"  # harness.TEST_UNITS


def compaction(cfg) -> dict[str, str]:
    a = kafka_client.admin(cfg, "admin")
    try:
        return kafka_client.topic_config(a, [cfg.topics.units], "cleanup.policy")
    finally:
        a.close()


def partitions(cfg, topic: str) -> int:
    a = kafka_client.admin(cfg, "admin")
    try:
        [t] = a.describe_topics([topic])
        return len(t["partitions"])
    finally:
        a.close()


def keyed(units: Collector) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in list(units.raw):
        out.setdefault(r.key.decode(), []).append(orjson.loads(r.value))
    return out


def test_unit_reports_land_on_the_compacted_units_topic_by_key_and_bad_ones_in_the_dlq(stack, workdir):
    p = Pipeline(stack, workdir)
    units = None
    try:
        p.start_bridge()  # the bridge alone: it creates the units topic at start
        p.wait_flowing()
        t = p.cfg.topics
        assert compaction(p.cfg) == {t.units: "compact"}
        assert partitions(p.cfg, t.units) == p.cfg.kafka.partitions
        units = Collector(p.cfg, t.units)

        p.publish(CAR, b"online", channel="status")
        status = p.emit(CAR, "unit.status", status="available")
        first = p.emit(CAR, "unit.position", lat=30.6571, lon=104.0817, speed_kmh=32.0, heading=90.0, accuracy_m=5)
        second = p.emit(CAR, "unit.position", lat=30.6572, lon=104.0830, speed_kmh=31.5, heading=88.5)
        moto = p.emit(MOTO, "unit.position", lat=30.60, lon=104.02, speed_kmh=0, heading=360)
        beat = p.emit(MOTO, "device.heartbeat", battery=77)
        bad = p.emit(CAR, "unit.position", lat=123.0, lon=104.0, speed_kmh=10, heading=10)
        worse = p.emit(MOTO, "unit.status", status="napping")

        wanted = {f"{CAR}/online", f"{CAR}/status", f"{CAR}/position", f"{MOTO}/position", f"{MOTO}/heartbeat"}
        units.wait(lambda rs: len(rs) >= 6 and wanted <= set(keyed(units)), 30, "the units' records")
        by_key = keyed(units)
        assert set(by_key) == wanted, by_key
        assert [e["event_id"] for e in by_key[f"{CAR}/position"]] == [first["event_id"], second["event_id"]]  # in order
        assert by_key[f"{CAR}/status"][0]["event_id"] == status["event_id"]
        assert by_key[f"{CAR}/online"][0]["type"] == "device.online"
        assert by_key[f"{MOTO}/position"][0]["event_id"] == moto["event_id"]
        assert by_key[f"{MOTO}/heartbeat"][0]["event_id"] == beat["event_id"]
        for e in (ev for evs in by_key.values() for ev in evs):
            assert (e["kind"], e["school_id"], e["zone"], e["source"]) == ("mobile_unit", "", "", "native"), e
        assert by_key[f"{CAR}/position"][0]["attrs"] == first["attrs"]
        # the key's partition is the one every huxue client (and the Java client) would pick
        for r in units.raw:
            assert r.partition == kafka_client.partition_for(r.key.decode(), p.cfg.kafka.partitions)

        of_units = lambda rs: [e for e in rs if e.get("device_id") in (CAR, MOTO)]  # noqa: E731
        dead = p.dlq.wait(lambda rs: of_units(rs) if len(of_units(rs)) >= 2 else None, 30, "the bad reports in the DLQ")
        reasons = {e["device_id"]: (e["reason_code"], e["reason"]) for e in dead}
        assert reasons[CAR] == ("invalid_field", "attrs.lat must be a number in [-90, 90]")
        assert reasons[MOTO][0] == "invalid_field" and "attrs.status must be one of" in reasons[MOTO][1]
        assert any(bad["event_id"] in e.get("payload", "") for e in dead) and any(worse["event_id"] in e.get("payload", "") for e in dead)
        # nothing of a unit reaches the events topic (school-keyed): a later device event arrives alone
        later = p.emit("t10-cam-1", "device.heartbeat")
        p.events.wait(lambda rs: any(r["event_id"] == later["event_id"] for r in rs), 30, "a later device event")
        assert not [r for r in p.events.records if r.get("device_id") in (CAR, MOTO)]
    finally:
        if units is not None:
            units.close()
        p.close()


def test_huxue_simulate_patrols_the_units(stack, workdir):
    # seven located schools: u-car-1 drives t01-t04, u-moto-1 t05-t07, u-foot-1 circles t01
    p = Pipeline(stack, workdir, registry=make_registry(7, coordinates=True), probe_device="t07-cam-1")
    units = None
    try:
        p.start_bridge()
        p.wait_flowing()
        units = Collector(p.cfg, p.cfg.topics.units)
        sim = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "--config", str(p.cfg_path), "simulate", "--rate", "0", "--heartbeat-seconds", "0", "--unit-seconds", "1", "--duration", "4.5"],
            capture_output=True, text=True, cwd=REPO, env=p.worker.env, timeout=60,
        )
        assert sim.returncode == 0, sim.stdout + sim.stderr
        assert "3 mobile units report every 1 s" in sim.stdout, sim.stdout
        ids = ("u-car-1", "u-moto-1", "u-foot-1")

        def done(rs):
            k = keyed(units)
            return all(len(k.get(f"{u}/position", [])) >= 4 for u in ids) and all(len(k.get(f"{u}/online", [])) >= 2 for u in ids)

        units.wait(done, 30, "positions of every unit, then offline")
        k = keyed(units)
        for u in ids:
            assert [e["attrs"]["status"] for e in k[f"{u}/status"]] == ["available"]
            assert [e["type"] for e in k[f"{u}/online"]] == ["device.online", "device.offline"]
            positions = [e["attrs"] for e in k[f"{u}/position"]]
            assert len({(a["lat"], a["lon"]) for a in positions}) == len(positions)  # it moves
            assert all(0 <= a["heading"] <= 360 and a["accuracy_m"] >= 0 for a in positions)
        assert {k[f"{u}/position"][0]["attrs"]["speed_kmh"] for u in ids} == {40.0, 35.0, 5.0}  # config units.speeds_kmh
        assert not [e for e in p.dlq.records if e.get("device_id") in ids]
    finally:
        if units is not None:
            units.close()
        p.close()


PARTITIONS = 3


def test_locked_stack_creates_the_topic_compacted_and_units_publish_as_themselves(locked_stack, tmp_path_factory, tmp_path):
    kafka = {**locked_stack["kafka"], "topic_prefix": "units.", "partitions": PARTITIONS}
    raw, cfg, _ = up_locked(locked_stack, tmp_path_factory.mktemp("units-ingest"), kafka=kafka, worker={"app_id": "units-worker"})
    # `huxue stack up` made it (a just-created topic's configs are described a moment later)
    wait_for(lambda: compaction(cfg) == {cfg.topics.units: "compact"}, 20, "the units topic compacted", interval=0.5)
    config = {"kafka": raw["kafka"], "bridge": {**raw["bridge"], "metrics_port": free_port()}, "worker": {**raw["worker"], "metrics_port": free_port()}}
    p = Pipeline(raw, tmp_path, partitions=PARTITIONS, config=config)
    pubs = AsDevices(p.cfg, [CAR])  # logged in as u-car-1 (TLS, its generated password)
    readers = []
    try:
        p.start_bridge()  # as huxue-bridge: ensures (and may not describe the configs of) the units topic
        p.wait_flowing()
        body = {"event_id": p.event_id(), "type": "unit.position", "ts": iso_utc(time.time()), "attrs": {"lat": 30.6, "lon": 104.0, "speed_kmh": 12, "heading": 45}}
        pubs.publish(f"huxue/v1/devices/{CAR}/events", dumps(body)).wait_for_publish(10)
        roles = ("worker", "operator")
        readers = [Collector(p.cfg, p.cfg.topics.units, role=role) for role in roles]
        for role, reader in zip(roles, readers):
            found = reader.wait(lambda rs: [r for r in rs if r.get("event_id") == body["event_id"]], 30, f"the position read as {role}")
            assert found[0]["mqtt_account"] == CAR and found[0]["kind"] == "mobile_unit"
        assert any(r.key == f"{CAR}/position".encode() for r in readers[0].raw)

        # `huxue simulate` publishes each unit's messages through the unit's own account
        pubs.close()  # (its connection would be taken over: the client id is the account)
        sim = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "--config", str(p.cfg_path), "simulate", "--rate", "0", "--heartbeat-seconds", "0", "--unit-seconds", "1", "--duration", "2", "--schools", "7"],
            capture_output=True, text=True, cwd=REPO, env=p.worker.env, timeout=60,
        )
        assert sim.returncode == 0, sim.stdout + sim.stderr
        ids = (CAR, MOTO, "u-foot-1")  # the session registry's schools have no coordinates: status only
        wanted = {(u, t) for u in ids for t in ("device.online", "unit.status", "device.offline")}
        # (a unit's account refused, or missing from the broker's files, would have failed the run)
        readers[0].wait(lambda rs: wanted <= {(r.get("device_id"), r.get("type")) for r in rs}, 30, "the simulated units' status")
    finally:
        for reader in readers:
            reader.close()
        pubs.close()
        p.close()
