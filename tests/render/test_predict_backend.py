"""PredictBackend against the fake /predict server over real HTTP on 127.0.0.1.

What goes over the wire (the 7-item data array, both image encodings), every reply
form a real server uses, and how each kind of failure maps to an error class: the
worker handles failures by class, so a wrong class means a wrong retry decision.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from i2vd.render.backends.base import (
    RESOLUTIONS,
    BackendError,
    BadReply,
    ServerOutOfMemory,
    ServerUnavailable,
    VideoRequest,
)
from i2vd.render.backends.predict import PredictBackend
from tests.support.fakes import OOM_MESSAGE, REPLY_FORMS, FakePredictServer, wait_for, write_image


@pytest.fixture
def jpeg(tmp_path: Path) -> bytes:
    return write_image(tmp_path / "beach.jpg")


@pytest.fixture
def backend_factory(fake_server: FakePredictServer):
    made: list[PredictBackend] = []

    def make(**options) -> PredictBackend:
        options.setdefault("timeout_seconds", 10)
        options.setdefault("connect_timeout_seconds", 2)
        backend = PredictBackend(fake_server.url, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def video_request(image: bytes, name: str = "beach.jpg", **changes) -> VideoRequest:
    fields = {
        "prompt": "Waves crashing, camera panning left",
        "resolution": "512p",
        "frames": 16,
        "fps": 8,
        "steps": 50,
        "guidance": 9.0,
    }
    return VideoRequest(image=image, image_name=name, **(fields | changes))


# -- the request -------------------------------------------------------------------


@pytest.mark.parametrize("index, resolution", list(enumerate(RESOLUTIONS)))
def test_request_carries_the_seven_inputs_with_the_resolution_index(
    fake_server, backend_factory, jpeg, index, resolution
):
    assert RESOLUTIONS[index] == resolution and resolution == ("256p", "512p", "768p", "1024p")[index]
    backend = backend_factory()

    backend.generate(
        video_request(
            jpeg, prompt="Sunrise over mountains", resolution=resolution, frames=24, fps=12, steps=60, guidance=7.5
        )
    )

    assert fake_server.rejections == []  # the fake answers 422 to anything but exactly 7 valid inputs
    [received] = fake_server.requests
    assert received.image == jpeg
    assert received.image_encoding == "base64"
    assert received.prompt == "Sunrise over mountains"
    assert received.resolution_index == index
    assert (received.frames, received.fps, received.steps, received.guidance) == (24, 12, 60, 7.5)
    assert received.path == "/api/predict/"


def test_image_is_sent_as_a_data_url_when_configured(fake_server, backend_factory, tmp_path):
    png = write_image(tmp_path / "product.png")
    backend = backend_factory(image_encoding="data_url")

    backend.generate(video_request(png, name="product.png"))

    assert fake_server.rejections == []
    [received] = fake_server.requests
    assert received.image_encoding == "data_url"
    assert received.image == png


def test_configured_path_is_used(fake_server, backend_factory, jpeg):
    backend = backend_factory(path="/run/predict")

    backend.generate(video_request(jpeg))

    assert [received.path for received in fake_server.requests] == ["/run/predict"]


# -- the reply ---------------------------------------------------------------------


@pytest.mark.parametrize("form", REPLY_FORMS)
def test_every_reply_form_gives_the_exact_video_bytes(fake_server, backend_factory, jpeg, mp4_bytes, form):
    fake_server.reply_form = form
    backend = backend_factory()

    reply = backend.generate(video_request(jpeg))

    assert reply.data == mp4_bytes
    assert reply.server_seconds >= 0
    downloads = fake_server.file_downloads
    assert len(downloads) == (1 if form in ("path", "file_dict", "gradio3_list") else 0)


def test_describe_names_the_server(fake_server, backend_factory):
    described = backend_factory().describe()
    assert described["kind"] == "predict"
    assert described["url"] == fake_server.url + "/api/predict/"


# -- failures, by class ------------------------------------------------------------


def test_http_500_is_a_plain_backend_error(fake_server, backend_factory, jpeg):
    fake_server.fail_with(500, "Internal Server Error: something broke")
    with pytest.raises(BackendError) as caught:
        backend_factory().generate(video_request(jpeg))
    assert not isinstance(caught.value, (ServerUnavailable, ServerOutOfMemory, BadReply))
    assert "HTTP 500" in str(caught.value)
    assert "something broke" in str(caught.value)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_mean_the_server_is_unavailable(fake_server, backend_factory, jpeg, status):
    fake_server.fail_with(status, "Bad Gateway")
    with pytest.raises(ServerUnavailable):
        backend_factory().generate(video_request(jpeg))


def test_out_of_memory_body_is_server_out_of_memory(fake_server, backend_factory, jpeg):
    fake_server.reply_oom()
    with pytest.raises(ServerOutOfMemory) as caught:
        backend_factory().generate(video_request(jpeg))
    assert "out of memory" in str(caught.value).lower()


def test_out_of_memory_in_a_200_error_field_is_server_out_of_memory(fake_server, backend_factory, jpeg):
    fake_server.fail_with(200, {"error": OOM_MESSAGE})
    with pytest.raises(ServerOutOfMemory):
        backend_factory().generate(video_request(jpeg))


@pytest.mark.parametrize("body", [None, {}, {"data": None}], ids=["empty-list", "no-data-key", "null-data"])
def test_reply_without_data_is_a_bad_reply(fake_server, backend_factory, jpeg, body):
    fake_server.reply_empty(body=body)
    with pytest.raises(BadReply, match="no data"):
        backend_factory().generate(video_request(jpeg))


def test_empty_video_is_a_bad_reply(fake_server, backend_factory, jpeg):
    fake_server.reply_garbage(data=b"")
    with pytest.raises(BadReply):
        backend_factory().generate(video_request(jpeg))


def test_non_json_reply_is_a_bad_reply(fake_server, backend_factory, jpeg):
    fake_server.fail_with(200, "<html><body>Gradio is starting</body></html>")
    with pytest.raises(BadReply, match="not JSON"):
        backend_factory().generate(video_request(jpeg))


def test_server_down_is_server_unavailable(fake_server, backend_factory, jpeg):
    backend = backend_factory()
    fake_server.go_down()
    with pytest.raises(ServerUnavailable, match="cannot reach"):
        backend.generate(video_request(jpeg))


def test_server_back_up_works_with_the_same_backend(fake_server, backend_factory, jpeg, mp4_bytes):
    backend = backend_factory()
    backend.generate(video_request(jpeg))  # a kept-alive connection now exists
    fake_server.go_down()
    with pytest.raises(ServerUnavailable):
        backend.generate(video_request(jpeg))
    fake_server.come_up()
    assert backend.generate(video_request(jpeg)).data == mp4_bytes


def test_hanging_server_times_out_with_a_backend_error_in_bounded_time(fake_server, backend_factory, jpeg):
    fake_server.hang()
    backend = backend_factory(timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        backend.generate(video_request(jpeg))
    elapsed = time.monotonic() - started
    assert not isinstance(caught.value, ServerUnavailable)  # the server is there: this uses an attempt
    assert "0.5 s" in str(caught.value) and "no result within" in str(caught.value)
    assert elapsed < 5
    assert len(fake_server.requests) == 1


def test_a_server_that_dies_on_the_request_is_the_job_s_failure_not_server_down(fake_server, backend_factory, jpeg):
    """An image that crashes the server must use attempts, or it would be resent each time the server is back."""
    fake_server.hang()
    backend = backend_factory()
    outcome: list[BaseException] = []
    caller = threading.Thread(target=lambda: outcome.append(_raised(lambda: backend.generate(video_request(jpeg)))))
    caller.start()
    wait_for(lambda: fake_server.in_flight == 1, message="the request reached the server")
    fake_server.go_down()  # dies while working on it
    caller.join(timeout=10)
    [error] = outcome
    assert isinstance(error, BackendError) and not isinstance(error, ServerUnavailable)
    assert "dropped the connection while working on this job" in str(error)


def test_a_reply_dropped_halfway_uses_an_attempt(fake_server, backend_factory, jpeg):
    fake_server.drop_mid_reply(times=1)
    with pytest.raises(BackendError, match="dropped the connection") as caught:
        backend_factory().generate(video_request(jpeg))
    assert not isinstance(caught.value, ServerUnavailable)


def test_timeout_bounds_a_reply_that_drips_a_byte_at_a_time(fake_server, backend_factory, jpeg):
    """Every read gets a byte well within the per-read timeout; only a bound on the whole call stops it."""
    fake_server.drip(interval=0.02)
    backend = backend_factory(timeout_seconds=1)
    with pytest.raises(BackendError, match="no result within 1 s") as caught:
        backend.generate(video_request(jpeg))
    assert not isinstance(caught.value, ServerUnavailable)


def test_a_refused_connection_is_still_server_unavailable(fake_server, backend_factory, jpeg):
    backend = backend_factory()
    fake_server.go_down()
    with pytest.raises(ServerUnavailable):
        backend.generate(video_request(jpeg))


@pytest.mark.parametrize("form", ["base64", "data_url"])
def test_a_long_base64_reply_is_decoded_through_a_file_into_the_reply_folder(
    fake_server, backend_factory, jpeg, tmp_path, form
):
    """Above the in-memory size the reply is spooled and decoded in chunks; the video arrives intact, as a file."""
    video = bytes(range(256)) * 4000 + b"tail"  # ~1 MB: far above the 64 KB a reply string may take in memory
    fake_server.video, fake_server.reply_form = video, form
    reply = backend_factory().generate(video_request(jpeg, reply_dir=tmp_path / "incoming"))
    assert reply.data is None and reply.path.parent == tmp_path / "incoming"
    assert reply.path.read_bytes() == video
    assert sorted(path.name for path in (tmp_path / "incoming").iterdir()) == [reply.path.name], "spool files were left"


def _raised(call) -> BaseException | None:
    try:
        call()
    except BaseException as error:  # noqa: BLE001 - returned for the assertion
        return error
    return None


def test_timeout_bounds_an_upload_the_server_never_reads(jpeg):
    """A server that accepts and then reads nothing: the upload blocks once the socket buffers are full."""
    import os
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    release = threading.Event()

    def hold() -> None:
        connection, _ = listener.accept()
        accepted.append(connection)
        release.wait(30)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    backend = PredictBackend(
        f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_seconds=1, connect_timeout_seconds=2
    )
    try:
        started = time.monotonic()
        with pytest.raises(BackendError, match="no result within 1 s") as caught:
            backend.generate(video_request(os.urandom(32 * 1024 * 1024)))  # far more than the socket buffers hold
        assert not isinstance(caught.value, ServerUnavailable)
        assert time.monotonic() - started < 5
    finally:
        release.set()
        holder.join()
        listener.close()
        backend.close()
