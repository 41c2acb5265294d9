"""Console accounts, roles and sessions.

Accounts come from the configuration (`console.accounts`), each with a role:
  guard         acts on its own school's incidents only (and sees only that school)
  duty_officer  acts on every school's incidents
  admin         everything, including silences and lockdowns
Passwords are stored as PBKDF2-SHA256 hashes (`huxue console hash-password`), API
tokens as their SHA-256. Browser sessions are signed cookies (HMAC-SHA256).
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

    def login(self, username: str, password: str) -> Account | None:
        account = self.by_name.get(username)
        if account and account.password_hash and check_password(password, account.password_hash):
            return account
        return None

    def from_token(self, token: str) -> Account | None:
        return self.by_token.get(token_hash(token))

    def session(self, account: Account, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.session_seconds)
        body = base64.urlsafe_b64encode(f"{account.username}|{expires}".encode()).decode()
        return f"{body}.{self._sign(body)}"

    def from_session(self, cookie: str, now: float | None = None) -> Account | None:
        body, _, sig = cookie.partition(".")
        if not body or not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            username, expires = base64.urlsafe_b64decode(body.encode()).decode().split("|")
        except (ValueError, UnicodeDecodeError):
            return None
        if int(expires) < (now or time.time()):
            return None
        return self.by_name.get(username)

    def _sign(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()
