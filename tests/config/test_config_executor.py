"""`executor:` in the config (i2vd/config/executor.py) and a GPU host's config (i2vd/config/worker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from i2vd.config.executor import safe_url
from i2vd.config.load import ConfigError, parse_config
from i2vd.config.worker import parse_worker_config

INGEST = "output_dir: out\nwatch: [{path: in}]\n"


def problems(text: str, parse=parse_config) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(text, base_dir=Path("/tmp"))
    return raised.value.problems


def test_the_default_executor_is_local_and_needs_nothing_more():
    config = parse_config(INGEST, base_dir=Path("/tmp"))
    assert config.executor.kind == "local" and config.executor.broker is None


def test_a_celery_executor_is_read_with_its_settings():
    config = parse_config(
        INGEST + "executor: {kind: celery, broker: 'redis://:secret@queue-host:6379/0', queue: studio, "
        "concurrency: 4, path_map: {/srv/i2v/in/: /mnt/i2v/in}}\n",
        base_dir=Path("/tmp"),
    )
    executor = config.executor
    assert (executor.kind, executor.queue, executor.concurrency) == ("celery", "studio", 4)
    assert executor.path_map == {"/srv/i2v/in": "/mnt/i2v/in"}
    assert safe_url(executor.broker) == "redis://:***@queue-host:6379/0"


def test_every_executor_problem_is_listed_at_once():
    found = problems(
        INGEST + "executor: {kind: celery, queue: 'two words', concurrency: 0, path_map: {relative: /mnt, /srv: 3}}\n"
    )
    assert "executor.queue: 'two words' is not a queue name (no spaces)" in found
    assert any(problem.startswith("executor.concurrency:") for problem in found)
    assert any("executor.path_map: 'relative': the key 'relative' is not an absolute folder" in p for p in found)
    assert any("'/srv': the value 3 is not an absolute folder" in problem for problem in found)
    assert len(found) == 3  # the broker's absence is said once the rest of executor is valid
    assert problems(INGEST + "executor: {kind: celery}\n") == [
        "executor.broker: is required when executor.kind is celery (e.g. redis://queue-host:6379/0)"
    ]
    assert problems(INGEST + "executor: {kind: celery, broker: 'http://queue-host'}\n") == [
        "executor.broker: 'http://queue-host' is not a Redis URL (redis://host:6379/0 or rediss://...)"
    ]


def test_a_gpu_hosts_config_needs_no_watch_output_dir_or_profiles():
    config = parse_worker_config(
        "state_dir: state\nservers: [{name: gpu0, kind: predict, url: 'http://127.0.0.1:7860', gpu: {index: 0}},"
        " {name: gpu1, kind: predict, url: 'http://127.0.0.1:7861', gpu: {index: 1}}]\n"
        "executor: {kind: celery, broker: 'redis://queue-host:6379/0'}\n",
        base_dir=Path("/srv"),
    )
    assert config.state_dir == Path("/srv/state")
    assert [entry.name for entry in config.servers] == ["gpu0", "gpu1"]
    assert [entry.gpu.index for entry in config.servers] == [0, 1]
    with pytest.raises(ConfigError):  # while `i2vd run` still needs them
        parse_config("state_dir: state\nexecutor: {kind: celery, broker: 'redis://h:6379/0'}\n")


def test_a_gpu_hosts_config_problems_are_listed_at_once():
    found = problems("executor: {kind: local}\nserver: {kind: predikt}\n", parse_worker_config)
    assert any(problem.startswith("server.kind:") for problem in found)
    found = problems("executor: {kind: local}\nserver: {kind: predict, timeout_seconds: 100}\n", parse_worker_config)
    assert found == [
        "executor.kind: `i2vd worker` takes jobs from a Celery queue: set executor.kind: celery and "
        "executor.broker (the ingest host's broker)"
    ]
    found = problems(
        "executor: {kind: celery, broker: 'redis://h:6379/0', job_timeout_seconds: 50}\n"
        "servers: [{name: a, timeout_seconds: 100}, {name: b, timeout_seconds: 10}]\n",
        parse_worker_config,
    )
    assert found == [
        "servers[0].timeout_seconds: 100 is above executor.job_timeout_seconds 50: a job that long would be "
        "delivered to a second worker while it runs"
    ]


def test_a_spool_dir_must_be_one_the_gpu_hosts_can_find():
    assert problems(
        INGEST + "executor: {kind: celery, broker: 'redis://h:6379/0', spool_dir: /srv/spool, "
        "path_map: {/srv/in: /mnt/in}}\n"
    ) == ["executor.spool_dir: /srv/spool is under no folder of executor.path_map"]
    assert problems(INGEST + "executor: {kind: celery, broker: 'redis://h:6379/0', spool_dir: spool}\n") == [
        "executor.spool_dir: 'spool' is not an absolute folder"
    ]
    config = parse_config(
        INGEST + "executor: {kind: celery, broker: 'redis://h:6379/0', spool_dir: /srv/i2v/spool/, "
        "path_map: {/srv/i2v: /mnt/i2v}}\n",
        base_dir=Path("/tmp"),
    )
    assert config.executor.spool_dir == "/srv/i2v/spool"
