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


# --- where and who: address, coordinates, contacts, site plan (all optional) ------------------

WHERE_WHO = """\
schools:
  - id: s1
    address: "18 Zixing Road, Jinjiang District, Chengdu"
    coordinates: {lat: 30.6571, lon: 104.0817}
    contacts:
      - {role: guard_post, name: Main gate, phone: "+86 28 6555 0001"}
      - {role: police_station, name: Jinjiang Police Station, phone: 110}
      - {role: principal, phone: 028-6555-0002}
    site_plan: plans/s1.png
  - id: s2
    site_plan: https://maps.example.cn/s2/plan.jpg
"""


def test_where_and_who_are_typed_on_the_school(tmp_path):
    from pipeline.registry import Contact, Coordinates

    reg = load_registry(write(tmp_path, WHERE_WHO))
    s1 = reg.school("s1")
    assert s1.address == "18 Zixing Road, Jinjiang District, Chengdu"
    assert s1.coordinates == Coordinates(30.6571, 104.0817)
    assert s1.contacts == (
        Contact("guard_post", "Main gate", "+86 28 6555 0001"),
        Contact("police_station", "Jinjiang Police Station", "110"),  # YAML's number, as its digits
        Contact("principal", "", "028-6555-0002"),
    )
    # a relative site plan is resolved against the registry file, not the working directory
    assert s1.site_plan == str((tmp_path / "plans" / "s1.png").resolve()) and not s1.site_plan_is_url
    s2 = reg.school("s2")
    assert s2.site_plan == "https://maps.example.cn/s2/plan.jpg" and s2.site_plan_is_url
    assert (s2.address, s2.coordinates, s2.contacts) == ("", None, ())


def test_where_and_who_from_json_equal_yaml(tmp_path):
    import json

    import yaml

    (tmp_path / "r.json").write_text(json.dumps(yaml.safe_load(WHERE_WHO)))
    assert load_registry(tmp_path / "r.json").schools == load_registry(write(tmp_path, WHERE_WHO)).schools


@pytest.mark.parametrize(
    "school, match",
    [
        ("coordinates: {lat: 91, lon: 104}", "coordinates out of range"),
        ("coordinates: {lat: 30.6, lon: -180.5}", "coordinates out of range"),
        ("coordinates: {lat: 30.6}", r"coordinates must be \{lat: <number>, lon: <number>\}"),
        ("coordinates: {lat: '30.6', lon: 104}", "coordinates must be"),
        ("coordinates: {lat: true, lon: 104}", "coordinates must be"),
        ("coordinates: [30.6, 104]", "coordinates must be"),
        ("contacts: {role: principal, phone: '1'}", "contacts must be a list"),
        ("contacts: [{role: principal}]", r"contacts\[0\] \(principal\): phone must be digits"),
        ("contacts: [{role: principal, phone: call me}]", "phone must be digits"),
        ("contacts: [{role: principal, phone: '+86 (28) 6555'}]", "phone must be digits"),
        ("contacts: [{role: principal, phone: '12', email: a@b.c}]", r"contacts\[0\]: expected \{role, name, phone\}"),
        ("contacts: [{role: Head Teacher, phone: '123'}]", "role must be a lower-case word"),
        ("contacts: [{phone: '123'}]", "role must be"),
        ("site_plan: ftp://files.example/plan.png", "site_plan URL must be http:// or https://"),
        ("site_plan: plans/s1.pdf", r"site_plan must be an image \(.png"),
        ("site_plan: 42", "site_plan must be a path or an http"),
    ],
)
def test_where_and_who_errors_name_the_school(tmp_path, school, match):
    path = write(tmp_path, f"schools:\n  - id: ok\n  - id: s9\n    {school}\n")
    with pytest.raises(ConfigError, match=match) as exc:
        load_registry(path)
    assert "schools[1] (s9)" in str(exc.value) and str(path) in str(exc.value)


def test_sample_schools_are_placed_in_one_city_with_people_to_call(sample):
    for s in sample.schools.values():
        assert s.address and s.coordinates, s.id
        assert abs(s.coordinates.lat - 30.66) < 0.15 and abs(s.coordinates.lon - 104.06) < 0.15, s.id
        assert {c.role for c in s.contacts} >= {"guard_post", "principal", "police_station"}, s.id
    plan = sample.school("zx-01").site_plan
    assert Path(plan).is_file() and plan.endswith(".svg")  # shipped with the package
