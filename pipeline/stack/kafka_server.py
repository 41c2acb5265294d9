"""A single-node Apache Kafka broker in KRaft combined mode, run from Maven Central jars."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
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


def service(cfg: Config) -> Service:
    return Service("kafka", cfg.home, marker="kafka.Kafka")


def ports(cfg: Config) -> tuple[str, int, int]:
    host, _, port = cfg.kafka.bootstrap.split(",")[0].rpartition(":")
    broker = int(port)
    return host or "127.0.0.1", broker, cfg.stack.kafka_controller_port or broker + 1


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


def write_config(cfg: Config) -> Path:
    host, broker, controller = ports(cfg)
    conf_dir = cfg.home / "kafka"
    data = cfg.home / "data" / "kafka"
    conf_dir.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller}",
        "listeners": f"PLAINTEXT://{host}:{broker},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{broker}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data),
        "num.partitions": str(cfg.kafka.partitions),
        # Topics are created by huxue with the right partition count; an auto-created
        # topic would silently break co-partitioning.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
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
    path = conf_dir / "server.properties"
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


def format_storage(cfg: Config, lib: Path, server_props: Path) -> None:
    data = cfg.home / "data" / "kafka"
    marker = cfg.home / "kafka" / "scram-users"  # the data dir was formatted with the SCRAM users
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
    argfile = cfg.home / "kafka" / "format.args"
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
        text = (cfg.home / "kafka" / "server.properties").read_text()
    except OSError:
        return
    running = "SASL_PLAINTEXT" if "advertised.listeners=SASL_PLAINTEXT://" in text else "PLAINTEXT"
    if running != cfg.kafka.security_protocol:
        raise RuntimeError(
            f"the running Kafka serves {running}, the config asks for {cfg.kafka.security_protocol}: `huxue stack down` first"
        )


def start(cfg: Config, say=print) -> Service:
    svc = service(cfg)
    lib = ensure_jars(cfg, say)
    props = write_config(cfg)
    format_storage(cfg, lib, props)
    svc.start(java_argv(cfg, lib, ["kafka.Kafka", str(props)]), cwd=cfg.home)
    return svc

