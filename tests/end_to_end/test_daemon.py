"""The whole path a dropped image takes, with `i2vd run` as a real subprocess.

Real inotify on a temp hot folder, a real SQLite journal, the fake /predict
server over HTTP on 127.0.0.1, and the daemon killed with SIGKILL where the
test is about crashes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy
from PIL import Image

from tests.end_to_end.harness import journal_counts, run_cli, videos, write_config
from tests.support.fakes import FakePredictServer, wait_for, write_slowly


def photo_bytes(path: Path, seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A distinct, realistically incompressible JPEG (noise), so it is written in several chunks."""
    pixels = numpy.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=numpy.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.unlink()
    return data


def test_twenty_slowly_written_images_make_exactly_twenty_videos(tmp_path, fake_server, daemon_factory):
    fake_server.latency_seconds = 0.05
    config = write_config(tmp_path, fake_server.url)
    daemon = daemon_factory(config).start()
    staging = tmp_path / "staging"
    staging.mkdir()
    contents = {f"photo_{index:02}.jpg": photo_bytes(staging / f"p{index}.jpg", seed=index) for index in range(20)}
    assert len({hashlib.sha256(data).digest() for data in contents.values()}) == 20

    def writer(names: list[str]) -> None:
        for name in names:
            write_slowly(tmp_path / "in" / name, contents[name], chunks=4, pause=0.1)

    names = sorted(contents)
    writers = [threading.Thread(target=writer, args=(names[start::4],)) for start in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()

    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 20,
        timeout=60,
        message=f"20 done; log:\n{daemon.log()}",
    )
    assert daemon.stop() == 0

    final_hashes = {hashlib.sha256(data).hexdigest(): name for name, data in contents.items()}
    requests = fake_server.requests
    assert len(requests) == 20
    assert {request.image_sha256 for request in requests} == set(final_hashes), "the server got a partial file"
    assert fake_server.max_concurrent == 1
    made = videos(tmp_path / "out")
    assert [video.name for video in made] == [name.replace(".jpg", ".mp4") for name in names]
    for video in made:
        record = json.loads(video.with_name(video.name + ".json").read_text())
        source_name = final_hashes[record["source"]["sha256"]]
        assert video.stem == Path(source_name).stem
        assert record["source"]["size"] == len(contents[source_name])
        assert record["prompt"] == f"A photo {video.stem.split('_')[1]} scene with smooth motion"
        assert record["parameters"] == {
            "resolution": "512p",
            "frames": 16,
            "fps": 8,
            "steps": 50,
            "guidance": 9.0,
            "seed": None,
        }
        assert record["server"]["url"] == fake_server.url + "/api/predict/"
        assert record["attempts"] == 1
        assert record["timings"]["queued"] <= record["timings"]["started"] <= record["timings"]["finished"]
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_kill_9_mid_job_then_restart_gives_one_video_per_image(tmp_path, fake_server, daemon_factory):
    fake_server.latency_seconds = 0.6
    config = write_config(tmp_path, fake_server.url)
    for index in range(4):
        (tmp_path / "in" / f"img_{index}.jpg").write_bytes(photo_bytes(tmp_path / f"s{index}.jpg", seed=100 + index))
    first = daemon_factory(config).start()
    wait_for(
        lambda: fake_server.in_flight >= 1 and journal_counts(tmp_path / "state").get("done", 0) >= 1,
        timeout=30,
        message="a job mid-flight after one done",
    )
    first.kill()

    second = daemon_factory(config).start()
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 4,
        timeout=60,
        message=f"all done after restart; log:\n{second.log()}",
    )
    assert second.stop() == 0

    made = videos(tmp_path / "out")
    assert [video.name for video in made] == [f"img_{index}.mp4" for index in range(4)]
    assert all(video.with_name(video.name + ".json").exists() for video in made)
    assert not [path for path in (tmp_path / "out").rglob("*") if path.name.startswith(".")], "temp files left behind"
    assert journal_counts(tmp_path / "state") == {"queued": 0, "running": 0, "parked": 0, "done": 4, "failed": 0}
    assert "was running when i2vd stopped" in second.log()


def test_server_500_for_one_image_is_retried_then_failed_and_shown(tmp_path, fake_server, daemon_factory):
    bad = photo_bytes(tmp_path / "bad.jpg", seed=7)
    bad_sha = hashlib.sha256(bad).hexdigest()
    fake_server.fail_with(500, "model exploded on this image", when=lambda request: request.image_sha256 == bad_sha)
    config = write_config(tmp_path, fake_server.url)
    (tmp_path / "in" / "bad.jpg").write_bytes(bad)
    for index in range(3):
        (tmp_path / "in" / f"good_{index}.jpg").write_bytes(photo_bytes(tmp_path / f"g{index}.jpg", seed=200 + index))
    daemon = daemon_factory(config).start()

    wait_for(
        lambda: journal_counts(tmp_path / "state") == {"queued": 0, "running": 0, "parked": 0, "done": 3, "failed": 1},
        timeout=60,
        message=f"3 done 1 failed; log:\n{daemon.log()}",
    )
    assert sum(request.image_sha256 == bad_sha for request in fake_server.requests) == 2  # retry.attempts
    listing = run_cli(config, "jobs", "--state", "failed").stdout
    assert "bad.jpg" in listing and "HTTP 500" in listing and "model exploded on this image" in listing
    failed = json.loads(run_cli(config, "jobs", "--state", "failed", "--json").stdout)
    assert [(job["rel_path"], job["attempts"]) for job in failed] == [("bad.jpg", 2)]
    assert "model exploded" in run_cli(config, "status").stdout
    assert daemon.stop() == 0
    assert [video.name for video in videos(tmp_path / "out")] == ["good_0.mp4", "good_1.mp4", "good_2.mp4"]


def test_existing_images_are_done_at_startup_and_a_second_start_does_nothing_new(tmp_path, fake_server, daemon_factory):
    config = write_config(tmp_path, fake_server.url)
    nested = tmp_path / "in" / "client" / "shoot"
    nested.mkdir(parents=True)
    for index in range(3):
        (nested / f"old_{index}.jpg").write_bytes(photo_bytes(tmp_path / f"o{index}.jpg", seed=300 + index))
    (tmp_path / "in" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "in" / "upload.jpg.part").write_bytes(b"partial")
    first = daemon_factory(config).start()
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 3, timeout=30, message=f"3 done; log:\n{first.log()}"
    )
    assert first.stop() == 0
    assert [video.relative_to(tmp_path / "out").as_posix() for video in videos(tmp_path / "out")] == [
        f"client/shoot/old_{index}.mp4" for index in range(3)
    ]

    second = daemon_factory(config).start()
    # A new file dropped after the second start proves the startup reconcile has run by the time it is done.
    (tmp_path / "in" / "new.jpg").write_bytes(photo_bytes(tmp_path / "n.jpg", seed=399))
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 4,
        timeout=30,
        message=f"new one done; log:\n{second.log()}",
    )
    assert second.stop() == 0
    assert len(fake_server.requests) == 4
    assert len(videos(tmp_path / "out")) == 4


def test_second_daemon_on_the_same_state_dir_exits_at_once_naming_the_pid(tmp_path, daemon_factory):
    config = write_config(tmp_path, None)
    first = daemon_factory(config).start()
    result = run_cli(config, "run", check=False)
    assert result.returncode == 1
    assert f"PID {first.process.pid}" in result.stderr
    assert first.stop() == 0


def test_bad_config_exits_78_listing_every_problem(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "output_dir: out\nwatch: [{path: in}]\nprofiles:\n  beach: {fps: 40, resolution: 720p}\nservr: {}\n"
    )
    result = run_cli(config, "run", check=False)
    assert result.returncode == 78
    assert "profiles.beach.fps: 40 is above 24" in result.stderr
    assert "profiles.beach.resolution: '720p' is not one of" in result.stderr
    assert "servr: unknown key (did you mean 'server'?)" in result.stderr


def test_server_down_at_start_burns_no_attempts_and_work_resumes(tmp_path, mp4_bytes, daemon_factory):
    server = FakePredictServer(video=mp4_bytes).start()
    try:
        server.go_down()
        config = write_config(tmp_path, server.url)
        (tmp_path / "in" / "waiting.jpg").write_bytes(photo_bytes(tmp_path / "w.jpg", seed=500))
        daemon = daemon_factory(config).start()
        wait_for(
            lambda: "DOWN since" in run_cli(config, "status").stdout,
            timeout=30,
            message="status says the server is down",
        )
        jobs = json.loads(run_cli(config, "jobs", "--json").stdout)
        assert [job["attempts"] for job in jobs] == [0]
        server.come_up()
        wait_for(
            lambda: journal_counts(tmp_path / "state").get("done") == 1,
            timeout=60,
            message=f"done after server came up; log:\n{daemon.log()}",
        )
        assert daemon.stop() == 0
        assert json.loads(run_cli(config, "jobs", "--json").stdout)[0]["attempts"] == 0
    finally:
        server.stop()


def test_a_folder_of_fifty_waiting_images_renamed_while_the_daemon_runs_loses_nothing(
    tmp_path, fake_server, daemon_factory
):
    fake_server.latency_seconds = 0.1
    config = write_config(tmp_path, fake_server.url)
    shoot = tmp_path / "in" / "shoot"
    shoot.mkdir()
    hashes = set()
    for index in range(50):
        data = photo_bytes(tmp_path / f"s{index}.jpg", seed=500 + index, size=(48, 32))
        (shoot / f"img_{index:02}.jpg").write_bytes(data)
        hashes.add(hashlib.sha256(data).hexdigest())
    (tmp_path / "in" / "2026").mkdir()
    daemon = daemon_factory(config).start()
    wait_for(lambda: journal_counts(tmp_path / "state").get("done", 0) >= 2, timeout=30, message="the first videos")
    shoot.rename(tmp_path / "in" / "2026" / "wedding")  # most of the shoot still waits
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 50,
        timeout=90,
        message=f"50 done: {journal_counts(tmp_path / 'state')}; log:\n{daemon.log()}",
    )
    assert daemon.stop() == 0
    assert journal_counts(tmp_path / "state")["failed"] == 0
    assert sorted(request.image_sha256 for request in fake_server.requests) == sorted(hashes), "each image sent once"
    records = [json.loads(video.with_name(video.name + ".json").read_text()) for video in videos(tmp_path / "out")]
    assert sorted(record["source"]["sha256"] for record in records) == sorted(hashes)
    for record in records:  # every video mirrors where its image was when it was made
        video = Path(record["video"]).relative_to(tmp_path / "out")
        assert video.with_suffix("") == Path(record["source"]["relative_path"]).with_suffix("")
        assert record["source"]["path"] == str(tmp_path / "in" / record["source"]["relative_path"])
    assert len([record for record in records if record["source"]["relative_path"].startswith("2026/wedding/")]) >= 40
