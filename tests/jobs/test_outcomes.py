"""The worker's decisions (outcomes.py), without a journal: which failure uses an attempt, when the next try is."""

from __future__ import annotations

import pytest

from i2vd.config.load import RetryPolicy
from i2vd.jobs.outcomes import (
    Downgrade,
    Failed,
    RetryAfter,
    ServerDown,
    backend_failure,
    job_failure,
    out_of_memory,
)
from i2vd.render.backends.base import (
    BackendError,
    BadInput,
    BadReply,
    CallTimedOut,
    ConnectionDropped,
    LoginRequired,
    NotFound,
    ServerOutOfMemory,
    ServerUnavailable,
)

RETRY = RetryPolicy(attempts=3, initial_backoff_seconds=10, max_backoff_seconds=25)
PARAMS = {"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0}


def test_the_job_s_own_failure_waits_twice_as_long_each_time_then_fails():
    assert job_failure("boom", 0, RETRY) == RetryAfter("boom", 10, 1)
    assert job_failure("boom", 1, RETRY) == RetryAfter("boom", 20, 2)
    assert job_failure("boom", 2, RETRY) == Failed("boom", note="after 3 attempt(s)")


def test_the_backoff_is_capped():
    many = RetryPolicy(attempts=10, initial_backoff_seconds=10, max_backoff_seconds=25)

    assert job_failure("boom", 5, many).wait == 25


@pytest.mark.parametrize(
    "error",
    [
        ServerUnavailable("connection refused"),
        LoginRequired("HTTP 401"),
    ],
)
def test_a_server_that_cannot_take_the_job_uses_no_attempt_even_on_the_last_one(error):
    assert backend_failure(error, "wait", PARAMS, 2, RETRY) == ServerDown(str(error))


@pytest.mark.parametrize(
    "error",
    [
        BackendError("HTTP 500"),
        BadReply("not JSON"),
        CallTimedOut("no result within 900 s"),
        ConnectionDropped("dropped the connection"),
        NotFound("HTTP 404"),
    ],
)
def test_the_job_s_own_failures_use_an_attempt(error):
    assert backend_failure(error, "wait", PARAMS, 0, RETRY) == RetryAfter(str(error), 10, 1)
    assert backend_failure(error, "wait", PARAMS, 2, RETRY) == Failed(str(error), note="after 3 attempt(s)")


def test_bad_input_fails_at_once():
    assert backend_failure(BadInput("cannot read"), "wait", PARAMS, 0, RETRY) == Failed("cannot read")


def test_out_of_memory_follows_server_oom():
    oom = ServerOutOfMemory("CUDA out of memory")

    waiting = backend_failure(oom, "wait", PARAMS, 0, RETRY)
    assert waiting == RetryAfter("out of GPU memory (waiting for VRAM before the next try): CUDA out of memory", 10, 1)
    last = backend_failure(oom, "wait", PARAMS, 2, RETRY)
    assert last == Failed("out of GPU memory: CUDA out of memory", note="after 3 attempt(s)")
    assert backend_failure(oom, "fail", PARAMS, 0, RETRY) == Failed(
        "out of GPU memory: CUDA out of memory", note="(server.oom: fail)"
    )
    assert backend_failure(oom, "downgrade", PARAMS, 0, RETRY) == Downgrade(
        {**PARAMS, "resolution": "256p"}, "out of GPU memory at 512p: stepped down to 256p"
    )


def test_downgrade_at_the_lowest_resolution_waits_like_wait():
    lowest = {**PARAMS, "resolution": "256p"}

    assert out_of_memory("oom", "downgrade", lowest, 0, RETRY) == out_of_memory("oom", "wait", lowest, 0, RETRY)
    assert isinstance(out_of_memory("oom", "downgrade", lowest, 0, RETRY), RetryAfter)
