"""The GPU hosts' workers (`executor: celery`) over real HTTP: in /api/status exactly as `status --json`, and
`i2vd_workers{state}` in /metrics; a daemon without workers shows none."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from i2vd.cli.commands import main
from tests.support.web_site import make_site


@pytest.fixture
def site(tmp_path, mp4_bytes):
    site = make_site(tmp_path, mp4_bytes, videos=1)
    yield site
    site.close()


def record_workers(site) -> None:
    now = site.journal.clock.now()
    seen = {"queue": "i2vd", "pid": 1, "server": "predict http://127.0.0.1:7860", "gate": "open: 3120 MiB used"}
    seen.update(current_key=None, jobs_done=4, started_at=now - 3600, last_seen=now)
    site.journal.record_workers_seen(
        [{**seen, "worker_id": "gpu-dead", "host": "gpu-dead", "current_job": site.done_ids[0]}], now - 3600, 19.0
    )
    site.journal.record_workers_seen([{**seen, "worker_id": "gpu-a", "host": "gpu-a", "current_job": None}], now, 19.0)


def workers_gauge(site) -> dict[str, float]:
    status, _, body = site.request("GET", "/metrics")
    assert status == 200
    return {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == "i2vd_workers"
        for sample in family.samples
    }


def test_api_status_and_metrics_show_each_worker_alive_or_gone(site, capsys):
    assert workers_gauge(site) == {"alive": 0, "gone": 0}
    record_workers(site)
    assert main(["status", "--json", "-c", str(site.config_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    status, _, body = site.request("GET", "/api/status")
    served = json.loads(body)
    assert status == 200 and served["workers"] == printed["workers"]
    assert [(worker["worker_id"], worker["state"]) for worker in served["workers"]] == [
        ("gpu-a", "alive"),
        ("gpu-dead", "gone"),
    ]
    dead = served["workers"][1]
    assert dead["current_job"] == site.done_ids[0] and dead["current_file"] == "beach/photo 0.jpg"
    assert served["broker"] is None  # no daemon runs here: nobody reads the broker
    assert workers_gauge(site) == {"alive": 1, "gone": 1}
