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

from i2vd.cli.commands import EX_CONFIG, main
from i2vd.config import load as config_module
from i2vd.store.journal import Journal
from tests.cli.test_cli import write_config

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
def test_a_command_without_c_and_no_default_config_says_what_was_tried_and_what_to_do(
    capsys, no_default_config, command
):
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
    assert (
        f"{tmp_path / 'typo.yaml'}: 1 problem(s):\n  cannot read: No such file or directory" in capsys.readouterr().err
    )


def test_i2vd_config_is_used_when_c_is_not_given(capsys, no_default_config, tmp_path, monkeypatch):
    monkeypatch.setenv("I2VD_CONFIG", str(write_config(tmp_path)))
    assert main(["check"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


# -- output to a closed pipe ------------------------------------------------------------------


@pytest.fixture
def many_jobs(tmp_path: Path) -> Path:
    """A config whose journal holds enough jobs that `i2vd jobs` writes more than a pipe holds."""
    from i2vd.config.load import load_config
    from i2vd.service.daemon import journal_path
    from tests.cli.test_cli import new_job

    config_file = write_config(tmp_path)
    journal = Journal(journal_path(load_config(config_file)))
    try:
        journal.add_jobs([(new_job(f"folder/image_{index:05}.jpg"), None) for index in range(3000)])
    finally:
        journal.close()
    return config_file


def run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """The command as a real process whose stdout is a pipe nobody reads any more (what `| head` leaves)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*I2VD, *argv], stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["jobs"], ["jobs", "--json"], ["check"]])
def test_every_command_ends_quietly_on_a_closed_pipe(many_jobs, argv):
    finished = run_into_closed_pipe([*argv, "-c", str(many_jobs)])
    assert "Traceback" not in finished.stderr and "BrokenPipeError" not in finished.stderr, finished.stderr
    assert finished.stderr == ""
    assert finished.returncode == 141  # 128 + SIGPIPE: what a shell reports for `yes | head`


def test_status_and_jobs_piped_into_head(many_jobs):
    for command in ("status", "jobs"):
        shell = f"{' '.join(I2VD)} {command} -c {many_jobs} | head -1; exit ${{PIPESTATUS[0]}}"
        finished = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert finished.stdout.count("\n") == 1
        assert "Traceback" not in finished.stderr and "BrokenPipeError" not in finished.stderr, finished.stderr
        assert finished.returncode in (0, 141)  # 0 when the whole output fitted in the pipe before head closed it


def test_probe_of_a_url_needs_no_config(capsys, no_default_config):
    assert main(["probe", "http://127.0.0.1:9", "--timeout", "2"]) != EX_CONFIG
    assert "no config file found" not in capsys.readouterr().err
