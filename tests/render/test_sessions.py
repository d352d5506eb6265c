"""sessions.py: what the environment says about a server (its proxy, ~/.netrc) is read once, and still obeyed."""

from __future__ import annotations

import socket
from contextlib import closing
from pathlib import Path

import pytest
import requests

from i2vd.render.backends.base import ServerUnavailable
from i2vd.render.backends.predict import PredictBackend
from i2vd.render.backends.sessions import Session
from tests.render.test_predict_backend import video_request
from tests.support.fakes import FakePredictServer, write_image

NOWHERE = "http://i2vd-test.invalid:9"  # never resolves: a call gets through only by the proxy


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def proxy_environment(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_proxy_named_in_the_environment_carries_the_calls(
    tmp_path: Path, fake_server: FakePredictServer, proxy_environment
) -> None:
    proxy_environment.setenv("http_proxy", fake_server.url)  # the fake reads an absolute-form request's path
    image = write_image(tmp_path / "a.png")
    with closing(PredictBackend(NOWHERE, timeout_seconds=10, connect_timeout_seconds=2)) as backend:
        backend.generate(video_request(image, name="a.png"))
    assert len(fake_server.requests) == 1
    proxy_environment.setenv("no_proxy", "i2vd-test.invalid")
    backend = PredictBackend(NOWHERE, timeout_seconds=10, connect_timeout_seconds=2)
    with closing(backend), pytest.raises(ServerUnavailable):
        backend.generate(video_request(image, name="a.png"))  # no_proxy: straight to a name that never resolves
    assert len(fake_server.requests) == 1


def test_the_environment_is_read_at_a_server_s_first_request_not_at_each(
    tmp_path: Path, fake_server: FakePredictServer, proxy_environment
) -> None:
    """requests read os.environ (proxies, CA bundle) and ~/.netrc again at every request, between two calls."""
    proxy_environment.setenv("http_proxy", fake_server.url)
    image = write_image(tmp_path / "a.png")
    with closing(PredictBackend(NOWHERE, timeout_seconds=10, connect_timeout_seconds=2)) as backend:
        backend.generate(video_request(image, name="a.png"))
        proxy_environment.setenv("http_proxy", f"http://127.0.0.1:{dead_port()}")
        backend.generate(video_request(image, name="a.png"))  # the daemon's environment is read once per server
    assert len(fake_server.requests) == 2


def test_netrc_credentials_are_still_sent_and_credentials_in_the_url_still_win_when_netrc_has_none(
    tmp_path: Path, proxy_environment
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine with-entry.test login alice password secret\n", encoding="utf-8")
    netrc.chmod(0o600)
    proxy_environment.setenv("NETRC", str(netrc))
    session = Session()
    for _ in range(2):  # the second time from what was read the first
        entry = session.prepare_request(requests.Request("GET", "http://with-entry.test/x"))
        assert entry.headers["Authorization"].startswith("Basic ")
        in_url = session.prepare_request(requests.Request("GET", "http://bob:pw@other.test/x"))
        assert in_url.headers["Authorization"].startswith("Basic ")
        none = session.prepare_request(requests.Request("GET", "http://other.test/x"))
        assert "Authorization" not in none.headers
    session.close()


def test_probe_names_i2vd_and_its_version(fake_server: FakePredictServer) -> None:
    """`i2vd probe` is a server's first sight of i2vd: its requests say who they are, as every backend's do."""
    from i2vd import __version__
    from i2vd.render.backends.gradio_probe import probe
    from tests.support.fault_proxy import FaultProxy

    with FaultProxy(fake_server.url) as proxy:
        report = probe(proxy.url, timeout_seconds=5)
    assert report.kind == "predict"
    assert proxy.agents and set(proxy.agents) == {f"i2vd/{__version__}"}


def test_probe_of_a_server_that_drips_forever_ends_within_its_time() -> None:
    """`i2vd probe` asks a handful of URLs; a server that answers each a byte at a time (within any per-read
    timeout) must not hold the terminal: the probe as a whole is bounded, and says the server did not answer."""
    import threading

    from i2vd.render.backends.gradio_probe import PROBE_CALLS, probe
    from tests.support.dripping import DrippingServer
    from tests.support.fakes import wait_for

    reports = []
    with DrippingServer() as server:
        thread = threading.Thread(target=lambda: reports.append(probe(server.url, timeout_seconds=1)), name="probe")
        thread.start()
        try:
            wait_for(lambda: reports, timeout=PROBE_CALLS + 10, message="the probe never ended")
        finally:
            server.stopping.set()
            thread.join()
    assert reports[0].kind == "unreachable" and reports[0].problem.startswith(f"no result within {PROBE_CALLS:g} s")
