"""Who may use the dashboard (SPEC "Web dashboard", Security), over real HTTP."""

from __future__ import annotations

import hmac
import json
from urllib.parse import urlencode

import pytest

from i2vd.store.journal import JobState
from i2vd.web import auth
from tests.support.web_site import make_site

TOKEN = "s3cret-Token-42"
PROTECTED = [
    "/api/status",
    "/api/jobs",
    "/api/jobs/1",
    "/api/roots",
    "/metrics",
    "/videos/beach/photo%200.mp4",
    "/posters/beach/photo%200.mp4.jpg",
    "/static/app.js",
]


@pytest.fixture
def site(tmp_path, mp4_bytes):
    site = make_site(tmp_path, mp4_bytes, token=TOKEN, videos=1)
    yield site
    site.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", PROTECTED)
def test_without_the_token_every_api_and_media_route_is_401(site, path):
    status, headers, body = site.request("GET", path)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"].startswith("a token is needed")
    assert site.request("GET", path, bearer("wrong"))[0] == 401
    assert site.request("GET", path, bearer(TOKEN + "x"))[0] == 401
    assert site.request("GET", path, {"Cookie": f"{auth.COOKIE}=not-the-session"})[0] == 401
    assert site.request("GET", path, bearer())[0] == 200


def test_healthz_and_login_need_no_token_and_the_page_redirects_to_login(site):
    assert site.request("GET", "/healthz")[0] == 200
    status, _, body = site.request("GET", "/login")
    assert status == 200 and b'name="token"' in body
    status, headers, _ = site.request("GET", "/")
    assert (status, headers["location"]) == (303, "/login")
    assert site.request("GET", "/", bearer())[0] == 200


def test_posts_without_the_token_are_401_and_change_nothing(site):
    for path in (f"/api/jobs/{site.failed_id}/retry", "/api/retry-failed"):
        assert site.request("POST", path)[0] == 401
        assert site.request("POST", path, bearer("nope"))[0] == 401
    assert site.journal.job(site.failed_id).state is JobState.FAILED


def login(site, token: str, origin: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if origin:
        headers["Origin"] = origin
    return site.request("POST", "/login", headers, urlencode({"token": token}).encode())


def test_login_sets_a_session_cookie_that_opens_every_route(site):
    status, _, body = login(site, "wrong")
    assert status == 401 and b"not the right one" in body
    status, headers, _ = login(site, f"  {TOKEN}\n", origin=site.url)
    assert (status, headers["location"]) == (303, "/")
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = {"Cookie": cookie.split(";")[0]}
    assert site.request("GET", "/api/status", session)[0] == 200
    assert site.request("GET", "/", session)[0] == 200
    assert site.request("POST", f"/api/jobs/{site.failed_id}/retry", {**session, "Origin": site.url})[0] == 200
    assert site.journal.job(site.failed_id).state is JobState.QUEUED


def test_a_post_from_another_origin_is_refused_even_with_the_token(site):
    for origin in ("http://evil.example", "null", site.url.replace("127.0.0.1", "127.0.0.2"), "http://127.0.0.1:1"):
        status, _, body = site.request("POST", "/api/retry-failed", {**bearer(), "Origin": origin})
        assert status == 403 and b"cross-origin" in body, origin
        assert login(site, TOKEN, origin=origin)[0] == 403
    assert site.journal.job(site.failed_id).state is JobState.FAILED
    status, _, _ = site.request("POST", "/api/retry-failed", {**bearer(), "Origin": site.url})
    assert status == 200 and site.journal.job(site.failed_id).state is JobState.QUEUED


def test_tokens_and_sessions_are_compared_in_constant_time(site, monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(left, right):
        compared.append((left, right))
        return real(left, right)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert site.request("GET", "/api/status", bearer("guess"))[0] == 401
    assert compared == [(b"guess", TOKEN.encode())]
    login(site, "guess2")
    assert compared[-1] == (b"guess2", TOKEN.encode())
    site.request("GET", "/api/status", {"Cookie": f"{auth.COOKIE}=abc"})
    assert compared[-1][0] == b"abc"


def test_without_a_token_only_a_loopback_host_is_answered(tmp_path, mp4_bytes):
    site = make_site(tmp_path, mp4_bytes, videos=1)
    try:
        assert site.request("GET", "/api/status")[0] == 200
        for host in ("127.0.0.1:8787", "localhost:8787", "[::1]:8787", "localhost"):
            assert site.request("GET", "/api/status", {"Host": host})[0] == 200, host
        for host in ("evil.example:8787", "192.168.1.9:8787", "127.0.0.1.evil.example"):
            status, _, body = site.request("GET", "/api/status", {"Host": host})  # DNS rebinding
            assert status == 403 and b"answers a loopback Host only" in body, host
        status, _, _ = site.request("POST", "/api/retry-failed", {"Origin": "http://evil.example"})
        assert status == 403 and site.journal.counts()["failed"] == 1
        assert site.request("GET", "/", {"Host": "127.0.0.1"})[0] == 200  # no login page without a token
    finally:
        site.close()


def test_a_login_form_without_a_length_or_too_large_is_refused(site):
    assert site.request("POST", "/login", {"Content-Length": "abc"})[0] == 400
    status, _, _ = site.request(
        "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, b"token=" + b"x" * 5000
    )
    assert status == 413
