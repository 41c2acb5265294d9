"""Generated passwords under HUXUE_HOME/secrets/ (directory 0700, files 0600).

One JSON file per broker ("mqtt", "kafka"): account name -> password. `huxue stack up`
keeps it in step with the registry and config (new accounts get a password, existing
ones keep theirs, removed ones are dropped); clients started with the same HUXUE_HOME
read their own password from it. Never committed: HUXUE_HOME is git-ignored.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import orjson


class CredentialsError(RuntimeError):
    """An account is missing: the message says which and how to create it."""


def secrets_dir(home: Path) -> Path:
    path = home / "secrets"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` so that only this user can ever read it (no window with wider modes)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def new_password() -> str:
    return secrets.token_urlsafe(24)


class Store:
    """The passwords of one broker's accounts."""

    def __init__(self, home: Path, broker: str):
        self.home = home
        self.broker = broker
        self.path = home / "secrets" / f"{broker}.json"

    def load(self) -> dict[str, str]:
        try:
            return orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}

    def save(self, accounts: dict[str, str]) -> None:
        secrets_dir(self.home)
        write_private(self.path, orjson.dumps(dict(sorted(accounts.items())), option=orjson.OPT_INDENT_2))

    def sync(self, names: Iterable[str]) -> tuple[dict[str, str], list[str], list[str]]:
        """Exactly `names`, each with a password: existing ones kept. Returns (accounts, added, removed)."""
        old = self.load()
        wanted = list(dict.fromkeys(names))
        accounts = {n: old.get(n) or new_password() for n in wanted}
        added = [n for n in wanted if n not in old]
        removed = sorted(set(old) - set(accounts))
        if added or removed or not self.path.exists():
            self.save(accounts)
        return accounts, added, removed

    def rotate(self, name: str) -> str:
        accounts = self.load()
        if name not in accounts:
            raise CredentialsError(f"no {self.broker} account {name!r} in {self.path}")
        accounts[name] = new_password()
        self.save(accounts)
        return accounts[name]

    def password(self, name: str) -> str:
        accounts = self.load()
        if name not in accounts:
            where = f"{self.path}" if self.path.exists() else f"{self.path} (missing)"
            raise CredentialsError(
                f"no {self.broker} password for account {name!r} in {where}: run `huxue stack up` with this "
                "config and HUXUE_HOME, or give the credentials in the config"
            )
        return accounts[name]
