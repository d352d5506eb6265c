"""Reading, hashing and decoding a burst of new images in worker processes, beside the intake thread.

SPEC "Performance targets" (a first start over 100,000 images): the full Pillow decode, the read
and the SHA-256 of each file are CPU work that one Python thread cannot spread over cores. For a
burst of at least POOL_MIN_FILES files, the intake hands them to a small process pool in chunks,
in order, and takes each file's result when its turn comes (Lookahead.get): while it records
file i, the pool already reads and decodes the next ones. A single file dropped in a hot folder
is read in the intake thread as before, with no process started.

What the pool says is only a head start: the intake still looks at each file itself (links,
its stat, what the journal knows) and takes the pool's result only when the file's size and
mtime are those the pool read; anything else (a read error, a link, a file changed since) is
read again in the intake thread, exactly as without a pool. Behind a symbolic link nothing is
read, in the pool either.

A bad file fails only its own job: a decoder that kills its process (a crash inside a C
plugin) breaks the pool; the chunk is examined again in a fresh pool, then file by file, and the
file that breaks it alone is the one whose job fails ("its decoding crashed the decoder process").
The pool is started when first needed and shut down when the intake loop ends.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from i2vd.config.load import Config
from i2vd.core.images import BadImage, ImageFacts, inspect_image, read_ahead, read_regular_file, sha256_of
from i2vd.core.listing import burst_listing
from i2vd.ingest.chunks import root_path, worth_reading_ahead
from i2vd.ingest.reasons import image_limit_bytes
from i2vd.ingest.settings import job_settings
from i2vd.ingest.watcher import link_below
from i2vd.store.journal import NewJob

log = logging.getLogger("i2vd.intake")

POOL_MIN_FILES = 16  # fewer new files than this are read in the intake thread: no process is worth starting
ORPHAN_FILES = 1_000  # files read ahead for later bursts that are kept at most
CHUNK_FILES = 100  # files per task sent to a pool process (a folder is listed once per chunk: see listing.py)
WAIT_SECONDS = 10.0  # a chunk not examined by then (a hung share): its files are read in the intake thread
ALONE_SECONDS = 10.0  # one file of a chunk that broke the pool, alone in a fresh process
POLL_SECONDS = 0.05
PARENT_CHECK_SECONDS = 1.0
CRASHED = "its decoding crashed the decoder process (a bug in an image plugin?)"


@dataclass(frozen=True)
class Examined:
    """What a pool process found in one file: the size and mtime it read at, its hash, its facts or why not."""

    size: int
    mtime_ns: int
    sha256: str
    facts: ImageFacts | None = None
    bad: str | None = None  # BadImage's reason
    crashed: bool = False  # decoding it killed the process: read and hash it in the intake, do not decode it
    new_job: NewJob | None = None  # the job it makes with the settings of `settings_key` (a good image only)
    settings_key: tuple[str, int] | None = None  # (profile asked for, the intake's settings generation)

    def fits(self, info: os.stat_result) -> bool:
        """The file is still what was read (a crashed file is read again anyway)."""
        return self.crashed or (self.size, self.mtime_ns) == (info.st_size, info.st_mtime_ns)

    def facts_or_raise(self, name: str) -> ImageFacts:
        if self.crashed:
            raise BadImage(f"{name}: {CRASHED}")
        if self.bad is not None:
            raise BadImage(self.bad)
        return self.facts


@dataclass(frozen=True)
class SettingsContext:
    """What a pool process needs to work out a good image's job as the intake would (ingest/settings.py).

    `key` is the intake's (requested profile, settings generation) when the burst was handed over: a
    sidecar event or a new config since then makes the intake work the job out again itself.
    """

    config_blob: bytes  # the pickled Config: sent with each chunk, unpickled once per process and config
    key: tuple[str, int]

    @classmethod
    def of(cls, config: Config, profile_name: str, generation: int) -> SettingsContext:
        """The context for this config and key: the config is pickled once for them, not once per burst."""
        global _last_context
        key = (profile_name, generation)
        if _last_context is None or _last_context[0] is not config or _last_context[1].key != key:
            _last_context = config, cls(pickle.dumps(config), key)
        return _last_context[1]


_last_context: tuple[Config, SettingsContext] | None = None  # in the daemon: the intake's last (it holds the config)


_configs: dict[bytes, Config] = {}  # in a pool process: the config of the last context seen


def _config_of(context: SettingsContext) -> Config:
    config = _configs.get(context.config_blob)
    if config is None:
        _configs.clear()
        config = _configs[context.config_blob] = pickle.loads(context.config_blob)
    return config


def with_settings(
    examined: Examined | None, path: str, root_text: str | None, context: SettingsContext | None
) -> Examined | None:
    """In a pool process: a good image's examination with the job it makes (none when working it out fails:
    the intake thread then does it itself and says why)."""
    if examined is None or context is None or examined.facts is None or examined.crashed:
        return examined
    try:
        config = _config_of(context)
        roots = [root for root in config.watch if str(root.path) == root_text]
        if root_text is not None and not roots:
            return examined  # a root of another config: the intake thread decides
        root = roots[0] if roots else None
        new_job = job_settings(
            config, Path(path), root, examined.sha256, examined.size, examined.facts, context.key[0], None
        )
        new_job.params_json, new_job.profile_json  # noqa: B018 - encoded here, sent with the job, written as they are
    except Exception:  # noqa: BLE001 - the intake thread works it out again and reports what it raises
        return examined
    return Examined(
        examined.size, examined.mtime_ns, examined.sha256, examined.facts, new_job=new_job, settings_key=context.key
    )


NOT_YET = Examined(-1, -1, "")  # the intake's slice is over before the pool got to this file: it comes again


def examine_file(path: str, root: str | None) -> Examined | None:
    """In a pool process: read, hash and decode one file; None when the intake thread must read it itself."""
    source = Path(path)
    if link_below(root_path(root) if root else None, source) is not None:
        return None  # never read behind a link
    try:
        before = os.lstat(path)
        data = read_regular_file(source)
    except OSError:
        return None  # the intake thread reads it and says why
    if len(data) != before.st_size:
        return None  # still changing
    facts = bad = None
    try:
        facts = inspect_image(data, source.name)
    except BadImage as problem:
        bad = str(problem)
    return Examined(before.st_size, before.st_mtime_ns, sha256_of(data), facts, bad)


Examiner = Callable[[str, str | None], Examined | None]


def _start_pool_process(nice: int, parent: int) -> None:
    """In each pool process: niced, and gone as soon as the daemon (`parent`) is, kill -9 included, even one that
    died while this process was still starting."""
    os.nice(nice)

    def watch() -> None:
        # A dead daemon's pool processes would wait for work forever: their siblings hold the queue's pipe open.
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="i2vd-pool-parent", daemon=True).start()


def _examine_chunk(
    function: Callable, files: list[tuple[str, str | None]], context: SettingsContext | None = None
) -> list[Examined | None]:
    # A file over its root's watch.max_image_mb is not read here either: the intake thread fails it unread.
    limits = {str(root.path): image_limit_bytes(root) for root in _config_of(context).watch} if context else None
    with burst_listing():  # a chunk's files share their folders: each is listed once (sidecars, links)
        read_ahead([path for path, root in files if worth_reading_ahead(path, root)])
        return [
            None
            if limits is not None and _over(path, limits.get(root, image_limit_bytes(None)))
            else with_settings(function(path, root), path, root, context)
            for path, root in files
        ]


def _over(path: str, limit_bytes: int) -> bool:
    try:
        return os.lstat(path).st_size > limit_bytes
    except OSError:
        return False  # examine_file says why, or the intake thread does


class ExaminePool:
    """A bounded process pool for the intake, started lazily, shut down by close()."""

    def __init__(
        self,
        workers: int | None = None,
        function: Examiner = examine_file,
        beat: Callable[[float, str], None] = lambda seconds, doing: None,
    ):
        # As many as there are cores (at most 4): where decoding dominates, the intake thread mostly waits.
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.function = function
        self._executor: ProcessPoolExecutor | None = None
        # Chunks being examined when their slice ended: the next slice waits for them instead of asking again.
        self.orphans: list[tuple[list[tuple[str, str | None]], Future]] = []
        self.unavailable = False
        self.beat = beat  # the intake's heartbeat: told before a wait longer than its slice (after a crash)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn: the daemon has threads (and their locks): a forked child could inherit one held.
            context = multiprocessing.get_context("spawn")
            # Niced: background decoding yields the cores to the worker, the web UI and `i2vd status`.
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_start_pool_process, initargs=(10, os.getpid())
            )
        return self._executor

    @property
    def started(self) -> bool:
        return self._executor is not None

    def warm(self) -> None:
        """Start the processes now (a burst is settling): spawning them, ~0.5 s of imports each, then overlaps
        the settle window instead of holding up the burst's first slice."""
        if self.unavailable or self._executor is not None:
            return
        try:
            for _ in range(self.workers):
                self._pool().submit(os.getpid)
        except (RuntimeError, OSError) as error:
            self._cannot_start(error)

    def _cannot_start(self, error: Exception) -> None:
        """No process can start here (a program without a __main__ guard, no memory): the intake thread reads."""
        log.warning("the intake's process pool cannot start (%s): images are read in the intake thread", error)
        self.unavailable = True
        self.close()

    def _restart(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        self.orphans = []
        self._restart()

    def lookahead(
        self, files: list[tuple[str, str | None]], context: SettingsContext | None = None
    ) -> Lookahead | None:
        """Start examining `files` (path, root) in order; None when there are too few to be worth it."""
        if self.unavailable or (len(files) < POOL_MIN_FILES and not self.orphans):
            return None
        try:
            return Lookahead(self, files, context)
        except (RuntimeError, OSError) as error:
            self._cannot_start(error)
            return None

    def prefetch(self, files: list[tuple[str, str | None]], context: SettingsContext | None = None) -> None:
        """Start on the next burst's files while this one is recorded: the next lookahead adopts them, so the
        pool's processes never wait for the intake thread between two bursts."""
        if self.unavailable or len(files) < POOL_MIN_FILES:
            return
        queued = {path for chunk, _ in self.orphans for path, _ in chunk}
        files = [(path, root) for path, root in files if path not in queued]
        try:
            for start in range(0, len(files), CHUNK_FILES):
                chunk = files[start : start + CHUNK_FILES]
                self.orphans.append((chunk, self.submit(chunk, context)))
        except (RuntimeError, OSError) as error:
            self._cannot_start(error)

    def submit(self, files: list[tuple[str, str | None]], context: SettingsContext | None = None) -> Future:
        """A chunk to a working pool: one broken by a process that died is replaced first."""
        try:
            return self._pool().submit(_examine_chunk, self.function, files, context)
        except BrokenProcessPool:
            self._restart()
            return self._pool().submit(_examine_chunk, self.function, files, context)

    def one_by_one(self, files: list[tuple[str, str | None]]) -> dict[str, Examined]:
        """A chunk that broke the pool twice: file by file, so the file that breaks it alone is found."""
        results = {}
        for path, root in files:
            self.beat(ALONE_SECONDS + WAIT_SECONDS, "finding the file that crashed the decoder process")
            try:
                results.update(_results([(path, root)], self.submit([(path, root)]).result(timeout=ALONE_SECONDS)))
            except (BrokenProcessPool, CancelledError, FutureTimeout):
                # A file of a chunk that killed a process is never decoded in the daemon's own process.
                log.error("%s: %s", path, CRASHED)
                results[path] = Examined(-1, -1, "", crashed=True)
        return results


def _results(files: list[tuple[str, str | None]], examined: list[Examined | None]) -> dict[str, Examined]:
    return {path: result for (path, _), result in zip(files, examined) if result is not None}


class Lookahead:
    """A burst being examined by the pool, chunk by chunk, ahead of the intake thread."""

    def __init__(self, pool: ExaminePool, files: list[tuple[str, str | None]], context: SettingsContext | None):
        self._pool = pool
        self._context = context
        self._futures: dict[int, Future] = {}
        self._done: dict[int, dict[str, Examined]] = {}
        wanted = {path for path, _ in files}
        adopted, later = [], []
        for chunk, future in pool.orphans:
            (adopted if any(path in wanted for path, _ in chunk) else later).append((chunk, future))
        # Read ahead for the bursts after this one stays; beyond ORPHAN_FILES (read ahead for bursts that came
        # otherwise: files changed, say) the oldest are dropped.
        while sum(len(chunk) for chunk, _ in later) > ORPHAN_FILES:
            later.pop(0)[1].cancel()
        pool.orphans = later
        taken = {path for chunk, _ in adopted for path, _ in chunk}
        files = [(path, root) for path, root in files if path not in taken]
        self._chunks = [chunk for chunk, _ in adopted]
        self._chunks += [files[start : start + CHUNK_FILES] for start in range(0, len(files), CHUNK_FILES)]
        self._chunk_of = {path: index for index, chunk in enumerate(self._chunks) for path, _ in chunk}
        for index, chunk in enumerate(self._chunks):
            self._futures[index] = adopted[index][1] if index < len(adopted) else pool.submit(chunk, context)

    def get(self, path: str, enough: Callable[[], bool] | None = None) -> Examined | None:
        """The pool's result for `path` (waiting for its chunk), None when the intake thread must read it itself,
        or NOT_YET once `enough` says the intake's time is up: a file the pool was given is never decoded in the
        daemon's own process while the pool may still crash on it."""
        index = self._chunk_of.get(path)
        if index is None:
            return None
        if index not in self._done:
            future, waited = self._futures.get(index), 0.0
            while future is not None and not future.done() and waited < WAIT_SECONDS:
                if enough is not None and enough():
                    return NOT_YET
                wait([future], timeout=POLL_SECONDS)
                waited += POLL_SECONDS
            self._done[index] = self._wait(index)
        return self._done[index].get(path)

    def _wait(self, index: int) -> dict[str, Examined]:
        chunk, future = self._chunks[index], self._futures.pop(index, None)
        try:
            if future is not None:
                return _results(chunk, future.result(timeout=0))
        except (BrokenProcessPool, CancelledError):
            pass  # a process died while this chunk waited or ran (this chunk's file, or another's)
        except FutureTimeout:
            return {}
        except Exception:  # noqa: BLE001 - the pool's own trouble, not a file's: the intake thread reads them
            log.exception(
                "the intake's process pool failed on %d file(s); reading them in the intake thread", len(chunk)
            )
            return {}
        self._pool.beat(2 * WAIT_SECONDS, "examining again after the decoder process died")
        try:  # once more in a working pool; then file by file
            return _results(chunk, self._pool.submit(chunk, self._context).result(timeout=WAIT_SECONDS))
        except (BrokenProcessPool, CancelledError):
            return self._pool.one_by_one(chunk)
        except FutureTimeout:
            return {}

    def cancel(self) -> None:
        """The intake stopped early (its slice's time is up): chunks not started are not examined, and those
        being examined are kept for the next slice."""
        for index, future in self._futures.items():
            if not future.cancel():
                self._pool.orphans.append((self._chunks[index], future))
        self._futures.clear()
