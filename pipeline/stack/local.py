"""`huxue stack up | down | status`: Mosquitto + Kafka on this machine, no Docker.

All state lives under HUXUE_HOME (default .huxue/): run/ (pid files), logs/, data/,
and the generated broker configs. The Kafka jars are cached outside it (see
kafka_server.cache_dir) so several homes share one download.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

from kafka.errors import KafkaConnectionError

from pipeline import kafka_client
from pipeline.config import Config
from pipeline.mqtt_client import wait_for_mqtt
from pipeline.stack import kafka_auth, kafka_server, mosquitto_server
from pipeline.stack.process import Service

READY_TIMEOUT = 90.0


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def up(cfg: Config, say=print) -> None:
    """Start what is not running, wait until Mosquitto and every Kafka broker really answer,
    create the topics.

    Idempotent: a second `up` finds them running and only re-checks the topics (and
    restarts a Kafka node that died).
    """
    cfg.home.mkdir(parents=True, exist_ok=True)
    if kafka_auth.enabled(cfg):
        kafka_auth.check_supported(cfg)
    started: list[Service] = []
    mq = mosquitto_server.service(cfg)
    if mq.pid() is None:
        if _port_open(cfg.mqtt.host, cfg.mqtt.port):
            raise RuntimeError(f"port {cfg.mqtt.port} is taken by another process; set mqtt.url to a free port")
        say(f"starting Mosquitto on {cfg.mqtt.host}:{cfg.mqtt.port}, {security(cfg)['mqtt']} (log: {mq.logfile})")
        mosquitto_server.start(cfg, say)
        started.append(mq)
    else:
        say(f"Mosquitto already running (pid {mq.pid()})")
        synced = mosquitto_server.sync_accounts(cfg, say)
        if synced is not None and synced.changed and mosquitto_server.reload(cfg, synced):
            say("MQTT accounts changed: Mosquitto reloaded its password file and ACL")
    kafka = kafka_server.services(cfg)
    started += _start_kafka(cfg, say)

    t0 = time.monotonic()
    try:
        wait_for_mqtt(cfg, READY_TIMEOUT, alive=lambda: mq.pid() is not None)
        kafka_client.wait_for_kafka(
            cfg, "admin", READY_TIMEOUT, alive=lambda: all(s.pid() is not None for s in kafka), brokers=len(kafka)
        )
    except (RuntimeError, TimeoutError) as exc:
        for svc in (mq, *kafka):
            if svc in started:
                say(f"--- last lines of {svc.logfile}:\n{svc.log_tail()}")
        raise RuntimeError(f"stack did not become ready: {exc}") from exc
    if started:
        say(f"brokers ready in {time.monotonic() - t0:.1f} s")
    if kafka_auth.enabled(cfg):
        kafka_auth.apply(cfg, say)  # component accounts and their ACLs, idempotent
    created = kafka_client.ensure_topics(
        cfg, "admin", cfg.topics.deployment(), cfg.kafka.partitions, cfg.kafka.replication_factor
    )
    say(f"topics: {', '.join(cfg.topics.deployment())} ({cfg.kafka.partitions} partitions; created {len(created)})")


def _start_kafka(cfg: Config, say) -> list[Service]:
    """Start the Kafka nodes that are not running; refuse a taken port or another layout."""
    if elsewhere := kafka_server.running_elsewhere(cfg):
        raise RuntimeError(
            f"{', '.join(s.name for s in elsewhere)} of another stack.kafka_brokers run in {cfg.home}: `huxue stack down` first"
        )
    todo = []
    for node, svc in zip(kafka_server.nodes(cfg), kafka_server.services(cfg)):
        if svc.pid() is not None:
            say(f"{node.name} already running (pid {svc.pid()})")
            continue
        for port in (node.port, node.controller):
            if _port_open(node.host, port):
                raise RuntimeError(f"port {port} ({node.name}) is taken by another process; set kafka.bootstrap to a free port")
        todo.append(node)
    if len(todo) < len(kafka_server.nodes(cfg)):
        kafka_server.check_running_protocol(cfg)
    if todo:
        where = ", ".join(f"{n.name} on {n.address}" for n in todo)
        say(f"starting Kafka {cfg.stack.kafka_version} (KRaft): {where} (logs: {cfg.home / 'logs'})")
    return kafka_server.start(cfg, say, todo)


def security(cfg: Config) -> dict[str, str]:
    """How each broker is locked, in words (stack up, stack status)."""
    tls = "TLS" if cfg.mqtt.tls else "plaintext"
    mqtt = f"{tls}, accounts and ACL from the registry" if cfg.mqtt.auth else f"{tls}, anonymous (mqtt.auth false)"
    if cfg.mqtt.auth and not cfg.mqtt.tool_accounts:
        mqtt += ", no tool accounts"
    kafka = cfg.kafka.security_protocol + (f" ({cfg.kafka.sasl_mechanism}, ACLs)" if cfg.kafka.security_protocol != "PLAINTEXT" else ", no authentication")
    return {"mqtt": mqtt, "kafka": kafka}


def components(cfg: Config) -> list[Service]:
    """Bridge, worker and console started in the background by `huxue demo` (pid files in HUXUE_HOME)."""
    return [Service(name, cfg.home, marker="pipeline.cli") for name in ("bridge", "worker", "console")]


def down(cfg: Config, say=print) -> None:
    for svc in components(cfg):
        if svc.pid() is not None:
            say(f"{svc.name}: {svc.stop(cfg.stack.stop_timeout_seconds)}")
    # Every Kafka node of this home (also of another stack.kafka_brokers), all at once: a node
    # left alone after the quorum is gone can hang in its controlled shutdown.
    kafka = _kafka_services(cfg)
    with ThreadPoolExecutor(max(1, len(kafka))) as pool:
        outcomes = list(pool.map(lambda svc: svc.stop(cfg.stack.stop_timeout_seconds), kafka))
    for svc, outcome in zip(kafka, outcomes):
        say(f"{svc.name}: {outcome}")
    mq = mosquitto_server.service(cfg)
    say(f"{mq.name}: {mq.stop(cfg.stack.stop_timeout_seconds)}")


def _kafka_services(cfg: Config) -> list[Service]:
    return kafka_server.services(cfg) + kafka_server.running_elsewhere(cfg)


def status(cfg: Config) -> list[dict[str, object]]:
    """What runs where: one row per service, with a live check of its port."""
    brokers = [(mosquitto_server.service(cfg), cfg.mqtt.host, cfg.mqtt.port)]
    brokers += [(kafka_server.service(cfg, n), n.host, n.port) for n in kafka_server.nodes(cfg)]
    rows = []
    for svc, h, p in brokers:
        pid = svc.pid()
        rows.append(
            {
                "service": svc.name,
                "pid": pid,
                "address": f"{h}:{p}",
                "state": ("ready" if _port_open(h, p) else "starting") if pid else "stopped",
                "log": str(svc.logfile),
            }
        )
    for svc in components(cfg):
        if (pid := svc.pid()) is not None:
            rows.append({"service": svc.name, "pid": pid, "address": "-", "state": "running", "log": str(svc.logfile)})
    return rows


def cluster(cfg: Config, attempts: int = 3) -> dict[str, object]:
    """The controller quorum and the replication of every topic (on the local stack all are
    huxue's, with __consumer_offsets), asked of a live broker."""
    for _ in range(attempts - 1):
        try:
            return _cluster(cfg)
        except KafkaConnectionError:
            pass  # a dead broker stays in the metadata until it is fenced (9 s): a request may go there
    return _cluster(cfg)


def _cluster(cfg: Config) -> dict[str, object]:
    a = kafka_client.admin(cfg, "admin", timeout_ms=5000)
    try:
        quorum = a.describe_metadata_quorum()["topics"][0]["partitions"][0]
        topics = [t for t in a.describe_topics() if t.get("error_code", 0) == 0]
        min_isr = kafka_client.topic_config(a, [t["name"] for t in topics], "min.insync.replicas")
    finally:
        a.close()
    now_ms = time.time() * 1000
    partitions = [(t["name"], p) for t in topics for p in t["partitions"]]
    return {
        "leader": quorum["leader_id"],
        "epoch": quorum["leader_epoch"],
        "voters": sorted(v["replica_id"] for v in quorum["current_voters"]),
        # a voter that has not fetched from the leader for 5 s is down or cut off
        "silent": sorted(
            v["replica_id"] for v in quorum["current_voters"]
            if v["replica_id"] != quorum["leader_id"] and now_ms - v.get("last_fetch_timestamp", now_ms) > 5000
        ),
        "topics": {t["name"]: (len(t["partitions"][0]["replica_nodes"]), min_isr.get(t["name"])) for t in topics if t["partitions"]},
        "partitions": len(partitions),
        "under_replicated": [
            (name, p["partition_index"], sorted(p["replica_nodes"]), sorted(p["isr_nodes"]))
            for name, p in partitions if len(p["isr_nodes"]) < len(p["replica_nodes"])
        ],
    }
