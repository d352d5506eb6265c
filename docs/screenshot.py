"""Make docs/dashboard.png: the demo's sample images through the real daemon (built-in engine) with the
dashboard on, plus a file that fails (named like an HTML attack) and a folder parked on a broken sidecar,
photographed by headless chromium.

    .venv/bin/python docs/screenshot.py [docs/dashboard.png]
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from i2vd.cli.demo import draw_sample, prepare
from i2vd.config.load import load_config
from i2vd.service.daemon import Daemon

TIMEOUT_SECONDS = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(target: Path) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="i2vd-screenshot-"))
    config_path = prepare(workdir, images_per_folder=2)
    data = yaml.safe_load(config_path.read_text())
    port = free_port()
    data["http"] = {"listen": f"127.0.0.1:{port}"}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    hot = workdir / "hot"
    (hot / "<img src=x onerror=alert(1)>.jpg").write_bytes(b"not a JPEG at all")
    (hot / "catalogue").mkdir()
    (hot / "catalogue" / "i2vd.yaml").write_text("profile: summer-sale\n")
    draw_sample("products", 1).save(hot / "catalogue" / "sku_1042.jpg")
    daemon = Daemon(load_config(config_path), config_path=config_path)
    daemon.start()
    serving = threading.Thread(target=daemon.serve, name="screenshot-serve")
    serving.start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={workdir / 'profile'}",
        "--window-size=1280,2000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            counts = daemon.journal.counts()
            if counts["done"] == 8 and counts["failed"] == 1 and counts["parked"] == 1:
                break
            time.sleep(0.5)
        driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(4)  # posters drawn and one poll done
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, height)
        time.sleep(1)
        driver.save_screenshot(str(target))
    finally:
        driver.quit()
        daemon.shutdown()
        serving.join()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png")))
