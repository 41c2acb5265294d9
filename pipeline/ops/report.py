"""`huxue report`: how the city met the 1-3-5 rule, from the incident history store.

Per school and overall, for panic incidents: time to acknowledge and time to arrive
(median, p90, share within 60 / 180 / 300 s, how many never were), as tables and charts
(distribution, daily trend); incidents by rule, severity and hour of day (school time);
panic-button availability per school (share of time no device-health incident said it
was silent or offline). Drills are reported apart and never mixed into the real numbers.
HTML with embedded PNG charts (matplotlib), or JSON.
"""

from __future__ import annotations

import base64
import html
import io
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.config import Config
from pipeline.ops.commands import parse_duration
from pipeline.ops.store import Store
from pipeline.records import dumps, iso_utc, parse_ts
from pipeline.registry import Registry, load_registry

LIMITS = (60, 180, 300)


def period_start(since: str, now: float) -> float:
    try:
        return parse_ts(since)
    except ValueError:
        return now - parse_duration(since)


def summary(values: list[float], total: int) -> dict[str, Any]:
    """median, p90 and the share of `total` incidents within each limit (never = not at all)."""
    s = sorted(values)
    out: dict[str, Any] = {"incidents": total, "count": len(s), "never": total - len(s)}
    if s:
        out["median_s"] = round(statistics.median(s), 1)
        out["p90_s"] = round(s[min(len(s) - 1, int(0.9 * len(s)))], 1)
    out["within"] = {str(limit): round(sum(1 for v in s if v <= limit) / total, 3) if total else None for limit in LIMITS}
    return out


def response_times(incidents: list[dict[str, Any]]) -> dict[str, Any]:
    acks = [parse_ts(i["acked_at"]) - parse_ts(i["opened_at"]) for i in incidents if i["acked_at"]]
    arrivals = [parse_ts(i["arrived_at"]) - parse_ts(i["opened_at"]) for i in incidents if i["arrived_at"]]
    return {"ack": summary(acks, len(incidents)), "arrive": summary(arrivals, len(incidents))}


def availability(incidents: list[dict[str, Any]], registry: Registry, start: float, end: float) -> dict[str, Any]:
    """Per school: the share of button-time with no silent/offline incident open."""
    out = {}
    for school_id in sorted(registry.schools):
        buttons = {d.id for d in registry.devices_of(school_id) if d.kind == "panic_button"}
        if not buttons:
            continue
        down = 0.0
        for inc in incidents:
            device = (inc["evidence"] or [{}])[0].get("device_id")
            if inc["school_id"] != school_id or device not in buttons or inc["status"] != "Actual":
                continue
            if not any(w in inc["headline"] for w in ("no heartbeat", "offline")):
                continue
            a = max(start, parse_ts(inc["opened_at"]))
            b = min(end, parse_ts(inc["closed_at"]) if inc["closed_at"] else end)
            down += max(0.0, b - a)
        out[school_id] = {"buttons": len(buttons), "availability": round(1 - down / (len(buttons) * (end - start)), 4), "down_seconds": round(down)}
    return out


def compute(store: Store, registry: Registry, start: float, end: float) -> dict[str, Any]:
    rows = [i for i in store.incidents(since=iso_utc(start), limit=1_000_000) if parse_ts(i["opened_at"]) < end]
    report: dict[str, Any] = {"from": iso_utc(start), "to": iso_utc(end), "generated": iso_utc(time.time())}
    for status, name in (("Actual", "actual"), ("Exercise", "drills")):
        chosen = [i for i in rows if i["status"] == status]
        panic = [i for i in chosen if i["rule"] == "panic"]
        per_school = {}
        for school_id in sorted({i["school_id"] for i in panic}):
            school = registry.school(school_id)
            per_school[school_id] = {"name": school.name if school else school_id, **response_times([i for i in panic if i["school_id"] == school_id])}
        hours: Counter = Counter()
        for i in chosen:
            school = registry.school(i["school_id"])
            hours[datetime.fromtimestamp(parse_ts(i["opened_at"]), ZoneInfo(school.timezone if school else "UTC")).hour] += 1
        report[name] = {
            "incidents": len(chosen),
            "panic": {"overall": response_times(panic), "schools": per_school, "daily": _daily(panic)},
            "by_rule": dict(Counter(i["rule"] for i in chosen).most_common()),
            "by_severity": {s: n for s in ("Extreme", "Severe", "Moderate", "Minor") if (n := sum(1 for i in chosen if i["severity"] == s))},
            "by_hour": {str(h): hours.get(h, 0) for h in range(24)},
        }
    health = store.incidents(rule="device_health", limit=1_000_000)
    report["availability"] = availability(health, registry, start, end)
    return report


def _daily(panic: list[dict[str, Any]]) -> list[dict[str, Any]]:
    days: dict[str, list[dict[str, Any]]] = {}
    for i in panic:
        days.setdefault(i["opened_at"][:10], []).append(i)
    out = []
    for day in sorted(days):
        t = response_times(days[day])
        out.append({"day": day, "incidents": len(days[day]), "ack_median_s": t["ack"].get("median_s"), "arrive_median_s": t["arrive"].get("median_s")})
    return out


# --- charts and HTML -------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def charts(store: Store, report: dict[str, Any], start: float, end: float) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panic = [i for i in store.incidents(since=iso_utc(start), rule="panic", status="Actual", limit=1_000_000) if parse_ts(i["opened_at"]) < end]
    out = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, field, limits, title in ((axes[0], "acked_at", (60,), "time to acknowledge (s)"), (axes[1], "arrived_at", (180, 300), "time to arrive (s)")):
        values = [parse_ts(i[field]) - parse_ts(i["opened_at"]) for i in panic if i[field]]
        ax.hist(values or [0], bins=20, color="#4f9dde")
        for limit in limits:
            ax.axvline(limit, color="#d7263d", linestyle="--", label=f"{limit} s")
        ax.set_title(title)
        ax.legend()
    out["distribution"] = _png(fig)
    daily = report["actual"]["panic"]["daily"]
    fig, ax = plt.subplots(figsize=(11, 3.2))
    ax.plot([d["day"] for d in daily], [d["ack_median_s"] or 0 for d in daily], marker="o", label="median time to acknowledge")
    ax.plot([d["day"] for d in daily], [d["arrive_median_s"] or 0 for d in daily], marker="o", label="median time to arrive")
    for limit in LIMITS:
        ax.axhline(limit, color="#999", linewidth=0.6)
    ax.set_ylabel("seconds")
    ax.set_title("trend by day")
    ax.legend()
    out["trend"] = _png(fig)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, key, title in ((axes[0], "by_rule", "incidents by rule"), (axes[1], "by_severity", "by severity"), (axes[2], "by_hour", "by hour of day (school time)")):
        data = report["actual"][key]
        ax.bar(list(data), list(data.values()), color="#f46036")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=60 if key == "by_rule" else 0, labelsize=7)
    out["counts"] = _png(fig)
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _rows(times: dict[str, Any], label: str) -> str:
    a, r = times["ack"], times["arrive"]
    return (
        f"<tr><td>{html.escape(label)}</td><td>{a['incidents']}</td><td>{a.get('median_s', '—')}</td><td>{a.get('p90_s', '—')}</td>"
        f"<td>{_pct(a['within']['60'])}</td><td>{a['never']}</td><td>{r.get('median_s', '—')}</td><td>{r.get('p90_s', '—')}</td>"
        f"<td>{_pct(r['within']['180'])}</td><td>{_pct(r['within']['300'])}</td><td>{r['never']}</td></tr>"
    )


def render_html(report: dict[str, Any], images: dict[str, str]) -> str:
    head = ("<tr><th>school</th><th>panic incidents</th><th>ack median s</th><th>ack p90 s</th><th>ack ≤ 60 s</th><th>never acked</th>"
            "<th>arrive median s</th><th>arrive p90 s</th><th>arrive ≤ 180 s</th><th>arrive ≤ 300 s</th><th>never arrived</th></tr>")

    def table(part: dict[str, Any]) -> str:
        rows = [_rows(part["panic"]["overall"], "all schools")] + [_rows(v, f"{v['name']} ({k})") for k, v in part["panic"]["schools"].items()]
        return f"<table>{head}{''.join(rows)}</table>"

    avail = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['buttons']}</td><td>{_pct(v['availability'])}</td><td>{v['down_seconds']}</td></tr>" for k, v in report["availability"].items()
    )
    img = lambda name: f'<img alt="{name}" src="data:image/png;base64,{images[name]}">' if name in images else ""  # noqa: E731
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>huxue 1-3-5 report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1b222b}}table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}
td,th{{border:1px solid #ccd;padding:.25rem .5rem;text-align:right}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}
h2{{margin-top:2rem}}.note{{color:#667}}</style></head><body>
<h1>护学 huxue — 1-3-5 response report</h1>
<p class="note">{html.escape(report['from'])} to {html.escape(report['to'])}. Rule 1-3-5: on-site guards acknowledge within 1 minute, mobile units arrive within 3 to 5 minutes.
{report['actual']['incidents']} real incidents, {report['drills']['incidents']} in drills (reported apart).</p>
<h2>Panic incidents: time to acknowledge and to arrive</h2>{table(report['actual'])}
{img('distribution')}{img('trend')}
<h2>Incidents by rule, severity and hour of day</h2>{img('counts')}
<h2>Panic-button availability</h2><table><tr><th>school</th><th>buttons</th><th>available</th><th>down (button-seconds)</th></tr>{avail}</table>
<h2>Drills</h2>{table(report['drills'])}
<p class="note">generated {html.escape(report['generated'])}</p></body></html>"""


def main(cfg: Config, since: str, out: str | None, fmt: str) -> int:
    store = Store(cfg.store_url)
    registry = load_registry(cfg.registry_path)
    end = time.time()
    start = period_start(since, end)
    report = compute(store, registry, start, end)
    if fmt == "json":
        data = dumps(report)
        if out:
            Path(out).write_bytes(data)
        else:
            sys.stdout.write(data.decode() + "\n")
        return 0
    path = Path(out or "report.html")
    path.write_text(render_html(report, charts(store, report, start, end)), encoding="utf-8")
    print(f"report: {path} ({report['actual']['incidents']} incidents, {report['drills']['incidents']} in drills, {datetime.now(timezone.utc):%Y-%m-%d})")
    return 0
