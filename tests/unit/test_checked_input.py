"""Operator input is checked (issue 11, part 3): unknown schools, zones and devices, durations
without a unit, global options after the verb, and one line (with its own exit code) when a
broker is unreachable. The CLI checks before sending; the worker rejects what got through."""

from __future__ import annotations

import socket

import pytest
import yaml

from pipeline import cli
from pipeline.ops.commands import parse_duration
from pipeline.rules.engine import check_target
from pipeline.rules.state import SchoolState
from unit_helpers import REGISTRY_YAML, T0, Driver, build_registry, school_command


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def config(tmp_path):
    (tmp_path / "registry.yaml").write_text(REGISTRY_YAML)
    port = closed_port()
    raw = {
        "registry": "registry.yaml",
        "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "auth": False},
        "kafka": {"bootstrap": f"127.0.0.1:{port}"},
        "stack": {"home": str(tmp_path / "home")},
    }
    path = tmp_path / "huxue.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["lockdown", "zx-1", "--reason", "drill", "--by", "duty"], "unknown_school: no school 'zx-1' in the registry (did you mean zx-01?)"),
        (["lift-lockdown", "nowhere", "--by", "duty"], "unknown_school: no school 'nowhere'"),
        (["silence", "zx-01", "--zone", "roof", "--for", "2h", "--reason", "works", "--by", "duty"], "unknown_zone: no zone 'roof' at school zx-01; its zones: field, gate-north, gate-south, office"),
        (["silence", "zx-01", "--device", "bh02-btn-1", "--for", "2h", "--reason", "works", "--by", "duty"], "unknown_device: device bh02-btn-1 is not at school zx-01"),
        (["ack", "inc-20261201-zx-9-0001-abcdef", "--by", "guard"], "unknown_school: no school 'zx-9'"),
    ],
)
def test_unknown_targets_are_refused_before_sending(capsys, config, argv, says):
    # Kafka is unreachable here: exit 2 and this message prove nothing was sent
    code, err = run(capsys, "--config", config, *argv)
    assert code == 2
    assert says in err and err.count("\n") == 1, err


@pytest.mark.parametrize("duration", ["2", "0s", "-5m", "2 parsecs", "", "m", "infh"])
def test_a_duration_needs_a_positive_number_and_a_unit(capsys, config, duration):
    code, err = run(capsys, "--config", config, "silence", "zx-01", "--zone", "office", f"--for={duration}", "--reason", "works", "--by", "duty")
    assert code == 2 and "a positive number with a unit, e.g. 90s, 30m, 2h, 7d, 1w" in err, err


def test_durations_with_units():
    assert [parse_duration(t) for t in ("90s", "30m", "2h", "7d", "1w", "1.5H")] == [90, 1800, 7200, 7 * 86400, 7 * 86400, 5400]


def test_simulate_refuses_an_unknown_panic_target(capsys, config):
    code, err = run(capsys, "--config", config, "simulate", "--panic", "zx-1", "--rate", "0", "--heartbeat-seconds", "0")
    assert code == 2 and "neither a panic button nor a school with one" in err and "did you mean zx-01" in err, err


def test_global_options_after_the_verb_and_an_unreachable_broker_is_one_line(capsys, config):
    # --config after the verb is read (zx-01 exists only in this registry), the command
    # passes the checks, and Kafka is not there: exit 4, one line, no traceback
    code, err = run(capsys, "lockdown", "zx-01", "--reason", "drill", "--by", "duty", "--wait", "0", "--config", config, "--log-level", "error")
    assert code == cli.EXIT_UNREACHABLE, err
    assert err.startswith("huxue: Kafka: ") and "huxue stack status" in err and err.count("\n") == 1, err


def test_the_worker_rejects_unknown_schools_zones_and_devices():
    registry = build_registry()
    assert check_target(school_command("lockdown", reason="r", school_id="zx-1"), "zx-1", registry).reason_code == "unknown_school"
    assert check_target(school_command("silence", scope={"zone": "roof"}), "zx-01", registry).reason_code == "unknown_zone"
    assert check_target(school_command("silence", scope={"zone": "office"}), "zx-01", registry) is None
    # through the engine: nothing opens, the command is rejected with the reason
    d = Driver(state=SchoolState(school_id="zx-1"))
    out = d.school_command(T0, "lockdown", reason="armed person", school_id="zx-1")
    assert out.alerts == [] and [r.reason_code for _, r in out.rejected] == ["unknown_school"]
    d = Driver()
    out = d.school_command(T0, "silence", scope={"zone": "roof"}, duration_seconds=600, reason="works")
    assert out.notices == [] and [r.reason_code for _, r in out.rejected] == ["unknown_zone"]
