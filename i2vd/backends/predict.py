"""The I2VGen-XL WebUI `/api/predict/` contract: the only HTTP this backend does.

Request: `{"data": [image, prompt, resolution_index, frames, fps, steps, guidance]}`.
Reply: `{"data": [video]}` where video is base64, a data URL, a server path, or a
Gradio file dict (possibly inside a list, as Gradio 3.x video outputs are) that is
downloaded with `GET /file=<path>`.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import time
from typing import Any
from urllib.parse import quote

import requests

from i2vd import __version__
from i2vd.backends.base import (
    RESOLUTIONS,
    BackendError,
    BadReply,
    ServerOutOfMemory,
    ServerUnavailable,
    VideoReply,
    VideoRequest,
)

OUT_OF_MEMORY_MARKS = ("out of memory", "outofmemoryerror", "cuda oom")
BODY_EXCERPT = 300


def looks_out_of_memory(text: str) -> bool:
    lowered = text.lower()
    return any(mark in lowered for mark in OUT_OF_MEMORY_MARKS)


def encode_image(request: VideoRequest, encoding: str) -> str:
    payload = base64.b64encode(request.image).decode("ascii")
    if encoding == "data_url":
        mime = mimetypes.guess_type(request.image_name)[0] or "image/png"
        return f"data:{mime};base64,{payload}"
    return payload


class PredictBackend:
    kind = "predict"

    def __init__(self, url: str, path: str = "/api/predict/", *, timeout_seconds: float = 900, connect_timeout_seconds: float = 10, image_encoding: str = "base64", session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.path = "/" + path.lstrip("/")
        self.timeout = (connect_timeout_seconds, timeout_seconds)
        self.image_encoding = image_encoding
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = f"i2vd/{__version__}"

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "url": self.url + self.path, "version": "predict-api"}

    def close(self) -> None:
        self._session.close()

    def generate(self, request: VideoRequest) -> VideoReply:
        payload = {
            "data": [
                encode_image(request, self.image_encoding),
                request.prompt,
                RESOLUTIONS.index(request.resolution),
                request.frames,
                request.fps,
                request.steps,
                request.guidance,
            ]
        }
        started = time.monotonic()
        response = self._call("POST", self.path, json=payload)
        try:
            body = response.json()
        except ValueError:
            raise BadReply(f"server reply is not JSON: {response.text[:BODY_EXCERPT]!r}") from None
        if isinstance(body, dict) and body.get("error"):
            message = str(body["error"])
            raise (ServerOutOfMemory if looks_out_of_memory(message) else BackendError)(f"server error: {message[:BODY_EXCERPT]}")
        data = body.get("data") if isinstance(body, dict) else None
        if not data or not isinstance(data, list):
            raise BadReply(f"server reply has no data: {response.text[:BODY_EXCERPT]!r}")
        video = self._video_bytes(data[0])
        return VideoReply(data=video, server_seconds=time.monotonic() - started)

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        target = self.url + path
        try:
            response = self._session.request(method, target, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as error:
            if _dropped_mid_request(error):
                # The server took the request and died on it: counted, so an image that crashes the
                # server cannot be resent forever each time the server comes back.
                raise BackendError(f"{self.url} dropped the connection while working on this request: {_reason(error)}") from None
            raise ServerUnavailable(f"cannot reach {self.url}: {_reason(error)}") from None  # refused, DNS, connect timeout
        except requests.ReadTimeout:
            raise BackendError(f"no reply within {self.timeout[1]:g} s from {target}") from None
        except requests.RequestException as error:
            raise BackendError(f"{method} {target} failed: {error}") from None
        if response.status_code >= 400:
            text = response.text
            if looks_out_of_memory(text):
                raise ServerOutOfMemory(f"server out of GPU memory (HTTP {response.status_code}): {text[:BODY_EXCERPT]}")
            if response.status_code in (502, 503, 504):
                raise ServerUnavailable(f"server unavailable (HTTP {response.status_code}) at {target}")
            raise BackendError(f"HTTP {response.status_code} from {target}: {text[:BODY_EXCERPT]}")
        return response

    def _video_bytes(self, item: Any) -> bytes:
        """Every reply form the contract allows: base64, data URL, path, file dict, [file dict, None]."""
        if isinstance(item, list) and item:
            item = item[0]
        if isinstance(item, dict):
            reference = item.get("path") or item.get("name")
            if item.get("url") and not reference:
                return self._download_url(item["url"])
            if not isinstance(reference, str):
                raise BadReply(f"video file reference without a path: {item!r}"[:BODY_EXCERPT])
            return self._download(reference)
        if not isinstance(item, str) or not item:
            raise BadReply(f"video is not a string or file reference: {item!r}"[:BODY_EXCERPT])
        if item.startswith("data:"):
            _, _, encoded = item.partition(",")
            return _decode_base64(encoded)
        if item.startswith("/") or item.startswith("file="):
            return self._download(item.removeprefix("file="))
        return _decode_base64(item)

    def _download(self, server_path: str) -> bytes:
        response = self._call("GET", "/file=" + quote(server_path))
        if not response.content:
            raise BadReply(f"server file {server_path} is empty")
        return response.content

    def _download_url(self, url: str) -> bytes:
        path = url.removeprefix(self.url) if url.startswith(self.url) else url
        if path.startswith("http"):
            raise BadReply(f"video URL {url} is not on the server {self.url}")
        content = self._call("GET", path).content
        if not content:
            raise BadReply(f"server file {url} is empty")
        return content


def _decode_base64(text: str) -> bytes:
    try:
        video = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadReply("video is neither base64 nor a data URL nor a server path") from None
    if not video:
        raise BadReply("the server returned an empty video")
    return video


def _dropped_mid_request(error: requests.ConnectionError) -> bool:
    """True when the connection was made and then lost (not refused, not unresolvable, not a connect timeout)."""
    if isinstance(error, requests.ConnectTimeout):
        return False
    text = str(error)
    dropped = "Connection aborted" in text or "RemoteDisconnected" in text or "Connection reset" in text
    return dropped and "NewConnectionError" not in text


def _reason(error: Exception) -> str:
    text = str(error)
    for mark in ("Connection refused", "Name or service not known", "timed out", "No route to host", "Connection reset"):
        if mark.lower() in text.lower():
            return mark.lower()
    return text[:BODY_EXCERPT]
