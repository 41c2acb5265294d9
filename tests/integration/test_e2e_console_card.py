"""The record on an incident card (issue 11), in Chromium on the real stack: the urgency
order, the timeline on the school's clock, Arrived asking for the unit, a lockdown card's own
actions, and a snapshot that does not load. Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from harness import Pipeline, free_port, wait_for
from pipeline.ops.auth import hash_password
from pipeline.records import iso_utc, parse_ts
from test_e2e_console import ARTIFACTS, _card, _read, browser, console_config, console_proc, sign_in  # noqa: F401 (browser: the shared fixture)

pytestmark = pytest.mark.integration


def test_card_order_timeline_unit_on_scene_lockdown_actions_and_broken_snapshot(stack, workdir, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    port = free_port()
    console_cfg = console_config(workdir, port, accounts=({"username": "ops-wang", "role": "admin", "password_hash": hash_password("pw-ops", iterations=1000)},))
    # deadlines far away: no ladder stage re-renders the cards while the test types
    p = Pipeline(stack, workdir, escalation=(600, 900, 1200), config=console_cfg)
    console = console_proc(p, workdir)

    def card_text(iid: str) -> str | None:
        return _read(lambda: _card(browser, iid).text)

    def type_into(iid: str, css: str, text: str) -> None:
        """Type into a box of a card (again, if a live update redrew it meanwhile)."""

        def typed() -> bool:
            box = _card(browser, iid).find_element(By.CSS_SELECTOR, css)
            box.clear()
            box.send_keys(text)
            return box.get_attribute("value") == text

        wait_for(lambda: _read(typed), 10, f"{text!r} typed into {css}")

    def click(iid: str, css: str) -> None:
        wait_for(lambda: _read(lambda: _card(browser, iid).find_element(By.CSS_SELECTOR, css).click() or True), 10, f"a click on {css}")

    try:
        p.start()
        console.start()
        console.wait_log("recording", 30)
        sign_in(browser, f"http://127.0.0.1:{port}/", "ops-wang", "pw-ops")

        # (a) the unacknowledged real panic, pressed first (the oldest), is listed above an
        # acknowledged real panic and a drill
        p.press("t41-btn-1")
        unacked = p.wait_stage("t41", "opened")["incident_id"]
        p.press("t42-btn-1")
        acked = p.wait_stage("t42", "opened")["incident_id"]
        p.command("ack", acked, by="guard-t42")
        ack_alert = p.wait_stage("t42", "acknowledged")
        p.press("t43-btn-1", exercise=True)
        drill = p.wait_stage("t43", "opened")["incident_id"]
        wait_for(lambda: "acknowledged by guard-t42" in (card_text(acked) or "") and card_text(drill) and card_text(unacked), 20, "the three cards")
        order = [e.get_attribute("data-incident") for e in browser.find_elements(By.CSS_SELECTOR, "#incidents [data-incident]")]
        assert order.index(unacked) < order.index(acked) < order.index(drill), order
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "console-ordering.png"))

        # (b) the timeline: the school's zone once in its header, the ack at the school's time
        click(acked, "details.timeline summary")
        rows = wait_for(lambda: _read(lambda: (t := _card(browser, acked).find_element(By.CSS_SELECTOR, "details.timeline .rows").text) and "acknowledged" in t and t), 15, "the timeline")
        header = wait_for(lambda: _read(lambda: _card(browser, acked).find_element(By.CSS_SELECTOR, "details.timeline summary").text), 10, "the timeline header")
        assert "(Asia/Shanghai)" in header, header
        local = datetime.fromtimestamp(parse_ts(ack_alert["sent"]), ZoneInfo("Asia/Shanghai")).strftime("%H:%M:%S")
        assert local in rows and "guard-t42" in rows, (local, rows)
        browser.save_screenshot(str(ARTIFACTS / "console-timeline.png"))

        # a note typed on a card outlives the live updates that re-render it (checked after (c))
        type_into(unacked, "input[data-note]", "calling the guard post")

        # (c) Arrived asks for the unit, inline; without one nothing is sent
        click(acked, "button[data-arrive]")
        click(acked, "button[data-confirm-arrive]")
        error = wait_for(lambda: _read(lambda: _card(browser, acked).find_element(By.CSS_SELECTOR, "[data-unit-error]").text), 10, "the unit-required message")
        assert error == "Enter the unit on scene."

        type_into(acked, "input[data-unit]", "Mobile unit 3")
        click(acked, "button[data-confirm-arrive]")
        arrived = p.wait_stage("t42", "arrived")
        assert (arrived["note"], arrived["by"]) == ("Mobile unit 3", "ops-wang")
        wait_for(lambda: _read(lambda: _card(browser, acked).find_element(By.CSS_SELECTOR, ".unit").text) == "Mobile unit 3", 15, "the unit on the card")
        text, arrive_buttons = wait_for(lambda: _read(lambda: (_card(browser, acked).text, len(_card(browser, acked).find_elements(By.CSS_SELECTOR, "button[data-arrive]")))), 10, "the card")
        assert "(reported by ops-wang)" in text and arrive_buttons == 0, (text, arrive_buttons)

        note = wait_for(lambda: _read(lambda: [_card(browser, unacked).find_element(By.CSS_SELECTOR, "input[data-note]").get_attribute("value")]), 10, "the note box")[0]
        assert note == "calling the guard post", note  # the arrival above re-rendered every card
        click(unacked, "button[data-command='ack']")
        assert p.wait_stage("t41", "acknowledged")["note"] == "calling the guard post"

        # (d) a lockdown card offers lifting it, and no Arrived
        p.command("lockdown", "", by="ops-wang", school_id="t44", reason="intruder reported")
        lockdown = p.wait_stage("t44", "opened", rule="lockdown")["incident_id"]
        wait_for(lambda: card_text(lockdown), 15, "the lockdown card")
        buttons = wait_for(lambda: _read(lambda: [b.get_attribute("data-command") or "arrive" for b in _card(browser, lockdown).find_elements(By.CSS_SELECTOR, ".actions button")]), 10, "the lockdown card's buttons")
        assert buttons == ["lift_lockdown"], buttons
        click(lockdown, "button[data-command='lift_lockdown']")
        p.wait_stage("t44", "lifted", rule="lockdown")
        wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, f"#incidents [data-incident='{lockdown}']"), 15, "the lifted lockdown to leave the open list")

        # (e) a snapshot that does not load (here: a 404 from the console) shows a placeholder
        missing = f"http://127.0.0.1:{port}/static/missing-snapshot.jpg"
        p.publish("t45-btn-1", {"event_id": p.event_id(), "type": "panic.pressed", "ts": iso_utc(time.time()), "media": {"snapshot_url": missing}})
        broken = p.wait_stage("t45", "opened")["incident_id"]
        placeholder = wait_for(lambda: _read(lambda: _card(browser, broken).find_element(By.CSS_SELECTOR, ".evidence .media-missing").text), 15, "the snapshot placeholder")
        assert placeholder == "snapshot unavailable"
        images = wait_for(lambda: _read(lambda: [len(_card(browser, broken).find_elements(By.CSS_SELECTOR, ".evidence img"))]), 10, "the card's evidence")
        assert images == [0], images
    finally:
        console.stop()
        p.close()
