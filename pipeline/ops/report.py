"""`huxue report`: how the city met the 1-3-5 rule, from the incident history store.

Per school and overall, for panic incidents: time to acknowledge and time to arrive
(median, p90, share within 60 / 180 / 300 s), how many never were (closed without) and
how many are still open without yet; as tables and charts (distribution, daily trend);
incidents by rule, severity and hour of day (school time); panic-button availability per
school over the time huxue actually had data for the school. Mobile units (issue 13): per
school, the share of its window minutes (drop-off, pick-up, school hours) in which an
available unit could have arrived within the 3- and 5-minute limits (rules/units.py
coverage_report over the unit reports the recorder kept), the coverage_gap incidents, and
for panics which unit was dispatched and arrived, and the dispatch-to-arrival time. Drills are
reported apart and never mixed into the real numbers. HTML with embedded PNG charts, PDF, or JSON.
"""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
import sys
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.config import Config
from pipeline.ops.commands import parse_duration
from pipeline.ops.store import Store
from pipeline.records import CanonicalEvent, dumps, iso_utc, parse_ts
from pipeline.registry import Registry, load_registry
from pipeline.rules import units as unit_rules

LIMITS = (60, 180, 300)
MAX_BINS = 40  # 'auto' bins on thousands of incidents would be hairlines


def period_start(since: str, now: float) -> float:
    try:
        return parse_ts(since)
    except ValueError:
        return now - parse_duration(since)


def report_zone(registry: Registry) -> ZoneInfo:
    """The schools' time zone (the most common one: a city has one) for printing times."""
    zones = Counter(s.timezone for s in registry.schools.values())
    return ZoneInfo(zones.most_common(1)[0][0] if zones else "Asia/Shanghai")


def local(t: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M %Z")


def span(seconds: float) -> str:
    """3 h 12 min, 7 d, 4 d 6 h, 45 min."""
    m = int(seconds // 60)
    d, h, m = m // 1440, m // 60 % 24, m % 60
    if d:
        return f"{d} d" + (f" {h} h" if h else "")
    if h:
        return f"{h} h" + (f" {m} min" if m else "")
    return f"{m} min"


def summary(values: list[float], total: int, open_ages: list[float] | None = None) -> dict[str, Any]:
    """median, p90 and the share within each limit of `total` incidents.

    `open_ages`: how long the incidents still open without this step have been open.
    They are not `never` (that is for closed incidents), and one younger than a limit
    has not missed it yet, so it is left out of that limit's share until it is decided.
    """
    s = sorted(values)
    open_ages = open_ages or []
    out: dict[str, Any] = {"incidents": total, "count": len(s), "never": total - len(s) - len(open_ages), "still_open": len(open_ages)}
    if s:
        out["median_s"] = round(statistics.median(s), 1)
        out["p90_s"] = round(s[min(len(s) - 1, int(0.9 * len(s)))], 1)
    within = {}
    for limit in LIMITS:
        decided = total - sum(1 for a in open_ages if a <= limit)
        within[str(limit)] = round(sum(1 for v in s if v <= limit) / decided, 3) if decided else None
    out["within"] = within
    return out


def response_times(incidents: list[dict[str, Any]], end: float | None = None) -> dict[str, Any]:
    end = time.time() if end is None else end
    out = {}
    for key, field in (("ack", "acked_at"), ("arrive", "arrived_at")):
        done = [parse_ts(i[field]) - parse_ts(i["opened_at"]) for i in incidents if i[field]]
        still = [end - parse_ts(i["opened_at"]) for i in incidents if not i[field] and i["state"] != "closed"]
        out[key] = summary(done, len(incidents), still)
    return out


def observed_since(store: Store) -> float | None:
    """When huxue's record of the city starts: the earliest thing the store holds, of any school.

    "Observed" for availability starts here. Heartbeats are not kept in the store, so the
    first record (an alert, command, rejection, paging attempt, incident onset or device
    state change, at any school) is the earliest evidence that the worker watched the
    buttons and the recorder kept what it said; the worker watches every school at once, so
    one start serves all (a quiet school is normal, not unobserved). It ends at the end of
    the period: the store keeps no "recorder alive" times. None: an empty store, no data.
    """
    return store.first_record_at()


def availability(incidents: list[dict[str, Any]], registry: Registry, start: float, end: float, since: float | None) -> dict[str, Any]:
    """Per school: the share of observed button-time (from `since`, see observed_since) with
    no silent/offline incident open."""
    out = {}
    for school_id in sorted(registry.schools):
        buttons = {d.id for d in registry.devices_of(school_id) if d.kind == "panic_button"}
        if not buttons:
            continue
        obs_start = min(end, max(start, end if since is None else since))
        observed = end - obs_start
        down = 0.0
        for inc in incidents:
            device = (inc["evidence"] or [{}])[0].get("device_id")
            if inc["school_id"] != school_id or device not in buttons or inc["status"] != "Actual":
                continue
            if not any(w in inc["headline"] for w in ("no heartbeat", "offline")):
                continue
            a = max(obs_start, parse_ts(inc["opened_at"]))
            b = min(end, parse_ts(inc["closed_at"]) if inc["closed_at"] else end)
            down += max(0.0, b - a)
        out[school_id] = {
            "name": registry.schools[school_id].name,
            "buttons": len(buttons),
            "availability": round(1 - down / (len(buttons) * observed), 4) if observed > 0 else None,
            "down_seconds": round(down),
            "observed_from": iso_utc(obs_start),
            "observed_seconds": round(observed),
            "period_seconds": round(end - start),
        }
    return out


# --- mobile units ------------------------------------------------------------------------


def unit_timeline(store: Store, registry: Registry, start: float, end: float) -> list[tuple[float, unit_rules.UnitState]]:
    """(t, state) of each unit from t on, folded from the recorded unit reports: each unit's
    last report of each aspect before `start`, then every report in [start, end)."""
    states: dict[str, unit_rules.UnitState] = {}
    out = []
    for row in store.unit_reports(iso_utc(start), iso_utc(end)):
        unit = registry.unit(row["unit_id"])
        if unit is None:  # no longer in the registry
            continue
        try:
            event = CanonicalEvent.from_dict(row["event"])
        except (KeyError, TypeError, ValueError):
            continue
        t = parse_ts(row["at"])
        states[unit.id] = unit_rules.apply_event(states.get(unit.id), event, unit, t)
        out.append((t, states[unit.id]))
    return out


def coverage(store: Store, registry: Registry, cfg: Config, start: float, end: float, incidents: list[dict[str, Any]]) -> dict[str, Any]:
    """Per school: the share of its window minutes covered within the arrive target and limit
    (default 3 and 5 minutes), from the first recorded unit report (or the start of the
    period, if later) to its end; and the real coverage_gap incidents opened in the period.
    A school without coordinates has no shares (unknown, never a gap)."""
    limits = (float(cfg.escalation.arrive_target_seconds), float(cfg.escalation.arrive_limit_seconds))
    first = store.first_unit_report_at() if registry.units else None
    observed_from = None if first is None else min(end, max(start, first))
    timeline = unit_timeline(store, registry, observed_from, end) if observed_from is not None else []
    gaps = Counter(i["school_id"] for i in incidents if i["rule"] == "coverage_gap" and i["status"] == "Actual")
    schools = {}
    for school_id in sorted(registry.schools):
        school = registry.schools[school_id]
        row: dict[str, Any] = {"name": school.name, "located": school.coordinates is not None, "window_minutes": None,
                               "covered_minutes": {}, "within": {str(int(x)): None for x in limits}, "gaps": gaps.get(school_id, 0)}
        if observed_from is not None and school.coordinates is not None:
            cr = unit_rules.coverage_report(school, timeline, observed_from, end, cfg.units, limits)
            row["window_minutes"] = cr.window_minutes
            row["covered_minutes"] = {str(int(x)): cr.covered_minutes.get(x, 0) for x in limits}
            row["within"] = {str(int(x)): None if (v := cr.share(x)) is None else round(v, 3) for x in limits}
        if registry.units or row["gaps"]:
            schools[school_id] = row
    return {"limits": [int(x) for x in limits], "units": len(registry.units), "observed_from": iso_utc(observed_from) if observed_from is not None else None,
            "gaps": sum(gaps.values()), "schools": schools}


def dispatches(panic: list[dict[str, Any]], registry: Registry) -> dict[str, Any]:
    """Panics and their mobile units: who was dispatched, who arrived, and the time from the
    first dispatch to arrival (when both are recorded)."""
    rows, spans = [], []
    for i in sorted(panic, key=lambda x: x["opened_at"]):
        if not i.get("dispatched") and not i.get("arrived_unit"):
            continue
        d2a = None
        if i.get("dispatched_at") and i.get("arrived_at"):
            d2a = round(max(0.0, parse_ts(i["arrived_at"]) - parse_ts(i["dispatched_at"])), 1)
            spans.append(d2a)
        school = registry.school(i["school_id"])
        rows.append({"incident_id": i["incident_id"], "school_id": i["school_id"], "name": school.name if school else i["school_id"],
                     "opened_at": i["opened_at"], "dispatched": list(i.get("dispatched") or []), "dispatched_at": i.get("dispatched_at"),
                     "arrived_unit": i.get("arrived_unit") or "", "arrived_at": i.get("arrived_at"), "dispatch_to_arrive_s": d2a})
    s = sorted(spans)
    summary_ = {"count": len(s), "median_s": round(statistics.median(s), 1) if s else None, "p90_s": s[min(len(s) - 1, int(0.9 * len(s)))] if s else None}
    return {"incidents": rows, "dispatch_to_arrive": summary_, "arrived_by_unit": dict(Counter(r["arrived_unit"] for r in rows if r["arrived_unit"]).most_common())}


def compute(store: Store, registry: Registry, start: float, end: float, cfg: Config | None = None) -> dict[str, Any]:
    cfg = cfg or Config()
    rows = [i for i in store.incidents(since=iso_utc(start), limit=1_000_000) if parse_ts(i["opened_at"]) < end]
    tz = report_zone(registry)
    report: dict[str, Any] = {
        "from": iso_utc(start), "to": iso_utc(end), "generated": iso_utc(time.time()),
        "timezone": tz.key, "from_local": local(start, tz), "to_local": local(end, tz),
    }
    for status, name in (("Actual", "actual"), ("Exercise", "drills")):
        chosen = [i for i in rows if i["status"] == status]
        panic = [i for i in chosen if i["rule"] == "panic"]
        per_school = {}
        for school_id in sorted({i["school_id"] for i in panic}):
            school = registry.school(school_id)
            per_school[school_id] = {"name": school.name if school else school_id, **response_times([i for i in panic if i["school_id"] == school_id], end)}
        hours: Counter = Counter()
        for i in chosen:
            school = registry.school(i["school_id"])
            hours[datetime.fromtimestamp(parse_ts(i["opened_at"]), ZoneInfo(school.timezone if school else "UTC")).hour] += 1
        report[name] = {
            "incidents": len(chosen),
            "still_open": sum(1 for i in chosen if i["state"] != "closed"),
            "panic": {"overall": response_times(panic, end), "schools": per_school, "daily": _daily(panic, tz, end), "units": dispatches(panic, registry)},
            "by_rule": dict(Counter(i["rule"] for i in chosen).most_common()),
            "by_severity": {s: n for s in ("Extreme", "Severe", "Moderate", "Minor") if (n := sum(1 for i in chosen if i["severity"] == s))},
            "by_hour": {str(h): hours.get(h, 0) for h in range(24)},
        }
    health = store.incidents(rule="device_health", limit=1_000_000)
    report["availability"] = availability(health, registry, start, end, observed_since(store))
    report["coverage"] = coverage(store, registry, cfg, start, end, rows)
    return report


def _daily(panic: list[dict[str, Any]], tz: ZoneInfo, end: float) -> list[dict[str, Any]]:
    days: dict[str, list[dict[str, Any]]] = {}
    for i in panic:  # days in the report's time zone: a 07:30 press belongs to its school day
        days.setdefault(datetime.fromtimestamp(parse_ts(i["opened_at"]), tz).date().isoformat(), []).append(i)
    out = []
    for day in sorted(days):
        t = response_times(days[day], end)
        out.append({"day": day, "incidents": len(days[day]), "ack_median_s": t["ack"].get("median_s"), "arrive_median_s": t["arrive"].get("median_s")})
    return out


# --- charts ------------------------------------------------------------------------------


def delays(store: Store, start: float, end: float) -> tuple[list[float], list[float]]:
    """Seconds from press to acknowledgement and to arrival, of the real panics in the period."""
    panic = [i for i in store.incidents(since=iso_utc(start), rule="panic", status="Actual", limit=1_000_000) if parse_ts(i["opened_at"]) < end]
    return tuple([parse_ts(i[f]) - parse_ts(i["opened_at"]) for i in panic if i[f]] for f in ("acked_at", "arrived_at"))  # type: ignore[return-value]


def bin_edges(values: list[float]) -> Any:
    """numpy's 'auto' (the larger of Freedman-Diaconis and Sturges), at most MAX_BINS."""
    import numpy as np

    edges = np.histogram_bin_edges(values, bins="auto")
    if len(edges) - 1 > MAX_BINS:
        edges = np.linspace(edges[0], edges[-1], MAX_BINS + 1)
    return edges


def _counts_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_ylabel("incidents")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def figures(report: dict[str, Any], acks: list[float], arrivals: list[float]) -> dict[str, Any]:
    """The charts as matplotlib Figures (not drawn yet: tests inspect them, callers render)."""
    from matplotlib.dates import DateFormatter, DayLocator
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    out = {}
    for name, values, limits, title in (("ack", acks, (60,), "Time to acknowledge"), ("arrive", arrivals, (180, 300), "Time to arrive")):
        fig = Figure(figsize=(7, 3.6), layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(f"{title} (real panic incidents, n={len(values)})")
        ax.set_xlabel("seconds from press")
        _counts_axis(ax)
        if values:
            # a few very late ones (acked hours later) would squeeze everything into one bar:
            # past 1.5 x the 95th percentile they are drawn in the last bar, and said so
            hi = 1.5 * statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]
            late = sum(1 for v in values if v > hi)
            shown = [min(v, hi) for v in values] if late else values
            edges = bin_edges(shown)
            ax.hist(shown, bins=edges, color="#4f9dde", edgecolor="white")
            if late:
                ax.text(0.98, 0.82, f"{late} later than {hi:.0f} s: in the last bar", transform=ax.transAxes, ha="right", va="top", color="#667")
            ax.set_xlim(left=min(0, edges[0]))
            shown = [limit for limit in limits if limit <= edges[-1]]
            for limit in shown:
                ax.axvline(limit, color="#d7263d" if limit == limits[0] else "#7b1e2b", linestyle="--" if limit == limits[0] else ":", label=f"{limit} s limit")
            if shown:
                ax.legend()
            beyond = [limit for limit in limits if limit not in shown]
            if beyond:  # the line would only squeeze the bars: say it instead
                ax.text(0.98, 0.95, f"all within {beyond[0]} s", transform=ax.transAxes, ha="right", va="top", color="#d7263d")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#667")
        out[name] = fig

    daily = report["actual"]["panic"]["daily"]
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    days = [date.fromisoformat(d["day"]) for d in daily]
    for key, label in (("ack_median_s", "median time to acknowledge"), ("arrive_median_s", "median time to arrive")):
        ax.plot(days, [math.nan if d[key] is None else d[key] for d in daily], marker="o", label=label)
    for limit in LIMITS:
        ax.axhline(limit, color="#999", linewidth=0.6)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("seconds from press")
    ax.set_xlabel(f"day ({report.get('timezone', 'UTC')})")
    ax.set_title("Daily medians, real panic incidents")
    if days:  # whole days only, at most ~8 labels
        ax.xaxis.set_major_locator(DayLocator(interval=max(1, ((days[-1] - days[0]).days + 1) // 8 + 1)))
        ax.xaxis.set_major_formatter(DateFormatter("%m-%d"))
        ax.legend()
    out["trend"] = fig

    actual = report["actual"]
    for key, title, xlabel in (("by_rule", "Incidents by rule", "rule"), ("by_severity", "Incidents by severity", "severity")):
        fig = Figure(figsize=(7, 3.6), layout="constrained")
        ax = fig.add_subplot()
        data = actual[key]
        ax.bar(list(data) or [""], list(data.values()) or [0], color="#f46036")
        ax.set_title(f"{title} (real)")
        ax.set_xlabel(xlabel)
        _counts_axis(ax)
        if key == "by_rule":
            ax.tick_params(axis="x", rotation=30)
            for lab in ax.get_xticklabels():
                lab.set_horizontalalignment("right")
        out[key] = fig

    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(24), [actual["by_hour"][str(h)] for h in range(24)], color="#f46036")
    ax.set_xticks(range(0, 24, 3), [f"{h:02d}" for h in range(0, 24, 3)])  # every 3 h: no collisions on a phone
    ax.set_xlim(-0.6, 23.6)
    ax.set_xlabel("hour of day (school time)")
    ax.set_title("Incidents by hour of day (real)")
    _counts_axis(ax)
    out["by_hour"] = fig
    return out


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode()


def charts(store: Store, report: dict[str, Any], start: float, end: float) -> dict[str, str]:
    """The figures as base64 PNGs, by name."""
    return {name: _png(fig) for name, fig in figures(report, *delays(store, start, end)).items()}


# --- HTML --------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def _school(name: str, school_id: str) -> str:
    return f'{html.escape(name)} <small class="id">{html.escape(school_id)}</small>'


def _rows(times: dict[str, Any], label: str) -> str:
    a, r = times["ack"], times["arrive"]
    cells = (
        a["incidents"], a.get("median_s", "—"), a.get("p90_s", "—"), _pct(a["within"]["60"]), a["never"], a["still_open"],
        r.get("median_s", "—"), r.get("p90_s", "—"), _pct(r["within"]["180"]), _pct(r["within"]["300"]), r["never"], r["still_open"],
    )
    return f"<tr><td>{label}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


CSS = """
body{font-family:system-ui,sans-serif;margin:1rem auto;padding:0 1rem;max-width:60rem;color:#1b222b;line-height:1.4}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.5rem 0 1.5rem}
table{border-collapse:collapse;font-size:.9rem}
td,th{border:1px solid #ccd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
th{background:#f2f4f7;font-weight:600}
small.id{color:#778;font-size:.75em}
img{max-width:100%;height:auto;display:block;margin:.5rem 0 1rem}
h2{margin-top:2rem}.note{color:#556}
@media (max-width:40rem){body{padding:0 .5rem}h1{font-size:1.3rem}td,th{padding:.2rem .35rem}}
@page{size:A4;margin:15mm}
@media print{body{margin:0;max-width:none;font-size:10pt}.scroll{overflow:visible}
h2{break-after:avoid;page-break-after:avoid}
img,tr,figure{break-inside:avoid;page-break-inside:avoid}
img{max-height:120mm;width:auto}}
"""


def render_html(report: dict[str, Any], images: dict[str, str]) -> str:
    head = ("<tr><th>school</th><th>panic incidents</th><th>ack median s</th><th>ack p90 s</th><th>ack ≤ 60 s</th><th>never acked</th>"
            "<th>open, not acked yet</th><th>arrive median s</th><th>arrive p90 s</th><th>arrive ≤ 180 s</th><th>arrive ≤ 300 s</th>"
            "<th>never arrived</th><th>open, not arrived yet</th></tr>")

    def table(part: dict[str, Any]) -> str:
        rows = [_rows(part["panic"]["overall"], "all schools")] + [_rows(v, _school(v["name"], k)) for k, v in part["panic"]["schools"].items()]
        return f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'

    def avail_row(k: str, v: dict[str, Any]) -> str:
        observed = f"{span(v['observed_seconds'])} of {span(v['period_seconds'])}" if v.get("period_seconds") else "—"
        value = _pct(v["availability"], 1) if v["availability"] is not None else "no data"
        return (f"<tr><td>{_school(v.get('name', k), k)}</td><td>{v['buttons']}</td><td>{value}</td>"
                f"<td>{observed}</td><td>{span(v['down_seconds'])}</td></tr>")

    avail = "".join(avail_row(k, v) for k, v in report["availability"].items())
    units = coverage_html(report)
    img = lambda name: f'<img alt="{name}" src="data:image/png;base64,{images[name]}">' if name in images else ""  # noqa: E731
    period = f"{report.get('from_local', report['from'])} to {report.get('to_local', report['to'])} ({report.get('timezone', 'UTC')})"
    actual = report["actual"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>huxue 1-3-5 report</title>
<style>{CSS}</style></head><body>
<h1>护学 huxue — 1-3-5 response report</h1>
<p class="note">{html.escape(period)}. Rule 1-3-5: on-site guards acknowledge within 1 minute, mobile units arrive within 3 to 5 minutes.
{actual['incidents']} real incidents ({actual.get('still_open', 0)} still open), {report['drills']['incidents']} in drills (reported apart).
"Never" counts closed incidents without the step; "open, not … yet" counts incidents still open without it: not a failure yet,
and left out of a share until they are older than its limit.</p>
<h2>Panic incidents: time to acknowledge and to arrive</h2>{table(actual)}
{img('ack')}{img('arrive')}{img('trend')}
<h2>Incidents by rule, severity and hour of day</h2>{img('by_rule')}{img('by_severity')}{img('by_hour')}
<h2>Panic-button availability</h2>
<p class="note">Share of button-time with no silent or offline incident open, over the time huxue observed each school:
from its first record in the history store (or the start of the period, if later) to the end of the period.</p>
<div class="scroll"><table><tr><th>school</th><th>buttons</th><th>available</th><th>observed</th><th>down (button-time)</th></tr>{avail}</table></div>
{units}
<h2>Drills</h2>{table(report['drills'])}
<p class="note">generated {html.escape(report['generated'])}</p></body></html>"""


def coverage_html(report: dict[str, Any]) -> str:
    """Mobile-unit coverage per school and the panics' units (empty without units or gaps)."""
    cov = report.get("coverage") or {}
    if not cov.get("schools"):
        return ""
    lo, hi = (str(x) for x in cov["limits"])
    since = f"from {html.escape(cov['observed_from'])}" if cov.get("observed_from") else "no unit reports recorded in the period"
    rows = "".join(
        f"<tr><td>{_school(v['name'], k)}</td><td>{'—' if v['window_minutes'] is None else v['window_minutes']}</td>"
        f"<td>{_pct(v['within'][lo], 1) if v['located'] else 'no coordinates'}</td><td>{_pct(v['within'][hi], 1) if v['located'] else '—'}</td><td>{v['gaps']}</td></tr>"
        for k, v in cov["schools"].items()
    )
    units = report["actual"]["panic"]["units"]
    d2a = units["dispatch_to_arrive"]
    panic_rows = "".join(
        f"<tr><td>{_school(r['name'], r['school_id'])}</td><td>{html.escape(r['opened_at'])}</td><td>{html.escape(', '.join(r['dispatched']) or '—')}</td>"
        f"<td>{html.escape(r['arrived_unit'] or '—')}</td><td>{'—' if r['dispatch_to_arrive_s'] is None else r['dispatch_to_arrive_s']}</td></tr>"
        for r in units["incidents"][-50:]
    )
    return f"""<h2>Mobile-unit coverage</h2>
<p class="note">Share of each school's window minutes (drop-off, pick-up and school hours) in which an available mobile unit could
have arrived within {int(cov['limits'][0]) // 60} and {int(cov['limits'][1]) // 60} minutes, {since}; coverage gaps are real coverage_gap incidents
({cov['gaps']} in all).</p>
<div class="scroll"><table><tr><th>school</th><th>window minutes</th><th>covered ≤ {lo} s</th><th>covered ≤ {hi} s</th><th>coverage gaps</th></tr>{rows}</table></div>
<h2>Panic incidents: mobile units</h2>
<p class="note">Dispatch to arrival: median {d2a['median_s'] if d2a['median_s'] is not None else '—'} s, p90 {d2a['p90_s'] if d2a['p90_s'] is not None else '—'} s
over {d2a['count']} real panics with both recorded.</p>
<div class="scroll"><table><tr><th>school</th><th>opened</th><th>dispatched</th><th>arrived</th><th>dispatch → arrive s</th></tr>{panic_rows or '<tr><td colspan="5">none</td></tr>'}</table></div>"""


# --- PDF ---------------------------------------------------------------------------------


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary tables as monospaced text (the PDF's first pages)."""
    def fmt(v: Any) -> str:
        return "-" if v is None else str(v)

    head = f"{'school':<28}{'n':>4}{'ack med':>9}{'<=60s':>7}{'never':>6}{'open':>5}{'arr med':>9}{'<=180s':>7}{'<=300s':>7}{'never':>6}{'open':>5}"

    def rows(part: dict[str, Any]) -> list[str]:
        out = [head]
        items = [("all schools", part["panic"]["overall"])] + [(f"{v['name']} ({k})", v) for k, v in part["panic"]["schools"].items()]
        for label, t in items:
            a, r = t["ack"], t["arrive"]
            out.append(f"{label[:27]:<28}{a['incidents']:>4}{fmt(a.get('median_s')):>9}{_pct(a['within']['60']):>7}{a['never']:>6}{a['still_open']:>5}"
                       f"{fmt(r.get('median_s')):>9}{_pct(r['within']['180']):>7}{_pct(r['within']['300']):>7}{r['never']:>6}{r['still_open']:>5}")
        return out

    lines = ["Panic incidents, real (seconds from press; never = closed without; open = still open without)", *rows(report["actual"]), ""]
    lines += ["Panic-button availability (over the observed time)", f"{'school':<28}{'buttons':>8}{'available':>11}  observed"]
    for k, v in report["availability"].items():
        value = _pct(v["availability"], 1) if v["availability"] is not None else "no data"
        lines.append(f"{(v.get('name', k) + ' (' + k + ')')[:27]:<28}{v['buttons']:>8}{value:>11}  {span(v['observed_seconds'])} of {span(v['period_seconds'])}")
    cov = report.get("coverage") or {}
    if cov.get("schools"):
        lo, hi = (str(x) for x in cov["limits"])
        lines += ["", f"Mobile-unit coverage: share of window minutes within {lo} s / {hi} s ({cov.get('observed_from') or 'no unit reports'})",
                  f"{'school':<28}{'window min':>11}{'<=' + lo + 's':>9}{'<=' + hi + 's':>9}{'gaps':>6}"]
        for k, v in cov["schools"].items():
            w = "-" if v["window_minutes"] is None else str(v["window_minutes"])
            a, b = (_pct(v["within"][x], 1) if v["located"] else "no coord" for x in (lo, hi))
            lines.append(f"{(v['name'] + ' (' + k + ')')[:27]:<28}{w:>11}{a:>9}{b:>9}{v['gaps']:>6}")
        units = report["actual"]["panic"]["units"]
        d2a = units["dispatch_to_arrive"]
        lines += ["", f"Panics and mobile units (dispatch -> arrive: median {fmt(d2a['median_s'])} s, p90 {fmt(d2a['p90_s'])} s, n={d2a['count']})",
                  f"{'school':<28}{'dispatched':<22}{'arrived':<14}{'d->a s':>7}"]
        for r in units["incidents"][-40:]:
            lines.append(f"{(r['name'] + ' (' + r['school_id'] + ')')[:27]:<28}{', '.join(r['dispatched'])[:21] or '-':<22}{(r['arrived_unit'] or '-')[:13]:<14}"
                         f"{fmt(r['dispatch_to_arrive_s']):>7}")
    lines += ["", "Drills (apart from the real numbers)", *rows(report["drills"])]
    return lines


def title_pages(report: dict[str, Any]) -> list[Any]:
    """A4 portrait pages: the title, the period and the summary tables as text."""
    from matplotlib.figure import Figure

    lines = summary_lines(report)
    per_page = 52  # lines of 7.5 pt text that fit an A4 page
    chunks = [lines[i : i + per_page] for i in range(0, len(lines), per_page)] or [[]]
    period = f"{report.get('from_local', report['from'])} to {report.get('to_local', report['to'])} ({report.get('timezone', 'UTC')})"
    pages = []
    for n, chunk in enumerate(chunks):
        page = Figure(figsize=(8.27, 11.69))
        if n == 0:
            page.text(0.07, 0.95, "huxue — 1-3-5 response report", fontsize=18, weight="bold", va="top")
            page.text(0.07, 0.92, period, fontsize=10, va="top")
            page.text(0.07, 0.90, f"{report['actual']['incidents']} real incidents, {report['drills']['incidents']} in drills. "
                      "Rule: acknowledge within 60 s, arrive within 180-300 s.", fontsize=9, va="top")
        page.text(0.07, 0.86 if n == 0 else 0.95, "\n".join(chunk), family="monospace", fontsize=7.5, va="top", linespacing=1.6)
        pages.append(page)
    return pages


def write_pdf(path: Path, report: dict[str, Any], figs: dict[str, Any]) -> int:
    """Title page(s), then one A4 landscape page per chart; returns the page count."""
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for page in title_pages(report):
            pdf.savefig(page)
        for fig in figs.values():
            fig.set_size_inches(11.69, 8.27)
            pdf.savefig(fig)
        return pdf.get_pagecount()


def main(cfg: Config, since: str, out: str | None, fmt: str) -> int:
    store = Store(cfg.store_url, cfg.bridge.max_clock_skew_seconds)
    registry = load_registry(cfg.registry_path)
    end = time.time()
    start = period_start(since, end)
    report = compute(store, registry, start, end, cfg)
    if fmt == "json":
        data = dumps(report)
        if out:
            Path(out).write_bytes(data)
        else:
            sys.stdout.write(data.decode() + "\n")
        return 0
    path = Path(out or f"report.{fmt}")
    if fmt == "pdf":
        pages = write_pdf(path, report, figures(report, *delays(store, start, end)))
        detail = f"{pages} pages"
    else:
        path.write_text(render_html(report, charts(store, report, start, end)), encoding="utf-8")
        detail = "HTML"
    print(f"report: {path} ({detail}; {report['actual']['incidents']} incidents, {report['drills']['incidents']} in drills, "
          f"{report['from_local']} to {report['to_local']})")
    return 0
