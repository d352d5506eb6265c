"""What every `i2vd` command does the same way: find its config, end quietly on a closed pipe, log with a time.

In-process through `main([...])` where that is exact, and as a real process where the
behaviour is the process's (a pipe closed by `head`, stderr that is or is not the journal).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from i2vd import config as config_module
from i2vd.cli import EX_CONFIG, main
from i2vd.journal import Journal, NewJob
from tests.integration.test_cli import write_config

REPO = Path(__file__).resolve().parents[2]
I2VD = [sys.executable, "-m", "i2vd"]


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# -- finding the config ------------------------------------------------------------------------


@pytest.fixture
def no_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    default = tmp_path / "etc" / "i2vd" / "config.yaml"
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", default)
    monkeypatch.delenv("I2VD_CONFIG", raising=False)
    return default


@pytest.mark.parametrize("command", [["status"], ["jobs"], ["check"], ["run"], ["retry", "--failed"], ["probe"]])
def test_a_command_without_c_and_no_default_config_says_what_was_tried_and_what_to_do(capsys, no_default_config, command):
    assert main(command) == EX_CONFIG
    err = capsys.readouterr().err
    assert "no config file found" in err
    assert "-c (not given)" in err and "$I2VD_CONFIG (not set)" in err and f"{no_default_config} (no such file)" in err
    assert f"i2vd {command[0]} -c demo-out/config.yaml" in err and "make demo" in err
    assert "Traceback" not in err


def test_a_missing_file_named_by_i2vd_config_is_named(capsys, no_default_config, tmp_path, monkeypatch):
    monkeypatch.setenv("I2VD_CONFIG", str(tmp_path / "gone.yaml"))
    assert main(["status"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"$I2VD_CONFIG={tmp_path / 'gone.yaml'} (no such file)" in err and "-c (not given)" in err


def test_a_missing_file_given_with_c_is_named(capsys, no_default_config, tmp_path):
    assert main(["status", "-c", str(tmp_path / "typo.yaml")]) == EX_CONFIG
    assert f"{tmp_path / 'typo.yaml'}: 1 problem(s):\n  cannot read: No such file or directory" in capsys.readouterr().err


def test_i2vd_config_is_used_when_c_is_not_given(capsys, no_default_config, tmp_path, monkeypatch):
    monkeypatch.setenv("I2VD_CONFIG", str(write_config(tmp_path)))
    assert main(["check"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
