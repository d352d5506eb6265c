"""`executor: celery` end to end: `i2vd run` on the ingest host, `i2vd worker` processes as GPU hosts, a real
redis-server between them (tests/cluster/conftest.py). Each test polls for an outcome with a deadline."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import yaml

from i2vd.cluster import messages
from i2vd.cluster.app import TASK_NAME, make_app, timings
from i2vd.config.load import load_config
from i2vd.render.backends.base import VideoRequest
from i2vd.store.journal import Job, Journal
from tests.end_to_end.harness import journal_counts, run_cli, videos
from tests.support.fakes import FakePredictServer, wait_for, write_image
from tests.support.gpu_workers import WorkerProcess, executor

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


def jobs(cluster) -> list[Job]:
    journal = Journal(cluster.state_dir / "journal.sqlite3")
    try:
        return journal.jobs()
    finally:
        journal.close()


def publish_again(cluster, job: Job, task_id: str) -> None:
    """The job's task as the broker would deliver it a second time: same id, same payload."""
    config = load_config(cluster.tmp_path / "config.yaml")
    request = VideoRequest(
        image=Path(job.source_path).read_bytes(),
        image_name=Path(job.rel_path).name,
        prompt=job.prompt,
        **job.params,
        job_id=job.id,
        key=job.idem_key,
    )
    app = make_app(config.executor, timings(config.executor, [config.server]))
    try:
        app.send_task(TASK_NAME, args=[messages.payload(request, config.executor)], task_id=task_id)
    finally:
        app.close()


def test_images_on_the_ingest_host_become_videos_made_on_a_gpu_host(cluster, fake_server):
    worker = cluster.worker(fake_server.url)
    cluster.daemon()
    drop_images(cluster, 3)
    wait_for(lambda: done(cluster, 3), timeout=45, message=cluster.logs())
    made = videos(cluster.output_dir)
    assert [video.name for video in made] == ["image-0.mp4", "image-1.mp4", "image-2.mp4"]
    assert len(fake_server.requests) == 3  # the worker's server, once per image
    record = json.loads(made[0].with_name(made[0].name + ".json").read_text())
    assert record["server"]["kind"] == "predict" and record["server"]["url"].startswith(fake_server.url)
    assert record["server"]["worker"]  # the GPU host that made it
    assert worker.stop() == 0  # SIGTERM: Celery's warm shutdown


def test_a_worker_killed_mid_job_has_its_task_delivered_again_and_done_once(cluster, fake_server):
    fake_server.hang(times=1)  # the first call is held: the worker is mid-job when it dies
    first = cluster.worker(fake_server.url, name="gpu-a")
    cluster.daemon()
    drop_images(cluster, 1)
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message=cluster.logs())
    first.kill()
    cluster.worker(fake_server.url, name="gpu-b")  # delivered again after the visibility timeout (T + M/2)
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    assert [video.name for video in videos(cluster.output_dir)] == ["image-0.mp4"]
    assert len(fake_server.requests) == 2  # the killed call, and the one that made the video
    [job] = jobs(cluster)
    assert job.state.value == "done" and job.attempts == 0  # a dead worker is not the job's fault


def test_a_task_delivered_again_after_its_job_is_done_is_acknowledged_without_work(cluster, fake_server):
    worker = cluster.worker(fake_server.url)
    daemon = cluster.daemon()
    drop_images(cluster, 1)
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    [task_id] = re.findall(r"as task (i2vd-\S+)", daemon.log())
    [job] = jobs(cluster)
    publish_again(cluster, job, task_id)
    wait_for(lambda: f"task {task_id} (job {job.id}): not awaited any more" in worker.log(), message=cluster.logs())
    assert len(fake_server.requests) == 1  # not sent to the server a second time
    assert len(videos(cluster.output_dir)) == 1


def test_a_broker_restart_loses_nothing_and_repeats_nothing(cluster, fake_server):
    fake_server.hang(times=1)  # one job held on the server while the broker restarts
    cluster.worker(fake_server.url)
    daemon = cluster.daemon(concurrency=2)  # and one more task waiting at the broker
    drop_images(cluster, 3)
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message=cluster.logs())
    wait_for(lambda: len(re.findall(r"as task ", daemon.log())) == 2, timeout=30, message=cluster.logs())
    cluster.redis.restart()  # its append-only file keeps what was queued
    fake_server.clear_faults()
    wait_for(lambda: done(cluster, 3), timeout=60, message=cluster.logs())
    assert len(videos(cluster.output_dir)) == 3
    assert len(fake_server.requests) == 3
    assert all(job.attempts == 0 for job in jobs(cluster))


def test_a_broker_outage_pauses_dispatch_uses_no_attempt_and_status_says_so(cluster, fake_server):
    cluster.worker(fake_server.url)
    cluster.daemon()
    cluster.redis.kill()
    drop_images(cluster, 1)
    config = cluster.tmp_path / "config.yaml"
    wait_for(
        lambda: f"cannot reach the broker {cluster.redis.url}" in run_cli(config, "status").stdout,
        timeout=30,
        message=cluster.logs(),
    )
    [job] = jobs(cluster)
    assert job.state.value in ("queued", "running") and job.attempts == 0
    assert fake_server.requests == []
    cluster.redis.start()
    wait_for(lambda: done(cluster, 1), timeout=60, message=cluster.logs())
    [job] = jobs(cluster)
    assert job.attempts == 0 and len(fake_server.requests) == 1


def test_a_failure_on_the_gpu_host_counts_as_it_would_locally(cluster, fake_server):
    fake_server.fail_with(500, times=1)  # the job's own failure: one attempt, then the retry succeeds
    cluster.worker(fake_server.url)
    cluster.daemon()
    drop_images(cluster, 1)
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    [job] = jobs(cluster)
    assert job.attempts == 1 and len(fake_server.requests) == 2
    assert len(videos(cluster.output_dir)) == 1


def test_the_gpu_hosts_server_down_uses_no_attempt(cluster, fake_server):
    fake_server.go_down()  # refused: ServerUnavailable on the GPU host, the same class on the ingest host
    cluster.worker(fake_server.url)
    cluster.daemon()
    drop_images(cluster, 1)
    config = cluster.tmp_path / "config.yaml"
    said = f"cannot reach {fake_server.url}"  # the GPU host's own words, through the queue
    wait_for(lambda: said in run_cli(config, "status").stdout, timeout=30, message=cluster.logs())
    assert jobs(cluster)[0].attempts == 0
    fake_server.come_up()
    wait_for(lambda: done(cluster, 1), timeout=60, message=cluster.logs())
    assert jobs(cluster)[0].attempts == 0


def test_a_restarted_ingest_host_waits_for_its_task_instead_of_sending_it_again(cluster, fake_server):
    fake_server.hang(times=1)
    cluster.worker(fake_server.url)
    first = cluster.daemon()
    drop_images(cluster, 1)
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message=cluster.logs())
    first.kill()  # the ingest host dies while its task runs on the GPU host
    second = cluster.daemon()
    fake_server.clear_faults()
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    assert "was sent before; waiting for its result again" in second.log()
    assert "sent to queue" not in second.log()
    assert len(fake_server.requests) == 1 and len(videos(cluster.output_dir)) == 1


def test_with_no_gpu_host_the_queue_pauses_and_a_late_host_does_each_job_once(cluster, fake_server):
    cluster.daemon()
    drop_images(cluster, 1)
    config = cluster.tmp_path / "config.yaml"
    wait_for(lambda: "no GPU worker took job" in run_cli(config, "status").stdout, timeout=30, message=cluster.logs())
    assert jobs(cluster)[0].attempts == 0
    cluster.worker(fake_server.url)  # the task given up on is dropped unworked; the one sent again is done
    wait_for(lambda: done(cluster, 1), timeout=60, message=cluster.logs())
    assert len(fake_server.requests) == 1 and jobs(cluster)[0].attempts == 0


def test_batch_with_a_celery_executor_sends_the_folder_to_the_gpu_hosts(cluster, fake_server):
    cluster.worker(fake_server.url)
    config = cluster.ingest_config()
    drop_images(cluster, 2)
    result = run_cli(config, "batch", str(cluster.inbox))
    assert "2 done, 0 failed" in result.stderr, result.stdout + result.stderr  # the console writes to stderr
    assert len(fake_server.requests) == 2 and len(videos(cluster.output_dir)) == 2


def test_a_gpu_host_with_two_servers_runs_one_job_on_each_at_a_time(cluster, fake_server, mp4_bytes):
    with FakePredictServer(video=mp4_bytes) as second:
        fake_server.hang(times=1)  # gpu0 holds its first job: the next one must go to gpu1, not wait behind it
        cluster.worker([fake_server.url, second.url])
        cluster.daemon(concurrency=2)
        drop_images(cluster, 3)
        wait_for(lambda: fake_server.in_flight == 1 and second.requests, timeout=30, message=cluster.logs())
        fake_server.clear_faults()
        wait_for(lambda: done(cluster, 3), timeout=45, message=cluster.logs())
        assert len(fake_server.requests) + len(second.requests) == 3
        assert fake_server.max_concurrent == 1 and second.max_concurrent == 1  # one job at a time per GPU
        assert len(videos(cluster.output_dir)) == 3


def test_a_stopped_ingest_host_leaves_its_task_at_the_broker_and_takes_the_result_after_a_restart(cluster, fake_server):
    cluster.timeout_seconds = 30  # the held call stays within its timeout while the ingest host is away
    fake_server.hang(times=1)
    cluster.worker(fake_server.url)
    first = cluster.daemon()
    drop_images(cluster, 1)
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message=cluster.logs())
    assert first.stop() == 0  # SIGTERM: no waiting out stop_grace_seconds for a job another host runs
    assert "stays at the broker" in first.log()
    assert jobs(cluster)[0].state.value == "queued" and jobs(cluster)[0].attempts == 0
    fake_server.clear_faults()
    second = cluster.daemon()
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    assert "waiting for its result again" in second.log()
    assert len(fake_server.requests) == 1 and len(videos(cluster.output_dir)) == 1


def test_a_gpu_host_waits_for_its_own_vram_gate_and_hands_the_task_back_meanwhile(cluster, fake_server):
    used = cluster.tmp_path / "used-mib"  # what the GPU host's gpu.command reads: the real command path
    used.write_text("9000\n")
    gate = {"enabled": True, "source": "command", "command": f"cat {used}", "max_used_mb": 1000, "poll_seconds": 0.1}
    worker = cluster.worker(fake_server.url, gpu=gate)
    cluster.daemon()
    drop_images(cluster, 1)
    said = "waiting for VRAM: 9,000 MB used > 1,000 MB; back to the queue for another host"
    wait_for(lambda: worker.log().count(said) >= 2, timeout=30, message=cluster.logs())  # rejected, delivered again
    assert fake_server.requests == []
    used.write_text("200\n")
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    assert len(fake_server.requests) == 1 and jobs(cluster)[0].attempts == 0


def test_large_images_and_videos_travel_by_the_shared_folder(cluster, fake_server):
    gpu_view = cluster.tmp_path.with_name(cluster.tmp_path.name + "-gpu")
    gpu_view.symlink_to(cluster.tmp_path)  # the share, as the GPU host mounts it
    (cluster.tmp_path / "spool").mkdir()
    shared = {
        "max_inline_mb": 0.0001,  # every image and video here is larger
        "path_map": {str(cluster.tmp_path): str(gpu_view)},
        "spool_dir": str(cluster.tmp_path / "spool"),
    }
    worker = cluster.worker(fake_server.url, executor=executor(cluster.redis.url, cluster.timeout_seconds, **shared))
    daemon = cluster.daemon(**shared)
    drop_images(cluster, 2)
    wait_for(lambda: done(cluster, 2), timeout=45, message=cluster.logs())
    assert len(fake_server.requests) == 2 and len(videos(cluster.output_dir)) == 2
    assert worker.log().count(f"image {gpu_view}/in/image-") == 2  # read from the share, by the GPU host's path
    assert daemon.log().count(f"({gpu_view}/spool/i2vd-") == 2  # put in the spool by the GPU host
    assert list((cluster.tmp_path / "spool").iterdir()) == []  # and taken from it


def test_a_reload_keeps_the_cluster_workers_and_refuses_an_executor_change(cluster, fake_server):
    cluster.worker(fake_server.url)
    daemon = cluster.daemon(concurrency=2)
    config = cluster.tmp_path / "config.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["profiles"]["default"]["prompt"] = "Reloaded {{ subject }}"
    config.write_text(yaml.safe_dump(settings))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in daemon.log(), timeout=30, message=cluster.logs())
    drop_images(cluster, 1)
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    assert fake_server.requests[0].prompt == "Reloaded image 0"
    settings["executor"]["queue"] = "elsewhere"
    config.write_text(yaml.safe_dump(settings))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused: executor: a change needs a restart" in daemon.log(), message=cluster.logs())
    assert daemon.process.poll() is None


def test_the_ingest_host_s_status_shows_each_gpu_host_its_job_and_a_dead_one_as_gone(cluster, fake_server):
    """A real `i2vd worker` announces itself (presence.py) and the ingest daemon mirrors it into its journal:
    `i2vd status --json` there lists the GPU host, its server, its gate and the job it is on; killed, it stays
    listed as gone with its last-seen time."""
    cluster.timeout_seconds = 60.0  # the held call stays the worker's job while the beacon (every 5 s) says so
    fake_server.hang(times=1)
    worker = cluster.worker(fake_server.url, name="gpu-a")
    cluster.daemon()
    drop_images(cluster, 1)
    config = cluster.tmp_path / "config.yaml"

    def seen() -> list[dict]:
        return json.loads(run_cli(config, "status", "--json").stdout)["workers"]

    [job] = wait_for(lambda: fake_server.in_flight == 1 and jobs(cluster), timeout=30, message=cluster.logs())
    [on_job] = wait_for(
        lambda: [entry for entry in seen() if entry["current_job"] == job.id], timeout=30, message=cluster.logs()
    )
    assert on_job["state"] == "alive" and on_job["server"] == f"predict {fake_server.url}"
    assert on_job["current_key"] == job.idem_key and on_job["gate"]

    worker.kill()
    [gone] = wait_for(
        lambda: [entry for entry in seen() if entry["state"] == "gone"], timeout=60, message=cluster.logs()
    )
    assert gone["worker_id"] == on_job["worker_id"] and gone["last_seen"] >= on_job["last_seen"]
    fake_server.clear_faults()


def test_a_gpu_host_tells_systemd_it_is_ready_and_when_it_takes_tasks(cluster, fake_server, tmp_path):
    """i2vd-worker.service is Type=notify: READY=1 once set up, STATUS= when the Celery consumer is up, STOPPING=1 on
    SIGTERM."""
    import socket

    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(30)
    try:
        environment = {"NOTIFY_SOCKET": address}
        worker = cluster.worker(fake_server.url, name="gpu-notify", wait_ready=False, environment=environment)
        messages = [listener.recv(4096).decode()]
        assert messages[0] == f"READY=1\nSTATUS=waiting for the broker {cluster.redis.url} (queue i2vd-test)"
        messages.append(listener.recv(4096).decode())
        assert messages[-1] == "STATUS=taking tasks from i2vd-test"
        worker.process.send_signal(signal.SIGTERM)
        messages.append(listener.recv(4096).decode())
        assert "STOPPING=1" in messages[-1]
        assert worker.process.wait(timeout=30) == 0
    finally:
        listener.close()


def test_a_gpu_host_started_before_its_broker_waits_saying_so_and_takes_tasks_once_it_answers(
    cluster, fake_server, tmp_path
):
    """A GPU host often boots before the queue host: the worker is READY at once (boot goes on), keeps trying the
    broker (systemd's STATUS= names it), says it takes tasks once the broker answers, and then does the jobs."""
    import socket

    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(60)
    cluster.redis.stop()
    try:
        worker = cluster.worker(
            fake_server.url, name="gpu-early", wait_ready=False, environment={"NOTIFY_SOCKET": address}
        )
        assert listener.recv(4096).decode() == (
            f"READY=1\nSTATUS=waiting for the broker {cluster.redis.url} (queue i2vd-test)"
        )
        wait_for(lambda: "Cannot connect to redis" in worker.log(), timeout=30, message=cluster.logs())
        assert worker.process.poll() is None  # still trying, not exited
        cluster.redis.start()
        assert listener.recv(4096).decode() == "STATUS=taking tasks from i2vd-test"
    finally:
        listener.close()
    cluster.daemon()
    drop_images(cluster, 1)
    wait_for(lambda: done(cluster, 1), timeout=45, message=cluster.logs())
    assert len(fake_server.requests) == 1


def test_a_gpu_host_stopped_mid_job_hands_it_back_after_its_grace_and_another_does_it_once(cluster, fake_server):
    """systemctl stop i2vd-worker on a long job: the job may finish within stop_grace_seconds (below the unit's
    TimeoutStopSec), then goes back to the queue's head and the worker exits; another host does it, once."""
    cluster.timeout_seconds = 40  # a job longer than the grace: warm shutdown alone would wait for it
    fake_server.hang(times=1)
    first = cluster.worker(fake_server.url, name="gpu-a", stop_grace_seconds=1)
    cluster.daemon()
    drop_images(cluster, 1)
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message=cluster.logs())
    assert first.stop() == 0, cluster.logs()  # within the harness's 30 s, not after the 40 s call
    assert "did not finish within 1 s: handed back to the queue" in first.log()
    cluster.worker(fake_server.url, name="gpu-b")  # takes it at once: no visibility timeout to wait out
    wait_for(lambda: done(cluster, 1), timeout=30, message=cluster.logs())
    fake_server.clear_faults()
    assert len(videos(cluster.output_dir)) == 1 and len(fake_server.requests) == 2
    assert jobs(cluster)[0].attempts == 0


def test_a_restarted_gpu_host_is_the_same_worker_alive_again_not_a_gone_one_beside_it(cluster, fake_server):
    """systemctl restart i2vd-worker: the ingest host's status lists that host once, alive (README "Seeing the
    workers"), not its old process as gone for a week beside the new one."""
    first = cluster.worker(fake_server.url, name="gpu-a")
    cluster.daemon()
    config = cluster.tmp_path / "config.yaml"

    def seen() -> list[dict]:
        return json.loads(run_cli(config, "status", "--json").stdout)["workers"]

    [before] = wait_for(seen, timeout=30, message=cluster.logs())
    assert first.stop() == 0
    second = WorkerProcess(first.config, "worker-again").start()
    cluster.started.append(second)
    wait_for(lambda: [w for w in seen() if w["started_at"] != before["started_at"]], timeout=30, message=cluster.logs())
    [after] = seen()
    assert after["worker_id"] == before["worker_id"] and after["state"] == "alive"


def test_two_gpu_hosts_share_the_jobs_one_at_a_time_each_one_video_per_image(cluster, mp4_bytes):
    with (
        FakePredictServer(video=mp4_bytes, latency_seconds=0.5) as a,
        FakePredictServer(video=mp4_bytes, latency_seconds=0.5) as b,
    ):
        cluster.worker(a.url, name="gpu-a")
        cluster.worker(b.url, name="gpu-b")
        cluster.daemon(concurrency=2)
        names = [f"image-{index}.jpg" for index in range(4)]
        for index, name in enumerate(names):
            write_image(cluster.inbox / name, color=(40 * index, 90, 160))
        wait_for(lambda: done(cluster, 4), timeout=45, message=cluster.logs())
        assert a.requests and b.requests and len(a.requests) + len(b.requests) == 4  # both hosts used
        assert a.max_concurrent == 1 and b.max_concurrent == 1  # one job at a time per GPU host
        assert [video.name for video in videos(cluster.output_dir)] == [name.replace(".jpg", ".mp4") for name in names]
        assert all(job.attempts == 0 for job in jobs(cluster))


def test_a_broker_killed_with_a_job_held_and_one_queued_loses_nothing_and_repeats_nothing(cluster, fake_server):
    fake_server.hang(times=1)  # one job held on the GPU host's server while the broker dies (kill -9)
    cluster.worker(fake_server.url)
    daemon = cluster.daemon(concurrency=2)  # and one more task waiting at the broker
    drop_images(cluster, 3)
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message=cluster.logs())
    wait_for(lambda: len(re.findall(r"as task ", daemon.log())) == 2, timeout=30, message=cluster.logs())
    cluster.redis.kill()
    cluster.redis.start()  # its append-only file (fsync always here) keeps what was queued
    fake_server.clear_faults()
    wait_for(lambda: done(cluster, 3), timeout=60, message=cluster.logs())
    assert len(videos(cluster.output_dir)) == 3
    assert len(fake_server.requests) == 3
    assert all(job.attempts == 0 for job in jobs(cluster))
