"""Apache Kafka in KRaft combined mode (each node broker and controller), run from Maven
Central jars: one node, or a loopback cluster of stack.kafka_brokers nodes.

Cluster layout (N nodes, base = the port of kafka.bootstrap, c = stack.kafka_controller_port
or base + N): node i (1..N) serves clients on base + i - 1 and the quorum on c + i - 1, has
its config in kafka/server-<i>.properties, its data in data/kafka-<i> and its log in
logs/kafka-<i>.log. One node keeps the single-broker names (kafka/server.properties,
data/kafka, logs/kafka.log). All nodes share one cluster id and a static quorum
(controller.quorum.voters lists every node).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.credentials import write_private
from pipeline.stack import kafka_auth
from pipeline.stack.process import Service

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"

LOG4J2 = """\
# Kafka broker logging (log4j2); huxue redirects stdout to $HUXUE_HOME/logs/kafka.log
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel$
logger.channel.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.partition.name = kafka.cluster.Partition
logger.partition.level = WARN
logger.replica.name = kafka.server.ReplicaFetcherManager
logger.replica.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.coordinator.name = org.apache.kafka.coordinator
logger.coordinator.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage
logger.storage.level = WARN
"""


MARKER = "kafka.Kafka"  # in every node's command line (Service.marker)


@dataclass(frozen=True)
class Node:
    """One KRaft node of the local stack: a broker and a controller in one JVM."""

    id: int
    host: str
    port: int  # client listener (the broker)
    controller: int  # controller listener (the quorum)
    name: str  # service name: "kafka" alone, "kafka-<id>" in a cluster

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def nodes(cfg: Config) -> list[Node]:
    n = cfg.stack.kafka_brokers
    host, _, port = cfg.kafka.bootstrap.split(",")[0].rpartition(":")
    base = int(port)
    controller = cfg.stack.kafka_controller_port or base + n
    return [
        Node(i, host or "127.0.0.1", base + i - 1, controller + i - 1, "kafka" if n == 1 else f"kafka-{i}")
        for i in range(1, n + 1)
    ]


def service(cfg: Config, node: Node | None = None) -> Service:
    """The node's service (default: the first node, the only one of a single broker)."""
    return Service((node or nodes(cfg)[0]).name, cfg.home, marker=MARKER)


def services(cfg: Config) -> list[Service]:
    return [service(cfg, node) for node in nodes(cfg)]


def running_elsewhere(cfg: Config) -> list[Service]:
    """Kafka nodes running in this HUXUE_HOME that the configuration does not name (another
    stack.kafka_brokers): their ports and quorum are not this configuration's."""
    mine = {node.name for node in nodes(cfg)}
    found = [Service(p.stem, cfg.home, marker=MARKER) for p in sorted((cfg.home / "run").glob("kafka*.pid"))]
    return [svc for svc in found if svc.name not in mine and svc.pid() is not None]


def ports(cfg: Config) -> tuple[str, int, int]:
    first = nodes(cfg)[0]
    return first.host, first.port, first.controller


def config_path(cfg: Config, node: Node) -> Path:
    return cfg.home / "kafka" / ("server.properties" if node.name == "kafka" else f"server-{node.id}.properties")


def data_dir(cfg: Config, node: Node) -> Path:
    return cfg.home / "data" / node.name


def cache_dir(cfg: Config) -> Path:
    if cfg.stack.cache_dir:
        return Path(cfg.stack.cache_dir)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huxue"


def lib_dir(cfg: Config) -> Path:
    return cache_dir(cfg) / f"kafka-{cfg.stack.kafka_version}" / "lib"


def ensure_jars(cfg: Config, say=print) -> Path:
    """Download the broker jars through deploy/kafka/pom.xml once; cached afterwards."""
    lib = lib_dir(cfg)
    if (lib / f"kafka_2.13-{cfg.stack.kafka_version}.jar").exists():
        return lib
    if not POM.exists():
        raise RuntimeError(f"{POM} not found: run huxue from a source checkout (pip install -e .) to fetch Kafka")
    if not shutil.which("mvn"):
        raise RuntimeError("Maven (mvn) is needed to fetch Kafka from Maven Central: apt-get install -y maven")
    say(f"fetching Apache Kafka {cfg.stack.kafka_version} jars from Maven Central into {lib} (once) ...")
    partial = lib.with_name("lib.partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        "mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
        f"-Dkafka.version={cfg.stack.kafka_version}", "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Maven could not fetch Kafka ({' '.join(cmd)}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)
    return lib


def replication(brokers: int) -> tuple[int, int]:
    """(replicas, min in-sync replicas) of every topic: 3 and 2 on a cluster, so an
    acknowledged write is on two brokers and one broker may die without stopping writes."""
    return (1, 1) if brokers == 1 else (3, 2)


def properties(cfg: Config, node: Node) -> dict[str, str]:
    """server.properties of one node."""
    every = nodes(cfg)
    host, broker, controller = node.host, node.port, node.controller
    rf, isr = (str(v) for v in replication(len(every)))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.id),
        "controller.quorum.voters": ",".join(f"{n.id}@{n.host}:{n.controller}" for n in every),
        "listeners": f"PLAINTEXT://{host}:{broker},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{broker}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data_dir(cfg, node)),
        "num.partitions": str(cfg.kafka.partitions),
        # Topics are created by huxue with the right partition count; an auto-created
        # topic would silently break co-partitioning.
        "auto.create.topics.enable": "false",
        # internal topics (consumer offsets, transactions) replicated as huxue's own
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": "33554432",
        "log.segment.bytes": "16777216",
    }
    if kafka_auth.enabled(cfg):
        kafka_auth.check_supported(cfg)
        props.update(kafka_auth.server_properties(cfg, host, broker, controller))
    return props


def write_config(cfg: Config, node: Node | None = None) -> Path:
    node = node or nodes(cfg)[0]
    conf_dir = cfg.home / "kafka"
    conf_dir.mkdir(parents=True, exist_ok=True)
    data_dir(cfg, node).mkdir(parents=True, exist_ok=True)
    props = properties(cfg, node)
    path = config_path(cfg, node)
    # 0600: with SASL it holds the admin password
    write_private(path, "".join(f"{k}={v}\n" for k, v in props.items()).encode())
    (conf_dir / "log4j2.properties").write_text(LOG4J2)
    return path


def cluster_id(cfg: Config) -> str:
    """Stable per HUXUE_HOME (it is written into the formatted data dir). Base64url: it may
    start with "-", so it is passed as `--cluster-id=<id>`, never as a separate argument."""
    path = cfg.home / "kafka" / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cid + "\n")
    return cid


def java_argv(cfg: Config, lib: Path, main: list[str]) -> list[str]:
    log_conf = cfg.home / "kafka" / "log4j2.properties"
    return [
        shutil.which("java") or "java",
        *cfg.stack.kafka_heap.split(),
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_conf}",
        "-cp", f"{lib}/*",
        *main,
    ]


def format_storage(cfg: Config, lib: Path, server_props: Path, node: Node | None = None) -> None:
    node = node or nodes(cfg)[0]
    data = data_dir(cfg, node)
    # the data dir was formatted with the SCRAM users
    marker = cfg.home / "kafka" / ("scram-users" if node.name == "kafka" else f"scram-users-{node.id}")
    formatted = (data / "meta.properties").exists()
    sasl = kafka_auth.enabled(cfg)
    if sasl and formatted and not marker.exists():
        raise RuntimeError(
            f"the Kafka data in {data} was formatted without SASL accounts: `huxue stack down`, delete it "
            "(or use a new HUXUE_HOME) and `huxue stack up` again"
        )
    scram = kafka_auth.format_args(cfg) if sasl and not formatted else []
    args = ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id(cfg)}", "-c", str(server_props), "--ignore-formatted", *scram]
    # The passwords go in a 0600 argument file that the java launcher expands, not on the
    # command line, where `ps` would show them to every local user.
    argfile = cfg.home / "kafka" / f"format-{node.name}.args"
    quoted = (a.replace("\\", "\\\\").replace('"', '\\"') for a in args)  # the launcher's quoting rules
    write_private(argfile, "".join(f'"{a}"\n' for a in quoted).encode())
    try:
        result = subprocess.run(java_argv(cfg, lib, [f"@{argfile}"]), capture_output=True, text=True)
    finally:
        argfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    if scram:
        marker.write_text("admin and the component accounts were added by StorageTool --add-scram\n")


def check_running_protocol(cfg: Config) -> None:
    """A running broker keeps the listener it started with: changing kafka.security_protocol needs a restart."""
    try:
        text = config_path(cfg, nodes(cfg)[0]).read_text()
    except OSError:
        return
    running = "SASL_PLAINTEXT" if "advertised.listeners=SASL_PLAINTEXT://" in text else "PLAINTEXT"
    if running != cfg.kafka.security_protocol:
        raise RuntimeError(
            f"the running Kafka serves {running}, the config asks for {cfg.kafka.security_protocol}: `huxue stack down` first"
        )


def start(cfg: Config, say=print, only: list[Node] | None = None) -> list[Service]:
    """Start the nodes `only` (default: every node not running). All are formatted first and
    then started together: a lone controller waits for a majority of the quorum."""
    todo = [node for node in (only if only is not None else nodes(cfg)) if service(cfg, node).pid() is None]
    if not todo:
        return []
    lib = ensure_jars(cfg, say)
    props = {}
    for node in todo:
        props[node] = write_config(cfg, node)
        format_storage(cfg, lib, props[node], node)
    for node in todo:
        service(cfg, node).start(java_argv(cfg, lib, ["kafka.Kafka", str(props[node])]), cwd=cfg.home)
    return [service(cfg, node) for node in todo]

