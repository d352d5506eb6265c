"""The dashboard's HTTP side over real HTTP: the JSON API, videos (Range, traversal, symlinks),
posters, /metrics and /healthz (auth is in test_web_auth.py)."""

from __future__ import annotations

import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from i2vd.cli.commands import main
from i2vd.core.lock import StateLock
from i2vd.ingest.intake import Intake
from i2vd.render.backends.builtin import BuiltinBackend
from i2vd.store.journal import JobState
from tests.support.web_site import HOSTILE_NAME, make_site


@pytest.fixture
def site(tmp_path, mp4_bytes):
    site = make_site(tmp_path, mp4_bytes)
    yield site
    site.close()


def get_json(site, path: str, headers: dict[str, str] | None = None):
    status, response_headers, body = site.request("GET", path, headers)
    assert response_headers["content-type"] == "application/json", body
    return status, json.loads(body)


def test_api_status_is_what_status_json_prints(site, capsys):
    assert main(["status", "--json", "-c", str(site.config_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    status, served = get_json(site, "/api/status")
    assert status == 200
    assert served == printed
    assert served["counts"]["done"] == 3 and served["counts"]["failed"] == 1
    assert served["recent_failures"][0]["file"] == HOSTILE_NAME


def test_api_status_says_what_each_server_is_as_status_does(site):
    """The dashboard shows `about` as it is: the builtin engine is no server and has no URL."""
    servers = [
        {"name": "builtin", **BuiltinBackend().describe()},
        {"name": "gpu0", "kind": "predict", "url": "http://gpu:7860"},
    ]
    with StateLock(site.config.state_dir):  # a daemon runs: its servers are shown
        site.journal.publish_status({"pid": os.getpid(), "servers": servers})
        _, served = get_json(site, "/api/status")
    assert [server["about"] for server in served["servers"]] == ["CPU engine, no server", "predict http://gpu:7860"]


def test_jobs_are_paged_newest_first_and_filtered_by_state(site):
    status, first = get_json(site, "/api/jobs?state=done&limit=2&offset=0")
    assert status == 200
    assert (first["total"], first["limit"], first["offset"], first["state"]) == (3, 2, 0, "done")
    _, second = get_json(site, "/api/jobs?state=done&limit=2&offset=2")
    ids = [job["id"] for job in first["jobs"] + second["jobs"]]
    assert ids == list(reversed(site.done_ids))
    assert all(job["state"] == "done" and job["video_url"].startswith("/videos/") for job in first["jobs"])
    _, everything = get_json(site, "/api/jobs")
    assert everything["total"] == 4 and everything["jobs"][0]["id"] == site.failed_id
    failed = everything["jobs"][0]
    assert failed["rel_path"] == HOSTILE_NAME and failed["video_url"] is None and failed["poster_url"] is None


@pytest.mark.parametrize(
    "query, problem",
    [
        ("state=burning", "state: 'burning' is not one of"),
        ("limit=0", "limit: '0' is not a whole number 1 to 200"),
        ("limit=201", "limit: '201'"),
        ("offset=-1", "offset: '-1' is not a whole number at least 0"),
        ("limit=ten", "limit: 'ten'"),
    ],
)
def test_bad_job_queries_are_400_with_the_reason(site, query, problem):
    status, body = get_json(site, f"/api/jobs?{query}")
    assert status == 400 and problem in body["error"]


def test_one_job_comes_with_its_events(site):
    status, job = get_json(site, f"/api/jobs/{site.failed_id}")
    assert status == 200
    assert job["state"] == "failed" and job["last_error"] == "server said: <b>no</b> (HTTP 500)"
    assert any(HOSTILE_NAME in event["message"] for event in job["events"])
    assert all(event["job_id"] == site.failed_id for event in job["events"])
    status, missing = get_json(site, "/api/jobs/999")
    assert status == 404 and missing == {"error": "no job 999"}


def test_retry_queues_a_failed_job_again_as_the_cli_does(site):
    status, body = site.request("POST", f"/api/jobs/{site.failed_id}/retry")[0], None
    assert status == 200
    assert site.journal.job(site.failed_id).state is JobState.QUEUED
    status, body = get_json(site, f"/api/jobs/{site.done_ids[0]}")
    status, response_headers, raw = site.request("POST", f"/api/jobs/{site.failed_id}/retry")
    assert status == 409 and b"is queued (only failed or done jobs are retried)" in raw
    assert site.request("POST", "/api/jobs/999/retry")[0] == 404


def test_retry_failed_queues_every_failed_job(site):
    status, _, raw = site.request("POST", "/api/retry-failed")
    results = json.loads(raw)["results"]
    assert status == 200 and [(result["job"]["id"], result["outcome"]) for result in results] == [
        (site.failed_id, "queued")
    ]
    assert site.journal.counts()["failed"] == 0
    assert json.loads(site.request("POST", "/api/retry-failed")[2]) == {"results": []}


def test_a_retry_wakes_the_workers(tmp_path, mp4_bytes):
    woken = []
    site = make_site(tmp_path, mp4_bytes)
    try:
        site.server.api._on_queued = lambda: woken.append(True)
        assert site.request("POST", "/api/retry-failed")[0] == 200
        assert woken == [True]
    finally:
        site.close()


def test_get_on_a_post_route_and_unknown_routes_are_404(site):
    assert site.request("GET", "/api/retry-failed")[0] == 404
    assert site.request("POST", "/api/status")[0] == 404
    assert site.request("GET", "/nothing")[0] == 404


# -- videos and posters ------------------------------------------------------------


def test_a_video_is_served_whole_and_by_range(site, mp4_bytes):
    url = get_json(site, "/api/jobs?state=done&limit=1")[1]["jobs"][0]["video_url"]
    status, headers, body = site.request("GET", url)
    assert (status, headers["content-type"], headers["accept-ranges"], body) == (200, "video/mp4", "bytes", mp4_bytes)
    size = len(mp4_bytes)
    status, headers, body = site.request("GET", url, {"Range": "bytes=0-9"})
    assert (status, headers["content-range"], body) == (206, f"bytes 0-9/{size}", mp4_bytes[:10])
    status, headers, body = site.request("GET", url, {"Range": "bytes=100-"})
    assert (status, headers["content-range"], body) == (206, f"bytes 100-{size - 1}/{size}", mp4_bytes[100:])
    status, headers, body = site.request("GET", url, {"Range": "bytes=-16"})
    assert (status, headers["content-length"], body) == (206, "16", mp4_bytes[-16:])
    status, headers, body = site.request("GET", url, {"Range": f"bytes={size}-"})
    assert (status, headers["content-range"], body) == (416, f"bytes */{size}", b"")
    status, headers, body = site.request("GET", url, {"Range": "bytes=0-1,5-6"})  # several: the whole file
    assert (status, body) == (200, mp4_bytes)
    status, headers, body = site.request("HEAD", url)
    assert (status, headers["content-length"], body) == (200, str(size), b"")


@pytest.mark.parametrize(
    "path",
    [
        "/videos/../config.yaml",
        "/videos/../secret.mp4",
        "/videos/%2e%2e/secret.mp4",
        "/videos/beach/..%2f..%2fsecret.mp4",
        "/videos/beach/%2E%2E/%2E%2E/secret.mp4",
        "/videos//etc/passwd",
        "/videos/./beach/photo%200.mp4",
        "/videos/beach/photo%200.mp4%00.mp4",
        "/videos/..%5csecret.mp4",
        "/videos/beach/photo%200.mp4.json",
        "/videos/beach",
        "/posters/../secret.mp4.jpg",
        "/posters/%2e%2e/secret.mp4.jpg",
    ],
)
def test_nothing_outside_output_dir_is_served(site, mp4_bytes, tmp_path, path):
    (tmp_path / "secret.mp4").write_bytes(b"SECRET" + mp4_bytes)
    (site.config.output_dir / "beach" / "photo 0.mp4.json").write_text('{"secret": true}')
    status, _, body = site.request("GET", path)
    assert status == 404, body
    assert b"SECRET" not in body and b"secret" not in body and b"root:" not in body


def test_symlinks_out_of_output_dir_are_not_followed(site, mp4_bytes, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.mp4").write_bytes(b"PRIVATE" + mp4_bytes)
    os.symlink(outside / "private.mp4", site.config.output_dir / "link.mp4")
    os.symlink(outside, site.config.output_dir / "linked-folder")
    os.symlink(site.config.output_dir / "beach" / "photo 0.mp4", site.config.output_dir / "inside.mp4")
    for path in ("/videos/link.mp4", "/videos/linked-folder/private.mp4", "/posters/link.mp4.jpg"):
        status, _, body = site.request("GET", path)
        assert status == 404 and b"PRIVATE" not in body, path
    status, _, body = site.request("GET", "/videos/inside.mp4")  # a link that stays inside is fine
    assert (status, body) == (200, mp4_bytes)


def test_a_poster_is_the_first_frame_made_once_and_cached_under_state_dir(site):
    url = get_json(site, "/api/jobs?state=done&limit=1")[1]["jobs"][0]["poster_url"]
    status, headers, first = site.request("GET", url)
    assert (status, headers["content-type"], first[:3]) == (200, "image/jpeg", b"\xff\xd8\xff")
    cached = list((site.config.state_dir / "posters").glob("*.jpg"))
    assert len(cached) == 1
    made_at = cached[0].stat().st_mtime_ns
    assert site.request("GET", url)[2] == first
    assert list((site.config.state_dir / "posters").glob("*.jpg")) == cached
    assert cached[0].stat().st_mtime_ns == made_at
    assert site.request("GET", "/posters/beach/photo%200.mp4")[0] == 404  # a poster is <video>.jpg


def test_a_video_ffmpeg_cannot_read_has_no_poster_but_the_server_goes_on(site):
    (site.config.output_dir / "broken.mp4").write_bytes(b"not a video at all")
    assert site.request("GET", "/posters/broken.mp4.jpg")[0] == 404
    assert site.request("GET", "/healthz")[0] == 200


# -- metrics -----------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_are_read_from_the_journal(site):
    status, headers, body = site.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples = _samples(body.decode())
    assert samples[("i2vd_jobs", (("state", "done"),))] == 3
    assert samples[("i2vd_jobs", (("state", "failed"),))] == 1
    assert samples[("i2vd_server_seconds_count", ())] == 3
    assert samples[("i2vd_server_seconds_sum", ())] == pytest.approx(1.5 + 2.5 + 3.5)
    assert samples[("i2vd_server_seconds_bucket", (("le", "1.0"),))] == 0
    assert samples[("i2vd_server_seconds_bucket", (("le", "5.0"),))] == 3
    assert samples[("i2vd_job_duration_seconds_count", ())] == 3
    assert samples[("i2vd_queue_wait_seconds_count", ())] == 3
    assert samples[("i2vd_intake_files_total", ())] == 4
    assert samples[("i2vd_failures_total", (("reason", "server_error"),))] == 1
    names = {name for name, _ in samples}
    assert {"i2vd_job_duration_seconds_bucket", "i2vd_queue_wait_seconds_sum"} <= names


def test_the_failures_counter_never_goes_down_when_a_failed_job_is_retried_and_counts_intake_failures(site):
    """A Prometheus counter only grows (rate() reads a drop as a restart): i2vd_failures_total counts failures
    recorded since the daemon started; what is failed now is the gauge i2vd_jobs_failed."""

    def scrape() -> dict:
        return _samples(site.request("GET", "/metrics")[2].decode())

    before = scrape()
    assert before[("i2vd_failures_total", (("reason", "server_error"),))] == 1
    assert before[("i2vd_jobs_failed", (("reason", "server_error"),))] == 1

    assert site.request("POST", f"/api/jobs/{site.failed_id}/retry")[0] == 200  # queued again: nothing failed now
    after_retry = scrape()
    assert after_retry[("i2vd_failures_total", (("reason", "server_error"),))] == 1
    assert ("i2vd_jobs_failed", (("reason", "server_error"),)) not in after_retry

    root = site.config.watch[0]
    (root.path / "empty.jpg").write_bytes(b"")
    assert Intake(site.config, site.journal).consider(root.path / "empty.jpg", root).job.state is JobState.FAILED
    assert scrape()[("i2vd_failures_total", (("reason", "bad_source"),))] == 1


def test_healthz_answers(site):
    status, body = get_json(site, "/healthz")
    assert (status, body) == (200, {"ok": True})


def test_stopping_does_not_wait_for_a_client_that_stopped_reading_a_video(tmp_path, mp4_bytes):
    import socket
    import threading

    from tests.support.fakes import wait_for

    site = make_site(tmp_path, mp4_bytes, videos=1)
    big = site.config.output_dir / "big.mp4"
    big.write_bytes(bytes(64 * 1024 * 1024))
    client = socket.create_connection(("127.0.0.1", site.server.port))
    stopper = None
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(b"GET /videos/big.mp4 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert client.recv(12).startswith(b"HTTP/1.0 200")  # then reads no more: the server's writes block
        stopper = threading.Thread(target=site.close, name="test-stop")
        stopper.start()
        wait_for(lambda: not stopper.is_alive(), timeout=10, message="stop() returned while the client sat idle")
    finally:
        client.close()
        if stopper is not None:
            stopper.join()
