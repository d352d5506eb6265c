"""What `i2vd demo` tells a newcomer to type next must run as typed, from where they stand."""

from __future__ import annotations

import sys

from i2vd.cli.demo import next_steps


def test_next_steps_name_the_program_that_ran_when_it_is_not_on_path(tmp_path, monkeypatch):
    """`make demo` runs .venv/bin/i2vd, which is not on PATH: a bare `i2vd run` would be 'command not found'."""
    program = tmp_path / ".venv" / "bin" / "i2vd"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(program), "demo", "--dir", "demo-out"])
    monkeypatch.setenv("PATH", "/nonexistent")
    steps = next_steps(tmp_path / "demo-out")
    assert ".venv/bin/i2vd run -c demo-out/config.yaml" in steps
    assert ".venv/bin/i2vd status -c demo-out/config.yaml" in steps


def test_next_steps_say_i2vd_when_it_is_on_path(tmp_path, monkeypatch):
    program = tmp_path / "bin" / "i2vd"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(program), "demo"])
    monkeypatch.setenv("PATH", str(program.parent))
    steps = next_steps(tmp_path / "demo-out")
    assert "\n  i2vd run -c demo-out/config.yaml" in steps
