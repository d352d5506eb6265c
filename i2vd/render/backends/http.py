"""What every HTTP-speaking backend shares: the whole-call deadline, error classes, streamed bodies.

`timeout_seconds` bounds a server call from connect to the last byte. requests' own timeout is per
read, so a server that drips one byte a second never trips it; here a `Deadline` (a context manager
around the whole call) starts one timer, and every connection the call takes from a session that
`mount_deadline_adapter` prepared is shut down when the timer fires. Whatever the call was doing
(connecting, sending, waiting for headers, reading a body or an event stream) then fails, and
`classify` turns that into `CallTimedOut`.

One rule for a connection that fails (SPEC "What real hot folders do"): refused, unresolvable or not
connected in time is `ServerUnavailable` (the server is down; no attempt used); made and then lost
is `ConnectionDropped` (the server took the job and died on it: one attempt, so an image that crashes
the server cannot be sent forever).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from i2vd.core.alarms import ALARMS, Alarm
from i2vd.render.backends import failures
from i2vd.render.backends.base import BackendError, CallTimedOut, ConnectionDropped  # noqa: F401 - re-exported

CHUNK = 256 * 1024
_B64_SLICE = 3 * 16 * 1024  # image bytes encoded per step of an upload: a multiple of 3, so no padding between
_local = threading.local()


class Deadline:
    """`with Deadline(seconds, what):` the whole call, every request made inside it by this thread."""

    def __init__(self, seconds: float, what: str = "the server") -> None:
        self.seconds = float(seconds)
        self.what = what
        self.ends = time.monotonic() + self.seconds
        self.expired = False
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._alarm: Alarm | None = None

    def __enter__(self) -> Deadline:
        self._alarm = ALARMS.set(self.ends, self._expire)  # no thread of its own: core/alarms.py
        _stack().append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _stack().remove(self)
        assert self._alarm is not None
        ALARMS.cancel(self._alarm)  # and an expiry already running is over when this returns

    def remaining(self) -> float:
        """Seconds left; CallTimedOut when none are."""
        left = self.ends - time.monotonic()
        if left <= 0 or self.expired:
            raise self.error()
        return left

    @property
    def timed_out(self) -> bool:
        return self.expired or time.monotonic() >= self.ends

    def error(self) -> CallTimedOut:
        return CallTimedOut(
            f"no result within {self.seconds:g} s from {self.what} (timeout_seconds bounds the whole call)"
        )

    def watch(self, closer: Callable[[], None]) -> None:
        """Run `closer` (it shuts a connection) when the deadline passes; at once if it has."""
        with self._lock:
            if not self.expired:
                self._closers.append(closer)
                return
        _quietly(closer)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            closers, self._closers = self._closers, []
        for closer in closers:
            _quietly(closer)


def _stack() -> list[Deadline]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def current_deadline() -> Deadline | None:
    stack = _stack()
    return stack[-1] if stack else None


def _quietly(closer: Callable[[], None]) -> None:
    try:
        closer()
    except OSError:
        pass


def _shut(connection: Any) -> None:
    # http.client drops `sock` from a connection whose reply closes it (HTTP/1.0, "Connection: close"),
    # while the reply still reads from that socket: the one kept at connect time is shut instead.
    sock = getattr(connection, "sock", None) or getattr(connection, "_i2vd_socket", None)
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


class _RememberSocket:
    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._i2vd_socket = self.sock  # type: ignore[attr-defined]


class _Connection(_RememberSocket, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_RememberSocket, urllib3.connection.HTTPSConnection):
    pass


class _Watched:
    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        deadline = current_deadline()
        if deadline is not None:
            deadline.watch(lambda: _shut(connection))
        return connection


class _WatchedPool(_Watched, HTTPConnectionPool):
    ConnectionCls = _Connection


class _WatchedHTTPSPool(_Watched, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}


def mount_deadline_adapter(session: requests.Session) -> requests.Session:
    """Connections of this session obey the thread's current Deadline."""
    for prefix in ("http://", "https://"):
        session.mount(prefix, _DeadlineAdapter())
    return session


def request(
    session: requests.Session, method: str, url: str, deadline: Deadline, connect_timeout: float, **kwargs: Any
) -> requests.Response:
    """One request inside `deadline` (the body is read later, still inside it: stream=True)."""
    remaining = deadline.remaining()
    try:
        timeout = (min(connect_timeout, remaining), remaining)
        response = session.request(method, url, timeout=timeout, stream=True, **kwargs)
    except requests.RequestException as error:
        raise classify(error, deadline, url) from None
    if deadline.expired:  # the connection was shut under a reply cut short: not a reply
        response.close()
        raise deadline.error()
    return response


def read_all(response: requests.Response, deadline: Deadline) -> bytes:
    """A small body, whole (an error page, a JSON event id); bounded by the deadline like any read."""
    try:
        content = response.content
    except requests.RequestException as error:
        raise classify(error, deadline, response.url) from None
    if deadline.expired:
        raise deadline.error()
    return content


def classify(error: Exception, deadline: Deadline | None, url: str) -> BackendError:
    """A failed request or read, as the worker needs it (failures.py); the call's deadline, once passed, wins."""
    if deadline is not None and deadline.timed_out:
        return deadline.error()
    classified = failures.connection_error(error, url)
    if isinstance(classified, CallTimedOut) and deadline is not None:
        return deadline.error()
    return classified


def save_body(response: requests.Response, deadline: Deadline, target: Path) -> int:
    """The response body streamed into `target` (created); its size. Never the whole body in memory."""
    size = 0
    try:
        with open(target, "wb") as sink:
            for chunk in response.raw.stream(CHUNK, decode_content=True):
                sink.write(chunk)
                size += len(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        raise classify(error, deadline, response.url) from None
    except OSError as error:
        if deadline.timed_out or isinstance(error, (ConnectionError, TimeoutError)):
            raise classify(error, deadline, response.url) from None
        raise  # our own disk: not the server's fault
    finally:
        response.close()
    if deadline.expired:
        raise deadline.error()
    return size


def spool_name(folder: Path, suffix: str) -> Path:
    """A fresh temp name in `folder`; `.part` marks it as i2vd's work in progress (removed at start)."""
    return folder / f"reply-{uuid.uuid4().hex}{suffix}.part"


class StreamedBody:
    """A JSON request body with the image's base64 made as it is sent (requests reads it like a file).

    The JSON text is made with a placeholder where the image goes; the image is encoded 48 KB
    at a time as the connection takes it, so an upload holds one copy of the image, not four.
    """

    def __init__(
        self, payload: Any, placeholder: str, image: bytes, prefix: str = "", on_end: Callable[[], None] | None = None
    ) -> None:
        text = json.dumps(payload)
        marker = json.dumps(placeholder)
        before, found, after = text.partition(marker)
        if not found:
            raise ValueError("the placeholder is not in the payload")
        self._head = (before + '"' + prefix).encode()
        self._tail = ('"' + after).encode()
        self._image = image
        self._length = len(self._head) + 4 * -(-len(image) // 3) + len(self._tail)
        self._chunks = self._iterate()
        self._buffer = b""
        self._on_end = on_end  # called once the connection has read the last byte (the request has left)

    def __len__(self) -> int:
        return self._length

    def _iterate(self) -> Iterator[bytes]:
        yield self._head
        view = memoryview(self._image)
        for start in range(0, len(view), _B64_SLICE):
            yield base64.b64encode(view[start : start + _B64_SLICE])
        yield self._tail

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._chunks, None)
            if piece is None:
                break
            self._buffer += piece
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        if not data and self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end()
        return data


class MultipartBody:
    """One file as multipart/form-data, read by the connection straight from the image: no second copy."""

    def __init__(self, field: str, filename: str, content: bytes, mime: str) -> None:
        self.boundary = uuid.uuid4().hex
        self._parts = [
            (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                f"Content-Type: {mime}\r\n\r\n"
            ).encode(),
            memoryview(content),
            f"\r\n--{self.boundary}--\r\n".encode(),
        ]
        self._parts = [part for part in self._parts if len(part)]  # an empty read ends the body
        self._length = sum(len(part) for part in self._parts)
        self._part, self._offset = 0, 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        if self._part >= len(self._parts):
            return b""
        part = self._parts[self._part]
        end = len(part) if size < 0 else min(len(part), self._offset + size)
        data = bytes(part[self._offset : end])
        self._offset = end
        if self._offset >= len(part):
            self._part, self._offset = self._part + 1, 0
        return data
