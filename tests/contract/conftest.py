"""The `harness` fixture: every contract test runs once per backend of harnesses.HARNESSES."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.harnesses import HARNESSES, Gradio6Harness, Harness
from tests.support.fakes import write_image


@pytest.fixture(scope="module")
def real_gradio_apps(request: pytest.FixtureRequest) -> Any:
    """The session's real Gradio apps when a selected test runs against them (started before any test's
    thread count, like every session fixture), else None: a run of the other backends starts no Gradio."""
    wanted = any(f"[{Gradio6Harness.name}" in item.nodeid for item in request.session.items)
    return request.getfixturevalue("apps") if wanted else None


@pytest.fixture(params=HARNESSES, ids=[harness.name for harness in HARNESSES])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, mp4_bytes: bytes, real_gradio_apps: Any
) -> Iterator[Harness]:
    image = write_image(tmp_path / "shore.png", size=(96, 64), color=(40, 110, 190))
    made = request.param(image, mp4_bytes, real_gradio_apps)
    made.start()
    try:
        yield made
    finally:
        made.close()
