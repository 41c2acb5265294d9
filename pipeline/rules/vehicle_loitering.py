"""Rule `vehicle_loitering`: the same plate read again and again around one school.

`min_reads` reads of one plate (normalised) within `window_seconds` of each other ->
Moderate incident, Severe when the last read falls in a drop-off / pick-up window (the
school's own calendar); a later read in a window raises a Moderate one to Severe. Later
reads join it; it closes itself after `quiet_close_seconds`. Reads are placed by when
they happened, so a read that arrives late still counts where it belongs; drills count
apart from real reads. Memory: {"plates": {"<status>/<plate>": [[time, event key], ...]}}
(reads within the window plus the credible clock skew of the newest one, so a late read
can still complete a burst; at most MAX_READS per plate), in PARTS parts by a CRC32 of the
plate's key: the memory grows with the plates seen in the window (thousands at a busy
gate), and a read rewrites only its part (one sixteenth), not every plate.
"""

from __future__ import annotations

import zlib

from pipeline.records import CanonicalEvent, iso_utc
from pipeline.rules import calendar, dispatch, lifecycle
from pipeline.rules.evidence import clip, evidence_of
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.settings import normalise_plate
from pipeline.rules.state import Context, SchoolState

SETTINGS = RULE = MEMORY = "vehicle_loitering"
MAX_READS = 50
PARTS = 16


def part_of(key: str) -> str:
    """The memory key holding plate `key` ("<status>/<plate>")."""
    return f"{MEMORY}.{zlib.crc32(key.encode()) % PARTS}"


def _burst(reads: list[list], need: int, window: float, key: str) -> list[list] | None:
    """`need` consecutive reads (by time) that include read `key` and span at most `window`."""
    i = next(n for n, (_, k) in enumerate(reads) if k == key)
    for start in range(max(0, i - need + 1), min(i, len(reads) - need) + 1):
        run = reads[start : start + need]
        if run[-1][0] - run[0][0] <= window:
            return run
    return None


class VehicleLoitering(Rule):
    name = RULE
    memory = MEMORY
    memory_parts = PARTS
    settings = SETTINGS

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        if event.type != "plate.read":
            return RuleOutcome(state)
        plate = clip(normalise_plate(str(event.attrs.get("plate", ""))))  # it keys memory and the incident
        if not plate:
            return RuleOutcome(state)
        cfg = ctx.rule(SETTINGS, state.school_id)
        status = event.status
        at = event.credible_ts(ctx.max_clock_skew_seconds)
        key = f"{status}/{plate}"
        part = part_of(key)
        memory = state.memory.get(part) or {}
        stored = memory.get("plates", {})
        reads = stored.get(key, [])
        if any(k == event.key for _, k in reads):  # a redelivered copy
            return RuleOutcome(state)
        reads = sorted(reads + [[at, event.key]])
        newest = reads[-1][0]
        keep = cfg.window_seconds + ctx.max_clock_skew_seconds
        reads = [r for r in reads if newest - r[0] <= keep][-MAX_READS:]
        pruned = memory.get("pruned", 0.0)
        if now - pruned >= 60:  # forget plates gone quiet, at most once a minute
            plates = {k: v for k, v in stored.items() if at - v[-1][0] <= keep}
            pruned = now
        else:
            plates = dict(stored)
        plates[key] = reads
        state = state.remember(part, {"plates": plates, "pruned": pruned})
        burst = _burst(reads, cfg.min_reads, cfg.window_seconds, event.key) if any(k == event.key for _, k in reads) else None
        if burst is None:
            return RuleOutcome(state)
        school = ctx.school(state.school_id)
        in_window = bool(school and calendar.window_at(school, at))
        severity = cfg.severity_in_windows if in_window else cfg.severity
        spec = lifecycle.Raise(
            rule=RULE,
            key=plate,
            severity=severity,
            title=f"Vehicle {plate} loitering at {ctx.school_name(state.school_id)}: {len(burst)} reads in {cfg.window_seconds / 60:g} min"
            + (" during drop-off/pick-up" if in_window else ""),
            # this read in full, then the other reads of the burst as far as memory keeps them
            evidence=(evidence_of(event),) + tuple(_earlier(plate, t, k) for t, k in burst if k != event.key),
            status=status,
            zone=event.zone,
            quiet_close_seconds=cfg.quiet_close_seconds,
        )
        state, alerts = dispatch.raise_or_join(state, spec, now, ctx)
        return RuleOutcome(state, alerts)


def _earlier(plate: str, at: float, key: str) -> dict:
    device_id, _, event_id = key.partition("/")
    return {"event_id": event_id, "device_id": device_id, "type": "plate.read", "ts": iso_utc(at), "attrs": {"plate": plate}}
