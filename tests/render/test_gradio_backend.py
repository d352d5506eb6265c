"""GradioBackend and probe() against real Gradio apps (this venv's gradio, 5.x/6.x) and a fake 3.x app.

The real apps run in this process on 127.0.0.1, started once per session (tests/support/gradio_apps.py)
and warmed up there, so that the threads Gradio makes lazily exist before any test counts threads.
They record what they were called with: the tests check what arrived, not what was sent. Gradio
3.x cannot be installed beside 6, so its protocols (HTTP /run, the websocket queue) are checked
against FakeGradio3, which mirrors a real Gradio 3.50.2 app of the 7-input shape (its replies are
recordings: tests/fixtures/gradio/predict7-3.50). Replays of real public apps on 3.20, 3.39, 3.50
and 4.36 are in test_gradio_recorded.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from i2vd.render.backends.base import (
    BackendError,
    BadReply,
    ServerOutOfMemory,
    ServerUnavailable,
    VideoRequest,
)
from i2vd.render.backends.gradio import GradioBackend
from i2vd.render.backends.gradio_app import AppMismatch, Parameter
from i2vd.render.backends.gradio_mapping import resolution_value
from i2vd.render.backends.gradio_probe import probe
from i2vd.render.backends.http import CallTimedOut, ConnectionDropped
from tests.support.fakes import make_test_mp4, wait_for, write_image
from tests.support.gradio_apps import SVD_INPUTS, TRANSPORTS, FakeGradio3, _Handler3, free_port

pytestmark = pytest.mark.filterwarnings("ignore:::gradio")  # Gradio's own pandas deprecations


@pytest.fixture
def jpeg(tmp_path: Path) -> bytes:
    return write_image(tmp_path / "beach.jpg", color=(30, 120, 200))


@pytest.fixture
def make_backend():
    made: list[GradioBackend] = []

    def make(url: str, **options) -> GradioBackend:
        options.setdefault("timeout_seconds", 20)
        options.setdefault("connect_timeout_seconds", 2)
        backend = GradioBackend(url, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def mp4(tmp_path: Path) -> bytes:
    return make_test_mp4(tmp_path / "fake.mp4", frames=4)


def request(image: bytes, **changes) -> VideoRequest:
    fields = {
        "image_name": "beach.jpg",
        "prompt": "Waves crashing, camera panning left",
        "resolution": "512p",
        "frames": 16,
        "fps": 8,
        "steps": 50,
        "guidance": 9.0,
    }
    return VideoRequest(image=image, **(fields | changes))


# -- a real Gradio app: detection, endpoint, mapping ------------------------------------------


def test_detects_version_protocol_and_api_prefix(apps, make_backend):
    backend = make_backend(apps.predict_url)

    described = backend.describe()  # discovery happens here, lazily

    assert described == {
        "kind": "gradio",
        "url": apps.predict_url,
        "version": apps.version,
        "protocol": described["protocol"],
        "api_name": "/generate",
    }
    assert described["protocol"].startswith("sse")
    report = probe(apps.predict_url)
    assert report.api_prefix == ("/gradio_api" if int(apps.version.split(".")[0]) >= 5 else "")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_app_receives_exactly_what_i2vd_sends(apps, make_backend, jpeg, transport):
    backend = make_backend(apps.predict_url, transport=transport)

    reply = backend.generate(
        request(
            jpeg,
            prompt="Sunrise over mountains, time-lapse",
            resolution="768p",
            frames=24,
            fps=12,
            steps=60,
            guidance=7.5,
        )
    )

    assert reply.data == apps.video
    assert reply.server_seconds > 0
    call = apps.calls.last("predict")
    assert call["image_sha256"] == hashlib.sha256(jpeg).hexdigest()
    assert (call["prompt"], call["resolution"], call["frames"], call["fps"], call["steps"], call["guidance"]) == (
        "Sunrise over mountains, time-lapse",
        "768p",
        24,
        12,
        60,
        7.5,
    )


def test_svd_app_with_a_configured_mapping_and_a_constant(apps, make_backend, jpeg):
    backend = make_backend(apps.svd_url, inputs=SVD_INPUTS)

    reply = backend.generate(request(jpeg, fps=12, seed=7))

    assert reply.data == apps.video
    call = apps.calls.last("svd")
    assert call["image_sha256"] == hashlib.sha256(jpeg).hexdigest()
    assert (call["seed"], call["motion_bucket_id"], call["fps_id"]) == (7, 127, 12)
    assert call["randomize_seed"] is True  # unmapped, so the app's own default


def test_svd_app_without_a_mapping_names_the_parameter_to_map(apps, make_backend, jpeg):
    backend = make_backend(apps.svd_url)

    with pytest.raises(AppMismatch, match="motion_bucket_id") as caught:
        backend.generate(request(jpeg))

    assert isinstance(caught.value, ServerUnavailable)  # the queue pauses; no job uses an attempt
    assert "server.inputs" in str(caught.value)


# -- a real Gradio app: failures ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_out_of_memory_raised_by_the_app_is_server_out_of_memory(apps, make_backend, jpeg, transport):
    backend = make_backend(apps.predict_url, transport=transport)

    with pytest.raises(ServerOutOfMemory, match="CUDA out of memory"):
        backend.generate(request(jpeg, prompt="!fail CUDA out of memory. Tried to allocate 2.00 GiB"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_app_error_is_a_backend_error_with_the_apps_message(apps, make_backend, jpeg, transport):
    backend = make_backend(apps.predict_url, transport=transport)

    with pytest.raises(BackendError) as caught:
        backend.generate(request(jpeg, prompt="!fail bad"))

    assert type(caught.value) is BackendError
    assert str(caught.value) == "the app failed: bad"


def test_an_app_returning_nothing_is_a_bad_reply(apps, make_backend, jpeg):
    backend = make_backend(apps.predict_url)

    with pytest.raises(BadReply, match="no video"):
        backend.generate(request(jpeg, prompt="!none"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_slow_job_times_out_and_is_cancelled_on_the_server(apps, make_backend, jpeg, transport):
    messages: list[str] = []
    backend = make_backend(apps.predict_url, transport=transport, timeout_seconds=1.5, on_progress=messages.append)
    started = time.monotonic()

    with pytest.raises(BackendError, match=r"no result within 1.5 s") as caught:
        backend.generate(request(jpeg, prompt="!slow"))

    assert isinstance(caught.value, CallTimedOut)  # the job's own failure: one attempt
    assert 1.5 <= time.monotonic() - started < 4
    wait_for(
        lambda: apps.calls.entries[-1] == {"app": "predict", "outcome": "cancelled"},
        timeout=10,
        message="the app's job was not cancelled",
    )
    if transport == "queue":  # only the queue protocol carries queue position and progress
        assert any(m.startswith("queue position 1") for m in messages)
        assert any(m.startswith("progress ") and m.endswith("(denoising)") for m in messages)


def test_a_server_that_is_not_running_is_unavailable(make_backend, jpeg):
    url = f"http://127.0.0.1:{free_port()}"
    backend = make_backend(url)

    assert backend.describe()["version"] == "unknown"  # never raises: status and records call it
    started = time.monotonic()
    with pytest.raises(ServerUnavailable, match="refused"):
        backend.generate(request(jpeg))
    assert time.monotonic() - started < 2
    report = probe(url, timeout_seconds=2)
    assert report.kind == "unreachable" and not report.usable


# -- probe ---------------------------------------------------------------------------------------------


def test_probe_reports_the_7_input_app_and_its_mapping(apps):
    report = probe(apps.predict_url)

    assert (report.kind, report.version, report.source, report.endpoint) == (
        "gradio",
        apps.version,
        "info",
        "/generate",
    )
    assert report.usable and report.problem is None
    names = {e.api_name: [p.name for p in e.parameters] for e in report.endpoints}
    assert names == {
        "generate": ["image", "prompt", "resolution", "frames", "fps", "steps", "guidance"],
        "caption": ["image"],
        "generate_hidden": ["input_image", "prompt", "resolution", "frames", "fps", "steps", "guidance"],
    }
    generate = next(e for e in report.endpoints if e.api_name == "generate")
    assert [(p.component, p.has_default, p.default) for p in generate.parameters[2:4]] == [
        ("Dropdown", True, "512p"),
        ("Slider", True, 16),
    ]
    assert {b.parameter.name: b.field for b in report.mapping.bindings} == {
        "image": "image",
        "prompt": "prompt",
        "resolution": "resolution",
        "frames": "frames",
        "fps": "fps",
        "steps": "steps",
        "guidance": "guidance",
    }
    data = json.loads(json.dumps(report.as_dict()))
    assert data["mapping"]["endpoint"] == "/generate" and data["usable"] is True
    text = report.render()
    assert f"Gradio {apps.version} app (protocol {report.protocol}" in text
    assert "i2vd would call /generate" in text
    assert re.search(r"^  frames +<- frames$", text, re.MULTILINE)


def test_an_endpoint_that_info_does_not_list_is_read_from_config(apps, make_backend, jpeg):
    backend = make_backend(apps.predict_url, api_name="/generate_hidden")

    backend.generate(request(jpeg, prompt="hidden", resolution="256p", frames=8, fps=4, steps=10, guidance=1.5))

    call = apps.calls.last("predict")
    assert (call["prompt"], call["resolution"], call["frames"], call["fps"], call["steps"], call["guidance"]) == (
        "hidden",
        "256p",
        8,
        4,
        10,
        1.5,
    )
    report = probe(apps.predict_url, api_name="/generate_hidden")
    assert (report.source, report.endpoint, report.usable) == ("config", "/generate_hidden", True)
    assert "parameters read from /config; /info: it does not list /generate_hidden" in report.render()
    assert [b.field for b in report.mapping.bindings] == [
        "image",
        "prompt",
        "resolution",
        "frames",
        "fps",
        "steps",
        "guidance",
    ]


def test_probe_of_the_svd_app_says_what_is_missing_then_shows_the_configured_mapping(apps):
    unmapped = probe(apps.svd_url)
    mapped = probe(apps.svd_url, inputs=SVD_INPUTS)

    assert not unmapped.usable and "motion_bucket_id" in unmapped.problem
    assert "i2vd cannot use it" in unmapped.render()
    assert mapped.usable
    bindings = {b.parameter.name: (b.field, b.value, b.origin) for b in mapped.mapping.bindings}
    assert bindings == {
        "image": ("image", None, "config"),
        "seed": ("seed", None, "config"),
        "randomize_seed": (None, True, "default"),
        "motion_bucket_id": (None, 127, "config"),
        "fps_id": ("fps", None, "config"),
    }
    assert "motion_bucket_id  <- constant 127" in mapped.render()
    assert set(mapped.mapping.unused_fields) == {"prompt", "resolution", "frames", "steps", "guidance"}


def test_probe_of_a_predict_server_suggests_kind_predict(fake_server, make_backend, jpeg):
    report = probe(fake_server.url)

    assert report.kind == "predict" and "server.kind: predict" in report.suggestion
    assert "not a Gradio app" in report.render()
    with pytest.raises(AppMismatch, match="server.kind: predict"):
        make_backend(fake_server.url).generate(request(jpeg))
    assert fake_server.requests == []


# -- Gradio 3.x, against the fake ---------------------------------------------------------------


def test_gradio3_over_http_with_a_data_url_and_a_file_reference(make_backend, jpeg, mp4):
    with FakeGradio3(video=mp4, queue=False) as app:  # an app that never called .queue(): direct calls only
        backend = make_backend(app.url)

        reply = backend.generate(request(jpeg, resolution="768p", frames=24, fps=12, steps=60, guidance=7.5))

        assert backend.describe() == {
            "kind": "gradio",
            "url": app.url,
            "version": "3.50.2",
            "protocol": "ws",
            "api_name": "/predict",
        }
        assert reply.data == mp4
        assert app.rejections == []
        [call] = app.calls
        assert (call.via, call.path, call.fn_index, call.image) == ("http", "/run/predict", 0, jpeg)
        assert call.values == ["Waves crashing, camera panning left", "768p", 24, 12, 60, 7.5]
        assert call.state is None  # the gr.State slot keeps its place
        assert probe(app.url).source == "info"


@pytest.mark.parametrize("form", ["path", "4.x", "url", "inline"])
def test_every_form_of_video_reference_is_read(make_backend, jpeg, mp4, form):
    with FakeGradio3(video=mp4) as app:
        app.reply_form = form

        assert make_backend(app.url).generate(request(jpeg)).data == mp4


def test_a_queued_gradio3_app_with_an_open_api_gets_the_job_through_its_queue_never_a_direct_call(
    make_backend, jpeg, mp4
):
    """api_open=True lets a direct POST /run/predict skip the queue, and run beside the app's other users on the
    GPU. Gradio's own client joins the queue whenever the app has one (`enable_queue`); so does i2vd."""
    with FakeGradio3(video=mp4, api_open=True, queue=True) as app:
        backend = make_backend(app.url)

        assert backend.generate(request(jpeg)).data == mp4
        assert backend.generate(request(jpeg, prompt="again")).data == mp4

        assert [(c.via, c.values[0]) for c in app.calls] == [
            ("websocket", "Waves crashing, camera panning left"),
            ("websocket", "again"),
        ]
        assert "queue" in probe(app.url).transport


def test_gradio3_endpoints_from_config_when_info_fails(make_backend, jpeg, mp4):
    with FakeGradio3(video=mp4, info="error") as app:
        report = probe(app.url)
        reply = make_backend(app.url).generate(request(jpeg, frames=20))

        assert (report.source, report.endpoint, report.usable) == ("config", "/predict", True)
        assert "/info: GET /info answered HTTP 500" in report.render()
        assert [b.field for b in report.mapping.bindings] == [
            "image",
            "prompt",
            "resolution",
            "frames",
            "fps",
            "steps",
            "guidance",
        ]
        assert reply.data == mp4
        assert app.calls[0].values[3 - 1] == 20


def test_gradio3_without_an_open_api_uses_the_websocket_queue(make_backend, jpeg, mp4):
    messages: list[str] = []
    with FakeGradio3(video=mp4, api_open=False) as app:
        backend = make_backend(app.url, on_progress=messages.append)

        first = backend.generate(request(jpeg))
        second = backend.generate(request(jpeg, prompt="again"))

        assert first.data == second.data == mp4
        assert [(c.via, c.values[0]) for c in app.calls] == [
            ("websocket", "Waves crashing, camera panning left"),
            ("websocket", "again"),
        ]
        assert app.rejections == []
        assert messages[:3] == ["queue position 1 of 1", "processing", "progress 2/5 steps"]  # as 3.50.2 sent them
        wait_for(lambda: app.events.count("closed") == 2, message="the client did not close the websocket")


def test_gradio3_errors_keep_their_class(make_backend, jpeg, mp4):
    with FakeGradio3(video=mp4) as app, FakeGradio3(video=mp4, api_open=False) as queued:
        app.reply = ("error", "torch.cuda.OutOfMemoryError: CUDA out of memory.")
        queued.reply = ("error", "bad")
        with pytest.raises(ServerOutOfMemory):
            make_backend(app.url).generate(request(jpeg))
        with pytest.raises(BackendError, match="the app failed: bad"):
            make_backend(queued.url).generate(request(jpeg))
        app.reply = "none"
        with pytest.raises(BadReply, match="no video"):
            make_backend(app.url).generate(request(jpeg))


def test_gradio3_websocket_timeout_leaves_the_queue(make_backend, jpeg, mp4):
    with FakeGradio3(video=mp4, api_open=False) as app:
        app.reply = "hang"
        backend = make_backend(app.url, timeout_seconds=1)
        started = time.monotonic()

        with pytest.raises(BackendError, match="no result within 1 s"):
            backend.generate(request(jpeg))

        assert time.monotonic() - started < 4
        wait_for(lambda: "left" in app.events, message="the client stayed in the queue")


@pytest.mark.parametrize("api_open", [True, False], ids=["http", "websocket"])
def test_gradio3_an_app_that_dies_on_the_job_uses_an_attempt(make_backend, jpeg, mp4, api_open):
    """Dropped after the job was sent: the job's failure (an image that crashes the app is not sent forever)."""
    with FakeGradio3(video=mp4, api_open=api_open, queue=not api_open) as app:
        app.reply = "drop"
        with pytest.raises(ConnectionDropped, match="mid-job|while working on this job"):
            make_backend(app.url).generate(request(jpeg))
        assert len(app.calls) == 1 if api_open else "dropped" in app.events


def test_gradio3_a_download_that_drips_is_bounded_by_timeout_seconds(make_backend, jpeg, mp4):
    with FakeGradio3(video=mp4) as app:
        app.file_drip = 0.02  # every read gets a byte at once; the whole file would take minutes
        started = time.monotonic()
        with pytest.raises(CallTimedOut, match="no result within 1 s"):
            make_backend(app.url, timeout_seconds=1).generate(request(jpeg))
        assert time.monotonic() - started < 4


def test_describe_is_bounded_against_an_app_that_drips_its_config(make_backend, mp4):
    """status and the audit record call describe(): a dripping server must not hang them."""
    with FakeGradio3(video=mp4) as app:
        app.config_drip = 0.02
        started = time.monotonic()
        assert make_backend(app.url, timeout_seconds=1, connect_timeout_seconds=0.5).describe()["version"] == "unknown"
        assert time.monotonic() - started < 5


def test_an_app_that_connects_and_then_drips_its_config_during_a_job_times_the_job_out(make_backend, jpeg, mp4):
    """Connected, then no answer in time: the job's failure (one attempt), not a server that is down."""
    with FakeGradio3(video=mp4) as app:
        app.config_drip = 0.02
        with pytest.raises(CallTimedOut, match="no result within 1 s"):
            make_backend(app.url, timeout_seconds=1).generate(request(jpeg))


def test_gradio3_the_video_arrives_as_a_file_in_the_reply_folder(make_backend, jpeg, mp4, tmp_path):
    with FakeGradio3(video=mp4) as app:
        for form in ("3.x", "inline"):
            app.reply_form = form
            reply = make_backend(app.url).generate(request(jpeg, reply_dir=tmp_path / "incoming"))
            assert reply.data is None and reply.path.read_bytes() == mp4
            reply.path.unlink()
        assert list((tmp_path / "incoming").iterdir()) == []


def test_gradio3_a_long_inline_video_is_decoded_from_the_reply_file(make_backend, jpeg, tmp_path):
    """The /run reply is streamed into a file; a data URL longer than replies.BIG_STRING stays there."""
    video = bytes(range(256)) * 1200  # 300 KB: 400 KB of base64 in the reply
    with FakeGradio3(video=video) as app:
        app.reply_form = "inline"
        reply = make_backend(app.url).generate(request(jpeg, reply_dir=tmp_path / "incoming"))

        assert reply.path.read_bytes() == video
        assert sorted(p.name for p in (tmp_path / "incoming").iterdir()) == [reply.path.name]
        assert app.calls[0].image == jpeg


class _DroppingQueue(_Handler3):
    """A 4.x app (sse_v3) whose event stream breaks off mid-job, as when the app process dies."""

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/upload":
            self.server.fake.note(f"upload {len(body)}")
            return self._send(200, ["/tmp/gradio/input.jpg"])
        if path == "/queue/join":
            self.server.fake.note("joined")
            return self._send(200, {"event_id": "e1"})
        self._send(404, {"detail": "Not Found"})

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/queue/data":
            return super().do_GET()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        event = b'data: {"msg": "process_starts", "event_id": "e1"}\n\n'
        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.write(b'400\r\ndata: {"msg": "progr')  # a chunk cut short: the app died
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


class _Gradio4Dropping(FakeGradio3):
    handler_class = _DroppingQueue

    def config(self) -> dict:
        return {**super().config(), "protocol": "sse_v3"}


def test_gradio4_an_event_stream_lost_mid_job_uses_an_attempt(make_backend, jpeg, mp4):
    with _Gradio4Dropping(video=mp4, version="4.44.1") as app:
        with pytest.raises(ConnectionDropped, match="dropped the connection"):
            make_backend(app.url, transport="queue").generate(request(jpeg))
        assert "joined" in app.events
        assert f"upload {len(jpeg)}" not in app.events  # multipart: the image and its headers
        assert any(event.startswith("upload ") for event in app.events)


def test_gradio3_with_two_video_endpoints_needs_an_api_name(make_backend, jpeg, mp4):
    with FakeGradio3(video=mp4, second_video_endpoint=True, queue=False) as app:
        with pytest.raises(AppMismatch, match=r"several endpoints .* \(/predict, /predict_hd\)"):
            make_backend(app.url).generate(request(jpeg))

        make_backend(app.url, api_name="/predict_hd").generate(request(jpeg))

        assert [c.path for c in app.calls] == ["/run/predict_hd"]
        assert "set server.api_name" in probe(app.url).problem


def test_discovery_is_redone_after_the_server_was_unavailable(make_backend, jpeg, mp4):
    app = FakeGradio3(video=mp4).start()
    try:
        backend = make_backend(app.url)
        backend.generate(request(jpeg))
        app.stop()
        with pytest.raises(ServerUnavailable):
            backend.generate(request(jpeg))
        app = FakeGradio3(video=mp4, version="3.41.2", api_open=False, port=app.port).start()

        backend.generate(request(jpeg))

        assert backend.describe()["version"] == "3.41.2"
        assert [c.via for c in app.calls] == ["websocket"]
    finally:
        app.stop()


# -- configuration checks that need no server -------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"motion_bucket_id": "motion"}, "not an i2vd field"),
        ({"motion_bucket_id": {"val": 127}}, "value"),
        (["image"], "mapping"),
    ],
)
def test_malformed_inputs_are_refused_at_construction(inputs, message):
    with pytest.raises(ValueError, match=message):
        GradioBackend("http://127.0.0.1:9", inputs=inputs)


def test_resolution_becomes_an_index_or_the_matching_choice():
    slider = Parameter(0, "resolution", "Resolution", "Slider", "float")
    sizes = Parameter(0, "size", "Size", "Radio", "str", choices=("512x512", "768x768"))
    plain = Parameter(0, "resolution", "Resolution", "Dropdown", "str", choices=("256p", "768p"))

    assert resolution_value(slider, "768p") == 2
    assert resolution_value(sizes, "768p") == "768x768"
    assert resolution_value(plain, "768p") == "768p"
