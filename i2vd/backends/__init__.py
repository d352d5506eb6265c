"""Backends behind one interface (see base.py); `make_backend` picks one from the config."""

from __future__ import annotations

from i2vd.backends.base import Backend
from i2vd.config import ServerConfig


def make_backend(server: ServerConfig) -> Backend:
    if server.kind == "builtin":
        from i2vd.backends.builtin import BuiltinBackend

        return BuiltinBackend()
    if server.kind == "predict":
        from i2vd.backends.predict import PredictBackend

        return PredictBackend(
            server.url,
            server.path,
            timeout_seconds=server.timeout_seconds,
            connect_timeout_seconds=server.connect_timeout_seconds,
            image_encoding=server.image_encoding,
        )
    if server.kind == "gradio":
        from i2vd.backends.gradio import GradioBackend

        return GradioBackend(
            server.url,
            api_name=server.api_name,
            inputs=server.inputs,
            timeout_seconds=server.timeout_seconds,
            connect_timeout_seconds=server.connect_timeout_seconds,
            transport=server.transport,
        )
    raise ValueError(f"unknown server kind {server.kind!r}")
