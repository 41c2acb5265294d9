"""Accounts, ACL, password hashes and the generated secrets, without a broker
(tests/integration/test_e2e_lockdown.py runs them on a real Mosquitto)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import stat

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pipeline import credentials, mqtt_auth
from pipeline.config import ConfigError, load_config
from pipeline.registry import load_registry
from pipeline.stack import tls

REGISTRY = {
    "schools": [{"id": "s1", "name": "S1", "timezone": "Asia/Shanghai"}],
    "devices": [
        {"id": "s1-btn-1", "school": "s1", "kind": "panic_button", "zone": "gate"},
        {"id": "s1-cam-1", "school": "s1", "kind": "video_analytics", "zone": "gate", "external": {"frigate": "gate_cam"}},
        {"id": "s1-sos-1", "school": "s1", "kind": "panic_button", "zone": "office", "external": {"zigbee2mqtt": "office_sos"}},
    ],
}


def setup(tmp_path, registry=REGISTRY, **mqtt):
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry))
    raw = {"registry": "registry.yaml", "stack": {"home": str(tmp_path / "home")}, "bridge": {"client_id": "br"}}
    if mqtt:
        raw["mqtt"] = mqtt
    (tmp_path / "huxue.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "huxue.yaml", env={})
    return cfg, load_registry(cfg.registry_path)


def test_each_account_gets_only_its_own_topics(tmp_path):
    cfg, reg = setup(tmp_path)
    accts = {a.name: a for a in mqtt_auth.accounts(cfg, reg)}
    assert accts["s1-btn-1"].acl == ("write huxue/v1/devices/s1-btn-1/#",)
    # devices behind a third-party source have no account: the source publishes for them
    assert "s1-cam-1" not in accts and "s1-sos-1" not in accts
    assert accts["frigate"].acl == ("readwrite frigate/#",) and accts["zigbee2mqtt"].acl == ("readwrite zigbee2mqtt/#",)
    for bridge in ("br", "br-priority"):
        assert accts[bridge].acl and all(rule.startswith("read ") for rule in accts[bridge].acl)
        assert "read huxue/v1/devices/+/events" in accts[bridge].acl
    for tool in mqtt_auth.TOOLS:
        assert "write huxue/v1/devices/#" in accts[tool].acl
    text = mqtt_auth.acl_text(list(accts.values()))
    assert "user s1-btn-1\ntopic write huxue/v1/devices/s1-btn-1/#\n" in text
    assert "pattern" not in text  # explicit per account: no rule reaches an account by accident


def test_an_account_name_used_twice_is_refused(tmp_path):
    reg = {**REGISTRY, "devices": [*REGISTRY["devices"], {"id": "frigate", "school": "s1", "kind": "fence", "zone": "gate"}]}
    cfg, registry = setup(tmp_path, reg)
    with pytest.raises(RuntimeError, match="'frigate' is both"):
        mqtt_auth.accounts(cfg, registry)


def test_password_hash_is_mosquittos_pbkdf2_sha512_format():
    line = mqtt_auth.password_hash("secret", salt=b"0123456789ab")
    _, seven, rounds, salt, digest = line.split("$")
    assert (seven, rounds) == ("7", "101")
    assert base64.b64decode(salt) == b"0123456789ab"
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", b"secret", b"0123456789ab", 101)
    assert mqtt_auth.password_hash("secret") != mqtt_auth.password_hash("secret")  # salted


def test_sync_keeps_passwords_drops_removed_accounts_and_writes_private_files(tmp_path):
    cfg, reg = setup(tmp_path)
    first = mqtt_auth.sync(cfg, reg)
    assert first.changed and "s1-btn-1" in first.added
    store = credentials.Store(cfg.home, "mqtt")
    before = store.load()
    assert mqtt_auth.sync(cfg, reg).changed is False  # nothing new: Mosquitto needs no reload
    smaller = {**REGISTRY, "devices": [*REGISTRY["devices"][1:], {"id": "s1-btn-9", "school": "s1", "kind": "panic_button", "zone": "gate"}]}
    cfg2, reg2 = setup(tmp_path, smaller)
    second = mqtt_auth.sync(cfg2, reg2)
    assert second.added == ["s1-btn-9"] and second.removed == ["s1-btn-1"] and second.changed
    after = store.load()
    assert after["frigate"] == before["frigate"] and "s1-btn-1" not in after
    passwd, acl = mqtt_auth.files(cfg2)
    assert sorted(line.split(":")[0] for line in passwd.read_text().splitlines()) == sorted(after)
    for path in (passwd, acl, store.path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_rotate_changes_one_password(tmp_path):
    cfg, reg = setup(tmp_path)
    mqtt_auth.sync(cfg, reg)
    before = credentials.Store(cfg.home, "mqtt").load()
    new = mqtt_auth.rotate(cfg, reg, "s1-btn-1")
    after = credentials.Store(cfg.home, "mqtt").load()
    assert after["s1-btn-1"] == new != before["s1-btn-1"]
    assert {k: v for k, v in after.items() if k != "s1-btn-1"} == {k: v for k, v in before.items() if k != "s1-btn-1"}
    with pytest.raises(RuntimeError, match="reports through zigbee2mqtt"):
        mqtt_auth.rotate(cfg, reg, "s1-sos-1")


def test_login_prefers_the_url_then_home_and_none_when_open(tmp_path):
    cfg, reg = setup(tmp_path)
    with pytest.raises(credentials.CredentialsError, match="huxue stack up"):
        mqtt_auth.login(cfg, "s1-btn-1")  # nothing generated yet: one clear line
    mqtt_auth.sync(cfg, reg)
    assert mqtt_auth.login(cfg, "s1-btn-1").password == credentials.Store(cfg.home, "mqtt").password("s1-btn-1")
    url_cfg, _ = setup(tmp_path, url="mqtt://ops:pw@127.0.0.1:1883")
    assert mqtt_auth.login(url_cfg, "s1-btn-1") == mqtt_auth.Login("ops", "pw")
    open_cfg, _ = setup(tmp_path, auth=False)
    assert mqtt_auth.login(open_cfg, "s1-btn-1") is None


def test_a_missing_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="mqtt.ca_file"):
        setup(tmp_path, url="mqtts://127.0.0.1:8883", ca_file="nope.pem")


def test_local_ca_signs_a_server_certificate_for_the_host(tmp_path):
    ca_crt, crt, key = tls.ensure(tmp_path, "10.1.2.3")
    ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.1.2.3") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    # idempotent: the same files are kept; a new host gets a new certificate from the same CA
    assert tls.ensure(tmp_path, "10.1.2.3") == (ca_crt, crt, key) and crt.read_bytes() == cert.public_bytes(Encoding.PEM)
    tls.ensure(tmp_path, "huxue.example")
    renewed = x509.load_pem_x509_certificate(crt.read_bytes())
    renewed.verify_directly_issued_by(ca)
    assert "huxue.example" in renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_events_name_the_account_the_acl_lets_publish_there(tmp_path):
    from pipeline.ingest.router import Router
    from pipeline.records import loads

    cfg, reg = setup(tmp_path)
    native = b'{"event_id": "e1", "type": "panic.pressed", "ts": "2026-12-01T08:00:00Z"}'
    [urgent, event] = Router(cfg, reg).route("huxue/v1/devices/s1-btn-1/events", native, received_at=1.0e9)
    assert loads(event.value)["mqtt_account"] == loads(urgent.value)["mqtt_account"] == "s1-btn-1"
    records = Router(cfg, reg).route("zigbee2mqtt/office_sos", b'{"action": "sos"}', received_at=1.0e9)
    assert {loads(r.value)["mqtt_account"] for r in records} == {"zigbee2mqtt"}
    assert mqtt_auth.account_of_topic(cfg, "frigate/events") == "frigate"
    open_cfg, _ = setup(tmp_path, auth=False)  # nobody is authenticated: no such field
    [_, event] = Router(open_cfg, reg).route("huxue/v1/devices/s1-btn-1/events", native, received_at=1.0e9)
    assert "mqtt_account" not in loads(event.value)


def test_several_bridges_each_get_both_sessions_accounts(tmp_path):
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(REGISTRY))
    (tmp_path / "huxue.yaml").write_text(yaml.safe_dump({"registry": "registry.yaml", "stack": {"home": str(tmp_path / "home")}, "bridge": {"client_id": "br", "share_group": "bridges", "instances": 3}}))
    cfg = load_config(tmp_path / "huxue.yaml", env={})
    assert mqtt_auth.bridge_accounts(cfg) == ("br", "br-priority", "br-2", "br-2-priority", "br-3", "br-3-priority")
    accts = {a.name: a for a in mqtt_auth.accounts(cfg, load_registry(cfg.registry_path))}
    # the ACL grants the plain filters: Mosquitto checks a $share/<group>/<filter> subscription against <filter>
    assert accts["br-3"].acl == accts["br"].acl and "read huxue/v1/devices/+/events" in accts["br-3"].acl
