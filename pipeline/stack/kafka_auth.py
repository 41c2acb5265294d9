"""SASL/SCRAM accounts and ACLs of the local Kafka (kafka.security_protocol: SASL_PLAINTEXT).

`huxue stack up` with SASL on:
- generates a password for each account into HUXUE_HOME/secrets/kafka.json (0600):
  `admin` (super user: the broker itself, the stack, tests, bench) and one account per
  component, kafka_client.ACCOUNTS (huxue-bridge, huxue-worker, huxue-operator, huxue-notifier);
- writes a broker config with a SASL_PLAINTEXT client listener (SCRAM-SHA-512), a
  controller listener with PLAIN, the StandardAuthorizer and super.users=User:admin
  (server.properties holds the admin password: 0600);
- creates the SCRAM users when it formats the data dir (StorageTool --add-scram), and on
  every `up` upserts the component accounts through the admin API (new or re-generated
  passwords reach an existing broker);
- creates the ACLs of `acl_table` (idempotent). No matching ACL = deny.
"""

from __future__ import annotations

from collections.abc import Callable

from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
    UserScramCredentialUpsertion,
)

from pipeline import kafka_client
from pipeline.config import Config
from pipeline.credentials import Store

MECHANISM = "SCRAM-SHA-512"
CLUSTER = "kafka-cluster"
ADMIN = kafka_client.ACCOUNTS["admin"]


def enabled(cfg: Config) -> bool:
    return kafka_client.secured(cfg)


def check_supported(cfg: Config) -> None:
    """The local stack serves SASL_PLAINTEXT with SCRAM-SHA-512 and its own accounts only."""
    k = cfg.kafka
    if k.security_protocol == "SASL_SSL":
        raise RuntimeError(
            "huxue stack up serves Kafka on loopback with SASL_PLAINTEXT; kafka.security_protocol SASL_SSL is for a broker run elsewhere"
        )
    if k.sasl_mechanism != MECHANISM:
        raise RuntimeError(f"huxue stack up's Kafka offers {MECHANISM} only; set kafka.sasl_mechanism: {MECHANISM}")
    if k.username:
        raise RuntimeError(
            "huxue stack up creates its own Kafka accounts (admin, huxue-bridge, huxue-worker, huxue-operator, huxue-notifier): "
            "leave kafka.username empty (a username is for a broker run elsewhere)"
        )


def accounts(cfg: Config) -> dict[str, str]:
    """Every account of the local broker with its password (generated once, kept after)."""
    names = [ADMIN, *(name for role, name in kafka_client.ACCOUNTS.items() if role != "admin")]
    return Store(cfg.home, "kafka").sync(names)[0]


def server_properties(cfg: Config, host: str, broker: int, controller: int) -> dict[str, str]:
    """The broker properties that replace the PLAINTEXT listeners."""
    pw = accounts(cfg)[ADMIN]
    return {
        "listeners": f"SASL_PLAINTEXT://{host}:{broker},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"SASL_PLAINTEXT://{host}:{broker}",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config":
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{pw}";',
        # SCRAM is not documented for the controller listener (KAFKA-15513): PLAIN, loopback only
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config":
            f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{ADMIN}" password="{pw}" user_{ADMIN}="{pw}";',
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN}",
    }


def format_args(cfg: Config) -> list[str]:
    """StorageTool arguments creating every account when the data dir is formatted."""
    args = []
    for name, pw in accounts(cfg).items():
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={pw}]"]
    return args


# --- ACLs ------------------------------------------------------------------------------

R, W, C, D, IW = "Read", "Write", "Create", "Describe", "IdempotentWrite"


def acl_table(cfg: Config) -> dict[str, list[tuple[str, str, tuple[str, ...]]]]:
    """account -> [(resource type, name, operations)]: what each component does, nothing more.

    Create: a component that finds its topics missing creates them (docker compose starts
    without `huxue stack up`); Describe: metadata and topic checks; IdempotentWrite:
    kafka-python's idempotent producer (bridge, operator commands).
    """
    t, app = cfg.topics, cfg.worker.app_id
    acc = kafka_client.ACCOUNTS
    return {
        acc["bridge"]: [
            *(("topic", name, (W, D, C)) for name in (t.events, t.urgent, t.events_dlq, t.units)),
            ("cluster", CLUSTER, (IW,)),
        ],
        acc["worker"]: [
            # inputs; events, urgent and commands also written: misplaced records are forwarded
            *(("topic", name, (R, W, D, C)) for name in (t.events, t.urgent, t.commands)),
            *(("topic", name, (W, D, C)) for name in (t.alerts, t.events_dlq, t.commands_dlq, t.silences)),
            ("topic", t.notifications, (R, D, C)),  # huxue notifier's records, for rule paging_health; never written
            # the mobile units' last reports (the bridge's), read whole; written: which units
            # are busy with an incident of its schools (key <unit>/assignment/<incident>)
            ("topic", t.units, (R, W, D, C)),
            # its own: ticks (written and read), table changelogs, Faust's leader topic
            *(("topic", name, (R, W, D, C)) for name in (t.ticks, *t.changelogs, f"{app}-__assignor-__leader")),
            ("group", app, (R, D)),  # Faust's group id is the app id
        ],
        acc["operator"]: [
            ("topic", t.commands, (W, R, D)),  # commands sent; the console's recorder reads them
            *(("topic", name, (R, D)) for name in (t.alerts, t.events, t.silences, t.commands_dlq, t.events_dlq, t.notifications, t.units)),
            ("cluster", CLUSTER, (IW,)),
        ],
        acc["notifier"]: [
            # reads alerts in its own consumer group; writes (and reads back at start) notifications
            ("topic", t.alerts, (R, D, C)),
            ("topic", t.notifications, (R, W, D, C)),
            ("group", cfg.notify.group_id, (R, D)),
            ("cluster", CLUSTER, (IW,)),
        ],
    }


_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.CLUSTER}
_OPS = {R: ACLOperation.READ, W: ACLOperation.WRITE, C: ACLOperation.CREATE, D: ACLOperation.DESCRIBE, IW: ACLOperation.IDEMPOTENT_WRITE}


def acls(cfg: Config) -> list[ACL]:
    return [
        ACL(
            principal=f"User:{user}",
            host="*",
            operation=_OPS[op],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(_TYPES[kind], name, ACLResourcePatternType.LITERAL),
        )
        for user, rows in acl_table(cfg).items()
        for kind, name, ops in rows
        for op in ops
    ]


def apply(cfg: Config, say: Callable[[str], None] = print) -> None:
    """Upsert the component accounts and create the ACLs (both idempotent), as admin."""
    a = kafka_client.admin(cfg, "admin")
    try:
        upserts = [UserScramCredentialUpsertion(name, MECHANISM, pw) for name, pw in accounts(cfg).items() if name != ADMIN]
        failed = {u: err for u, err in a.alter_user_scram_credentials(upserts).items() if err}
        if failed:
            raise RuntimeError(f"could not create Kafka SCRAM users: {failed}")
        wanted = acls(cfg)
        result = a.create_acls(wanted)
        if result["failed"]:
            raise RuntimeError(f"could not create Kafka ACLs: {result['failed'][:3]}")
    finally:
        a.close()
    say(f"kafka SASL/SCRAM: accounts {', '.join(sorted(accounts(cfg)))} (passwords in {Store(cfg.home, 'kafka').path}); {len(wanted)} ACLs")
