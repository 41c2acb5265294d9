"""`huxue stack up | down | status`: Mosquitto + Kafka on this machine, no Docker.

All state lives under HUXUE_HOME (default .huxue/): run/ (pid files), logs/, data/,
and the generated broker configs. The Kafka jars are cached outside it (see
kafka_server.cache_dir) so several homes share one download.
"""

from __future__ import annotations

import socket
import time

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
    """Start what is not running, wait until both brokers really answer, create the topics.

    Idempotent: a second `up` finds both running and only re-checks the topics.
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
    kf = kafka_server.service(cfg)
    host, port, _ = kafka_server.ports(cfg)
    if kf.pid() is None:
        if _port_open(host, port):
            raise RuntimeError(f"port {port} is taken by another process; set kafka.bootstrap to a free port")
        say(f"starting Kafka {cfg.stack.kafka_version} (KRaft) on {host}:{port} (log: {kf.logfile})")
        kafka_server.start(cfg, say)
        started.append(kf)
    else:
        say(f"Kafka already running (pid {kf.pid()})")
        kafka_server.check_running_protocol(cfg)

    t0 = time.monotonic()
    try:
        wait_for_mqtt(cfg, READY_TIMEOUT, alive=lambda: mq.pid() is not None)
        kafka_client.wait_for_kafka(cfg, "admin", READY_TIMEOUT, alive=lambda: kf.pid() is not None)
    except (RuntimeError, TimeoutError) as exc:
        for svc in (mq, kf):
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
    for svc in (kafka_server.service(cfg), mosquitto_server.service(cfg)):
        say(f"{svc.name}: {svc.stop(cfg.stack.stop_timeout_seconds)}")


def status(cfg: Config) -> list[dict[str, object]]:
    """What runs where: one row per service, with a live check of its port."""
    host, port, _ = kafka_server.ports(cfg)
    rows = []
    for svc, h, p in ((mosquitto_server.service(cfg), cfg.mqtt.host, cfg.mqtt.port), (kafka_server.service(cfg), host, port)):
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
