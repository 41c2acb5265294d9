"""Test tooling for the real stack: processes, Kafka collectors, deadline waits.

Everything here waits on conditions with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kafka import TopicPartition

from pipeline import kafka_client
from pipeline.config import Config, load_config
from pipeline.mqtt_client import Publisher
from pipeline.records import dumps, iso_utc, loads
from pipeline.rules.incident import school_of
from pipeline.stack import local

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `cond` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_until(epoch: float) -> None:
    """Wait until the wall clock passes `epoch` (for deadlines that must have passed)."""
    wait_for(lambda: time.time() >= epoch, max(0.0, epoch - time.time()) + 5, f"clock to pass {iso_utc(epoch)}")


# Mobile units of the test registry: (id, profile, area among the first schools)
TEST_UNITS = [("u-car-1", "car", ["t01", "t02", "t03", "t04"]), ("u-moto-1", "motorbike", ["t05", "t06", "t07"]), ("u-foot-1", "foot", ["t01"])]


def test_registry(n_schools: int = 60, coordinates: bool = False) -> dict[str, Any]:
    """Schools t01..tNN, each with two panic buttons, a camera and a guard terminal, and the
    mobile units TEST_UNITS (those whose area exists). `coordinates`: every school gets
    some, on a grid of ~2 km around 30.62N 104.09E (ETAs need them; by default none has)."""
    schools, devices = [], []
    for i in range(1, n_schools + 1):
        sid = f"t{i:02d}"
        schools.append({"id": sid, "name": f"Test School {i}", "timezone": "Asia/Shanghai"})
        if coordinates:
            schools[-1]["coordinates"] = {"lat": round(30.58 + ((i - 1) % 6) * 0.02, 4), "lon": round(104.0 + ((i - 1) // 6) * 0.02, 4)}
        devices += [
            {"id": f"{sid}-btn-1", "school": sid, "kind": "panic_button", "zone": "gate"},
            {"id": f"{sid}-btn-2", "school": sid, "kind": "panic_button", "zone": "office"},
            {"id": f"{sid}-cam-1", "school": sid, "kind": "video_analytics", "zone": "gate"},
            {"id": f"{sid}-post-1", "school": sid, "kind": "guard_terminal", "zone": "gate"},
        ]
    ids = {s["id"] for s in schools}
    units = [{"id": uid, "profile": profile, "area": area} for uid, profile, area in TEST_UNITS if set(area) <= ids]
    return {"schools": schools, "devices": devices, "units": units}


class Proc:
    """A huxue verb in a subprocess, logging to a file we can search."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.name, self.args, self.log = name, args, log
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._offset = 0

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *self.args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=self.env, start_new_session=True
        )
        out.close()
        return self

    def output(self) -> str:
        """Log lines written since the last start."""
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def wait_log(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            return text in self.output()

        try:
            wait_for(seen, timeout, f"{self.name} to log {text!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log:\n{self.output()[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class Collector:
    """Reads every partition of a topic from the beginning in a background thread."""

    def __init__(self, cfg: Config, topic: str, role: str = "admin"):
        self.topic = topic
        self.records: list[dict[str, Any]] = []
        self.raw: list[Any] = []
        self._stop = threading.Event()
        self._consumer = kafka_client.consumer(cfg, role, group_id=None, enable_auto_commit=False)
        # A just-created topic reaches the client's metadata a moment later.
        ids = wait_for(lambda: self._consumer.partitions_for_topic(topic), 20, f"topic {topic} in metadata", interval=0.2)
        parts = [TopicPartition(topic, p) for p in sorted(ids)]
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"collect-{topic}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for rs in self._consumer.poll(timeout_ms=100).values():
                for r in rs:
                    self.raw.append(r)
                    try:  # a foreign test record may not be JSON; it stays in `raw`
                        self.records.append(loads(r.value))
                    except (ValueError, TypeError):
                        pass

    def wait(self, pred: Callable[[list[dict[str, Any]]], Any], timeout: float, what: str) -> Any:
        try:
            return wait_for(lambda: pred(list(self.records)), timeout, what)
        except AssertionError as exc:
            tail = "\n".join(str(r) for r in self.records[-10:])
            raise AssertionError(f"{exc}\n--- last records on {self.topic}:\n{tail}") from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


# Every rule but panic off: tests of the foundation see only what they test.
QUIET_RULES = {
    name: {"enabled": False}
    for name in ("corroboration", "face_watchlist", "plate_watchlist", "vehicle_loitering", "perimeter", "video_behaviour", "device_health", "post_staffing", "flood", "coverage_gap")
}


class Pipeline:
    """One isolated huxue deployment on the shared brokers: own topic prefix, app id, bridge id."""

    def __init__(
        self,
        stack_cfg: dict[str, Any],
        workdir: Path,
        escalation: tuple[float, float, float] = (2, 4, 6),
        partitions: int = 3,
        registry: dict[str, Any] | None = None,
        rules: dict[str, Any] | None = None,
        probe_device: str = "t60-cam-1",
        config: dict[str, Any] | None = None,
        worker: dict[str, Any] | None = None,
        bridge: dict[str, Any] | None = None,
    ):
        tag = uuid.uuid4().hex[:6]
        self.workdir = workdir
        self.probe_device = probe_device
        if registry is not None:
            (workdir / f"registry-{tag}.yaml").write_text(yaml.safe_dump(registry, allow_unicode=True))
        self.raw_cfg = {
            **stack_cfg,
            "registry": str(workdir / f"registry-{tag}.yaml") if registry is not None else stack_cfg["registry"],
            # the ladder tests see the ladder alone unless a test asks for rules
            "rules": rules if rules is not None else QUIET_RULES,
            "kafka": {**stack_cfg["kafka"], "topic_prefix": f"t-{tag}.", "partitions": partitions},
            "escalation": dict(zip(("ack_seconds", "arrive_target_seconds", "arrive_limit_seconds"), escalation)),
            "bridge": {"client_id": f"bridge-{tag}", "metrics_port": free_port(), **(bridge or {})},
            "worker": {"app_id": f"worker-{tag}", "instance_id": f"worker-{tag}-0", "tick_seconds": 0.25, "metrics_port": free_port(), **(worker or {})},
            **(config or {}),
        }
        self.cfg_path = workdir / f"huxue-{tag}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(self.raw_cfg))
        self.cfg: Config = load_config(self.cfg_path, env={})
        t = self.cfg.topics
        kafka_client.ensure_topics(self.cfg, "admin", [*t.contract(), t.ticks], partitions)
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
        self._tag = tag
        self.bridge = self.another("bridge", self.cfg.bridge_client_id)
        self.worker = self.another("worker", self.cfg.worker_instance_id)
        self.events = Collector(self.cfg, t.events)
        self.dlq = Collector(self.cfg, t.events_dlq)
        self.alerts = Collector(self.cfg, t.alerts)
        self.rejected = Collector(self.cfg, t.commands_dlq)
        self.silences = Collector(self.cfg, t.silences)
        self.publisher = Publisher(self.cfg)
        self.producer = kafka_client.producer(self.cfg, "admin")
        self._n = 0
        self._published: list[str] = []  # event ids published, for sentinel()

    # -- processes ---------------------------------------------------------------
    def another(self, kind: str, name: str) -> Proc:
        """A bridge or worker process of this deployment with its own id (`--client-id` /
        `--instance-id`) and metrics port: several run side by side with one config."""
        args = ["--config", str(self.cfg_path), kind]
        default = self.cfg.bridge_client_id if kind == "bridge" else self.cfg.worker_instance_id
        if name != default:
            args += ["--client-id" if kind == "bridge" else "--instance-id", name, "--metrics-port", str(free_port())]
        return Proc(name, args, self.workdir / f"{name}.log", self._env)

    def start_bridge(self) -> None:
        self.bridge.start()
        self.bridge.wait_log("mqtt connected", 30)

    def start_worker(self) -> None:
        self.worker.start()
        self.worker.wait_log("worker ready", 90)

    def start(self) -> Pipeline:
        self.start_worker()
        self.start_bridge()
        self.wait_flowing()
        return self

    def wait_flowing(self, timeout: float = 30) -> None:
        """Publish heartbeats until one shows up on the events topic: the bridge is subscribed."""
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        device = self.probe_device

        def arrived() -> bool:
            # Not through publish(): a probe sent before the bridge subscribed is lost by
            # design (no session yet), so it must not count among the events awaited later.
            body = {"event_id": f"{probe}-{time.monotonic_ns()}", "type": "device.heartbeat", "ts": iso_utc(time.time()), "attrs": {"probe": probe}}
            self.publisher.publish(f"huxue/v1/devices/{device}/events", dumps(body)).wait_for_publish(10)
            return any(r.get("attrs", {}).get("probe") == probe for r in self.events.records)

        wait_for(arrived, timeout, "the bridge to forward a probe", interval=0.5)

    def close(self) -> None:
        for p in (self.bridge, self.worker):
            p.stop()
        self.publisher.close()
        self.producer.close()
        for c in (self.events, self.dlq, self.alerts, self.rejected, self.silences):
            c.close()

    # -- input -------------------------------------------------------------------
    def event_id(self) -> str:
        self._n += 1
        return f"ev-{uuid.uuid4().hex[:8]}-{self._n}"

    def publish(self, device: str, body: dict[str, Any] | bytes, channel: str = "events", retain: bool = False) -> None:
        payload = body if isinstance(body, bytes) else dumps(body)
        if isinstance(body, dict) and isinstance(body.get("event_id"), str):
            self._published.append(body["event_id"])
        self.publisher.publish(f"huxue/v1/devices/{device}/{channel}", payload, retain=retain).wait_for_publish(10)

    def emit(self, device: str, etype: str, exercise: bool = False, **attrs: Any) -> dict[str, Any]:
        """Publish one native event of `etype` from `device` now."""
        body = {"event_id": self.event_id(), "type": etype, "ts": iso_utc(time.time()), "attrs": attrs, "exercise": exercise}
        self.publish(device, body)
        return body

    def press(self, device: str, exercise: bool = False, event_id: str | None = None) -> dict[str, Any]:
        body = {"event_id": event_id or self.event_id(), "type": "panic.pressed", "ts": iso_utc(time.time()), "exercise": exercise}
        self.publish(device, body)
        return body

    def command(self, command: str, incident_id: str, by: str = "tester", school_id: str = "", **extra: Any) -> dict[str, Any]:
        school = school_id or school_of(incident_id) or ""
        cmd = {"command": command, "incident_id": incident_id, "school_id": school, "by": by, "at": iso_utc(time.time()), "command_id": uuid.uuid4().hex, **extra}
        self.producer.send(self.cfg.topics.commands, key=school, value=dumps(cmd)).get(30)
        return cmd

    # -- output ------------------------------------------------------------------
    def alerts_of(self, school: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts.records if a["school_id"] == school]

    def wait_stage(self, school: str, stage: str, timeout: float = 20, rule: str | None = None) -> dict[str, Any]:
        found = self.alerts.wait(
            lambda rs: [a for a in rs if a["school_id"] == school and a["stage"] == stage and rule in (None, a["rule"])], timeout, f"{school} {rule or ''} {stage}"
        )
        return found[0]

    def wait_forwarded(self, timeout: float = 20) -> None:
        """Every event published so far is on Kafka, as an event or a dead letter (a press
        published after this cannot overtake them on the priority lane)."""
        ids = set(self._published)
        self.events.wait(lambda rs: not ids - {r.get("event_id") for r in rs} - _dead_lettered(self.dlq.records, ids), timeout, "earlier events on Kafka")

    def wait_processed(self, timeout: float = 20) -> None:
        """Every event published so far is on Kafka and the worker has processed it (its
        consumer group committed past it). Presses take priority lanes in the bridge and
        the worker, so a press published later may be processed before them."""
        self.wait_forwarded(timeout)
        consumer = kafka_client.consumer(self.cfg, "admin", group_id=None, enable_auto_commit=False)
        admin = kafka_client.admin(self.cfg, "admin")
        try:
            parts = [TopicPartition(self.cfg.topics.events, p) for p in consumer.partitions_for_topic(self.cfg.topics.events)]
            ends = {tp: n for tp, n in consumer.end_offsets(parts).items() if n}

            def committed() -> bool:
                done = admin.list_group_offsets(self.cfg.worker.app_id).get(self.cfg.worker.app_id, {})
                return all(tp in done and done[tp].offset >= n for tp, n in ends.items())

            wait_for(committed, timeout, "the worker to process every event published so far", interval=0.2)
        finally:
            consumer.close()
            admin.close()

    def committed(self, topic: str) -> dict[TopicPartition, int]:
        """The worker group's committed offsets on `topic`."""
        admin = kafka_client.admin(self.cfg, "admin")
        try:
            done = admin.list_group_offsets(self.cfg.worker.app_id).get(self.cfg.worker.app_id, {})
            return {tp: meta.offset for tp, meta in done.items() if tp.topic == topic}
        finally:
            admin.close()

    def sentinel(self, school: str, device: str, timeout: float = 20) -> None:
        """A drill press at `school`, awaited, after everything published before it was processed."""
        self.wait_processed(timeout)
        body = self.press(device, exercise=True)
        self.alerts.wait(lambda rs: any(any(e["event_id"] == body["event_id"] for e in a["evidence"]) for a in rs), timeout, f"sentinel at {school}")


def _dead_lettered(entries: list[dict[str, Any]], ids: set[str]) -> set[str]:
    """The ids among `ids` whose event went to the dead-letter topic instead."""
    payloads = " ".join(e.get("payload", "") for e in entries)
    return {i for i in ids if i in payloads}


class Postgres:
    """A throw-away PostgreSQL cluster from Debian's packages, on a free loopback port."""

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        assert bins, "PostgreSQL is not installed (apt-get install -y postgresql); scripts/setup installs it"
        self.bin = bins[-1].parent
        # outside pytest's private tmp dir: the server user must reach it
        self.root = root = Path(tempfile.mkdtemp(prefix="huxue-pg-"))
        self.data = root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["chown", "-R", "postgres", str(root)], check=True)

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"

    def start(self) -> Postgres:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "huxue", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://huxue@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


# -- commands from a librdkafka client ------------------------------------------------


def kcat_partition(key: str, partitions: int) -> int:
    """Where librdkafka's default partitioner (`consistent_random`: CRC32 of the key) puts `key`.

    kcat and confluent-kafka place keyed records this way, unlike the Java client and
    kafka-python (murmur2, `pipeline.kafka_client.partition_for`).
    """
    import zlib

    return zlib.crc32(key.encode("utf-8")) % partitions


def kcat_command(bootstrap: str, topic: str, key: str | None, value: bytes, timeout: float = 120) -> None:
    """Produce one record with `kcat -P` and its DEFAULT partitioner (CRC32, not murmur2);
    `key` None: no key (librdkafka then picks a partition at random).

    kcat 1.7 sends a line read from stdin only once more input follows or stdin ends, so
    the line is piped and stdin closed; kcat exits after the delivery report. The value
    must be one line (compact JSON is) without a tab (JSON escapes tabs in strings).
    """
    assert b"\n" not in value and b"\t" not in value, "kcat_command: the value must be one line without tabs"
    assert key is None or ("\t" not in key and "\n" not in key)
    keyed = ["-K", "\t"] if key is not None else []
    result = subprocess.run(
        ["kcat", "-b", bootstrap, "-t", topic, "-P", *keyed, "-X", "message.timeout.ms=90000"],
        input=(key.encode("utf-8") + b"\t" if key is not None else b"") + value + b"\n",
        capture_output=True,
        timeout=timeout,
    )
    err = result.stderr.decode(errors="replace")
    if result.returncode != 0 or "failed" in err.lower() or "error" in err.lower():
        raise RuntimeError(f"kcat -P exited {result.returncode}: {err.strip()[-500:]}")


def up_locked(locked_raw: dict, root: Path, **overrides) -> tuple[dict, Config, Path]:
    """The locked stack's configuration with `overrides` (top-level keys), brought up for it."""
    raw = {**locked_raw, **overrides}
    path = root / "locked.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, env={})
    local.up(cfg)
    return raw, cfg, path
