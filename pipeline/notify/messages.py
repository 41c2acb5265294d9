"""The HTTP request each receiver type gets for an alert, and the signatures. Pure.

- webhook, format huxue: the alert's JSON as on the alerts topic;
  format alertmanager: an Alertmanager webhook v4 body (one alert per incident stage).
  Headers: Idempotency-Key (the alert identifier, the same on every try and after a
  restart) and, with a secret, X-Huxue-Signature: sha256=<hex HMAC-SHA256 of the body bytes>.
- dingtalk: a custom robot markdown message; with a secret the URL is signed (加签:
  timestamp in ms and sign = base64 HMAC-SHA256 of "{timestamp}\\n{secret}", URL-encoded).
- wecom: a group robot markdown message (the key in the URL is the secret).
- email: a plain-text mail (email_message; sent by service.py with smtplib).
- sms: a generic SMS HTTP gateway: {"to": [phones], "text": one line, identity fields},
  headers as a webhook's (Idempotency-Key, X-Huxue-Signature).

Texts put the headline first, then the school's name, the stage in words, and carry no links.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from pipeline.config import ReceiverConfig
from pipeline.records import dumps, parse_ts
from pipeline.registry import School

# Stages that end an incident (or a condition): Alertmanager `resolved`.
CLOSING_STAGES = frozenset({"resolved", "false_alarm", "expired", "recovered", "lifted", "ended", "superseded", "restored", "window_ended"})

STAGE_WORDS = {
    "opened": "New incident",
    "onsite_overdue": "On-site guards have not acknowledged in time",
    "mobile_late": "Mobile unit late: the 3-minute target is missed",
    "mobile_overdue": "Mobile unit overdue: the 5-minute limit is missed",
    "acknowledged": "Acknowledged by the on-site guards",
    "arrived": "Mobile unit on scene",
    "resolved": "Resolved",
    "false_alarm": "Closed as a false alarm",
    "corroborated": "Corroborated by another device",
    "joined": "More evidence joined the incident",
    "expired": "Closed: nothing more happened",
    "superseded": "Taken over by a corroborated incident",
    "recovered": "Recovered: works again",  # a device, or paging to a receiver (rule paging_health)
    "restored": "Post staffed again",
    "window_ended": "Staffing window ended",
    "lifted": "Lockdown lifted",
    "ended": "Ended",
}
DRILL = "[DRILL] "
NOT_ENDED = "0001-01-01T00:00:00Z"  # Alertmanager: endsAt unknown
MAX_TEXT_BYTES = 4000  # WeCom markdown takes 4096 bytes; DingTalk about as much


@dataclass(frozen=True)
class Request:
    url: str  # fully encoded (signed DingTalk URLs included)
    body: bytes
    headers: dict[str, str]


def is_closing(stage: str) -> bool:
    return stage in CLOSING_STAGES


def stage_words(stage: str) -> str:
    base, _, n = stage.partition("-")
    words = STAGE_WORDS.get(base, stage.replace("_", " ").capitalize())
    return f"{words} (#{n})" if n else words


def sign_body(secret: str, body: bytes) -> str:
    """X-Huxue-Signature value: `sha256=` + hex HMAC-SHA256(secret, exact body bytes)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk 加签: base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), not URL-encoded."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def dingtalk_url(url: str, secret: str, timestamp_ms: int) -> str:
    """The robot URL with `timestamp` and the URL-encoded `sign` appended (encoded once)."""
    if not secret:
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={timestamp_ms}&sign={quote(dingtalk_sign(secret, timestamp_ms), safe='')}"


def _local(ts: str, school: School | None) -> str:
    try:
        tz = ZoneInfo(school.timezone) if school else None
        return datetime.fromtimestamp(parse_ts(ts), tz=tz).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, KeyError):
        return ts


def headline(alert: dict[str, Any]) -> str:
    text = alert.get("headline") or f"{alert.get('rule', '?')} {alert.get('stage', '?')}"
    return (DRILL if alert.get("status") == "Exercise" else "") + text


def lines(alert: dict[str, Any], school: School | None) -> list[str]:
    """The facts under the headline, most important first; no links."""
    name = school.name if school else alert.get("school_id", "?")
    where = f"{name} ({alert.get('school_id', '?')})" + (f", zone {alert['zone']}" if alert.get("zone") else "")
    out = [
        where,
        f"{stage_words(str(alert.get('stage', '')))} · {alert.get('severity', '?')} · {alert.get('rule', '?')}",
    ]
    if alert.get("status") == "Exercise":
        out.append("This is a drill (Exercise), not a real emergency.")
    if alert.get("held"):
        out.append(f"Held back: {alert['held']}")
    deadlines = alert.get("deadlines") or {}
    if alert.get("stage") == "opened" and deadlines:
        parts = [f"{k.removesuffix('_by').replace('_', ' ')} by {_local(v, school)[-8:]}" for k, v in sorted(deadlines.items())]
        out.append("Deadlines: " + ", ".join(parts))
    if alert.get("by"):
        out.append(f"By {alert['by']}" + (f": {alert['note']}" if alert.get("note") else ""))
    out.append(f"Incident {alert.get('incident_id', '?')}, sent {_local(str(alert.get('sent', '')), school)}")
    return out


def _cut(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def dingtalk_body(alert: dict[str, Any], school: School | None) -> dict[str, Any]:
    head = headline(alert)
    text = f"### {head}\n\n" + "\n\n".join(lines(alert, school))
    return {"msgtype": "markdown", "markdown": {"title": _cut(head, 200), "text": _cut(text)}}


def wecom_body(alert: dict[str, Any], school: School | None) -> dict[str, Any]:
    head = headline(alert)
    color = "warning" if alert.get("severity") in ("Extreme", "Severe") else "comment"
    text = f'## <font color="{color}">{head}</font>\n' + "\n".join(f"> {line}" for line in lines(alert, school))
    return {"msgtype": "markdown", "markdown": {"content": _cut(text)}}


SMS_MAX_CHARS = 300  # about 5 segments of 70 Chinese characters; long texts cost and split


def sms_text(alert: dict[str, Any], school: School | None) -> str:
    """One short line: headline, school, stage in words, incident id."""
    name = school.name if school else str(alert.get("school_id", "?"))
    text = f"{headline(alert)} | {name} | {stage_words(str(alert.get('stage', '')))} | {alert.get('incident_id', '')}"
    return text if len(text) <= SMS_MAX_CHARS else text[: SMS_MAX_CHARS - 3] + "..."


def sms_body(receiver: ReceiverConfig, alert: dict[str, Any], school: School | None) -> dict[str, Any]:
    """A generic SMS gateway request: recipients and the text, with the alert's identity."""
    return {
        "to": list(receiver.to),
        "text": sms_text(alert, school),
        "identifier": alert.get("identifier", ""),
        "incident_id": alert.get("incident_id", ""),
        "school_id": alert.get("school_id", ""),
        "severity": alert.get("severity", ""),
        "status": alert.get("status", ""),
    }


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits over the incident's identity labels (not stage or severity), so the
    resolved message carries the fingerprint of the firing ones."""
    identity = "\xff".join(f"{k}\xff{labels.get(k, '')}" for k in ("alertname", "school", "incident_id"))
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


def alertmanager_body(alert: dict[str, Any], receiver: str, school: School | None) -> dict[str, Any]:
    closing = is_closing(str(alert.get("stage", "")))
    status = "resolved" if closing else "firing"
    labels = {
        "alertname": str(alert.get("rule", "")),
        "severity": str(alert.get("severity", "")),
        "school": str(alert.get("school_id", "")),
        "stage": str(alert.get("stage", "")),
        "incident_id": str(alert.get("incident_id", "")),
    }
    if alert.get("status") == "Exercise":
        labels["drill"] = "true"
    annotations = {"summary": headline(alert), "description": "\n".join(lines(alert, school))}
    sent = str(alert.get("sent", ""))
    item = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": str(alert.get("onset") or sent),
        "endsAt": sent if closing else NOT_ENDED,
        "generatorURL": "",
        "fingerprint": fingerprint(labels),
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{incident_id="{labels["incident_id"]}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"incident_id": labels["incident_id"]},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [item],
    }


def build(receiver: ReceiverConfig, secret: str, alert: dict[str, Any], school: School | None, now_ms: int) -> Request:
    """The request one attempt sends (DingTalk signs with the attempt's time)."""
    json_headers = {"Content-Type": "application/json"}
    if receiver.type == "webhook":
        doc = alertmanager_body(alert, receiver.name, school) if receiver.format == "alertmanager" else alert
        body = dumps(doc)
        headers = {**json_headers, "Idempotency-Key": str(alert.get("identifier", ""))}
        if secret:
            headers["X-Huxue-Signature"] = sign_body(secret, body)
        return Request(receiver.url, body, headers)
    if receiver.type == "dingtalk":
        return Request(dingtalk_url(receiver.url, secret, now_ms), dumps(dingtalk_body(alert, school)), json_headers)
    if receiver.type == "wecom":
        return Request(receiver.url, dumps(wecom_body(alert, school)), json_headers)
    if receiver.type == "sms":
        body = dumps(sms_body(receiver, alert, school))
        headers = {**json_headers, "Idempotency-Key": str(alert.get("identifier", ""))}
        if secret:
            headers["X-Huxue-Signature"] = sign_body(secret, body)
        return Request(receiver.url, body, headers)
    raise ValueError(f"unknown receiver type {receiver.type!r}")


def email_message(receiver: ReceiverConfig, alert: dict[str, Any], school: School | None) -> EmailMessage:
    """A plain-text mail: subject = headline, body = the facts. Its Message-ID is derived
    from the alert identifier, so a copy sent again after a crash is the same message."""
    msg = EmailMessage()
    msg["Subject"] = _cut(headline(alert), 250)
    msg["From"] = receiver.from_addr
    msg["To"] = ", ".join(receiver.to)
    domain = receiver.from_addr.rpartition("@")[2] or "huxue"
    msg["Message-ID"] = f"<{hashlib.sha256(str(alert.get('identifier', '')).encode()).hexdigest()[:32]}@{domain}>"
    msg["X-Huxue-Identifier"] = str(alert.get("identifier", ""))
    if alert.get("severity") in ("Extreme", "Severe") and alert.get("status") != "Exercise":
        msg["Importance"] = "high"
    msg.set_content(headline(alert) + "\n\n" + "\n".join(lines(alert, school)) + "\n")
    return msg
