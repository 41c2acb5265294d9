"""pipeline/registry.py: schools and devices from YAML, lookups by id and external name."""

from __future__ import annotations

import textwrap
from collections import Counter
from datetime import time
from pathlib import Path

import pytest

from pipeline.config import ConfigError, packaged_config_path
from pipeline.records import DEVICE_KINDS
from pipeline.registry import DEVICE_ID, load_registry
from unit_helpers import build_registry

SAMPLE = packaged_config_path().parent / "registry.yaml"
CAMERA_KINDS = ("face_camera", "plate_camera", "video_analytics")


@pytest.fixture(scope="module")
def sample():
    return load_registry(SAMPLE)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- the packaged sample city ----------------------------------------------------------------


def test_sample_has_20_schools(sample):
    assert len(sample.schools) == 20
    assert len({s.name for s in sample.schools.values()}) == 20


def test_sample_has_at_least_1000_cameras_of_each_camera_kind(sample):
    kinds = Counter(d.kind for d in sample.devices.values())
    assert sum(kinds[k] for k in CAMERA_KINDS) >= 1000
    for k in CAMERA_KINDS:
        assert kinds[k] > 0, k
    assert kinds["panic_button"] > 0


def test_sample_devices_are_valid(sample):
    for d in sample.devices.values():
        assert DEVICE_ID.match(d.id)
        assert d.school in sample.schools
        assert d.kind in DEVICE_KINDS
    # every school has devices, including at least one panic button
    for sid in sample.schools:
        assert any(d.kind == "panic_button" for d in sample.devices_of(sid)), sid


def test_sample_contract_devices(sample):
    zx = sample.school("zx-01")
    assert zx is not None and zx.name == "Zixing No.1 Middle School"
    assert zx.timezone == "Asia/Shanghai"
    assert zx.open == time(7, 30) and zx.close == time(17, 30)
    assert zx.days == ("mon", "tue", "wed", "thu", "fri")
    assert len(zx.windows) == 2 and zx.windows[0].start == time(7, 0)
    assert zx.posts and zx.posts[0].required_officers == 2
    sos = sample.by_external("zigbee2mqtt", "office_sos")
    assert sos is not None and sos.kind == "panic_button" and sos.school == "zx-01"
    cam = sample.by_external("frigate", "gate_cam")
    assert cam is not None and cam.kind == "video_analytics"
    assert sample.device(cam.id) is cam


# --- lookups --------------------------------------------------------------------------------


def test_lookups_from_file(registry_file):
    reg = load_registry(registry_file)
    assert set(reg.schools) == {"zx-01", "bh-02"}
    assert reg.device("zx01-btn-1").zone == "gate-north"
    assert reg.device("nobody") is None
    assert reg.school("nowhere") is None
    assert reg.by_external("frigate", "gate_cam").id == "zx01-cam-7"
    assert reg.by_external("zigbee2mqtt", "office_sos").id == "zx01-sos-2"
    assert reg.by_external("frigate", "office_sos") is None  # names are per ecosystem
    assert reg.by_external("zigbee2mqtt", "gate_cam") is None
    assert {d.id for d in reg.devices_of("bh-02")} == {"bh02-btn-1"}
    assert len(reg.devices_of("zx-01")) == 13
    assert {d.kind for d in reg.devices_of("zx-01")} >= {"panic_button", "video_analytics", "fence", "audio_sensor", "access_control"}
    assert reg.school("bh-02").timezone == "Europe/London"
    # the file and the in-code helper registry agree
    direct = build_registry()
    assert reg.devices == direct.devices
    assert set(reg.external) == set(direct.external)


def test_school_defaults(tmp_path):
    reg = load_registry(write(tmp_path, "schools: [{id: s1}]\n"))
    s = reg.school("s1")
    assert s.name == "s1" and s.timezone == "Asia/Shanghai"
    assert s.days == ("mon", "tue", "wed", "thu", "fri")
    assert s.windows == () and s.posts == ()
    assert str(s.tz) == "Asia/Shanghai"


@pytest.mark.parametrize("text", ["", "{}\n", "schools: []\ndevices: []\n"])
def test_empty_registry(tmp_path, text):
    reg = load_registry(write(tmp_path, text))
    assert reg.schools == {} and reg.devices == {} and reg.external == {}


# --- errors ------------------------------------------------------------------------------------

ONE_SCHOOL = "schools: [{id: s1, timezone: UTC}]\n"


@pytest.mark.parametrize(
    "text, match",
    [
        ("schools: [{id: s1}, {id: s1}]\n", "duplicate school id 's1'"),
        (ONE_SCHOOL + "devices: [{id: d1, school: s1, kind: fence}, {id: d1, school: s1, kind: fence}]\n", "duplicate device id 'd1'"),
        (ONE_SCHOOL + "devices: [{id: d1, school: s2, kind: fence}]\n", "unknown school 's2'"),
        (ONE_SCHOOL + "devices: [{id: d1, kind: fence}]\n", "unknown school"),
        (ONE_SCHOOL + "devices: [{id: 'bad id', school: s1, kind: fence}]\n", "device id 'bad id'"),
        (ONE_SCHOOL + "devices: [{id: 'a/b', school: s1, kind: fence}]\n", "device id"),
        (ONE_SCHOOL + f"devices: [{{id: {'x' * 65}, school: s1, kind: fence}}]\n", "device id"),
        (ONE_SCHOOL + "devices: [{school: s1, kind: fence}]\n", "device id"),
        (ONE_SCHOOL + "devices: [{id: d1, school: s1, kind: toaster}]\n", "unknown kind 'toaster'"),
        (ONE_SCHOOL + "devices: [{id: d1, school: s1}]\n", "unknown kind"),
        ("schools: [{id: s1, timezone: Mars/Olympus}]\n", "unknown timezone 'Mars/Olympus'"),
        ("schools: [{id: s1, timezone: ''}]\n", "unknown timezone"),
        ("schools: [{name: nameless}]\n", "needs an id"),
        ("schools: [{id: s1, hours: {days: [mon, funday]}}]\n", "weekday"),
        ("schools: [{id: s1, hours: {open: '25:00'}}]\n", "HH:MM"),
        ("schools: [{id: s1, windows: [{start: '7', end: '08:00'}]}]\n", "HH:MM"),
        (
            ONE_SCHOOL
            + "devices: [{id: d1, school: s1, kind: fence, external: {frigate: cam}}, {id: d2, school: s1, kind: fence, external: {frigate: cam}}]\n",
            "mapped to two fence devices",
        ),
        ("schools: [{id: s1\n", "not valid YAML"),
    ],
)
def test_registry_errors(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_registry(write(tmp_path, text))


def test_error_names_the_file_and_position(tmp_path):
    path = write(tmp_path, ONE_SCHOOL + "devices: [{id: d1, school: s1, kind: fence}, {id: d2, school: s1, kind: toaster}]\n")
    with pytest.raises(ConfigError) as exc:
        load_registry(path)
    assert str(path) in str(exc.value) and "devices[1]" in str(exc.value) and "d2" in str(exc.value)


def test_missing_registry_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read registry"):
        load_registry(tmp_path / "missing.yaml")


def test_same_external_name_in_two_ecosystems_is_fine(tmp_path):
    reg = load_registry(
        write(tmp_path, ONE_SCHOOL + "devices: [{id: d1, school: s1, kind: fence, external: {frigate: x}}, {id: d2, school: s1, kind: panic_button, external: {zigbee2mqtt: x}}]\n")
    )
    assert reg.by_external("frigate", "x").id == "d1"
    assert reg.by_external("zigbee2mqtt", "x").id == "d2"
