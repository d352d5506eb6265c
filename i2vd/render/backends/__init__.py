"""Backends behind one interface (see base.py); `make_backend` picks one from the config."""

from __future__ import annotations

from pathlib import Path

from i2vd.config.load import ServerConfig
from i2vd.render.backends.base import Backend


def make_backend(server: ServerConfig, state_dir: Path | None = None) -> Backend:
    if server.kind == "builtin":
        from i2vd.render.backends.builtin import BuiltinBackend

        return BuiltinBackend()
    if server.kind == "predict":
        from i2vd.render.backends.predict import PredictBackend

        return PredictBackend(
            server.url,
            server.path,
            timeout_seconds=server.timeout_seconds,
            connect_timeout_seconds=server.connect_timeout_seconds,
            image_encoding=server.image_encoding,
        )
    if server.kind == "gradio":
        from i2vd.render.backends.gradio import GradioBackend

        return GradioBackend(
            server.url,
            api_name=server.api_name,
            inputs=server.inputs,
            timeout_seconds=server.timeout_seconds,
            connect_timeout_seconds=server.connect_timeout_seconds,
            transport=server.transport,
        )
    if server.kind == "comfyui":
        from i2vd.render.backends.comfyui import ComfyUIBackend

        return ComfyUIBackend(
            server.url,
            Path(server.workflow),
            timeout_seconds=server.timeout_seconds,
            connect_timeout_seconds=server.connect_timeout_seconds,
            free_after_job=server.free_after_job,
            state_dir=state_dir,
        )
    raise ValueError(f"unknown server kind {server.kind!r}")
