"""ComfyUI's replies read for i2vd, and where in-flight prompt ids are kept (comfyui.py does the calls).

`rejection` turns an HTTP 400 from `/prompt` into one line with each node, its class and what is
wrong; `execution_failure` and `history_failure` sort an `execution_error` (from the websocket, or
from `/history` after a restart) into the error classes the worker acts on; `videos` finds the
files a node reported (SaveVideo: `images` with `animated: [true]`; VHS_VideoCombine: `gifs`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from i2vd.render.backends.base import BackendError, BadReply, ServerOutOfMemory, ServerUnavailable
from i2vd.render.backends.failures import BODY_EXCERPT, looks_out_of_memory

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp", ".avi")
CPU_OUT_OF_MEMORY = ("can't allocate memory", "not enough memory")  # torch's DefaultCPUAllocator


class WorkflowRejected(ServerUnavailable):
    """ComfyUI refused the workflow (HTTP 400): the operator must fix it; no attempt is used meanwhile."""


class PromptStore:
    """In-flight prompt ids by idempotency key: files under `<state_dir>/comfyui/`, written before sending."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._memory: dict[str, dict] = {}  # without a state_dir (probe, tests): this process only

    def _path(self, key: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:200] + ".json")

    def get(self, key: str | None) -> dict | None:
        if key is None:
            return None
        if self.folder is None:
            return self._memory.get(key)
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("prompt_id"), str) else None

    def put(self, key: str | None, record: dict) -> None:
        if key is None:
            return
        if self.folder is None:
            self._memory[key] = record
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)

    def drop(self, key: str | None) -> None:
        if key is None:
            return
        self._memory.pop(key, None)
        if self.folder is not None:
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                pass


def videos(node_output: Any) -> list[dict]:
    """The video files one node reported: SaveVideo's `images` with `animated: [true]`, VHS's `gifs`, or `videos`."""
    if not isinstance(node_output, dict):
        return []
    files = [item for name in ("gifs", "videos") for item in node_output.get(name) or []]
    animated = any(node_output.get("animated") or [])
    files += [
        item
        for item in node_output.get("images") or []
        if animated or str((item or {}).get("filename", "")).lower().endswith(VIDEO_SUFFIXES)
    ]
    return [item for item in files if isinstance(item, dict) and isinstance(item.get("filename"), str)]


def pick_video(outputs: dict, wanted: tuple[str, ...], prompt_id: str) -> dict:
    """The one video file of the prompt: the I2VD:output node's, else the only node's that made one."""
    found = {node: files for node, value in outputs.items() if (files := videos(value))}
    if wanted:
        found = {node: files for node, files in found.items() if node in wanted}
    if not found:
        where = "the I2VD:output node" if wanted else "any node"
        raise BadReply(f"prompt {prompt_id} finished but {where} produced no video (outputs: {sorted(outputs)})")
    if len(found) > 1:
        nodes = ", ".join(sorted(found))
        raise BadReply(f"prompt {prompt_id}: nodes {nodes} each produced a video; title the one to keep I2VD:output")
    return next(iter(found.values()))[0]


def rejection(reply: Any) -> str:
    """A 400 reply to /prompt in a line: each node, its class and what is wrong with which input."""
    if not isinstance(reply, dict):
        return repr(reply)[:BODY_EXCERPT]
    error = reply.get("error") or {}
    parts = []
    for node_id, problem in (reply.get("node_errors") or {}).items():
        for item in (problem or {}).get("errors") or []:
            details = item.get("details") or item.get("message")
            parts.append(f"node {node_id} ({problem.get('class_type')}): {item.get('message')}: {details}")
    if not parts:
        details = error.get("details") if isinstance(error, dict) else None
        message = error.get("message", error) if isinstance(error, dict) else error
        parts.append(f"{message}: {details}" if details else str(message))
    return "; ".join(parts)


def execution_failure(data: dict) -> BackendError:
    """An `execution_error` message (or history message) as the error class the worker acts on."""
    text = f"{data.get('exception_type', '')}: {data.get('exception_message', '')}".strip()
    message = (
        f"node {data.get('node_id')} ({data.get('node_type')}) failed: {text.splitlines()[0] if text else 'no message'}"
    )
    if looks_out_of_memory(text) or any(mark in text.lower() for mark in CPU_OUT_OF_MEMORY):
        return ServerOutOfMemory(message)
    if (
        data.get("exception_type") == "FileNotFoundError"
    ):  # a loader's model is not installed (0.3.64: io-schema loaders)
        return WorkflowRejected(f"ComfyUI cannot run the workflow: {message}")
    return BackendError(message)


def history_failure(status: dict, prompt_id: str) -> BackendError:
    for name, data in status.get("messages") or []:
        if name == "execution_error" and isinstance(data, dict):
            return execution_failure(data)
        if name == "execution_interrupted" and isinstance(data, dict):
            return BackendError(
                f"ComfyUI interrupted the prompt at node {data.get('node_id')} ({data.get('node_type')})"
            )
    return BackendError(f"prompt {prompt_id} ended with status {status.get('status_str')!r}")
