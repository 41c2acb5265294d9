"""deploy/make_sample_registry.py: the sample city byte for byte, and generated cities that load."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.registry import load_registry

REPO = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("make_sample_registry", REPO / "deploy" / "make_sample_registry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_render_is_the_committed_sample():
    assert _generator().render() == (REPO / "pipeline" / "data" / "registry.yaml").read_text(encoding="utf-8")


def test_generated_city_loads(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(_generator().render(schools=50, devices_per_school=50), encoding="utf-8")
    registry = load_registry(path)
    assert len(registry.schools) == 50
    assert sorted(registry.schools)[:2] == ["s-0001", "s-0002"]
    assert len(registry.devices) == 50 * 50
    for school in registry.schools:
        kinds = [d.kind for d in registry.devices_of(school)]
        assert len(kinds) == 50
        assert "panic_button" in kinds and len(set(kinds)) == 8  # every kind of the sample layout


def test_generated_city_keeps_the_sample_layout_without_devices_per_school(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(_generator().render(schools=3), encoding="utf-8")
    registry = load_registry(path)
    assert len(registry.schools) == 3 and len(registry.devices) == 3 * 67
    assert not registry.external  # the sample's Frigate / Zigbee2MQTT names belong to zx-01 only


def test_a_json_registry_loads_like_its_yaml(tmp_path):
    make_sample_registry = _generator()
    text = make_sample_registry.render(schools=12, devices_per_school=10)
    (tmp_path / "r.yaml").write_text(text)
    (tmp_path / "r.json").write_text(make_sample_registry.as_json(text))
    from_yaml, from_json = load_registry(tmp_path / "r.yaml"), load_registry(tmp_path / "r.json")
    assert from_json.schools == from_yaml.schools and from_json.devices == from_yaml.devices
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_registry(tmp_path / "bad.json")
