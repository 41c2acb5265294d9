"""kafka-python plumbing shared by the bridge, the CLI, the stack and the tests.

Every client is built from the Config and the role of the component that uses it
(`client_settings`): the bootstrap servers and, with kafka.security_protocol SASL_*, the
SCRAM account of that role. PLAINTEXT: the bootstrap servers alone.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.serializer import Serializer

from pipeline.config import Config
from pipeline.credentials import CredentialsError, Store

log = logging.getLogger("huxue.kafka")

# role -> the SCRAM account `huxue stack up` creates for it (kafka.username empty).
# operator: console, recorder, CLI commands, alerts tail, demo; notifier: `huxue notifier`;
# admin: stack, tests, bench.
ACCOUNTS = {"bridge": "huxue-bridge", "worker": "huxue-worker", "operator": "huxue-operator", "notifier": "huxue-notifier", "admin": "admin"}
ROLES = tuple(ACCOUNTS)


class TopicMismatch(RuntimeError):
    """An existing topic has the wrong partition count: co-partitioning would break."""


def secured(cfg: Config) -> bool:
    return cfg.kafka.security_protocol != "PLAINTEXT"


def credentials(cfg: Config, role: str) -> tuple[str, str] | None:
    """(username, password) of `role`, or None with PLAINTEXT. Raises CredentialsError (one line)."""
    if role not in ACCOUNTS:
        raise ValueError(f"unknown Kafka client role {role!r}; one of {', '.join(ROLES)}")
    k = cfg.kafka
    if not secured(cfg):
        return None
    if not k.username:
        name = ACCOUNTS[role]
        return name, Store(cfg.home, "kafka").password(name)
    if k.password_env:
        password = os.environ.get(k.password_env, "")
        if not password:
            raise CredentialsError(f"kafka.password_env: the variable {k.password_env} (password of Kafka account {k.username!r}) is not set or empty")
        return k.username, password
    path = cfg.kafka_path("password_file")
    try:
        password = path.read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        raise CredentialsError(f"kafka.password_file: cannot read {path}: {exc.strerror}") from None
    if not password:
        raise CredentialsError(f"kafka.password_file: {path} is empty")
    return k.username, password


def client_settings(cfg: Config, role: str) -> dict[str, Any]:
    """kafka-python settings (KafkaProducer, KafkaConsumer, KafkaAdminClient) for `role`."""
    settings: dict[str, Any] = {"bootstrap_servers": cfg.kafka.bootstrap}
    creds = credentials(cfg, role)
    if creds is not None:
        settings.update(
            security_protocol=cfg.kafka.security_protocol,
            sasl_mechanism=cfg.kafka.sasl_mechanism,
            sasl_plain_username=creds[0],
            sasl_plain_password=creds[1],
        )
        if cfg.kafka.security_protocol == "SASL_SSL" and cfg.kafka.ca_file:
            settings["ssl_cafile"] = str(cfg.kafka_path("ca_file"))
    return settings


def faust_settings(cfg: Config, role: str = "worker") -> dict[str, Any]:
    """faust.App settings: `broker` and, with SASL, `broker_credentials` (SASL_SSL when it
    carries an SSL context)."""
    settings: dict[str, Any] = {"broker": [f"kafka://{h}" for h in cfg.kafka.bootstrap.split(",")]}
    creds = credentials(cfg, role)
    if creds is not None:
        import faust

        context = None
        if cfg.kafka.security_protocol == "SASL_SSL":
            ca = cfg.kafka_path("ca_file")
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
        settings["broker_credentials"] = faust.SASLCredentials(
            username=creds[0], password=creds[1], mechanism=cfg.kafka.sasl_mechanism, ssl_context=context
        )
    return settings


def admin(cfg: Config, role: str, timeout_ms: int = 10000) -> KafkaAdminClient:
    return KafkaAdminClient(**client_settings(cfg, role), client_id=f"huxue-{role}-admin", request_timeout_ms=timeout_ms)


def consumer(cfg: Config, role: str, **settings: Any) -> KafkaConsumer:
    """A KafkaConsumer of `role` (callers assign partitions; group_id as they pass)."""
    return KafkaConsumer(**client_settings(cfg, role), **settings)


def broker_count(cfg: Config, role: str) -> int:
    """Ready brokers: DescribeCluster (Kafka 4.x) also lists fenced ones, flagged."""
    a = admin(cfg, role, timeout_ms=5000)
    try:
        return sum(not b.get("is_fenced", False) for b in a.describe_cluster()["brokers"])
    finally:
        a.close()


def ensure_topics(
    cfg: Config, role: str, names: Iterable[str], partitions: int, replication: int | None = None, configs: dict[str, str] | None = None
) -> list[str]:
    """Create missing topics (`replication` default: kafka.replication_factor); check existing
    ones have `partitions`. Returns the created names.

    A topic is created with its configs of `cfg.topics.configs()` (the units topic:
    compacted), whoever creates it, and then `configs`; an existing topic whose required
    configs differ gets a warning (when the role may read topic configs)."""
    names = list(names)
    replication = replication or cfg.kafka.replication_factor
    required = cfg.topics.configs()
    a = admin(cfg, role)
    try:
        existing = _partition_counts(a, names)
        _check_configs(a, {t: required[t] for t in existing if t in required})
        wrong = {t: n for t, n in existing.items() if n != partitions}
        if wrong:
            raise TopicMismatch(
                "topics exist with a different partition count than kafka.partitions="
                f"{partitions}: {wrong}. All co-partitioned topics must match; recreate them or fix the config."
            )
        missing = [t for t in names if t not in existing]
        if missing:
            try:
                a.create_topics([NewTopic(t, partitions, replication, topic_configs={**required.get(t, {}), **(configs or {})}) for t in missing])
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won; counts are re-checked below
            created = _partition_counts(a, missing)
            bad = {t: n for t, n in created.items() if n != partitions}
            if bad:
                raise TopicMismatch(f"topics were created concurrently with other partition counts: {bad}")
        return missing
    finally:
        a.close()


def ensure_units_topic(cfg: Config, role: str) -> list[str]:
    """The mobile units' topic (issue 13), created compacted with kafka.partitions if missing;
    [its name] when this call created it. Roles: bridge, worker, admin (they may Create)."""
    return ensure_topics(cfg, role, [cfg.topics.units], cfg.kafka.partitions, cfg.kafka.replication_factor)


def _check_configs(a: KafkaAdminClient, wanted: dict[str, dict[str, str]]) -> None:
    """Warn about existing topics without the configs huxue creates them with (e.g. a units
    topic a broker auto-created, not compacted). Best effort: DescribeConfigs may be denied."""
    for key in sorted({k for c in wanted.values() for k in c}):
        names = [t for t, c in wanted.items() if key in c]
        try:
            found = topic_config(a, names, key)
        except Exception as exc:  # noqa: BLE001 - an ACL without DescribeConfigs: nothing to check
            log.debug("cannot read topic configs", extra={"error": type(exc).__name__})
            return
        for t in names:
            if t in found and found[t] != wanted[t][key]:
                log.warning(
                    "topic exists with another config than huxue creates it with: fix it (kafka-configs.sh --alter)",
                    extra={"topic": t, "config": key, "value": found[t], "expected": wanted[t][key]},
                )


def topic_config(a: KafkaAdminClient, names: list[str], key: str) -> dict[str, str]:
    """topic -> its effective value of `key` (the broker's default when the topic sets none)."""
    if not names:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs={key: None}) for name in names]
    found = a.describe_configs(resources, config_filter="all").get("topic", {})
    return {name: entry[key]["value"] for name, entry in found.items() if key in entry}


def delete_topics(cfg: Config, role: str, names: list[str]) -> None:
    """Best effort: used to clean up after benchmarks."""
    a = admin(cfg, role)
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


def producer(cfg: Config, role: str, **overrides: Any) -> KafkaProducer:
    """At-least-once producer: acks from all in-sync replicas, idempotent retries."""
    settings: dict[str, Any] = dict(
        **client_settings(cfg, role),
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_block_ms=10000,
        key_serializer=Utf8Keys(),
    )
    settings.update(overrides)
    return KafkaProducer(**settings)


def wait_for_kafka(cfg: Config, role: str, timeout: float, alive: Any = None, brokers: int = 1) -> None:
    """Wait until metadata lists `brokers` ready brokers, or raise. `alive()` False aborts early."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("Kafka process exited during start-up")
        try:
            if broker_count(cfg, role) >= brokers:
                return
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"Kafka at {cfg.kafka.bootstrap} did not list {brokers} broker(s) in metadata within {timeout:g} s ({last})")
