"""How a Gradio reply's video output becomes the video file: a data URL, a file reference or a URL on the server
(a mixin of GradioBackend, which gives it `_http` and `url`)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from i2vd.render.backends import http, replies
from i2vd.render.backends.base import (
    BadReply,
)
from i2vd.render.backends.failures import BODY_EXCERPT
from i2vd.render.backends.gradio_wire import (
    Target,
    save_data_url,
    whole,
)


class GradioVideo:
    def _video(self, target: Target, outputs: list, deadline: float, video: Path) -> None:
        slot = target.mapping.endpoint.video_slot
        if slot is None or slot >= len(outputs):
            raise BadReply(f"the app returned {len(outputs)} output(s), no video at position {slot}")
        item = outputs[slot]
        if isinstance(item, dict) and "video" in item and not ("path" in item or "name" in item):
            item = item["video"]  # 4.x VideoData: {"video": FileData, "subtitles": ...}
        if isinstance(item, list):  # 3.x: [video, subtitles]
            item = item[0] if item else None
        if item is None or item == "":
            raise BadReply(f"the app returned no video ({target.mapping.endpoint.title} output {slot} is empty)")
        if isinstance(item, replies.BigString):  # a long string in a 3.x /run reply: only a data URL is that long
            return save_data_url(item, video)
        if isinstance(item, dict):
            inline = item.get("data")
            if isinstance(inline, (str, replies.BigString)) and replies.head(inline).startswith("data:"):
                return save_data_url(inline, video)
            reference = item.get("path") or item.get("name")
            if isinstance(reference, str) and reference:
                return self._download(target, reference, deadline, video)
            if isinstance(item.get("url"), str):
                return self._download_url(item["url"], deadline, video)
            raise BadReply(f"video file reference without a path: {json.dumps(item)[:BODY_EXCERPT]}")
        if not isinstance(item, str):
            raise BadReply(f"video is not a file reference: {item!r}"[:BODY_EXCERPT])
        if item.startswith("data:"):
            return save_data_url(item, video)
        if item.startswith(("http://", "https://")):
            return self._download_url(item, deadline, video)
        return self._download(target, item.removeprefix("file="), deadline, video)

    def _download(self, target: Target, server_path: str, deadline: float, video: Path) -> None:
        """GET /file=<path> streamed into `video`: the video is never whole in memory."""
        response = self._http("GET", f"{target.app.api_prefix}/file={quote(server_path)}", deadline, stream=True)
        if not http.save_body(response, whole(), video):
            raise BadReply(f"server file {server_path} is empty")

    def _download_url(self, url: str, deadline: float, video: Path) -> None:
        if not url.startswith(self.url + "/"):
            raise BadReply(f"video URL {url} is not on the server {self.url}")
        response = self._http("GET", url.removeprefix(self.url), deadline, stream=True)
        if not http.save_body(response, whole(), video):
            raise BadReply(f"video at {url} is empty")
