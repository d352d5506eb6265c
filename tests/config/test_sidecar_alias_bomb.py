"""A sidecar is untrusted: YAML aliases can make a few lines mean billions of values.

Seen trying it: a 10-line `vars:` alias bomb (9**9 "lol"s) in one folder's i2vd.yaml took the daemon
past 3.5 GB of RAM and stopped the intake of every folder; the size was measured only after pydantic
had copied the expanded value.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from i2vd.config.sidecars import SidecarError, load_sidecar

LEVELS = "abcdefg"  # 9**7 values once expanded: small enough not to hurt a machine before the fix


def _bomb(path: Path) -> Path:
    lines = ["vars:", '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip(LEVELS, LEVELS[1:]):
        lines.append(f"  {name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path):
    sidecar = _bomb(tmp_path / "i2vd.yaml")
    tracemalloc.start()
    try:
        with pytest.raises(SidecarError) as raised:
            load_sidecar(sidecar, ["default"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "65,536" in str(raised.value) or "at most" in str(raised.value), str(raised.value)
    assert peak < 8 * 1024 * 1024, f"{peak / 1e6:.0f} MB allocated to refuse a {sidecar.stat().st_size}-byte sidecar"


def test_a_sidecar_with_shared_small_values_still_loads(tmp_path: Path):
    sidecar = tmp_path / "i2vd.yaml"
    sidecar.write_text("vars:\n  mood: &m calm\n  again: *m\nprofile: default\n", encoding="utf-8")
    assert load_sidecar(sidecar, ["default"]) == {"vars": {"mood": "calm", "again": "calm"}, "profile": "default"}
