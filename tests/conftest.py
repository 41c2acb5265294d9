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


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The brokers, and the config dict (ports, home, test registry) to build pipelines on."""
    root = tmp_path_factory.mktemp("stack")
    (root / "registry.yaml").write_text(yaml.safe_dump(test_registry()))
    kafka_port = free_port()
    raw = {
        "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", "session_expiry_seconds": 600},
        "kafka": {"bootstrap": f"127.0.0.1:{kafka_port}"},
        "registry": str(root / "registry.yaml"),
        "stack": {"home": str(root / "home"), "kafka_controller_port": free_port()},
    }
    path = root / "stack.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, env={})
    local.up(cfg)
    try:
        yield raw
    finally:
        local.down(cfg)


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
