"""Where and who (issue 11), in Chromium on the real stack: a panic card shows its school's
address, people to call (tel: links), site plan and the rule's checklist; a site plan that
does not load becomes a text placeholder; the Map view places the schools and flashes the one
with the panic, and a click on it filters the incidents. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest

import harness
from harness import REPO, Pipeline, free_port, wait_for
from test_e2e_console import ARTIFACTS, _card, _read, browser, console_config, console_proc, sign_in  # noqa: F401 (browser: the shared fixture)

pytestmark = pytest.mark.integration

SITE_PLAN = REPO / "pipeline" / "data" / "site-plans" / "zx-01.svg"  # the sample's, shipped with the package


def city() -> dict:
    """Twelve test schools on a grid around 30.62N 104.06E; t12 has no coordinates. t03's site
    plan loads, t04's file does not exist (a path relative to the registry file)."""
    reg = harness.test_registry(12)  # (imported by name, pytest would collect it as a test)
    for i, school in enumerate(reg["schools"][:11]):
        school["coordinates"] = {"lat": round(30.58 + (i % 4) * 0.03, 4), "lon": round(104.0 + (i // 4) * 0.05, 4)}
    for n in (3, 4):
        reg["schools"][n - 1].update(
            address=f"{n} Test Road, Wuhou District, Chengdu",
            contacts=[{"role": "guard_post", "name": "Main gate", "phone": f"+86 28 6555 {n:04d}"},
                      {"role": "police_station", "name": "Wuhou Police Station", "phone": f"028-6555-9{n:03d}"}],
        )
    reg["schools"][2]["site_plan"] = str(SITE_PLAN)
    reg["schools"][3]["site_plan"] = "plans/missing.png"
    return reg


def test_card_where_and_who_checklist_site_plans_and_the_map(stack, workdir, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    port = free_port()
    console_cfg = console_config(workdir, port)
    # deadlines far away: no ladder stage re-renders the cards while the test looks at them
    p = Pipeline(stack, workdir, escalation=(600, 900, 1200), registry=city(), probe_device="t12-cam-1", config=console_cfg)
    console = console_proc(p, workdir)

    def in_card(iid: str, css: str):  # raises on a re-rendered card: call it inside _read()
        return _card(browser, iid).find_element(By.CSS_SELECTOR, css)

    try:
        p.start()
        console.start()
        console.wait_log("recording", 30)
        sign_in(browser, f"http://127.0.0.1:{port}/", "duty-li", "pw-duty")

        p.press("t03-btn-1")
        p.press("t04-btn-1")
        ids = {}
        for school in ("t03", "t04"):
            ids[school] = wait_for(lambda s=school: _read(lambda: browser.find_element(By.CSS_SELECTOR, f"#incidents [data-incident*='-{s}-']").get_attribute("data-incident")),
                                   30, f"the {school} panic on the page")
        t03, t04 = ids["t03"], ids["t04"]

        # where and who: the address, and the people to call as tel: links
        where = wait_for(lambda: _read(lambda: in_card(t03, ".where-who").text), 10, "the school's where and who on the card")
        assert "Test School 3" in where and "3 Test Road, Wuhou District, Chengdu" in where, where
        calls = wait_for(lambda: _read(lambda: [a.get_attribute("href") for a in _card(browser, t03).find_elements(By.CSS_SELECTOR, "a.call")]), 10, "the call links")
        assert calls == ["tel:+862865550003", "tel:02865559003"], calls  # dialable: digits and +
        assert "Guard post · Main gate" in where and "+86 28 6555 0003" in where

        # the panic checklist; a tick is local to the page and survives live re-renders
        checklist = wait_for(lambda: _read(lambda: in_card(t03, "fieldset.checklist").text), 10, "the checklist")
        assert "What to do" in checklist and "Call the school's guard post" in checklist and "Dispatch the nearest mobile unit" in checklist
        wait_for(lambda: _read(lambda: in_card(t03, "input[data-check='0']").click() or True), 10, "a tick on the first item")
        wait_for(lambda: _read(lambda: in_card(t04, "button[data-command='ack']").click() or True), 10, "a click on Acknowledge (t04)")
        wait_for(lambda: _read(lambda: in_card(t04, ".stage").text) == "acknowledged", 30, "t04 acknowledged (the cards re-rendered)")
        ticks = wait_for(lambda: _read(lambda: (in_card(t03, "input[data-check='0']").is_selected(), in_card(t03, "input[data-check='1']").is_selected())), 10, "the ticks")
        assert ticks == (True, False), ticks

        # site plans: t03's image is served (authenticated) and loads; t04's file is missing:
        # a text placeholder, no broken-image icon
        loaded = wait_for(lambda: _read(lambda: browser.execute_script("const i = arguments[0]; return i.complete && i.naturalWidth > 0", in_card(t03, "img.site-plan"))),
                          15, "t03's site plan to load")
        href = wait_for(lambda: _read(lambda: in_card(t03, "a.plan").get_attribute("href")), 10, "t03's site-plan link")
        assert loaded and href.endswith("/api/schools/t03/site-plan"), href
        placeholder = wait_for(lambda: _read(lambda: in_card(t04, ".plan-missing").text), 15, "t04's site-plan placeholder")
        images = wait_for(lambda: _read(lambda: [len(_card(browser, t04).find_elements(By.CSS_SELECTOR, "img.site-plan"))]), 10, "t04's card")
        assert placeholder == "site plan unavailable" and images == [0], images
        ARTIFACTS.mkdir(exist_ok=True)
        wait_for(lambda: _read(lambda: browser.execute_script("arguments[0].scrollIntoView(); return true", _card(browser, t03))), 10, "t03's card in view")
        browser.save_screenshot(str(ARTIFACTS / "console-card-contacts.png"))

        # the map: every placed school a labelled dot; t03 (open, unacknowledged panic) and t04
        # (acknowledged, still open) in the Extreme colour; only the unacknowledged one flashes
        browser.execute_script("window.scrollTo(0, 0)")  # the Map button is not under the sticky header
        browser.find_element(By.ID, "map-toggle").click()

        def dot(school: str):
            return _read(lambda: browser.find_element(By.CSS_SELECTOR, f"#map [data-map-school='{school}']"))

        wait_for(lambda: dot("t03") is not None, 10, "the map")
        for school, flashing in (("t03", True), ("t04", False)):
            classes = wait_for(lambda s=school: _read(lambda: dot(s).get_attribute("class")), 5, f"{school}'s dot")
            assert ("flash" in classes.split()) == flashing and dot(school).get_attribute("data-severity") == "Extreme", classes
        assert "flash" not in dot("t01").get_attribute("class").split() and dot("t01").text.strip() == "Test School 1"
        blinking = browser.execute_script("return getComputedStyle(document.querySelector(\"#map [data-map-school='t03'] circle\")).animationName")
        assert blinking == "blink"  # the CSS animation runs (its pixels are not checked)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#map [data-map-school]")) == 11
        assert "Not placed: Test School 12" in browser.find_element(By.ID, "map").text
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ARTIFACTS / "console-map.png"))

        # a click on a school shows its incidents only; a second click shows all again
        def listed() -> set[str] | None:
            return _read(lambda: {c.get_attribute("data-incident") for c in browser.find_elements(By.CSS_SELECTOR, "#incidents [data-incident]")})

        wait_for(lambda: _read(lambda: dot("t04").find_element(By.TAG_NAME, "circle").click() or True), 10, "a click on t04's dot")
        wait_for(lambda: listed() == {t04}, 10, "only t04's incident listed")
        assert browser.find_element(By.ID, "f-school").get_attribute("value") == "t04"
        assert "selected" in dot("t04").get_attribute("class").split()
        wait_for(lambda: _read(lambda: dot("t04").find_element(By.TAG_NAME, "circle").click() or True), 10, "a second click on t04's dot")
        wait_for(lambda: listed() == {t03, t04}, 10, "both incidents listed again")

        # all of it under the console's strict Content-Security-Policy: nothing was refused
        refused = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not refused, refused
    finally:
        console.stop()
        p.close()
