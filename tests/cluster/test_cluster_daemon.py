"""`executor: celery` end to end: `i2vd run` on the ingest host, `i2vd worker` processes as GPU hosts, a real
redis-server between them (tests/cluster/conftest.py). Each test polls for an outcome with a deadline."""

from __future__ import annotations

import json

from tests.end_to_end.harness import journal_counts, videos
from tests.support.fakes import wait_for, write_image

COLORS = [(200, 80, 40), (40, 200, 80), (80, 40, 200)]


def drop_images(cluster, count: int) -> list[str]:
    names = []
    for index in range(count):
        name = f"image-{index}.jpg"
        write_image(cluster.inbox / name, color=COLORS[index])
        names.append(name)
    return names


def done(cluster, count: int) -> bool:
    return journal_counts(cluster.state_dir).get("done") == count


def test_images_on_the_ingest_host_become_videos_made_on_a_gpu_host(cluster, fake_server):
    cluster.worker(fake_server.url)
    cluster.daemon()
    drop_images(cluster, 3)
    wait_for(lambda: done(cluster, 3), timeout=45, message=cluster.logs())
    made = videos(cluster.output_dir)
    assert [video.name for video in made] == ["image-0.mp4", "image-1.mp4", "image-2.mp4"]
    assert len(fake_server.requests) == 3  # the worker's server, once per image
    record = json.loads(made[0].with_name(made[0].name + ".json").read_text())
    assert record["server"]["kind"] == "predict" and record["server"]["url"].startswith(fake_server.url)
    assert record["server"]["worker"]  # the GPU host that made it
