"""Session fixtures: one real Mosquitto + Apache Kafka (KRaft) stack on free loopback ports.

Started by the same code as `huxue stack up`, in a temporary HUXUE_HOME; stopped at the
end of the session. Each integration test gets its own topics, app id and bridge id.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import Pipeline, Postgres, free_port, test_registry
from pipeline.config import load_config
from pipeline.stack import local


FIGURES: list[str] = []  # measured by failover tests, printed at the end of the run


@pytest.fixture
def figures():
    """`figures(line)`: a measured figure, printed in the run's summary (CI logs show it)."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("measured figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _running(root: Path, raw: dict):
    """Bring a stack up from `raw` (written to root/stack.yaml), yield `raw`, take it down."""
    path = root / "stack.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, env={})
    local.up(cfg)
    try:
        yield raw
    finally:
        local.down(cfg)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The brokers, and the config dict (ports, home, test registry) to build pipelines on."""
    root = tmp_path_factory.mktemp("stack")
    (root / "registry.yaml").write_text(yaml.safe_dump(test_registry()))
    kafka_port = free_port()
    raw = {
        # Open broker (mqtt.auth false): tests publish as any device and start bridges with
        # ids of their own. The locked-down stack has its own tests (test_e2e_lockdown.py).
        "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", "session_expiry_seconds": 600, "auth": False},
        "kafka": {"bootstrap": f"127.0.0.1:{kafka_port}"},
        "registry": str(root / "registry.yaml"),
        "stack": {"home": str(root / "home"), "kafka_controller_port": free_port()},
    }
    yield from _running(root, raw)


@pytest.fixture(scope="session")
def locked_stack(tmp_path_factory):
    """A second stack, locked down as in production: Mosquitto with accounts, an ACL and
    TLS only (mqtts://, the stack's own CA), Kafka with SASL/SCRAM and ACLs.

    Modules bring it up again with their own configuration first (`up_locked`): `stack up`
    is idempotent and syncs the MQTT accounts and the Kafka ACLs to that configuration.
    """
    root = tmp_path_factory.mktemp("locked-stack")
    (root / "registry.yaml").write_text(yaml.safe_dump(test_registry()))
    raw = {
        "mqtt": {"url": f"mqtts://127.0.0.1:{free_port()}", "session_expiry_seconds": 600},  # auth: the default
        "kafka": {"bootstrap": f"127.0.0.1:{free_port()}", "security_protocol": "SASL_PLAINTEXT"},
        "registry": str(root / "registry.yaml"),
        "bridge": {"client_id": "huxue-bridge-lock"},
        "stack": {"home": str(root / "home"), "kafka_controller_port": free_port()},
    }
    yield from _running(root, raw)


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path


@pytest.fixture
def pipeline(stack, workdir):
    """A running bridge + worker with the compressed 2/4/6 s ladder."""
    p = Pipeline(stack, workdir)
    try:
        yield p.start()
    finally:
        p.close()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian package) for the history store tests."""
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()
