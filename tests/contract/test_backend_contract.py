"""What every backend promises the worker: the same tests, each backend behind its server (harnesses.py).

The worker handles a failure by its class alone (base.py, failures.py), so each backend must raise
the same class for the same event:

| event                                        | class                | attempt |
|----------------------------------------------|----------------------|---------|
| a video                                      | (a reply: a file)    |         |
| connection refused                           | ServerUnavailable    | none    |
| the server took the job and died on it       | ConnectionDropped    | one     |
| no result within timeout_seconds             | CallTimedOut         | one     |
| HTTP 502/503/504 (a proxy, a restarting app) | ServerUnavailable    | none    |
| HTTP 401/403                                 | LoginRequired        | none    |
| HTTP 500                                     | BackendError         | one     |
| HTTP 413 for the image                       | BadInput             | failed  |
| the server's out-of-memory message           | ServerOutOfMemory    | server.oom |
| a reply that is not a video reply, or empty  | BadReply             | one     |
| an image the engine cannot read              | BadInput             | failed  |

Whatever the failure, nothing the call received stays in the reply folder. A video that arrives
whole but does not play is found when the worker writes it (output.write_video), the same for all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from i2vd import __version__
from i2vd.config.load import RetryPolicy
from i2vd.jobs.outcomes import Failed, RetryAfter, ServerDown, backend_failure
from i2vd.render import mp4
from i2vd.render.backends.base import (
    BackendError,
    BadInput,
    BadReply,
    CallTimedOut,
    ConnectionDropped,
    LoginRequired,
    ServerOutOfMemory,
    ServerUnavailable,
)
from tests.contract.harnesses import FIELDS, Harness

pytestmark = pytest.mark.filterwarnings("ignore:::gradio")


def fails(harness: Harness, folder: Path, changes: dict, timeout_seconds: float = 20) -> BackendError:
    """The error of one call with `changes`; nothing it received stays in `folder`."""
    backend = harness.backend(timeout_seconds=timeout_seconds)
    with pytest.raises(BackendError) as caught:
        backend.generate(harness.request(folder, **changes))
    assert leftovers(folder) == []
    return caught.value


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def attempt(error: BackendError) -> str:
    """What the worker makes of `error` on a job's first try (outcomes.backend_failure): the table's last column."""
    params = {key: FIELDS[key] for key in ("resolution", "frames", "fps", "steps", "guidance")}
    outcome = backend_failure(error, "wait", params, 0, RetryPolicy(attempts=3))
    return {ServerDown: "none", RetryAfter: "one", Failed: "failed"}[type(outcome)]


def test_a_video_arrives_as_a_playable_file_in_the_reply_folder(harness, tmp_path):
    folder = tmp_path / "incoming"

    reply = harness.backend().generate(harness.request(folder))

    assert reply.data is None and reply.path is not None
    assert sorted(folder.iterdir()) == [reply.path]
    assert mp4.probe(reply.path).frames > 0


def test_without_a_reply_folder_the_video_comes_back_as_bytes(harness, tmp_path):
    reply = harness.backend().generate(harness.request(None))

    assert reply.path is None and reply.data
    (tmp_path / "video.mp4").write_bytes(reply.data)
    assert mp4.probe(tmp_path / "video.mp4").frames > 0


def test_every_request_names_i2vd_and_its_version(harness, tmp_path):
    """A server's access log (or the reverse proxy's before it) tells i2vd's calls from a browser's."""
    harness.backend().generate(harness.request(tmp_path / "incoming"))

    agents = harness.user_agents()
    assert agents and set(agents) == {f"i2vd/{__version__}"}


def test_a_refused_connection_is_server_unavailable_and_the_backend_recovers(harness, tmp_path):
    backend = harness.backend()
    backend.generate(harness.request(tmp_path / "first"))  # discovered, connected: then the server goes
    changes = harness.refuse()

    with pytest.raises(ServerUnavailable) as caught:
        backend.generate(harness.request(tmp_path / "incoming", **changes))

    assert not isinstance(caught.value, LoginRequired) and attempt(caught.value) == "none"
    assert "refused" in str(caught.value)
    assert leftovers(tmp_path / "incoming") == []
    harness.restore()
    assert backend.generate(harness.request(tmp_path / "again")).path is not None


def test_a_server_that_dies_on_the_job_is_the_job_s_failure(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.drop_mid_job())

    assert isinstance(error, ConnectionDropped), repr(error)
    assert attempt(error) == "one"


def test_no_result_within_timeout_seconds_is_the_job_s_failure(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.never_answer(), timeout_seconds=1.5)

    assert isinstance(error, CallTimedOut) and attempt(error) == "one", repr(error)
    assert "no result within 1.5 s" in str(error)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_error_is_server_unavailable(harness, tmp_path, status):
    error = fails(harness, tmp_path / "incoming", harness.answer_status(status))

    assert type(error) is ServerUnavailable and error.status == status, repr(error)
    assert attempt(error) == "none"


@pytest.mark.parametrize("status", [401, 403])
def test_a_login_wanted_is_server_unavailable_for_every_job(harness, tmp_path, status):
    error = fails(harness, tmp_path / "incoming", harness.answer_status(status))

    assert isinstance(error, LoginRequired) and error.status == status, repr(error)
    assert attempt(error) == "none"


def test_http_500_is_the_job_s_failure(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.answer_status(500))

    assert type(error) is BackendError and error.status == 500, repr(error)
    assert attempt(error) == "one"


def test_an_image_too_large_for_the_server_is_bad_input(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.answer_status(413))

    assert isinstance(error, BadInput) and error.status == 413, repr(error)
    assert attempt(error) == "failed"


def test_out_of_memory_is_server_out_of_memory_with_the_server_s_words(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.out_of_memory())

    assert isinstance(error, ServerOutOfMemory), repr(error)
    assert harness.oom_words in str(error)


def test_a_reply_that_is_not_a_video_reply_is_bad_reply(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.not_a_video_reply())

    assert isinstance(error, BadReply) and attempt(error) == "one", repr(error)


def test_an_empty_video_is_bad_reply(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.empty_video())

    assert isinstance(error, BadReply) and attempt(error) == "one", repr(error)


def test_an_image_the_engine_cannot_read_is_bad_input(harness, tmp_path):
    error = fails(harness, tmp_path / "incoming", harness.bad_image())

    assert isinstance(error, BadInput) and attempt(error) == "failed", repr(error)
