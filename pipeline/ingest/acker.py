"""Acknowledge MQTT messages in arrival order, once Kafka has confirmed them.

MQTT requires PUBACKs in the order the PUBLISHes arrived, but Kafka confirms different
partitions out of order. Slots queue in arrival order; a confirmation marks its slot
done and acknowledges the head of the queue while it is done. Packet ids are reused
across connections, so slots carry the connection epoch and an old epoch's slot is
never acknowledged on a new connection (the broker redelivers those instead).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Slot:
    __slots__ = ("mid", "qos", "epoch", "done", "arrived", "pending")

    def __init__(self, mid: int, qos: int, epoch: int, arrived: float):
        self.mid, self.qos, self.epoch, self.done, self.arrived = mid, qos, epoch, False, arrived
        self.pending = 1  # Kafka records the message became (an adapter may make several)


class InOrderAcker:
    def __init__(self, ack: Callable[[int, int], object]):
        self._ack = ack
        self._q: deque[Slot] = deque()
        self._lock = threading.Lock()
        self.epoch = 0
        self.acked = 0

    def register(self, mid: int, qos: int) -> Slot:
        """Called on the MQTT network thread for every message, in arrival order."""
        slot = Slot(mid, qos, self.epoch, time.monotonic())
        with self._lock:
            self._q.append(slot)
        return slot

    def expect(self, slot: Slot, records: int) -> None:
        """The message became `records` Kafka records (0: nothing to wait for)."""
        with self._lock:
            slot.pending = records
        if records == 0:
            slot.pending = 1
            self.done(slot)

    def done(self, slot: Slot) -> None:
        """Called when Kafka confirmed one of the slot's records (any thread)."""
        with self._lock:
            slot.pending -= 1
            if slot.pending > 0:
                return
            slot.done = True
            while self._q and self._q[0].done:
                head = self._q.popleft()
                if head.epoch == self.epoch and head.qos > 0:
                    self._ack(head.mid, head.qos)
                    self.acked += 1

    def new_connection(self) -> None:
        """On every (re)connect: pending slots belong to the old connection."""
        with self._lock:
            self._q.clear()
            self.epoch += 1

    def depth(self) -> int:
        return len(self._q)

    def oldest_age(self) -> float:
        """Seconds the oldest unconfirmed message has waited (0 when none)."""
        with self._lock:
            return time.monotonic() - self._q[0].arrived if self._q else 0.0

