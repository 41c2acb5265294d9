"""pipeline/config.py: one YAML file, every key defaulted, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (
    Config,
    ConfigError,
    EscalationConfig,
    load_config,
    packaged_config_path,
)


def write(tmp_path: Path, text: str, name: str = "huxue.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "null\n", "{}\n"])
def test_empty_file_gives_contract_defaults(tmp_path, text):
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.mqtt.url == "mqtt://127.0.0.1:1883"
    assert cfg.kafka.bootstrap == "127.0.0.1:9092"
    assert cfg.kafka.topic_prefix == "huxue."
    assert cfg.kafka.partitions == 6
    assert cfg.registry == "registry.yaml"
    assert cfg.escalation == EscalationConfig(60, 180, 300)
    assert cfg.stack.home == ".huxue"
    assert cfg.base_dir == str(tmp_path.resolve())


def test_defaults_match_the_dataclass_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""), env={})
    default = Config()
    assert (cfg.mqtt, cfg.kafka, cfg.escalation, cfg.bridge, cfg.worker, cfg.stack) == (
        default.mqtt,
        default.kafka,
        default.escalation,
        default.bridge,
        default.worker,
        default.stack,
    )


def test_packaged_sample_loads_and_is_the_default(tmp_path):
    cfg = load_config(None, env={})
    assert cfg.escalation == EscalationConfig(60, 180, 300)
    assert cfg.registry_path == (packaged_config_path().parent / "registry.yaml").resolve()
    assert cfg.registry_path.is_file()


def test_contract_example_values(tmp_path):
    text = """
mqtt:
  url: mqtts://user:secret@broker.example:8884
kafka:
  bootstrap: k1:9092,k2:9092
  topic_prefix: "city."
  partitions: 12
registry: reg/schools.yaml
escalation:
  ack_seconds: 30
  arrive_target_seconds: 120
  arrive_limit_seconds: 240
"""
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.mqtt.tls is True
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.username, cfg.mqtt.password) == ("broker.example", 8884, "user", "secret")
    assert cfg.kafka.bootstrap == "k1:9092,k2:9092"
    assert cfg.kafka.partitions == 12
    assert cfg.topics.events == "city.events"
    assert cfg.topics.events_dlq == "city.events.dlq"
    assert cfg.topics.alerts == "city.alerts"
    assert cfg.topics.commands == "city.commands"
    assert cfg.escalation == EscalationConfig(30, 120, 240)
    assert cfg.registry_path == (tmp_path / "reg" / "schools.yaml").resolve()


def test_mqtt_url_defaults_ports():
    from pipeline.config import MqttConfig

    assert MqttConfig("mqtt://h").port == 1883
    assert MqttConfig("mqtts://h").port == 8883
    assert MqttConfig("mqtt://h").tls is False
    assert MqttConfig("mqtt://h").username is None


def test_contract_topics_with_default_prefix(tmp_path):
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.topics.contract() == ["huxue.events", "huxue.events.dlq", "huxue.alerts", "huxue.commands", "huxue.commands.dlq", "huxue.silences", "huxue.urgent"]


# --- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("mqtt_url: x\n", "mqtt_url"),
        ("mqtt:\n  urll: mqtt://h\n", "urll"),
        ("kafka:\n  bootstrap_servers: h:9092\n", "bootstrap_servers"),
        ("escalation:\n  ack: 60\n", "ack"),
        ("worker:\n  tick: 1\n", "tick"),
    ],
)
def test_unknown_keys_are_rejected_with_the_key_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, text), env={})


def test_unknown_key_error_says_where(tmp_path):
    path = write(tmp_path, "escalation:\n  ack: 60\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert str(path) in str(exc.value)
    assert "escalation" in str(exc.value)
    assert "ack_seconds" in str(exc.value)  # lists what is known


# `base_dir` is an internal field of the top-level Config only; in a section it is an
# unknown key like any other.
def test_base_dir_inside_a_section_is_an_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match="base_dir"):
        load_config(write(tmp_path, "mqtt:\n  base_dir: /x\n"), env={})


# YAML keys need not be strings (`1:`, and YAML 1.1 reads `on:`/`yes:` as booleans); they
# are still unknown keys and must give a ConfigError, not a TypeError from the message.
@pytest.mark.parametrize("text", ["1: 2\n", "on: true\n", "kafka:\n  1: x\n"])
def test_non_string_unknown_keys_give_a_config_error(tmp_path, text):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), env={})


# --- types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "mqtt: mqtt://h\n",  # a section must be a mapping
        "- a\n- b\n",  # the file must be a mapping
        "kafka:\n  partitions: six\n",
        "kafka:\n  partitions: 1.5\n",
        "kafka:\n  partitions: true\n",
        "kafka:\n  partitions: -1\n",
        "kafka:\n  partitions: 0\n",
        "escalation:\n  ack_seconds: '60'\n",
        "escalation:\n  ack_seconds: -60\n",
        "mqtt:\n  url: [a]\n",
        "mqtt:\n  url: http://h:1883\n",
        "worker:\n  tick_seconds: 0\n",
        "worker:\n  tick_seconds: 6\n",
        "bridge:\n  max_inflight: 5000\n",
        "mqtt: {url: [\n",  # not YAML
    ],
)
def test_invalid_values_are_config_errors(tmp_path, text):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), env={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", env={})


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- escalation ordering --------------------------------------------------------------------


@pytest.mark.parametrize(
    "ack, target, limit, ok",
    [
        (60, 180, 300, True),
        (60, 60, 60, True),
        (1, 2, 3, True),
        (0, 180, 300, False),
        (181, 180, 300, False),
        (60, 301, 300, False),
        (60, 300, 180, False),
        (300, 180, 60, False),
    ],
)
def test_escalation_ordering_validated(tmp_path, ack, target, limit, ok):
    text = f"escalation:\n  ack_seconds: {ack}\n  arrive_target_seconds: {target}\n  arrive_limit_seconds: {limit}\n"
    path = write(tmp_path, text)
    if ok:
        assert load_config(path, env={}).escalation == EscalationConfig(ack, target, limit)
    else:
        with pytest.raises(ConfigError, match="escalation"):
            load_config(path, env={})


# EscalationConfig (and other `float` seconds) are typed float; their defaults are
# written as ints (60, 180, 300), which must not make fractional values invalid.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("escalation:\n  ack_seconds: 0.5\n  arrive_target_seconds: 1.5\n  arrive_limit_seconds: 2.5\n", EscalationConfig(0.5, 1.5, 2.5)),
        ("escalation:\n  ack_seconds: 60.0\n", EscalationConfig(60.0, 180, 300)),
    ],
)
def test_fractional_escalation_seconds_are_accepted(tmp_path, text, expected):
    assert load_config(write(tmp_path, text), env={}).escalation == expected


def test_fractional_float_seconds_elsewhere_are_accepted(tmp_path):
    cfg = load_config(write(tmp_path, "worker:\n  tick_seconds: 0.25\n  session_timeout_seconds: 7.5\nbridge:\n  max_clock_skew_seconds: 90.5\n"), env={})
    assert (cfg.worker.tick_seconds, cfg.worker.session_timeout_seconds, cfg.bridge.max_clock_skew_seconds) == (0.25, 7.5, 90.5)


def test_integer_fields_still_reject_fractions(tmp_path):
    with pytest.raises(ConfigError, match="integer"):
        load_config(write(tmp_path, "mqtt:\n  keepalive_seconds: 1.5\n"), env={})


def test_partial_escalation_is_checked_against_defaults(tmp_path):
    # only ack given: 400 > default arrive_target_seconds 180
    with pytest.raises(ConfigError, match="escalation"):
        load_config(write(tmp_path, "escalation:\n  ack_seconds: 400\n"), env={})
    assert load_config(write(tmp_path, "escalation:\n  ack_seconds: 10\n"), env={}).escalation == EscalationConfig(10, 180, 300)


# --- environment overrides ---------------------------------------------------------------------


def test_env_overrides(tmp_path):
    path = write(tmp_path, "mqtt:\n  url: mqtt://file:1883\nkafka:\n  bootstrap: file:9092\nstack:\n  home: /from/file\n")
    env = {"HUXUE_MQTT_URL": "mqtts://u:p@env-host:8883", "HUXUE_KAFKA_BOOTSTRAP": "env:19092", "HUXUE_HOME": str(tmp_path / "home")}
    cfg = load_config(path, env=env)
    assert cfg.mqtt.url == "mqtts://u:p@env-host:8883"
    assert cfg.mqtt.host == "env-host" and cfg.mqtt.tls
    assert cfg.kafka.bootstrap == "env:19092"
    assert cfg.stack.home == str(tmp_path / "home")
    assert cfg.home == (tmp_path / "home").resolve()


def test_no_env_means_file_values(tmp_path):
    path = write(tmp_path, "mqtt:\n  url: mqtt://file:1883\nkafka:\n  bootstrap: file:9092\n")
    cfg = load_config(path, env={})
    assert cfg.mqtt.url == "mqtt://file:1883"
    assert cfg.kafka.bootstrap == "file:9092"


def test_empty_env_values_do_not_override(tmp_path):
    path = write(tmp_path, "mqtt:\n  url: mqtt://file:1883\n")
    cfg = load_config(path, env={"HUXUE_MQTT_URL": "", "HUXUE_KAFKA_BOOTSTRAP": "", "HUXUE_HOME": ""})
    assert cfg.mqtt.url == "mqtt://file:1883"
    assert cfg.kafka.bootstrap == "127.0.0.1:9092"
    assert cfg.stack.home == ".huxue"


def test_env_parameter_isolates_from_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HUXUE_MQTT_URL", "mqtt://process-env:1883")
    assert load_config(write(tmp_path, ""), env={}).mqtt.url == "mqtt://127.0.0.1:1883"
    assert load_config(write(tmp_path, ""), env=None).mqtt.url == "mqtt://process-env:1883"


def test_env_mqtt_url_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="mqtt.url"):
        load_config(write(tmp_path, ""), env={"HUXUE_MQTT_URL": "http://nope"})


# --- registry path --------------------------------------------------------------------------


def test_registry_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    path = write(tmp_path, "registry: schools/city.yaml\n", name="etc/huxue.yaml")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path, env={})
    assert cfg.registry_path == (tmp_path / "etc" / "schools" / "city.yaml").resolve()


def test_registry_default_sits_next_to_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, "", name="conf/huxue.yaml"), env={})
    assert cfg.registry_path == (tmp_path / "conf" / "registry.yaml").resolve()


def test_absolute_registry_path_is_kept(tmp_path):
    target = tmp_path / "abs" / "reg.yaml"
    cfg = load_config(write(tmp_path, f"registry: {target}\n", name="conf/huxue.yaml"), env={})
    assert cfg.registry_path == target.resolve()


def test_relative_config_path_resolves_against_cwd(tmp_path, monkeypatch):
    write(tmp_path, "registry: r.yaml\n", name="sub/huxue.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("sub/huxue.yaml", env={})
    assert cfg.registry_path == (tmp_path / "sub" / "r.yaml").resolve()


def test_console_tls_needs_both_files_and_they_must_exist(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        load_config(write(tmp_path, "console: {tls_cert: cert.pem}\n"), env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(write(tmp_path, "console: {tls_cert: cert.pem, tls_key: missing.pem}\n"), env={})
    (tmp_path / "key.pem").write_text("x")
    cfg = load_config(write(tmp_path, "console: {tls_cert: cert.pem, tls_key: key.pem}\n"), env={})
    assert cfg.console_tls() == ((tmp_path / "cert.pem").resolve(), (tmp_path / "key.pem").resolve()), "relative to the configuration file"
    assert load_config(write(tmp_path, "console: {}\n"), env={}).console_tls() is None


# --- kafka client security ----------------------------------------------------------------------


def test_kafka_security_defaults_to_plaintext(tmp_path):
    k = load_config(write(tmp_path, ""), env={}).kafka
    assert (k.security_protocol, k.sasl_mechanism, k.username, k.password_env, k.password_file, k.ca_file) == ("PLAINTEXT", "SCRAM-SHA-512", "", "", "", "")


def test_kafka_sasl_with_the_stack_accounts(tmp_path):
    cfg = load_config(write(tmp_path, "kafka:\n  security_protocol: SASL_PLAINTEXT\n"), env={})
    assert cfg.kafka.security_protocol == "SASL_PLAINTEXT" and cfg.kafka.username == ""


def test_kafka_password_file_is_relative_to_the_config(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "kafka.pw").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    text = "kafka:\n  security_protocol: SASL_SSL\n  username: huxue\n  password_file: secrets/kafka.pw\n  ca_file: ca.pem\n"
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.kafka_path("password_file") == (tmp_path / "secrets" / "kafka.pw").resolve()
    assert cfg.kafka_path("ca_file") == (tmp_path / "ca.pem").resolve()


@pytest.mark.parametrize(
    "kafka, message",
    [
        ("security_protocol: SSL", "kafka.security_protocol must be one of PLAINTEXT, SASL_PLAINTEXT, SASL_SSL"),
        ("security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: PLAIN", "kafka.sasl_mechanism must be one of"),
        ("username: huxue\n  password_env: PW", "kafka.username needs kafka.security_protocol SASL_PLAINTEXT or SASL_SSL"),
        ("password_env: PW", "kafka.password_env needs kafka.security_protocol"),
        ("ca_file: ca.pem", "kafka.ca_file needs kafka.security_protocol"),
        ("security_protocol: SASL_PLAINTEXT\n  username: huxue", "exactly one of kafka.password_env"),
        ("security_protocol: SASL_PLAINTEXT\n  username: huxue\n  password_env: PW\n  password_file: pw", "exactly one of kafka.password_env"),
        ("security_protocol: SASL_PLAINTEXT\n  password_env: PW", "need kafka.username"),
        ("security_protocol: SASL_PLAINTEXT\n  username: huxue\n  password_env: PW\n  ca_file: ca.pem", "kafka.ca_file needs kafka.security_protocol SASL_SSL"),
        ("security_protocol: SASL_PLAINTEXT\n  username: huxue\n  password_file: missing.pw", "kafka.password_file .*missing.pw not found"),
        ("security_protocol: SASL_SSL\n  ca_file: missing.pem", "kafka.ca_file .*missing.pem not found"),
        ("password: hunter2", "unknown key.*password"),  # a password never goes in the file
    ],
)
def test_kafka_security_combinations_are_checked(tmp_path, kafka, message):
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(write(tmp_path, f"kafka:\n  {kafka}\n"), env={})
    assert "\n" not in str(exc.value)  # one line


# --- console.checklists: "what to do" per rule ---------------------------------------------------


def test_checklists_default_in_code_and_are_replaced_per_rule(tmp_path):
    from pipeline.config import DEFAULT_CHECKLISTS

    default = load_config(write(tmp_path, ""), env={}).console
    assert default.checklist("panic") == DEFAULT_CHECKLISTS["panic"] and "Call the school's guard post" in default.checklist("panic")
    assert default.checklist("device_health") == ()  # no default: no checklist
    text = "console:\n  checklists:\n    panic: [Call the guard post, Send unit 3]\n    perimeter: []\n    device_health: [Call the installer]\n"
    given = load_config(write(tmp_path, text), env={}).console
    assert given.checklist("panic") == ("Call the guard post", "Send unit 3")
    assert given.checklist("perimeter") == ()  # [] switches a default off
    assert given.checklist("device_health") == ("Call the installer",)
    assert given.checklist("face_watchlist") == DEFAULT_CHECKLISTS["face_watchlist"]  # the others keep theirs


@pytest.mark.parametrize(
    "checklists, message",
    [
        ("{panik: [Call]}", r"console.checklists: unknown rule\(s\) panik; known: panic, corroborated, .*paging_health"),
        ("{panic: Call the guard post}", "console.checklists: expected a mapping of lists of strings"),
        ("[panic]", "console.checklists: expected a mapping of lists of strings"),
    ],
)
def test_checklist_errors(tmp_path, checklists, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"console:\n  checklists: {checklists}\n"), env={})


def test_checklist_rules_are_the_rules_incidents_carry():
    """config.INCIDENT_RULES (config cannot import the rules) in step with the rules themselves."""
    from pipeline.config import DEFAULT_CHECKLISTS, INCIDENT_RULES
    import sys

    from pipeline.rules import engine

    raised = {getattr(sys.modules[type(r).__module__], "RULE", None) for r in engine.RULES}
    raised |= {"lockdown", "flood"}  # these raise incidents under their NAME (no RULE constant)
    raised.discard(None)
    assert set(INCIDENT_RULES) == raised
    assert set(DEFAULT_CHECKLISTS) <= set(INCIDENT_RULES)


def test_metrics_listen_on_loopback_unless_told(tmp_path):
    cfg = load_config(write(tmp_path, "worker: {metrics_bind: 0.0.0.0}\n"), env={})
    assert (cfg.bridge.metrics_bind, cfg.worker.metrics_bind, cfg.notify.metrics_bind) == ("127.0.0.1", "0.0.0.0", "127.0.0.1")


def test_several_workers_and_bridges_on_one_host_differ_by_flags(tmp_path):
    from pipeline.cli import parser
    from pipeline.config import with_overrides

    cfg = load_config(write(tmp_path, "stack: {home: h}\n"), env={})
    args = parser().parse_args(["--config", "x.yaml", "worker", "--instance-id", "huxue-worker-2", "--metrics-port", "0"])
    w2 = with_overrides(cfg, "huxue worker", worker={"instance_id": args.instance_id, "metrics_port": args.metrics_port})
    assert (w2.worker_instance_id, w2.worker.metrics_port) == ("huxue-worker-2", 0)
    assert w2.worker_datadir != cfg.worker_datadir and w2.worker_datadir.parent == cfg.worker_datadir  # no shared data directory
    b2 = with_overrides(cfg, "huxue bridge", bridge={"client_id": "bridge-b"})
    assert b2.bridge_client_id == "bridge-b" and b2.worker == cfg.worker
    with pytest.raises(ConfigError, match=r"huxue worker: worker.instance_id 'w 2'"):
        with_overrides(cfg, "huxue worker", worker={"instance_id": "w 2"})
    with pytest.raises(ConfigError, match="must not contain ':'"):
        with_overrides(cfg, "huxue bridge", bridge={"client_id": "b:1"})


@pytest.mark.parametrize("worker, error", [("standby_replicas: 4", "standby_replicas must be 0..3"), ("session_timeout_seconds: 3", "session_timeout_seconds must be in 6..300")])
def test_worker_group_settings_are_checked(tmp_path, worker, error):
    with pytest.raises(ConfigError, match=error):
        load_config(write(tmp_path, f"worker:\n  {worker}\n"), env={})
