"""The dashboard served by the daemon: up with `i2vd run`, applied on reload, gone on stop."""

from __future__ import annotations

import json
import socket

import requests
import yaml

from i2vd.config.load import load_config
from i2vd.service.daemon import Daemon, WebListenError
from tests.end_to_end.harness import run_cli, write_config
from tests.support.fakes import wait_for, write_image


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fast_builtin(tmp_path, port: int, **overrides):
    return write_config(
        tmp_path,
        None,
        http={"listen": f"127.0.0.1:{port}"},
        profiles={
            "default": {
                "prompt": "A {{ subject }} scene, camera panning left",
                "resolution": "256p",
                "frames": 8,
                "fps": 8,
            }
        },
        **overrides,
    )


def refused(url: str) -> bool:
    try:
        requests.get(url, timeout=5)
    except requests.ConnectionError:
        return True
    return False


def test_i2vd_run_serves_the_dashboard_and_its_api_is_status_json(tmp_path, daemon_factory):
    port = free_port()
    config = fast_builtin(tmp_path, port)
    daemon = daemon_factory(config).start()
    base = f"http://127.0.0.1:{port}"
    assert requests.get(f"{base}/healthz", timeout=10).json() == {"ok": True}
    write_image(tmp_path / "in" / "harbour.png")

    def settled() -> bool:
        status = requests.get(f"{base}/api/status", timeout=10).json()
        return status["counts"]["done"] == 1 and status["servers"][0]["jobs_done"] == 1

    wait_for(settled, timeout=60, message="the job done, as the API says")
    served = requests.get(f"{base}/api/status", timeout=10).json()
    printed = json.loads(run_cli(config, "status", "--json").stdout)
    for status in (served, printed):  # published every second: the one field that moves while idle
        status["daemon"].pop("heartbeat_at")
    assert served == printed and served["daemon"]["running"] is True
    job = requests.get(f"{base}/api/jobs?state=done", timeout=10).json()["jobs"][0]
    video = requests.get(base + job["video_url"], headers={"Range": "bytes=0-7"}, timeout=10)
    assert video.status_code == 206 and video.content[4:8] == b"ftyp"
    assert requests.get(base + job["poster_url"], timeout=30).content[:3] == b"\xff\xd8\xff"
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert 'i2vd_server_up{server="builtin"} 1.0' in metrics and 'i2vd_gate_open{server="builtin"} 1.0' in metrics
    assert daemon.stop() == 0
    assert refused(f"{base}/healthz")


def test_a_taken_port_stops_start_up_with_nothing_left_running(tmp_path, daemon_factory):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = fast_builtin(tmp_path, taken.getsockname()[1])
        daemon = Daemon(load_config(config))
        try:
            daemon.start()
        except WebListenError as error:
            assert "http.listen: cannot listen on 127.0.0.1:" in str(error)
        else:
            daemon.shutdown(0)
            raise AssertionError("started on a taken port")
        result = run_cli(config, "run", check=False)
        assert result.returncode == 69 and "cannot listen on" in result.stderr
    daemon = Daemon(load_config(config))  # the lock was released: a later start works
    daemon.start()
    daemon.shutdown(0)


def test_reload_applies_a_changed_http_section_and_shutdown_leaves_no_thread(tmp_path):
    first, second = free_port(), free_port()
    config_path = fast_builtin(tmp_path, first)
    daemon = Daemon(load_config(config_path), config_path=config_path)
    daemon.start()
    try:
        assert requests.get(f"http://127.0.0.1:{first}/healthz", timeout=10).status_code == 200
        data = yaml.safe_load(config_path.read_text())
        data["http"] = {"listen": f"127.0.0.1:{second}", "token": "tok"}
        config_path.write_text(yaml.safe_dump(data))
        assert daemon.reload()
        assert refused(f"http://127.0.0.1:{first}/healthz")
        assert requests.get(f"http://127.0.0.1:{second}/api/status", timeout=10).status_code == 401
        headers = {"Authorization": "Bearer tok"}
        assert requests.get(f"http://127.0.0.1:{second}/api/status", headers=headers, timeout=10).status_code == 200
        del data["http"]
        config_path.write_text(yaml.safe_dump(data))
        assert daemon.reload()
        assert daemon.web is None and refused(f"http://127.0.0.1:{second}/healthz")
        data["http"] = {"listen": f"127.0.0.1:{first}"}
        config_path.write_text(yaml.safe_dump(data))
        assert daemon.reload()
        assert requests.get(f"http://127.0.0.1:{first}/api/status", timeout=10).status_code == 200
    finally:
        daemon.shutdown(5)
    assert refused(f"http://127.0.0.1:{first}/healthz")
    # the thread-leak fixture checks that no i2vd-http thread (or request thread) is left


def test_a_reload_onto_a_taken_port_keeps_the_dashboard_where_it_was(tmp_path, caplog):
    first = free_port()
    config_path = fast_builtin(tmp_path, first)
    daemon = Daemon(load_config(config_path), config_path=config_path)
    daemon.start()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            data = yaml.safe_load(config_path.read_text())
            data["http"] = {"listen": f"127.0.0.1:{taken.getsockname()[1]}"}
            config_path.write_text(yaml.safe_dump(data))
            daemon.reload()
        assert "the dashboard stays as it was" in caplog.text
        assert requests.get(f"http://127.0.0.1:{first}/healthz", timeout=10).status_code == 200
    finally:
        daemon.shutdown(5)
