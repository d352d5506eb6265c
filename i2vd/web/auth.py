"""Who may use the dashboard: SPEC "Web dashboard, JSON API and metrics", Security.

- No token (loopback only, the config refuses anything else): every local client may, but
  the Host header must name a loopback address too, so a web page that rebinds its own
  DNS name to 127.0.0.1 cannot read the API.
- A token: `Authorization: Bearer <token>`, or the session cookie `/login` sets. The cookie
  holds an HMAC of the token, so it is worthless once the token changes, and no session
  needs to be kept. Every comparison is constant-time (hmac.compare_digest).
- Every POST must come from the dashboard's own origin when the client says where it comes
  from (browsers always send `Origin` on a POST; curl and scripts send none).
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from i2vd.config.checks import is_loopback

COOKIE = "i2vd_session"


def _host_name(host_header: str) -> str:
    """ "127.0.0.1:8787" -> "127.0.0.1", "[::1]:8787" -> "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Auth:
    def __init__(self, token: str | None):
        self.token = token

    @property
    def required(self) -> bool:
        return self.token is not None

    def session_value(self) -> str:
        return hmac.new(self.token.encode(), b"i2vd dashboard session", hashlib.sha256).hexdigest()

    def cookie_header(self) -> str:
        return f"{COOKIE}={self.session_value()}; Path=/; HttpOnly; SameSite=Strict"

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode())

    def allowed(self, headers) -> bool:
        """The request carries the token (Bearer) or the session cookie; always True without a token."""
        if self.token is None:
            return True
        authorization = headers.get("Authorization") or ""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            return self.token_matches(given.strip())
        try:
            cookie = SimpleCookie(headers.get("Cookie") or "")
        except CookieError:
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.session_value().encode())

    def host_allowed(self, headers) -> bool:
        """Without a token the Host must be loopback (DNS rebinding); with one, any host may ask."""
        if self.token is not None:
            return True
        host = headers.get("Host")
        return host is None or is_loopback(_host_name(host))

    @staticmethod
    def same_origin(headers) -> bool:
        """A POST's Origin, when given, is this server's own (scheme and host:port as the Host header says)."""
        origin = headers.get("Origin")
        if origin is None:
            return True
        host = (headers.get("Host") or "").strip().lower()
        parts = urlsplit(origin.strip().lower())
        return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host
