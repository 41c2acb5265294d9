"""stack.kafka_brokers: the configuration of a local Kafka cluster and its generated broker configs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import kafka_client
from pipeline.config import ConfigError, load_config
from pipeline.stack import kafka_server, local


def cluster_cfg(tmp_path: Path, stack: str = "", kafka: str = "", env: dict[str, str] | None = None):
    path = tmp_path / "huxue.yaml"
    path.write_text(
        f"kafka:\n  bootstrap: 127.0.0.1:19092\n{kafka}"
        f"stack:\n  home: {tmp_path / 'home'}\n  kafka_brokers: 3\n{stack}"
    )
    return load_config(path, env=env or {})


def props_of(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 2, 4])
def test_broker_counts_without_a_majority_are_refused_with_the_reason(tmp_path, n):
    path = tmp_path / "huxue.yaml"
    path.write_text(f"stack:\n  kafka_brokers: {n}\n")
    with pytest.raises(ConfigError, match="1 or an odd number >= 3.*controller.*majority") as exc:
        load_config(path, env={})
    assert "\n" not in str(exc.value)


def test_one_broker_stays_the_default_and_is_left_as_written(tmp_path):
    path = tmp_path / "huxue.yaml"
    path.write_text("kafka:\n  bootstrap: 127.0.0.1:19092\n")
    cfg = load_config(path, env={})
    assert (cfg.stack.kafka_brokers, cfg.kafka.replication_factor, cfg.kafka.bootstrap) == (1, 1, "127.0.0.1:19092")
    assert [(n.id, n.port, n.controller, n.name) for n in kafka_server.nodes(cfg)] == [(1, 19092, 19093, "kafka")]


def test_a_cluster_bootstraps_from_every_broker_and_replicates_three_times(tmp_path):
    cfg = cluster_cfg(tmp_path)
    assert cfg.kafka.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert cfg.kafka.replication_factor == 3
    assert kafka_client.client_settings(cfg, "bridge")["bootstrap_servers"] == cfg.kafka.bootstrap
    assert kafka_client.faust_settings(cfg)["broker"] == [f"kafka://127.0.0.1:{p}" for p in (19092, 19093, 19094)]
    # HUXUE_KAFKA_BOOTSTRAP names the first broker as well
    env = cluster_cfg(tmp_path, env={"HUXUE_KAFKA_BOOTSTRAP": "127.0.0.1:29092"})
    assert env.kafka.bootstrap == "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"


def test_a_cluster_bootstrap_may_list_every_broker_but_not_others(tmp_path):
    listed = cluster_cfg(tmp_path, kafka="").kafka.bootstrap
    path = tmp_path / "listed.yaml"
    path.write_text(f"kafka:\n  bootstrap: {listed}\nstack:\n  kafka_brokers: 3\n")
    assert load_config(path, env={}).kafka.bootstrap == listed
    path.write_text("kafka:\n  bootstrap: 127.0.0.1:19092,127.0.0.1:19192\nstack:\n  kafka_brokers: 3\n")
    with pytest.raises(ConfigError, match="consecutive ports"):
        load_config(path, env={})


def test_a_cluster_takes_an_explicit_replication_factor_between_two_and_the_broker_count(tmp_path):
    assert cluster_cfg(tmp_path, kafka="  replication_factor: 2\n").kafka.replication_factor == 2
    for bad in (1, 4):
        with pytest.raises(ConfigError, match=r"replication_factor must be in \[2, 3\].*min.insync.replicas is 2"):
            cluster_cfg(tmp_path, kafka=f"  replication_factor: {bad}\n")


def test_ensure_topics_replicates_as_the_configuration_says(tmp_path, monkeypatch):
    created = []

    class FakeAdmin:
        def describe_topics(self, names):
            return [{"name": t.name, "partitions": [{}] * t.num_partitions} for t in created if t.name in names]

        def create_topics(self, topics):
            created.extend(topics)

        def close(self):
            pass

    monkeypatch.setattr(kafka_client, "admin", lambda cfg, role, timeout_ms=10000: FakeAdmin())
    kafka_client.ensure_topics(cluster_cfg(tmp_path), "admin", ["a", "b"], 3)
    assert [(t.name, t.replication_factor) for t in created] == [("a", 3), ("b", 3)]


# --- generated broker configs ------------------------------------------------------------


def test_cluster_nodes_use_consecutive_ports_and_their_own_names(tmp_path):
    cfg = cluster_cfg(tmp_path)
    assert [(n.id, n.address, n.controller, n.name) for n in kafka_server.nodes(cfg)] == [
        (1, "127.0.0.1:19092", 19095, "kafka-1"),
        (2, "127.0.0.1:19093", 19096, "kafka-2"),
        (3, "127.0.0.1:19094", 19097, "kafka-3"),
    ]
    given = cluster_cfg(tmp_path, stack="  kafka_controller_port: 18000\n")
    assert [n.controller for n in kafka_server.nodes(given)] == [18000, 18001, 18002]
    assert [s.name for s in kafka_server.services(cfg)] == ["kafka-1", "kafka-2", "kafka-3"]
    assert kafka_server.ports(cfg) == ("127.0.0.1", 19092, 19095)


def test_each_node_config_names_the_whole_quorum_and_its_own_listeners_and_data(tmp_path):
    cfg = cluster_cfg(tmp_path)
    paths = [kafka_server.write_config(cfg, node) for node in kafka_server.nodes(cfg)]
    assert [p.name for p in paths] == ["server-1.properties", "server-2.properties", "server-3.properties"]
    confs = [props_of(p) for p in paths]
    voters = "1@127.0.0.1:19095,2@127.0.0.1:19096,3@127.0.0.1:19097"
    for i, props in enumerate(confs, start=1):
        assert props["node.id"] == str(i)
        assert props["process.roles"] == "broker,controller"
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == f"PLAINTEXT://127.0.0.1:{19091 + i},CONTROLLER://127.0.0.1:{19094 + i}"
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{19091 + i}"
        assert props["log.dirs"] == str(tmp_path / "home" / "data" / f"kafka-{i}")
        assert Path(props["log.dirs"]).is_dir()
        for key, value in {
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "share.coordinator.state.topic.replication.factor": "3",
            "share.coordinator.state.topic.min.isr": "2",
        }.items():
            assert props[key] == value, key


def test_the_single_broker_config_is_unchanged(tmp_path):
    path = tmp_path / "huxue.yaml"
    path.write_text(f"kafka:\n  bootstrap: 127.0.0.1:19092\nstack:\n  home: {tmp_path / 'home'}\n")
    cfg = load_config(path, env={})
    props = props_of(kafka_server.write_config(cfg))
    assert kafka_server.config_path(cfg, kafka_server.nodes(cfg)[0]) == tmp_path / "home" / "kafka" / "server.properties"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "home" / "data" / "kafka")
    for key in ("default.replication.factor", "min.insync.replicas", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "transaction.state.log.min.isr"):
        assert props[key] == "1", key


def test_sasl_cluster_nodes_serve_sasl_on_their_own_ports(tmp_path):
    cfg = cluster_cfg(tmp_path, kafka="  security_protocol: SASL_PLAINTEXT\n")
    node = kafka_server.nodes(cfg)[1]
    props = props_of(kafka_server.write_config(cfg, node))
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19096"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19095,2@127.0.0.1:19096,3@127.0.0.1:19097"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["min.insync.replicas"] == "2"
    assert oct(kafka_server.config_path(cfg, node).stat().st_mode & 0o777) == "0o600"


def test_stack_up_refuses_nodes_of_another_layout_running_in_the_home(tmp_path):
    cfg = cluster_cfg(tmp_path)
    run = tmp_path / "home" / "run"
    run.mkdir(parents=True)
    # a process whose command line carries the marker stands in for a single broker
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", kafka_server.MARKER])
    try:
        (run / "kafka.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 5
        while kafka_server.MARKER not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [s.name for s in kafka_server.running_elsewhere(cfg)] == ["kafka"]
        with pytest.raises(RuntimeError, match=r"kafka of another stack.kafka_brokers run in .*stack down` first") as exc:
            local._start_kafka(cfg, say=lambda _: None)
        assert "\n" not in str(exc.value)
    finally:
        proc.kill()
        proc.wait()


# --- stack status, stack up's readiness ---------------------------------------------------


def test_status_prints_the_quorum_and_the_under_replicated_partitions(tmp_path, monkeypatch, capsys):
    from pipeline import cli

    state = {
        "leader": 1, "epoch": 2, "voters": [1, 2, 3], "silent": [2],
        "topics": {"huxue.events": (3, "2"), "__consumer_offsets": (3, "2")}, "partitions": 9,
        "under_replicated": [("huxue.events", i, [1, 2, 3], [1, 3]) for i in range(12)],
    }
    monkeypatch.setattr(local, "cluster", lambda cfg: state)
    cli._print_cluster(cluster_cfg(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["quorum", "leader=1", "voters=1,2,3", "epoch=2;", "not", "fetching:", "2"]
    assert lines[1].split()[:2] == ["replicas", "degraded"] and lines[1].endswith("(RF 3, min ISR 2); under-replicated: 12")
    assert lines[2].split() == ["huxue.events[0]", "in", "sync", "1,3", "of", "1,2,3"]
    assert len(lines) == 13 and lines[-1].split() == ["...", "and", "2", "more"]


def test_fenced_brokers_are_not_counted_as_ready(tmp_path, monkeypatch):
    class FakeAdmin:
        def describe_cluster(self):
            return {"brokers": [{"broker_id": 1, "is_fenced": False}, {"broker_id": 2, "is_fenced": True}, {"broker_id": 3}]}

        def close(self):
            pass

    monkeypatch.setattr(kafka_client, "admin", lambda cfg, role, timeout_ms=10000: FakeAdmin())
    assert kafka_client.broker_count(cluster_cfg(tmp_path), "admin") == 2
