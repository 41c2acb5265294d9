"""The `rules:` section of the configuration (pipeline/config.py, pipeline/rules/settings.py)
and per-school settings through Context.rule."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.records import SEVERITIES
from pipeline.rules.settings import RulesConfig, normalise_plate
from pipeline.rules.state import Context
from unit_helpers import ESC, OTHER_SCHOOL, SCHOOL, build_registry


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "huxue.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rules_of(tmp_path: Path, text: str) -> RulesConfig:
    return load_config(write(tmp_path, text), env={}).rules


def ctx_of(rules: RulesConfig) -> Context:
    return Context(escalation=ESC, registry=build_registry(), rules=rules)


def test_no_rules_section_gives_the_defaults(tmp_path):
    assert rules_of(tmp_path, "") == RulesConfig()
    assert rules_of(tmp_path, "rules: {}\n") == RulesConfig()
    r = RulesConfig()
    assert (r.flood.max_incidents, r.flood.window_seconds) == (10, 600)
    assert (r.corroboration.window_seconds, r.corroboration.min_sensors, r.corroboration.min_kinds) == (120, 2, 2)
    assert (r.device_health.heartbeat_timeout_seconds, r.device_health.battery_low_percent) == (180, 20)
    assert r.device_health.heartbeat_kinds == ("panic_button",)


def test_the_packaged_sample_rules_are_valid():
    cfg = load_config(None, env={})
    assert isinstance(cfg.rules, RulesConfig)


def test_rules_section_loads(tmp_path):
    r = rules_of(
        tmp_path,
        """
        rules:
          corroboration:
            window_seconds: 90
            types: [video.fight, sound.scream]
            severity: Extreme
          device_health:
            enabled: false
            heartbeat_timeout_seconds: 300
            heartbeat_kinds: [panic_button, video_analytics]
          flood: {max_incidents: 5, window_seconds: 300}
          face_watchlist:
            categories: {wanted: Extreme, staff_alert: Minor}
          silence: {max_seconds: 3600}
        """,
    )
    assert r.corroboration.window_seconds == 90.0 and isinstance(r.corroboration.window_seconds, float)
    assert r.corroboration.types == ("video.fight", "sound.scream")  # lists become tuples
    assert r.corroboration.severity == "Extreme"
    assert r.corroboration.min_sensors == 2  # untouched keys keep their defaults
    assert r.device_health.enabled is False and r.device_health.heartbeat_timeout_seconds == 300
    assert r.device_health.heartbeat_kinds == ("panic_button", "video_analytics")
    assert (r.flood.max_incidents, r.flood.window_seconds) == (5, 300)
    assert r.face_watchlist.categories == {"wanted": "Extreme", "staff_alert": "Minor"}
    assert r.silence.max_seconds == 3600
    assert r.perimeter == RulesConfig().perimeter


def test_per_school_overrides_apply_through_context_rule(tmp_path):
    r = rules_of(
        tmp_path,
        f"""
        rules:
          flood:
            max_incidents: 5
            schools:
              {SCHOOL}: {{max_incidents: 2}}
          corroboration:
            schools:
              {SCHOOL}: {{enabled: false, types: [door.forced]}}
          device_health:
            heartbeat_timeout_seconds: 240
            schools:
              {OTHER_SCHOOL}: {{heartbeat_timeout_seconds: 60, severity_panic_button: Severe}}
        """,
    )
    assert r.flood.schools == {SCHOOL: {"max_incidents": 2}}
    ctx = ctx_of(r)
    flood_here, flood_there = ctx.rule("flood", SCHOOL), ctx.rule("flood", OTHER_SCHOOL)
    assert (flood_here.max_incidents, flood_here.window_seconds) == (2, 600)  # the rest from the block
    assert flood_there.max_incidents == 5
    assert flood_there is r.flood  # no override: the block itself
    corr = ctx.rule("corroboration", SCHOOL)
    assert corr.enabled is False and corr.types == ("door.forced",)
    assert ctx.rule("corroboration", OTHER_SCHOOL).enabled is True
    dh = ctx.rule("device_health", OTHER_SCHOOL)
    assert (dh.heartbeat_timeout_seconds, dh.severity_panic_button, dh.severity_other) == (60, "Severe", "Minor")
    assert ctx.rule("device_health", SCHOOL).heartbeat_timeout_seconds == 240
    assert ctx.rule("flood", SCHOOL) is flood_here  # computed once
    assert ctx.rule("flood", "nowhere") is r.flood


def test_context_rule_overrides_built_in_code():
    rules = dataclasses.replace(RulesConfig(), flood=dataclasses.replace(RulesConfig().flood, schools={SCHOOL: {"window_seconds": 60.0}}))
    assert ctx_of(rules).rule("flood", SCHOOL).window_seconds == 60.0


@pytest.mark.parametrize(
    "text, named",
    [
        ("rules: {bogus: {}}\n", "bogus"),
        ("rules: {flood: {max_incidnets: 3}}\n", "max_incidnets"),
        ("rules: {flood: {schools: {zx-01: {max_incidnets: 3}}}}\n", "max_incidnets"),
        ("rules: {silence: {enabled: false}}\n", "enabled"),  # silences cannot be switched off
        ("rules: {corroboration: {schools: {zx-01: {schools: {}}}}}\n", "schools"),
    ],
)
def test_unknown_rule_keys_are_rejected_with_the_key_named(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named) as err:
        load_config(write(tmp_path, text), env={})
    assert "rules" in str(err.value)


def test_unknown_key_in_a_school_override_says_which_school(tmp_path):
    with pytest.raises(ConfigError, match=r"rules\.flood\.schools\.zx-01"):
        load_config(write(tmp_path, "rules: {flood: {schools: {zx-01: {nope: 1}}}}\n"), env={})


@pytest.mark.parametrize(
    "text, named",
    [
        ("rules: {corroboration: {severity: Critical}}\n", "rules.corroboration.severity"),
        ("rules: {device_health: {severity_tamper: severe}}\n", "severity_tamper"),  # case matters (CAP)
        ("rules: {vehicle_loitering: {severity_in_windows: High}}\n", "severity_in_windows"),
        ("rules: {perimeter: {severity_after_hours: Urgent}}\n", "severity_after_hours"),
        ("rules: {post_staffing: {severity: Low}}\n", "post_staffing"),
        ("rules: {face_watchlist: {categories: {wanted: Catastrophic}}}\n", "categories"),
        ("rules: {plate_watchlist: {plates: {AB123: Red}}}\n", "plates"),
        ("rules: {device_health: {schools: {zx-01: {severity_other: Bad}}}}\n", "schools.zx-01"),
        ("rules: {face_watchlist: {schools: {zx-01: {categories: {wanted: Bad}}}}}\n", "schools.zx-01"),
    ],
)
def test_bad_severities_are_rejected_with_the_key_named(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as err:
        load_config(write(tmp_path, text), env={})
    assert "one of Extreme, Severe, Moderate, Minor" in str(err.value)


@pytest.mark.parametrize("key", ["fight_severity", "crowd_severity"])
def test_video_behaviour_severities_are_validated_too(tmp_path, key):
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, f"rules: {{video_behaviour: {{{key}: Catastrophic}}}}\n"), env={})


@pytest.mark.parametrize("severity", SEVERITIES)
def test_every_cap_severity_is_accepted(tmp_path, severity):
    r = rules_of(tmp_path, f"rules: {{corroboration: {{severity: {severity}}}, device_health: {{schools: {{zx-01: {{severity_tamper: {severity}}}}}}}}}\n")
    assert r.corroboration.severity == severity
    assert ctx_of(r).rule("device_health", SCHOOL).severity_tamper == severity


@pytest.mark.parametrize(
    "text, named",
    [
        ("rules: {flood: {max_incidents: ten}}\n", "max_incidents"),
        ("rules: {flood: {max_incidents: 2.5}}\n", "max_incidents"),
        ("rules: {flood: {window_seconds: -1}}\n", "window_seconds"),
        ("rules: {flood: {enabled: 'yes'}}\n", "enabled"),
        ("rules: {corroboration: {types: video.fight}}\n", "types"),
        ("rules: {corroboration: {types: [1, 2]}}\n", "types"),
        ("rules: {flood: []}\n", "flood"),
        ("rules: {flood: {schools: [zx-01]}}\n", "schools"),
        ("rules: {flood: {schools: {zx-01: {max_incidents: ten}}}}\n", "max_incidents"),
        ("rules: {face_watchlist: {categories: [wanted]}}\n", "categories"),
    ],
)
def test_ill_typed_rule_values_are_rejected(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named):
        load_config(write(tmp_path, text), env={})


def test_plates_are_normalised():
    assert normalise_plate("京a 123·45") == normalise_plate("京A12345") == "京A12345"
    assert normalise_plate(" ab-12.3 ") == "AB123"
