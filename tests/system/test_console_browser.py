"""The console in a real browser: Debian's Chromium, driven by Selenium via chromium-driver,
against `enforcer ui` serving a store seeded with known records.

Screenshots of each page are saved under artifacts/console/ (the path is printed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from enforcer.store.importer import import_files
from enforcer.store.schema import connect
from tests.conftest import REPO, require

SEED = [REPO / "tests" / "data" / "audit" / n for n in ("alerts.jsonl", "audit.jsonl")]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = REPO / "artifacts" / "console"
HOW = "apt-get install chromium chromium-driver (scripts/setup.sh does it)"


@pytest.fixture(scope="module")
def console_url(tmp_path_factory):
    store = tmp_path_factory.mktemp("console") / "audit.db"
    conn = connect(store)
    assert import_files(conn, SEED).skipped == []
    conn.close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "enforcer", "ui", "--store", str(store),
         "--addr", "127.0.0.1:0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    if not match:
        proc.kill()
        pytest.fail(f"enforcer ui did not start: {line!r} {proc.stderr.read()}")
    yield match.group(1)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    require(Path(CHROMIUM).exists(), "no chromium browser", HOW)
    require(Path(CHROMEDRIVER).exists(), "no chromedriver", HOW)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "no selenium Python package", "pip install -e '.[test]'")
    profile = tempfile.mkdtemp(prefix="enforcer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, name: str) -> Path:
    """A full-page PNG of what the browser shows, kept as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    # Size the viewport to the whole page so the capture holds all of it.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1400, "height": min(int(height), 8000), "deviceScaleFactor": 1,
        "mobile": False})
    path = ARTIFACTS / f"{name}.png"
    try:
        assert driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"screenshot: {path}")
    return path


def listed(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.get_attribute("data-id")
            for row in driver.find_elements(By.CSS_SELECTOR, "tr.detection")]


def gone(element) -> bool:
    """Whether the element's document has been replaced. Chromium says so either as a stale
    element or, when the swap lands mid-call, as a node that "does not belong to the
    document" (which selenium's staleness_of does not recognise and raises)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def follow(driver, element) -> None:
    """Click something that loads a new page, and wait until the new page is there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, 20)
    wait.until(lambda d: gone(old))
    # the old page going stale is not the new one being complete: wait for that too
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def choose(driver, select_id: str, text: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for attempt in range(3):
        try:
            Select(driver.find_element(By.ID, select_id)).select_by_visible_text(text)
            apply = driver.find_element(By.ID, "apply")
            break
        except (StaleElementReferenceException, WebDriverException) as exc:
            # Chromium swapped the document under us (a late navigation): look again
            swapped = isinstance(exc, StaleElementReferenceException) or "document" in str(exc)
            if not swapped or attempt == 2:
                raise
    follow(driver, apply)


def test_filter_by_rule_and_by_outcome(browser, console_url):
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/")
    assert listed(browser) == ["8", "7", "6", "5", "4", "3", "2", "1"]
    screenshot(browser, "list")
    choose(browser, "f-rule", "Read sensitive file untrusted")
    assert listed(browser) == ["3", "2"]
    rules = {c.text for c in browser.find_elements(By.CSS_SELECTOR, "tr.detection td.rule")}
    assert rules == {"Read sensitive file untrusted"}
    screenshot(browser, "list-rule")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "a.reset"))
    choose(browser, "f-outcome", "failed")
    assert listed(browser) == ["5"]
    choose(browser, "f-outcome", "dry-run")
    assert listed(browser) == ["5", "2"]
    choose(browser, "f-outcome", "guard")
    assert listed(browser) == ["4"]
    screenshot(browser, "list-outcome")


def test_detail_shows_actions_and_trace_id(browser, console_url):
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/")
    follow(browser, browser.find_element(By.CSS_SELECTOR, 'tr.detection[data-id="1"] td.time a'))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Detection 1"
    actions = browser.find_elements(By.CSS_SELECTOR, "#actions tr.action")
    assert [a.get_attribute("data-action") for a in actions] == ["snapshot", "kill"]
    kill = actions[1]
    assert kill.find_element(By.CSS_SELECTOR, "td.target").text == \
        "pid=4242 start_ticks=1795428060"
    assert '"signal": "KILL"' in kill.find_element(By.CSS_SELECTOR, "pre.render").text
    assert kill.find_element(By.CSS_SELECTOR, "td.retries").text == "1"
    assert kill.find_element(By.CSS_SELECTOR, "td.latency").text == "3.25 ms"
    assert "done" in kill.find_element(By.CSS_SELECTOR, "td.outcome").text
    trace = f"{0xa1:032x}"
    assert trace in browser.find_element(By.ID, "trace-ids").text
    tree = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#process-tree li")]
    assert [t.split()[0] for t in tree] == ["systemd", "containerd-shim", "runc", "bash"]
    screenshot(browser, "detail")


def test_failed_action_shows_error_and_retries(browser, console_url):
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/detection/5")
    rows = browser.find_elements(By.CSS_SELECTOR, "#actions tr.action")
    failed = [r for r in rows if r.get_attribute("data-action") == "delete_pod"][0]
    assert "503 Service Unavailable" in failed.find_element(By.CSS_SELECTOR, "td.error").text
    assert failed.find_element(By.CSS_SELECTOR, "td.retries").text == "3"
    screenshot(browser, "detail-failed")


def test_dry_run_view_lists_what_would_have_been_done(browser, console_url):
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/")
    follow(browser, browser.find_element(By.ID, "nav-dry-run"))
    policies = browser.find_elements(By.CSS_SELECTOR, "section.policy")
    assert [p.get_attribute("data-policy") for p in policies] == ["isolate-dropper",
                                                                  "kill-readers"]
    readers = policies[1]
    assert [r.get_attribute("data-action") for r in
            readers.find_elements(By.CSS_SELECTOR, "tr.would-row")] == ["kill"]
    example = readers.find_element(By.CSS_SELECTOR, "tr.example")
    would = example.find_element(By.CSS_SELECTOR, ".would").text
    assert '"syscall": "pidfd_send_signal"' in would and '"pid": 4242' in would
    assert example.find_element(By.CSS_SELECTOR, ".target").text == \
        "pid=4242 start_ticks=1795428120"
    assert '"dryRun": "All"' in policies[0].find_element(By.CSS_SELECTOR, ".would").text
    screenshot(browser, "dry-run")


def test_chart_of_counts(browser, console_url):
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/stats?by=rule")
    bars = browser.find_elements(By.CSS_SELECTOR, "svg#chart rect.bar")
    assert len(bars) == 8
    legend = browser.find_element(By.ID, "legend").text
    assert "Terminal shell in container 4" in legend
    screenshot(browser, "stats")
    browser.get(console_url + "/stats?by=outcome")
    legend = browser.find_element(By.ID, "legend").text
    assert "dry-run 2" in legend and "failed 1" in legend and "guard 1" in legend


def test_script_in_alert_fields_is_shown_as_text(browser, console_url):
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/detection/6")
    assert browser.title == "Detection 6 · enforcer"  # the payload would set it to "pwned"
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.CSS_SELECTOR, "#fields img") == []
    output = browser.find_element(By.ID, "output").text
    assert "cmdline=<script>alert('xss')</script>" in output
    fields = browser.find_element(By.ID, "fields").text
    assert "sh -c <script>document.title='pwned'</script>" in fields
    assert "<img src=x onerror=alert(1)>" in fields
    screenshot(browser, "detail-script-as-text")
