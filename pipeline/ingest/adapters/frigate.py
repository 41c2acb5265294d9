"""Frigate NVR (0.16/0.17; 0.12 and 0.18 tolerated) -> canonical events.

Topics under each configured prefix (`adapters.frigate.instances`, default `frigate`):

* `<p>/events` (`new`/`update`/`end`, `before`/`after`): a tracked object of a watched
  label entering a zone listed in the camera's `zone_map` -> `video.intrusion`, or
  `video.loiter` for its `loiter_zones`. Frigate repeats the object in many updates:
  one canonical event per (object id, zone), event id `frigate-<object id>-<zone>`.
  False positives and unmapped zones are ignored.
* `<p>/tracked_object_update`: `face` with a recognised name -> `face.match` (watchlist
  from `faces`, else `default_watchlist`); `lpr` -> `plate.read` (`plate` may also come
  as `[plate, score]`). Once per (object id, name / plate).
* `<p>/available` (`online` / `offline` / `stopped`) -> `device.online` / `device.offline`
  for the NVR's cameras; `<p>/stats` -> `device.heartbeat` per camera streaming
  (`camera_fps` > 0), `device.offline` for one that is not.
Cameras resolve through the registry's `external: {frigate: <camera>}` (or
`<prefix>/<camera>` when several NVRs share names), picking the device whose kind may send
the event type. Snapshot, thumbnail and clip links come from the instance's base URL.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.config import FrigateConfig
from pipeline.ingest.adapters.common import Seen, any_ts, availability, event, number, school_tz, unknown
from pipeline.records import CanonicalEvent, Rejection
from pipeline.registry import Device, Registry

SOURCE = ECOSYSTEM = "frigate"
CHANNELS = ("events", "tracked_object_update", "available", "stats")


class Frigate:
    def __init__(self, cfg: FrigateConfig, registry: Registry):
        self.cfg = cfg
        self.registry = registry
        self.seen = Seen()

    def subscriptions(self) -> list[str]:
        return [f"{prefix}/{channel}" for prefix in self.cfg.instances for channel in CHANNELS]

    def handles(self, topic: str) -> bool:
        prefix, _, channel = topic.rpartition("/")
        return prefix in self.cfg.instances and channel in CHANNELS

    def parse(self, topic: str, payload: bytes, *, retained: bool, received_at: float) -> list[CanonicalEvent | Rejection]:
        prefix, _, channel = topic.rpartition("/")
        if channel == "available":
            state = availability(payload)
            if state is None:
                return [Rejection("bad_status", f"Frigate availability must be online/offline/stopped, got {payload[:40]!r}")]
            return [
                event(d, f"frigate-{state}-{int(received_at * 1000)}", f"device.{state}", received_at, topic, received_at, SOURCE, {"retained": True} if retained else {})
                for d in self._instance_devices(prefix)
            ]
        if retained:
            return [Rejection("retained_replay", f"retained message on {topic} (replayed at subscribe); not a new event")]
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return [Rejection("bad_json", f"Frigate payload is not JSON: {exc}")]
        if not isinstance(body, dict):
            return [Rejection("not_an_object", f"Frigate payload must be a JSON object, got {type(body).__name__}")]
        if channel == "events":
            return self._object(prefix, topic, body, received_at)
        if channel == "tracked_object_update":
            return self._recognition(prefix, topic, body, received_at)
        return self._stats(prefix, topic, body, received_at)

    # --- helpers ---------------------------------------------------------------------

    def _device(self, prefix: str, camera: str, kind: str) -> Device | None:
        kinds = frozenset({kind})
        return self.registry.by_external(ECOSYSTEM, f"{prefix}/{camera}", kinds) or self.registry.by_external(ECOSYSTEM, camera, kinds)

    def _instance_devices(self, prefix: str) -> list[Device]:
        """The cameras of one NVR: named `<prefix>/...`, or plainly when there is one NVR."""
        single = len(self.cfg.instances) == 1
        return [
            d for d in self.registry.of_ecosystem(ECOSYSTEM)
            if d.external[ECOSYSTEM].startswith(f"{prefix}/") or (single and "/" not in d.external[ECOSYSTEM])
        ]

    def _media(self, prefix: str, object_id: str) -> dict[str, str] | None:
        base = self.cfg.instances.get(prefix, "").rstrip("/")
        if not base:
            return None
        api = f"{base}/api/events/{object_id}"
        return {"snapshot_url": f"{api}/snapshot.jpg", "thumbnail_url": f"{api}/thumbnail.jpg", "clip_url": f"{api}/clip.mp4"}

    def _time(self, value: Any, device: Device, fallback: float) -> float:
        try:
            return any_ts(value, school_tz(self.registry, device))[0]
        except ValueError:
            return fallback

    # --- frigate/events ---------------------------------------------------------------

    def _object(self, prefix: str, topic: str, body: dict, received_at: float) -> list[CanonicalEvent | Rejection]:
        obj = body.get("after") if isinstance(body.get("after"), dict) else body.get("before")
        if not isinstance(obj, dict):
            return [Rejection("missing_field", "Frigate event needs an `after` (or `before`) object")]
        camera, object_id = obj.get("camera"), obj.get("id")
        if not isinstance(camera, str) or not isinstance(object_id, str) or not camera or not object_id:
            return [Rejection("missing_field", "Frigate event object needs `camera` and `id`")]
        device = self._device(prefix, camera, "video_analytics")
        if device is None:
            return [unknown(ECOSYSTEM, camera)]
        label = obj.get("label")
        if obj.get("false_positive") is True or label not in self.cfg.labels:
            return []
        entered = obj.get("entered_zones")
        zones = [z for z in entered if isinstance(z, str)] if isinstance(entered, list) else []
        watched = set(device.zone_map) | set(device.loiter_zones)
        out: list[CanonicalEvent | Rejection] = []
        for zone in zones:
            if zone not in watched or not self.seen.add(f"{prefix}/{object_id}/{zone}"):
                continue
            where = device.zone_map.get(zone, device.zone)
            score = obj.get("top_score", obj.get("score"))
            attrs = {"zone": where, "label": label, "frigate_id": object_id, "frigate_zone": zone}
            if number(score) is not None:
                attrs["score"] = round(float(score), 3)
            if zone in device.loiter_zones:
                start = self._time(obj.get("start_time"), device, received_at)
                attrs["duration_s"] = round(max(0.0, self._time(obj.get("frame_time"), device, received_at) - start), 1)
            etype = "video.loiter" if zone in device.loiter_zones else "video.intrusion"
            ts = self._time(obj.get("frame_time", obj.get("start_time")), device, received_at)
            out.append(event(device, f"frigate-{object_id}-{zone}", etype, ts, topic, received_at, SOURCE, attrs, self._media(prefix, object_id), where))
        return out

    # --- frigate/tracked_object_update --------------------------------------------------

    def _recognition(self, prefix: str, topic: str, body: dict, received_at: float) -> list[CanonicalEvent | Rejection]:
        kind = body.get("type")
        camera, object_id = body.get("camera"), str(body.get("id") or "")
        if kind not in ("face", "lpr"):
            return []  # description, classification: nothing huxue acts on
        if not isinstance(camera, str) or not camera:
            return [Rejection("missing_field", "Frigate tracked_object_update needs `camera`")]
        score = body.get("score")
        score = round(min(1.0, max(0.0, float(score))), 3) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        if kind == "face":
            name = body.get("name")
            if not isinstance(name, str) or not name:
                return []  # an unrecognised face
            device = self._device(prefix, camera, "face_camera")
            if device is None:
                return [unknown(ECOSYSTEM, camera)]
            if not self.seen.add(f"face/{prefix}/{object_id}/{name}"):
                return []
            attrs: dict[str, Any] = {"watchlist": self.cfg.faces.get(name, self.cfg.default_watchlist), "person_ref": name, "frigate_id": object_id}
            if score is not None:
                attrs["similarity"] = score
            ts = self._time(body.get("timestamp"), device, received_at)
            return [event(device, f"frigate-face-{object_id}-{name}", "face.match", ts, topic, received_at, SOURCE, attrs, self._media(prefix, object_id))]
        plate = body.get("plate")
        if isinstance(plate, list) and plate:
            plate = plate[0]
        if not isinstance(plate, str) or not plate.strip():
            return []
        device = self._device(prefix, camera, "plate_camera")
        if device is None:
            return [unknown(ECOSYSTEM, camera)]
        plate = plate.strip()[:32]
        if not self.seen.add(f"lpr/{prefix}/{object_id}/{plate}"):
            return []
        attrs = {"plate": plate, "frigate_id": object_id}
        if score is not None:
            attrs["score"] = score
        if isinstance(body.get("name"), str) and body["name"]:
            attrs["known_as"] = body["name"]
        ts = self._time(body.get("timestamp"), device, received_at)
        return [event(device, f"frigate-lpr-{object_id}-{plate}", "plate.read", ts, topic, received_at, SOURCE, attrs, self._media(prefix, object_id))]

    # --- frigate/stats ----------------------------------------------------------------------

    def _stats(self, prefix: str, topic: str, body: dict, received_at: float) -> list[CanonicalEvent | Rejection]:
        cameras = body.get("cameras")
        if not isinstance(cameras, dict):
            return []
        out: list[CanonicalEvent | Rejection] = []
        for name, stats in cameras.items():
            fps = number(stats.get("camera_fps")) if isinstance(stats, dict) else None
            if fps is None:
                continue
            for device in self.registry.external.get((ECOSYSTEM, f"{prefix}/{name}"), ()) or self.registry.external.get((ECOSYSTEM, name), ()):
                etype = "device.heartbeat" if fps > 0 else "device.offline"
                out.append(event(device, f"frigate-stats-{name}-{int(received_at)}", etype, received_at, topic, received_at, SOURCE, {"camera_fps": fps}))
        return out
