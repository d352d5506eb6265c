"""The dashboard page in a real headless browser (Debian's chromium + chromium-driver, by selenium).

Set I2VD_DASHBOARD_SCREENSHOT=docs/dashboard.png to keep the screenshot the test takes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from i2vd.core.lock import StateLock
from i2vd.render.backends.builtin import BuiltinBackend
from i2vd.store.journal import JobState
from tests.support.fakes import wait_for
from tests.support.web_site import HOSTILE_NAME, make_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "browser-token"
WAIT_SECONDS = 30


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing under CI (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver here: apt-get install chromium chromium-driver (CI installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1500",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options
    )
    driver.set_page_load_timeout(WAIT_SECONDS)
    yield driver
    driver.quit()


@pytest.fixture
def site(tmp_path, mp4_bytes):
    site = make_site(tmp_path / "site", mp4_bytes, token=TOKEN, videos=6)
    yield site
    site.close()


def until(driver, script: str, message: str):
    """Poll a JavaScript expression in the page until it is truthy."""
    return wait_for(
        lambda: driver.execute_script(f"return {script}"), timeout=WAIT_SECONDS, interval=0.1, message=message
    )


def text(driver, selector: str) -> str | None:
    """An element's text, read in one step: the page redraws parts of itself every 2 s."""
    return driver.execute_script(
        "const node = document.querySelector(arguments[0]); return node ? node.innerText : null", selector
    )


def sign_in(driver, site) -> None:
    from selenium.webdriver.common.by import By

    driver.get(site.url + "/")
    until(driver, "location.pathname === '/login'", "the page sends a stranger to /login")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(driver, "document.body.dataset.loaded === 'true'", "the dashboard drew itself after signing in")


def test_the_dashboard_shows_counts_plays_a_video_escapes_names_and_retries(browser, site, tmp_path):
    from selenium.webdriver.common.by import By

    sign_in(browser, site)

    def tile(state: str) -> str:
        return text(browser, f'.tile[data-state="{state}"] .number')

    until(browser, "document.querySelectorAll('#gallery video').length === 6", "six videos in the gallery")
    assert (tile("done"), tile("failed"), tile("queued")) == ("6", "1", "0")

    # the hostile file name is text, in the failed table and nowhere as markup
    assert text(browser, f'#failed tr[data-job-id="{site.failed_id}"] td.file') == HOSTILE_NAME
    assert text(browser, f'#failed tr[data-job-id="{site.failed_id}"] td.error') == "server said: <b>no</b> (HTTP 500)"
    assert browser.execute_script("return document.querySelectorAll('img, b').length") == 0
    assert browser.execute_script("return window.__pwned === undefined")

    # a gallery video plays: decoded frames and a clock that moves
    played = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const video = document.querySelector('#gallery video');
        video.muted = true;
        video.play().then(() => {
          const started = performance.now();
          const check = () => {
            if (video.currentTime > 0 && video.videoWidth > 0) done({ok: true, width: video.videoWidth});
            else if (performance.now() - started > 20000) done({ok: false, state: video.readyState});
            else setTimeout(check, 50);
          };
          check();
        }, (error) => done({ok: false, error: String(error), code: video.error && video.error.code}));
    """)
    assert played == {"ok": True, "width": 64}
    poster = browser.execute_script("return document.querySelector('#gallery video').poster")
    assert poster.startswith(site.url + "/posters/")

    screenshot = tmp_path / "dashboard.png"
    until(
        browser,
        "[...document.querySelectorAll('#gallery video')].every(v => v.readyState >= 2 || v.poster)",
        "the gallery loaded",
    )
    browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("I2VD_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(screenshot, Path(os.environ["I2VD_DASHBOARD_SCREENSHOT"]))

    # Retry re-queues the failed job, through the API and the journal
    browser.find_element(By.CSS_SELECTOR, f'button.retry[data-job-id="{site.failed_id}"]').click()
    wait_for(
        lambda: site.journal.job(site.failed_id).state is JobState.QUEUED,
        timeout=WAIT_SECONDS,
        message="the Retry button re-queued the job",
    )
    until(browser, "document.getElementById('retry-message').textContent.includes('queued')", "the page says so")
    until(
        browser,
        "document.querySelector('.tile[data-state=\"queued\"] .number').textContent === '1'",
        "the counts follow",
    )
    # the counts and the failed list come from two API calls: each is redrawn when its own reply arrives
    until(
        browser, "document.querySelector('#failed').textContent.includes('No failed jobs.')", "the failed list follows"
    )


def test_the_builtin_engine_reads_as_an_engine_not_a_server(browser, site):
    servers = [{"name": "builtin", **BuiltinBackend().describe(), "down_since": None, "gate": "open", "jobs_done": 2}]
    with StateLock(site.config.state_dir):  # a daemon runs, with the builtin engine
        site.journal.publish_status({"pid": os.getpid(), "servers": servers})
        sign_in(browser, site)
        until(browser, "document.querySelector('#servers .card.server') !== null", "the server's card")
        card = text(browser, "#servers .card.server")
    lines = [line for line in card.splitlines() if line.strip()]
    assert lines[0].startswith("builtin") and lines[1] == "CPU engine, no server", card  # as `i2vd status` reads
    assert "builtin:" not in card


def test_the_gallery_pages_through_older_videos(browser, site):
    from selenium.webdriver.common.by import By

    for index in range(6, 14):  # 14 videos: a second page
        source = site.config.watch[0].path / f"more {index}.jpg"
        from tests.support.web_site import _image

        _image(source, (index * 10, 50, 50))
        from i2vd.ingest.intake import Intake

        job = Intake(site.config, site.journal).consider(source, site.config.watch[0]).job
        site.journal.claim_next("test", 60)
        video = site.config.output_dir / f"more {index}.mp4"
        video.write_bytes((site.config.output_dir / "beach" / "photo 0.mp4").read_bytes())
        site.journal.set_output_path(job.id, str(video))
        site.journal.mark_done(job.id, {"kind": "builtin"}, 2.0)
    sign_in(browser, site)
    until(browser, "document.getElementById('page').textContent === '1–12 of 14'", "page one of two")
    assert text(browser, "#gallery figure .name") == "more 13.jpg"
    browser.find_element(By.ID, "older").click()
    until(browser, "document.getElementById('page').textContent === '13–14 of 14'", "page two")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery figure")) == 2
    assert browser.find_element(By.ID, "older").get_attribute("disabled") == "true"


def test_the_page_fits_a_phone_screen(browser, site):
    browser.set_window_size(390, 844)
    sign_in(browser, site)
    until(browser, "document.querySelectorAll('#gallery video').length === 6", "the gallery drew")
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways on a phone: {widths}"
    columns = browser.execute_script(
        "return new Set([...document.querySelectorAll('#gallery "
        "figure')].map(f => f.getBoundingClientRect().left)).size"
    )
    assert columns == 1


def test_the_gpu_hosts_show_alive_and_gone_with_the_broker_and_none_for_a_local_daemon(browser, site):
    from i2vd.core.lock import StateLock

    sign_in(browser, site)
    assert browser.execute_script("return document.getElementById('workers-section').hidden") is True  # local
    now = site.journal.clock.now()
    seen = {"queue": "i2vd", "pid": 1, "server": "comfyui http://127.0.0.1:8188", "current_key": None}
    seen.update(jobs_done=2, started_at=now - 7200, last_seen=now)
    hostile = {**seen, "worker_id": HOSTILE_NAME, "host": HOSTILE_NAME, "gate": "<b>open</b>", "current_job": None}
    site.journal.record_workers_seen([hostile], now, 3600.0)
    dead = {**seen, "worker_id": "gpu-dead", "host": "gpu-dead", "gate": "open", "current_job": site.done_ids[0]}
    site.journal.record_workers_seen([dead], now - 3600, 19.0)
    with StateLock(site.config.state_dir):  # a daemon runs: what it published about the broker shows
        site.journal.publish_status(
            {"broker": {"url": "redis://queue-host:6379/0", "queue": "i2vd", "reachable": False, "since": now,
                        "checked_at": now, "error": "Connection refused"}}
        )  # fmt: skip
        until(browser, "!document.getElementById('workers-section').hidden", "the GPU hosts section appears")
        until(browser, "document.querySelectorAll('#workers .worker').length === 2", "two workers")
        assert text(browser, "#broker").startswith("broker unreachable: redis://queue-host:6379/0 since")
        site.journal.publish_status(
            {"broker": {"url": "redis://queue-host:6379/0", "queue": "i2vd", "reachable": True, "since": now,
                        "checked_at": now, "error": None, "warning": "hosts on queue i2vd disagree <b>on</b> it"}}
        )  # fmt: skip
        until(browser, "document.getElementById('broker').textContent.includes('warning')", "the hosts' disagreement")
        assert text(browser, "#broker") == (
            "broker redis://queue-host:6379/0, queue i2vd: reachable;"
            " warning: hosts on queue i2vd disagree <b>on</b> it"
        )
        assert browser.execute_script("return document.getElementById('broker').className") == "error"
    assert text(browser, '#workers .worker[data-state="gone"] .pill') == "gone"
    assert "was on job" in text(browser, '#workers .worker[data-state="gone"]')
    assert text(browser, '#workers .worker[data-state="alive"] h3').startswith(HOSTILE_NAME)
    assert "GPU: <b>open</b>" in text(browser, '#workers .worker[data-state="alive"]')
    assert browser.execute_script("return document.querySelectorAll('img, b').length") == 0
