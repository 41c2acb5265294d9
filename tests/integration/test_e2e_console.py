"""The console in a real headless browser (Debian's Chromium driven by Selenium), on the
real stack: a panic press published over MQTT appears without a reload, its 1-3-5
countdown runs, the Acknowledge button sends the command and the stage change shows up.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from harness import REPO, Pipeline, Proc, free_port, wait_for
from pipeline.ops.auth import hash_password
from pipeline.ops.recorder import rebuild
from pipeline.ops.store import Store

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "test-artifacts"
DUTY = {"username": "duty-li", "role": "duty_officer", "password_hash": hash_password("pw-duty", iterations=1000)}  # password pw-duty


def console_config(workdir, port: int, accounts: tuple[dict, ...] = (DUTY,), **more) -> dict:
    """The config block of a console on `port`, with its own store (SQLite in workdir)."""
    return {"console": {"port": port, "store": f"sqlite:///{workdir / 'history.sqlite3'}", "accounts": list(accounts), **more}}


def console_proc(p: Pipeline, workdir) -> Proc:
    """`huxue console` with the pipeline's config and environment (not started)."""
    return Proc("console", ["--config", str(p.cfg_path), "console"], workdir / "console.log", p.worker.env)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "Chromium and its driver are needed: apt-get install -y chromium chromium-driver (scripts/setup does)"
    profile = tempfile.mkdtemp(prefix="huxue-chromium-")
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see Content-Security-Policy violations
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_live_incident_countdown_and_acknowledge_in_the_browser(stack, workdir, browser):
    from selenium.webdriver.common.by import By

    port = free_port()
    console_cfg = console_config(workdir, port)
    p = Pipeline(stack, workdir, escalation=(60, 180, 300), config=console_cfg)
    console = console_proc(p, workdir)
    try:
        p.start()
        console.start()
        console.wait_log("recording", 30)
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        wait_for(lambda: browser.find_element(By.ID, "login").is_displayed(), 15, "the sign-in form")
        browser.find_element(By.NAME, "username").send_keys("duty-li")
        browser.find_element(By.NAME, "password").send_keys("pw-duty")
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait_for(lambda: browser.find_element(By.ID, "app").is_displayed(), 15, "the console after sign-in")
        wait_for(lambda: "on" in browser.find_element(By.ID, "live").get_attribute("class"), 15, "live updates connected")

        p.press("t31-btn-1")  # published over MQTT; the page is not reloaded from here on
        incident_id = wait_for(lambda: _read(lambda: browser.find_element(By.CSS_SELECTOR, "[data-incident*='-t31-']").get_attribute("data-incident")), 30, "the incident on the page")
        card_text = wait_for(lambda: _read(lambda: _card(browser, incident_id).text), 10, "the card")
        # a panic card keeps a fixed headline and says loudly that nobody has acknowledged it
        assert "PANIC — Test School 31, gate" in card_text and "NOT ACKNOWLEDGED" in card_text
        # ... and the page sounds the alarm (the sign-in click unlocked audio) and flashes the title
        cues = wait_for(lambda: (c := browser.execute_script("return window.huxueAttention()"))["sounding"] and c["audio"] == "running" and c, 10, "the alarm sounding")
        assert not cues["muted"]
        wait_for(lambda: browser.execute_script("return document.title").startswith("⚠ PANIC — Test School 31"), 5, "the tab title to flash")
        first = wait_for(lambda: _read(lambda: _card(browser, incident_id).find_element(By.CLASS_NAME, "countdown").text), 10, "a countdown")
        wait_for(lambda: _read(lambda: _card(browser, incident_id).find_element(By.CLASS_NAME, "countdown").text) not in (None, "", first), 5, "the countdown to run")
        assert first.startswith(("0:5", "1:0"))  # the 60 s on-site target, counting down

        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "console-live-incident.png"))

        wait_for(lambda: _read(lambda: _card(browser, incident_id).find_element(By.CSS_SELECTOR, "button[data-command='ack']").click() or True), 10, "a click on Acknowledge")
        wait_for(lambda: _read(lambda: _card(browser, incident_id).find_element(By.CLASS_NAME, "stage").text) == "acknowledged", 30, "the acknowledged stage on the page")
        acked_text = wait_for(lambda: _read(lambda: _card(browser, incident_id).text), 10, "the card")
        assert "acknowledged by duty-li" in acked_text and "NOT ACKNOWLEDGED" not in acked_text
        quiet = browser.execute_script("return window.huxueAttention()")
        assert not quiet["sounding"] and not quiet["title"].startswith("⚠")  # the ack ended the alarm
        # the card's timeline: opened, then acknowledged with who did it
        wait_for(lambda: _read(lambda: _card(browser, incident_id).find_element(By.CSS_SELECTOR, "details.timeline summary").click() or True), 10, "a click on Timeline")
        rows = wait_for(lambda: _read(lambda: (t := _card(browser, incident_id).find_element(By.CSS_SELECTOR, "details.timeline .rows").text) and "acknowledged" in t and t), 15, "the timeline")
        assert "opened" in rows and "duty-li" in rows, rows
        sent = p.alerts.wait(lambda rs: [a for a in rs if a["incident_id"] == incident_id and a["stage"] == "acknowledged"], 10, "the ack alert")
        assert sent[0]["by"] == "duty-li"  # the command records who sent it
        # the page works under the console's strict Content-Security-Policy: nothing was refused
        refused = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not refused, refused

        wait_for(lambda: _read(lambda: _card(browser, incident_id).find_element(By.CLASS_NAME, "school-link").click() or True), 10, "a click on the school")
        wait_for(lambda: "Gate posts" in browser.find_element(By.ID, "school").text, 10, "the school view")
        browser.set_window_size(412, 900)  # a guard's phone
        browser.save_screenshot(str(ARTIFACTS / "console-phone.png"))

        # the console's store, kept live from Kafka, equals one rebuilt from the topics
        live = Store(console_cfg["console"]["store"])
        wait_for(lambda: any(e["stage"] == "acknowledged" for e in live.timeline(incident_id)), 10, "the ack in the live store")
        console.stop()
        rebuilt = Store(f"sqlite:///{workdir / 'rebuilt.sqlite3'}")
        assert rebuild(p.cfg, rebuilt, timeout=60) > 0
        assert rebuilt.dump() == live.dump()
    finally:
        console.stop()
        p.close()


def _read(fn):
    """The page re-renders cards on every live update: a stale element just means read again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return fn()
    except (StaleElementReferenceException, NoSuchElementException):
        return None


def sign_in(browser, url: str, username: str, password: str) -> None:
    """Sign in on the console's page and wait for its live updates."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    wait_for(lambda: browser.find_element(By.ID, "login").is_displayed(), 15, "the sign-in form")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(lambda: "on" in browser.find_element(By.ID, "live").get_attribute("class"), 15, "live updates connected")


def _card(browser, incident_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f"#incidents [data-incident='{incident_id}']")


def test_the_console_serves_https_with_a_secure_session_cookie(stack, workdir):
    """`console.tls_cert`/`tls_key`: HTTPS without a reverse proxy; plaintext is refused."""
    import http.client
    import json
    import ssl
    import subprocess

    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    port = free_port()
    console_cfg = console_config(workdir, port, tls_cert=str(cert), tls_key=str(key))
    p = Pipeline(stack, workdir, config=console_cfg)
    console = console_proc(p, workdir)
    try:
        console.start()
        console.wait_log("recording", 30)
        trusted = ssl.create_default_context(cafile=str(cert))
        https = http.client.HTTPSConnection("127.0.0.1", port, context=trusted, timeout=10)
        https.request("POST", "/api/login", body=json.dumps({"username": "duty-li", "password": "pw-duty"}), headers={"Content-Type": "application/json"})
        r = https.getresponse()
        assert r.status == 200, r.read()
        cookie = r.getheader("Set-Cookie")
        assert "huxue_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
        r.read()
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/healthz")
            plain.getresponse()
    finally:
        console.stop()
        p.close()


def test_the_console_stops_on_sigterm_with_live_streams_open(stack, workdir):
    """Two browsers' live streams open, then SIGTERM: the console ends them and exits cleanly
    within its stop timeout (it used to wait for aiohttp's 60 s shutdown timeout, and more)."""
    import hashlib
    import http.client
    import os
    import signal
    import subprocess

    port = free_port()
    console_cfg = {
        **console_config(workdir, port, accounts=({"username": "ops", "role": "admin", "token_sha256": hashlib.sha256(b"ops-token").hexdigest()},)),
        "stack": {**stack["stack"], "stop_timeout_seconds": 10},
    }
    p = Pipeline(stack, workdir, config=console_cfg)
    console = console_proc(p, workdir)
    streams = []
    try:
        console.start()
        console.wait_log("recording", 30)
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/api/stream", headers={"Authorization": "Bearer ops-token"})
            response = conn.getresponse()
            assert response.status == 200 and response.readline().startswith(b": connected")
            streams.append(conn)
        os.killpg(console.proc.pid, signal.SIGTERM)
        try:
            code = console.proc.wait(10)  # stack.stop_timeout_seconds
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the console did not stop within 10 s of SIGTERM with 2 streams open:\n{console.output()[-2000:]}") from None
        assert code == 0, console.output()[-2000:]
        assert "Traceback" not in console.output()
    finally:
        for conn in streams:
            conn.close()
        console.stop()
        p.close()


def test_a_lost_connection_shows_a_stale_banner_and_a_panic_raised_meanwhile_appears(stack, workdir, browser):
    """The console dies under an open page: within seconds a full-width CONNECTION LOST banner;
    a panic pressed while it is down appears once the console is back, without a reload."""
    from selenium.webdriver.common.by import By

    port = free_port()
    console_cfg = console_config(workdir, port, session_secret="s" * 32)  # sessions outlive a restart
    p = Pipeline(stack, workdir, config=console_cfg)
    console = console_proc(p, workdir)
    try:
        p.start()
        console.start()
        console.wait_log("recording", 30)
        sign_in(browser, f"http://127.0.0.1:{port}/", "duty-li", "pw-duty")
        assert not browser.find_element(By.ID, "stale").is_displayed()

        console.kill()
        banner = wait_for(lambda: _read(lambda: browser.find_element(By.ID, "stale").text if browser.find_element(By.ID, "stale").is_displayed() else None), 15, "the stale banner")
        assert banner.startswith("CONNECTION LOST — data stale since ")
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "console-connection-lost.png"))

        p.press("t32-btn-1")  # while the console is down
        p.wait_stage("t32", "opened")
        console.start()
        wait_for(lambda: _read(lambda: browser.find_element(By.CSS_SELECTOR, "#incidents [data-incident*='-t32-']")), 60, "the panic raised meanwhile on the page")
        wait_for(lambda: not browser.find_element(By.ID, "stale").is_displayed(), 10, "the banner to go")
    finally:
        console.stop()
        p.close()
