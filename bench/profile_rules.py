"""CPU cost of the pure rules per event, without brokers or Faust.

    .venv/bin/python bench/profile_rules.py [events]

Feeds the simulator's background traffic (plates, faces, crowds) for the sample city through
native parsing and rules.engine, storing and reloading each school's state the way the worker
does, and prints microseconds per event plus the top of a cProfile.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

from pipeline.config import load_config
from pipeline.ingest import native
from pipeline.registry import load_registry
from pipeline.rules import engine
from pipeline.rules.state import Context, SchoolState
from pipeline.simulate import Simulator


def main(n: int) -> None:
    cfg = load_config()
    registry = load_registry(cfg.registry_path)
    ctx = Context(cfg.escalation, registry, cfg.bridge.max_clock_skew_seconds, cfg.rules)
    sim = Simulator(registry, sorted(registry.schools))
    events = [native.parse_message(*sim.background(), retained=False, received_at=time.time(), registry=registry) for _ in range(n)]
    stored: dict[str, tuple] = {}

    def run() -> None:
        now = time.time()
        for ev in events:
            core, memory = stored.get(ev.school_id, (None, None))
            state = SchoolState.from_dicts(core, memory, ev.school_id, 0)
            out = engine.on_event(state, ev, now, ctx)
            stored[ev.school_id] = (out.state.core_dict(), dict(out.state.memory))
            now += 0.001

    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.runcall(run)
    elapsed = time.perf_counter() - t0
    print(f"{n} events: {1e6 * elapsed / n:.0f} µs per event (under cProfile)")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
