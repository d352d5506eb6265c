"""A server that answers every GET with its headers, then one byte every 0.1 s, never finishing its body.

Each read comes well within any per-read timeout (requests' `timeout=`), so only a deadline on the whole call ends
it: what a hung reverse proxy, a stalled NAS-backed server or a deliberately slow peer does.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler

from tests.support.serving import LoopbackFake

DRIP_SECONDS = 0.1


class DrippingServer(LoopbackFake):
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.requests: list[str] = []

    def _before_stop(self) -> None:
        self.stopping.set()


class _DrippingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: object

    def do_GET(self) -> None:
        fake: DrippingServer = self.server.fake  # type: ignore[attr-defined]
        fake.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        while not fake.stopping.wait(DRIP_SECONDS):
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:
                return

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass


DrippingServer.handler_class = _DrippingHandler
