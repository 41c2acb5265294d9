"""`huxue`: one console script; each verb is a few lines calling the modules that do the work."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from pipeline import logs
from pipeline.config import ConfigError, load_config, with_overrides


LOG_LEVELS = ["debug", "info", "warning", "error"]
EXIT_UNREACHABLE = 4  # a broker is down or refuses us (2: bad input, 3: no answer in time)


def _did_you_mean(name: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_stack(args) -> int:
    from pipeline.stack import kafka_server, local

    cfg = load_config(args.config)
    if args.action == "up":
        local.up(cfg)
    elif args.action == "down":
        local.down(cfg)
    elif args.action == "fetch":
        print(kafka_server.ensure_jars(cfg))
    else:
        rows = local.status(cfg)
        for r in rows:
            pid = r["pid"] or "-"
            print(f"{r['service']:<10} {r['state']:<8} pid={pid:<8} {r['address']:<22} log={r['log']}")
        sec = local.security(cfg)
        print(f"{'security':<10} mqtt: {sec['mqtt']}; kafka: {sec['kafka']}")
        brokers = [r for r in rows if r["service"] == "mosquitto" or r["service"].startswith("kafka")]
        from pipeline import metrics

        endpoints = {
            "bridge": f"http://127.0.0.1:{cfg.bridge.metrics_port}/metrics",
            "worker": f"http://127.0.0.1:{cfg.worker.metrics_port}/metrics",
            "notifier": f"http://127.0.0.1:{cfg.notify.metrics_port}/metrics",
            "console": f"http://{cfg.console.bind}:{cfg.console.port}/metrics",
        }
        for name, url in endpoints.items():
            values = metrics.scrape(url, metrics.KEY[name])
            if values is not None:
                shown = "  ".join(f"{k.removeprefix(f'huxue_{name}_').removesuffix('_total')}={v:g}" for k, v in sorted(values.items()))
                print(f"{name:<10} metrics  {shown}   ({url})")
                if values.get("huxue_bridge_qos0_events_total"):
                    print(f"{'':<10} note     devices publish at QoS 0: those events are lost while the bridge is down (the progress log names the devices)")
        if all(r["state"] == "ready" for r in brokers):
            from pipeline import kafka_client

            try:
                # every topic `stack up` creates (the units topic compacted: a warning if not)
                kafka_client.ensure_topics(cfg, "admin", cfg.topics.deployment(), cfg.kafka.partitions, cfg.kafka.replication_factor)
                print(f"topics     ok       {', '.join(cfg.topics.deployment())} ({cfg.kafka.partitions} partitions)")
            except Exception as exc:  # noqa: BLE001 - status reports, never fails on a probe
                print(f"topics     problem  {exc}")
        if cfg.stack.kafka_brokers > 1 and any(r["state"] == "ready" for r in brokers if r["service"] != "mosquitto"):
            _print_cluster(cfg)
        return 0 if all(r["state"] == "ready" for r in brokers) else 3
    return 0


def _print_cluster(cfg) -> None:
    """`stack status` of a local cluster: the controller quorum and the under-replicated partitions."""
    from pipeline.stack import local

    try:
        c = local.cluster(cfg)
    except Exception as exc:  # noqa: BLE001 - status reports, never fails on a probe
        print(f"{'quorum':<10} problem  {type(exc).__name__}: {exc}")
        return
    silent = f"; not fetching: {','.join(map(str, c['silent']))}" if c["silent"] else ""
    print(f"{'quorum':<10} leader={c['leader']}  voters={','.join(map(str, c['voters']))}  epoch={c['epoch']}{silent}")
    kinds = sorted({f"RF {rf}, min ISR {isr}" for rf, isr in c["topics"].values()})
    under = c["under_replicated"]
    print(f"{'replicas':<10} {'ok' if not under else 'degraded':<8} {len(c['topics'])} topics, {c['partitions']} partitions ({'; '.join(kinds)}); under-replicated: {len(under)}")
    for name, part, replicas, isr in under[:10]:
        print(f"{'':<10} {'':<8} {name}[{part}] in sync {','.join(map(str, isr))} of {','.join(map(str, replicas))}")
    if len(under) > 10:
        print(f"{'':<10} {'':<8} ... and {len(under) - 10} more")


def cmd_devices(args) -> int:
    from pipeline import mqtt_auth
    from pipeline.registry import load_registry
    from pipeline.stack import mosquitto_server

    cfg = load_config(args.config)
    if not cfg.mqtt.auth:
        raise RuntimeError("mqtt.auth is false in this configuration: the broker takes anonymous clients, there are no accounts")
    registry = load_registry(cfg.registry_path)
    if args.action == "sync":
        synced = mosquitto_server.sync_accounts(cfg)
        changed = synced is not None and synced.changed
        reloaded = changed and mosquitto_server.reload(cfg, synced)
        passwd, acl = mqtt_auth.files(cfg)
        print(f"{passwd} and {acl} {'changed' if changed else 'up to date'}{'; Mosquitto reloaded' if reloaded else ''}")
        return 0
    if not args.name:
        raise RuntimeError(f"huxue devices {args.action} needs the device or account name")
    if args.action == "rotate":
        mqtt_auth.rotate(cfg, registry, args.name)
        reloaded = mosquitto_server.reload(cfg)
        print(f"{args.name}: new password issued{'; Mosquitto reloaded (other clients stay connected)' if reloaded else ' (Mosquitto is not running here: it reads the file at start)'}")
        print(f"show it with: huxue devices credentials {args.name}")
        return 0
    login = mqtt_auth.credentials_of(cfg, registry, args.name)
    if args.json:
        import orjson

        print(orjson.dumps({"username": login.username, "password": login.password}).decode())
    else:
        print(f"username: {login.username}\npassword: {login.password}")
    return 0


def cmd_bridge(args) -> int:
    from pipeline.ingest.bridge import Bridge
    from pipeline.registry import load_registry

    cfg = with_overrides(load_config(args.config), "huxue bridge", bridge=_given(args, client_id="client_id", metrics_port="metrics_port"))
    stop = _stop_on_signals()
    # non-zero when a thread the bridge needs died: the supervisor restarts it
    return Bridge(cfg, load_registry(cfg.registry_path), retire=args.retire).run(stop)


def cmd_worker(args) -> int:
    from pipeline.registry import load_registry
    from pipeline.worker import app

    cfg = with_overrides(load_config(args.config), "huxue worker", worker=_given(args, instance_id="instance_id", metrics_port="metrics_port"))
    app.run(cfg, load_registry(cfg.registry_path))
    return 0


def _given(args, **keys: str) -> dict:
    """{config key: value} of the flags given on the command line (`keys`: key -> flag dest)."""
    return {key: getattr(args, dest) for key, dest in keys.items() if getattr(args, dest) is not None}


def cmd_notifier(args) -> int:
    from pipeline.notify import service
    from pipeline.registry import load_registry

    cfg = load_config(args.config)
    stop = _stop_on_signals()
    return service.run(cfg, load_registry(cfg.registry_path), stop)


def cmd_simulate(args) -> int:
    from pipeline import simulate
    from pipeline.mqtt_client import AsDevices, Publisher
    from pipeline.registry import load_registry

    cfg = load_config(args.config)
    registry = load_registry(cfg.registry_path)
    schools = sorted(registry.schools)[: args.schools] if args.schools else sorted(registry.schools)
    sim = simulate.Simulator(registry, schools, seed=args.seed, unit_speeds=cfg.units.speeds_kmh)
    # mobile units patrol unless turned off; by default not with --rate 0 --heartbeat-seconds 0 (only the press)
    unit_seconds = args.unit_seconds if args.unit_seconds is not None else (5.0 if args.rate > 0 or args.heartbeat_seconds > 0 else 0.0)
    if args.panic:
        try:
            sim.panic_button(args.panic)
        except ValueError as exc:
            print(f"huxue: --panic: {exc}{_did_you_mean(args.panic, [*registry.schools, *registry.devices])}", file=sys.stderr)
            return 2
    steps = []
    if args.scenario:
        name, steps = simulate.load_scenario(args.scenario, registry)
        print(f"scenario: {name} ({len(steps)} steps over {steps[-1].at if steps else 0:g} s)", flush=True)
    print(
        f"simulating {len(schools)} schools, {len(sim.all_devices)} devices: heartbeat every {args.heartbeat_seconds:g} s, "
        f"{args.rate:g} other msg/s"
        + (f", {len(sim.patrols)} mobile units report every {unit_seconds:g} s" if unit_seconds > 0 and sim.patrols else "")
        + f", to {cfg.mqtt.host}:{cfg.mqtt.port}",
        flush=True,
    )
    stop = _stop_on_signals()
    pub = Publisher(cfg, account="simulator")
    # each unit through its own account, as a real unit (one URL login for all: the simulator's connection)
    units_pub = AsDevices(cfg) if sim.units and cfg.mqtt.auth and not cfg.mqtt.username else None
    units_lock = threading.Lock()  # the script and the traffic both publish: one connection per unit

    def publish(topic: str, payload: bytes, retain: bool = False):
        if units_pub is not None and sim.is_unit_topic(topic):
            with units_lock:
                return units_pub.publish(topic, payload, retain=retain)
        return pub.publish(topic, payload, retain=retain)

    threads = []
    try:
        if args.panic:
            steps.append(simulate.Step(at=args.panic_after, press=args.panic, exercise=args.exercise, say=f"panic pressed at {args.panic}"))
        if steps:
            def script() -> None:
                simulate.play(sorted(steps, key=lambda s: s.at), sim, publish, stop, say=lambda t: print(f"> {t}", flush=True))
                if args.rate == 0 and not args.heartbeat_seconds and not unit_seconds:
                    stop.set()  # nothing else to do

            threads.append(threading.Thread(target=script, daemon=True))
            threads[-1].start()
        if args.rate > 0 or args.heartbeat_seconds > 0 or unit_seconds > 0:
            n = simulate.run(publish, sim, args.rate, stop, args.duration, args.heartbeat_seconds, unit_seconds)
            print(f"published {n} background messages", flush=True)
            if unit_seconds > 0:
                for message in sim.goodbye():
                    try:
                        publish(*message).wait_for_publish(5)
                    except (RuntimeError, ValueError, OSError):  # best effort on the way out
                        pass
        else:
            for t in threads:
                t.join()
    finally:
        stop.set()
        pub.close()
        if units_pub is not None:
            units_pub.close()
    return 0


def cmd_alerts(args) -> int:
    from pipeline.ops.alerts import follow, format_line
    from pipeline.records import dumps
    from pipeline.registry import load_registry

    cfg = load_config(args.config)
    registry = load_registry(cfg.registry_path)
    stop = _stop_on_signals()
    for alert in follow(cfg, cfg.topics.alerts, from_beginning=args.from_beginning):
        if stop.is_set():
            break
        if alert is None or (args.school and alert.get("school_id") != args.school):
            continue
        print(dumps(alert).decode() if args.json else format_line(alert, registry), flush=True)
    return 0


def _send_and_report(args, cmd, target: str) -> int:
    """Send a command, say what became of it; exit 0 accepted, 1 rejected, 2 refused before
    sending (unknown school, device, zone), 3 no answer."""
    from pipeline.ops import commands
    from pipeline.registry import load_registry
    from pipeline.rules.engine import check_target

    cfg = load_config(args.config)
    wrong = check_target(cmd, cmd.school_id, load_registry(cfg.registry_path))
    if wrong is not None:
        print(f"huxue: {cmd.command} not sent: {wrong.reason_code}: {wrong.reason}", file=sys.stderr)
        return 2
    outcome = commands.send(cfg, cmd, wait_s=args.wait)
    label = {True: "accepted", False: "rejected", None: "sent"}[outcome.accepted]
    print(f"{cmd.command} {target}: {label} ({outcome.detail})")
    return {True: 0, False: 1, None: 0 if args.wait <= 0 else 3}[outcome.accepted]


def cmd_command(args) -> int:
    from pipeline.ops import commands

    name = {"false-alarm": "false_alarm"}.get(args.verb, args.verb)
    try:
        cmd = commands.build(name, args.incident, args.by, args.note, args.school, unit=getattr(args, "unit", None) or "")
    except ValueError as exc:
        print(f"huxue: {exc}", file=sys.stderr)
        return 2
    return _send_and_report(args, cmd, args.incident)


def cmd_school_command(args) -> int:
    from pipeline.ops import commands

    name = args.verb.replace("-", "_")
    fields: dict = {}
    try:
        if name == "silence":
            fields = {"reason": args.reason, "duration_seconds": commands.parse_duration(args.duration)}
            fields["scope"] = {"device": args.device} if args.device else {"zone": args.zone} if args.zone else {}
        elif name == "unsilence":
            fields = {"silence_id": args.silence_id}
        elif name == "lockdown":
            fields = {"reason": args.reason, "exercise": args.exercise}
        else:
            fields = {"note": args.note}
        cmd = commands.build_school(name, args.school, args.by, **fields)
    except ValueError as exc:
        print(f"huxue: {exc}", file=sys.stderr)
        return 2
    return _send_and_report(args, cmd, args.school)


def cmd_console(args) -> int:
    cfg = load_config(args.config)
    if args.action == "hash-password":
        import getpass

        from pipeline.ops.auth import hash_password, token_hash

        if args.token:
            print(f"token_sha256: {token_hash(args.token)}")
            return 0
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("huxue: the passwords differ", file=sys.stderr)
            return 2
        print(f"password_hash: \"{hash_password(password)}\"")
        return 0
    from pipeline.ops.store import Store

    if args.action == "rebuild":
        from pipeline.ops.recorder import rebuild

        target = args.into or cfg.store_url
        store = Store(target, cfg.bridge.max_clock_skew_seconds)
        if store.positions():
            print(f"huxue: {target} is not empty; rebuild into a new store (--into sqlite:///new.sqlite3)", file=sys.stderr)
            return 2
        n = rebuild(cfg, store)
        print(f"rebuilt {target} from the topics: {n} records applied")
        return 0
    from pipeline.ops import console
    from pipeline.registry import load_registry

    console.run(cfg, load_registry(cfg.registry_path))
    return 0


def cmd_report(args) -> int:
    from pipeline.ops import report

    return report.main(load_config(args.config), since=args.since, out=args.out, fmt=args.format)


def cmd_demo(args) -> int:
    from pipeline import demo

    return demo.main(args.config, exit_when_done=args.exit_when_done)


def cmd_bench(args) -> int:
    from pipeline import bench

    return bench.main(args)


def cmd_bench_scale(args) -> int:
    from pipeline import bench_scale

    return bench_scale.main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="huxue", description="护学 huxue: school-safety events from MQTT via Kafka to the 1-3-5 ladder")
    p.add_argument("--config", help="YAML configuration (default: the packaged sample)")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = sub.add_parser("stack", help="start/stop/inspect local Mosquitto + Kafka (no Docker)")
    s.add_argument("action", choices=["up", "down", "status", "fetch"])
    s.set_defaults(func=cmd_stack)

    s = sub.add_parser("devices", help="MQTT accounts: `devices credentials NAME`, `devices rotate NAME`, `devices sync`")
    s.add_argument("action", choices=["credentials", "rotate", "sync"])
    s.add_argument("name", nargs="?", help="a native device or mobile unit id, a third-party source (frigate, zigbee2mqtt), the bridge's id or simulator")
    s.add_argument("--json", action="store_true", help='credentials: {"username": ..., "password": ...}')
    s.set_defaults(func=cmd_devices)

    # Several bridges or workers on one host share the configuration file and differ in these.
    s = sub.add_parser("bridge", help="run the MQTT -> Kafka bridge")
    s.add_argument("--client-id", help="this bridge's MQTT client id and account (bridge.client_id)")
    s.add_argument("--metrics-port", type=int, help="its /metrics port (bridge.metrics_port; 0: off)")
    s.add_argument("--retire", action="store_true", help="scale down: forward what the broker queued for this bridge, end its sessions, exit")
    s.set_defaults(func=cmd_bridge)
    s = sub.add_parser("worker", help="run the Faust rules worker")
    s.add_argument("--instance-id", help="this worker's static group membership id (worker.instance_id)")
    s.add_argument("--metrics-port", type=int, help="its /metrics port (worker.metrics_port; 0: off)")
    s.set_defaults(func=cmd_worker)
    sub.add_parser("notifier", help="page people: deliver alerts to webhooks, DingTalk/WeCom robots, email and SMS gateways (notify: in the config)").set_defaults(func=cmd_notifier)

    s = sub.add_parser("simulate", help="publish realistic device traffic over MQTT")
    s.add_argument("--rate", type=float, default=5.0, help="events per second besides heartbeats (0: none)")
    s.add_argument("--heartbeat-seconds", type=float, default=60.0, help="each device beats this often (0: no heartbeats)")
    s.add_argument(
        "--unit-seconds", type=float, help="each mobile unit (registry units:) reports its position this often (0: no unit traffic; default 5, 0 with --rate 0 --heartbeat-seconds 0)"
    )
    s.add_argument("--scenario", metavar="FILE", help="play a scripted school day (YAML), e.g. scenarios/school-day.yaml")
    s.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C)")
    s.add_argument("--schools", type=int, default=0, help="first N schools of the registry (default: all)")
    s.add_argument("--panic", metavar="SCHOOL_OR_BUTTON", help="inject a panic press (with --rate 0 --heartbeat-seconds 0: only that)")
    s.add_argument("--panic-after", type=float, default=0.0, help="seconds before the press")
    s.add_argument("--exercise", action="store_true", help="the injected press is a drill")
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("alerts", help="alerts: `huxue alerts tail`")
    s.add_argument("action", choices=["tail"])
    s.add_argument("--json", action="store_true", help="raw alert JSON, one per line")
    s.add_argument("--from-beginning", action="store_true")
    s.add_argument("--school", help="only this school")
    s.set_defaults(func=cmd_alerts)

    verbs = (("ack", "on-site guards respond"), ("dispatch", "a mobile unit was sent (registry unit id)"), ("arrive", "mobile unit on scene"),
             ("resolve", "close the incident"), ("false-alarm", "close as false alarm"))
    for verb, text in verbs:
        s = sub.add_parser(verb, help=f"operator command: {text}")
        s.add_argument("incident")
        if verb == "dispatch":
            s.add_argument("unit", help="the mobile unit sent: its registry id (units:)")
        if verb == "arrive":
            s.add_argument("--unit", default="", help="the mobile unit on scene, a registry id (default: the unit dispatched last)")
        s.add_argument("--by", required=True, help="who (guard, officer or unit id)")
        s.add_argument("--note", default="")
        s.add_argument("--school", default="", help="school id (default: read from the incident id)")
        s.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the outcome (0: do not wait)")
        s.set_defaults(func=cmd_command)

    s = sub.add_parser("silence", help="mute a device, a zone or a school for a while (never panic buttons)")
    s.add_argument("school")
    scope = s.add_mutually_exclusive_group()
    scope.add_argument("--device", help="only this device")
    scope.add_argument("--zone", help="only this zone")
    s.add_argument("--for", dest="duration", required=True, help="how long: 90s, 30m, 2h, 1d")
    s.add_argument("--reason", required=True, help="why (mandatory, shown to everyone)")
    s.set_defaults(func=cmd_school_command)

    s = sub.add_parser("unsilence", help="end a silence early")
    s.add_argument("school")
    s.add_argument("silence_id")
    s.set_defaults(func=cmd_school_command)

    s = sub.add_parser("lockdown", help="lock a school down: low-priority incidents are held back")
    s.add_argument("school")
    s.add_argument("--reason", required=True)
    s.add_argument("--exercise", action="store_true", help="a lockdown drill")
    s.set_defaults(func=cmd_school_command)

    s = sub.add_parser("lift-lockdown", help="end a school's lockdown")
    s.add_argument("school")
    s.add_argument("--note", default="")
    s.set_defaults(func=cmd_school_command)

    for verb in ("silence", "unsilence", "lockdown", "lift-lockdown"):
        s = sub.choices[verb]
        s.add_argument("--by", required=True, help="who (operator id)")
        s.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the outcome (0: do not wait)")

    s = sub.add_parser("console", help="the duty-room web console and HTTP API (also: hash-password, rebuild)")
    s.add_argument("action", nargs="?", default="serve", choices=["serve", "hash-password", "rebuild"])
    s.add_argument("--token", help="hash-password: print the token_sha256 of this API token instead")
    s.add_argument("--into", help="rebuild: the store URL to build (default: the configured one, if empty)")
    s.set_defaults(func=cmd_console)

    s = sub.add_parser("report", help="1-3-5 response report from the incident history (HTML or PDF with charts, or JSON)")
    s.add_argument("--since", default="7d", help="period: 7d, 24h, 30m, or an RFC 3339 time")
    s.add_argument("--out", help="file to write (default: stdout for JSON, report.html / report.pdf)")
    s.add_argument("--format", choices=["html", "pdf", "json"], default="html")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("demo", help="the whole stack and a scripted panic, for a first look")
    s.add_argument("--exit-when-done", action="store_true", help="stop after the scenario instead of waiting for Ctrl-C")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("bench", help="throughput and latency through the running pipeline, with a raw-broker baseline")
    s.add_argument("--rate", type=float, default=500.0, help="messages per second offered")
    s.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    s.add_argument("--panics", type=int, default=10, help="panic presses spread over each huxue phase (the first at its start, unanswered)")
    s.add_argument("--overload", action="store_true", help="then a huxue phase at twice --rate")
    s.add_argument("--find-max", action="store_true", help="then search the highest rate huxue keeps up with (short huxue-only steps)")
    s.add_argument("--find-max-steps", type=int, default=6, help="steps of the --find-max search (doubling from --rate, then bisecting)")
    s.add_argument("--soak", action="store_true", help="instead: one huxue phase of --duration, printing each process's resident set every 30 s")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("bench-scale", help="worker start time, idle CPU and CPU per event: the 20-school sample vs a generated N-school registry (own brokers)")
    s.add_argument("--schools", type=int, default=2000, help="schools of the generated registry")
    s.add_argument("--devices-per-school", type=int, default=50)
    s.add_argument("--idle-seconds", type=float, default=30.0, help="window for the idle CPU, no traffic")
    s.add_argument("--events", type=int, default=20000, help="canonical events produced to the events topic per registry")
    s.add_argument("--rate", type=float, default=1000.0, help="events per second")
    s.add_argument("--heartbeat-share", type=float, default=0.5, help="fraction of the events that are heartbeats (the rest: the simulator's background mix)")
    s.add_argument("--drain-seconds", type=float, default=120.0, help="how long to wait after the last event for the worker to commit them all")
    s.set_defaults(func=cmd_bench_scale)
    # --config and --log-level also after the verb (`huxue lockdown zx-01 ... --config x.yaml`);
    # SUPPRESS: a verb's parser sets them only when given there.
    for verb_parser in sub.choices.values():
        verb_parser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        verb_parser.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"huxue: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"huxue: {exc}", file=sys.stderr)
        return 1
    except (ConnectionError, TimeoutError) as exc:  # MQTT broker down, or refusing us
        print(f"huxue: {exc} (is it running? `huxue stack status`)", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Exception as exc:
        kafka_errors = sys.modules.get("kafka.errors")  # loaded if a Kafka client was made
        if kafka_errors is not None and isinstance(exc, kafka_errors.KafkaError):
            print(f"huxue: Kafka: {type(exc).__name__}: {exc} (is it running? `huxue stack status`)", file=sys.stderr)
            return EXIT_UNREACHABLE
        raise


if __name__ == "__main__":
    sys.exit(main())
