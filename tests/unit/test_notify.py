"""pipeline/notify: routing, messages and signatures, retry policy, receiver health; the
notify: configuration section."""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.notify import messages, policy, routing
from pipeline.notify.service import secret_of
from pipeline.records import loads
from pipeline.registry import School

EXAMPLE = """
notify:
  group_id: huxue-notifier
  receivers:
    - {name: ops-hook, type: webhook, url: "https://ops.example/huxue", secret_env: HOOK_SECRET}
    - {name: am, type: webhook, url: "http://am.example/hook", format: alertmanager}
    - {name: duty-room, type: dingtalk, url: "https://oapi.dingtalk.com/robot/send?access_token=abc", secret_file: dingtalk.secret}
    - {name: wecom, type: wecom, url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"}
  routes:
    - {match: {rule: panic}, receivers: [ops-hook, duty-room]}
    - {match: {severity: Severe, school: zx-01}, receivers: [wecom]}
    - {match: {stage: joined}, receivers: [am]}
    - {receivers: [ops-hook]}
  retry_max_seconds: 300
"""


def load(tmp_path: Path, text: str):
    (tmp_path / "dingtalk.secret").write_text("SECabc\n")
    path = tmp_path / "huxue.yaml"
    path.write_text(text)
    return load_config(path, env={})


def alert(**over):
    a = {
        "identifier": "inc-20261201-zx-01-0001-abcdef/opened",
        "incident_id": "inc-20261201-zx-01-0001-abcdef",
        "sent": "2026-12-01T01:02:03.000Z",
        "onset": "2026-12-01T01:02:02.500Z",
        "status": "Actual",
        "msgType": "Alert",
        "school_id": "zx-01",
        "rule": "panic",
        "stage": "opened",
        "severity": "Extreme",
        "urgency": "Immediate",
        "certainty": "Likely",
        "headline": "Panic button pressed at the gate",
        "notify": ["onsite", "mobile", "command"],
        "evidence": [],
        "zone": "gate",
        "deadlines": {"ack_by": "2026-12-01T01:03:02.500Z", "arrive_by": "2026-12-01T01:07:02.500Z"},
    }
    a.update(over)
    return a


# -- configuration ---------------------------------------------------------------------


def test_example_config_loads(tmp_path):
    cfg = load(tmp_path, EXAMPLE)
    n = cfg.notify
    assert [r.name for r in n.receivers] == ["ops-hook", "am", "duty-room", "wecom"]
    assert n.routes[1].match == {"severity": "Severe", "school": "zx-01"} and n.routes[-1].match == {}
    assert n.retry_max_seconds == 300 and n.group_id == "huxue-notifier"
    assert secret_of(cfg, n.receivers[2]) == "SECabc"
    assert secret_of(cfg, n.receivers[0], env={"HOOK_SECRET": "s3"}) == "s3"
    with pytest.raises(RuntimeError, match="HOOK_SECRET"):
        secret_of(cfg, n.receivers[0], env={})
    assert cfg.topics.notifications == "huxue.notifications"
    assert cfg.topics.notifications in cfg.topics.deployment() and cfg.topics.notifications not in cfg.topics.contract()


def test_no_notify_section_is_fine(tmp_path):
    cfg = load(tmp_path, "")
    assert cfg.notify.receivers == () and cfg.notify.routes == ()


@pytest.mark.parametrize(
    "receivers, routes, message",
    [
        ('[{name: a, type: webhook, url: "http://x/"}, {name: a, type: wecom, url: "http://y/"}]', "[]", "used twice"),
        ('[{name: a, type: pager, url: "http://x/"}]', "[]", "type must be one of webhook, dingtalk, wecom, email, sms"),
        ('[{name: a, type: webhook, url: "ftp://x/"}]', "[]", "url must start with http:// or https://"),
        ('[{name: a, type: webhook, url: "http://x/", colour: red}]', "[]", "unknown key.*colour"),
        ('[{name: a, type: webhook, url: "http://x/", format: slack}]', "[]", "format"),
        ('[{name: a, type: dingtalk, url: "http://x/", format: alertmanager}]', "[]", "format is for webhooks"),
        ('[{name: a, type: webhook, url: "http://x/", secret: s, secret_env: E}]', "[]", "one of secret, secret_env, secret_file"),
        ('[{name: a, type: wecom, url: "http://x/", secret: s}]', "[]", "WeCom robots are not signed"),
        ('[{name: a, type: webhook, url: "http://x/", secret_file: nope.txt}]', "[]", "secret_file .*nope.txt not found"),
        ('[{name: a, type: webhook, url: "http://x/"}]', "[{receivers: [b]}]", "unknown receiver.*b; defined: a"),
        ('[{name: a, type: webhook, url: "http://x/"}]', "[{match: {colour: red}, receivers: [a]}]", "unknown match key.*colour"),
        ('[{name: a, type: webhook, url: "http://x/"}]', "[{match: {rule: panic}}]", "needs receivers"),
        ('[{name: a, type: webhook, url: "http://x/"}]', "[{match: {rule: [panic]}, receivers: [a]}]", "mapping of strings"),
        ("{a: 1}", "[]", "expected a list of mappings"),
    ],
)
def test_bad_notify_config_is_one_line(tmp_path, receivers, routes, message):
    with pytest.raises(ConfigError, match=message) as exc:
        load(tmp_path, f"notify:\n  receivers: {receivers}\n  routes: {routes}\n")
    assert "\n" not in str(exc.value)


# -- routing ---------------------------------------------------------------------------


def test_first_matching_route_wins_and_the_last_is_the_default(tmp_path):
    n = load(tmp_path, EXAMPLE).notify
    assert routing.route(alert(), n).receivers == ("ops-hook", "duty-room")
    assert routing.route(alert(rule="perimeter", severity="Severe"), n).receivers == ("wecom",)
    assert routing.route(alert(rule="perimeter", severity="Severe", school_id="zx-02"), n).receivers == ("ops-hook",)
    assert routing.route(alert(rule="perimeter", stage="joined-3"), n).receivers == ("am",)  # folded stage
    assert routing.route(alert(rule="perimeter", severity="Minor"), n).receivers == ("ops-hook",)


def test_without_a_default_route_unmatched_alerts_are_recorded_only(tmp_path):
    n = load(tmp_path, EXAMPLE.replace("    - {receivers: [ops-hook]}\n", "")).notify
    d = routing.route(alert(rule="perimeter", severity="Minor"), n)
    assert d.receivers == () and d.reason == "no_route"


def test_held_and_empty_notify_are_not_paged_but_panic_always_is(tmp_path):
    n = load(tmp_path, EXAMPLE).notify
    held = routing.route(alert(rule="perimeter", held="lockdown", notify=[]), n)
    assert held.receivers == () and held.reason == "held: lockdown"
    empty = routing.route(alert(rule="perimeter", notify=[]), n)
    assert empty.receivers == () and empty.reason == "notify_empty"
    assert routing.route(alert(held="lockdown", notify=[]), n).receivers == ("ops-hook", "duty-room")
    assert routing.route(alert(notify=[]), n).receivers == ("ops-hook", "duty-room")


def test_drills_are_delivered_and_marked(tmp_path):
    n = load(tmp_path, EXAMPLE).notify
    d = routing.route(alert(status="Exercise"), n)
    assert d.receivers == ("ops-hook", "duty-room") and d.drill
    body = messages.dingtalk_body(alert(status="Exercise"), None)
    assert body["markdown"]["title"].startswith("[DRILL] ") and "drill" in body["markdown"]["text"]
    assert "drill" not in messages.dingtalk_body(alert(), None)["markdown"]["text"].lower()


def test_status_and_stage_match(tmp_path):
    text = EXAMPLE.replace("  routes:\n", "  routes:\n    - {match: {status: Exercise}, receivers: [wecom]}\n    - {match: {stage: resolved}, receivers: [am]}\n")
    n = load(tmp_path, text).notify
    assert routing.route(alert(status="Exercise"), n).receivers == ("wecom",)
    assert routing.route(alert(stage="resolved"), n).receivers == ("am",)


# -- messages and signatures -----------------------------------------------------------


def test_webhook_body_is_the_alert_and_the_signature_is_hmac_of_the_exact_bytes(tmp_path):
    r = load(tmp_path, EXAMPLE).notify.receivers[0]
    a = alert()
    req = messages.build(r, "s3cret", a, None, 0)
    assert loads(req.body) == a
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == a["identifier"]
    expected = hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
    assert req.headers["X-Huxue-Signature"] == f"sha256={expected}"
    assert "X-Huxue-Signature" not in messages.build(r, "", a, None, 0).headers


def test_signature_matches_githubs_test_vector():
    # the same construction as GitHub's X-Hub-Signature-256 (paging.md §5)
    assert messages.sign_body("It's a Secret to Everybody", b"Hello, World!") == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_dingtalk_url_is_signed_as_documented(tmp_path):
    r = load(tmp_path, EXAMPLE).notify.receivers[2]
    ts = 1764550923123
    req = messages.build(r, "SECabc", alert(), None, ts)
    url = urllib.parse.urlsplit(req.url)
    q = urllib.parse.parse_qs(url.query)  # decodes once, as DingTalk does
    assert q["access_token"] == ["abc"] and q["timestamp"] == [str(ts)]
    # the documented algorithm (paging.md §1), written out independently
    string_to_sign = f"{ts}\nSECabc".encode()
    sign = base64.b64encode(hmac.new(b"SECabc", string_to_sign, digestmod=hashlib.sha256).digest()).decode()
    assert q["sign"] == [sign]
    assert "%25" not in req.url  # encoded exactly once
    assert messages.dingtalk_url("https://x/robot/send?access_token=t", "", ts) == "https://x/robot/send?access_token=t"


def test_dingtalk_and_wecom_markdown(tmp_path):
    school = School(id="zx-01", name="Zhongxin No. 1 Primary", timezone="Asia/Shanghai")
    d = messages.dingtalk_body(alert(), school)
    assert d["msgtype"] == "markdown" and d["markdown"]["title"] == "Panic button pressed at the gate"
    text = d["markdown"]["text"]
    assert text.startswith("### Panic button pressed at the gate\n")  # headline first
    assert "Zhongxin No. 1 Primary (zx-01), zone gate" in text and "New incident" in text
    assert "2026-12-01 09:02:03" in text  # the school's local time
    assert "http" not in text
    w = messages.wecom_body(alert(stage="onsite_overdue"), school)
    assert w["msgtype"] == "markdown" and "On-site guards have not acknowledged in time" in w["markdown"]["content"]
    assert w["markdown"]["content"].startswith('## <font color="warning">Panic button pressed')
    long = messages.wecom_body(alert(headline="危" * 5000), school)
    assert len(long["markdown"]["content"].encode()) <= 4096


def test_alertmanager_body_shape(tmp_path):
    r = load(tmp_path, EXAMPLE).notify.receivers[1]
    firing = loads(messages.build(r, "", alert(), None, 0).body)
    assert firing["version"] == "4" and firing["status"] == "firing" and firing["receiver"] == "am"
    assert firing["groupKey"] == '{}:{incident_id="inc-20261201-zx-01-0001-abcdef"}'
    assert set(firing) >= {"truncatedAlerts", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    (a,) = firing["alerts"]
    assert a["labels"] == {"alertname": "panic", "severity": "Extreme", "school": "zx-01", "stage": "opened", "incident_id": "inc-20261201-zx-01-0001-abcdef"}
    assert a["annotations"]["summary"] == "Panic button pressed at the gate" and "New incident" in a["annotations"]["description"]
    assert (a["startsAt"], a["endsAt"], a["status"]) == ("2026-12-01T01:02:02.500Z", "0001-01-01T00:00:00Z", "firing")
    assert len(a["fingerprint"]) == 16 and int(a["fingerprint"], 16) >= 0
    for stage in ("resolved", "false_alarm", "expired", "recovered", "lifted", "ended", "superseded", "restored", "window_ended"):
        resolved = loads(messages.build(r, "", alert(stage=stage, sent="2026-12-01T01:09:00.000Z"), None, 0).body)
        assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] == "2026-12-01T01:09:00.000Z"
        assert resolved["alerts"][0]["fingerprint"] == a["fingerprint"]  # the same incident
    assert loads(messages.build(r, "", alert(stage="mobile_overdue"), None, 0).body)["status"] == "firing"
    drill = loads(messages.build(r, "", alert(status="Exercise"), None, 0).body)
    assert drill["alerts"][0]["labels"]["drill"] == "true" and drill["alerts"][0]["annotations"]["summary"].startswith("[DRILL]")


def test_stage_words():
    assert messages.stage_words("joined-3") == "More evidence joined the incident (#3)"
    assert messages.stage_words("something_new") == "Something new"


# -- retry policy and health ---------------------------------------------------------------


@pytest.mark.parametrize("status, delivered, retry", [
    (200, True, False), (202, True, False), (204, True, False),
    (500, False, True), (502, False, True), (503, False, True), (429, False, True), (408, False, True),
    (400, False, False), (401, False, False), (403, False, False), (404, False, False), (410, False, False), (422, False, False),
])
def test_http_statuses(status, delivered, retry):
    v = policy.judge("webhook", status, None)
    assert (v.delivered, v.retry) == (delivered, retry)


@pytest.mark.parametrize("kind, answer, delivered, retry", [
    ("dingtalk", {"errcode": 0, "errmsg": "ok"}, True, False),
    ("dingtalk", {"errcode": 130101, "errmsg": "send too fast"}, False, True),
    ("dingtalk", {"errcode": 310000, "errmsg": "sign not match"}, False, False),
    ("dingtalk", {"errcode": 300001, "errmsg": "token is not exist"}, False, False),
    ("wecom", {"errcode": 0, "errmsg": "ok"}, True, False),
    ("wecom", {"errcode": 45009, "errmsg": "api freq out of limit"}, False, True),
    ("wecom", {"errcode": 93000, "errmsg": "invalid webhook url"}, False, False),
    ("wecom", {"errcode": -1, "errmsg": "system busy"}, False, True),
    ("wecom", None, False, True),
])
def test_robot_errcodes(kind, answer, delivered, retry):
    v = policy.judge(kind, 200, answer)
    assert (v.delivered, v.retry) == (delivered, retry)
    if not delivered and answer:
        assert str(answer["errcode"]) in v.error


def test_robot_http_errors_follow_http():
    assert policy.judge("dingtalk", 503, None).retry and not policy.judge("dingtalk", 404, None).retry


def test_backoff_doubles_and_caps_and_honours_retry_after():
    assert [policy.backoff(n, 1, 30) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.backoff(1, 1, 30, retry_after=12) == 12
    assert policy.backoff(3, 1, 30, retry_after=1) == 4
    assert 0.9 <= policy.backoff(1, 1, 30, jitter=0.1) <= 1.1
    assert policy.retry_after_seconds("5") == 5 and policy.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None


def test_receiver_health_reports_once_and_recovers():
    h = policy.ReceiverHealth(failing_after=3, failing_seconds=300)
    assert not h.attempt_failed(0) and not h.delivery_failed(10) and not h.delivery_failed(20)
    assert h.delivery_failed(30) and h.failing  # the third failed delivery in a row
    assert not h.delivery_failed(40)  # reported once
    assert h.delivered() and not h.failing and not h.delivered()
    slow = policy.ReceiverHealth(failing_after=3, failing_seconds=300)
    assert not slow.attempt_failed(1000) and not slow.attempt_failed(1299)
    assert slow.attempt_failed(1300)  # failing for 5 minutes, whatever the count


def test_notifier_kafka_account_and_acls(tmp_path):
    from pipeline import kafka_client
    from pipeline.stack import kafka_auth

    cfg = load(tmp_path, "kafka:\n  security_protocol: SASL_PLAINTEXT\n  topic_prefix: 'c.'\nnotify:\n  group_id: pager\n" + f"stack:\n  home: {tmp_path / 'home'}\n")
    assert kafka_client.ACCOUNTS["notifier"] == "huxue-notifier"
    assert "huxue-notifier" in kafka_auth.accounts(cfg)  # generated by `huxue stack up`
    assert kafka_client.client_settings(cfg, "notifier")["sasl_plain_username"] == "huxue-notifier"
    rows = {(k, n): set(o) for k, n, o in kafka_auth.acl_table(cfg)["huxue-notifier"]}
    assert rows == {
        ("topic", "c.alerts"): {"Read", "Describe", "Create"},
        ("topic", "c.notifications"): {"Read", "Write", "Describe", "Create"},
        ("group", "pager"): {"Read", "Describe"},
        ("cluster", "kafka-cluster"): {"IdempotentWrite"},
    }
    # the worker reads the notifier's records (rule paging_health), never writes them
    assert {o for k, n, ops in kafka_auth.acl_table(cfg)["huxue-worker"] if n == "c.notifications" for o in ops} == {"Read", "Describe", "Create"}


# -- email ------------------------------------------------------------------------------


def test_email_receiver_config_and_message(tmp_path):
    text = EXAMPLE.replace("  routes:\n", '    - {name: mail, type: email, url: "smtp://mail.example:587", to: [duty@example.org], from_addr: huxue@example.org, username: huxue, secret_env: SMTP_PW}\n  routes:\n')
    cfg = load(tmp_path, text)
    r = cfg.notify.receivers[-1]
    assert (r.type, r.to, r.from_addr, r.starttls) == ("email", ("duty@example.org",), "huxue@example.org", True)
    school = School(id="zx-01", name="Zhongxin No. 1 Primary", timezone="Asia/Shanghai")
    msg = messages.email_message(r, alert(status="Exercise"), school)
    assert msg["Subject"] == "[DRILL] Panic button pressed at the gate" and msg["To"] == "duty@example.org"
    assert msg["X-Huxue-Identifier"] == alert()["identifier"] and msg["Message-ID"].endswith("@example.org>")
    assert msg["Message-ID"] == messages.email_message(r, alert(), school)["Message-ID"]  # same alert, same id
    assert "Zhongxin No. 1 Primary (zx-01), zone gate" in msg.get_content()


@pytest.mark.parametrize("receiver, message", [
    ('{name: m, type: email, url: "http://x/", to: [a@b], from_addr: c@d}', "smtp:// or smtps://"),
    ('{name: m, type: email, url: "smtp://x", from_addr: c@d}', "needs to"),
    ('{name: m, type: email, url: "smtp://x", to: [a@b], from_addr: c@d, username: u}', "username needs its password"),
    ('{name: m, type: webhook, url: "http://x/", to: [a@b]}', "to is for email and sms receivers"),
])
def test_bad_email_receivers(tmp_path, receiver, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, f"notify:\n  receivers: [{receiver}]\n")


def test_smtp_verdicts():
    import smtplib

    assert policy.smtp_verdict(None).delivered
    assert policy.smtp_verdict(smtplib.SMTPServerDisconnected("gone")).retry
    assert policy.smtp_verdict(ConnectionRefusedError()).retry
    assert policy.smtp_verdict(smtplib.SMTPResponseException(451, b"try later")).retry
    assert not policy.smtp_verdict(smtplib.SMTPAuthenticationError(535, b"bad login")).retry
    assert not policy.smtp_verdict(smtplib.SMTPRecipientsRefused({"a@b": (550, b"no such user")})).retry
    assert policy.smtp_verdict(smtplib.SMTPRecipientsRefused({"a@b": (452, b"mailbox full")})).retry
    assert not policy.smtp_verdict(smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server.")).retry


def test_sms_receiver(tmp_path):
    text = EXAMPLE.replace("  routes:\n", '    - {name: sms, type: sms, url: "https://sms.example/send", to: ["+8613800000000"], secret: k}\n  routes:\n')
    r = load(tmp_path, text).notify.receivers[-1]
    school = School(id="zx-01", name="中心一小", timezone="Asia/Shanghai")
    req = messages.build(r, "k", alert(status="Exercise"), school, 0)
    body = loads(req.body)
    assert body["to"] == ["+8613800000000"] and body["identifier"] == alert()["identifier"]
    assert body["text"] == "[DRILL] Panic button pressed at the gate | 中心一小 | New incident | inc-20261201-zx-01-0001-abcdef"
    assert req.headers["X-Huxue-Signature"] == messages.sign_body("k", req.body) and req.headers["Idempotency-Key"] == alert()["identifier"]
    assert len(messages.sms_text(alert(headline="x" * 1000), school)) == messages.SMS_MAX_CHARS
    with pytest.raises(ConfigError, match="needs to"):
        load(tmp_path, 'notify:\n  receivers: [{name: s, type: sms, url: "https://x/"}]\n')


def test_each_stage_pages_the_people_of_its_roles_besides_the_routes(tmp_path):
    """notify.roles for every school, plus the school's own `notify:` in the registry: a panic's
    `opened` reaches guards, mobile units and the command centre; `onsite_overdue` (no answer
    from the guards) the command centre and the mobile units; later ladder stages the command
    centre; roles the alert's `notify` list leaves out page nobody."""
    import yaml as _yaml

    from pipeline.config import load_config
    from pipeline.notify.service import check_people
    from pipeline.registry import load_registry

    (tmp_path / "registry.yaml").write_text(_yaml.safe_dump({
        "schools": [{"id": "zx-01", "name": "Zixing", "notify": {"onsite": ["zx01-guards"], "mobile": ["patrol-3"]}},
                    {"id": "bh-02", "name": "Binhu"}],
        "devices": [],
    }))
    hooks = [{"name": n, "type": "webhook", "url": f"https://hooks.example/{n}"} for n in ("zx01-guards", "patrol-3", "duty-room", "ops")]
    (tmp_path / "huxue.yaml").write_text(_yaml.safe_dump({
        "registry": "registry.yaml",
        "notify": {"receivers": hooks, "roles": {"command": ["duty-room"]}, "routes": [{"match": {"rule": "perimeter"}, "receivers": ["ops"]}]},
    }))
    cfg = load_config(tmp_path / "huxue.yaml", env={})
    reg = load_registry(cfg.registry_path)
    check_people(cfg, reg)
    everyone = ["onsite", "mobile", "command"]

    def paged(stage, school="zx-01", rule="panic", notify=everyone):
        return set(routing.route(alert(stage=stage, school_id=school, rule=rule, notify=notify), cfg.notify, reg).receivers)

    assert paged("opened") == {"zx01-guards", "patrol-3", "duty-room"}
    assert paged("onsite_overdue") == {"patrol-3", "duty-room"}
    assert paged("mobile_overdue") == {"duty-room"}
    assert paged("dispatched-2") == {"patrol-3", "duty-room"}  # the units learn which one goes
    assert paged("units-3") == {"duty-room"}  # the nearest units changed: not the guards
    assert paged("joined-2") == {"zx01-guards", "patrol-3", "duty-room"}
    assert paged("opened", school="bh-02") == {"duty-room"}  # no people of its own
    assert paged("opened", rule="perimeter", notify=["onsite", "command"]) == {"ops", "zx01-guards", "duty-room"}
    assert paged("opened", rule="device_health", notify=["command"]) == {"duty-room"}

    (tmp_path / "registry.yaml").write_text(_yaml.safe_dump({"schools": [{"id": "zx-01", "notify": {"onsite": ["nobody"]}}], "devices": []}))
    with pytest.raises(RuntimeError, match="school zx-01 notify.onsite names unknown receiver"):
        check_people(cfg, load_registry(cfg.registry_path))
