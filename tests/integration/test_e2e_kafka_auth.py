"""Kafka with authenticated clients: a SASL/SCRAM broker with ACLs, started by `huxue stack up`.

On the session's locked stack (not the open PLAINTEXT one): Kafka with
kafka.security_protocol SASL_PLAINTEXT, Mosquitto with accounts and TLS. Clients without
the right account fail within a bounded time; each component account can do what its
component does and nothing else; bridge and worker run as processes and a panic press
goes through to an alert and an `ack` from the CLI back to the worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import UserScramCredentialDeletion
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAuthorizationFailedError

from harness import REPO, Pipeline, free_port, up_locked
from pipeline import kafka_client
from pipeline.stack import local

PARTITIONS = 3
BOOTSTRAP_TIMEOUT_MS = 3000  # a refused client gives up after this (kafka-python: KafkaTimeoutError)


@pytest.fixture(scope="module")
def auth_stack(locked_stack, tmp_path_factory):
    """The locked stack for topics auth.* and worker app id auth-worker (the ACLs name them)."""
    kafka = {**locked_stack["kafka"], "topic_prefix": "auth.", "partitions": PARTITIONS}
    raw, cfg, _ = up_locked(locked_stack, tmp_path_factory.mktemp("kafka-auth"), kafka=kafka, worker={"app_id": "auth-worker"})
    return raw, cfg


def refused(make, what: str) -> Exception:
    """`make()` must fail within the bootstrap timeout (plus slack), not hang."""
    t0 = time.monotonic()
    with pytest.raises(KafkaError) as exc:
        client = make()
        client.close()
    took = time.monotonic() - t0
    assert took < BOOTSTRAP_TIMEOUT_MS / 1000 + 5, f"{what}: refused only after {took:.1f} s"
    return exc.value


def test_stack_generated_the_accounts_privately(auth_stack):
    _, cfg = auth_stack
    secrets = cfg.home / "secrets" / "kafka.json"
    assert oct(secrets.stat().st_mode & 0o777) == "0o600"
    assert oct((cfg.home / "kafka" / "server.properties").stat().st_mode & 0o777) == "0o600"
    assert sorted(yaml.safe_load(secrets.read_text())) == ["admin", "huxue-bridge", "huxue-notifier", "huxue-operator", "huxue-worker"]


def test_client_without_credentials_can_neither_produce_nor_consume(auth_stack):
    _, cfg = auth_stack
    bootstrap = cfg.kafka.bootstrap
    err = refused(lambda: KafkaProducer(bootstrap_servers=bootstrap, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, max_block_ms=BOOTSTRAP_TIMEOUT_MS), "producer without credentials")
    assert isinstance(err, KafkaTimeoutError)
    err = refused(lambda: KafkaConsumer(cfg.topics.alerts, bootstrap_servers=bootstrap, group_id=None, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS), "consumer without credentials")
    assert isinstance(err, KafkaTimeoutError)


def test_wrong_password_fails_and_the_right_one_works(auth_stack):
    _, cfg = auth_stack
    good = {**kafka_client.client_settings(cfg, "bridge"), "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS, "max_block_ms": BOOTSTRAP_TIMEOUT_MS}
    assert good["sasl_plain_username"] == "huxue-bridge"
    refused(lambda: KafkaProducer(**{**good, "sasl_plain_password": good["sasl_plain_password"] + "x"}), "wrong password")
    refused(lambda: KafkaProducer(**{**good, "sasl_plain_username": "admin"}), "another account's name with this password")
    producer = KafkaProducer(**good)
    try:
        assert producer.partitions_for(cfg.topics.events) == set(range(PARTITIONS))
    finally:
        producer.close()


def test_bridge_account_cannot_write_commands_or_read_alerts(auth_stack):
    _, cfg = auth_stack
    producer = kafka_client.producer(cfg, "bridge", max_block_ms=5000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(cfg.topics.commands, key="t01", value=b'{"command": "ack"}').get(10)
    finally:
        producer.close()
    consumer = kafka_client.consumer(cfg, "bridge", group_id=None, enable_auto_commit=False)
    try:
        assert not consumer.partitions_for_topic(cfg.topics.alerts)  # not even described
        parts = [TopicPartition(cfg.topics.alerts, p) for p in range(PARTITIONS)]
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.end_offsets(parts)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        assert not consumer.poll(timeout_ms=1000)
    finally:
        consumer.close()


def test_operator_account_cannot_write_events(auth_stack):
    _, cfg = auth_stack
    producer = kafka_client.producer(cfg, "operator", max_block_ms=5000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(cfg.topics.events, key="t01", value=b"{}").get(10)
    finally:
        producer.close()


def test_stack_up_again_restores_a_missing_account(auth_stack):
    """Accounts reach an existing broker through the admin API; ACLs are re-applied (idempotent)."""
    _, cfg = auth_stack
    admin = kafka_client.admin(cfg, "admin")
    try:
        assert admin.alter_user_scram_credentials([UserScramCredentialDeletion("huxue-operator", "SCRAM-SHA-512")]) == {"huxue-operator": None}
    finally:
        admin.close()
    settings = {**kafka_client.client_settings(cfg, "operator"), "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS}
    refused(lambda: KafkaConsumer(**settings), "a deleted account")
    said: list[str] = []
    local.up(cfg, say=said.append)
    assert any("already running" in s for s in said) and any("ACLs" in s for s in said), said
    KafkaConsumer(**settings).close()


def test_panic_to_alert_and_cli_ack_with_sasl(auth_stack, tmp_path):
    raw, _ = auth_stack
    # the stack's topics and app id: the ones its ACLs name
    config = {
        "kafka": raw["kafka"],
        "bridge": {**raw["bridge"], "metrics_port": free_port()},  # its MQTT account
        "worker": {**raw["worker"], "instance_id": "auth-worker-0", "tick_seconds": 0.25, "metrics_port": free_port()},
    }
    p = Pipeline(raw, tmp_path, partitions=PARTITIONS, config=config)
    try:
        p.start()
        press = p.press("t01-btn-1")
        opened = p.wait_stage("t01", "opened", timeout=30, rule="panic")
        assert any(e["event_id"] == press["event_id"] for e in opened["evidence"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "--config", str(p.cfg_path), "ack", opened["incident_id"], "--by", "guard-t01", "--wait", "30"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "accepted" in result.stdout and "acknowledged" in result.stdout, result.stdout
        acked = p.wait_stage("t01", "acknowledged", timeout=20, rule="panic")
        assert acked["incident_id"] == opened["incident_id"]
    finally:
        p.close()
