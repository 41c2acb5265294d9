"""What an answer means for a delivery: delivered, retry later, or failed for good. Pure.

- HTTP: 2xx delivered; 408, 425, 429, 5xx, timeouts and connection errors retried; other
  4xx final (the request itself is wrong: a retry gets the same answer).
- DingTalk / WeCom robots answer HTTP 200 with a JSON `errcode`: 0 delivered; rate limits
  (DingTalk 130101, WeCom 45009) and "system busy" (-1) retried; anything else (310000
  security check failed, 300001 bad token, 93000 invalid webhook URL, ...) is a
  configuration error: final.
- Backoff: initial, 2x, 4x ... capped; Retry-After (seconds) is honoured when longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

RETRY_STATUS = frozenset({408, 425, 429})
ROBOT_RETRY_ERRCODES = frozenset({-1, 130101, 45009})


@dataclass(frozen=True)
class Verdict:
    delivered: bool
    retry: bool  # not delivered, worth another try
    error: str = ""


DELIVERED = Verdict(True, False)


def http_verdict(status: int) -> Verdict:
    if 200 <= status < 300:
        return DELIVERED
    if status in RETRY_STATUS or status >= 500:
        return Verdict(False, True, f"HTTP {status}")
    return Verdict(False, False, f"HTTP {status}")


def judge(receiver_type: str, status: int, body: Any) -> Verdict:
    """`body`: the decoded JSON answer (None when not JSON)."""
    verdict = http_verdict(status)
    if not verdict.delivered or receiver_type not in ("dingtalk", "wecom"):
        return verdict
    if not isinstance(body, dict) or "errcode" not in body:
        return Verdict(False, True, "robot answered without errcode")
    code = body.get("errcode")
    if code == 0:
        return DELIVERED
    error = f"errcode {code}: {str(body.get('errmsg', ''))[:200]}"
    return Verdict(False, code in ROBOT_RETRY_ERRCODES, error)


def backoff(attempt: int, initial: float, cap: float, retry_after: float | None = None, jitter: float = 0.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    delay = min(cap, initial * 2 ** (attempt - 1))
    if jitter:
        delay *= 1 + random.uniform(-jitter, jitter)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return max(0.0, delay)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored: the backoff applies)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class ReceiverHealth:
    """Is paging to one receiver failing? Failing: `failing_after` deliveries in a row failed
    for good, or its attempts have failed for `failing_seconds` without a success in between.
    Each method returns True when the state changed (report it once, not on every failure)."""

    def __init__(self, failing_after: int, failing_seconds: float):
        self.failing_after, self.failing_seconds = failing_after, failing_seconds
        self.failed_deliveries = 0
        self.failing_since: float | None = None  # first failed attempt since the last success
        self.failing = False

    def _check(self) -> bool:
        return self.failed_deliveries >= self.failing_after

    def attempt_failed(self, now: float) -> bool:
        if self.failing_since is None:
            self.failing_since = now
        return self._turn(self._check() or now - self.failing_since >= self.failing_seconds)

    def delivery_failed(self, now: float) -> bool:
        self.failed_deliveries += 1
        return self.attempt_failed(now)

    def delivered(self) -> bool:
        self.failed_deliveries, self.failing_since = 0, None
        was, self.failing = self.failing, False
        return was

    def _turn(self, failing: bool) -> bool:
        if failing and not self.failing:
            self.failing = True
            return True
        return False

    def why(self, now: float) -> str:
        since = 0.0 if self.failing_since is None else now - self.failing_since
        return f"{self.failed_deliveries} deliveries in a row failed; attempts failing for {since:.0f} s"


def smtp_verdict(exc: BaseException | None) -> Verdict:
    """An SMTP send's outcome: 4xx replies, disconnects and network errors are retried;
    5xx replies (refused recipient, authentication failed, ...) are final."""
    import smtplib

    if exc is None:
        return DELIVERED
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return Verdict(False, all(400 <= c < 500 for c in codes), f"SMTP recipients refused: {exc.recipients}"[:300])
    if isinstance(exc, smtplib.SMTPResponseException):
        return Verdict(False, 400 <= exc.smtp_code < 500, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:300])
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Verdict(False, False, f"SMTP: {exc}"[:300])
    if isinstance(exc, (smtplib.SMTPException, OSError, TimeoutError)):
        return Verdict(False, True, f"{type(exc).__name__}: {exc}"[:300])
    return Verdict(False, False, f"{type(exc).__name__}: {exc}"[:300])
