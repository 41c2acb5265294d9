"""`huxue demo`: the whole pipeline and a scripted panic at Zixing No.1 Middle School.

Starts the local stack (unless running), a bridge and a worker, background traffic from
20 schools and the 8 mobile units on patrol, then presses a panic button. A scripted duty
room sends the nearest unit the opened alert lists, lets the ladder escalate once,
acknowledges, reports the unit's arrival and resolves, while every alert is printed as it
arrives. Ladder timings are compressed (pipeline/data/demo.yaml: 10/20/30 s).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from importlib import resources
from pathlib import Path

from kafka import TopicPartition

from pipeline import kafka_client, simulate
from pipeline.config import Config, load_config
from pipeline.mqtt_client import Publisher
from pipeline.ops import commands
from pipeline.ops.alerts import follow, format_line
from pipeline.records import loads
from pipeline.registry import load_registry
from pipeline.stack import kafka_server, local
from pipeline.stack.process import Service

SCHOOL = "zx-01"
# stage seen -> (delay, command, who): the scripted duty room
SCRIPT = {
    "onsite_overdue": (2.0, "ack", "guard-zx01-02"),
    "mobile_late": (2.0, "arrive", "patrol-unit-7"),
    "arrived": (2.0, "resolve", "duty-officer-li"),
}
DISPATCH = (2.0, "dispatch", "duty-officer-li")  # the nearest unit, once the alert lists units
UNIT_SECONDS = 5.0  # each unit's position report
SCENARIO_MARGIN_SECONDS = 120.0  # beyond the ladder's 5-minute limit (whatever the config makes it)
CLOSING_STAGES = frozenset({"resolved", "false_alarm", "expired", "superseded"})


def demo_config_path() -> Path:
    return Path(str(resources.files("pipeline") / "data" / "demo.yaml"))


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def start_component(cfg: Config, cfg_path: Path, verb: str, ready_text: str, timeout: float = 120) -> Service:
    svc = next(c for c in local.components(cfg) if c.name == verb)
    if svc.pid() is not None:
        svc.stop(cfg.stack.stop_timeout_seconds)  # a leftover from an interrupted demo
    offset = svc.logfile.stat().st_size if svc.logfile.exists() else 0
    proc = svc.start([sys.executable, "-m", "pipeline.cli", "--config", str(cfg_path), verb])
    deadline = time.monotonic() + timeout
    while ready_text not in svc.logfile.read_bytes()[offset:].decode(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{verb} did not start; last lines of {svc.logfile}:\n{svc.log_tail()}")
        time.sleep(0.2)
    return svc


def main(config_path: str | None, exit_when_done: bool = False) -> int:
    cfg_path = Path(config_path) if config_path else demo_config_path()
    cfg = load_config(cfg_path)
    registry = load_registry(cfg.registry_path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    running = [r["service"] for r in local.status(cfg) if r["state"] == "ready"]
    we_started_stack = not {"mosquitto", *(s.name for s in kafka_server.services(cfg))} <= set(running)
    say(f"huxue demo: 1-3-5 ladder compressed to {cfg.escalation.ack_seconds:g}/{cfg.escalation.arrive_target_seconds:g}/{cfg.escalation.arrive_limit_seconds:g} s; state in {cfg.home}")
    components: list[Service] = []
    publisher = alerts = None
    try:
        local.up(cfg, say=lambda t: say("stack: " + t))
        say("starting worker and bridge ...")
        components.append(start_component(cfg, cfg_path, "worker", "worker ready"))
        components.append(start_component(cfg, cfg_path, "bridge", "mqtt connected"))
        components.append(start_component(cfg, cfg_path, "console", "recording"))
        say(f"logs: {', '.join(str(c.logfile) for c in components)}")
        users = ", ".join(a["username"] for a in cfg.console.accounts)
        say(f"CONSOLE http://{cfg.console.bind}:{cfg.console.port}/  (demo sign-in, user = password: {users})")

        close_leftovers(cfg)
        alerts = follow(cfg, cfg.topics.alerts, from_beginning=False)
        next(alerts)
        publisher = Publisher(cfg, account="demo")
        sim = simulate.Simulator(registry, sorted(registry.schools), unit_speeds=cfg.units.speeds_kmh)
        threading.Thread(target=simulate.run, args=(publisher.publish, sim, 5.0, stop, None, 60.0, UNIT_SECONDS), daemon=True, name="traffic").start()
        say(f"traffic: {len(registry.schools)} schools, {len(sim.all_devices)} devices: a heartbeat from each every 60 s, 5 other events/s; "
            f"{len(sim.patrols)} mobile units on patrol report every {UNIT_SECONDS:g} s")

        if stop.wait(3.0):
            return 130
        device, topic, payload = sim.press(SCHOOL)
        publisher.publish(topic, payload).wait_for_publish(10)
        say(f"PRESS  panic button {device.id} at {registry.school(SCHOOL).name} ({device.zone})")
        if stop.wait(2.0):
            return 130
        camera = next(d for d in registry.devices_of(SCHOOL) if d.kind == "video_analytics" and d.zone == device.zone)
        publisher.publish(*sim.event(camera, "video.fight", {"zone": camera.zone}, media={"snapshot_url": "https://nvr.local/s/fight.jpg"})).wait_for_publish(10)
        say(f"CAMERA {camera.id} sees a fight at {camera.zone}: it corroborates the press")

        done = run_script(cfg, alerts, stop, registry)
        if done and not exit_when_done:
            say("scenario complete; traffic keeps flowing. Try `huxue alerts tail --from-beginning` in another terminal. Ctrl-C stops everything.")
            stop.wait()
        return 0 if done else 1
    finally:
        stop.set()
        if publisher:
            publisher.close()
        if alerts:
            alerts.close()
        for svc in reversed(components):
            say(f"{svc.name}: {svc.stop(cfg.stack.stop_timeout_seconds)}")
        if we_started_stack:
            local.down(cfg, say=lambda t: say("stack: " + t))


def close_leftovers(cfg: Config) -> None:
    """Resolve panic incidents at the demo school that an earlier run left open: the press
    would join them instead of opening the incident the script plays."""
    last: dict[str, str] = {}
    topic = cfg.topics.alerts
    consumer = kafka_client.consumer(cfg, "operator", group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    alert = loads(r.value)
                    if isinstance(alert, dict) and alert.get("school_id") == SCHOOL and alert.get("rule") == "panic":
                        last[str(alert.get("incident_id"))] = str(alert.get("stage"))
    finally:
        consumer.close()
    for incident, stage in last.items():
        if stage not in CLOSING_STAGES:
            outcome = commands.send(cfg, commands.build("resolve", incident, "huxue-demo", note="left open by an earlier demo"), wait_s=10)
            say(f"CLEAN  {incident} was left open by an earlier run: resolve ({outcome.detail})")


def run_script(cfg: Config, alerts, stop: threading.Event, registry) -> bool:
    """Print alerts as they come and play the duty room; True once the incident is resolved."""
    incident = None
    pending: list[tuple[float, str, str, str]] = []  # (when, command, by, unit)
    opened_at = None
    seen: dict[str, float] = {}
    timeout = cfg.escalation.arrive_limit_seconds + SCENARIO_MARGIN_SECONDS
    deadline = time.monotonic() + timeout
    dispatched, on_scene = False, ""
    for alert in alerts:
        if stop.is_set() or time.monotonic() > deadline:
            if not stop.is_set():
                say(f"scenario did not complete within {timeout:g} s (see the worker log)")
            return False
        # the press's incident only (a coverage gap at the school is another incident)
        if alert is not None and alert.get("school_id") == SCHOOL and alert.get("rule") == "panic" and (incident is None or alert["incident_id"] == incident):
            if alert["stage"] == "opened":
                incident, opened_at = alert["incident_id"], time.time()
            print("       ALERT " + format_line(alert, registry), flush=True)
            seen[alert["stage"]] = time.time()
            if alert["stage"] == "arrived":
                on_scene = alert.get("unit") or ""
            if alert["stage"] in SCRIPT:
                delay, command, who = SCRIPT[alert["stage"]]
                pending.append((time.monotonic() + delay, command, who, ""))
            # every alert of the incident carries its units; they are new on these two
            nearest = (alert.get("nearest_units") or []) if alert["stage"] == "opened" or alert["stage"].startswith("units-") else []
            if nearest:
                say("UNITS  nearest: " + ", ".join(f"{u['unit_id']} ({u.get('callsign') or u['profile']}) {u['eta_s']:.0f} s" for u in nearest))
                if not dispatched and "arrived" not in seen:  # the opened alert lists them, or a units-<n> Update once the worker has them
                    dispatched = True
                    delay, command, who = DISPATCH
                    pending.append((time.monotonic() + delay, command, who, nearest[0]["unit_id"]))
            if alert["stage"] == "resolved":
                ack = seen.get("acknowledged", 0) - (opened_at or 0)
                arrive = seen.get("arrived", 0) - (opened_at or 0)
                say(f"DONE   {incident}: acknowledged after {ack:.0f} s, on scene after {arrive:.0f} s{f' ({on_scene})' if on_scene else ''}, resolved")
                return True
        for item in [p for p in pending if p[0] <= time.monotonic()]:
            pending.remove(item)
            _, command, who, unit = item
            outcome = commands.send(cfg, commands.build(command, incident, who, unit=unit), wait_s=0)
            say(f"OPERATOR {who}: {command} {incident}{' ' + unit if unit else ''} ({outcome.detail})")
    return False
