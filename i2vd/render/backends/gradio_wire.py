"""What goes over the wire to a Gradio app, with no backend state: discovery (`GET /config`, `{prefix}/info`),
the SSE event stream, JSON replies, the 3.x `/run` reply read from its file, and what an error answer means.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from i2vd.render.backends import failures, http, replies
from i2vd.render.backends.base import BackendError, BadReply
from i2vd.render.backends.failures import BODY_EXCERPT
from i2vd.render.backends.gradio_app import App, AppMismatch, read_app
from i2vd.render.backends.gradio_mapping import ParameterMap
from i2vd.render.backends.gradio_protocol import error_text, iter_sse

_Deadline = http.CallTimedOut  # timeout_seconds ran out


@dataclass
class Target:
    """What discovery found: the app, the chosen endpoint's parameter map, and how to call it."""

    app: App
    mapping: ParameterMap
    v3_http_path: str | None = None  # 3.x: the path that answered; "" once the app refused direct calls


class EventStream:
    """(event, data) pairs of an SSE response; each read may wait only until the deadline."""

    def __init__(self, response: requests.Response, deadline: float) -> None:
        self.response = response
        self.deadline = deadline

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter_sse(self._lines())

    def _lines(self) -> Iterator[str]:
        connection = getattr(self.response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        chunks = self.response.iter_content(chunk_size=None)
        buffer = b""
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline()
            if sock is not None:
                sock.settimeout(remaining)  # one read may not outlast the call's deadline
            try:
                chunk = next(chunks)
            except StopIteration:
                if whole().expired:
                    raise _Deadline() from None
                break
            except requests.RequestException as error:
                # the job was in the server's hands: a lost stream uses one attempt (server down or not)
                raise http.classify(error, whole(), self.response.url) from None
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if buffer:
            yield buffer.decode("utf-8", "replace")
        yield ""

    def close(self) -> None:
        self.response.close()


def whole() -> http.Deadline:
    """The deadline of the call this thread is in (GradioBackend.generate sets it)."""
    deadline = http.current_deadline()
    assert deadline is not None, "a Gradio request outside generate()"
    return deadline


def save_data_url(text: str | replies.BigString, video: Path) -> None:
    with open(video, "wb") as sink:
        replies.decode_base64(replies.text_chunks(text), sink, skip_prefix=True)


def v3_outputs(status: int, reply_file: Path, what: str) -> list:
    """The outputs of a 3.x `/run` reply, read from its file (long strings stay there: replies.py)."""
    excerpt = file_excerpt(reply_file)
    try:
        reply = replies.load_json(reply_file)
    except BadReply:
        if status >= 400:
            raise failures.status_error(status, excerpt, what) from None
        raise BadReply(f"{what} answered no JSON: {excerpt!r}") from None
    if isinstance(reply, dict) and "error" in reply and "data" not in reply:
        error = reply["error"]
        raise app_error(replies.head(error, 4096) if isinstance(error, replies.BigString) else error)
    if status >= 400:
        raise failures.status_error(status, excerpt, what)
    if not isinstance(reply, dict) or not isinstance(reply.get("data"), list):
        raise BadReply(f"{what} answered without a data list: {excerpt!r}")
    return reply["data"]


def file_excerpt(path: Path, size: int = 4096) -> str:
    with open(path, "rb") as source:
        return source.read(size).decode("utf-8", "replace")


def discover_app(session: requests.Session, url: str, connect_timeout: float, read_timeout: float) -> App:
    """GET /config, then {prefix}/info; raises ServerUnavailable (down) or AppMismatch (not a Gradio app)."""
    config = discovery_get(session, url, "/config", connect_timeout, read_timeout)
    if config.status_code == 404:
        raise AppMismatch(
            f"{url} is not a Gradio app (GET /config: 404); an I2VGen-XL /predict server? then use server.kind: predict"
        )
    if config.status_code >= 400:
        raise http_error(config, "GET /config")
    body = json_of(config, "GET /config")
    if not isinstance(body, dict) or not ("version" in body or "dependencies" in body):
        raise AppMismatch(f"{url} is not a Gradio app: GET /config answered {config.text[:BODY_EXCERPT]!r}")
    prefix = str(body.get("api_prefix") or "").rstrip("/")
    info, problem = None, None
    response = discovery_get(session, url, f"{prefix}/info", connect_timeout, read_timeout)
    if response.status_code >= 400:
        problem = f"GET {prefix}/info answered HTTP {response.status_code}"
    else:
        try:
            info = response.json()
        except ValueError:
            problem = f"GET {prefix}/info answered no JSON"
    return read_app(body, info, problem)


def discovery_get(
    session: requests.Session, url: str, path: str, connect_timeout: float, read_timeout: float
) -> requests.Response:
    """Refused or not connected in time: ServerUnavailable; connected, then silent or lost: the call's
    failure (CallTimedOut, ConnectionDropped), as for any request (failures.py)."""
    deadline = http.current_deadline()
    if deadline is not None:
        read_timeout = min(read_timeout, deadline.remaining())
    try:
        return session.get(url + path, timeout=(connect_timeout, read_timeout))
    except requests.RequestException as error:
        classified = http.classify(error, deadline, url + path)
        if isinstance(classified, http.CallTimedOut) and deadline is None:
            classified = http.CallTimedOut(
                f"{url} accepted the connection but did not answer GET {path} within {read_timeout:g} s"
            )
        raise classified from None


def http_error(response: requests.Response, what: str) -> BackendError:
    return failures.status_error(response.status_code, response.text, what)


def refuses_direct_calls(response: requests.Response) -> bool:
    """Gradio 3.20-3.39: 401 to a direct call when the queue has api_open=False (a login answers /config with 401)."""
    return "skip the queue" in response.text.lower()


def app_error(output: Any) -> BackendError:
    return failures.app_error(
        error_text(output),
        hidden="the app failed without saying why (Gradio hides exception text unless the app sets show_error=True)",
    )


def json_of(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise BadReply(
            f"{what} answered no JSON (HTTP {response.status_code}): {response.text[:BODY_EXCERPT]!r}"
        ) from None


def json_text(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadReply(f"{what} sent an event that is not JSON: {text[:BODY_EXCERPT]!r}") from None
