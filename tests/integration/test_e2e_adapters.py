"""Real device ecosystems through the real stack: a Frigate NVR and a Zigbee2MQTT SOS button
publish their own MQTT formats; huxue's bridge adapts them and the rules raise incidents."""

from __future__ import annotations

import time

import orjson
import pytest

from harness import QUIET_RULES, Pipeline

pytestmark = pytest.mark.integration

ALWAYS_OPEN = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "open": "00:00", "close": "00:00"}
REGISTRY = {
    "schools": [{"id": "f01", "name": "Frigate School", "timezone": "Asia/Shanghai", "hours": ALWAYS_OPEN}],
    "devices": [
        # one Frigate camera is three huxue devices: analytics, faces, plates
        {"id": "f01-cam-gate", "school": "f01", "kind": "video_analytics", "zone": "gate", "external": {"frigate": "gate_cam"},
         "zone_map": {"fence_line": "perimeter-north"}, "loiter_zones": ["bench"]},
        {"id": "f01-face-gate", "school": "f01", "kind": "face_camera", "zone": "gate", "external": {"frigate": "gate_cam"}},
        {"id": "f01-lpr-gate", "school": "f01", "kind": "plate_camera", "zone": "gate", "external": {"frigate": "gate_cam"}},
        {"id": "f01-sos-101", "school": "f01", "kind": "panic_button", "zone": "room-101", "external": {"zigbee2mqtt": "school/room101/sos"}},
        {"id": "f01-btn-1", "school": "f01", "kind": "panic_button", "zone": "gate"},
    ],
}
RULES = {**QUIET_RULES, "perimeter": {"enabled": True}, "face_watchlist": {"enabled": True}, "plate_watchlist": {"enabled": True, "plates": {"粤B12345": "Severe"}},
         "video_behaviour": {"enabled": True}}
ADAPTERS = {"adapters": {"frigate": {"instances": {"frigate": "http://nvr.zx01.local:5000"}, "faces": {"Wanted Person": "wanted"}}}}


def frigate_object(kind: str, object_id: str, zones: list[str], t: float, end: bool = False) -> bytes:
    obj = {
        "id": object_id, "camera": "gate_cam", "label": "person", "sub_label": None, "top_score": 0.91, "score": 0.88,
        "false_positive": False, "start_time": t - 5, "end_time": t if end else None, "frame_time": t,
        "current_zones": zones, "entered_zones": zones, "has_snapshot": True, "has_clip": False, "active": True,
        "stationary": False, "attributes": {}, "current_attributes": [], "pending_loitering": False,
    }
    # Frigate's own serialisation: json.dumps with default separators, key order before/after/type
    return orjson.dumps({"before": obj, "after": obj, "type": kind})


def test_frigate_sequence_and_zigbee_sos_become_incidents(stack, workdir):
    p = Pipeline(stack, workdir, registry=REGISTRY, rules=RULES, probe_device="f01-cam-gate", config=ADAPTERS)
    try:
        p.start()
        oid = f"{time.time():.6f}-abc123"
        t = time.time()
        for i, (kind, zones) in enumerate([("new", []), ("update", ["fence_line"]), ("update", ["fence_line"]), ("update", ["fence_line", "parking"]), ("end", ["fence_line", "parking"])]):
            p.publisher.publish("frigate/events", frigate_object(kind, oid, zones, t + i, end=kind == "end"), qos=0).wait_for_publish(10)
        p.publisher.publish("frigate/tracked_object_update", orjson.dumps({"type": "face", "id": oid, "name": None, "score": 0.4, "camera": "gate_cam", "timestamp": t + 1}), qos=0)
        p.publisher.publish("frigate/tracked_object_update", orjson.dumps({"type": "face", "id": oid, "name": "Wanted Person", "score": 0.93, "camera": "gate_cam", "timestamp": t + 2}), qos=0)
        p.publisher.publish("frigate/tracked_object_update", orjson.dumps({"type": "face", "id": oid, "name": "Wanted Person", "score": 0.95, "camera": "gate_cam", "timestamp": t + 3}), qos=0)
        p.publisher.publish("frigate/tracked_object_update", orjson.dumps({"type": "lpr", "id": "car-1", "name": None, "plate": ["粤B12345", 0.9], "score": 0.9, "camera": "gate_cam", "timestamp": t + 4}), qos=0)
        p.publisher.publish("zigbee2mqtt/school/room101/sos", b'{"action":"emergency","battery":88,"linkquality":120}').wait_for_publish(10)
        p.publisher.publish("zigbee2mqtt/school/room101/sos", b'{"action":"","battery":88,"linkquality":120}').wait_for_publish(10)
        p.publisher.publish("zigbee2mqtt/school/room101/sos/action", b"emergency").wait_for_publish(10)
        p.publisher.publish("zigbee2mqtt/bridge/state", b'{"state":"online"}', retain=True).wait_for_publish(10)
        p.publisher.publish("frigate/events", frigate_object("update", "x-1", ["fence_line"], t).replace(b"gate_cam", b"unknown_cam"), qos=1).wait_for_publish(10)

        perimeter = p.wait_stage("f01", "opened", rule="perimeter")
        assert perimeter["severity"] == "Moderate" and perimeter["zone"] == "perimeter-north"
        ev = perimeter["evidence"][0]
        assert ev["device_id"] == "f01-cam-gate" and ev["event_id"] == f"frigate-{oid}-fence_line"
        assert ev["media"]["snapshot_url"] == f"http://nvr.zx01.local:5000/api/events/{oid}/snapshot.jpg"
        face = p.wait_stage("f01", "opened", rule="face_watchlist")
        assert face["severity"] == "Extreme" and face["evidence"][0]["device_id"] == "f01-face-gate"
        plate = p.wait_stage("f01", "opened", rule="plate_watchlist")
        assert plate["severity"] == "Severe" and plate["evidence"][0]["attrs"]["plate"] == "粤B12345"
        panic = p.wait_stage("f01", "opened", rule="panic")
        assert panic["evidence"][0]["device_id"] == "f01-sos-101" and panic["zone"] == "room-101"
        dlq = p.dlq.wait(lambda rs: [r for r in rs if r["reason_code"] == "unknown_device"], 20, "unknown camera in the DLQ")
        assert "unknown_cam" in dlq[0]["reason"]

        # one canonical event per object and zone, not one per update; one face, one plate, one press
        p.sentinel("f01", "f01-btn-1")
        frigate = [e for e in p.events.records if e["source"] == "frigate"]
        assert [e["type"] for e in frigate if e["device_id"] == "f01-cam-gate"] == ["video.intrusion"]
        assert [e["type"] for e in frigate if e["device_id"] == "f01-face-gate"] == ["face.match"]
        assert [e["type"] for e in frigate if e["device_id"] == "f01-lpr-gate"] == ["plate.read"]
        z2m = [e for e in p.events.records if e["source"] == "zigbee2mqtt"]
        assert sorted(e["type"] for e in z2m) == ["device.heartbeat", "device.heartbeat", "panic.pressed"]
        assert next(e for e in z2m if e["type"] == "device.heartbeat")["attrs"] == {"battery": 88, "linkquality": 120}
        assert all(e["mqtt_topic"].startswith(("frigate/", "zigbee2mqtt/")) for e in frigate + z2m)
        # the face incident took the second recognition of the same object only once
        assert len([a for a in p.alerts_of("f01") if a["rule"] == "face_watchlist"]) == 1
    finally:
        p.close()
