"""`huxue bench`: throughput and latency through the pipeline, against a raw-broker baseline.

Phases with the same simulated traffic (the simulator's mix, a publish timestamp in each
payload), on the local stack, one after the other:

1. baseline: `mosquitto_sub -q 1 | kcat -P` forwards raw payloads to a Kafka topic
   (no validation, no keys, no ordered acks): the floor set by the brokers themselves.
   Caveat measured here: kcat 1.7.1 sends a line read from stdin only when more input
   follows, so at low rates its latency is about one inter-arrival gap; compare
   throughput and CPU at any rate, latency at high rates;
2. huxue: its own bridge and worker, MQTT publish -> `huxue.events`, panic press ->
   first alert, and deadline lateness (ladder alert's Kafka timestamp minus its `due`);
3. with --overload: the huxue phase again at twice the rate;
4. with --find-max: short huxue-only steps searching the highest rate that keeps up.

Every huxue phase runs a fresh bridge + worker on its own topic prefix, so no phase
inherits another's backlog or open incidents. Panic presses are spread over the phase,
the first at its start; nobody answers them, and the ladder is compressed to 1/4, 1/2
and 3/4 of the phase so every stage of the first press fires while load is on.

Latency = time a consumer sees the record minus the publish time (same clock, same
consumer path in every phase), so the ratio compares the forwarding paths. CPU seconds
and peak RSS come from /proc for each process involved. Results also go to
bench/results/<time>.json.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml
from kafka import TopicPartition

from pipeline import kafka_client, mqtt_auth, simulate
from pipeline.config import Config, load_config
from pipeline.mqtt_client import AsDevices, Publisher, end_session
from pipeline.records import dumps, loads, parse_ts
from pipeline.registry import Registry, load_registry
from pipeline.rules.ladder import LADDER
from pipeline.stack import kafka_server, local, mosquitto_server

DRAIN_SECONDS = 30.0
LADDER_FRACTIONS = (0.25, 0.50, 0.75)  # of the phase: onsite_overdue, mobile_late, mobile_overdue
KEEP_UP_RATIO = 0.98  # --find-max: delivered/offered at least this ...
KEEP_UP_LAG_S = 2.0  # ... and the last event on huxue.events within this of the end of publishing
FIND_MAX_SECONDS = 10.0
FIND_MAX_DRAIN_S = 5.0  # long enough to report a lag somewhat past KEEP_UP_LAG_S
SOAK_SAMPLE_S = 30.0  # --soak: resident set sampled this often


@dataclass
class Phase:
    name: str
    rate: float = 0.0
    offered: int = 0
    delivered: int = 0
    seconds: float = 0.0
    lag_s: float | None = None  # last published event seen minus end of publishing
    latencies_ms: list[float] = field(default_factory=list)
    presses: int = 0
    panic_ms: list[float] = field(default_factory=list)
    press_to_urgent_ms: list[float] = field(default_factory=list)  # the bridge's share of panic_ms
    ladder_s: list[float] = field(default_factory=list)
    stages_expected: int = 0
    lateness_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    rss_samples: list[dict] = field(default_factory=list)  # --soak: resident set over time

    def keeps_up(self) -> bool:
        return self.offered > 0 and self.delivered / self.offered >= KEEP_UP_RATIO and self.lag_s is not None and self.lag_s <= KEEP_UP_LAG_S

    def summary(self) -> dict:
        return {
            "name": self.name,
            "rate": self.rate,
            "offered": self.offered,
            "delivered": self.delivered,
            "throughput_per_s": round(self.delivered / self.seconds, 1) if self.seconds else 0,
            "last_event_lag_s": None if self.lag_s is None else round(self.lag_s, 3),
            "latency_ms": _pct(self.latencies_ms),
            "presses": self.presses,
            "panic_to_alert_ms": _pct(self.panic_ms),
            "panic_to_urgent_topic_ms": _pct(self.press_to_urgent_ms),
            "ladder_s": self.ladder_s,
            "deadline_stages": {"seen": len(self.lateness_ms), "expected": self.stages_expected},
            "deadline_lateness_ms": _pct(self.lateness_ms),
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "peak_rss_mb": {k: round(v, 1) for k, v in self.rss_mb.items()},
            **({"rss_samples": self.rss_samples} if self.rss_samples else {}),
        }


def _pct(xs: list[float]) -> dict:
    if not xs:
        return {}
    s = sorted(xs)
    at = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"p50": round(at(0.50), 1), "p95": round(at(0.95), 1), "p99": round(at(0.99), 1), "max": round(s[-1], 1), "mean": round(statistics.fmean(s), 1)}


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int, field: str = "VmHWM") -> float:
    """Peak resident set (VmHWM), or now (field="VmRSS")."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_now_mb(pid: int) -> float:
    return _rss_mb(pid, "VmRSS")


def machine() -> dict:
    """Facts to read the numbers against: the box is small and shared."""
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


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

    def __init__(self, cfg: Config, topic: str, key_of):
        self.seen: dict[str, float] = {}
        self._key_of = key_of
        self._stop = threading.Event()
        self._c = kafka_client.consumer(cfg, "admin", group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50)
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
                    self.on_record(r, now)

    def on_record(self, r, now: float) -> None:
        for key in self._key_of(r.value):
            self.seen.setdefault(key, now)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self._c.close()


class AlertWatch(Watch):
    """Alerts: `seen` per press event id (its first alert), and each ladder stage's
    lateness = the record's Kafka timestamp minus the alert's `due`, keyed by
    (the incident's first press, stage)."""

    def __init__(self, cfg: Config, topic: str):
        self.lateness_ms: dict[tuple[str, str], float] = {}
        super().__init__(cfg, topic, None)

    def on_record(self, r, now: float) -> None:
        body = loads(r.value)
        evidence = body.get("evidence") or []
        for e in evidence:
            self.seen.setdefault(e["event_id"], now)
        if body.get("stage") in LADDER and body.get("due") and evidence:
            key = (evidence[0]["event_id"], body["stage"])
            self.lateness_ms.setdefault(key, r.timestamp - parse_ts(body["due"]) * 1000)


def _tag(value: bytes) -> list[str]:
    try:
        body = loads(value)
    except ValueError:
        return []
    tag = body.get("attrs", {}).get("bench") if isinstance(body, dict) else None
    return [tag] if tag else []


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


def drive(pub: Publisher, sim: simulate.Simulator, rate: float, duration: float, panics: int, schools: list[str], press_pub: Publisher | AsDevices | None = None) -> tuple[dict[str, float], dict[str, tuple[float, str]]]:
    """Publish the mix at `rate` for `duration`, `panics` presses evenly spread in it (the
    first at the start); returns publish times of events, and of presses (with school).
    Presses go through `press_pub`, a connection of their own as a real button has: behind
    the load generator's queue of camera messages they would measure the generator."""
    sent: dict[str, float] = {}
    presses: dict[str, tuple[float, str]] = {}
    slots = rate * duration
    press_at = {int(k * slots / panics) for k in range(panics)} if panics else set()
    stop = threading.Event()
    for i in simulate.paced(rate, stop, duration):
        if i in press_at:
            school = schools[len(presses) % len(schools)]
            _, topic, payload = sim.press(school)
            presses[loads(payload)["event_id"]] = (time.time(), school)
            (press_pub or pub).publish(topic, payload)
            continue
        tag = f"b{i}"
        topic, payload = sim.background(extra_attrs={"bench": tag})
        sent[tag] = time.time()
        pub.publish(topic, payload)
    return sent, presses


def _until(done, timeout: float, nudge=None) -> None:
    """Poll `done()` every 0.2 s until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        if nudge:
            nudge()
        time.sleep(0.2)


def collect(phase: Phase, sent: dict[str, float], watch: Watch, started: float, ended: float, drain: float = DRAIN_SECONDS, nudge=None) -> None:
    _until(lambda: len(sent.keys() & watch.seen.keys()) >= len(sent), drain, nudge)
    seen = dict(watch.seen)
    got = [k for k in sent if k in seen]
    phase.offered, phase.delivered = len(sent), len(got)
    phase.seconds = max((seen[k] for k in got), default=started) - started
    phase.latencies_ms = [(seen[k] - sent[k]) * 1000 for k in got]
    last = max(sent, key=sent.get, default=None)
    phase.lag_s = seen[last] - ended if last in seen else None


def _event_id(value: bytes) -> list[str]:
    try:
        return [loads(value)["event_id"]]
    except (ValueError, KeyError, TypeError):
        return []


def collect_alerts(phase: Phase, presses: dict[str, tuple[float, str]], alerts: AlertWatch, urgent: Watch, ended: float) -> None:
    """Each press's first alert, and every ladder stage due before publishing ended (the
    first press at a school opens its incident; later ones there join it)."""
    opened: dict[str, tuple[str, float]] = {}
    for eid, (t, school) in presses.items():
        opened.setdefault(school, (eid, t))
    wanted = {(eid, stage) for eid, t in opened.values() for stage, after in zip(LADDER, phase.ladder_s) if t + after <= ended}
    _until(lambda: presses.keys() <= alerts.seen.keys() and wanted <= alerts.lateness_ms.keys(), DRAIN_SECONDS)
    phase.presses = len(presses)
    phase.panic_ms = [(alerts.seen[k] - presses[k][0]) * 1000 for k in presses if k in alerts.seen]
    phase.press_to_urgent_ms = [(urgent.seen[k] - presses[k][0]) * 1000 for k in presses if k in urgent.seen]
    phase.stages_expected = len(wanted)
    phase.lateness_ms = [alerts.lateness_ms[k] for k in wanted if k in alerts.lateness_ms]


@dataclass
class Bench:
    """What every phase shares: the base configuration, the registry, the brokers."""

    cfg0: Config
    run_id: str
    work: Path
    registry: Registry
    schools: list[str]
    brokers: dict[str, int]

    def config(self, slug: str, ladder: list[float]) -> Config:
        """A configuration of its own for one huxue phase (fresh topics, app id)."""
        cfg0, name = self.cfg0, f"bench-{self.run_id}-{slug}"
        raw = {
            "mqtt": {"url": cfg0.mqtt.url, "auth": cfg0.mqtt.auth, "ca_file": str(cfg0.mqtt_ca_file() or "")},
            "kafka": {"bootstrap": cfg0.kafka.bootstrap, "topic_prefix": f"{name}.", "partitions": cfg0.kafka.partitions},
            "registry": str(cfg0.registry_path),
            "stack": {"home": str(cfg0.home)},
            "escalation": dict(zip(("ack_seconds", "arrive_target_seconds", "arrive_limit_seconds"), ladder)),
            # the stack's bridge account (its id is its MQTT account); its session ends with the phase
            "bridge": {"client_id": cfg0.bridge_client_id, "metrics_port": 0},
            "worker": {"app_id": f"{name}-worker", "instance_id": f"{name}-worker", "metrics_port": 0},
        }
        path = self.work / f"{slug}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_config(path)


def start_huxue(b: Bench, cfg: Config, slug: str) -> dict[str, subprocess.Popen]:
    kafka_client.ensure_topics(cfg, "admin", cfg.topics.contract(), cfg.kafka.partitions)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    procs: dict[str, subprocess.Popen] = {}
    for verb, ready in (("worker", "worker ready"), ("bridge", "mqtt connected")):
        log = b.work / f"{slug}-{verb}.log"
        with open(log, "wb") as out:
            procs[verb] = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "--config", str(b.work / f"{slug}.yaml"), verb], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        _until(lambda: ready in log.read_text(errors="replace") or procs[verb].poll() is not None, 120)
        if ready not in log.read_text(errors="replace"):
            stop_huxue(procs)
            raise RuntimeError(f"{verb} did not start:\n{log.read_text(errors='replace')[-2000:]}")
    return procs


def stop_huxue(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, 15)
            p.wait(30)


class RssSampler:
    """Every `every` seconds: the resident set of each process, printed and kept (--soak)."""

    def __init__(self, phase: Phase, pids: dict[str, int], every: float):
        self.phase, self.pids, self.every = phase, pids, every
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            sample = {"t_s": round(time.monotonic() - self._t0)}
            for name, pid in self.pids.items():
                try:
                    sample[name] = round(_rss_now_mb(pid), 1)
                except OSError:
                    pass
            self.phase.rss_samples.append(sample)
            print(f"  soak {sample['t_s']:>4} s  rss MB " + "  ".join(f"{k} {v}" for k, v in sample.items() if k != "t_s"), flush=True)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)


def huxue_phase(b: Bench, name: str, slug: str, rate: float, duration: float, panics: int, drain: float = DRAIN_SECONDS, rss_every: float | None = None) -> Phase:
    """One phase through a fresh bridge + worker."""
    phase = Phase(name, rate=rate, ladder_s=[round(f * duration, 3) for f in LADDER_FRACTIONS])
    cfg = b.config(slug, phase.ladder_s)
    procs = start_huxue(b, cfg, slug)
    try:
        watch = Watch(cfg, cfg.topics.events, _tag)
        alerts = AlertWatch(cfg, cfg.topics.alerts)
        urgent = Watch(cfg, cfg.topics.urgent, _event_id)
        pub = Publisher(cfg, account="simulator")
        # each press from its button's own connection and account, as a real button
        press_pub = AsDevices(cfg, [d.id for s in b.schools[:panics] for d in b.registry.devices_of(s) if d.kind == "panic_button" and not d.external])
        wait_forwarding(pub, simulate.Simulator(b.registry, b.schools, seed=0), watch)
        usage = Usage({**b.brokers, **{k: p.pid for k, p in procs.items()}})
        sampler = RssSampler(phase, usage.pids, rss_every) if rss_every else None
        started = time.time()
        sent, presses = drive(pub, simulate.Simulator(b.registry, b.schools, seed=1), rate, duration, panics, b.schools, press_pub)
        ended = time.time()
        if sampler:
            sampler.close()
        collect(phase, sent, watch, started, ended, drain)
        if presses:
            collect_alerts(phase, presses, alerts, urgent, ended)
        usage.stop(phase)
        pub.close()
        press_pub.close()
        watch.close()
        alerts.close()
        urgent.close()
    finally:
        stop_huxue(procs)
        for client_id in (cfg.bridge_client_id, f"{cfg.bridge_client_id}-priority"):
            end_session(cfg, client_id, account=client_id)  # else it gets a copy of every later phase's traffic
        kafka_client.delete_topics(
            cfg, "admin", [*cfg.topics.contract(), cfg.topics.units, cfg.topics.ticks, *cfg.topics.changelogs]
        )
    return phase


def _sub_login(cfg: Config) -> str:
    """mosquitto_sub's options to read device events as the bridge's account does (over TLS for mqtts)."""
    out = ""
    login = mqtt_auth.login(cfg, cfg.bridge_client_id)
    if login:
        out += f" -u {shlex.quote(login.username)} -P {shlex.quote(login.password)}"
    if cfg.mqtt.tls:
        ca = cfg.mqtt_ca_file()
        out += f" --cafile {shlex.quote(str(ca))}" if ca else " --capath /etc/ssl/certs"
    return out


def baseline_phase(b: Bench, rate: float, duration: float) -> Phase:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    sub = shutil.which("mosquitto_sub")
    if not (kcat and sub):
        raise RuntimeError("baseline needs mosquitto_sub and kcat: apt-get install -y mosquitto-clients kcat")
    cfg = b.cfg0
    raw_topic = f"bench-{b.run_id}-raw"
    kafka_client.ensure_topics(cfg, "admin", [raw_topic], cfg.kafka.partitions)
    base = Phase("baseline mosquitto_sub|kcat", rate=rate)
    pipe = subprocess.Popen(
        # line-buffered like the bridge's per-message hand-off, and the bridge's linger (2 ms)
        f"stdbuf -oL '{sub}' -h {cfg.mqtt.host} -p {cfg.mqtt.port}{_sub_login(cfg)} -q 1 -i bench-raw-{b.run_id} -t 'huxue/v1/devices/+/events' "
        f"| '{kcat}' -P -q -X linger.ms=2 -X acks=all -b {cfg.kafka.bootstrap} -t {raw_topic}",
        shell=True, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        watch = Watch(cfg, raw_topic, _tag)
        pub = Publisher(cfg, account="simulator")
        wait_forwarding(pub, simulate.Simulator(b.registry, b.schools, seed=0), watch)
        usage = Usage({**b.brokers, **_children(pipe.pid)})
        started = time.time()
        sim = simulate.Simulator(b.registry, b.schools, seed=1)
        sent, _ = drive(pub, sim, rate, duration, 0, b.schools)
        # kcat 1.7.1 (librdkafka 2.0.2) holds a message read from stdin until more input
        # (or EOF) arrives: uncounted padding releases the phase's last messages.
        collect(base, sent, watch, started, time.time(), nudge=lambda: pub.publish(*sim.background(extra_attrs={"bench": "pad"})))
        usage.stop(base)
        pub.close()
        watch.close()
    finally:
        os.killpg(pipe.pid, 15)
        pipe.wait(10)
        kafka_client.delete_topics(cfg, "admin", [raw_topic])
    return base


def find_max(b: Bench, rate: float, seconds: float, steps: int) -> dict:
    """Double the rate while huxue keeps up, then bisect between the last rate that kept up
    and the first that did not; `steps` phases in all."""
    good, bad = 0.0, None
    history = []
    for n in range(steps):
        phase = huxue_phase(b, f"find-max {rate:g}/s", f"max{n}", rate, seconds, 0, drain=FIND_MAX_DRAIN_S)
        ok = phase.keeps_up()
        lag = "-" if phase.lag_s is None else f"{phase.lag_s:.2f} s"
        print(f"find-max step {n + 1}/{steps}: {rate:g} msg/s  delivered {phase.delivered}/{phase.offered}  last event lag {lag}  {'keeps up' if ok else 'falls behind'}", flush=True)
        history.append({**phase.summary(), "keeps_up": ok})
        if ok:
            good = rate
        else:
            bad = rate
        rate = rate * 2 if bad is None else round((good + bad) / 2)
    print(f"find-max: highest rate that kept up {good:g} msg/s (first that did not: {'-' if bad is None else f'{bad:g}'})", flush=True)
    return {"max_rate": good, "first_failing_rate": bad, "step_seconds": seconds, "steps": history}


def main(args) -> int:
    facts = machine()
    print(f"machine: {facts['cores']} cores ({facts['cpu'] or '?'}), {facts['date']}, kernel {facts['kernel']}, python {facts['python']}", flush=True)
    cfg0 = load_config(args.config)
    if kafka_client.secured(cfg0):
        # its phases get topics and app ids of their own (no ACLs for them), and Debian's kcat
        # 1.7.1 (the baseline) fails SCRAM against Kafka 4.x
        raise RuntimeError("huxue bench measures a PLAINTEXT Kafka: run it with kafka.security_protocol: PLAINTEXT")
    local.up(cfg0)
    run_id = uuid.uuid4().hex[:6]
    work = cfg0.home / "bench" / run_id
    work.mkdir(parents=True, exist_ok=True)
    registry = load_registry(cfg0.registry_path)
    schools = sorted(registry.schools)
    brokers = {"mosquitto": mosquitto_server.service(cfg0).pid(), "kafka": kafka_server.service(cfg0).pid()}
    b = Bench(cfg0, run_id, work, registry, schools, brokers)
    print(f"bench {run_id}: {args.rate:g} msg/s offered for {args.duration:g} s per phase, {len(schools)} schools, {args.panics} presses per huxue phase", flush=True)

    if args.soak:  # one long huxue phase: is memory bounded?
        hux = huxue_phase(b, "huxue soak", "soak", args.rate, args.duration, args.panics, rss_every=min(SOAK_SAMPLE_S, max(1.0, args.duration / 10)))
        results = [hux]
        _print(hux)
    else:
        results = [baseline_phase(b, args.rate, args.duration)]
        _print(results[-1])
        hux = huxue_phase(b, "huxue bridge+worker", "huxue", args.rate, args.duration, args.panics)
        results.append(hux)
        _print(hux)
        _print_ratio(results[0], hux)
    if args.overload:
        results.append(huxue_phase(b, f"huxue overload {2 * args.rate:g}/s", "overload", 2 * args.rate, args.duration, args.panics))
        _print(results[-1])
    report = {"run_id": run_id, "machine": facts, "rate": args.rate, "duration": args.duration, "phases": [r.summary() for r in results]}
    if args.find_max:
        report["find_max"] = find_max(b, args.rate, min(FIND_MAX_SECONDS, args.duration), args.find_max_steps)

    out_dir = Path.cwd() / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{run_id}.json"
    path.write_bytes(dumps(report))
    print(f"results: {path}", flush=True)
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


def _print_ratio(base: Phase, hux: Phase) -> None:
    b, h = base.summary(), hux.summary()
    if b["latency_ms"] and h["latency_ms"]:
        print(
            f"ratio huxue/baseline: throughput {h['throughput_per_s'] / max(b['throughput_per_s'], 1e-9):.2f}x, "
            f"p50 latency {h['latency_ms']['p50'] / max(b['latency_ms']['p50'], 0.1):.2f}x, "
            f"p99 latency {h['latency_ms']['p99'] / max(b['latency_ms']['p99'], 0.1):.2f}x",
            flush=True,
        )


def _print(phase: Phase) -> None:
    s = phase.summary()
    lat = s["latency_ms"]
    lag = "-" if phase.lag_s is None else f"{phase.lag_s:.2f}"
    print(
        f"{s['name']:<28} delivered {s['delivered']}/{s['offered']}  {s['throughput_per_s']:>8.1f} msg/s  "
        f"latency ms p50 {lat.get('p50', '-')} p95 {lat.get('p95', '-')} p99 {lat.get('p99', '-')} max {lat.get('max', '-')}  last event lag s {lag}",
        flush=True,
    )
    if phase.presses:
        pl = s["panic_to_alert_ms"]
        pu = s["panic_to_urgent_topic_ms"]
        print(
            f"{'':<28} panic press -> alert ms p50 {pl.get('p50', '-')} p99 {pl.get('p99', '-')} max {pl.get('max', '-')} ({len(phase.panic_ms)}/{phase.presses} presses; "
            f"of which press -> urgent topic p50 {pu.get('p50', '-')} p99 {pu.get('p99', '-')})",
            flush=True,
        )
        dl = s["deadline_lateness_ms"]
        ladder = "/".join(f"{x:g}" for x in phase.ladder_s)
        print(
            f"{'':<28} deadline lateness ms p50 {dl.get('p50', '-')} p99 {dl.get('p99', '-')} max {dl.get('max', '-')} "
            f"({len(phase.lateness_ms)}/{phase.stages_expected} stages, ladder {ladder} s)",
            flush=True,
        )
    print(f"{'':<28} cpu s {s['cpu_s']}  peak rss MB {s['peak_rss_mb']}", flush=True)
