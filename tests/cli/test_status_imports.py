"""`i2vd status` stays quick: it reads the journal and imports nothing of the daemon's machinery.

(SPEC: `i2vd status` answers in < 0.5 s with 100,000 jobs; most of a cold start was importing the
worker, the backends, Pillow and watchdog only to learn the journal's file name.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from i2vd.store.journal import Journal

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from i2vd.cli.commands import main
code = main(["status", "-c", sys.argv[1]])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_status_imports_neither_the_daemon_nor_the_worker(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    (tmp_path / "in").mkdir()
    config.write_text(f"""
state_dir: {tmp_path / "state"}
output_dir: {tmp_path / "out"}
servers: [{{kind: predict, url: "http://127.0.0.1:9"}}]
gpu: {{enabled: false}}
watch: [{{path: {tmp_path / "in"}}}]
""")
    Journal(tmp_path / "state" / "journal.sqlite3").close()
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    heavy = {
        "i2vd.service.daemon",
        "i2vd.jobs.worker",
        "i2vd.ingest.intake",
        "i2vd.render.backends.predict",
        "i2vd.render.backends.gradio_protocol",
        "PIL",
        "watchdog",
        "requests",
        "jinja2",  # only a config with a template (checked when loaded) or a render needs it
        "i2vd.config.schedule",  # only a config with a `schedule:` or a `timezone:` needs it
        "difflib",  # only a config with an unknown key needs it (did you mean ...?)
    }
    assert heavy.isdisjoint(report["modules"]), sorted(heavy.intersection(report["modules"]))


GC_PROBE = """
import gc, json, sys


def loading() -> bool:  # the config models and the journal: from i2vd.config's import to a whole journal module
    return "i2vd.config" in sys.modules and not hasattr(sys.modules.get("i2vd.store.journal"), "Journal")


during = []
gc.callbacks.append(lambda phase, info: phase == "start" and loading() and during.append(info))
import i2vd.cli.commands
gc.callbacks.clear()
print(json.dumps({"collections": len(during), "enabled": gc.isenabled()}))
"""


def test_the_commands_start_without_garbage_collections_and_leave_the_collector_on() -> None:
    """Importing the config models and the journal (most of `i2vd status`'s CPU) makes only long-lived objects:
    the cyclic collector walked them some 70 times meanwhile (~10 ms of a 0.2 s start), for nothing."""
    result = subprocess.run([sys.executable, "-c", GC_PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"collections": 0, "enabled": True}
