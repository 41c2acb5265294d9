"""pipeline/kafka_client.py client settings per role, pipeline/stack/kafka_auth.py accounts and ACLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import kafka_client
from pipeline.config import load_config
from pipeline.credentials import CredentialsError
from pipeline.stack import kafka_auth


def cfg_with(tmp_path: Path, kafka: str, env: dict[str, str] | None = None):
    path = tmp_path / "huxue.yaml"
    path.write_text(f"kafka:\n  bootstrap: k1:9092,k2:9092\n{kafka}stack:\n  home: {tmp_path / 'home'}\n")
    return load_config(path, env=env or {})


def test_plaintext_is_the_bootstrap_alone(tmp_path):
    cfg = cfg_with(tmp_path, "")
    for role in kafka_client.ROLES:
        assert kafka_client.client_settings(cfg, role) == {"bootstrap_servers": "k1:9092,k2:9092"}
        assert kafka_client.faust_settings(cfg, role) == {"broker": ["kafka://k1:9092", "kafka://k2:9092"]}
    assert not (tmp_path / "home" / "secrets").exists()  # nothing generated, nothing read


def test_unknown_role_is_refused(tmp_path):
    with pytest.raises(ValueError, match="role"):
        kafka_client.client_settings(cfg_with(tmp_path, ""), "console")


def test_sasl_uses_the_account_of_each_role_from_home(tmp_path):
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_PLAINTEXT\n")
    passwords = kafka_auth.accounts(cfg)
    assert sorted(passwords) == ["admin", "huxue-bridge", "huxue-notifier", "huxue-operator", "huxue-worker"]
    assert oct((tmp_path / "home" / "secrets" / "kafka.json").stat().st_mode & 0o777) == "0o600"
    for role, user in kafka_client.ACCOUNTS.items():
        s = kafka_client.client_settings(cfg, role)
        assert s == {
            "bootstrap_servers": "k1:9092,k2:9092",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": passwords[user],
        }
    creds = kafka_client.faust_settings(cfg, "worker")["broker_credentials"]
    assert (creds.username, creds.password, creds.mechanism.value, creds.ssl_context) == ("huxue-worker", passwords["huxue-worker"], "SCRAM-SHA-512", None)
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert kafka_auth.accounts(cfg) == passwords  # kept, not regenerated


def test_sasl_without_generated_accounts_says_what_to_do(tmp_path):
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_PLAINTEXT\n")
    with pytest.raises(CredentialsError, match="huxue-bridge.*huxue stack up") as exc:
        kafka_client.client_settings(cfg, "bridge")
    assert "\n" not in str(exc.value)


def test_configured_account_with_password_from_env(tmp_path):
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_PLAINTEXT\n  username: city-huxue\n  password_env: HUXUE_TEST_KAFKA_PW\n")
    with pytest.raises(CredentialsError, match="HUXUE_TEST_KAFKA_PW"):
        kafka_client.client_settings(cfg, "worker")
    os.environ["HUXUE_TEST_KAFKA_PW"] = "from-env"
    try:
        for role in kafka_client.ROLES:
            s = kafka_client.client_settings(cfg, role)
            assert (s["sasl_plain_username"], s["sasl_plain_password"]) == ("city-huxue", "from-env")
    finally:
        del os.environ["HUXUE_TEST_KAFKA_PW"]


def test_configured_account_with_password_file_and_ca(tmp_path):
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "ca.pem").write_text("x")
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_SSL\n  username: city-huxue\n  password_file: pw\n  ca_file: ca.pem\n")
    s = kafka_client.client_settings(cfg, "operator")
    assert (s["security_protocol"], s["sasl_plain_password"], s["ssl_cafile"]) == ("SASL_SSL", "from-file", str((tmp_path / "ca.pem").resolve()))


def test_sasl_ssl_faust_credentials_carry_an_ssl_context(tmp_path):
    (tmp_path / "pw").write_text("from-file")
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_SSL\n  username: city-huxue\n  password_file: pw\n")
    creds = kafka_client.faust_settings(cfg, "worker")["broker_credentials"]
    assert creds.ssl_context is not None and creds.protocol.value == "SASL_SSL"


def test_stack_refuses_what_it_cannot_serve(tmp_path):
    (tmp_path / "pw").write_text("x")
    for kafka, message in (
        ("  security_protocol: SASL_SSL\n", "SASL_SSL"),
        ("  security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: SCRAM-SHA-256\n", "SCRAM-SHA-512"),
        ("  security_protocol: SASL_PLAINTEXT\n  username: u\n  password_file: pw\n", "leave kafka.username empty"),
    ):
        with pytest.raises(RuntimeError, match=message):
            kafka_auth.check_supported(cfg_with(tmp_path, kafka))


def test_broker_properties_lock_the_listener(tmp_path):
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_PLAINTEXT\n")
    props = kafka_auth.server_properties(cfg, "127.0.0.1", 9092, 9093)
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["super.users"] == "User:admin"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert kafka_auth.accounts(cfg)["admin"] in props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    args = kafka_auth.format_args(cfg)
    assert args.count("--add-scram") == 5 and any(a.startswith("SCRAM-SHA-512=[name=huxue-bridge,password=") for a in args)


def test_acl_table_grants_each_component_what_it_does(tmp_path):
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_PLAINTEXT\n  topic_prefix: 'c.'\nworker:\n  app_id: w\n")
    table = kafka_auth.acl_table(cfg)

    def ops(user: str, kind: str, name: str) -> set[str]:
        return {op for k, n, o in table[user] if (k, n) == (kind, name) for op in o}

    bridge, worker, operator = (kafka_client.ACCOUNTS[r] for r in ("bridge", "worker", "operator"))
    assert {n for k, n, _ in table[bridge] if k == "topic"} == {"c.events", "c.urgent", "c.events.dlq", "c.units"}
    assert "Read" not in {op for _, _, o in table[bridge] for op in o}
    assert ops(bridge, "cluster", "kafka-cluster") == {"IdempotentWrite"}
    assert ops(worker, "group", "w") == {"Read", "Describe"}
    for topic in ("c.events", "c.urgent", "c.commands", "w-ticks", "w-schools-changelog", "w-memory-changelog"):
        assert {"Read", "Write"} <= ops(worker, "topic", topic)
    for topic in ("c.alerts", "c.events.dlq", "c.commands.dlq", "c.silences"):
        assert ops(worker, "topic", topic) == {"Write", "Describe", "Create"}
    assert ops(operator, "topic", "c.commands") == {"Write", "Read", "Describe"}
    for topic in ("c.alerts", "c.events", "c.silences", "c.commands.dlq", "c.events.dlq"):
        assert ops(operator, "topic", topic) == {"Read", "Describe"}
    assert not [k for k, _, _ in table[operator] if k == "group"]  # group_id=None everywhere
    assert len(kafka_auth.acls(cfg)) == sum(len(o) for rows in table.values() for _, _, o in rows)


def test_the_units_topic_is_written_by_the_bridge_and_the_worker_and_read_by_the_console(tmp_path):
    cfg = cfg_with(tmp_path, "  security_protocol: SASL_PLAINTEXT\n  topic_prefix: 'c.'\n")
    table = kafka_auth.acl_table(cfg)
    assert cfg.topics.units == "c.units"

    def ops(role: str) -> set[str]:
        return {op for k, n, o in table[kafka_client.ACCOUNTS[role]] if (k, n) == ("topic", "c.units") for op in o}

    assert ops("bridge") == {"Write", "Describe", "Create"}  # it ensures the topic at start
    assert ops("worker") == {"Read", "Write", "Describe", "Create"}  # ensures Topics.deployment(); writes units' assignments
    assert ops("operator") == {"Read", "Describe"}
    assert ops("notifier") == set()
    assert {(a.resource_pattern.resource_name, a.operation.name) for a in kafka_auth.acls(cfg) if a.principal == "User:huxue-operator" and a.resource_pattern.resource_name == "c.units"} == {
        ("c.units", "READ"),
        ("c.units", "DESCRIBE"),
    }


def test_sasl_refuses_data_formatted_without_accounts_and_a_running_plaintext_broker(tmp_path):
    from pipeline.stack import kafka_server

    cfg = cfg_with(tmp_path, "  security_protocol: SASL_PLAINTEXT\n")
    data = tmp_path / "home" / "data" / "kafka"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("node.id=1\n")  # formatted by an earlier PLAINTEXT stack
    with pytest.raises(RuntimeError, match="formatted without SASL accounts.*stack down") as exc:
        kafka_server.format_storage(cfg, tmp_path / "lib", tmp_path / "server.properties")
    assert "\n" not in str(exc.value)
    plain = cfg_with(tmp_path, "")
    kafka_server.write_config(plain)
    kafka_server.check_running_protocol(plain)
    with pytest.raises(RuntimeError, match="serves PLAINTEXT, the config asks for SASL_PLAINTEXT"):
        kafka_server.check_running_protocol(cfg)
    kafka_server.write_config(cfg)
    kafka_server.check_running_protocol(cfg)
    assert oct((tmp_path / "home" / "kafka" / "server.properties").stat().st_mode & 0o777) == "0o600"
