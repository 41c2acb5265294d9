"""Console accounts, roles and sessions.

Accounts come from the configuration (`console.accounts`), each with a role:
  guard         acts on its own school's incidents only (and sees only that school), but
                does not dispatch mobile units; sees only the units whose area lists its school
  duty_officer  acts on every school's incidents
  admin         everything, including silences and lockdowns
Passwords are stored as PBKDF2-SHA256 hashes (`huxue console hash-password`), API
tokens as their SHA-256. Browser sessions are signed cookies (HMAC-SHA256) carrying a
random session id, so a logout ends that session on the server too.

A login costs the same work whether the user exists or not (no probing for names), and
`LoginThrottle` answers repeated failures per user and per address with a growing wait.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

ROLES = ("guard", "duty_officer", "admin")
ITERATIONS = 200_000
MAX_TRACKED = 100_000  # login-failure counters kept at most (LoginThrottle)


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    school: str = ""  # guards only
    password_hash: str = ""
    token_sha256: str = ""

    def sees(self, school_id: str) -> bool:
        return self.role != "guard" or school_id == self.school

    def may(self, command: str, school_id: str) -> bool:
        """May this account send `command` for `school_id`?"""
        if command in ("silence", "unsilence", "lockdown", "lift_lockdown"):
            return self.role == "admin"
        if command == "dispatch":  # the duty room sends mobile units; a guard is on site
            return self.role != "guard" and self.sees(school_id)
        return self.sees(school_id)

    def public(self) -> dict[str, str]:
        return {"username": self.username, "role": self.role, "school": self.school}


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(got, base64.b64decode(digest))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, accounts: list[Account], secret: str = "", session_seconds: float = 12 * 3600):
        self.by_name = {a.username: a for a in accounts}
        self.by_token = {a.token_sha256: a for a in accounts if a.token_sha256}
        # without a configured secret, sessions end when the console restarts
        self.secret = (secret or secrets.token_hex(32)).encode()
        self.session_seconds = session_seconds
        self.revoked: dict[str, float] = {}  # session id -> when it would have expired
        self._decoy = ""  # a hash checked for unknown users, as costly as the accounts' own

    def login(self, username: str, password: str) -> Account | None:
        """The account, if the password is right. Blocking (PBKDF2): call it off the event loop."""
        account = self.by_name.get(username)
        if account and account.password_hash:
            return account if check_password(password, account.password_hash) else None
        check_password(password, self.decoy())  # the same work: timing tells no names
        return None

    def decoy(self) -> str:
        if not self._decoy:
            rounds = max((int(a.password_hash.split("$")[1]) for a in self.by_name.values() if a.password_hash.count("$") == 3), default=ITERATIONS)
            self._decoy = hash_password(secrets.token_hex(16), iterations=rounds)
        return self._decoy

    def from_token(self, token: str) -> Account | None:
        return self.by_token.get(token_hash(token))

    def session(self, account: Account, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.session_seconds)
        body = base64.urlsafe_b64encode(f"{account.username}|{expires}|{secrets.token_hex(16)}".encode()).decode()
        return f"{body}.{self._sign(body)}"

    def _session_fields(self, cookie: str) -> tuple[str, int, str] | None:
        body, _, sig = cookie.partition(".")
        if not body or not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            username, expires, sid = base64.urlsafe_b64decode(body.encode()).decode().split("|")
            return username, int(expires), sid
        except (ValueError, UnicodeDecodeError):
            return None

    def from_session(self, cookie: str, now: float | None = None) -> Account | None:
        fields = self._session_fields(cookie)
        if fields is None or fields[1] < (now or time.time()) or fields[2] in self.revoked:
            return None
        return self.by_name.get(fields[0])

    def revoke(self, cookie: str, now: float | None = None) -> None:
        """End a session (logout): its cookie is refused from now on, whoever holds a copy."""
        now = now or time.time()
        self.revoked = {sid: until for sid, until in self.revoked.items() if until >= now}
        fields = self._session_fields(cookie)
        if fields is not None and fields[1] >= now:
            self.revoked[fields[2]] = fields[1]

    def _sign(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()


class LoginThrottle:
    """Failed logins per key (a username, an address): after `limit` failures in a row the
    key waits `base_seconds`, doubling each time the limit is reached again (at most
    `max_seconds`); a success clears the key."""

    def __init__(self, limit: int = 10, base_seconds: float = 30.0, max_seconds: float = 900.0):
        self.limit, self.base_seconds, self.max_seconds = limit, base_seconds, max_seconds
        self._failures: dict[str, int] = {}
        self._strikes: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds until these keys may try again (0: now)."""
        return max([0.0, *(self._until.get(k, 0.0) - now for k in keys)])

    def failed(self, keys: list[str], now: float) -> None:
        if len(self._failures) > MAX_TRACKED:  # random names from a flood: forget counts, keep waits
            self._failures.clear()
        for k in keys:
            self._failures[k] = self._failures.get(k, 0) + 1
            if self._failures[k] >= self.limit:
                self._failures[k] = 0
                strikes = self._strikes.get(k, 0)
                self._until[k] = now + min(self.max_seconds, self.base_seconds * 2**strikes)
                self._strikes[k] = strikes + 1

    def succeeded(self, keys: list[str]) -> None:
        for k in keys:
            self._failures.pop(k, None)
            self._strikes.pop(k, None)
            self._until.pop(k, None)
