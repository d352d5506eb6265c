"""One-shot work: `i2vd enqueue PATH...` and `i2vd batch DIR` with a progress bar.

Both go through the same intake and journal as the daemon, so a batch that is
interrupted resumes where it stopped, and a file the daemon already did is not
done again. When a daemon holds the state_dir lock, batch only enqueues and
follows the daemon's progress.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from i2vd.config.load import Config
from i2vd.config.messages import did_you_mean
from i2vd.core.clock import Clock
from i2vd.core.lock import AlreadyRunning, StateLock
from i2vd.ingest.intake import Intake, IntakeResult, Outcome
from i2vd.ingest.watcher import scan
from i2vd.jobs.worker import Worker, build_workers
from i2vd.store.journal import JobState, Journal

POLL_SECONDS = 0.2
ENQUEUE_BURST = 500  # files per journal transaction


def _files(path: Path) -> list[Path]:
    if path.is_dir() and not path.is_symlink():  # a linked folder is said to be a link, never walked into
        return sorted(found for found, _ in scan(path, include_special=True))
    return [path]


def enqueue_paths(
    config: Config, journal: Journal, paths: list[Path], profile_name: str = "default"
) -> list[tuple[Path, IntakeResult]]:
    intake = Intake(config, journal)
    files = [path for given in paths for path in _files(given.absolute())]
    results = []
    for start in range(0, len(files), ENQUEUE_BURST):
        burst = files[start : start + ENQUEUE_BURST]
        results += intake.consider_many(
            [(path, config.root_for(path), True) for path in burst], profile_name=profile_name
        )
        # Known with another profile asked for (`batch --profile forest` on a folder done as beach): the
        # request is new, so the file is looked at again with it; a sidecar naming a profile still wins.
        other = [index for index in range(start, len(results)) if _asked_otherwise(results[index], profile_name)]
        if other:
            journal.forget_files([str(files[index]) for index in other])
            again = intake.consider_many(
                [(files[index], config.root_for(files[index]), True) for index in other], profile_name=profile_name
            )
            for index, result in zip(other, again, strict=True):
                results[index] = result
    return list(zip(files, results, strict=True))


def _asked_otherwise(result: IntakeResult, profile_name: str) -> bool:
    job = result.job
    if result.outcome is not Outcome.KNOWN or job is None:
        return False
    return job.profile.get("requested", "default") != profile_name


def unknown_profile(config: Config, profile_name: str) -> str | None:
    """What is wrong with `--profile NAME`, or None when the config has that profile."""
    if profile_name in config.profiles:
        return None
    known = ", ".join(sorted(config.profiles))
    return f"unknown profile {profile_name!r}{did_you_mean(profile_name, list(config.profiles))}; profiles: {known}"


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} img/s" if speed else "-- img/s")


def run_batch(
    config: Config,
    folder: Path,
    *,
    profile_name: str = "default",
    output_dir: Path | None = None,
    console: Console | None = None,
) -> int:
    from i2vd.service.daemon import journal_path

    console = console or Console(stderr=True)
    problem = unknown_profile(config, profile_name)
    if problem is not None:
        console.print(f"i2vd batch: --profile: {problem}")
        return 2
    folder = folder.resolve()
    if not folder.is_dir():
        console.print(f"i2vd batch: {folder} is not a folder")
        return 2
    config = config.with_root(folder, output_dir.resolve() if output_dir else None)
    lock = StateLock(config.state_dir)
    try:
        lock.acquire()
        own_worker = True
    except AlreadyRunning as running:
        console.print(f"a daemon is running (PID {running.pid}): enqueueing, it does the work")
        own_worker = False
    try:
        journal = Journal(journal_path(config), upgrade=own_worker)  # a running daemon's journal is its release's
    except Exception:
        lock.release()
        raise
    stop = threading.Event()
    workers: list[Worker] = []
    threads: list[threading.Thread] = []
    try:
        if own_worker:
            journal.recover_running(config.retry.max_interruptions)
        Intake(config, journal).reresolve_under(folder, parked_only=True)  # sidecars fixed since the last run
        results = enqueue_paths(config, journal, [folder], profile_name)
        job_ids = sorted({result.job.id for _, result in results if result.job is not None})
        rejected = [
            (path, result) for path, result in results if result.job is None and result.outcome is not Outcome.KNOWN
        ]
        if own_worker:
            if config.executor.kind == "celery":  # the GPU hosts make the videos, as for `i2vd run`
                from i2vd.cluster.backend import build_cluster_workers

                workers = build_cluster_workers(config, journal, Clock(), stop)
            else:
                workers = build_workers(config, journal, Clock())
            for index, worker in enumerate(workers):
                threads.append(
                    threading.Thread(
                        target=worker.run,
                        args=(stop,),
                        kwargs={"burst": True},
                        name=f"i2vd-batch-worker-{index}",
                        daemon=True,
                    )
                )
                threads[-1].start()
        finished = _follow(journal, job_ids, console)
        states = journal.states(job_ids)
        failed = [journal.job(job_id) for job_id, state in states.items() if state is JobState.FAILED]
        parked = [journal.job(job_id) for job_id, state in states.items() if state is JobState.PARKED]
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to resume")
        return 130
    finally:
        stop.set()
        for worker in workers:
            worker.interrupt()
        for thread in threads:
            thread.join()
        for worker in workers:
            worker.backend.close()
        journal.close()
        lock.release()
    for path, result in rejected:
        console.print(f"skipped {path}: {result.reason}")
    for job in failed:
        console.print(f"failed  job {job.id} {job.rel_path}: {job.last_error}")
    for job in parked:
        console.print(f"parked  job {job.id} {job.rel_path}: {job.last_error} (fix it and run batch again)")
    done = finished - len(failed) - len(parked)
    console.print(
        f"{done} done, {len(failed)} failed, {len(parked)} parked, "
        f"{len(rejected)} skipped of {len(job_ids) + len(rejected)} image(s)"
    )
    return 1 if failed or parked or rejected else 0


def _follow(journal: Journal, job_ids: list[int], console: Console) -> int:
    """Progress until every job of the batch is done or failed; returns how many finished."""
    finished_states = (JobState.DONE, JobState.FAILED, JobState.PARKED)  # parked waits for a person, not for us
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    stop = threading.Event()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("videos", total=len(job_ids))
        while True:
            finished = sum(1 for state in journal.states(job_ids).values() if state in finished_states)
            progress.update(task, completed=finished)
            if finished == len(job_ids):
                return finished
            stop.wait(POLL_SECONDS)
