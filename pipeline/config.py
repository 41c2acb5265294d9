"""Typed configuration: one YAML file, every key defaulted, loaded and validated once.

Environment overrides (contract): HUXUE_MQTT_URL, HUXUE_KAFKA_BOOTSTRAP; HUXUE_HOME for
local state of `huxue stack`. Unknown keys are errors, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.records import SEVERITIES
from pipeline.rules.settings import RulesConfig


INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")
SHARE_GROUP = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # an MQTT share name: one topic level, no wildcards


class ConfigError(ValueError):
    """The configuration file is invalid; the message says where and why."""


@dataclass(frozen=True)
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"
    keepalive_seconds: int = 30
    # How long the broker keeps a disconnected bridge's session (and queues its messages).
    session_expiry_seconds: int = 7 * 24 * 3600
    # Accounts: `huxue stack up` runs Mosquitto with a password file and an ACL generated
    # from the registry (each device publishes only as itself), and huxue's own clients
    # read their passwords from HUXUE_HOME. false: anonymous clients (tests, trusted labs).
    # Credentials in the URL (mqtt://user:pass@host) win over HUXUE_HOME's.
    auth: bool = True
    # The simulator, demo and probe accounts (each may publish as any device): for
    # development and tests. Turn off in production so that only devices speak for themselves.
    tool_accounts: bool = True
    # CA certificate(s) for mqtts:// (relative to the config file). Default: the CA that
    # `huxue stack up` generated in HUXUE_HOME/tls, if any, else the system's CAs.
    ca_file: str = ""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def username(self) -> str | None:
        return urlsplit(self.url).username

    @property
    def password(self) -> str | None:
        return urlsplit(self.url).password


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "huxue."
    # Every co-partitioned topic (events, commands, alerts, ticks) has this many
    # partitions; changing it later splits per-school state. Pick the most workers
    # you will ever run.
    partitions: int = 6
    # Replicas of every topic huxue creates; not given: 1, or 3 with stack.kafka_brokers >= 3.
    replication_factor: int = 1
    # Client security: PLAINTEXT (no authentication), SASL_PLAINTEXT or SASL_SSL (SCRAM).
    # With SASL and no username, each component uses the account `huxue stack up`
    # generated for it (huxue-bridge, huxue-worker, huxue-operator, admin), its password
    # from HUXUE_HOME/secrets/kafka.json. With a username, every component uses that
    # account and its password from the variable password_env or the file password_file
    # (relative to the config file), never from this file.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    ca_file: str = ""  # SASL_SSL: CA bundle (relative to the config file); default: the system's CAs


@dataclass(frozen=True)
class EscalationConfig:
    ack_seconds: float = 60
    arrive_target_seconds: float = 180
    arrive_limit_seconds: float = 300


@dataclass(frozen=True)
class UnitSpeeds:
    """Average urban speed of each unit profile (records.UNIT_PROFILES), km/h, door to door:
    a Chinese city's daytime traffic, with lights for the car, filtering for the motorbike."""

    car: float = 40
    motorbike: float = 35
    foot: float = 5


@dataclass(frozen=True)
class UnitTurnout:
    """Seconds from the dispatch to a unit of each profile moving (getting in, starting up),
    added to every ETA; 0 until the bureau has measured its own."""

    car: float = 0
    motorbike: float = 0
    foot: float = 0


@dataclass(frozen=True)
class UnitsConfig:
    """Mobile units (issue 13): ETAs to schools, nearest units on a panic, coverage gaps.

    ETA = road metres / the profile's speed; road metres = great-circle metres x road_factor
    (a school's own `road_factor` in the registry wins), or a school's `road_table` entry
    when the unit is within road_table_radius_m of one of its places (rules/units.py)."""

    road_factor: float = 1.4  # road distance / straight-line distance, typical of a city grid
    speeds_kmh: UnitSpeeds = field(default_factory=UnitSpeeds)
    # A unit with no position report for this long has an unknown position: never listed,
    # never counted as coverage (units report every 5-30 s).
    stale_after_seconds: float = 120
    max_nearest: int = 3  # units listed with a panic
    # Nearest units and coverage count only units whose registry area lists the school;
    # false: any available unit (its area only breaks ties and is flagged).
    area_only: bool = False
    road_table_radius_m: float = 300  # a unit this close to a road_table place uses its metres
    turnout_seconds: UnitTurnout = field(default_factory=UnitTurnout)
    # A position reported with an accuracy worse than this (metres) is no fix: the unit counts
    # as unlocated, like a receiver's (0, 0) "no fix" (GPS dongles send it before the first fix).
    max_accuracy_m: float = 500

    def speed_kmh(self, profile: str) -> float:
        return float(getattr(self.speeds_kmh, profile))

    def turnout(self, profile: str) -> float:
        return float(getattr(self.turnout_seconds, profile))


@dataclass(frozen=True)
class BridgeConfig:
    client_id: str = ""  # default: huxue-bridge-<hostname>; must be stable and unique per replica
    # MQTT 5 Receive Maximum: the broker sends at most this many unacknowledged messages.
    max_inflight: int = 1000
    # Hard local cap: above it the bridge disconnects and drains (the broker keeps the rest).
    max_inflight_hard: int = 4000
    max_payload_bytes: int = 64 * 1024
    # Device clocks are not trusted beyond this: an event claiming to be older than this
    # (or from the future) is re-timed to its arrival for deadline purposes.
    max_clock_skew_seconds: float = 600
    metrics_port: int = 9401  # Prometheus /metrics; 0: off
    metrics_bind: str = "127.0.0.1"  # 0.0.0.0 where Prometheus or a kubelet probe reaches it
    # Shape limits of an event's attrs / media (and each of their strings); beyond them
    # the message goes to the DLQ (too_deep, too_many_items, string_too_long).
    max_attr_depth: int = 16
    max_attr_items: int = 1000
    max_string_chars: int = 4096
    # Per-device token bucket: excess messages go to the DLQ (rate_limited); panic
    # buttons are never limited. 0: off. The burst is large so that a device's backlog,
    # queued by the broker while the bridge was down, still passes when it arrives at once.
    device_rate_per_second: float = 20
    device_burst: int = 5000
    # A second MQTT session for the panic buttons' event topics, so a press never
    # waits behind another device's flood (client id <client_id>-priority).
    priority_lane: bool = True
    # Several bridges: MQTT 5 shared subscriptions. Set, the device subscriptions become
    # $share/<share_group>/<filter> and the broker gives each message to one of the bridges
    # (each started with its own --client-id, each its own persistent session). The
    # priority lane is never shared: every bridge forwards every press (the copies are
    # removed downstream by (device_id, event_id)), so a dead bridge delays no press.
    share_group: str = ""
    # How many bridges run: with MQTT accounts, `stack up` / `devices sync` make one for
    # each: <client_id>, <client_id>-2, ... <client_id>-N (and their -priority sessions).
    instances: int = 1


@dataclass(frozen=True)
class ConsoleConfig:
    bind: str = "127.0.0.1"
    port: int = 8080
    # history store: sqlite:///path (default: $HUXUE_HOME/history.sqlite3) or postgresql://...
    store: str = ""
    session_secret: str = ""  # default: random at each start (sessions end with a restart)
    session_hours: float = 12
    # [{username, role: guard|duty_officer|admin, school (guards), password_hash, token_sha256}]
    accounts: tuple[dict[str, str], ...] = ()
    # HTTPS without a reverse proxy: PEM certificate (chain) and key, relative to the config file
    tls_cert: str = ""
    tls_key: str = ""
    # "What to do" on an incident card, per rule (INCIDENT_RULES): each rule given here
    # replaces its default (DEFAULT_CHECKLISTS); [] shows none for that rule.
    checklists: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def checklist(self, rule: str) -> tuple[str, ...]:
        return self.checklists.get(rule, DEFAULT_CHECKLISTS.get(rule, ()))


# The `rule` of incidents the worker raises (pipeline/rules/*.py RULE/NAME; a unit test keeps
# them in step: config cannot import the rules, which import the registry, which imports this).
INCIDENT_RULES = ("panic", "corroborated", "face_watchlist", "plate_watchlist", "vehicle_loitering", "perimeter",
                  "video_behaviour", "device_health", "post_staffing", "lockdown", "flood", "paging_health", "coverage_gap")
DEFAULT_CHECKLISTS: dict[str, tuple[str, ...]] = {
    "panic": ("Call the school's guard post", "Dispatch the nearest mobile unit", "Call the police station if the threat is confirmed",
              "Inform the principal", "Keep the line open until a unit is on scene"),
    "corroborated": ("Call the school's guard post", "Check the cameras of the zone", "Dispatch the nearest mobile unit"),
    "perimeter": ("Check the cameras of the breached zone", "Send a guard to the fence line", "Call the police station if someone got in"),
    "face_watchlist": ("Check the match against the watchlist photo", "Tell the gate guards who to look for", "Call the police station for a wanted person"),
    "plate_watchlist": ("Check the plate read against the camera image", "Tell the gate guards the vehicle", "Call the police station for a wanted vehicle"),
    "video_behaviour": ("Check the cameras of the zone", "Send a guard to the zone"),
    "lockdown": ("Confirm every gate is shut", "Call the police station", "Inform the principal"),
    "paging_health": ("Phone the people the failing receiver should reach", "Check the receiver (webhook, SMS gateway, mail server)"),
    "coverage_gap": ("Move the nearest free unit towards the school", "Ask the station for a unit to cover the school's window",
                     "Tell the school's guard post that mobile support is far"),
}


@dataclass(frozen=True)
class FrigateConfig:
    enabled: bool = True
    # MQTT topic prefix of each Frigate NVR -> its base URL (for snapshot and clip links)
    instances: dict[str, str] = field(default_factory=lambda: {"frigate": ""})
    labels: tuple[str, ...] = ("person", "car", "motorcycle", "bicycle", "bus", "truck")
    # recognised face name -> watchlist category (see rules.face_watchlist.categories)
    faces: dict[str, str] = field(default_factory=dict)
    default_watchlist: str = "known"  # for recognised names not listed: recorded, no incident


@dataclass(frozen=True)
class Zigbee2MqttConfig:
    enabled: bool = True
    base_topics: tuple[str, ...] = ("zigbee2mqtt",)
    # `action` values that mean a press of a panic_button (a device may list its own)
    press_actions: tuple[str, ...] = ("emergency", "sos", "panic", "single", "double", "long")


@dataclass(frozen=True)
class AdaptersConfig:
    frigate: FrigateConfig = field(default_factory=FrigateConfig)
    zigbee2mqtt: Zigbee2MqttConfig = field(default_factory=Zigbee2MqttConfig)


@dataclass(frozen=True)
class WorkerConfig:
    app_id: str = "huxue-worker"
    tick_seconds: float = 0.25
    store: str = "memory://"
    datadir: str = ""  # default: $HUXUE_HOME/worker/<app_id>
    # Static group membership: a restarted worker with the same id takes its partitions
    # back at once instead of waiting for the session timeout. Unique per worker.
    instance_id: str = ""  # default: <app_id>-<hostname>
    # A killed worker's partitions move to the others after this; Kafka's minimum (measured
    # takeover with standbys: 5.8 s, README "Scaling out"). A restart within it keeps them.
    session_timeout_seconds: float = 6
    # Workers that keep a hot copy of each partition's tables (Faust table_standby_replicas):
    # when a worker dies its partitions move to a worker that already holds their state,
    # instead of one replaying the changelog from the start.
    standby_replicas: int = 1
    metrics_port: int = 9402  # Prometheus /metrics; 0: off
    metrics_bind: str = "127.0.0.1"  # 0.0.0.0 where Prometheus or a kubelet probe reaches it


@dataclass(frozen=True)
class StackConfig:
    home: str = ".huxue"  # also HUXUE_HOME
    kafka_version: str = "4.1.2"
    # 1: one combined broker+controller. 3 (or 5, ...): a local cluster on loopback, every
    # node broker and controller: broker i on the Kafka port + i - 1, its controller on
    # kafka_controller_port + i - 1; topics replicated 3 times, min.insync.replicas 2.
    kafka_brokers: int = 1
    kafka_controller_port: int = 0  # 0: the port after the last broker's (Kafka port + kafka_brokers)
    kafka_heap: str = "-Xms256m -Xmx512m"
    # Where downloaded broker jars are cached (shared between HUXUE_HOMEs); default
    # $XDG_CACHE_HOME/huxue or ~/.cache/huxue.
    cache_dir: str = ""
    stop_timeout_seconds: float = 30


# Receiver types `huxue notifier` delivers to, and what a route may match on.
RECEIVER_TYPES = ("webhook", "dingtalk", "wecom", "email", "sms")
WEBHOOK_FORMATS = ("huxue", "alertmanager")
ROUTE_MATCH_KEYS = ("rule", "severity", "school", "stage", "status")
NOTIFY_ROLES = ("onsite", "mobile", "command")  # as registry.NOTIFY_ROLES: an alert's `notify` list


@dataclass(frozen=True)
class ReceiverConfig:
    name: str = ""
    type: str = ""  # webhook | dingtalk | wecom | email | sms
    url: str = ""  # email: smtp://host:587 (STARTTLS unless starttls: false) or smtps://host:465
    format: str = "huxue"  # webhook body: huxue (the alert) | alertmanager (webhook v4)
    # Signing secret (webhook, sms: X-Huxue-Signature; dingtalk: 加签 SEC...; email: the SMTP
    # password of `username`): at most one of inline, an environment variable's name, or a
    # file (relative to the config file).
    secret: str = ""
    secret_env: str = ""
    secret_file: str = ""
    # email: addresses; sms: phone numbers (a generic SMS HTTP gateway, signed like a webhook)
    to: tuple[str, ...] = ()
    # email only
    from_addr: str = ""
    username: str = ""
    starttls: bool = True


@dataclass(frozen=True)
class RouteConfig:
    # rule/severity/school/stage/status -> value; all must match; empty: every alert.
    # stage also matches folded (`joined` matches `joined-3`).
    match: dict[str, str] = field(default_factory=dict)
    receivers: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotifyConfig:
    group_id: str = "huxue-notifier"
    # Static group membership (as the worker's): a restarted notifier takes its partitions
    # back at once instead of after the session timeout. Unique per notifier process.
    instance_id: str = ""  # default: <group_id>-<hostname>
    session_timeout_seconds: float = 10
    receivers: tuple[ReceiverConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()  # first match wins
    # People by role, for every school: role (onsite, mobile, command) -> receiver names. A
    # school's own `notify:` in the registry adds to these. Each stage pages the roles it
    # concerns (notify/routing.py STAGE_ROLES) among the alert's `notify` list, besides routes.
    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    retry_max_seconds: float = 300  # give up retrying one delivery after this
    retry_initial_seconds: float = 1  # backoff 1, 2, 4 ... capped at retry_cap_seconds
    retry_cap_seconds: float = 30
    timeout_seconds: float = 10  # one HTTP attempt
    max_in_flight: int = 32  # alerts being delivered at once
    # A receiver is reported failing after this many deliveries in a row failed for good,
    # or when its attempts have failed for failing_seconds without a success.
    failing_after: int = 3
    failing_seconds: float = 300
    # Alerts older than this when read (a new consumer group, a long outage) are recorded
    # as skipped, not paged. 0: page whatever the age.
    max_age_seconds: float = 3600
    metrics_port: int = 9403  # Prometheus /metrics; 0: off
    metrics_bind: str = "127.0.0.1"  # 0.0.0.0 where Prometheus or a kubelet probe reaches it


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    registry: str = "registry.yaml"
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    adapters: AdaptersConfig = field(default_factory=AdaptersConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    units: UnitsConfig = field(default_factory=UnitsConfig)
    # Directory the configuration file lives in; relative paths resolve against it.
    base_dir: str = "."

    @property
    def registry_path(self) -> Path:
        return (Path(self.base_dir) / self.registry).resolve()

    def mqtt_ca_file(self) -> Path | None:
        """The CA bundle an mqtts:// client trusts (None: the system's)."""
        if self.mqtt.ca_file:
            return (Path(self.base_dir) / self.mqtt.ca_file).resolve()
        local = self.home / "tls" / "ca.crt"
        return local if local.exists() else None

    def kafka_path(self, name: str) -> Path | None:
        """kafka.password_file or kafka.ca_file, resolved against the config file (None: unset)."""
        value = getattr(self.kafka, name)
        return (Path(self.base_dir) / value).resolve() if value else None

    def console_tls(self) -> tuple[Path, Path] | None:
        """The console's certificate and key files, when it serves HTTPS."""
        if not self.console.tls_cert:
            return None
        return (Path(self.base_dir) / self.console.tls_cert).resolve(), (Path(self.base_dir) / self.console.tls_key).resolve()

    @property
    def home(self) -> Path:
        return Path(self.stack.home).resolve()

    @property
    def bridge_client_id(self) -> str:
        return self.bridge.client_id or f"huxue-bridge-{socket.gethostname()}"

    @property
    def worker_instance_id(self) -> str:
        return self.worker.instance_id or f"{self.worker.app_id}-{socket.gethostname()}"

    @property
    def notifier_instance_id(self) -> str:
        return self.notify.instance_id or f"{self.notify.group_id}-{socket.gethostname()}"

    @property
    def worker_datadir(self) -> Path:
        if self.worker.datadir:
            return Path(self.worker.datadir)
        # several workers on one host (each its own instance_id) must not share a data directory
        base = self.home / "worker" / self.worker.app_id
        return base / self.worker.instance_id if self.worker.instance_id else base

    @property
    def store_url(self) -> str:
        return self.console.store or f"sqlite:///{self.home / 'history.sqlite3'}"

    @property
    def topics(self) -> "Topics":
        return Topics(self.kafka.topic_prefix, self.worker.app_id)


@dataclass(frozen=True)
class Topics:
    prefix: str
    app_id: str

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def urgent(self) -> str:
        # Copies of alarm events (panic presses) for the worker's urgent lane (worker/app.py).
        return f"{self.prefix}urgent"

    @property
    def events_dlq(self) -> str:
        return f"{self.prefix}events.dlq"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def commands(self) -> str:
        return f"{self.prefix}commands"

    @property
    def commands_dlq(self) -> str:
        return f"{self.prefix}commands.dlq"

    @property
    def silences(self) -> str:
        return f"{self.prefix}silences"

    @property
    def ticks(self) -> str:
        # Internal to one worker app: its per-partition clock (see worker/app.py).
        return f"{self.app_id}-ticks"

    @property
    def changelogs(self) -> list[str]:
        # Internal to one worker app: its Faust tables' changelogs (worker/app.py TABLES).
        return [f"{self.app_id}-{table}-changelog" for table in ("schools", "memory")]

    @property
    def notifications(self) -> str:
        # `huxue notifier`: one record per delivery attempt (key school_id).
        return f"{self.prefix}notifications"

    @property
    def units(self) -> str:
        # Mobile units' last reports (issue 13): compacted, key "<unit id>/<aspect>" (position,
        # status, online); written by the bridge, read whole by every worker and the console.
        return f"{self.prefix}units"

    def deployment(self) -> list[str]:
        """What `huxue stack up` creates (and the worker ensures): the contract's topics, the
        notifier's, which the worker reads (rule paging_health) but never writes, and the
        mobile units' (compacted: `configs()`, which kafka_client.ensure_topics applies)."""
        return [*self.contract(), self.notifications, self.units]

    def configs(self) -> dict[str, dict[str, str]]:
        """Topic configs a topic must be created with, whoever creates it (ensure_topics)."""
        return {self.units: {"cleanup.policy": "compact"}}

    def contract(self) -> list[str]:
        """Topics every deployment has; `huxue stack up` creates them."""
        return [self.events, self.events_dlq, self.alerts, self.commands, self.commands_dlq, self.silences, self.urgent]


def packaged_config_path() -> Path:
    """The sample configuration shipped with the package (20 schools, default 1-3-5)."""
    return Path(str(resources.files("pipeline") / "data" / "huxue.yaml"))


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    # base_dir is derived from the file's location, never set in the file
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{where or 'top level'}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = known[name]
        path = f"{where}.{name}" if where else name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, path)
        elif name == "schools" and f.type == "dict[str, dict[str, Any]]":
            kwargs[name] = _overrides(cls, value, path)
        else:
            kwargs[name] = _coerce(value, f.type, path)
    return cls(**kwargs)


def _overrides(cls: type, value: Any, where: str) -> dict[str, dict[str, Any]]:
    """Per-school overrides of a rule block: each checked like the block itself."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of school id -> settings")
    out = {}
    for school, override in value.items():
        if isinstance(override, dict) and "schools" in override:
            raise ConfigError(f"{where}.{school}: overrides cannot nest 'schools'")
        built = _build(cls, override, f"{where}.{school}")
        out[str(school)] = {k: getattr(built, k) for k in (override or {})}
    return out


def _coerce(value: Any, declared: str, where: str) -> Any:
    """Check a value against the field's declared type (annotations are strings here)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if declared == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if declared == "tuple[str, ...]":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    if declared == "tuple[dict[str, str], ...]":
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return tuple({str(k): str(v) for k, v in item.items()} for item in value)
        raise ConfigError(f"{where}: expected a list of mappings, got {value!r}")
    if declared in _ITEMS:
        if isinstance(value, list):
            return tuple(_build(_ITEMS[declared], item, f"{where}[{i}]") for i, item in enumerate(value))
        raise ConfigError(f"{where}: expected a list of mappings, got {value!r}")
    if declared == "dict[str, str]":
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return {str(k): v for k, v in value.items()}
        raise ConfigError(f"{where}: expected a mapping of strings, got {value!r}")
    if declared == "dict[str, tuple[str, ...]]":
        if isinstance(value, dict) and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()):
            return {str(k): tuple(v) for k, v in value.items()}
        raise ConfigError(f"{where}: expected a mapping of lists of strings, got {value!r}")
    if declared in ("int", "float"):
        if not is_number or (declared == "int" and not isinstance(value, int)):
            raise ConfigError(f"{where}: expected {'an integer' if declared == 'int' else 'a number'}, got {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value!r}")
        return float(value) if declared == "float" else value
    if declared == "str" and (isinstance(value, str) or is_number):
        return str(value)
    raise ConfigError(f"{where}: expected {declared}, got {value!r}")


def with_overrides(cfg: Config, where: str, **sections: dict[str, Any]) -> Config:
    """`cfg` with some keys of some sections replaced (command-line flags such as
    `worker --instance-id`), checked like the file: `with_overrides(cfg, "--instance-id", worker={"instance_id": "w2"})`."""
    changed = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items() if values}
    cfg = dataclasses.replace(cfg, **changed)
    _validate(cfg, Path(where))
    return cfg


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load `path` (default: the packaged sample) and apply environment overrides."""
    env = dict(os.environ) if env is None else env
    cfg_path = Path(path) if path else packaged_config_path()
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {cfg_path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from exc
    try:
        cfg: Config = _build(Config, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{cfg_path}: {exc}") from exc
    cfg = dataclasses.replace(cfg, base_dir=str(cfg_path.resolve().parent))
    if env.get("HUXUE_MQTT_URL"):
        cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, url=env["HUXUE_MQTT_URL"]))
    if env.get("HUXUE_KAFKA_BOOTSTRAP"):
        cfg = dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, bootstrap=env["HUXUE_KAFKA_BOOTSTRAP"]))
    if env.get("HUXUE_HOME"):
        cfg = dataclasses.replace(cfg, stack=dataclasses.replace(cfg.stack, home=env["HUXUE_HOME"]))
    cfg = _cluster_defaults(cfg, "replication_factor" in (data.get("kafka") or {}))
    _validate(cfg, cfg_path)
    return cfg


def _cluster_defaults(cfg: Config, replication_given: bool) -> Config:
    """With a local cluster (stack.kafka_brokers > 1) clients bootstrap from every broker, so
    they survive the first one dying, and topics get 3 replicas unless
    kafka.replication_factor is given. One broker: the configuration as written."""
    n = cfg.stack.kafka_brokers
    if n <= 1:
        return cfg
    changes: dict[str, Any] = {} if replication_given else {"replication_factor": min(3, n)}
    host, _, port = cfg.kafka.bootstrap.rpartition(":")
    if "," not in cfg.kafka.bootstrap and port.isdigit():
        changes["bootstrap"] = ",".join(f"{host}:{int(port) + i}" for i in range(n))
    return dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, **changes))


def _validate(cfg: Config, where: Path) -> None:
    e = cfg.escalation
    if not 0 < e.ack_seconds <= e.arrive_target_seconds <= e.arrive_limit_seconds:
        raise ConfigError(
            f"{where}: escalation needs 0 < ack_seconds <= arrive_target_seconds <= arrive_limit_seconds, "
            f"got {e.ack_seconds}/{e.arrive_target_seconds}/{e.arrive_limit_seconds}"
        )
    if urlsplit(cfg.mqtt.url).scheme not in ("mqtt", "mqtts", "tcp"):
        raise ConfigError(f"{where}: mqtt.url must start with mqtt:// or mqtts://, got {cfg.mqtt.url!r}")
    if cfg.kafka.partitions < 1:
        raise ConfigError(f"{where}: kafka.partitions must be >= 1")
    _validate_kafka_security(cfg, where)
    _validate_cluster(cfg, where)
    if cfg.bridge.max_inflight_hard < cfg.bridge.max_inflight:
        raise ConfigError(f"{where}: bridge.max_inflight_hard must be >= bridge.max_inflight")
    _validate_bridge(cfg.bridge, where)
    if not 0 < cfg.worker.tick_seconds <= 5:
        raise ConfigError(f"{where}: worker.tick_seconds must be in (0, 5]")
    if cfg.worker.store not in ("memory://", "rocksdb://"):
        raise ConfigError(f"{where}: worker.store must be memory:// or rocksdb://, got {cfg.worker.store!r}")
    if not 0 <= cfg.worker.standby_replicas <= 3:
        raise ConfigError(f"{where}: worker.standby_replicas must be 0..3")
    if not 6 <= cfg.worker.session_timeout_seconds <= 300:  # Kafka's group.min/max.session.timeout.ms defaults
        raise ConfigError(f"{where}: worker.session_timeout_seconds must be in 6..300 (Kafka's group session timeout bounds)")
    _validate_severities(cfg.rules, f"{where}: rules")
    _validate_notify(cfg, where)
    _validate_units(cfg.units, where)
    if bool(cfg.console.tls_cert) != bool(cfg.console.tls_key):
        raise ConfigError(f"{where}: console.tls_cert and console.tls_key go together (PEM certificate and its key)")
    for path in cfg.console_tls() or ():
        if not path.is_file():
            raise ConfigError(f"{where}: console TLS file {path} not found")
    if cfg.mqtt.ca_file and not cfg.mqtt_ca_file().is_file():
        raise ConfigError(f"{where}: mqtt.ca_file {cfg.mqtt_ca_file()} not found")
    if ":" in cfg.bridge_client_id:
        raise ConfigError(f"{where}: bridge.client_id must not contain ':' (it is also the bridge's MQTT account)")
    for key, value in (("worker.instance_id", cfg.worker.instance_id), ("notify.instance_id", cfg.notify.instance_id)):
        if value and not INSTANCE_ID.fullmatch(value):  # Kafka's group.instance.id rule
            raise ConfigError(f"{where}: {key} {value!r}: use letters, digits, '.', '_' and '-' (at most 249)")
    unknown_rules = sorted(set(cfg.console.checklists) - set(INCIDENT_RULES))
    if unknown_rules:
        raise ConfigError(f"{where}: console.checklists: unknown rule(s) {', '.join(unknown_rules)}; known: {', '.join(INCIDENT_RULES)}")
    for i, account in enumerate(cfg.console.accounts):
        at = f"{where}: console.accounts[{i}]"
        unknown = set(account) - {"username", "role", "school", "password_hash", "token_sha256"}
        if unknown or not account.get("username"):
            raise ConfigError(f"{at}: needs username (and role, password_hash and/or token_sha256); unknown keys {sorted(unknown)}")
        if account.get("role") not in ("guard", "duty_officer", "admin"):
            raise ConfigError(f"{at}: role must be guard, duty_officer or admin, got {account.get('role')!r}")
        if account["role"] == "guard" and not account.get("school"):
            raise ConfigError(f"{at}: a guard account needs its school")
        if not account.get("password_hash") and not account.get("token_sha256"):
            raise ConfigError(f"{at}: needs password_hash (huxue console hash-password) or token_sha256")


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


def _validate_kafka_security(cfg: Config, where: Path) -> None:
    k = cfg.kafka
    if k.security_protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(f"{where}: kafka.security_protocol must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {k.security_protocol!r}")
    if k.sasl_mechanism not in KAFKA_SASL_MECHANISMS:
        raise ConfigError(f"{where}: kafka.sasl_mechanism must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, got {k.sasl_mechanism!r}")
    if k.security_protocol == "PLAINTEXT":
        given = [n for n in ("username", "password_env", "password_file", "ca_file") if getattr(k, n)]
        if given:
            raise ConfigError(f"{where}: kafka.{given[0]} needs kafka.security_protocol SASL_PLAINTEXT or SASL_SSL (it is PLAINTEXT)")
        return
    if k.username and bool(k.password_env) == bool(k.password_file):
        raise ConfigError(f"{where}: kafka.username needs exactly one of kafka.password_env (a variable name) or kafka.password_file (a path); a password never goes in this file")
    if not k.username and (k.password_env or k.password_file):
        raise ConfigError(f"{where}: kafka.password_env / kafka.password_file need kafka.username (without one, each component uses its account from HUXUE_HOME)")
    if k.ca_file and k.security_protocol != "SASL_SSL":
        raise ConfigError(f"{where}: kafka.ca_file needs kafka.security_protocol SASL_SSL")
    for name in ("password_file", "ca_file"):
        path = cfg.kafka_path(name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{where}: kafka.{name} {path} not found")


def _validate_cluster(cfg: Config, where: Path) -> None:
    n, k = cfg.stack.kafka_brokers, cfg.kafka
    if n != 1 and (n < 3 or n % 2 == 0):
        raise ConfigError(
            f"{where}: stack.kafka_brokers must be 1 or an odd number >= 3, got {n}: every broker is also a KRaft "
            "controller, and the quorum needs a majority; with 2 (or 4) one broker lost stops it as with 1 (or 3)"
        )
    if n == 1:
        return
    host, _, port = k.bootstrap.split(",")[0].rpartition(":")
    wanted = ",".join(f"{host}:{int(port) + i}" for i in range(n)) if port.isdigit() else ""
    if k.bootstrap != wanted:
        raise ConfigError(
            f"{where}: with stack.kafka_brokers {n}, kafka.bootstrap names the first broker (host:port) or all {n} "
            f"on consecutive ports ({wanted or 'host:port,host:port+1,...'}), got {k.bootstrap!r}"
        )
    if not 2 <= k.replication_factor <= n:
        raise ConfigError(
            f"{where}: kafka.replication_factor must be in [2, {n}] with stack.kafka_brokers {n} (default 3), "
            f"got {k.replication_factor}: min.insync.replicas is 2, a topic with fewer replicas takes no acks=all write"
        )


_ITEMS = {"tuple[ReceiverConfig, ...]": ReceiverConfig, "tuple[RouteConfig, ...]": RouteConfig}


def _validate_notify(cfg: Config, where: Path) -> None:
    n = cfg.notify
    names: set[str] = set()
    for i, r in enumerate(n.receivers):
        at = f"{where}: notify.receivers[{i}]"
        if not r.name:
            raise ConfigError(f"{at}: needs a name")
        if r.name in names:
            raise ConfigError(f"{at}: receiver name {r.name!r} is used twice")
        names.add(r.name)
        if r.type not in RECEIVER_TYPES:
            raise ConfigError(f"{at} ({r.name}): type must be one of {', '.join(RECEIVER_TYPES)}, got {r.type!r}")
        schemes = ("smtp", "smtps") if r.type == "email" else ("http", "https")
        if urlsplit(r.url).scheme not in schemes or not urlsplit(r.url).hostname:
            raise ConfigError(f"{at} ({r.name}): url must start with {' or '.join(f'{s}://' for s in schemes)}, got {r.url!r}")
        if r.type == "email" and (not r.to or not r.from_addr):
            raise ConfigError(f"{at} ({r.name}): an email receiver needs to (a list of addresses) and from_addr")
        if r.type == "sms" and not r.to:
            raise ConfigError(f"{at} ({r.name}): an sms receiver needs to (a list of phone numbers)")
        if r.type not in ("email", "sms") and r.to:
            raise ConfigError(f"{at} ({r.name}): to is for email and sms receivers")
        if r.type != "email" and (r.from_addr or r.username):
            raise ConfigError(f"{at} ({r.name}): from_addr and username are for email receivers")
        if r.format not in WEBHOOK_FORMATS or (r.type != "webhook" and r.format != "huxue"):
            raise ConfigError(f"{at} ({r.name}): format is for webhooks: one of {', '.join(WEBHOOK_FORMATS)}, got {r.format!r}")
        given = [k for k in ("secret", "secret_env", "secret_file") if getattr(r, k)]
        if len(given) > 1:
            raise ConfigError(f"{at} ({r.name}): give one of secret, secret_env, secret_file, not {' and '.join(given)}")
        if r.type == "email" and bool(given) != bool(r.username):
            raise ConfigError(f"{at} ({r.name}): an SMTP username needs its password in secret_env or secret_file (and a password needs the username)")
        if given and r.type == "wecom":
            raise ConfigError(f"{at} ({r.name}): WeCom robots are not signed (the key in the url is the secret): remove {given[0]}")
        if r.secret_file and not (Path(cfg.base_dir) / r.secret_file).resolve().is_file():
            raise ConfigError(f"{at} ({r.name}): secret_file {(Path(cfg.base_dir) / r.secret_file).resolve()} not found")
    for i, route in enumerate(n.routes):
        at = f"{where}: notify.routes[{i}]"
        bad = sorted(set(route.match) - set(ROUTE_MATCH_KEYS))
        if bad:
            raise ConfigError(f"{at}: unknown match key(s) {', '.join(bad)}; known: {', '.join(ROUTE_MATCH_KEYS)}")
        if not route.receivers:
            raise ConfigError(f"{at}: needs receivers (a list of receiver names)")
        unknown = [r for r in route.receivers if r not in names]
        if unknown:
            raise ConfigError(f"{at}: unknown receiver(s) {', '.join(unknown)}; defined: {', '.join(sorted(names)) or 'none'}")
    if n.routes and not n.receivers:
        raise ConfigError(f"{where}: notify.routes need notify.receivers")
    for role, receivers in n.roles.items():
        if role not in NOTIFY_ROLES:
            raise ConfigError(f"{where}: notify.roles: unknown role {role!r}; roles: {', '.join(NOTIFY_ROLES)}")
        unknown = [r for r in receivers if r not in names]
        if unknown:
            raise ConfigError(f"{where}: notify.roles.{role}: unknown receiver(s) {', '.join(unknown)}; defined: {', '.join(sorted(names)) or 'none'}")
    if n.max_in_flight < 1 or n.failing_after < 1:
        raise ConfigError(f"{where}: notify.max_in_flight and notify.failing_after must be >= 1")
    if not 0 < n.retry_initial_seconds <= n.retry_cap_seconds or n.timeout_seconds <= 0:
        raise ConfigError(f"{where}: notify needs 0 < retry_initial_seconds <= retry_cap_seconds and timeout_seconds > 0")
    if not n.group_id:
        raise ConfigError(f"{where}: notify.group_id must not be empty")


def _validate_units(u: UnitsConfig, where: Path) -> None:
    if not 1 <= u.road_factor <= 5:
        raise ConfigError(f"{where}: units.road_factor must be in [1, 5] (roads are never shorter than the straight line), got {u.road_factor:g}")
    for profile, kmh in dataclasses.asdict(u.speeds_kmh).items():
        if not 0 < kmh <= 200:
            raise ConfigError(f"{where}: units.speeds_kmh.{profile} must be in (0, 200] km/h, got {kmh:g}")
    for profile, seconds in dataclasses.asdict(u.turnout_seconds).items():
        if not 0 <= seconds <= 600:
            raise ConfigError(f"{where}: units.turnout_seconds.{profile} must be in [0, 600] s, got {seconds:g}")
    if u.max_accuracy_m <= 0:
        raise ConfigError(f"{where}: units.max_accuracy_m must be > 0 metres, got {u.max_accuracy_m:g}")
    if u.stale_after_seconds <= 0:
        raise ConfigError(f"{where}: units.stale_after_seconds must be > 0, got {u.stale_after_seconds:g}")
    if u.max_nearest < 1:
        raise ConfigError(f"{where}: units.max_nearest must be >= 1, got {u.max_nearest}")


def _validate_bridge(b: BridgeConfig, where: Path) -> None:
    # The canonical event wraps attrs in one more level; orjson writes at most 254.
    if not 1 <= b.max_attr_depth <= 200:
        raise ConfigError(f"{where}: bridge.max_attr_depth must be in [1, 200], got {b.max_attr_depth}")
    if b.max_attr_items < 1 or b.max_string_chars < 1:
        raise ConfigError(f"{where}: bridge.max_attr_items and bridge.max_string_chars must be >= 1")
    if b.device_rate_per_second > 0 and b.device_burst < 1:
        raise ConfigError(f"{where}: bridge.device_burst must be >= 1 when bridge.device_rate_per_second is on")
    if not 1 <= b.instances <= 64:
        raise ConfigError(f"{where}: bridge.instances must be in [1, 64], got {b.instances}")
    if b.instances > 1 and not b.share_group:
        raise ConfigError(f"{where}: bridge.instances {b.instances} needs bridge.share_group (without it every bridge reads every message)")
    if b.share_group and not SHARE_GROUP.fullmatch(b.share_group):
        raise ConfigError(f"{where}: bridge.share_group {b.share_group!r}: use letters, digits, '.', '_' and '-' (no '/', '+' or '#')")


def _validate_severities(node: Any, where: str) -> None:
    """Every severity the rules can emit must be one of CAP's four."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        path = f"{where}.{f.name}"
        if dataclasses.is_dataclass(value):
            _validate_severities(value, path)
        elif "severity" in f.name and value not in SEVERITIES:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(SEVERITIES)}")
        elif f.name in ("categories", "plates"):
            bad = {k: v for k, v in value.items() if v not in SEVERITIES}
            if bad:
                raise ConfigError(f"{path}: severities must be one of {', '.join(SEVERITIES)}: {bad}")
        elif f.name == "schools" and isinstance(value, dict):
            for school, override in value.items():
                _validate_severities(dataclasses.replace(node, schools={}, **override), f"{where}.schools.{school}")
