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

from pipeline import mqtt_auth
from pipeline.config import Config


def log_in(client: mqtt.Client, cfg: Config, account: str) -> None:
    """Credentials for `account` (mqtt_auth.login); raises CredentialsError if none were generated."""
    login = mqtt_auth.login(cfg, account)
    if login is not None:
        client.username_pw_set(login.username, login.password)


def new_client(cfg: Config, client_id: str, account: str | None = mqtt_auth.PROBE, **kwargs) -> mqtt.Client:
    """An MQTT 5 client logged in as `account` (None: log in later) over TLS for mqtts://.

    Under `huxue stack up`'s Mosquitto the broker replaces `client_id` with the account name.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kwargs)
    if account is not None:
        log_in(client, cfg, account)
    if cfg.mqtt.tls:
        ca = cfg.mqtt_ca_file()
        client.tls_set(ca_certs=str(ca) if ca else None, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return client


def end_session(cfg: Config, client_id: str, account: str, timeout: float = 10) -> None:
    """Delete the broker's persistent session of `client_id` (and what it queued): connect
    with a clean start and no session expiry, then disconnect."""
    client = new_client(cfg, client_id, account)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30, clean_start=True, properties=props)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()


class Refused(RuntimeError):
    """The broker answered and said no (CONNACK failure: credentials, not authorised)."""


class Publisher:
    """A connected QoS 1 publisher for tools and tests (not for the bridge)."""

    def __init__(self, cfg: Config, client_id: str | None = None, timeout: float = 10, account: str | None = mqtt_auth.PROBE):
        self.client = new_client(cfg, client_id or f"huxue-pub-{uuid.uuid4().hex[:8]}", account)
        self.client.max_inflight_messages_set(200)
        self._connected = threading.Event()
        self.refused: str | None = None  # CONNACK reason, when the broker refused us
        self.client.on_connect = self._on_connect
        host, port = cfg.mqtt.host, cfg.mqtt.port
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout) or self.refused:
            self.close()
            if self.refused:
                raise Refused(f"MQTT broker at {host}:{port} refused {account!r}: {self.refused}")
            raise TimeoutError(f"no MQTT connection to {host}:{port} within {timeout:g} s")

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            self.refused = str(rc)
        self._connected.set()  # answered, either way

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for_mqtt(cfg: Config, timeout: float, alive=None) -> None:
    """Wait until the broker answers an MQTT connection (CONNACK), or raise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("Mosquitto exited during start-up")
        try:
            # anonymous, so that no account's connection is taken over: a refusal is an answer too
            Publisher(cfg, timeout=min(2.0, max(0.1, deadline - time.monotonic())), account=None).close()
            return
        except Refused:
            return
        except (OSError, TimeoutError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"MQTT broker at {cfg.mqtt.host}:{cfg.mqtt.port} not ready within {timeout:g} s ({last})")


class AsDevices:
    """Publishes each native device's messages over a connection logged in as that device
    (its own account when mqtt.auth is on), as a real device does. `devices` are connected
    at once; others on first use."""

    def __init__(self, cfg: Config, devices: list[str] = ()):
        self.cfg = cfg
        self._pubs: dict[str, Publisher] = {}
        for device in devices:
            self._publisher(device)

    def _publisher(self, device: str) -> Publisher:
        if device not in self._pubs:
            self._pubs[device] = Publisher(self.cfg, client_id=device, account=device)
        return self._pubs[device]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        parts = topic.split("/")
        if len(parts) != 5 or topic.rpartition("/")[0].rpartition("/")[0] != mqtt_auth.DEVICE_PREFIX:
            raise ValueError(f"not a native device topic: {topic}")
        return self._publisher(parts[3]).publish(topic, payload, qos, retain)

    def close(self) -> None:
        for pub in self._pubs.values():
            pub.close()
