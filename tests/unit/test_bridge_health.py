"""The bridge's process health without brokers: a dead thread ends the process (non-zero),
a stop is honoured within stack.stop_timeout_seconds whatever blocks; new bridge config keys."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError

from pipeline import cli
from pipeline.config import BridgeConfig, Config, ConfigError, MqttConfig, StackConfig, load_config
from pipeline.ingest import bridge as bridge_mod
from pipeline.ingest.bridge import EXIT_THREAD_DIED, Bridge
from unit_helpers import build_registry

REG = build_registry()


def cfg(stop_timeout: float = 5) -> Config:
    return Config(mqtt=MqttConfig(auth=False), bridge=BridgeConfig(metrics_port=0), stack=StackConfig(stop_timeout_seconds=stop_timeout))


def finished_thread() -> threading.Thread:
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    return t


def waiting_thread(until: threading.Event) -> threading.Thread:
    t = threading.Thread(target=until.wait, daemon=True)
    t.start()
    return t


class FakeProducer:
    def __init__(self, sender: threading.Thread, flush_times_out: bool = False):
        self._sender = sender
        self.flush_times_out = flush_times_out
        self.closed_with: float | None = None

    def flush(self, timeout=None):
        if self.flush_times_out:
            time.sleep(min(timeout or 1.0, 0.05))
            raise KafkaTimeoutError("Timeout waiting for future")

    def close(self, timeout=None):
        self.closed_with = timeout


# --- dead threads --------------------------------------------------------------------------


def test_dead_thread_names_a_dead_mqtt_network_thread():
    b = Bridge(cfg(), REG)
    alive = threading.Event()
    for lane in b.lanes:
        lane.running = True
        lane.client._thread = waiting_thread(alive)
    b.producer = FakeProducer(waiting_thread(alive))
    assert b.dead_thread() is None
    b.lanes[1].client._thread = finished_thread()
    assert b.dead_thread() == "mqtt network thread (priority session)"
    b.lanes[1].client._thread = None  # what paho leaves when its loop thread ended
    assert b.dead_thread() == "mqtt network thread (priority session)"
    b.lanes[1].running = False  # stopped on purpose (recovery, shutdown): not a death
    assert b.dead_thread() is None
    alive.set()


def test_dead_thread_names_a_dead_kafka_sender():
    b = Bridge(cfg(), REG)
    alive = threading.Event()
    b.producer = FakeProducer(finished_thread())
    assert b.dead_thread() == "kafka producer sender thread"
    b.producer, b.urgent_producer = FakeProducer(waiting_thread(alive)), FakeProducer(finished_thread())
    assert b.dead_thread() == "kafka urgent producer sender thread"
    alive.set()


def test_run_exits_non_zero_within_a_second_when_the_network_thread_dies(monkeypatch, caplog):
    b = Bridge(cfg(), REG)
    sender_alive, mqtt_alive = threading.Event(), threading.Event()
    producer = FakeProducer(waiting_thread(sender_alive))
    monkeypatch.setattr(b, "_connect_kafka", lambda stop: (producer, None))

    def start(lane):
        lane.client._thread = waiting_thread(mqtt_alive)
        lane.running = True

    monkeypatch.setattr(b, "_start", start)
    result: dict[str, object] = {}
    runner = threading.Thread(target=lambda: result.update(code=b.run(threading.Event()), at=time.monotonic()))
    with caplog.at_level("ERROR", logger="huxue.bridge"):
        runner.start()
        time.sleep(0.3)  # running normally
        assert runner.is_alive()
        died = time.monotonic()
        mqtt_alive.set()  # the network threads end, as if an exception escaped paho's loop
        runner.join(5)
    assert result["code"] == EXIT_THREAD_DIED
    assert result["at"] - died < 1.5
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "thread died" in errors[0].getMessage()
    assert producer.closed_with is not None  # closed without waiting on anything
    sender_alive.set()


def test_cli_propagates_the_bridge_exit_code(monkeypatch, tmp_path, registry_file):
    config = tmp_path / "huxue.yaml"
    config.write_text(f"registry: {registry_file}\nbridge: {{metrics_port: 0}}\n")
    monkeypatch.setattr(Bridge, "run", lambda self, stop: EXIT_THREAD_DIED)
    monkeypatch.setattr(cli, "_stop_on_signals", threading.Event)  # keep pytest's own signal handlers
    assert cli.main(["--config", str(config), "bridge"]) == EXIT_THREAD_DIED


# --- stop within stop_timeout_seconds ---------------------------------------------------------


def test_stop_while_kafka_bootstrap_blocks_returns_at_once(monkeypatch):
    b = Bridge(cfg(), REG)
    monkeypatch.setattr(bridge_mod.kafka_client, "ensure_topics", lambda *a, **k: time.sleep(30))
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    assert b.run(stop) == 0
    assert time.monotonic() - t0 < 1.5


def test_stop_during_recovery_with_kafka_down_is_prompt():
    b = Bridge(cfg(), REG)
    b.producer = FakeProducer(waiting_thread(threading.Event()), flush_times_out=True)
    for lane in b.lanes:
        lane.client.disconnect = lambda: None
        lane.client.loop_stop = lambda: None
    b._flag("test: kafka down")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    b._recover(stop)
    assert time.monotonic() - t0 < 1.5
    assert not any(lane.running for lane in b.lanes)  # not resumed: stopping


def test_shutdown_is_bounded_by_its_deadline():
    b = Bridge(cfg(), REG)
    b.producer = FakeProducer(waiting_thread(threading.Event()), flush_times_out=True)
    t0 = time.monotonic()
    b._shutdown(time.monotonic() + 2.0)
    assert time.monotonic() - t0 < 2.5
    assert b.producer.closed_with is not None and b.producer.closed_with <= 2.0


def test_watchdog_ends_a_stuck_process(monkeypatch):
    b = Bridge(cfg(stop_timeout=1.0), REG)
    exits: list[int] = []
    monkeypatch.setattr(bridge_mod.os, "_exit", exits.append)
    stop = threading.Event()
    t = threading.Thread(target=b._watchdog, args=(stop,))
    t.start()
    t0 = time.monotonic()
    stop.set()  # and run() never finishes
    t.join(5)
    assert exits == [bridge_mod.EXIT_STOP_TIMEOUT]
    assert 0.3 < time.monotonic() - t0 < 1.2


# --- configuration --------------------------------------------------------------------------


def test_new_bridge_keys_have_defaults_and_load(tmp_path):
    assert (BridgeConfig().max_attr_depth, BridgeConfig().max_attr_items, BridgeConfig().max_string_chars) == (16, 1000, 4096)
    assert (BridgeConfig().device_rate_per_second, BridgeConfig().device_burst, BridgeConfig().priority_lane) == (20, 5000, True)
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            bridge:
              max_attr_depth: 8
              max_attr_items: 50
              max_string_chars: 100
              device_rate_per_second: 2.5
              device_burst: 10
              priority_lane: false
            """
        )
    )
    b = load_config(path, env={}).bridge
    assert (b.max_attr_depth, b.max_attr_items, b.max_string_chars, b.device_rate_per_second, b.device_burst, b.priority_lane) == (8, 50, 100, 2.5, 10, False)


@pytest.mark.parametrize("text", ["max_attr_depth: 0", "max_attr_depth: 250", "max_attr_items: 0", "max_string_chars: 0", "device_burst: 0", "device_rate_per_second: -1"])
def test_bad_bridge_limits_are_config_errors(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(f"bridge: {{{text}}}\n")
    with pytest.raises(ConfigError, match="bridge|must not be negative"):
        load_config(path, env={})


def test_shared_subscriptions_for_the_main_session_never_for_presses():
    shared = Bridge(Config(mqtt=MqttConfig(auth=False), bridge=BridgeConfig(metrics_port=0, share_group="bridges", instances=2)), REG)
    assert shared.main.subscriptions == [f"$share/bridges/{t}" for t in shared.subscriptions]
    priority = next(lane for lane in shared.lanes if lane is not shared.main)
    assert priority.subscriptions and not any(t.startswith("$share/") for t in priority.subscriptions)
    assert Bridge(cfg(), REG).main.subscriptions == Bridge(cfg(), REG).subscriptions


@pytest.mark.parametrize(
    "bridge, error",
    [
        ("instances: 2", "needs bridge.share_group"),
        ("instances: 0", "bridge.instances must be in"),
        ("share_group: a/b", "bridge.share_group 'a/b'"),
        ("share_group: '#'", "bridge.share_group '#'"),
    ],
)
def test_several_bridges_config_is_checked(tmp_path, bridge, error):
    (tmp_path / "huxue.yaml").write_text(f"bridge:\n  {bridge}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(tmp_path / "huxue.yaml", env={})
