"""Zigbee2MQTT (1.x and 2.x) -> canonical events: SOS and panic buttons, their health.

Under each base topic (`adapters.zigbee2mqtt.base_topics`, default `zigbee2mqtt`):

* `<base>/<friendly name>` (JSON device state) of a registry device
  (`external: {zigbee2mqtt: <friendly name>}`; names may contain `/`):
  - a panic_button's `action` in its `press_actions` (the device's own list, else the
    configured defaults: emergency, sos, panic, single, double, long) -> `panic.pressed`;
    `""` and `null` are never presses (Home Assistant follow-ups);
  - `sos` / `alarm` / `alarm_1` / `alarm_2` turning true (rising edge only) -> `panic.pressed`;
  - `tamper` turning true -> `device.tamper`;
  - every state message -> `device.heartbeat` (with `battery`, `linkquality` when given).
* `<base>/<friendly name>/availability`, plain `online`/`offline` (1.x) or
  `{"state": ...}` (2.x) -> `device.online` / `device.offline`.
* `<base>/bridge/...`, `/set`, `/get` and the plain-text `/action` channel are ignored
  (one press arrives on several channels; huxue reads the JSON state message only).

Zigbee2MQTT has no event id. huxue derives one: `z2m-<device>-<last_seen>-<what>` when the
message carries Zigbee2MQTT's `last_seen` (set `advanced.last_seen: ISO_8601` or `epoch`
— recommended), else `z2m-<device>-<hash of the payload>-<arrival second>-<what>`. The
bridge replays its first result for a redelivered copy (MQTT DUP) of a recent message,
so either way a redelivery is the same event downstream. A retained state replayed at
subscribe is not an event, but it tells the rising-edge memory where the alarms stand.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from pipeline.config import Zigbee2MqttConfig
from pipeline.ingest.adapters.common import any_ts, availability, event, number, school_tz, unknown
from pipeline.records import CanonicalEvent, Rejection
from pipeline.registry import Device, Registry

SOURCE = ECOSYSTEM = "zigbee2mqtt"
ALARM_FIELDS = ("sos", "alarm", "alarm_1", "alarm_2")
COMMAND_SEGMENTS = {"set", "get"}  # <name>[/<endpoint>]/(set|get)[/<attribute>]: commands into Zigbee2MQTT


class Zigbee2Mqtt:
    def __init__(self, cfg: Zigbee2MqttConfig, registry: Registry):
        self.cfg = cfg
        self.registry = registry
        self.last: dict[tuple[str, str], bool] = {}  # (device, field) -> last boolean seen

    def subscriptions(self) -> list[str]:
        return [f"{base}/#" for base in self.cfg.base_topics]

    def handles(self, topic: str) -> bool:
        return any(topic.startswith(f"{base}/") for base in self.cfg.base_topics)

    def _device(self, base: str, name: str) -> Device | None:
        return self.registry.by_external(ECOSYSTEM, f"{base}/{name}") or self.registry.by_external(ECOSYSTEM, name)

    def parse(self, topic: str, payload: bytes, *, retained: bool, received_at: float) -> list[CanonicalEvent | Rejection]:
        base = max((b for b in self.cfg.base_topics if topic.startswith(f"{b}/")), key=len)
        rest = topic[len(base) + 1 :]
        segments = rest.split("/")
        if segments[0] == "bridge" or segments[-1] == "action" or COMMAND_SEGMENTS & set(segments[1:]):
            return []
        if rest.endswith("/availability"):
            name = rest[: -len("/availability")]
            device = self._device(base, name)
            if device is None:
                return [unknown(ECOSYSTEM, name)]
            state = availability(payload)
            if state is None:
                return [Rejection("bad_status", f"availability must be online/offline or {{\"state\": ...}}, got {payload[:40]!r}", device.id)]
            attrs = {"retained": True} if retained else {}
            return [event(device, f"z2m-{device.id}-{state}-{int(received_at * 1000)}", f"device.{state}", received_at, topic, received_at, SOURCE, attrs)]
        device = self._device(base, rest)
        if device is None:
            return [unknown(ECOSYSTEM, rest)]
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return [Rejection("bad_json", f"Zigbee2MQTT state is not JSON: {exc}", device.id)]
        if not isinstance(body, dict):
            return [Rejection("not_an_object", f"Zigbee2MQTT state must be a JSON object, got {type(body).__name__}", device.id)]
        if retained:
            for field in (*ALARM_FIELDS, "tamper"):
                self._rising(device, field, body.get(field))  # where the alarms stand, no event
            return [Rejection("retained_replay", f"retained state message on {topic} (replayed at subscribe); not a new event", device.id)]
        return self._state(device, topic, payload, body, received_at)

    def _state(self, device: Device, topic: str, payload: bytes, body: dict[str, Any], received_at: float) -> list[CanonicalEvent | Rejection]:
        ts, id_base = received_at, self._id_base(device, topic, payload, body, received_at)
        if "last_seen" in body:
            try:
                ts = any_ts(body["last_seen"], school_tz(self.registry, device))[0]
            except ValueError:
                pass
        out: list[CanonicalEvent | Rejection] = []
        if device.kind == "panic_button":
            action = body.get("action")
            presses = device.press_actions or self.cfg.press_actions
            raised = [f for f in ALARM_FIELDS if self._rising(device, f, body.get(f))]
            if (isinstance(action, str) and action in presses) or raised:
                attrs = {"action": action} if isinstance(action, str) and action else {"alarm": raised[0]}
                out.append(event(device, f"{id_base}-press", "panic.pressed", ts, topic, received_at, SOURCE, attrs))
        if self._rising(device, "tamper", body.get("tamper")):
            out.append(event(device, f"{id_base}-tamper", "device.tamper", ts, topic, received_at, SOURCE, {}))
        attrs = {k: number(body.get(k)) for k in ("battery", "linkquality") if number(body.get(k)) is not None}
        if "battery" in attrs:
            attrs["battery"] = max(0, min(100, attrs["battery"]))
        out.append(event(device, f"{id_base}-hb", "device.heartbeat", ts, topic, received_at, SOURCE, attrs))
        return out

    def _rising(self, device: Device, field: str, value: Any) -> bool:
        """True when a boolean alarm field turns true (it stays true until cleared)."""
        if not isinstance(value, bool):
            return False
        before = self.last.get((device.id, field), False)
        self.last[(device.id, field)] = value
        return value and not before

    def _id_base(self, device: Device, topic: str, payload: bytes, body: dict[str, Any], received_at: float) -> str:
        if isinstance(body.get("last_seen"), (str, int, float)) and not isinstance(body.get("last_seen"), bool):
            return f"z2m-{device.id}-{body['last_seen']}"
        digest = hashlib.sha1(topic.encode() + b"\0" + payload).hexdigest()[:12]
        return f"z2m-{device.id}-{digest}-{int(received_at)}"
