"""`i2vd worker` and `executor:` at the command line: exit 78 with every problem; celery stays optional."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from i2vd.cli.commands import EX_CONFIG, main

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *arguments: str) -> tuple[int, str]:
    code = main(list(arguments))
    return code, capsys.readouterr().err


def test_run_with_a_bad_celery_executor_exits_78_listing_every_problem(capsys, tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "output_dir: out\nwatch: [{path: in}]\n"
        "executor: {kind: celery, broker: 'redis://h:6379/0', queue: 'a b', path_map: {in: /mnt/in}}\n"
    )
    code, err = run(capsys, "run", "-c", str(config))
    assert code == EX_CONFIG
    assert "2 problem(s)" in err and "executor.queue" in err and "executor.path_map" in err


def test_worker_with_a_bad_config_exits_78_listing_every_problem(capsys, tmp_path: Path):
    config = tmp_path / "gpu-host.yaml"
    config.write_text("state_dir: state\nserver: {kind: predict, timeout_seconds: 0}\nexecutor: {kind: celery}\n")
    code, err = run(capsys, "worker", "-c", str(config))
    assert code == EX_CONFIG
    assert "server.timeout_seconds" in err and "executor.broker: is required" in err


def test_worker_on_a_local_executor_exits_78_saying_what_it_needs(capsys, tmp_path: Path):
    config = tmp_path / "gpu-host.yaml"
    config.write_text("state_dir: state\nserver: {kind: builtin}\n")
    code, err = run(capsys, "worker", "-c", str(config))
    assert code == EX_CONFIG and "set executor.kind: celery" in err


WITHOUT_CELERY = """
import sys
sys.modules["celery"] = None  # as if `pip install i2vd` without the celery extra
from i2vd.cli.commands import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_celery_config_without_celery_installed_stops_start_up_with_the_fix(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("output_dir: out\nwatch: [{path: in}]\nexecutor: {kind: celery, broker: 'redis://h:6379/0'}\n")
    for command in ("run", "worker"):
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_CELERY, command, "-c", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == EX_CONFIG, result.stderr
        assert "executor.kind: celery is not installed here: pip install 'i2vd[celery]'" in result.stderr


LOCAL_DAEMON = """
import json, sys
from pathlib import Path
from i2vd.config.load import load_config
from i2vd.service.daemon import Daemon
daemon = Daemon(load_config(Path(sys.argv[1])))
daemon.start()
daemon.shutdown(0)
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("celery", "kombu", "redis"))))
"""


def test_a_local_daemon_never_imports_celery(tmp_path: Path):
    config = tmp_path / "config.yaml"
    (tmp_path / "in").mkdir()
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\noutput_dir: {tmp_path / 'out'}\nwatch: [{{path: {tmp_path / 'in'}}}]\n"
        "server: {kind: builtin}\ngpu: {enabled: false}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", LOCAL_DAEMON, str(config)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
