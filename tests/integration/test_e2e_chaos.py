"""Chaos under steady traffic: crashes and broker restarts while incidents are worked.

A background publisher sends heartbeats and video events (QoS 1, ~60 msg/s) across
several schools. Meanwhile a driver thread per school presses a panic button, waits
for the incident, and moves it with ack / arrive / resolve commands at random moments
that race the ladder (3/6/9 s), sending each command either with huxue's producer
(murmur2, like the Java client) or with `kcat -P` and its default partitioner
(librdkafka consistent_random, CRC32), which puts some schools' commands on another
partition than their events. The driver waits for each command's answer before the
next one on the same incident, so every command it sends is valid when it is sent.

Then: the worker killed (-9) five times, the bridge killed twice during 2,000 QoS 1
events, Mosquitto and Kafka restarted once each. After the pipeline has settled (all
deadlines awaited) `audit` checks what a consumer would see:

* no QoS 1 event the broker acknowledged is missing from the events topic;
* no identifier names two different alerts (every copy under one identifier is equal);
* every command's effect is visible to a consumer that de-duplicates by identifier:
  its command_id is in exactly one distinct alert identifier (the expected stage), or
  in commands-DLQ entries with one reason;
* no ladder stage is emitted after the command that settled it (its `due` is not after
  the settling command's time, the command alert's `sent`), and every stage that was
  due before it was settled is emitted, before the settling alert;
* every resolved incident ends with its Cancel (stage resolved);
* the bridge and the worker are alive.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
import yaml
from kafka.partitioner.default import murmur2

from harness import QUIET_RULES, Collector, Pipeline, kcat_command, kcat_partition, wait_for
from pipeline import kafka_client
from pipeline.config import load_config
from pipeline.mqtt_client import Publisher, wait_for_mqtt
from pipeline.records import dumps, iso_utc, loads, parse_ts
from pipeline.stack import kafka_server, mosquitto_server

pytestmark = pytest.mark.integration

SEED = 20261201
ESCALATION = (3.0, 6.0, 9.0)
PARTITIONS = 3
LADDER = ("onsite_overdue", "mobile_late", "mobile_overdue")
DEADLINE_FIELD = {"onsite_overdue": "ack_by", "mobile_late": "arrive_target_by", "mobile_overdue": "arrive_by"}
SETTLING = {"onsite_overdue": ("acknowledged", "arrived", "resolved", "false_alarm"), "mobile_late": ("arrived", "resolved", "false_alarm"), "mobile_overdue": ("arrived", "resolved", "false_alarm")}
EXPECTED_STAGE = {"ack": "acknowledged", "arrive": "arrived", "resolve": "resolved"}
PLANS = (("ack", "arrive", "resolve"), ("ack", "resolve"), ("arrive", "resolve"), ("resolve",), ("ack", "arrive", "resolve"))
EPS = 0.002  # times on the wire have milliseconds


def partition_of(key: str, partitions: int) -> int:
    """Where huxue's producers (murmur2, the Java client's default) put a key."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def schools_for_commands(n_misrouted: int, n_aligned: int) -> list[str]:
    """Schools whose kcat (CRC32) partition differs from their murmur2 one, and some where they agree."""
    mis, ok = [], []
    for i in range(1, 40):
        sid = f"t{i:02d}"
        (mis if kcat_partition(sid, PARTITIONS) != partition_of(sid, PARTITIONS) else ok).append(sid)
    return mis[:n_misrouted] + ok[:n_aligned]


class Background(threading.Thread):
    """Heartbeats and video events at ~`rate` msg/s, QoS 1, from its own MQTT client."""

    def __init__(self, p: Pipeline, schools: list[str], rate: float, rng: random.Random, tag: str):
        super().__init__(daemon=True, name=f"background-{tag}")
        self.p, self.schools, self.rate, self.rng, self.tag = p, schools, rate, rng, tag
        self.pub = Publisher(p.cfg)
        self.sent: list[tuple[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            sid = self.rng.choice(self.schools)
            n += 1
            eid = f"bg-{self.tag}-{n}"
            if n % 3:
                device, body = f"{sid}-cam-1", {"event_id": eid, "type": self.rng.choice(["video.loiter", "video.fall"]), "ts": iso_utc(time.time()), "attrs": {"zone": "yard"}}
            else:
                device, body = f"{sid}-{self.rng.choice(['btn-2', 'post-1', 'cam-1'])}", {"event_id": eid, "type": "device.heartbeat", "ts": iso_utc(time.time()), "attrs": {"battery": 80}}
            info = self.pub.publish(f"huxue/v1/devices/{device}/events", dumps(body), qos=1)
            self.sent.append((eid, info))
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))  # pacing: a steady stream across the chaos

    def acked(self) -> set[str]:
        """Events the broker acknowledged (PUBACK): these must all reach the events topic."""
        return {eid for eid, info in self.sent if pubacked(info)}

    def finish(self) -> None:
        self.stop.set()
        self.join(10)
        # let the client's in-flight messages complete (or not): only PUBACKed ones count
        try:
            wait_for(lambda: all(pubacked(info) for _, info in self.sent[-200:]), 30, "the background publisher's last PUBACKs")
        except AssertionError:
            pass
        self.pub.close()


def pubacked(info) -> bool:
    """The broker acknowledged this QoS 1 message (PUBACK).

    paho's `is_published()` raises for a message published while disconnected (rc
    NO_CONN) even when paho queued it, re-sent it after reconnecting and got its PUBACK;
    its `_published` flag is what the PUBACK sets.
    """
    return bool(getattr(info, "_published", False))


class Driver:
    """Per school: press, wait for the incident, send the plan's commands one at a time."""

    def __init__(self, p: Pipeline, schools: list[str], rng: random.Random, max_incidents: int):
        self.p, self.schools, self.rng, self.max_incidents = p, schools, rng, max_incidents
        self.pub = Publisher(p.cfg)
        self.pub_lock = threading.Lock()
        self.lock = threading.Lock()
        self.commands: list[dict[str, Any]] = []  # what was sent, and how
        self.presses: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.enough = threading.Event()  # no new incidents once set
        self.threads = [threading.Thread(target=self._run, args=(sid, random.Random(rng.random())), daemon=True, name=f"driver-{sid}") for sid in schools]

    def start(self) -> Driver:
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, end - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"driver threads still running after {timeout:g} s: {alive}"
        self.pub.close()

    def _publish(self, device: str, body: dict) -> None:
        def sent() -> bool:
            with self.pub_lock:
                info = self.pub.publish(f"huxue/v1/devices/{device}/events", dumps(body), qos=1)
            try:
                info.wait_for_publish(5)
            except (RuntimeError, ValueError):
                return False
            return info.is_published()

        wait_for(sent, 150, f"the press {body['event_id']} published", interval=1)

    def _send(self, sender: str, cmd: dict) -> None:
        def once() -> bool:
            try:
                if sender == "kcat":
                    kcat_command(self.p.cfg.kafka.bootstrap, self.p.cfg.topics.commands, cmd["school_id"], dumps(cmd))
                else:  # huxue's producer (murmur2), as `huxue ack` sends; the same command_id on a retry
                    self.p.command(cmd["command"], cmd["incident_id"], by=cmd["by"], school_id=cmd["school_id"], command_id=cmd["command_id"], at=cmd["at"])
                return True
            except Exception as exc:  # noqa: BLE001 - a broker restart; the same command_id again is idempotent
                with self.lock:
                    self.problems.append(f"send retried ({sender} {cmd['command']} {cmd['incident_id']}): {type(exc).__name__}: {str(exc)[:120]}")
                return False

        wait_for(once, 180, f"{sender} to send {cmd['command']} {cmd['incident_id']}", interval=1)

    def answer(self, cid: str) -> dict | None:
        for a in list(self.p.alerts.records):
            if a.get("command_id") == cid:
                return a
        for r in list(self.p.rejected.records):
            if (r.get("command") or {}).get("command_id") == cid:
                return r
        return None

    def _run(self, sid: str, rng: random.Random) -> None:
        n = 0
        while n < self.max_incidents and (n == 0 or not self.enough.is_set()):
            n += 1
            body = {"event_id": f"press-{sid}-{n}-{uuid.uuid4().hex[:6]}", "type": "panic.pressed", "ts": iso_utc(time.time()), "exercise": False}
            self._publish(f"{sid}-btn-1", body)
            with self.lock:
                self.presses.append({"school": sid, "event_id": body["event_id"], "at": time.time()})
            try:
                opened = wait_for(
                    lambda: next((a for a in list(self.p.alerts.records) if a["school_id"] == sid and a["stage"] == "opened" and body["event_id"] in {e.get("event_id") for e in a["evidence"]}), None),
                    180,
                    f"the press {body['event_id']} to open",
                    interval=0.2,
                )
            except AssertionError as exc:
                with self.lock:
                    self.problems.append(f"{sid}: {exc}")
                return
            plan = rng.choice(PLANS)
            with self.lock:
                self.incidents.append({"school": sid, "incident_id": opened["incident_id"], "plan": plan})
            for command in plan:
                time.sleep(rng.uniform(0, 4.5))  # pacing: commands race the 3/6/9 s deadlines
                sender = rng.choice(("huxue", "kcat"))
                cmd = {"command": command, "incident_id": opened["incident_id"], "school_id": sid, "by": f"{sender}-{sid}", "at": iso_utc(time.time()), "command_id": uuid.uuid4().hex}
                self._send(sender, cmd)
                with self.lock:
                    self.commands.append({**cmd, "sender": sender, "sent_at": time.time()})
                try:
                    got = wait_for(lambda: self.answer(cmd["command_id"]), 180, f"an answer to {sender} {command} {opened['incident_id']}", interval=0.2)
                except AssertionError as exc:
                    with self.lock:
                        self.problems.append(f"{sid}: {exc}")
                    return
                if "identifier" not in got:  # rejected: the incident cannot be moved on reliably
                    break


def ordered_alerts(p: Pipeline) -> list[dict]:
    return list(p.alerts.records)


def audit(title: str, p: Pipeline, driver: Driver, must_events: set[str], restarts: dict[str, int], inputs: dict[str, int], commands_topic: Collector) -> None:
    failures: list[str] = []
    alerts = ordered_alerts(p)
    rejected = list(p.rejected.records)

    # 1. no acknowledged QoS 1 event lost
    seen_events = {e.get("event_id") for e in list(p.events.records)}
    lost = sorted(must_events - seen_events)
    if lost:
        failures.append(f"{len(lost)} of {len(must_events)} PUBACKed QoS 1 events missing from the events topic, e.g. {lost[:5]}")

    # 2. one identifier, one alert: every copy equal
    by_id: dict[str, list[dict]] = defaultdict(list)
    first_index: dict[str, int] = {}
    for i, a in enumerate(alerts):
        by_id[a["identifier"]].append(a)
        first_index.setdefault(a["identifier"], i)
    for ident, copies in by_id.items():
        for other in copies[1:]:
            if other != copies[0]:
                diff = {k: (copies[0].get(k), other.get(k)) for k in set(copies[0]) | set(other) if copies[0].get(k) != other.get(k)}
                failures.append(f"identifier {ident} names two different alerts; differing fields: {str(diff)[:600]}")
                break
    distinct = {ident: copies[0] for ident, copies in by_id.items()}

    # 3. every command's effect, visible once to a consumer de-duplicating by identifier
    outcome_by_sender: Counter = Counter()
    for cmd in driver.commands:
        cid = cmd["command_id"]
        idents = sorted({a["identifier"] for a in alerts if a.get("command_id") == cid})
        rej = [r for r in rejected if (r.get("command") or {}).get("command_id") == cid]
        reasons = sorted({r.get("reason_code") for r in rej})
        what = f"{cmd['sender']} {cmd['command']} {cmd['incident_id']} ({cid[:8]})"
        if len(idents) == 1 and not rej:
            stage = distinct[idents[0]]["stage"]
            outcome_by_sender[(cmd["sender"], cmd["command"], stage)] += 1
            if stage != EXPECTED_STAGE[cmd["command"]]:
                failures.append(f"{what}: accepted as stage {stage}, expected {EXPECTED_STAGE[cmd['command']]}")
        elif not idents and rej and len(reasons) == 1 and reasons[0]:
            outcome_by_sender[(cmd["sender"], cmd["command"], f"rejected:{reasons[0]}")] += 1
            # the driver sends only commands that are valid when sent: a rejection is a wrong outcome
            failures.append(f"{what}: rejected {reasons[0]} ({rej[0].get('reason', '')[:100]}), {len(rej)} DLQ cop{'y' if len(rej) == 1 else 'ies'}; expected stage {EXPECTED_STAGE[cmd['command']]}")
        else:
            outcome_by_sender[(cmd["sender"], cmd["command"], "ambiguous" if idents or rej else "no effect")] += 1
            failures.append(f"{what}: effect not exactly once: alert identifiers {idents}, DLQ reasons {reasons} ({len(rej)} entries)")

    # 4. the ladder: nothing after the command that settled it, nothing missing before it
    by_incident: dict[str, list[dict]] = defaultdict(list)
    for ident, a in sorted(distinct.items(), key=lambda kv: first_index[kv[0]]):
        if a["rule"] == "panic":
            by_incident[a["incident_id"]].append(a)
    now = time.time()
    for inc, items in by_incident.items():
        stages = Counter(a["stage"] for a in items)
        twice = [s for s, n in stages.items() if n > 1]
        if twice:
            failures.append(f"{inc}: stages emitted under more than one identifier: {twice}")
        opened = next((a for a in items if a["stage"] == "opened"), None)
        if opened is None:
            failures.append(f"{inc}: no opened alert (stages {list(stages)})")
            continue
        first_of = {}
        for a in items:
            first_of.setdefault(a["stage"], a)
        for stage in LADDER:
            due = parse_ts(opened["deadlines"][DEADLINE_FIELD[stage]])
            settlers = [first_of[s] for s in SETTLING[stage] if s in first_of]
            settle = min((parse_ts(s["sent"]) for s in settlers), default=None)
            settler = min(settlers, key=lambda s: parse_ts(s["sent"])) if settlers else None
            fired = first_of.get(stage)
            if fired is not None:
                if parse_ts(fired["sent"]) + EPS < due:
                    failures.append(f"{inc}: {stage} sent {fired['sent']} before it was due {iso_utc(due)}")
                if settle is not None and due > settle + EPS:
                    failures.append(f"{inc}: {stage} (due {iso_utc(due)}, sent {fired['sent']}) emitted although {settler['stage']} settled it at {settler['sent']} ({settler.get('by')}); timeline {timeline(items)}")
                elif settler is not None and first_index[fired["identifier"]] > first_index[settler["identifier"]]:
                    failures.append(f"{inc}: {stage} (due {iso_utc(due)}) published after {settler['stage']} ({settler['sent']}), which came later; timeline {timeline(items)}")
            else:
                limit = settle if settle is not None else now
                if due < limit - EPS and (settle is not None or now > due + 30):
                    failures.append(f"{inc}: {stage} due {iso_utc(due)} never emitted (settled at {iso_utc(settle) if settle else 'never'}); timeline {timeline(items)}")

    # 5. every resolved incident ends with its Cancel
    for cmd in driver.commands:
        if cmd["command"] != "resolve":
            continue
        items = by_incident.get(cmd["incident_id"], [])
        mine = [a for a in items if a.get("command_id") == cmd["command_id"]]
        if not mine:
            failures.append(f"{cmd['incident_id']}: resolved by {cmd['sender']} but no alert answers the resolve")
            continue
        last = items[-1]
        if not (mine[0]["stage"] == "resolved" and mine[0]["msgType"] == "Cancel"):
            failures.append(f"{cmd['incident_id']}: the resolve's alert is {mine[0]['stage']}/{mine[0]['msgType']}, not resolved/Cancel")
        if last["identifier"] != mine[0]["identifier"]:
            failures.append(f"{cmd['incident_id']}: after its Cancel came {last['stage']} ({last['identifier']})")
    for inc in driver.incidents:
        if inc["plan"][-1] == "resolve" and not any(a["stage"] == "resolved" and a["msgType"] == "Cancel" for a in by_incident.get(inc["incident_id"], [])):
            failures.append(f"{inc['incident_id']} ({inc['school']}, plan {'/'.join(inc['plan'])}) never ended with a resolved Cancel")

    # 6. processes
    for proc in (p.bridge, p.worker):
        if proc.proc is None or proc.proc.poll() is not None:
            failures.append(f"{proc.name} is not running (exit {proc.proc.returncode if proc.proc else '?'}); log tail: {proc.output()[-1500:]}")
    failures += [f"driver: {x}" for x in driver.problems if not x.startswith("send retried")]

    # counts
    copies = sum(len(c) for c in by_id.values()) - len(by_id)
    senders = Counter(c["sender"] for c in driver.commands)
    misrouted = 0
    for r in list(commands_topic.raw):
        if r.key and r.partition != partition_of(r.key.decode(), PARTITIONS):
            misrouted += 1
    kcat_cids = {c["command_id"] for c in driver.commands if c["sender"] == "kcat"}
    records_of: dict[str, list] = defaultdict(list)
    for r in list(commands_topic.raw):
        records_of[_cid(r)].append(r)
    # kcat's record of each command is on the CRC32 partition (the worker may add a forwarded copy on the murmur2 one)
    kcat_parts_ok = all(any(r.partition == kcat_partition(r.key.decode(), PARTITIONS) for r in records_of[cid] if r.key) for cid in kcat_cids)
    forwarded = sum(len(v) - 1 for cid, v in records_of.items() if cid)
    print(
        f"\n[{title}] inputs {inputs} | events dlq {dict(Counter(d.get('reason_code') for d in p.dlq.records))} | alerts {len(alerts)}, "
        f"distinct identifiers {len(by_id)}, copies under one identifier {copies} (max {max((len(c) for c in by_id.values()), default=0)}) | "
        f"incidents {len(by_incident)} | commands by sender {dict(senders)}, records on a non-murmur2 partition {misrouted}, kcat placed by CRC32 {kcat_parts_ok}, extra copies on the commands topic (forwarded) {forwarded} | "
        f"outcomes {dict(sorted(outcome_by_sender.items()))} | commands dlq {dict(Counter(r.get('reason_code') for r in rejected))} | restarts {restarts} | "
        f"send retries {sum(1 for x in driver.problems if x.startswith('send retried'))}"
    )
    for f in failures[:40]:
        print(f"  FAIL {f}")
    assert not failures, f"{len(failures)} chaos violations:\n" + "\n".join(failures[:40])


def timeline(items: list[dict]) -> str:
    return ", ".join(f"{a['stage']}@{a['sent'][11:23]}" + (f"[{a['by']}]" if a.get("by") else "") for a in items)


def _cid(record) -> str:
    """The command_id of a record on the commands topic ("" if it has none)."""
    try:
        return loads(record.value).get("command_id", "")
    except Exception:  # noqa: BLE001 - not ours to judge here
        return ""


def settle(p: Pipeline, driver: Driver, must: set[str], timeout: float = 150) -> None:
    """Wait until the stream is in, every command answered and every deadline awaited."""
    p.events.wait(lambda rs: must <= {r.get("event_id") for r in rs}, timeout, "every PUBACKed event on the events topic") if must else None
    last_press = max((x["at"] for x in driver.presses), default=time.time())
    wait_for(lambda: time.time() > last_press + ESCALATION[2] + 3, ESCALATION[2] + 10, "the last ladder to run out")
    # the last incident's alerts: every open panic incident has emitted its final stage or is closed
    def done() -> bool:
        stages: dict[str, set[str]] = defaultdict(set)
        for a in list(p.alerts.records):
            if a["rule"] == "panic":
                stages[a["incident_id"]].add(a["stage"])
        return all(s & {"resolved", "false_alarm", "mobile_overdue", "arrived"} for s in stages.values())

    try:
        wait_for(done, 90, "every panic incident to finish its ladder or close", interval=0.5)
    except AssertionError:
        pass  # the audit says precisely what is missing


def stack_config(stack, workdir):
    path = workdir / "stack.yaml"
    path.write_text(yaml.safe_dump(stack))
    return load_config(path, env={})


def chaos_pipeline(stack, workdir) -> tuple[Pipeline, Collector]:
    p = Pipeline(stack, workdir, escalation=ESCALATION, partitions=PARTITIONS, rules=QUIET_RULES)
    return p, Collector(p.cfg, p.cfg.topics.commands)


def test_worker_killed_five_times_while_incidents_are_worked_with_huxue_and_kcat_commands(stack, workdir):
    rng = random.Random(SEED)
    p, commands_topic = chaos_pipeline(stack, workdir)
    restarts: dict[str, Any] = Counter()
    bg = driver = None
    try:
        p.start()
        schools = schools_for_commands(4, 2)
        bg = Background(p, schools + [f"t{i}" for i in range(41, 47)], 60, random.Random(rng.random()), "w")
        bg.start()
        driver = Driver(p, schools, random.Random(rng.random()), max_incidents=4).start()
        for _ in range(5):
            time.sleep(rng.uniform(2, 9))  # pacing: a random moment of the workload
            p.worker.kill()
            restarts["worker"] += 1
            restarts.setdefault("worker_killed_at", []).append(iso_utc(time.time())[11:23])
            time.sleep(rng.uniform(0, 2))  # pacing: commands and presses pile up while it is down
            p.start_worker()
        driver.enough.set()
        driver.join(300)
        bg.finish()
        must = bg.acked()
        settle(p, driver, must)
        audit("worker kill -9 x5", p, driver, must, dict(restarts), {"background_published": len(bg.sent), "background_acked": len(must), "presses": len(driver.presses), "commands": len(driver.commands)}, commands_topic)
    finally:
        if bg is not None and bg.is_alive():
            bg.stop.set()
        commands_topic.close()
        p.close()


def test_bridge_killed_twice_during_2000_qos1_events(stack, workdir):
    rng = random.Random(SEED + 1)
    p, commands_topic = chaos_pipeline(stack, workdir)
    restarts: dict[str, Any] = Counter()
    bg = driver = None
    try:
        p.start()
        schools = schools_for_commands(2, 1)
        bg = Background(p, schools + [f"t{i}" for i in range(47, 53)], 60, random.Random(rng.random()), "b")
        bg.start()
        driver = Driver(p, schools, random.Random(rng.random()), max_incidents=2).start()
        stream_pub = Publisher(p.cfg)
        ids = [f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(2000)]
        infos = []

        cams = [f"t{i}-cam-1" for i in range(20, 40)]  # 20 cameras: ~10 msg/s each, within the bridge's per-device rate

        def publish_all() -> None:
            for i, eid in enumerate(ids):
                infos.append(stream_pub.publish(f"huxue/v1/devices/{cams[i % len(cams)]}/events", dumps({"event_id": eid, "type": "video.loiter", "ts": iso_utc(time.time())}), qos=1))
                if i % 20 == 19:
                    time.sleep(0.1)  # pacing: ~200 msg/s, the stream spans both crashes

        t = threading.Thread(target=publish_all, daemon=True)
        t.start()
        wanted = set(ids)
        for fraction in (0.2, 0.6):
            p.events.wait(lambda rs: sum(1 for r in rs if r.get("event_id") in wanted) > len(ids) * fraction, 90, f"{fraction:.0%} of the stream forwarded")
            p.bridge.kill()
            restarts["bridge"] += 1
            restarts.setdefault("bridge_killed_at", []).append(iso_utc(time.time())[11:23])
            time.sleep(rng.uniform(0.5, 2))  # pacing: the broker queues for the stopped bridge
            p.start_bridge()
        t.join(120)
        wait_for(lambda: all(pubacked(i) for i in infos), 60, "PUBACKs of the 2,000 events")
        driver.enough.set()
        driver.join(240)
        bg.finish()
        stream_pub.close()
        must = bg.acked() | {eid for eid, info in zip(ids, infos) if pubacked(info)}
        settle(p, driver, must)
        copies = Counter(r.get("event_id") for r in p.events.records if r.get("event_id") in wanted)
        print(f"\n[bridge kill] 2,000 events: {len(copies)} distinct on the events topic, {sum(copies.values()) - len(copies)} duplicates after redelivery")
        audit("bridge kill -9 x2", p, driver, must, dict(restarts), {"burst": len(ids), "background_published": len(bg.sent), "presses": len(driver.presses), "commands": len(driver.commands)}, commands_topic)
    finally:
        if bg is not None and bg.is_alive():
            bg.stop.set()
        commands_topic.close()
        p.close()


def test_mosquitto_and_kafka_restarted_once_each_under_traffic(stack, workdir):
    rng = random.Random(SEED + 2)
    cfg = stack_config(stack, workdir)
    p, commands_topic = chaos_pipeline(stack, workdir)
    restarts: dict[str, Any] = Counter()
    bg = driver = None
    try:
        p.start()
        schools = schools_for_commands(2, 1)
        bg = Background(p, schools + [f"t{i}" for i in range(53, 59)], 60, random.Random(rng.random()), "o")
        bg.start()
        driver = Driver(p, schools, random.Random(rng.random()), max_incidents=3).start()
        time.sleep(rng.uniform(3, 6))  # pacing: the workload is under way
        broker = mosquitto_server.service(cfg)
        assert broker.stop(30) == "stopped"
        mosquitto_server.start(cfg)
        wait_for_mqtt(cfg, 30)
        restarts["mosquitto"] += 1
        restarts["mosquitto_restarted_at"] = iso_utc(time.time())[11:23]
        wait_for(lambda: p.bridge.output().count("mqtt connected") >= 2, 60, "the bridge to reconnect to Mosquitto")
        time.sleep(rng.uniform(3, 6))  # pacing: traffic flows again before the next outage
        kafka = kafka_server.service(cfg)
        assert kafka.stop(30) == "stopped"
        kafka_server.start(cfg)
        kafka_client.wait_for_kafka(cfg, "admin", 90)
        restarts["kafka"] += 1
        restarts["kafka_restarted_at"] = iso_utc(time.time())[11:23]
        driver.enough.set()
        driver.join(300)
        bg.finish()
        must = bg.acked()
        settle(p, driver, must, timeout=180)
        audit("mosquitto + kafka restart", p, driver, must, dict(restarts), {"background_published": len(bg.sent), "background_acked": len(must), "presses": len(driver.presses), "commands": len(driver.commands)}, commands_topic)
    finally:
        if bg is not None and bg.is_alive():
            bg.stop.set()
        try:
            kafka_client.wait_for_kafka(cfg, "admin", 90)
            wait_for_mqtt(cfg, 30)
        finally:
            commands_topic.close()
            p.close()
