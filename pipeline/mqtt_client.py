"""paho-mqtt plumbing shared by the bridge, the simulator, the stack and the tests."""

from __future__ import annotations

import ssl
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pipeline.config import MqttConfig


def new_client(cfg: MqttConfig, client_id: str, **kwargs) -> mqtt.Client:
    """An MQTT 5 client with credentials/TLS from the URL (`mqtts://user:pass@host`)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kwargs)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    return client


def end_session(cfg: MqttConfig, client_id: str, timeout: float = 10) -> None:
    """Delete the broker's persistent session of `client_id` (and what it queued): connect
    with a clean start and no session expiry, then disconnect."""
    client = new_client(cfg, client_id)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(cfg.host, cfg.port, keepalive=30, clean_start=True, properties=props)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()


class Publisher:
    """A connected QoS 1 publisher for tools and tests (not for the bridge)."""

    def __init__(self, cfg: MqttConfig, client_id: str | None = None, timeout: float = 10):
        self.client = new_client(cfg, client_id or f"huxue-pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(200)
        self._connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self.client.connect(cfg.host, cfg.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TimeoutError(f"no MQTT connection to {cfg.host}:{cfg.port} within {timeout:g} s")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for_mqtt(cfg: MqttConfig, timeout: float, alive=None) -> None:
    """Wait until the broker accepts an MQTT connection (CONNACK success), or raise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("Mosquitto exited during start-up")
        try:
            Publisher(cfg, timeout=min(2.0, max(0.1, deadline - time.monotonic()))).close()
            return
        except (OSError, TimeoutError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"MQTT broker at {cfg.host}:{cfg.port} not ready within {timeout:g} s ({last})")
