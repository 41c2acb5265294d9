"""`huxue bench`: throughput and latency through the pipeline, against a raw-broker baseline.

Two phases with the same offered traffic (the simulator's mix, a publish timestamp in
each payload), on the local stack, one after the other:

1. baseline: `mosquitto_sub -q 1 | kcat -P` forwards raw payloads to a Kafka topic
   (no validation, no keys, no ordered acks): the floor set by the brokers themselves.
   Caveat measured here: kcat 1.7.1 sends a line read from stdin only when more input
   follows, so at low rates its latency is about one inter-arrival gap; compare
   throughput and CPU at any rate, latency at high rates;
2. huxue: its own bridge and worker (a fresh topic prefix and app id), MQTT publish ->
   `huxue.events`, and panic press -> `opened` alert.

Latency = time a consumer sees the record minus the publish time (same clock, same
consumer path in both phases), so the ratio compares the forwarding paths. CPU seconds
and peak RSS come from /proc for each process involved. Results also go to
bench/results/<time>.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kafka import KafkaConsumer, TopicPartition

from pipeline import kafka_client, simulate
from pipeline.config import load_config
from pipeline.mqtt_client import Publisher
from pipeline.records import dumps, loads
from pipeline.registry import load_registry
from pipeline.stack import kafka_server, local, mosquitto_server

DRAIN_SECONDS = 30.0


@dataclass
class Phase:
    name: str
    offered: int = 0
    delivered: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    panic_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        def pct(xs: list[float]) -> dict:
            if not xs:
                return {}
            s = sorted(xs)
            at = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
            return {"p50": round(at(0.50), 1), "p95": round(at(0.95), 1), "p99": round(at(0.99), 1), "max": round(s[-1], 1), "mean": round(statistics.fmean(s), 1)}

        return {
            "name": self.name,
            "offered": self.offered,
            "delivered": self.delivered,
            "throughput_per_s": round(self.delivered / self.seconds, 1) if self.seconds else 0,
            "latency_ms": pct(self.latencies_ms),
            "panic_to_alert_ms": pct(self.panic_ms),
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "peak_rss_mb": {k: round(v, 1) for k, v in self.rss_mb.items()},
        }


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Usage:
    """CPU seconds used by named processes between start() and stop()."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.before = {k: _cpu(p) for k, p in pids.items()}

    def stop(self, phase: Phase) -> None:
        for k, p in self.pids.items():
            try:
                phase.cpu_s[k] = _cpu(p) - self.before[k]
                phase.rss_mb[k] = _rss_mb(p)
            except OSError:
                pass


class Watch:
    """Consumes a topic and records when each tagged payload was seen."""

    def __init__(self, bootstrap: str, topic: str, key_of):
        self.seen: dict[str, float] = {}
        self._key_of = key_of
        self._stop = threading.Event()
        self._c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50)
        deadline = time.monotonic() + 20
        while not self._c.partitions_for_topic(topic) and time.monotonic() < deadline:
            time.sleep(0.2)
        parts = [TopicPartition(topic, p) for p in self._c.partitions_for_topic(topic) or []]
        self._c.assign(parts)
        self._c.seek_to_end(*parts)
        for tp in parts:
            self._c.position(tp)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._c.poll(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for r in records:
                    for key in self._key_of(r.value):
                        self.seen.setdefault(key, now)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self._c.close()


def _tag(value: bytes) -> list[str]:
    try:
        body = loads(value)
    except ValueError:
        return []
    tag = body.get("attrs", {}).get("bench") if isinstance(body, dict) else None
    return [tag] if tag else []


def _evidence(value: bytes) -> list[str]:
    body = loads(value)
    return [e["event_id"] for e in body.get("evidence", [])]


def wait_forwarding(pub: Publisher, sim: simulate.Simulator, watch: Watch, timeout: float = 30) -> None:
    """Publish probes until one comes out the other side: the forwarder is subscribed."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        topic, payload = sim.background(extra_attrs={"bench": f"probe-{n}"})
        pub.publish(topic, payload)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            if any(k.startswith("probe-") for k in watch.seen):
                return
            time.sleep(0.05)
    raise RuntimeError(f"nothing was forwarded within {timeout:g} s")


def drive(pub: Publisher, sim: simulate.Simulator, rate: float, duration: float, panics: int, schools: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Publish the mix at `rate` for `duration`; returns publish times of events and of panic presses."""
    sent: dict[str, float] = {}
    presses: dict[str, float] = {}
    every = max(1, int(rate * duration / (panics + 1))) if panics else 0
    stop = threading.Event()
    for i in simulate.paced(rate, stop, duration):
        if every and i % every == every - 1 and len(presses) < panics:
            device, topic, payload = sim.press(schools[len(presses) % len(schools)])
            presses[loads(payload)["event_id"]] = time.time()
            pub.publish(topic, payload)
            continue
        tag = f"b{i}"
        topic, payload = sim.background(extra_attrs={"bench": tag})
        sent[tag] = time.time()
        pub.publish(topic, payload)
    return sent, presses


def collect(phase: Phase, sent: dict[str, float], watch: Watch, started: float, nudge=None) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and len(set(sent) & set(watch.seen)) < len(sent):
        if nudge:
            nudge()
        time.sleep(0.2)
    got = [k for k in sent if k in watch.seen]
    phase.offered, phase.delivered = len(sent), len(got)
    last = max((watch.seen[k] for k in got), default=started)
    phase.seconds = last - started
    phase.latencies_ms = [(watch.seen[k] - sent[k]) * 1000 for k in got]


def main(args) -> int:
    cfg0 = load_config(args.config)
    local.up(cfg0)
    run_id = uuid.uuid4().hex[:6]
    prefix = f"bench-{run_id}."
    work = cfg0.home / "bench" / run_id
    work.mkdir(parents=True, exist_ok=True)
    raw_cfg = {
        "mqtt": {"url": cfg0.mqtt.url},
        "kafka": {"bootstrap": cfg0.kafka.bootstrap, "topic_prefix": prefix, "partitions": cfg0.kafka.partitions},
        "registry": str(cfg0.registry_path),
        "stack": {"home": str(cfg0.home)},
        "bridge": {"client_id": f"bench-bridge-{run_id}", "metrics_port": 0},
        "worker": {"app_id": f"bench-worker-{run_id}", "instance_id": f"bench-worker-{run_id}", "metrics_port": 0},
    }
    cfg_path = work / "huxue.yaml"
    cfg_path.write_text(yaml.safe_dump(raw_cfg))
    cfg = load_config(cfg_path)
    registry = load_registry(cfg.registry_path)
    schools = sorted(registry.schools)
    raw_topic = f"{prefix}raw"
    kafka_client.ensure_topics(cfg.kafka.bootstrap, [*cfg.topics.contract(), raw_topic], cfg.kafka.partitions)
    brokers = {"mosquitto": mosquitto_server.service(cfg).pid(), "kafka": kafka_server.service(cfg).pid()}
    print(f"bench {run_id}: {args.rate:g} msg/s offered for {args.duration:g} s per phase, {len(schools)} schools", flush=True)
    results = []

    # --- phase 1: raw broker path ------------------------------------------------
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    sub = shutil.which("mosquitto_sub")
    if not (kcat and sub):
        print("baseline needs mosquitto_sub and kcat: apt-get install -y mosquitto-clients kcat", file=sys.stderr)
        return 2
    base = Phase("baseline mosquitto_sub|kcat")
    pipe = subprocess.Popen(
        # line-buffered like the bridge's per-message hand-off, and the bridge's linger (2 ms)
        f"stdbuf -oL '{sub}' -h {cfg.mqtt.host} -p {cfg.mqtt.port} -q 1 -i bench-raw-{run_id} -t 'huxue/v1/devices/+/events' "
        f"| '{kcat}' -P -q -X linger.ms=2 -X acks=all -b {cfg.kafka.bootstrap} -t {raw_topic}",
        shell=True, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        watch = Watch(cfg.kafka.bootstrap, raw_topic, _tag)
        pub = Publisher(cfg.mqtt)
        wait_forwarding(pub, simulate.Simulator(registry, schools, seed=0), watch)
        children = _children(pipe.pid)
        usage = Usage({**brokers, **children})
        started = time.time()
        sim = simulate.Simulator(registry, schools, seed=1)
        sent, _ = drive(pub, sim, args.rate, args.duration, 0, schools)
        # kcat 1.7.1 (librdkafka 2.0.2) holds a message read from stdin until more input
        # (or EOF) arrives: uncounted padding releases the phase's last messages.
        collect(base, sent, watch, started, nudge=lambda: pub.publish(*sim.background(extra_attrs={"bench": "pad"})))
        usage.stop(base)
        pub.close()
        watch.close()
    finally:
        os.killpg(pipe.pid, 15)
        pipe.wait(10)
    results.append(base)
    _print(base)

    # --- phase 2: huxue bridge + worker -------------------------------------------
    hux = Phase("huxue bridge+worker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    procs = {}
    logs = {}
    try:
        for verb, ready in (("worker", "worker ready"), ("bridge", "mqtt connected")):
            logs[verb] = work / f"{verb}.log"
            out = open(logs[verb], "wb")
            procs[verb] = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--config", str(cfg_path), verb], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            out.close()
            deadline = time.monotonic() + 120
            while ready not in logs[verb].read_text(errors="replace"):
                if procs[verb].poll() is not None or time.monotonic() > deadline:
                    print(f"{verb} did not start:\n{logs[verb].read_text()[-2000:]}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        watch = Watch(cfg.kafka.bootstrap, cfg.topics.events, _tag)
        alerts = Watch(cfg.kafka.bootstrap, cfg.topics.alerts, _evidence)
        pub = Publisher(cfg.mqtt)
        wait_forwarding(pub, simulate.Simulator(registry, schools, seed=0), watch)
        usage = Usage({**brokers, **{k: p.pid for k, p in procs.items()}})
        started = time.time()
        sent, presses = drive(pub, simulate.Simulator(registry, schools, seed=1), args.rate, args.duration, args.panics, schools)
        collect(hux, sent, watch, started)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and not set(presses) <= set(alerts.seen):
            time.sleep(0.2)
        hux.panic_ms = [(alerts.seen[k] - presses[k]) * 1000 for k in presses if k in alerts.seen]
        usage.stop(hux)
        pub.close()
        watch.close()
        alerts.close()
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, 15)
                p.wait(30)
    results.append(hux)
    _print(hux)

    b, h = base.summary(), hux.summary()
    if b["latency_ms"] and h["latency_ms"]:
        print(
            f"ratio huxue/baseline: throughput {h['throughput_per_s'] / max(b['throughput_per_s'], 1e-9):.2f}x, "
            f"p50 latency {h['latency_ms']['p50'] / max(b['latency_ms']['p50'], 0.1):.2f}x, "
            f"p99 latency {h['latency_ms']['p99'] / max(b['latency_ms']['p99'], 0.1):.2f}x",
            flush=True,
        )
    out_dir = Path.cwd() / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"run_id": run_id, "rate": args.rate, "duration": args.duration, "phases": [r.summary() for r in results]}
    path = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{run_id}.json"
    path.write_bytes(dumps(report))
    print(f"results: {path}", flush=True)
    kafka_client.delete_topics(
        cfg.kafka.bootstrap, [*cfg.topics.contract(), raw_topic, cfg.topics.ticks, f"{cfg.worker.app_id}-schools-changelog", f"{cfg.worker.app_id}-memory-changelog"]
    )
    return 0 if hux.delivered == hux.offered else 1


def _children(pid: int) -> dict[str, int]:
    """The shell pipeline's processes by name (mosquitto_sub, kcat)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        pgid = int(stat.rsplit(")", 1)[1].split()[2])
        if pgid == pid and name in ("mosquitto_sub", "kcat", "kafkacat"):
            found[name] = int(entry.name)
    return found


def _print(phase: Phase) -> None:
    s = phase.summary()
    lat = s["latency_ms"]
    print(
        f"{s['name']:<28} delivered {s['delivered']}/{s['offered']}  {s['throughput_per_s']:>8.1f} msg/s  "
        f"latency ms p50 {lat.get('p50', '-')} p95 {lat.get('p95', '-')} p99 {lat.get('p99', '-')} max {lat.get('max', '-')}",
        flush=True,
    )
    if s["panic_to_alert_ms"]:
        pl = s["panic_to_alert_ms"]
        print(f"{'':<28} panic press -> alert ms p50 {pl['p50']} p95 {pl['p95']} max {pl['max']} ({len(phase.panic_ms)} presses)", flush=True)
    print(f"{'':<28} cpu s {s['cpu_s']}  peak rss MB {s['peak_rss_mb']}", flush=True)

