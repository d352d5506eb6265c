"""`i2vd check` on the ingest host with `executor: celery`: an image the daemon could not send (above
max_inline_mb, in no path_map folder) is a problem at check time, not only a failed job later."""

from __future__ import annotations

import io
from pathlib import Path

from i2vd.cli.check import run_check
from i2vd.config.load import load_config
from tests.end_to_end.harness import write_config
from tests.support.fakes import write_image
from tests.support.gpu_workers import executor


def test_check_names_an_image_too_large_to_travel_inline_without_a_shared_path(tmp_path: Path):
    settings = executor("redis://127.0.0.1:6379/0", max_inline_mb=0.0001)
    config = load_config(write_config(tmp_path, None, executor=settings))
    write_image(tmp_path / "in" / "large.jpg")
    out = io.StringIO()
    assert run_check(config, None, out) == 1, out.getvalue()
    assert "above executor.max_inline_mb (0.0001)" in out.getvalue()
    assert "is under no folder of executor.path_map" in out.getvalue()


def test_check_takes_a_large_image_under_a_mapped_folder(tmp_path: Path):
    shared = {"max_inline_mb": 0.0001, "path_map": {str(tmp_path): "/mnt/share"}}
    config = load_config(write_config(tmp_path, None, executor=executor("redis://127.0.0.1:6379/0", **shared)))
    write_image(tmp_path / "in" / "large.jpg")
    out = io.StringIO()
    assert run_check(config, None, out) == 0, out.getvalue()
