"""`huxue bench-scale`: does the worker's cost grow with the size of the registry? (issue 9)

Target: with 2,000 schools x 50 devices (100,000 devices) the worker idles under 5% of a
core with no traffic, starts in <= 15 s, and its per-event cost does not grow with the
number of schools.

On brokers of its own (free loopback ports, a home under HUXUE_HOME/bench-scale/<run>),
for two registries, the 20-school sample and a generated one (deploy/make_sample_registry.py
--schools N --devices-per-school D), one after the other, each with a fresh worker (own
app id and topic prefix):

1. start: seconds from starting `huxue worker` to its log line "worker ready" (the line's
   own timestamp), and the CPU seconds that took; then "settle": until the first ticks
   have stored every registry school (the schools changelog holds one record per school),
   a one-time cost kept out of the idle figure;
2. idle: the worker's CPU over --idle-seconds with no traffic, as % of one core;
3. events: --events canonical events (what the bridge writes: native.parse_message of a
   simulator-like payload; half heartbeats, the rest the simulator's background mix) spread
   uniformly over the registry's schools, produced straight to the events topic with
   kafka-python at --rate (keyed by school_id, its default murmur2 partitioner), until the
   worker group's committed offsets reach the end of the topic. CPU per event is reported
   raw and net of the idle cost over the same window (the tick cost runs meanwhile).

A healthy run dead-letters nothing and logs no ERROR: both are counted, and the run
fails (exit 1) otherwise. Peak RSS is the worker's VmHWM. Results: a table with the ratio N-school / 20-school, and
bench/results/scale-<time>.json. The worker and the brokers are stopped at the end, also on
error or Ctrl-C.
"""

from __future__ import annotations

import calendar
import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from kafka import TopicPartition

from pipeline import kafka_client, simulate
from pipeline.bench import Phase, Usage, _cpu, _rss_mb, _rss_now_mb, machine, stop_huxue
from pipeline.config import Config, load_config, packaged_config_path
from pipeline.ingest import native
from pipeline.records import CanonicalEvent, dumps
from pipeline.registry import Registry, load_registry
from pipeline.stack import kafka_server, local

GENERATOR = kafka_server.REPO_ROOT / "deploy" / "make_sample_registry.py"
READY_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 120.0
POLL_S = 0.05


@dataclass
class Run:
    """One registry's measurements."""

    name: str
    schools: int
    devices: int
    load_registry_s: float = 0.0  # in this process, for reference
    start_s: float | None = None  # process start -> "worker ready"
    start_cpu_s: float | None = None
    settle_s: float | None = None  # "worker ready" -> every school stored
    idle_s: float = 0.0
    idle_cpu_s: float | None = None
    events_offered: int = 0
    events_processed: int = 0  # committed by the worker group (processed or dead-lettered)
    dead_lettered: int = 0  # records on the events DLQ: a healthy run has none
    log_errors: int = 0  # ERROR/CRITICAL lines in the worker's log
    send_s: float = 0.0
    drain_s: float | None = None  # last send -> committed to the end
    events_window_s: float = 0.0
    events_cpu_s: float | None = None
    kafka_cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_pct: dict[str, float] = field(default_factory=dict)  # all processes, all cores
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)  # resident at the end of each stage
    log: str = ""

    @property
    def idle_pct(self) -> float | None:
        return None if self.idle_cpu_s is None or not self.idle_s else 100 * self.idle_cpu_s / self.idle_s

    @property
    def cpu_ms_per_event(self) -> float | None:
        if self.events_cpu_s is None or not self.events_processed:
            return None
        return 1000 * self.events_cpu_s / self.events_processed

    @property
    def net_cpu_ms_per_event(self) -> float | None:
        """Less what the worker burns idle over the same window (ticks)."""
        if self.events_cpu_s is None or not self.events_processed or self.idle_pct is None:
            return None
        return 1000 * max(0.0, self.events_cpu_s - self.idle_pct / 100 * self.events_window_s) / self.events_processed

    def summary(self) -> dict[str, Any]:
        r = lambda v, n=3: None if v is None else round(v, n)  # noqa: E731
        return {
            "name": self.name,
            "schools": self.schools,
            "devices": self.devices,
            "load_registry_s": r(self.load_registry_s),
            "start_to_ready_s": r(self.start_s),
            "start_cpu_s": r(self.start_cpu_s),
            "settle_s": r(self.settle_s),
            "idle_seconds": r(self.idle_s),
            "idle_cpu_s": r(self.idle_cpu_s),
            "idle_cpu_pct_of_core": r(self.idle_pct, 2),
            "events_offered": self.events_offered,
            "events_processed": self.events_processed,
            "events_dead_lettered": self.dead_lettered,
            "worker_log_errors": self.log_errors,
            "send_s": r(self.send_s),
            "drain_s": r(self.drain_s),
            "events_window_s": r(self.events_window_s),
            "events_cpu_s": r(self.events_cpu_s),
            "cpu_ms_per_event": r(self.cpu_ms_per_event, 4),
            "net_cpu_ms_per_event": r(self.net_cpu_ms_per_event, 4),
            "kafka_cpu_s": {k: round(v, 2) for k, v in self.kafka_cpu_s.items()},
            "machine_busy_pct": {k: round(v, 1) for k, v in self.machine_busy_pct.items()},
            "worker_peak_rss_mb": {k: round(v, 1) for k, v in self.peak_rss_mb.items()},
            "worker_rss_mb": {k: round(v, 1) for k, v in self.rss_mb.items()},
            "log": self.log,
        }


def render_registry(schools: int, devices_per_school: int) -> str:
    """deploy/make_sample_registry.py's render(), as JSON (a source checkout's script, not packaged)."""
    if not GENERATOR.exists():
        raise RuntimeError(f"{GENERATOR} not found: run bench-scale from a source checkout (pip install -e .)")
    spec = importlib.util.spec_from_file_location("make_sample_registry", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.as_json(module.render(schools=schools, devices_per_school=devices_per_school))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _busy_pct(before: tuple[float, float]) -> float:
    """% of the machine's cores busy since `before` (all processes: a shared box shows here)."""
    busy, total = _cpu_times()
    return 100 * (busy - before[0]) / max(1, total - before[1])


def _wait(done, timeout: float, interval: float = POLL_S) -> bool:
    """Poll `done()` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Events:
    """Canonical events as the bridge writes them, spread uniformly over the schools:
    `heartbeat_share` heartbeats, the rest the simulator's background mix."""

    def __init__(self, registry: Registry, seed: int, heartbeat_share: float):
        self.rng = random.Random(seed)
        self.registry = registry
        self.schools = sorted(registry.schools)
        self.heartbeat_share = heartbeat_share
        self.by_school: dict[str, dict[str, list]] = {}  # school -> kind -> devices
        self.devices: dict[str, list] = {}  # school -> devices
        for sid in self.schools:
            self.devices[sid] = sorted(registry.devices_of(sid), key=lambda d: d.id)
            kinds: dict[str, list] = {}
            for d in self.devices[sid]:
                kinds.setdefault(d.kind, []).append(d)
            self.by_school[sid] = kinds
        self.run_id = uuid.uuid4().hex[:6]
        self.n = 0

    def next(self) -> CanonicalEvent:
        rng = self.rng
        school = rng.choice(self.schools)
        kinds = self.by_school[school]
        self.n += 1
        if rng.random() < self.heartbeat_share:
            device = rng.choice(self.devices[school])
            etype, attrs = "device.heartbeat", {"battery": rng.randint(40, 100)}
        else:
            mix = [(w, kind, etype) for w, kind, etype in simulate.MIX if kinds.get(kind)]
            _, kind, etype = rng.choices(mix, weights=[w for w, _, _ in mix])[0]
            device = rng.choice(kinds[kind])
            if etype == "plate.read":
                attrs = {"plate": f"{rng.choice(simulate.PROVINCES)}{rng.choice('ABCDEFGH')}{rng.randint(10000, 99999)}", "direction": rng.choice(["in", "out"])}
            elif etype == "face.match":
                attrs = {"watchlist": "staff", "person_ref": f"staff-{rng.randint(1, 120):03d}", "similarity": round(rng.uniform(0.86, 0.99), 3)}
            else:
                attrs = {"zone": device.zone, "count": rng.randint(3, 25)}
        now = time.time()
        tz = ZoneInfo(self.registry.schools[school].timezone)
        body = {"event_id": f"scale-{self.run_id}-{self.n}", "type": etype, "ts": datetime.fromtimestamp(now, tz).isoformat(timespec="milliseconds"), "attrs": attrs}
        event = native.parse_message(simulate.event_topic(device.id), dumps(body), retained=False, received_at=now, registry=self.registry)
        if not isinstance(event, CanonicalEvent):
            raise RuntimeError(f"bench-scale made an event the bridge rejects: {event}")
        return event


class Stack:
    """Brokers of this benchmark alone: free loopback ports, its own home."""

    def __init__(self, cfg0: Config, home: Path):
        self.home = home
        self.raw = {
            "mqtt": {"url": f"mqtt://127.0.0.1:{_free_port()}"},
            "kafka": {"bootstrap": f"127.0.0.1:{_free_port()}", "partitions": cfg0.kafka.partitions},
            "stack": {
                "home": str(home),
                "kafka_controller_port": _free_port(),
                "kafka_version": cfg0.stack.kafka_version,
                "kafka_heap": cfg0.stack.kafka_heap,
                "cache_dir": str(kafka_server.cache_dir(cfg0)),  # share the downloaded jars
            },
            "worker": {"tick_seconds": cfg0.worker.tick_seconds},
            "escalation": {
                "ack_seconds": cfg0.escalation.ack_seconds,
                "arrive_target_seconds": cfg0.escalation.arrive_target_seconds,
                "arrive_limit_seconds": cfg0.escalation.arrive_limit_seconds,
            },
        }
        home.mkdir(parents=True, exist_ok=True)
        self.cfg = self._write("stack", self.raw)

    def _write(self, slug: str, raw: dict[str, Any]) -> Config:
        path = self.home / f"{slug}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_config(path, env={})

    def worker_config(self, slug: str, registry: Path) -> tuple[Config, Path]:
        """A fresh deployment on these brokers: own topic prefix, app id, data dir."""
        name = f"scale-{slug}"
        raw = {
            **self.raw,
            "registry": str(registry),
            "kafka": {**self.raw["kafka"], "topic_prefix": f"{name}."},
            "worker": {**self.raw["worker"], "app_id": f"{name}-worker", "instance_id": f"{name}-worker-0", "metrics_port": 0},
        }
        return self._write(slug, raw), self.home / f"{slug}.yaml"


def _log_epoch(line: str) -> float | None:
    """The timestamp logs.LogfmtFormatter puts first on a line, as epoch seconds."""
    try:
        stamp = line.split(" ", 1)[0]
        return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000
    except (ValueError, IndexError):
        return None


def _ready_line(log: Path) -> str | None:
    for line in log.read_text(errors="replace").splitlines():
        if " worker ready" in line:
            return line
    return None


class Offsets:
    """End offsets of topics and what the worker group committed on them."""

    def __init__(self, cfg: Config, group: str):
        self.group = group
        self.consumer = kafka_client.consumer(cfg, "admin", group_id=None, enable_auto_commit=False)
        self.admin = kafka_client.admin(cfg, "admin")

    def parts(self, topic: str) -> list[TopicPartition]:
        _wait(lambda: self.consumer.partitions_for_topic(topic), 30, 0.2)  # a new topic reaches metadata a moment later
        return [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or [])]

    def ends(self, topic: str) -> dict[TopicPartition, int]:
        return self.consumer.end_offsets(self.parts(topic))

    def committed(self) -> dict[TopicPartition, int]:
        done = self.admin.list_group_offsets(self.group).get(self.group, {})
        return {tp: meta.offset for tp, meta in done.items()}

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def measure(stack: Stack, run: Run, slug: str, registry_path: Path, registry: Registry, args, kafka_pid: int | None) -> Run:
    cfg, cfg_path = stack.worker_config(slug, registry_path)
    t = cfg.topics
    kafka_client.ensure_topics(cfg, "admin", t.contract(), cfg.kafka.partitions)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    log = stack.home / f"{slug}-worker.log"
    run.log = str(log)
    with open(log, "wb") as out:
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--config", str(cfg_path), "worker"], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    offsets = None
    try:
        # 1. start
        if not _wait(lambda: _ready_line(log) is not None or proc.poll() is not None, READY_TIMEOUT_S) or _ready_line(log) is None:
            raise RuntimeError(f"worker ({run.name}) was not ready within {READY_TIMEOUT_S:g} s:\n{log.read_text(errors='replace')[-2000:]}")
        at = _log_epoch(_ready_line(log)) or time.time()
        run.start_s = at - started
        run.start_cpu_s = _cpu(proc.pid)
        print(f"  {run.name}: worker ready {run.start_s:.2f} s after start ({run.start_cpu_s:.2f} CPU s)", flush=True)

        # settle: the first ticks store every school once (a one-time cost, not idling)
        offsets = Offsets(cfg, cfg.worker.app_id)
        changelog = cfg.topics.changelogs[0]  # the schools table
        t0 = time.monotonic()
        settled = _wait(lambda: sum(offsets.ends(changelog).values()) >= len(registry.schools), SETTLE_TIMEOUT_S, 0.2)
        run.settle_s = time.monotonic() - t0 if settled else None
        print(f"  {run.name}: " + (f"every school stored {run.settle_s:.2f} s after ready" if settled else f"schools not all stored after {SETTLE_TIMEOUT_S:g} s; measuring anyway"), flush=True)
        run.peak_rss_mb["ready"], run.rss_mb["ready"] = _rss_mb(proc.pid), _rss_now_mb(proc.pid)

        # 2. idle
        pids = {"worker": proc.pid, **({"kafka": kafka_pid} if kafka_pid else {})}
        idle = Phase("idle")
        usage = Usage(pids)
        machine0 = _cpu_times()
        t0 = time.monotonic()
        if proc.poll() is None:
            threading.Event().wait(args.idle_seconds)  # the measurement window itself
        usage.stop(idle)
        run.idle_s = time.monotonic() - t0
        run.idle_cpu_s = idle.cpu_s.get("worker")
        run.kafka_cpu_s["idle"] = idle.cpu_s.get("kafka", 0.0)
        run.machine_busy_pct["idle"] = _busy_pct(machine0)
        run.peak_rss_mb["idle"], run.rss_mb["idle"] = _rss_mb(proc.pid), _rss_now_mb(proc.pid)
        print(f"  {run.name}: idle {run.idle_pct:.1f}% of a core over {run.idle_s:.0f} s (machine {run.machine_busy_pct['idle']:.0f}% busy)", flush=True)

        # 3. events
        source = Events(registry, seed=1, heartbeat_share=args.heartbeat_share)
        first = {tp: n for tp, n in offsets.ends(t.events).items()}
        producer = kafka_client.producer(cfg, "admin")
        busy = Phase("events")
        usage = Usage(pids)
        machine0 = _cpu_times()
        t0 = time.monotonic()
        try:
            stop = threading.Event()
            for i in simulate.paced(args.rate, stop):
                if i >= args.events:
                    break
                event = source.next()
                producer.send(t.events, key=event.school_id, value=dumps(event.to_dict()))
            producer.flush(60)
        finally:
            producer.close(10)
        run.events_offered = args.events
        sent = time.monotonic()
        run.send_s = sent - t0
        ends = offsets.ends(t.events)

        def processed() -> int:
            done = offsets.committed()
            return sum(max(0, min(done.get(tp, 0), n) - first.get(tp, 0)) for tp, n in ends.items())

        state = {"n": 0}

        def caught_up() -> bool:
            state["n"] = processed()
            return state["n"] >= sum(n - first.get(tp, 0) for tp, n in ends.items()) or proc.poll() is not None

        drained = _wait(caught_up, args.drain_seconds, 0.1)
        end = time.monotonic()
        usage.stop(busy)
        run.events_processed = state["n"]
        run.drain_s = end - sent if drained and proc.poll() is None else None
        run.events_window_s = end - t0
        run.events_cpu_s = busy.cpu_s.get("worker")
        run.kafka_cpu_s["events"] = busy.cpu_s.get("kafka", 0.0)
        run.machine_busy_pct["events"] = _busy_pct(machine0)
        run.peak_rss_mb["events"], run.rss_mb["events"] = _rss_mb(proc.pid), _rss_now_mb(proc.pid)
        run.dead_lettered = sum(offsets.ends(t.events_dlq).values())
        run.log_errors = sum(1 for line in log.read_text(errors="replace").splitlines() if line[:2] == "20" and line.split(" ", 2)[1:2] in (["ERROR"], ["CRITICAL"]))
        drain = f"drained {run.drain_s:.2f} s after the last send" if run.drain_s is not None else f"NOT drained within {args.drain_seconds:g} s"
        print(f"  {run.name}: {run.events_processed}/{run.events_offered} events processed, sent in {run.send_s:.1f} s, {drain}", flush=True)
        if run.dead_lettered or run.log_errors:
            print(f"  {run.name}: WARNING {run.dead_lettered} events dead-lettered, {run.log_errors} ERROR lines in {log}: the figures are not of a healthy worker", flush=True)
        if proc.poll() is not None:
            raise RuntimeError(f"worker ({run.name}) exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
    finally:
        if offsets:
            offsets.close()
        _stop(proc)
    return run


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (bench.stop_huxue); SIGKILL if it does not end in time."""
    try:
        stop_huxue({"worker": proc})
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def _busy(run: Run) -> str:
    b = run.machine_busy_pct
    return f"{b.get('idle', 0):.0f} / {b.get('events', 0):.0f}" if b else "-"


def report(small: Run, large: Run) -> list[tuple[str, str, str, str]]:
    rows = [
        ("schools", str(small.schools), str(large.schools), ""),
        ("devices", str(small.devices), str(large.devices), ""),
        ("load_registry s (this process)", _fmt(small.load_registry_s), _fmt(large.load_registry_s), _ratio(large.load_registry_s, small.load_registry_s)),
        ("start -> 'worker ready' s", _fmt(small.start_s), _fmt(large.start_s), _ratio(large.start_s, small.start_s)),
        ("  CPU s used to start", _fmt(small.start_cpu_s), _fmt(large.start_cpu_s), _ratio(large.start_cpu_s, small.start_cpu_s)),
        ("ready -> every school stored s", _fmt(small.settle_s), _fmt(large.settle_s), ""),
        ("idle CPU % of a core", _fmt(small.idle_pct), _fmt(large.idle_pct), _ratio(large.idle_pct, small.idle_pct)),
        ("events processed", f"{small.events_processed}/{small.events_offered}", f"{large.events_processed}/{large.events_offered}", ""),
        ("dead-lettered / worker log errors", f"{small.dead_lettered} / {small.log_errors}", f"{large.dead_lettered} / {large.log_errors}", ""),
        ("drain after last send s", _fmt(small.drain_s), _fmt(large.drain_s), ""),
        ("CPU ms per event (raw)", _fmt(small.cpu_ms_per_event, ".3f"), _fmt(large.cpu_ms_per_event, ".3f"), _ratio(large.cpu_ms_per_event, small.cpu_ms_per_event)),
        ("CPU ms per event (net of idle)", _fmt(small.net_cpu_ms_per_event, ".3f"), _fmt(large.net_cpu_ms_per_event, ".3f"), _ratio(large.net_cpu_ms_per_event, small.net_cpu_ms_per_event)),
        ("machine busy % (idle / events)", _busy(small), _busy(large), ""),
        ("worker peak RSS MB", _fmt(small.peak_rss_mb.get("events"), ".0f"), _fmt(large.peak_rss_mb.get("events"), ".0f"), _ratio(large.peak_rss_mb.get("events"), small.peak_rss_mb.get("events"))),
        ("worker RSS MB at the end", _fmt(small.rss_mb.get("events"), ".0f"), _fmt(large.rss_mb.get("events"), ".0f"), ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {small.name:>14}  {large.name:>14}  {'ratio':>8}", flush=True)
    for label, a, b, ratio in rows:
        print(f"{label:<{width}}  {a:>14}  {b:>14}  {ratio:>8}", flush=True)
    return rows


def _terminate(*_: Any) -> None:
    raise KeyboardInterrupt  # run the clean-up below on SIGTERM too


def main(args) -> int:
    facts = machine()
    print(f"machine: {facts['cores']} cores ({facts['cpu'] or '?'}), {facts['date']}, kernel {facts['kernel']}, python {facts['python']}", flush=True)
    cfg0 = load_config(args.config)
    run_id = uuid.uuid4().hex[:6]
    stack = Stack(cfg0, cfg0.home / "bench-scale" / run_id)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        sample_path = packaged_config_path().parent / "registry.yaml"
        big_path = stack.home / f"registry-{args.schools}x{args.devices_per_school}.json"
        big_path.write_text(render_registry(args.schools, args.devices_per_school))
        runs = []
        for slug, path in (("sample", sample_path), (f"n{args.schools}", big_path)):
            t0 = time.perf_counter()
            registry = load_registry(path)
            runs.append((slug, path, registry, Run(f"{len(registry.schools)} schools", len(registry.schools), len(registry.devices), time.perf_counter() - t0)))
        print(
            f"bench-scale {run_id}: {' vs '.join(f'{r.schools} schools / {r.devices} devices' for *_, r in runs)}; idle {args.idle_seconds:g} s; "
            f"{args.events} events at {args.rate:g}/s; brokers {stack.cfg.kafka.bootstrap} (home {stack.home})",
            flush=True,
        )
        local.up(stack.cfg, say=lambda s: print(f"  {s}", flush=True))
        kafka_pid = kafka_server.service(stack.cfg).pid()
        for slug, path, registry, run in runs:
            print(f"{run.name} ({run.devices} devices): load_registry {run.load_registry_s:.2f} s here", flush=True)
            measure(stack, run, f"{run_id}-{slug}", path, registry, args, kafka_pid)
        small, large = runs[0][3], runs[1][3]
        rows = report(small, large)
        result = {
            "run_id": run_id,
            "machine": facts,
            "target": "2,000 schools x 50 devices: idle < 5% of a core, start <= 15 s, per-event cost flat in the number of schools",
            "settings": {
                "schools": args.schools,
                "devices_per_school": args.devices_per_school,
                "idle_seconds": args.idle_seconds,
                "events": args.events,
                "rate": args.rate,
                "heartbeat_share": args.heartbeat_share,
                "tick_seconds": stack.cfg.worker.tick_seconds,
                "partitions": stack.cfg.kafka.partitions,
            },
            "runs": [small.summary(), large.summary()],
            "ratio_large_over_small": {
                "start_to_ready": _ratio(large.start_s, small.start_s),
                "idle_cpu": _ratio(large.idle_pct, small.idle_pct),
                "cpu_per_event": _ratio(large.cpu_ms_per_event, small.cpu_ms_per_event),
                "net_cpu_per_event": _ratio(large.net_cpu_ms_per_event, small.net_cpu_ms_per_event),
            },
            "table": rows,
        }
        out_dir = Path.cwd() / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"scale-{time.strftime('%Y%m%dT%H%M%S')}-{run_id}.json"
        path.write_bytes(dumps(result))
        print(f"results: {path}", flush=True)
        return 0 if all(r.events_processed == r.events_offered and not r.dead_lettered and not r.log_errors for r in (small, large)) else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            local.down(stack.cfg, say=lambda s: print(f"  {s}", flush=True))
        except Exception as exc:  # noqa: BLE001 - report, never mask the real error
            print(f"bench-scale: stopping the brokers failed: {exc} (home {stack.home})", file=sys.stderr, flush=True)
