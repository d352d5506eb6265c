"""A webhook receiver on 127.0.0.1 for the tests: answers 200, fails with 500, hangs, or drips, as told."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int  # 200, 500, or 0 (hung)

    @property
    def document(self) -> dict:
        return json.loads(self.body)


DRIP_SECONDS, DRIP_BYTES = 0.25, 40  # 10 s in all


class Receiver:
    def __init__(self) -> None:
        self.mode = "ok"  # "ok", "fail", "hang", or "drip" (200, then its body one byte every DRIP_SECONDS)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mode = receiver.mode
                status = {"ok": 200, "fail": 500, "hang": 0, "drip": 200}[mode]
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers), body, status))
                if mode == "hang":
                    receiver._release.wait(30)
                    return  # no reply at all: the client gives up on its own timeout
                if mode == "drip":
                    return self._drip()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _drip(self) -> None:
                """A receiver that never stops answering: each byte in time for any per-read timeout."""
                self.send_response(200)
                self.send_header("Content-Length", str(DRIP_BYTES))
                self.end_headers()
                for _ in range(DRIP_BYTES):
                    if receiver._release.wait(DRIP_SECONDS):
                        return
                    try:
                        self.wfile.write(b".")
                        self.wfile.flush()
                    except OSError:  # the client hung up
                        return

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def delivered(self) -> list[Received]:
        """What was answered 200, in order."""
        with self._lock:
            return [item for item in self.received if item.answered == 200]

    def attempts(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
