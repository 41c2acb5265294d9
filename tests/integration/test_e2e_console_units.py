"""Mobile units in the console (issue 13), in Chromium on the real stack: unit reports on the
units topic (produced as the bridge writes them: key "<unit>/<aspect>", the canonical event),
a panic pressed over MQTT; the card lists the nearest units in ETA order, a click on
Dispatch sends the command (the worker emits `dispatched-1` with that unit), Arrived without
typing a unit records the unit dispatched; the map draws the units and colours the schools
by coverage. Screenshots go to test-artifacts/."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import harness
from harness import Pipeline, free_port, wait_for
from pipeline import kafka_client
from pipeline.ops.store import Store
from pipeline.records import dumps, iso_utc
from test_e2e_console import ARTIFACTS, _card, _read, browser, console_config, console_proc, sign_in  # noqa: F401 (browser: the shared fixture)

pytestmark = pytest.mark.integration

# Around t01 (30.58N 104.00E): the foot patrol is nearest by distance but last by ETA
PLACES = {"u-moto-1": 1000.0, "u-car-1": 1500.0, "u-foot-1": 200.0}  # metres north of t01
ETA_ORDER = ["u-moto-1", "u-car-1", "u-foot-1"]  # 144 s, 189 s, 202 s (road factor 1.4; 35, 40, 5 km/h)


class Units:
    """Reports the test registry's units on the units topic as the bridge would, positions
    every 5 s (they go stale after 120 s), until stopped."""

    def __init__(self, p: Pipeline, lat0: float, lon0: float):
        self.p, self.lat0, self.lon0 = p, lat0, lon0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def send(self, unit: str, etype: str, aspect: str, **attrs) -> None:
        now = iso_utc(time.time())
        event = {"event_id": f"{unit}-{uuid.uuid4().hex[:8]}", "type": etype, "ts": now, "device_id": unit, "school_id": "", "kind": "mobile_unit",
                 "zone": "", "source": "native", "mqtt_topic": f"huxue/v1/devices/{unit}/events", "received_at": now, "attrs": attrs, "exercise": False}
        self.p.producer.send(self.p.cfg.topics.units, key=f"{unit}/{aspect}", value=dumps(event)).get(30)

    def positions(self) -> None:
        for unit, metres in PLACES.items():
            self.send(unit, "unit.position", "position", lat=self.lat0 + metres / 111_195.0, lon=self.lon0, speed_kmh=0, heading=0, accuracy_m=8)

    def start(self) -> Units:
        for unit in PLACES:
            self.send(unit, "unit.status", "status", status="available")
        self.positions()
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(5):
            self.positions()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_nearest_units_dispatch_arrive_and_the_units_map(stack, workdir, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    port = free_port()
    console_cfg = console_config(workdir, port)
    registry = harness.test_registry(12, coordinates=True)  # (imported by name, pytest would collect it as a test)
    t01 = registry["schools"][0]["coordinates"]
    # deadlines far away: no ladder stage re-renders the cards while the test looks at them
    p = Pipeline(stack, workdir, escalation=(600, 700, 800), registry=registry, probe_device="t12-cam-1", config=console_cfg)
    kafka_client.ensure_units_topic(p.cfg, "admin")  # compacted, as the bridge and the worker create it
    units = Units(p, t01["lat"], t01["lon"]).start()  # before the worker starts: its view reads them at once
    console = console_proc(p, workdir)

    def in_card(iid: str, css: str):  # raises on a re-rendered card: call it inside _read()
        return _card(browser, iid).find_element(By.CSS_SELECTOR, css)

    try:
        p.start()
        console.start()
        console.wait_log("recording", 30)
        sign_in(browser, f"http://127.0.0.1:{port}/", "duty-li", "pw-duty")
        p.worker.wait_log("units view caught up", 30)  # it read the units produced before it started

        p.press("t01-btn-1")
        opened = p.wait_stage("t01", "opened", 30, rule="panic")
        iid = opened["incident_id"]
        assert [u["unit_id"] for u in opened["nearest_units"]] == ETA_ORDER, opened.get("nearest_units")

        # the card: the nearest units in ETA order, each with its ETA, profile and a Dispatch button
        def rows():
            return _read(lambda: [r.get_attribute("data-unit-row") for r in _card(browser, iid).find_elements(By.CSS_SELECTOR, "table.nearest tr")])

        assert wait_for(lambda: rows() == ETA_ORDER and rows(), 30, "the nearest units on the card") == ETA_ORDER
        first = wait_for(lambda: _read(lambda: in_card(iid, "tr[data-unit-row='u-moto-1']").text), 10, "the first unit's row")
        assert "2.4 min" in first and "motorbike" in first and "1.0 km" in first, first
        foot = wait_for(lambda: _read(lambda: in_card(iid, "tr[data-unit-row='u-foot-1']").text), 10, "the foot patrol's row")
        assert "on foot" in foot and "200 m" in foot and "in area" in foot, foot
        ARTIFACTS.mkdir(exist_ok=True)
        wait_for(lambda: _read(lambda: browser.execute_script("arguments[0].scrollIntoView(); return true", _card(browser, iid))), 10, "the card in view")
        browser.save_screenshot(str(ARTIFACTS / "console-nearest-units.png"))

        # one click on the second unit's Dispatch: the worker emits dispatched-1 with that unit
        wait_for(lambda: _read(lambda: in_card(iid, "button[data-dispatch='u-car-1']").click() or True), 10, "a click on Dispatch (u-car-1)")
        sent = p.wait_stage("t01", "dispatched-1", 30, rule="panic")
        assert (sent["incident_id"], sent["unit"], sent["dispatched"], sent["by"]) == (iid, "u-car-1", ["u-car-1"], "duty-li"), sent
        wait_for(lambda: _read(lambda: in_card(iid, "[data-dispatched='u-car-1']").text) == "u-car-1", 30, "the dispatched unit on the card")
        wait_for(lambda: _read(lambda: in_card(iid, "tr[data-unit-row='u-car-1'] .sent").text) == "dispatched", 10, "the row marked dispatched")

        # Arrived, confirmed without typing a unit: the worker records the unit dispatched
        wait_for(lambda: _read(lambda: in_card(iid, "button[data-arrive]").click() or True), 10, "a click on Arrived")
        hint = wait_for(lambda: _read(lambda: in_card(iid, "input[data-unit]").get_attribute("placeholder")), 10, "the unit prompt")
        assert "u-car-1" in hint, hint
        wait_for(lambda: _read(lambda: in_card(iid, "button[data-confirm-arrive]").click() or True), 10, "a click on Confirm arrival")
        arrived = p.wait_stage("t01", "arrived", 30, rule="panic")
        assert (arrived["unit"], arrived["by"]) == ("u-car-1", "duty-li"), arrived
        wait_for(lambda: _read(lambda: in_card(iid, "[data-arrived-unit]").get_attribute("data-arrived-unit")) == "u-car-1", 30, "the unit on scene on the card")
        assert wait_for(lambda: _read(lambda: _card(browser, iid).find_elements(By.CSS_SELECTOR, "button[data-dispatch]") == [] or None), 10, "no Dispatch once on scene")
        live = Store(console_cfg["console"]["store"])
        inc = wait_for(lambda: (i := live.incident(iid)) and i["arrived_unit"] and i, 10, "the arrival in the store")
        assert (inc["dispatched"], inc["arrived_unit"], [u["unit_id"] for u in inc["nearest_units"]]) == (["u-car-1"], "u-car-1", ETA_ORDER)
        # the recorder keeps the units' reports (the report's coverage is computed from them)
        got = wait_for(lambda: {r["unit_id"] for r in live.unit_reports("2000-01-01T00:00:00Z", iso_utc(time.time() + 60))} == set(PLACES) or None, 30, "unit reports in the store")
        assert got

        # the map: the units drawn; Coverage colours each school by its best ETA now
        browser.find_element(By.ID, "map-toggle").click()

        def marks() -> set[str] | None:
            return _read(lambda: {g.get_attribute("data-map-unit") for g in browser.find_elements(By.CSS_SELECTOR, "#map [data-map-unit]")})

        wait_for(lambda: marks() == set(PLACES), 20, "the units on the map")
        wait_for(lambda: _read(lambda: browser.find_element(By.ID, "coverage-toggle").click() or True), 10, "a click on Coverage")
        cov = lambda s: _read(lambda: browser.find_element(By.CSS_SELECTOR, f"#map [data-map-school='{s}']").get_attribute("data-coverage"))  # noqa: E731
        wait_for(lambda: cov("t01") == "target", 20, "t01 covered within the target")
        assert cov("t06") == "none"  # ~10 km: no unit within the 800 s limit
        fill = browser.execute_script("return getComputedStyle(document.querySelector(\"#map [data-map-school='t01'] circle\")).fill")
        assert fill.replace(" ", "") == "rgb(43,182,115)", fill  # the coverage view's green (--ok)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ARTIFACTS / "console-units-map.png"))

        # all of it under the console's strict Content-Security-Policy: nothing was refused
        refused = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not refused, refused
    finally:
        units.close()
        console.stop()
        p.close()
