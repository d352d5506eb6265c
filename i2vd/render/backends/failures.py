"""What a failed server call means, decided in one place for every backend (no I/O here).

The worker handles errors by class (base.py), so each backend must raise the same class for the
same event. The rules (SPEC "Reliability", "What real hot folders do"):

- never connected (refused, unresolvable, no connection in time): `ServerUnavailable`, no attempt;
- connected, then lost (reset, closed mid-reply, a cut chunk): `ConnectionDropped`, one attempt, so
  an image that crashes the server is not sent forever;
- connected, then no answer in time: `CallTimedOut`, one attempt;
- HTTP statuses (`status_error`): an out-of-memory text in the body `ServerOutOfMemory`; 502/503/504
  `ServerUnavailable`; 401/403 `LoginRequired` (a `ServerUnavailable`: every job would fail alike);
  404 `NotFound`; 413 `BadInput`; any other `BackendError`, with the status kept on the error;
- the app's own error message (`app_error`): out of memory or a plain `BackendError`.

Exceptions are told apart by their types and causes (requests wraps urllib3, which wraps the
socket's error), never by their text: only the server's own words are read, for out of memory.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import requests
import urllib3.exceptions

from i2vd.render.backends.base import (
    BackendError,
    BadInput,
    CallTimedOut,
    ConnectionDropped,
    LoginRequired,
    NotFound,
    ServerOutOfMemory,
    ServerUnavailable,
)

BODY_EXCERPT = 300
OUT_OF_MEMORY_MARKS = ("out of memory", "outofmemoryerror", "cuda oom")
GATEWAY_STATUSES = (502, 503, 504)
# urllib3's NewConnectionError and NameResolutionError are ConnectTimeoutErrors: no connection was made.
_NEVER_CONNECTED = (
    urllib3.exceptions.ConnectTimeoutError,
    requests.ConnectTimeout,
    ConnectionRefusedError,
    socket.gaierror,
)
_NO_ANSWER = (urllib3.exceptions.ReadTimeoutError, requests.ReadTimeout, TimeoutError)
_LOST = (
    urllib3.exceptions.ProtocolError,
    requests.exceptions.ChunkedEncodingError,
    http.client.HTTPException,
    ConnectionError,
    urllib3.exceptions.HTTPError,
    requests.ConnectionError,
    OSError,
)
_REASONS = (
    (ConnectionRefusedError, "connection refused"),
    (socket.gaierror, "name or service not known"),
    (urllib3.exceptions.NameResolutionError, "name or service not known"),
    (ConnectionResetError, "connection reset"),
    (BrokenPipeError, "connection reset"),
    (urllib3.exceptions.NewConnectionError, "no connection"),
    (urllib3.exceptions.ConnectTimeoutError, "timed out"),
    (requests.ConnectTimeout, "timed out"),
    (TimeoutError, "timed out"),
    (urllib3.exceptions.ReadTimeoutError, "timed out"),
)


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it wraps: requests' first argument, urllib3's `reason`, __cause__, __context__."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        yield current
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def never_connected(error: BaseException) -> bool:
    """Refused, unresolvable or not connected in time: the server is down, the job was never sent."""
    return any(isinstance(cause, _NEVER_CONNECTED) for cause in causes(error))


def no_answer_in_time(error: BaseException) -> bool:
    return any(isinstance(cause, _NO_ANSWER) for cause in causes(error))


def connection_error(error: BaseException, url: str) -> BackendError:
    """A request or read that failed below HTTP, as the worker needs it (module docstring)."""
    if never_connected(error):
        return ServerUnavailable(f"cannot reach {url}: {reason(error)}")
    if no_answer_in_time(error):
        return CallTimedOut(f"{url} did not answer in time")
    if isinstance(error, _LOST):
        return ConnectionDropped(f"{url} dropped the connection while working on this job: {reason(error)}")
    return BackendError(f"{url} failed: {str(error)[:BODY_EXCERPT]}")


def reason(error: BaseException) -> str:
    """A short human reason: the first of _REASONS that one of the errors' types says."""
    chain = list(causes(error))
    for kind, text in _REASONS:
        if any(isinstance(cause, kind) for cause in chain):
            return text
    return str(error)[:BODY_EXCERPT]


def looks_out_of_memory(text: str) -> bool:
    lowered = text.lower()
    return any(mark in lowered for mark in OUT_OF_MEMORY_MARKS)


def status_error(status: int, text: str, what: str) -> BackendError:
    """An HTTP error status (with the start of its body) as the worker needs it (module docstring)."""
    excerpt = text[:BODY_EXCERPT]
    error: BackendError
    if looks_out_of_memory(text):
        error = ServerOutOfMemory(f"server out of GPU memory (HTTP {status} on {what}): {excerpt}")
    elif status in GATEWAY_STATUSES:
        error = ServerUnavailable(f"server unavailable (HTTP {status} on {what}): {excerpt}")
    elif status in (401, 403):
        error = LoginRequired(f"the server wants a login (HTTP {status} on {what}), which i2vd does not do")
    elif status == 404:
        error = NotFound(f"HTTP 404 on {what}: {excerpt}")
    elif status == 413:
        error = BadInput(f"the server refuses the image as too large (HTTP 413 on {what}): {excerpt}")
    else:
        error = BackendError(f"HTTP {status} on {what}: {excerpt}")
    error.status = status
    return error


def app_error(message: str | None, hidden: str = "the app failed without saying why") -> BackendError:
    """The server's own error message (a JSON "error" field, a failed job's event)."""
    if message is None:
        return BackendError(hidden)
    if looks_out_of_memory(message):
        return ServerOutOfMemory(f"the app ran out of GPU memory: {message[:BODY_EXCERPT]}")
    return BackendError(f"the app failed: {message[:BODY_EXCERPT]}")
