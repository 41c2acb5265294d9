"""`huxue bench` runs against the session's brokers and reports both phases (a smoke test:
speed itself is measured by the benchmark, never asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
import yaml


pytestmark = pytest.mark.integration


def test_bench_reports_baseline_and_pipeline(stack, workdir):
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(stack))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(path), "bench", "--rate", "50", "--duration", "3", "--panics", "3"],
        capture_output=True, text=True, timeout=300, cwd=workdir, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "baseline mosquitto_sub|kcat" in result.stdout and "huxue bridge+worker" in result.stdout
    reports = list((workdir / "bench" / "results").glob("*.json"))
    assert len(reports) == 1
    phases = orjson.loads(reports[0].read_bytes())["phases"]
    base, hux = phases
    assert base["offered"] == 150 and hux["offered"] == 147  # 3 of the 150 slots carry presses
    assert hux["delivered"] == hux["offered"]
    assert set(hux["latency_ms"]) == {"p50", "p95", "p99", "max", "mean"}
    assert len(hux["panic_to_alert_ms"]) == 5 and hux["panic_to_alert_ms"]["max"] > 0
    assert {"bridge", "worker", "kafka", "mosquitto"} <= set(hux["cpu_s"])
