"""Rule `post_staffing`: "one post, two officers" at drop-off and pick-up.

Guard terminals report `guard.checkin` / `guard.checkout` with `post_id` and
`officer_id`. `grace_seconds` into each of the school's windows (its own timezone and
calendar), every post of the registry with fewer than `required_officers` checked in
raises a Moderate incident; a check-out later in the window that leaves a post short
raises too. The incident closes (Cancel) when staffing is restored (`restored`) or the
window ends (`window_ended`); rosters start empty for each window. Timer-driven: the
check fires with no other traffic and survives restarts. Each officer's latest report by
time wins (a late or redelivered check-in cannot undo a later check-out); drill reports
(`exercise`) do not touch the real roster.
Memory: {"roster": {post: {officer: [on duty?, time]}}, "window": [start, end], "checked": start, "due": t}.
"""

from __future__ import annotations

from pipeline.records import Alert, CanonicalEvent, iso_utc
from pipeline.registry import Post
from pipeline.rules import calendar, dispatch, lifecycle
from pipeline.rules.evidence import clip, evidence_of
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = NAME = RULE = MEMORY = "post_staffing"
MAX_OFFICERS = 64  # per post and window: a roster is input-driven, so it is bounded


def _memory(state: SchoolState) -> dict:
    return state.memory.get(NAME) or {"roster": {}, "window": None, "checked": None}


def _posts(ctx: Context, school_id: str) -> tuple[Post, ...]:
    school = ctx.school(school_id)
    return school.posts if school else ()


def _on_duty(mem: dict, post_id: str) -> int:
    return sum(1 for on, _ in mem["roster"].get(post_id, {}).values() if on)


def _short(state: SchoolState, post: Post, mem: dict, now: float, ctx: Context, trigger: dict) -> tuple[SchoolState, list[Alert]]:
    on_duty = _on_duty(mem, post.id)
    if on_duty >= post.required_officers or state.find_open(RULE, post.id, "Actual"):
        return state, []
    cfg = ctx.rule(SETTINGS, state.school_id)
    spec = lifecycle.Raise(
        rule=RULE,
        key=post.id,
        severity=cfg.severity,
        title=f"Gate post {post.id} at {ctx.school_name(state.school_id)}: {on_duty} of {post.required_officers} officers checked in",
        evidence=(trigger,),
        zone=post.id,
        notify=("onsite", "command"),
        certainty="Observed",
    )
    return dispatch.raise_incident(state, spec, now, ctx)


def _close_all(state: SchoolState, stage: str, now: float, posts: set[str] | None = None) -> tuple[SchoolState, list[Alert]]:
    alerts: list[Alert] = []
    for inc in list(state.incidents.values()):
        if inc.rule == RULE and (posts is None or inc.key in posts):
            state, out = lifecycle.close(state, inc, stage, now)
            alerts += out
    return state, alerts


def _store(state: SchoolState, mem: dict, now: float, ctx: Context) -> SchoolState:
    """Remember, with when to look next: the check in this window, its end, or the next window."""
    cfg = ctx.rule(SETTINGS, state.school_id)
    school = ctx.school(state.school_id)
    due = None
    if school and school.posts:
        window = mem["window"]
        if window and mem["checked"] != window[0]:
            due = window[0] + cfg.grace_seconds
        elif window:
            due = window[1]
        else:
            upcoming = calendar.next_window(school, now)
            due = upcoming[0] + cfg.grace_seconds if upcoming else None
    return state.remember(NAME, {**mem, "due": due})


class PostStaffing(Rule):
    name = RULE
    memory = MEMORY
    settings = SETTINGS

    def on_time(self, state: SchoolState, now: float, ctx: Context) -> RuleOutcome:
        school = ctx.school(state.school_id)
        mem = _memory(state)
        alerts: list[Alert] = []
        if mem["window"] and now >= mem["window"][1]:
            state, alerts = _close_all(state, "window_ended", now)
            mem = {"roster": {}, "window": None, "checked": None}
        current = calendar.window_at(school, now) if school else None
        if current and mem["window"] is None:
            mem = {**mem, "window": list(current)}
        cfg = ctx.rule(SETTINGS, state.school_id)
        window = mem["window"]
        if window and mem["checked"] != window[0] and now >= window[0] + cfg.grace_seconds:
            mem = {**mem, "checked": window[0]}
            for post in _posts(ctx, state.school_id):
                trigger = {"event_id": f"check-{int(window[0])}-{post.id}", "type": "post.check", "post_id": post.id, "ts": iso_utc(now)}
                state, out = _short(state, post, mem, now, ctx, trigger)
                alerts += out
        return RuleOutcome(_store(state, mem, now, ctx), alerts)

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        if event.type not in ("guard.checkin", "guard.checkout") or event.exercise:
            return RuleOutcome(state)
        post_id, officer = str(event.attrs.get("post_id", "")), clip(str(event.attrs.get("officer_id", "")))
        post = next((p for p in _posts(ctx, state.school_id) if p.id == post_id), None)
        if post is None:
            return RuleOutcome(state)
        rolled = self.on_time(state, now, ctx)  # roll the window first if it turned
        state, alerts = rolled.state, rolled.alerts
        mem = _memory(state)
        roster = dict(mem["roster"].get(post_id, {}))
        at = event.credible_ts(ctx.max_clock_skew_seconds)
        if officer in roster and roster[officer][1] > at:
            return RuleOutcome(state, alerts)  # older than what we know of this officer (late or redelivered)
        roster[officer] = [event.type == "guard.checkin", at]
        if len(roster) > MAX_OFFICERS:
            roster = dict(sorted(roster.items(), key=lambda kv: kv[1][1])[-MAX_OFFICERS:])  # the latest reports
        mem = {**mem, "roster": {**mem["roster"], post_id: roster}}
        if _on_duty(mem, post_id) >= post.required_officers:
            state, out = _close_all(state, "restored", now, {post_id})
            alerts += out
        elif mem["window"] and mem["checked"] == mem["window"][0]:
            # past this window's check: a post left short raises now
            state, out = _short(state, post, mem, now, ctx, evidence_of(event))
            alerts += out
        return RuleOutcome(_store(state, mem, now, ctx), alerts)
