"""The I2VGen-XL WebUI `/api/predict/` contract: the only HTTP this backend does.

Request: `{"data": [image, prompt, resolution_index, frames, fps, steps, guidance]}`.
Reply: `{"data": [video]}` where video is base64, a data URL, a server path, or a
Gradio file dict (possibly inside a list, as Gradio 3.x video outputs are) that is
downloaded with `GET /file=<path>`.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from i2vd.render.backends import failures, http, replies, sessions
from i2vd.render.backends.base import (
    RESOLUTIONS,
    BadReply,
    VideoReply,
    VideoRequest,
    reply_folder,
    video_reply,
)
from i2vd.render.backends.failures import BODY_EXCERPT


def image_prefix(image_name: str, encoding: str) -> str:
    """What goes before the image's base64: a data URL's header, or nothing."""
    if encoding == "data_url":
        mime = mimetypes.guess_type(image_name)[0] or "image/png"
        return f"data:{mime};base64,"
    return ""


class PredictBackend:
    kind = "predict"
    signals_sent = True  # request.on_sent is called once the request's body has left

    def __init__(
        self,
        url: str,
        path: str = "/api/predict/",
        *,
        timeout_seconds: float = 900,
        connect_timeout_seconds: float = 10,
        image_encoding: str = "base64",
        session: requests.Session | None = None,
    ):
        self.url = url.rstrip("/")
        self.path = "/" + path.lstrip("/")
        self.timeout_seconds = float(timeout_seconds)
        self.connect_timeout = float(connect_timeout_seconds)
        self.image_encoding = image_encoding
        self._session = sessions.server_session(session)

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "url": self.url + self.path, "version": "predict-api"}

    def close(self) -> None:
        self._session.close()

    def generate(self, request: VideoRequest) -> VideoReply:
        image_value = "\x00i2vd-image"
        payload = {
            "data": [
                image_value,
                request.prompt,
                RESOLUTIONS.index(request.resolution),
                request.frames,
                request.fps,
                request.steps,
                request.guidance,
            ]
        }
        prefix = image_prefix(request.image_name, self.image_encoding)
        body = http.StreamedBody(payload, image_value, request.image, prefix=prefix, on_end=request.on_sent)
        started = time.monotonic()
        with http.Deadline(self.timeout_seconds, self.url + self.path) as deadline, reply_folder(request) as folder:
            reply_file = http.spool_name(folder, ".json")
            video = http.spool_name(folder, ".mp4")
            try:
                headers = {"Content-Type": "application/json"}
                response = self._call("POST", self.path, deadline, data=body, headers=headers)
                http.save_body(response, deadline, reply_file)
                self._read_reply(replies.load_json(reply_file), reply_file, video, deadline)
                return video_reply(request, video, time.monotonic() - started)
            except BaseException:
                video.unlink(missing_ok=True)
                raise
            finally:
                reply_file.unlink(missing_ok=True)

    def _read_reply(self, body: Any, reply_file: Path, video: Path, deadline: http.Deadline) -> None:
        if isinstance(body, dict) and body.get("error"):
            error = body["error"]
            message = replies.head(error, 4096) if isinstance(error, replies.BigString) else str(error)
            raise failures.app_error(message)
        data = body.get("data") if isinstance(body, dict) else None
        if not data or not isinstance(data, list):
            raise BadReply(f"server reply has no data: {_excerpt(reply_file)!r}")
        self._save_video(data[0], video, deadline)

    def _call(self, method: str, path: str, deadline: http.Deadline, **kwargs: Any) -> requests.Response:
        target = self.url + path
        response = http.request(self._session, method, target, deadline, self.connect_timeout, **kwargs)
        if response.status_code >= 400:
            text = http.read_all(response, deadline).decode("utf-8", "replace")
            raise failures.status_error(response.status_code, text, f"{method} {target}")
        return response

    def _save_video(self, item: Any, video: Path, deadline: http.Deadline) -> None:
        """Every reply form the contract allows: base64, data URL, path, file dict, [file dict, None]."""
        if isinstance(item, list) and item:
            item = item[0]
        if isinstance(item, dict):
            reference = item.get("path") or item.get("name")
            if item.get("url") and not reference:
                return self._download_url(item["url"], video, deadline)
            if not isinstance(reference, str):
                raise BadReply(f"video file reference without a path: {item!r}"[:BODY_EXCERPT])
            return self._download(reference, video, deadline)
        if not isinstance(item, (str, replies.BigString)) or not item:
            raise BadReply(f"video is not a string or file reference: {item!r}"[:BODY_EXCERPT])
        start = replies.head(item)
        if isinstance(item, str) and (item.startswith("/") or item.startswith("file=")):
            return self._download(item.removeprefix("file="), video, deadline)
        with open(video, "wb") as sink:
            replies.decode_base64(replies.text_chunks(item), sink, skip_prefix=start.startswith("data:"))

    def _download(self, server_path: str, video: Path, deadline: http.Deadline) -> None:
        response = self._call("GET", "/file=" + quote(server_path), deadline)
        if not http.save_body(response, deadline, video):
            raise BadReply(f"server file {server_path} is empty")

    def _download_url(self, url: str, video: Path, deadline: http.Deadline) -> None:
        path = url.removeprefix(self.url) if url.startswith(self.url) else url
        if path.startswith("http"):
            raise BadReply(f"video URL {url} is not on the server {self.url}")
        if not http.save_body(self._call("GET", path, deadline), deadline, video):
            raise BadReply(f"server file {url} is empty")


def _excerpt(path: Path) -> str:
    with open(path, "rb") as source:
        return source.read(BODY_EXCERPT).decode("utf-8", "replace")
