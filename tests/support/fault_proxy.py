"""A TCP proxy on 127.0.0.1 in front of a real server, doing what a network or a reverse proxy does to it.

`FaultProxy(upstream_url)` forwards every connection to the server, byte for byte, and on demand:
- `refuse()`: stops listening (connections refused, as when the server is down), `listen()` again;
- `cut()`: shuts every open connection at once, as when the server process dies mid-job;
- `answer(path, status, body)`: the next requests to `path` get this answer instead of reaching the
  server, as from nginx in front of an app that is restarting (502/503) or misconfigured.
It reads the requests a client sends (heads and Content-Length bodies) to find their paths; answers go
back unread. A websocket upgrade is forwarded without further reading.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

READ_SIZE = 64 * 1024
MAX_HEAD = 64 * 1024


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._port = 0
        self._sockets: set[socket.socket] = set()  # open connections, both sides
        self._opened: list[socket.socket] = []  # every socket made, closed by stop()
        self._threads: list[threading.Thread] = []
        self._answers: list[tuple[str, bytes, int | None]] = []  # path, the whole answer, uses left (None: all)
        self.paths: list[str] = []  # "METHOD /path" of every request forwarded or answered, in order
        self.agents: list[str] = []  # the User-Agent of each of them ("" without one), in the same order

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self.listen()
        return self

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(16)
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener, name=f"FaultProxy:{self._port}")

    def refuse(self) -> None:
        """Nothing listens any more (connect: refused); open connections are cut too."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _shut(listener)
            listener.close()
        self.cut()

    def stop(self) -> None:
        self.refuse()
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join()
        with self._lock:
            opened, self._opened = self._opened, []
        for sock in opened:
            sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- faults --------------------------------------------------------------------------------------
    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _shut(sock)

    def answer(
        self, path: str, status: int, body: bytes, content_type: str = "text/html", times: int | None = None
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with self._lock:
            self._answers.append((path, head + body, times))

    def _canned(self, path: str) -> bytes | None:
        with self._lock:
            for index, (wanted, answer, times) in enumerate(self._answers):
                if path == wanted:
                    if times is not None:
                        self._answers[index] = (wanted, answer, times - 1)
                        if times == 1:
                            del self._answers[index]
                    return answer
        return None

    # -- forwarding ----------------------------------------------------------------------------------
    def _spawn(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # refuse() or stop()
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()  # the server itself is down: so is the proxy, to the client
                continue
            with self._lock:
                self._sockets.update((client, server))
                self._opened += (client, server)
            self._spawn(self._requests, client, server, name="FaultProxy:requests")
            self._spawn(_pump, server, client, name="FaultProxy:answers")

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server, one request at a time: each request's path is checked against the answers."""
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = client.recv(READ_SIZE)
                    if not data or len(buffer) > MAX_HEAD:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = (lines[0].split(" ") + ["", ""])[:2]
                headers = {
                    key.strip().lower(): value.strip() for key, _, value in (line.partition(":") for line in lines[1:])
                }
                path = urlsplit(target).path
                with self._lock:
                    self.paths.append(f"{method} {path}")
                    self.agents.append(headers.get("user-agent", ""))
                canned = self._canned(path)
                if canned is not None:
                    client.sendall(canned)
                    return
                server.sendall(head + b"\r\n\r\n")
                if "upgrade" in headers.get("connection", "").lower():
                    server.sendall(buffer)
                    return _pump(client, server)
                left = int(headers.get("content-length") or 0)
                while left > 0:
                    if not buffer:
                        buffer = client.recv(min(READ_SIZE, left))
                        if not buffer:
                            return
                    piece, buffer = buffer[:left], buffer[left:]
                    server.sendall(piece)
                    left -= len(piece)
        except OSError:
            return
        finally:
            _shut(client)
            _shut(server)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(READ_SIZE):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
