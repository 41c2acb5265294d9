"""The mobile units as last reported: a read-only view of the compacted units topic.

Every worker (and the console) reads the whole topic, from its start, outside any consumer
group, in a thread of its own, and folds each record into one `UnitState` per unit
(rules/units.py `apply_event`: the latest report by time wins, so the order of partitions
and redeliveries does not matter). The bridge writes the units' reports, each unit only its
own keys (the MQTT ACL); the workers write which units are busy with an incident (key
`<unit>/assignment/<incident>`, written by the incident's school's owner, a tombstone when
it closes: rules/units.py `assignment_changes`). No school's state lives here: the worker's
one writer per school holds. A few hundred units at a report every 10 s is a few dozen
records a second; the topic is compacted to the last report of each unit and aspect.

Readers get an immutable snapshot (`units()`); the thread swaps in a new dict after each
batch, so nobody iterates a dict being written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from kafka import TopicPartition

from pipeline import kafka_client
from pipeline.config import Config
from pipeline.records import CanonicalEvent, loads
from pipeline.registry import Registry
from pipeline.rules.units import Assignment, UnitState, apply_event, assignment_of_key, with_assignments

log = logging.getLogger("huxue.units")


class UnitsView:
    def __init__(self, cfg: Config, registry: Registry, role: str):
        self.cfg, self.registry, self.role = cfg, registry, role
        self._reports: dict[str, UnitState] = {}  # unit -> its own reports, folded
        self._held: dict[str, dict[str, Assignment]] = {}  # unit -> incident -> assignment
        self._units: dict[str, UnitState] = {}  # the snapshot readers get: both together
        self._stop = threading.Event()
        self.caught_up = threading.Event()  # read up to where the topic ended at start
        self._thread = threading.Thread(target=self._run, daemon=True, name="units-view")

    def start(self) -> UnitsView:
        if self.registry.units:  # no units in the registry: nothing to read
            self._thread.start()
        else:
            self.caught_up.set()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def units(self) -> Sequence[UnitState]:
        return tuple(self._units.values())

    def get(self, unit_id: str) -> UnitState | None:
        return self._units.get(unit_id)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except Exception as exc:  # noqa: BLE001 - the view must come back after a broker outage
                log.warning("units view interrupted, retrying", extra={"error": f"{type(exc).__name__}: {exc}"[:300], "retry_in_s": delay})
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _follow(self) -> None:
        topic = self.cfg.topics.units
        consumer = kafka_client.consumer(self.cfg, self.role, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            parts = consumer.partitions_for_topic(topic)
            while not parts and not self._stop.wait(1.0):  # the bridge creates it at its start
                parts = consumer.partitions_for_topic(topic)
            if not parts:
                return
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=500)
                if batch:
                    for records in batch.values():
                        for r in records:
                            self.fold(r.key, r.value)
                    self.publish()
                if not self.caught_up.is_set() and all(consumer.position(tp) >= ends[tp] for tp in tps):
                    self.caught_up.set()
                    log.info("units view caught up", extra={"units": len(self._units)})
        finally:
            consumer.close()

    def fold(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic into the view (the thread's; tests call it directly)."""
        held = assignment_of_key(key.decode("utf-8", "replace")) if key else None
        if held is not None:  # a worker's: busy with an incident, or released (tombstone)
            unit_id, incident_id = held
            if value is None:
                incidents = self._held.get(unit_id, {})
                incidents.pop(incident_id, None)
                if not incidents:
                    self._held.pop(unit_id, None)
                return
            try:
                assignment = Assignment.from_dict(loads(value))
            except Exception:  # noqa: BLE001 - a foreign record is skipped
                return
            if self.registry.unit(unit_id) is not None:
                self._held.setdefault(unit_id, {})[incident_id] = assignment
            return
        if value is None:  # a tombstone: compaction's delete marker
            return
        try:
            event = CanonicalEvent.from_dict(loads(value))
        except Exception:  # noqa: BLE001 - the bridge validated it; a foreign record is skipped
            return
        unit = self.registry.unit(event.device_id)
        if unit is None:  # a unit removed from the registry
            self._reports.pop(event.device_id, None)
            return
        self._reports[unit.id] = apply_event(self._reports.get(unit.id), event, unit, event.credible_ts(self.cfg.bridge.max_clock_skew_seconds))

    def publish(self) -> None:
        """Swap in the snapshot readers get (after each batch)."""
        self._units = {u.unit_id: u for u in with_assignments(self._reports.values(), self._held)}
