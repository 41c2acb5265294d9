"""`huxue bench` runs against the session's brokers and reports every phase (a smoke test:
speed itself is measured by the benchmark, never asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
import yaml


pytestmark = pytest.mark.integration

PERCENTILES = {"p50", "p95", "p99", "max", "mean"}


def _numbers(d: dict) -> bool:
    return set(d) == PERCENTILES and all(isinstance(v, (int, float)) for v in d.values())


def test_bench_reports_baseline_pipeline_overload_and_max(stack, workdir):
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(stack))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(path), "bench", "--rate", "50", "--duration", "3", "--panics", "3",
         "--overload", "--find-max", "--find-max-steps", "2"],
        capture_output=True, text=True, timeout=600, cwd=workdir, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "machine: " in out and "baseline mosquitto_sub|kcat" in out and "huxue bridge+worker" in out and "huxue overload 100/s" in out
    assert "deadline lateness ms" in out and "find-max: highest rate" in out
    reports = list((workdir / "bench" / "results").glob("*.json"))
    assert len(reports) == 1
    report = orjson.loads(reports[0].read_bytes())
    assert report["machine"]["cores"] >= 1 and report["machine"]["date"]
    base, hux, over = report["phases"]
    assert base["offered"] == 150 and hux["offered"] == 147  # 3 of the 150 slots carry presses
    assert over["offered"] == 297
    assert hux["delivered"] == hux["offered"]
    for phase in (hux, over):
        assert _numbers(phase["latency_ms"]) and isinstance(phase["last_event_lag_s"], (int, float))
        assert phase["presses"] == 3 and _numbers(phase["panic_to_alert_ms"]) and phase["panic_to_alert_ms"]["max"] > 0
        assert _numbers(phase["panic_to_urgent_topic_ms"]), "the bridge's share of a press's latency"
        # the first press's three ladder stages fire within the phase, at least
        assert phase["deadline_stages"]["seen"] >= 3 and _numbers(phase["deadline_lateness_ms"])
        assert {"bridge", "worker", "kafka", "mosquitto"} <= set(phase["cpu_s"]) and phase["peak_rss_mb"]["worker"] > 0
    found = report["find_max"]
    assert len(found["steps"]) == 2 and [s["rate"] for s in found["steps"]][0] == 50
    assert isinstance(found["max_rate"], (int, float))
    assert all(isinstance(s["keeps_up"], bool) and isinstance(s["offered"], int) for s in found["steps"])


def test_bench_soak_samples_every_process_resident_set(stack, workdir):
    path = workdir / "soak.yaml"
    path.write_text(yaml.safe_dump(stack))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUXUE_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(path), "bench", "--soak", "--rate", "50", "--duration", "4", "--panics", "1"],
        capture_output=True, text=True, timeout=300, cwd=workdir, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "baseline" not in result.stdout and "huxue soak" in result.stdout and "soak " in result.stdout
    [report] = [orjson.loads(p.read_bytes()) for p in (workdir / "bench" / "results").glob("*.json")]
    [soak] = report["phases"]
    assert soak["delivered"] == soak["offered"] == 199
    assert len(soak["rss_samples"]) >= 2
    assert all({"bridge", "worker", "kafka", "mosquitto"} <= set(s) and s["worker"] > 0 for s in soak["rss_samples"])
