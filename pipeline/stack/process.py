"""A background service tracked by a pid file: start detached, check, stop (TERM, then KILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Service:
    name: str
    home: Path
    # A string that must appear in the process's command line, so a recycled pid of an
    # unrelated process is never mistaken for ours (and never signalled).
    marker: str

    @property
    def pidfile(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if _cmdline(pid) is None or self.marker not in _cmdline(pid):
            self.pidfile.unlink(missing_ok=True)
            return None
        return pid

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """Start detached (own session, survives the CLI), output appended to the log file."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name}: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )
        self.pidfile.write_text(f"{proc.pid}\n")
        # Until the child has exec'd, /proc shows an empty or foreign command line and
        # pid() would take the fresh pid file for a stale one and remove it.
        deadline = time.monotonic() + 5
        while proc.poll() is None and self.marker not in (_cmdline(proc.pid) or "") and time.monotonic() < deadline:
            time.sleep(0.005)
        return proc

    def stop(self, timeout: float) -> str:
        """SIGTERM the process group, wait up to `timeout`, then SIGKILL. Returns what happened."""
        pid = self.pid()
        if pid is None:
            return "not running"
        _signal_group(pid, signal.SIGTERM)
        if _wait_gone(pid, timeout):
            outcome = "stopped"
        else:
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
            outcome = f"killed after {timeout:g} s"
        self.pidfile.unlink(missing_ok=True)
        return outcome

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        state = ""
    if state == "Z":  # a zombie is gone for our purposes
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        except ChildProcessError:
            pass
        if _cmdline(pid) is None:
            return True
        time.sleep(0.1)
    return _cmdline(pid) is None
