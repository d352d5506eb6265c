"""failures.py: what a failed call means, from the exceptions requests really raises (real sockets on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading

import pytest
import requests
import urllib3.exceptions

from i2vd.render.backends import failures
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


def failure_of(url: str, **options) -> requests.RequestException:
    with requests.Session() as session, pytest.raises(requests.RequestException) as caught:
        session.get(url, **options)
    return caught.value


@pytest.fixture
def listener():
    """A socket that listens and never accepts: connecting works (the backlog), no answer ever comes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        yield sock


def serve_once(answer: bytes) -> tuple[str, threading.Thread]:
    """A server that reads one request, writes `answer` and closes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)

    def run() -> None:
        with sock:
            connection, _ = sock.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=run, name="serve_once")
    thread.start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}/x", thread


def test_a_refused_connection_is_server_unavailable(listener):
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now

    error = failures.connection_error(failure_of(f"http://127.0.0.1:{port}/"), "the server")

    assert type(error) is ServerUnavailable and "connection refused" in str(error)


def test_a_name_that_does_not_resolve_is_server_unavailable():
    try:  # raised as urllib3 raises it, from the resolver's error
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as resolver:
            raise urllib3.exceptions.NameResolutionError("gpu-box", None, resolver) from resolver
    except urllib3.exceptions.NameResolutionError as cause:
        wrapped = requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", cause))

    error = failures.connection_error(wrapped, "http://gpu-box")

    assert type(error) is ServerUnavailable and "name or service not known" in str(error)


def test_connected_and_then_no_answer_is_a_timeout_not_server_down(listener):
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"

    error = failures.connection_error(failure_of(url, timeout=(2, 0.2)), url)

    assert type(error) is CallTimedOut


def test_a_read_timeout_inside_a_body_stream_is_a_timeout():
    # what requests raises from iter_content when the read times out: a ConnectionError around it
    wrapped = requests.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."))

    assert type(failures.connection_error(wrapped, "u")) is CallTimedOut


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf"],
    ids=["closed-before-answering", "closed-mid-body"],
)
def test_connected_and_then_lost_is_dropped(answer):
    url, thread = serve_once(answer)
    try:
        error = failures.connection_error(failure_of(url, timeout=5), url)
    finally:
        thread.join()

    assert type(error) is ConnectionDropped and "dropped the connection" in str(error)


@pytest.mark.parametrize(
    "status, kind",
    [
        (500, BackendError),
        (502, ServerUnavailable),
        (503, ServerUnavailable),
        (504, ServerUnavailable),
        (401, LoginRequired),
        (403, LoginRequired),
        (404, NotFound),
        (413, BadInput),
        (422, BackendError),
    ],
)
def test_each_status_has_one_meaning(status, kind):
    error = failures.status_error(status, "<html>nope</html>", "POST /run/predict")

    assert type(error) is kind and error.status == status
    assert f"HTTP {status}" in str(error) and "POST /run/predict" in str(error)


def test_the_server_s_out_of_memory_words_win_over_its_status():
    text = "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"

    assert type(failures.status_error(503, text, "POST /x")) is ServerOutOfMemory
    assert type(failures.app_error(text)) is ServerOutOfMemory
    assert str(failures.app_error("bad prompt")) == "the app failed: bad prompt"
    assert str(failures.app_error(None, hidden="hidden")) == "hidden"
