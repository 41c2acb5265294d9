"""The locked-down MQTT side on a real Mosquitto: `huxue stack up`'s defaults (accounts and
ACL from the registry, client id = account) with TLS (mqtts://, local CA), on the session's
locked stack (Kafka with SASL/SCRAM too; its own tests: test_e2e_kafka_auth.py).
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from harness import REPO, Pipeline, free_port, up_locked, wait_for
from pipeline import credentials, mqtt_auth
from pipeline.mqtt_client import Publisher
from pipeline.records import dumps, iso_utc

BRIDGE = "huxue-bridge-lock"  # the locked stack's bridge.client_id


@pytest.fixture(scope="module")
def locked(locked_stack, tmp_path_factory):
    # topics and worker group of its own: the Kafka ACLs `stack up` makes name them
    kafka = {**locked_stack["kafka"], "topic_prefix": "lock.", "partitions": 3}
    return up_locked(locked_stack, tmp_path_factory.mktemp("lockdown"), kafka=kafka, worker={"app_id": "lock-worker"})


@pytest.fixture(scope="module")
def pipe(locked, tmp_path_factory):
    raw, _, _ = locked
    config = {
        "kafka": raw["kafka"],
        "bridge": {"client_id": BRIDGE, "metrics_port": free_port()},
        "worker": {**raw["worker"], "instance_id": "lock-worker-0", "tick_seconds": 0.25, "metrics_port": free_port()},
    }
    p = Pipeline(raw, tmp_path_factory.mktemp("locked-pipe"), probe_device="t04-cam-1", config=config)
    try:
        yield p.start()
    finally:
        p.close()


def connect(cfg, username: str | None, password: str | None, client_id: str = "", tls: bool = True, timeout: float = 10) -> str:
    """One connection attempt: "ok", the broker's refusal, or "no answer"."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(cfg.mqtt_ca_file()), cert_reqs=ssl.CERT_REQUIRED)
    answer: list[str] = []
    done = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: (answer.append("ok" if not rc.is_failure else str(rc)), done.set())
    client.on_disconnect = lambda c, u, f, rc, p: done.set()
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return f"no answer ({type(exc).__name__})"
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return answer[0] if answer else "no answer"


class Held:
    """A connection kept open (no reconnect): `dropped` is set when the broker ends it."""

    def __init__(self, cfg, username: str, password: str):
        self.dropped = threading.Event()
        connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        self.client.username_pw_set(username, password)
        self.client.tls_set(ca_certs=str(cfg.mqtt_ca_file()))
        self.client.on_connect = lambda c, u, f, rc, p: connected.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.dropped.set()
        self.client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
        self.client.loop_start()
        assert connected.wait(10) and self.client.is_connected()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def cli(cfg_path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "--config", str(cfg_path), *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def test_only_known_accounts_over_tls_get_in(locked):
    _, cfg, _ = locked
    device = mqtt_auth.credentials_of(cfg, _registry(cfg), "t01-btn-1")
    assert connect(cfg, None, None) == "Not authorized"  # anonymous
    assert connect(cfg, "t01-btn-1", "wrong-password") in ("Not authorized", "Bad user name or password")
    assert connect(cfg, "t01-btn-1", device.password) == "ok"
    # the listener speaks TLS only: a plaintext MQTT client never gets a CONNACK
    assert connect(cfg, "t01-btn-1", device.password, tls=False, timeout=3).startswith("no answer")


def test_generated_secrets_are_private(locked):
    _, cfg, _ = locked
    home = cfg.home
    assert stat.S_IMODE((home / "secrets").stat().st_mode) == 0o700
    for path in (home / "secrets" / "mqtt.json", *mqtt_auth.files(cfg), home / "tls" / "ca.key", home / "tls" / "mosquitto.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_device_publishes_only_as_itself(pipe):
    device = Publisher(pipe.cfg, client_id="t01-btn-1", account="t01-btn-1")  # the device's own login
    try:
        forged = {"event_id": pipe.event_id(), "type": "panic.pressed", "ts": iso_utc(time.time())}
        device.publish("huxue/v1/devices/t02-btn-1/events", dumps(forged)).wait_for_publish(10)
        own = {"event_id": pipe.event_id(), "type": "panic.pressed", "ts": iso_utc(time.time())}
        device.publish("huxue/v1/devices/t01-btn-1/events", dumps(own)).wait_for_publish(10)
        pipe.events.wait(lambda rs: [r for r in rs if r.get("event_id") == own["event_id"]], 20, "the device's own press")
        pipe.wait_stage("t01", "opened")
        # published before the own press on the same connection: it would have arrived first
        assert not [r for r in pipe.events.records if r.get("event_id") == forged["event_id"]]
        assert not pipe.alerts_of("t02")
    finally:
        device.close()


def test_the_bridge_session_cannot_be_taken_over(pipe, locked):
    _, cfg, _ = locked
    impostor = mqtt_auth.credentials_of(cfg, _registry(cfg), "t03-btn-1")
    before = pipe.bridge.output().count("mqtt disconnected")
    got: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=BRIDGE, protocol=mqtt.MQTTv5)
    client.username_pw_set(impostor.username, impostor.password)
    client.tls_set(ca_certs=str(cfg.mqtt_ca_file()))
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("huxue/#", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, m: got.append(m.topic)
    client.connect(cfg.mqtt.host, cfg.mqtt.port)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        for _ in range(20):
            pipe.emit("t04-cam-1", "device.heartbeat", battery=90)
        pipe.wait_forwarded()  # all 20 reached Kafka through the real bridge
        assert pipe.bridge.output().count("mqtt disconnected") == before
        assert got == []  # the impostor's own session (its id is its account) reads nothing
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_simulator_cli_presses_through_the_locked_stack(pipe):
    result = cli(pipe.cfg_path, "simulate", "--panic", "t02", "--rate", "0", "--heartbeat-seconds", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    pipe.wait_stage("t02", "opened")


def test_rotate_issues_a_new_password_and_keeps_other_clients(pipe, locked):
    _, cfg, cfg_path = locked
    old = mqtt_auth.credentials_of(cfg, _registry(cfg), "t04-btn-1").password
    before = pipe.bridge.output().count("mqtt disconnected")
    lost = Held(cfg, "t04-btn-1", old)  # a lost device, still connected with the old password
    result = cli(cfg_path, "devices", "rotate", "t04-btn-1")
    assert result.returncode == 0 and "Mosquitto reloaded" in result.stdout, result.stdout + result.stderr
    shown = cli(cfg_path, "devices", "credentials", "t04-btn-1", "--json")
    new = yaml.safe_load(shown.stdout)["password"]
    assert new != old
    wait_for(lambda: lost.dropped.is_set(), 10, "the reload to drop the connection made with the old password")
    lost.close()
    assert connect(cfg, "t04-btn-1", old) == "Not authorized"
    assert connect(cfg, "t04-btn-1", new) == "ok"
    pipe.wait_flowing()
    assert pipe.bridge.output().count("mqtt disconnected") == before


def test_stack_status_says_how_the_brokers_are_locked(locked):
    _, _, cfg_path = locked
    result = cli(cfg_path, "stack", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "security   mqtt: TLS, accounts and ACL from the registry; kafka: SASL_PLAINTEXT (SCRAM-SHA-512, ACLs)" in result.stdout
    topics = next(line for line in result.stdout.splitlines() if line.startswith("topics"))
    assert topics.startswith("topics     ok") and "units" in topics and "notifications" in topics, topics  # every topic stack up creates


def test_credentials_cli_errors_are_one_line(locked):
    _, _, cfg_path = locked
    unknown = cli(cfg_path, "devices", "credentials", "no-such-device")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "no MQTT account 'no-such-device'" in unknown.stderr


def test_refused_credentials_are_one_clear_line(locked, tmp_path):
    raw, _, _ = locked
    port = raw["mqtt"]["url"].rsplit(":", 1)[1]
    wrong = {**raw, "mqtt": {"url": f"mqtts://simulator:wrong@127.0.0.1:{port}"}, "stack": {"home": raw["stack"]["home"]}}
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(wrong))
    result = cli(path, "simulate", "--panic", "t01", "--rate", "0", "--heartbeat-seconds", "0")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "refused 'simulator'" in result.stderr and "Not authorized" in result.stderr


def test_sync_follows_the_registry(locked):
    """Last in the module: it changes the registry (and puts it back)."""
    raw, cfg, cfg_path = locked
    reg_path = cfg.registry_path
    original = reg_path.read_text()
    reg = yaml.safe_load(original)
    reg["devices"] = [d for d in reg["devices"] if d["id"] != "t03-cam-1"] + [{"id": "t03-fence-9", "school": "t03", "kind": "fence", "zone": "gate"}]
    keep = mqtt_auth.credentials_of(cfg, _registry(cfg), "t03-btn-1").password
    removed = mqtt_auth.credentials_of(cfg, _registry(cfg), "t03-cam-1").password
    gone = Held(cfg, "t03-cam-1", removed)
    try:
        reg_path.write_text(yaml.safe_dump(reg))
        result = cli(cfg_path, "devices", "sync")
        assert result.returncode == 0 and "Mosquitto reloaded" in result.stdout, result.stdout + result.stderr
        added = credentials.Store(cfg.home, "mqtt").password("t03-fence-9")
        wait_for(lambda: connect(cfg, "t03-fence-9", added) == "ok", 10, "the new device to be let in")
        wait_for(lambda: gone.dropped.is_set(), 10, "the removed device's connection to be dropped")
        assert connect(cfg, "t03-cam-1", removed) == "Not authorized"
        assert connect(cfg, "t03-btn-1", keep) == "ok"  # existing passwords are kept
    finally:
        gone.close()
        reg_path.write_text(original)
        cli(cfg_path, "devices", "sync")


def _registry(cfg):
    from pipeline.registry import load_registry

    return load_registry(cfg.registry_path)
