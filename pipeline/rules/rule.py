"""The one interface of a rule, and what rules give back (pure data).

A rule is an object with a `name`, the key of its working memory in `SchoolState.memory`
(or None), the `rules:` block whose `enabled` switches it (or None: always on), and two
entry points that each return a `RuleOutcome`. Subclass `Rule` to inherit do-nothing
defaults; the engine (engine.py) lists the rules and isolates each one's failure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pipeline.records import Alert, CanonicalEvent, Command, SilenceNotice
    from pipeline.rules.state import Context, SchoolState

MAX_ERROR = 300  # characters of a failure's "ExcType: message"


@dataclass(frozen=True)
class RuleOutcome:
    state: SchoolState
    alerts: list[Alert] = field(default_factory=list)
    notices: list[SilenceNotice] = field(default_factory=list)
    # events only: the event's evidence went into an incident, so the rules that would
    # raise a separate incident for it (perimeter, video behaviour) leave it alone
    claimed: bool = False


@dataclass(frozen=True)
class CommandRejected:
    """Why a command was not applied; becomes a `huxue.commands.dlq` entry."""

    reason_code: str
    reason: str


@dataclass(frozen=True)
class RuleFailure:
    """A rule that raised: its input left the school's state as before that rule."""

    rule: str
    error: str  # "ExcType: message", at most MAX_ERROR characters

    @classmethod
    def of(cls, rule: str, exc: BaseException) -> RuleFailure:
        return cls(rule, f"{type(exc).__name__}: {exc}"[:MAX_ERROR])


@runtime_checkable
class Rule(Protocol):
    name: ClassVar[str]
    memory: ClassVar[str | None] = None  # key of its working memory; None: keeps none
    # Memory kept in this many parts ("<memory>.<n>", see memory_keys): a rule whose memory
    # grows with what it has seen (plates) rewrites one part per input, not all of it.
    memory_parts: ClassVar[int] = 1
    settings: ClassVar[str | None] = None  # its `rules:` block (with `enabled`); None: always on

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        return RuleOutcome(state)

    def on_time(self, state: SchoolState, now: float, ctx: Context) -> RuleOutcome:
        """Called when its memory is absent (first sight of the school) or its `due` has come."""
        return RuleOutcome(state)


def memory_keys(rule: Rule) -> tuple[str, ...]:
    """The keys of a rule's working memory in `SchoolState.memory`."""
    if not rule.memory:
        return ()
    if rule.memory_parts <= 1:
        return (rule.memory,)
    return tuple(f"{rule.memory}.{n}" for n in range(rule.memory_parts))


def command_key(cmd: Command) -> str:
    """A command's identity for de-duplication: its id, or a digest of its content."""
    if cmd.command_id:
        return f"cmd/{cmd.command_id}"
    digest = hashlib.sha1(f"{cmd.command}|{cmd.incident_id}|{cmd.school_id}|{cmd.silence_id}|{cmd.by}|{cmd.at}".encode()).hexdigest()[:16]
    return f"cmd/{digest}"
