"""kafka-python plumbing shared by the bridge, the CLI, the stack and the tests."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.serializer import Serializer

log = logging.getLogger("huxue.kafka")


class TopicMismatch(RuntimeError):
    """An existing topic has the wrong partition count: co-partitioning would break."""


def admin(bootstrap: str, timeout_ms: int = 10000) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="huxue-admin", request_timeout_ms=timeout_ms)


def broker_count(bootstrap: str) -> int:
    """Brokers in the cluster metadata (only ready, unfenced brokers appear)."""
    a = admin(bootstrap, timeout_ms=5000)
    try:
        return len(a.describe_cluster()["brokers"])
    finally:
        a.close()


def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1, configs: dict[str, str] | None = None) -> list[str]:
    """Create missing topics; check existing ones have `partitions`. Returns the created names."""
    names = list(names)
    a = admin(bootstrap)
    try:
        existing = _partition_counts(a, names)
        wrong = {t: n for t, n in existing.items() if n != partitions}
        if wrong:
            raise TopicMismatch(
                "topics exist with a different partition count than kafka.partitions="
                f"{partitions}: {wrong}. All co-partitioned topics must match; recreate them or fix the config."
            )
        missing = [t for t in names if t not in existing]
        if missing:
            try:
                a.create_topics([NewTopic(t, partitions, replication, topic_configs=configs or {}) for t in missing])
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won; counts are re-checked below
            created = _partition_counts(a, missing)
            bad = {t: n for t, n in created.items() if n != partitions}
            if bad:
                raise TopicMismatch(f"topics were created concurrently with other partition counts: {bad}")
        return missing
    finally:
        a.close()


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Best effort: used to clean up after benchmarks."""
    a = admin(bootstrap)
    try:
        a.delete_topics(names)
    except KafkaError as exc:
        log.info("could not delete topics", extra={"error": type(exc).__name__})
    finally:
        a.close()


def _partition_counts(a: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    counts = {}
    for t in a.describe_topics(names):
        if t.get("error_code", 0) == 0:
            counts[t["name"]] = len(t["partitions"])
    return counts


@functools.lru_cache(maxsize=1 << 17)  # keys are school and device ids: murmur2 in Python costs
def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as the Java client, kafka-python and aiokafka
    place keys): the partition that owns a school's events, commands and state."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


class Utf8Keys(Serializer):
    """Keys are school or device ids: plain UTF-8 strings (what Faust's raw keys expect)."""

    def serialize(self, topic: str, value: Any) -> bytes | None:
        return value.encode("utf-8") if isinstance(value, str) else value


def producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """At-least-once producer: acks from all in-sync replicas, idempotent retries."""
    settings: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_block_ms=10000,
        key_serializer=Utf8Keys(),
    )
    settings.update(overrides)
    return KafkaProducer(**settings)


def wait_for_kafka(bootstrap: str, timeout: float, alive: Any = None) -> None:
    """Wait until the broker answers metadata, or raise. `alive()` False aborts early."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("Kafka process exited during start-up")
        try:
            if broker_count(bootstrap) >= 1:
                return
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer metadata within {timeout:g} s ({last})")
