"""`i2vd status` and `i2vd jobs` end as soon as their output is out: no interpreter teardown.

Tearing down the interpreter after `status` (some 400 modules, the config models, pydantic's schemas) took ~30 ms
of CPU, an eighth of the whole command, to free memory the kernel frees anyway. The other commands (the daemon
above all, whose children and threads are joined at exit) still end the ordinary way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from i2vd.store.journal import Journal
from tests.cli.test_cli import write_config

REPO = Path(__file__).resolve().parents[2]
TORN_DOWN = "interpreter torn down"
# `python -m i2vd ...`, with an exit handler that says whether the interpreter was torn down
PROGRAM = f"""
import atexit, runpy, sys
atexit.register(lambda: print({TORN_DOWN!r}, file=sys.stderr))
sys.argv = ["i2vd", *sys.argv[1:]]
runpy.run_module("i2vd", run_name="__main__", alter_sys=True)
"""


def run_i2vd(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    from i2vd.config.load import load_config
    from i2vd.store.journal import journal_path

    Journal(journal_path(load_config(config))).close()
    return config


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["jobs"], ["jobs", "--json"]])
def test_status_and_jobs_print_everything_and_end_without_teardown(config_file, command):
    finished = run_i2vd(*command, "-c", str(config_file))
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == ""  # nor the exit handler's line: the process ended at once
    if command == ["jobs", "--json"]:  # all of it, not cut short: it parses
        assert json.loads(finished.stdout) == []
    elif command == ["status", "--json"]:
        assert "counts" in json.loads(finished.stdout)
    elif command == ["status"]:
        assert "jobs:" in finished.stdout
    assert finished.stdout.endswith("\n")


def test_a_config_error_is_reported_in_full_and_its_code_kept(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("servr: {}\n")
    finished = run_i2vd("status", "-c", str(bad))
    assert finished.returncode == 78
    assert finished.stderr.startswith(f"{bad}: ") and "servr: unknown key (did you mean 'server'?)" in finished.stderr
    assert TORN_DOWN not in finished.stderr


def test_the_other_commands_end_the_ordinary_way(config_file):
    finished = run_i2vd("check", "-c", str(config_file))
    assert finished.returncode == 0, finished.stderr
    assert "0 problem(s)" in finished.stdout
    assert finished.stderr.strip() == TORN_DOWN
