"""The intake's process pool (i2vd/ingest/examine_pool.py) lives and dies with the daemon, kill -9 included."""

from __future__ import annotations

from pathlib import Path

from tests.end_to_end.harness import journal_counts, write_config
from tests.support.fakes import wait_for, write_image


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"  # gone meanwhile


def test_the_pool_processes_end_when_the_daemon_is_killed_or_stopped(tmp_path, daemon_factory):
    config = write_config(tmp_path, None)  # the builtin engine: nothing is sent anywhere
    for index in range(40):  # a burst: read, hashed and decoded in the pool
        write_image(tmp_path / "in" / f"img_{index:02}.png", color=(index, 3 * index % 256, 90))
    first = daemon_factory(config).start()
    wait_for(lambda: children(first.process.pid), timeout=30, message=f"no pool process; log:\n{first.log()}")
    pool = children(first.process.pid)
    first.kill()
    wait_for(lambda: not alive(pool), timeout=30, message=f"pool processes outlived the killed daemon: {alive(pool)}")

    second = daemon_factory(config).start()  # the restart journals the rest, and its pool ends with SIGTERM
    wait_for(lambda: sum(journal_counts(tmp_path / "state").values()) >= 40, timeout=60, message=second.log())
    pool = children(second.process.pid)
    assert second.stop() == 0
    wait_for(lambda: not alive(pool), timeout=30, message=f"pool processes outlived the daemon: {alive(pool)}")
