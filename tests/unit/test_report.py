"""`huxue report` readable: charts fitted to the data and labelled, still open apart from never
acknowledged, availability over the observed time only, HTML for phones and A4, PDF.

On SQLite and the recorded week of tests/streams.py (the PostgreSQL run is in
tests/integration/test_history.py)."""

from __future__ import annotations

import dataclasses
import re
import time
from types import SimpleNamespace

import pytest

from pipeline.cli import parser
from pipeline.ops import report
from pipeline.ops.store import Store
from pipeline.records import dumps, iso_utc, loads
from pipeline.registry import Device, School
from streams import DAY, registry, week

T0 = 1_790_000_000.0  # a fixed epoch for hand-made incidents


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The recorded week in a SQLite store, and the period and report over it."""
    start = time.time() - 4 * DAY
    w = week(start)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('report') / 'history.sqlite3'}")
    store.apply(w.records)
    a, b = start - 3600, start + 4 * DAY
    return SimpleNamespace(week=w, store=store, start=start, a=a, b=b, report=report.compute(store, registry(), a, b))


def incident(opened: float, acked: float | None = None, closed: float | None = None, **extra) -> dict:
    return {"opened_at": iso_utc(opened), "acked_at": iso_utc(acked) if acked else None, "arrived_at": None,
            "closed_at": iso_utc(closed) if closed else None, "state": "closed" if closed else "open", **extra}


# --- charts ------------------------------------------------------------------------------


def test_histogram_bins_follow_the_data_and_axes_are_labelled(recorded):
    few = [20.0, 35.0, 41.0, 75.0]
    many = [10.0 + (i * 7.3) % 290 for i in range(600)]
    small = report.figures(recorded.report, few, few)["ack"].axes[0]
    large = report.figures(recorded.report, many, many)["ack"].axes[0]
    assert len(small.patches) != len(large.patches)  # bars = bins: fitted, not a fixed 20
    assert 1 <= len(small.patches) < len(large.patches) <= report.MAX_BINS
    for ax in (small, large):
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("seconds from press", "incidents")
        assert all(float(t).is_integer() for t in ax.get_yticks())  # counts: whole ticks only
    # the 60 s limit is drawn where the data reach it, said in words where they do not
    assert [line.get_xdata()[0] for line in large.get_lines()] == [60]
    quick = report.figures(recorded.report, [5.0, 8.0, 12.0], [100.0, 200.0])
    assert quick["ack"].axes[0].get_lines() == [] and any("all within 60 s" in t.get_text() for t in quick["ack"].axes[0].texts)
    arrive = quick["arrive"].axes[0]
    # one ack hours late does not squeeze the rest into a single bar
    tail = report.figures(recorded.report, [*many, 9000.0], [])["ack"].axes[0]
    assert tail.get_xlim()[1] < 1000 and any("1 later than" in t.get_text() for t in tail.texts)
    assert len(tail.patches) > 5
    assert [line.get_xdata()[0] for line in arrive.get_lines()] == [180] and any("all within 300 s" in t.get_text() for t in arrive.texts)


def test_every_chart_has_labelled_axes_and_readable_hours(recorded):
    figs = report.figures(recorded.report, *report.delays(recorded.store, recorded.a, recorded.b))
    assert set(figs) == {"ack", "arrive", "trend", "by_rule", "by_severity", "by_hour"}
    for name, fig in figs.items():
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), name
    hours = figs["by_hour"].axes[0]
    assert [t.get_text() for t in hours.get_xticklabels()] == ["00", "03", "06", "09", "12", "15", "18", "21"]
    assert sum(p.get_height() for p in hours.patches) == 6
    assert figs["trend"].axes[0].get_ylabel() == "seconds from press"
    for name in ("by_rule", "by_severity", "by_hour"):
        assert all(float(t).is_integer() for t in figs[name].axes[0].get_yticks()), name


def test_charts_of_an_empty_period_still_draw(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    r = report.compute(store, registry(), T0, T0 + DAY)
    images = report.charts(store, r, T0, T0 + DAY)
    assert len(images) == 6 and all(images.values())


# --- still open vs never acknowledged ---------------------------------------------------------


def test_still_open_is_not_never_acknowledged():
    end = T0 + 3600
    times = report.response_times([
        incident(T0, acked=T0 + 20, closed=T0 + 600),  # acked in time
        incident(T0, closed=T0 + 600),  # closed without an ack: never acknowledged
        incident(end - 600),  # open 10 min, no ack yet: still open, and past 60 s already
        incident(end - 30),  # open 30 s: still open, not late yet
    ], end)["ack"]
    assert (times["incidents"], times["count"], times["never"], times["still_open"]) == (4, 1, 1, 2)
    # the 30 s old one has missed no limit yet: left out of every share; the 10 min old one is late
    assert times["within"] == {"60": round(1 / 3, 3), "180": round(1 / 3, 3), "300": round(1 / 3, 3)}


def test_the_recorded_week_reports_its_open_panic_as_still_open(recorded):
    overall = recorded.report["actual"]["panic"]["overall"]
    assert (overall["ack"]["never"], overall["ack"]["still_open"]) == (0, 1)
    assert (overall["arrive"]["never"], overall["arrive"]["still_open"]) == (0, 1)
    assert recorded.report["actual"]["still_open"] == 1
    s2 = recorded.report["actual"]["panic"]["schools"]["s2"]["ack"]
    assert s2["still_open"] == 1 and s2["within"]["60"] == 0.5  # open for days: it did miss 60 s
    page = report.render_html(recorded.report, {})
    assert "open, not acked yet" in page and "never acked" in page


# --- availability over the observed time ------------------------------------------------------


def test_availability_counts_only_the_observed_time():
    reg = registry()
    down = {"school_id": "s1", "status": "Actual", "headline": "s1-btn-2: no heartbeat", "evidence": [{"device_id": "s1-btn-2"}],
            "opened_at": iso_utc(T0 + 3000), "closed_at": iso_utc(T0 + 5000)}
    out = report.availability([down], reg, T0, T0 + 10000, T0 + 4000)  # the record starts inside the period
    s1 = out["s1"]
    assert (s1["observed_seconds"], s1["period_seconds"], s1["down_seconds"]) == (6000, 10000, 1000)  # down before 4000 unseen
    assert s1["availability"] == round(1 - 1000 / (2 * 6000), 4) and s1["observed_from"] == iso_utc(T0 + 4000)
    # a quiet school is observed from the same start: the worker watches every school at once
    assert out["s2"]["observed_seconds"] == 6000 and out["s2"]["availability"] == 1.0
    assert report.availability([down], reg, T0, T0 + 10000, T0 - DAY)["s2"]["observed_seconds"] == 10000
    # an empty store: no data, not 100 %
    assert report.availability([down], reg, T0, T0 + 10000, None)["s2"]["availability"] is None


def test_the_recorded_week_is_observed_from_the_first_record(recorded, tmp_path):
    start, b = recorded.start, recorded.b
    first = start + 8 * 3600  # heartbeats are not stored: the first panic press is the first record
    assert report.observed_since(recorded.store) == pytest.approx(first, abs=0.01)
    s1 = recorded.report["availability"]["s1"]
    assert s1["observed_seconds"] == round(b - first) and s1["period_seconds"] == round(b - recorded.a)
    assert s1["availability"] == round(1 - recorded.week.down["s1"] / (2 * (b - first)), 4)
    # a school with buttons and no record of its own is observed too, and was available
    reg = registry()
    reg = dataclasses.replace(reg, schools={**reg.schools, "s3": School(id="s3", name="School S3")},
                              devices={**reg.devices, "s3-btn-1": Device("s3-btn-1", "s3", "panic_button")})
    r = report.compute(recorded.store, reg, recorded.a, b)
    assert r["availability"]["s3"]["availability"] == 1.0 and r["availability"]["s3"]["observed_seconds"] == round(b - first)
    page = report.render_html(r, {})
    assert f"{report.span(b - first)} of {report.span(b - recorded.a)}" in page
    # an empty store has no availability to report
    empty = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    empty.migrate()
    r = report.compute(empty, reg, recorded.a, b)
    assert r["availability"]["s3"]["availability"] is None and "no data" in report.render_html(r, {})


def test_span_reads_like_a_person_would_say_it():
    assert [report.span(s) for s in (45, 11520, 7 * DAY, 4 * DAY + 6 * 3600 + 59)] == ["0 min", "3 h 12 min", "7 d", "4 d 6 h"]


# --- HTML, JSON, PDF, CLI -------------------------------------------------------------------


def test_html_names_schools_in_local_time_for_phones_and_a4(recorded):
    r = recorded.report
    page = report.render_html(r, report.charts(recorded.store, r, recorded.a, recorded.b))
    assert page.count("data:image/png;base64,") == 6
    assert 'School S1 <small class="id">s1</small>' in page and 'School S2 <small class="id">s2</small>' in page
    assert "@page{size:A4" in page and "page-break-inside:avoid" in page
    assert 'name="viewport"' in page and "overflow-x:auto" in page and "max-width:100%" in page
    assert r["timezone"] == "Asia/Shanghai" and r["from_local"] in page and "(Asia/Shanghai)" in page
    assert r["from_local"].endswith("CST")


def test_json_keeps_the_old_keys_and_adds_the_new(recorded):
    data = loads(dumps(recorded.report))
    assert {"from", "to", "generated", "actual", "drills", "availability"} <= set(data)
    ack = data["actual"]["panic"]["overall"]["ack"]
    assert {"incidents", "count", "never", "within", "median_s", "p90_s", "still_open"} <= set(ack)
    assert {"buttons", "availability", "down_seconds", "observed_seconds", "observed_from", "period_seconds", "name"} <= set(data["availability"]["s1"])


def test_pdf_has_a_title_page_and_one_page_per_chart(recorded, tmp_path):
    figs = report.figures(recorded.report, *report.delays(recorded.store, recorded.a, recorded.b))
    path = tmp_path / "r.pdf"
    pages = report.write_pdf(path, recorded.report, figs)
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    assert pages == 1 + len(figs) == len(re.findall(rb"/Type\s*/Page\b(?!s)", data))
    text = "\n".join(report.summary_lines(recorded.report))
    assert "School S1 (s1)" in text and "observed" in text


def test_cli_writes_a_pdf(registry_file, tmp_path):
    args = parser().parse_args(["report", "--format", "pdf", "--out", str(tmp_path / "r.pdf")])
    assert (args.format, args.out) == ("pdf", str(tmp_path / "r.pdf"))
    from pipeline.config import Config, ConsoleConfig

    cfg = Config(registry=str(registry_file), console=ConsoleConfig(store=f"sqlite:///{tmp_path / 'h.sqlite3'}"))
    assert report.main(cfg, since="7d", out=args.out, fmt="pdf") == 0
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert report.main(cfg, since="7d", out=str(tmp_path / "r.html"), fmt="html") == 0
    assert "Zixing No.1 Middle School" in (tmp_path / "r.html").read_text(encoding="utf-8")


# --- mobile units (issue 13) ----------------------------------------------------------------


def test_coverage_shares_gaps_and_the_panics_units(tmp_path):
    """Per school the share of window minutes a unit could have arrived within 3 and 5
    minutes, from the recorded unit reports; coverage_gap incidents counted; for each panic
    the unit dispatched and the one that arrived, and the dispatch-to-arrival time."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from pipeline.config import Config, EscalationConfig
    from pipeline.ops.store import Record
    from pipeline.records import CanonicalEvent, Command
    from pipeline.registry import Coordinates, Unit
    from pipeline.rules import engine
    from pipeline.rules.state import Context, SchoolState
    from streams import _event

    here = Coordinates(30.6571, 104.0817)
    reg = registry()
    reg = dataclasses.replace(reg, schools={**reg.schools, "s1": dataclasses.replace(reg.schools["s1"], coordinates=here)},
                              units={"car-07": Unit("car-07", "car", ("s1",), callsign="巡逻7号")})
    tz = ZoneInfo("Asia/Shanghai")
    t = lambda hhmm: datetime.fromisoformat(f"2026-11-30T{hhmm}").replace(tzinfo=tz).timestamp()  # noqa: E731 (a Monday)
    start, end = t("07:30:00"), t("07:50:00")  # 20 minutes of school hours

    def ev(etype: str, at: float, n: int, **attrs) -> dict:
        return CanonicalEvent(event_id=f"car-{n}", type=etype, ts=iso_utc(at), device_id="car-07", school_id="", kind="mobile_unit", zone="",
                              source="native", mqtt_topic="huxue/v1/devices/car-07/events", received_at=iso_utc(at), attrs=attrs).to_dict()

    # available since 07:00; 2 km north (252 s by car: within 5 min, not 3) until 07:40, then 1 km (126 s); a report every 20 s
    values = [ev("unit.status", t("07:00:00"), 0, status="available")]
    for i, at in enumerate(range(int(t("07:20:00")), int(end), 20)):
        lat = here.lat + (2000 if at < t("07:40:00") else 1000) / 111_195.0
        values.append(ev("unit.position", at, i + 1, lat=lat, lon=here.lon, speed_kmh=30, heading=0))
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    store.apply([Record("unit", "huxue.units", 0, i, "car-07/x", v) for i, v in enumerate(values)])

    # a real panic at s1: car-07 dispatched 10 s after the press, on scene 100 s later (arrive names no unit)
    ctx = Context(EscalationConfig(600, 900, 1200), reg)
    pressed = t("07:35:00")
    out = engine.on_event(SchoolState(school_id="s1", partition=0), _event(reg.device("s1-btn-1"), "panic.pressed", pressed, 1), pressed, ctx)
    panic = out.alerts[0].incident_id
    alerts = list(out.alerts)
    out = engine.on_command(out.state, Command("dispatch", by="duty", incident_id=panic, school_id="s1", unit="car-07", command_id="c-1"), pressed + 10, ctx)
    alerts += out.alerts
    out = engine.on_command(out.state, Command("arrive", by="duty", incident_id=panic, school_id="s1", command_id="c-2"), pressed + 110, ctx)
    alerts += out.alerts
    gap = dataclasses.replace(alerts[0], incident_id="inc-20261130-s1-0009-aaaaaa", identifier="inc-20261130-s1-0009-aaaaaa/opened", rule="coverage_gap", severity="Severe")
    store.apply([Record("alert", "huxue.alerts", 0, 100 + i, a.school_id, a.to_dict()) for i, a in enumerate([*alerts, gap])])

    r = report.compute(store, reg, start, end, Config())
    cov = r["coverage"]
    # the hand-made gap, and any the engine's own coverage_gap rule raised meanwhile (no unit view in its Context)
    gaps = len(store.incidents(rule="coverage_gap", status="Actual"))
    assert cov["limits"] == [180, 300] and cov["units"] == 1 and cov["gaps"] == gaps >= 1
    s1 = cov["schools"]["s1"]
    # 07:30-07:39 within 5 minutes only; 07:40-07:49 within 3
    assert (s1["window_minutes"], s1["covered_minutes"], s1["within"], s1["gaps"]) == (20, {"180": 10, "300": 20}, {"180": 0.5, "300": 1.0}, gaps)
    assert cov["schools"]["s2"]["located"] is False and cov["schools"]["s2"]["within"] == {"180": None, "300": None}
    units = r["actual"]["panic"]["units"]
    assert [(i["dispatched"], i["arrived_unit"], i["dispatch_to_arrive_s"]) for i in units["incidents"]] == [(["car-07"], "car-07", 100.0)]
    assert units["dispatch_to_arrive"] == {"count": 1, "median_s": 100.0, "p90_s": 100.0} and units["arrived_by_unit"] == {"car-07": 1}
    # a limit of its own from the escalation config
    assert report.compute(store, reg, start, end, Config(escalation=EscalationConfig(60, 120, 240)))["coverage"]["schools"]["s1"]["within"] == {"120": 0.0, "240": 0.5}
    # the HTML, the PDF summary and the JSON carry them
    page = report.render_html(r, {})
    assert "Mobile-unit coverage" in page and "50.0%" in page and "100.0%" in page and "Panic incidents: mobile units" in page
    text = "\n".join(report.summary_lines(r))
    assert "Mobile-unit coverage" in text and "School S1 (s1)" in text and "dispatch -> arrive: median 100.0 s" in text
    assert loads(dumps(r))["coverage"]["schools"]["s1"]["within"]["300"] == 1.0


def test_no_units_no_coverage_section(recorded):
    assert recorded.report["coverage"]["schools"] == {} and "Mobile-unit coverage" not in report.render_html(recorded.report, {})
