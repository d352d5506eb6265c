"""The HTTP server: the standard library's ThreadingHTTPServer in one thread of the daemon.

One request per connection (HTTP/1.0) and a socket timeout, so stopping never waits on
an idle browser; `stop()` joins the serving thread and every request thread. Routes are
SPEC "Web dashboard, JSON API and metrics"; see i2vd.web.auth for who may use them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from i2vd.config.load import Config, HttpSettings
from i2vd.store.journal import Journal
from i2vd.web import metrics
from i2vd.web.api import Api, ApiError
from i2vd.web.auth import Auth
from i2vd.web.media import BadRange, Media, NotServed, parse_range

log = logging.getLogger("i2vd.web")

STATIC = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
PAGES = {"/": "index.html", "/index.html": "index.html"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: browsers then send `Origin: null` on a form POST
    "X-Frame-Options": "DENY",
}
CHUNK = 256 * 1024
MAX_FORM_BYTES = 4096
REQUEST_TIMEOUT_SECONDS = 30.0
JOB_PATH = re.compile(r"^/api/jobs/(\d{1,18})$")
RETRY_PATH = re.compile(r"^/api/jobs/(\d{1,18})/retry$")


def static_bytes(name: str) -> bytes:
    return resources.files("i2vd.web").joinpath("static", name).read_bytes()


def login_policy(page: bytes) -> str:
    """/login needs no token, so it loads nothing else: its one inline stylesheet is allowed by its hash."""
    style = page.split(b"<style>", 1)[1].split(b"</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(style).digest()).decode()
    return SECURITY_HEADERS["Content-Security-Policy"].replace("style-src 'self'", f"style-src 'sha256-{digest}'")


class WebServer:
    """The dashboard, API, media and metrics on `settings.listen`, reading `journal` (the daemon's)."""

    def __init__(
        self,
        settings: HttpSettings,
        config: Callable[[], Config],
        journal: Journal,
        on_queued: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.auth = Auth(settings.token)
        self.media = Media(config)
        self.api = Api(config, journal, self.media, on_queued)
        self.registry = metrics.make_registry(config, journal)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be had (in use, not this host's)."""
        server_class = _Server6 if ":" in self.settings.host else _Server
        self._httpd = server_class((self.settings.host, self.settings.port), _Handler)
        self._httpd.web = self
        self._httpd.stopping = threading.Event()
        self._httpd.connections = set()
        self._httpd.connections_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="i2vd-http", daemon=True
        )
        self._thread.start()
        log.info("dashboard on %s%s", self.url, "" if self.auth.required else " (loopback, no token)")

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.stopping.set()  # a video still streaming ends at its next chunk
        self._httpd.shutdown()
        with self._httpd.connections_lock:  # a client that stopped reading must not hold the stop up
            for connection in self._httpd.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._httpd.server_close()  # joins the request threads (block_on_close)
        self._thread.join()
        self._httpd = None


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() can join them: nothing is left behind
    block_on_close = True
    allow_reuse_address = True
    web: WebServer
    stopping: threading.Event
    connections: set[socket.socket]
    connections_lock: threading.Lock

    def handle_error(self, request, client_address) -> None:
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "i2vd"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout = REQUEST_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client went away, or stop() shut the connection

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- replies ---------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
        self._send(status, body, "application/json", headers)

    def _error(self, status: int, message: str) -> None:
        headers = {"WWW-Authenticate": 'Bearer realm="i2vd"'} if status == HTTPStatus.UNAUTHORIZED else None
        self._json(status, {"error": message}, headers)

    def _redirect(self, where: str, headers: dict[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": where, **(headers or {})})

    # -- dispatch --------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        web = self.server.web
        parts = urlsplit(self.path)
        path = parts.path
        try:
            if path == "/healthz":
                return self._json(200, {"ok": True})
            if not web.auth.host_allowed(self.headers):
                return self._error(HTTPStatus.FORBIDDEN, "without a token this dashboard answers a loopback Host only")
            if self.command == "POST" and not web.auth.same_origin(self.headers):
                return self._error(HTTPStatus.FORBIDDEN, "cross-origin POST refused")
            if path == "/login":
                return self._login(web)
            if not web.auth.allowed(self.headers):
                if self.command != "POST" and path in PAGES:
                    return self._redirect("/login")
                return self._error(HTTPStatus.UNAUTHORIZED, "a token is needed (Authorization: Bearer, or /login)")
            if self.command == "POST":
                return self._post(web, path)
            return self._get(web, path, parse_qs(parts.query))
        except ApiError as error:
            self._error(error.status, error.message)
        except NotServed:
            self._error(HTTPStatus.NOT_FOUND, "no such video")
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        except Exception as error:  # a bug or a journal problem: said, and the server keeps serving
            log.exception("HTTP %s %s failed", self.command, path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _get(self, web: WebServer, path: str, query: dict[str, list[str]]) -> None:
        if path in PAGES:
            return self._send(200, static_bytes(PAGES[path]), "text/html; charset=utf-8")
        if path.startswith("/static/") and path[8:] in STATIC:
            return self._send(200, static_bytes(path[8:]), STATIC[path[8:]], {"Cache-Control": "max-age=300"})
        if path == "/api/status":
            return self._json(200, web.api.status())
        if path == "/api/jobs":
            return self._json(200, web.api.jobs(query))
        if path == "/api/roots":
            return self._json(200, web.api.roots())
        match = JOB_PATH.match(path)
        if match:
            return self._json(200, web.api.job(int(match[1])))
        if path == "/metrics":
            return self._send(200, metrics.render(web.registry), metrics.CONTENT_TYPE)
        if path.startswith("/videos/"):
            return self._video(web, self._decoded(path[len("/videos/") :]))
        if path.startswith("/posters/"):
            poster = web.media.poster(self._decoded(path[len("/posters/") :]))
            return self._send(200, poster.read_bytes(), "image/jpeg", {"Cache-Control": "max-age=86400"})
        self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _post(self, web: WebServer, path: str) -> None:
        if path == "/api/retry-failed":
            return self._json(200, web.api.retry(None))
        match = RETRY_PATH.match(path)
        if match:
            return self._json(200, web.api.retry([int(match[1])]))
        self._error(HTTPStatus.NOT_FOUND, f"nothing to POST at {path}")

    @staticmethod
    def _decoded(raw: str) -> str:
        return os.fsdecode(unquote_to_bytes(raw))

    def _login(self, web: WebServer) -> None:
        page = static_bytes("login.html")
        policy = {"Content-Security-Policy": login_policy(page)}
        if self.command != "POST":
            return self._send(200, page, "text/html; charset=utf-8", policy)
        length_text = (self.headers.get("Content-Length") or "0").strip()
        length = int(length_text) if length_text.isdigit() else -1
        if length < 0:
            return self._error(HTTPStatus.BAD_REQUEST, "a form needs a Content-Length")
        if length > MAX_FORM_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[-1].strip()
        if web.auth.required and given and web.auth.token_matches(given):
            return self._redirect("/", {"Set-Cookie": web.auth.cookie_header()})
        if not web.auth.required:
            return self._redirect("/")
        wrong = page.replace(b"<!--message-->", b'<p class="error">That token is not the right one.</p>')
        self._send(HTTPStatus.UNAUTHORIZED, wrong, "text/html; charset=utf-8", policy)

    def _video(self, web: WebServer, relative: str) -> None:
        video = web.media.resolve(relative)
        try:
            first_last = parse_range(self.headers.get("Range"), video.size)
        except BadRange:
            return self._send(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                b"",
                "text/plain",
                {"Content-Range": f"bytes */{video.size}"},
            )
        with web.media.open(video) as handle:
            first, last = first_last or (0, video.size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if first_last else HTTPStatus.OK)
            self.send_header("Content-Type", video.content_type)
            self.send_header("Content-Length", str(max(0, last - first + 1)))
            self.send_header("Accept-Ranges", "bytes")
            if first_last:
                self.send_header("Content-Range", f"bytes {first}-{last}/{video.size}")
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            handle.seek(first)
            remaining = last - first + 1
            while remaining > 0 and not self.server.stopping.is_set():
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
