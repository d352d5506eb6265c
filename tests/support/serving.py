"""The HTTP side every fake app of the suite shares: a threading server on a 127.0.0.1 port, served from a thread,
that `stop()` ends with every connection thread joined (the suite's thread-leak check holds), and `with` support.

A fake subclasses LoopbackFake, names its `handler_class`, and may extend `_after_start` (threads of its own),
`_before_stop` and `_release_connections` (what its threads and connections wait on, before they are joined).
"""

from __future__ import annotations

import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

log = logging.getLogger("tests.serving")


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the connection threads
    allow_reuse_address = True
    fake: Any  # the LoopbackFake that serves: handlers read it as self.server.fake

    def server_bind(self) -> None:  # skip getfqdn(): slow where DNS is odd
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: a connection ended", type(self.fake).__name__, exc_info=True)


class LoopbackFake:
    handler_class: type[BaseHTTPRequestHandler]
    _http: LoopbackServer | None = None
    _serving: threading.Thread | None = None
    _port = 0

    def start(self) -> Self:
        self._http = LoopbackServer(("127.0.0.1", self._port), self.handler_class)
        self._http.fake = self
        self._port = self._http.server_address[1]
        self._serving = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{type(self).__name__}:{self._port}"
        )
        self._serving.start()
        self._after_start()
        return self

    def stop(self) -> None:
        self._before_stop()
        if self._http is None:
            return
        self._http.shutdown()
        self._release_connections()
        self._http.server_close()
        self._serving.join()
        self._http = self._serving = None

    def _after_start(self) -> None:
        """After the server listens: a fake's own threads start here."""

    def _before_stop(self) -> None:
        """Before the server stops: a fake tells its own threads and waiting handlers to end."""

    def _release_connections(self) -> None:
        """Between shutdown and the join of the connection threads: unblock connections that would wait."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"
