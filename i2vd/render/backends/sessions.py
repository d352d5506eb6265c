"""A requests.Session that reads the environment once per server, not at every request.

At each request requests looks through os.environ for proxies (twice: the proxies and no_proxy),
for a CA bundle, and for ~/.netrc: a quarter of a millisecond on the path between two server calls
(SPEC "Performance targets"). The daemon's environment does not change while it runs, and a
session belongs to one backend, made again when a reload changes it: here what the environment
says for a server (scheme, host and port) is read at its first request and kept. Behaviour is
requests' own: the same proxies, no_proxy, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE and netrc rules.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies, get_netrc_auth

from i2vd import __version__
from i2vd.render.backends import http


class _NoNetrcEntry(AuthBase):
    """~/.netrc has nothing for this server (requests would look again at every request)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


_NO_NETRC_ENTRY = _NoNetrcEntry()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class Session(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._environment: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}
        self._netrc: dict[tuple[str, str], Any] = {}

    def _from_environment(self, url: str) -> tuple[dict[str, str], str | None]:
        """(the proxies the environment names for this server, the CA bundle it names), read once."""
        origin = _origin(url)
        with self._lock:
            found = self._environment.get(origin)
        if found is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            found = (get_environ_proxies(url, no_proxy=None), bundle)
            with self._lock:
                self._environment[origin] = found
        return found

    def merge_environment_settings(
        self, url: str, proxies: dict[str, str] | None, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if not self.trust_env or (proxies and "no_proxy" in proxies):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        env_proxies, bundle = self._from_environment(url)
        proxies = dict(proxies or {})
        for key, value in env_proxies.items():
            proxies.setdefault(key, value)
        if verify is True or verify is None:
            verify = bundle or verify
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if self.trust_env and not request.auth and not self.auth:
            origin = _origin(request.url)
            with self._lock:
                known = origin in self._netrc
                auth = self._netrc.get(origin)
            if not known:
                auth = get_netrc_auth(request.url) or _NO_NETRC_ENTRY
                with self._lock:
                    self._netrc[origin] = auth
            if auth is not _NO_NETRC_ENTRY or not urlsplit(request.url).username:
                request.auth = auth  # (credentials in the URL itself: requests takes them when auth is None)
        return super().prepare_request(request)


def server_session(session: requests.Session | None = None) -> requests.Session:
    """A backend's session (a test's own, or one that reads the environment once): every connection obeys the
    thread's current Deadline (http.py), and the server's log names i2vd and its version."""
    session = http.mount_deadline_adapter(session or Session())
    session.headers["User-Agent"] = f"i2vd/{__version__}"
    return session
