"""The task's payload and result (i2vd/cluster/messages.py): the image inline or by a mapped path, a failure as
the same BackendError class on the other side. Real files, no broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from i2vd.cluster import messages
from i2vd.config.executor import ExecutorConfig
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
    VideoRequest,
)
from tests.support.fakes import write_image


def request_for(image: bytes, source: Path | None = None) -> VideoRequest:
    return VideoRequest(
        image=image,
        image_name="beach.jpg",
        prompt="Waves crashing",
        resolution="512p",
        frames=16,
        fps=8,
        steps=50,
        guidance=9.0,
        seed=7,
        job_id=12,
        key="sha:abc|params",
        source_path=str(source) if source else None,
    )


def executor(**settings) -> ExecutorConfig:
    return ExecutorConfig(kind="local", **settings)


def test_a_small_image_travels_inline_and_comes_out_as_the_same_request(tmp_path: Path):
    image = write_image(tmp_path / "beach.jpg")
    sent = request_for(image)
    body = messages.payload(sent, executor())
    body = json.loads(json.dumps(body))  # what the JSON serializer carries
    assert "inline" in body["image"]
    received = messages.video_request(body, tmp_path / "replies")
    assert received.image == image
    assert (received.prompt, received.resolution, received.frames, received.seed) == ("Waves crashing", "512p", 16, 7)
    assert (received.job_id, received.key, received.reply_dir) == (12, "sha:abc|params", tmp_path / "replies")


def test_a_large_image_goes_by_its_path_as_the_gpu_hosts_mount_it(tmp_path: Path):
    ingest_side, gpu_side = tmp_path / "srv" / "in", tmp_path / "mnt" / "share"
    (ingest_side / "shoot").mkdir(parents=True)
    image = write_image(ingest_side / "shoot" / "beach.jpg", size=(400, 300))
    gpu_side.mkdir(parents=True)
    (gpu_side / "shoot").symlink_to(ingest_side / "shoot")  # the same files, seen under another folder
    settings = executor(max_inline_mb=0.001, path_map={str(ingest_side): str(gpu_side)})
    body = messages.payload(request_for(image, ingest_side / "shoot" / "beach.jpg"), settings)
    assert body["image"] == {"path": str(gpu_side / "shoot" / "beach.jpg"), "size": len(image)}
    assert messages.video_request(body, None).image == image


def test_a_large_image_outside_every_mapped_folder_fails_its_job_clearly(tmp_path: Path):
    image = write_image(tmp_path / "beach.jpg", size=(400, 300))
    settings = executor(max_inline_mb=0.001, path_map={"/srv/other": "/mnt/other"})
    with pytest.raises(BadInput, match="above executor.max_inline_mb .* under no folder of executor.path_map"):
        messages.payload(request_for(image, tmp_path / "beach.jpg"), settings)


def test_a_shared_image_that_changed_or_cannot_be_read_is_told_apart(tmp_path: Path):
    image = write_image(tmp_path / "beach.jpg", size=(400, 300))
    settings = executor(max_inline_mb=0.001, path_map={str(tmp_path): str(tmp_path)})
    body = messages.payload(request_for(image, tmp_path / "beach.jpg"), settings)
    write_image(tmp_path / "beach.jpg", size=(400, 300), color=(1, 2, 3))
    with pytest.raises(BadInput, match="does not match its sha256"):
        messages.video_request(body, None)
    (tmp_path / "beach.jpg").unlink()
    with pytest.raises(ServerUnavailable, match="cannot read the shared image"):  # the share, not the job
        messages.video_request(body, None)


def test_path_map_takes_the_longest_folder_and_maps_back():
    mapping = {"/srv/i2v": "/mnt/a", "/srv/i2v/in/special": "/mnt/b"}
    assert messages.map_path("/srv/i2v/in/x.jpg", mapping) == "/mnt/a/in/x.jpg"
    assert messages.map_path("/srv/i2v/in/special/x.jpg", mapping) == "/mnt/b/x.jpg"
    assert messages.map_path("/srv/i2v-other/x.jpg", mapping) is None  # a prefix of a name is not its folder
    assert messages.map_path("/mnt/b/x.jpg", mapping, back=True) == "/srv/i2v/in/special/x.jpg"


@pytest.mark.parametrize(
    "error",
    [
        ServerUnavailable("down"),
        ServerOutOfMemory("CUDA out of memory"),
        BadReply("no video"),
        BadInput("not an image"),
        CallTimedOut("late"),
        ConnectionDropped("reset"),
        NotFound("404"),
        LoginRequired("401"),
        BackendError("HTTP 500"),
    ],
)
def test_a_failure_crosses_the_queue_as_the_same_class(error: BackendError):
    error.status = 500
    result = json.loads(json.dumps(messages.failure(error, "gpu-a")))
    with pytest.raises(BackendError) as raised:
        messages.raise_failure(result)
    assert type(raised.value) is type(error)
    assert str(raised.value) == f"gpu-a: {error}" and raised.value.status == 500


def test_an_unknown_failure_class_is_a_plain_backend_error():
    with pytest.raises(BackendError) as raised:
        messages.raise_failure({"version": 1, "ok": False, "error": "SystemExit", "message": "x", "host": "h"})
    assert type(raised.value) is BackendError


def test_the_video_comes_back_whole_and_a_foreign_result_is_refused(tmp_path: Path):
    video = bytes(range(256)) * 50_000  # several decoding slices
    result = json.loads(json.dumps(messages.success(video, {"kind": "predict"}, 1.5, "gpu-a", executor(), "t-1")))
    assert "inline" in result["video"]
    assert messages.write_video(result, tmp_path / "v.mp4", executor()).read_bytes() == video
    with pytest.raises(messages.PayloadError):
        messages.write_video({"version": 2, "ok": True, "video": ""}, tmp_path / "w.mp4", executor())
    with pytest.raises(messages.PayloadError, match="without its video"):
        messages.write_video({"version": 1, "ok": True, "video": {}}, tmp_path / "w.mp4", executor())
    with pytest.raises(messages.PayloadError, match="payload version 9"):
        messages.video_request({"version": 9}, None)
    with pytest.raises(messages.PayloadError, match="not base64"):
        messages.video_request({"version": 1, "image": {"inline": "a-b-c"}}, None)
    with pytest.raises(messages.PayloadError, match="without its image"):
        messages.video_request({"version": 1}, None)


def test_a_large_video_comes_back_through_the_spool_and_leaves_it_empty(tmp_path: Path):
    ingest_view, gpu_view = tmp_path / "srv", tmp_path / "mnt"
    (ingest_view / "spool").mkdir(parents=True)
    gpu_view.symlink_to(ingest_view)  # one share, mounted at two places
    settings = executor(
        max_inline_mb=0.01, path_map={str(ingest_view): str(gpu_view)}, spool_dir=f"{ingest_view}/spool"
    )
    made = tmp_path / "made.mp4"
    made.write_bytes(b"v" * 20_000)
    result = json.loads(json.dumps(messages.success(made, {"kind": "comfyui"}, 2.0, "gpu-a", settings, "t-9")))
    assert result["video"] == {"path": str(gpu_view / "spool" / "t-9.mp4"), "size": 20_000}
    assert messages.write_video(result, tmp_path / "got.mp4", settings).read_bytes() == b"v" * 20_000
    assert list((ingest_view / "spool").iterdir()) == []  # taken: nothing left on the share
    small = messages.success(b"tiny", {}, 0.1, "gpu-a", settings, "t-10")
    assert small["video"] == {"inline": "dGlueQ=="}
    with pytest.raises(messages.PayloadError, match="cannot read the video"):
        messages.write_video(result, tmp_path / "again.mp4", settings)  # its file is gone: a bad result, not a crash
