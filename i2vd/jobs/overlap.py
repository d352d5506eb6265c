"""A job's video checked, tagged and written beside the server's next call.

The server call is the only thing a GPU waits for. Once a reply is received, keeping it under
state_dir (received.keep: three fsyncs, after which a crash never asks the server again),
probing every frame, tagging the copy, writing the audit record and marking the job done take
a few hundred milliseconds of ffmpeg and fsync: they run on a finishing thread while the
worker sends the next job (a crash before the reply is kept asks the server again, as a crash
during the call does; the finishing thread keeps it first, as soon as it starts). One job at
a time on each server stays the rule (the finisher never calls the server); at most one video
per worker is being finished, so the worker waits for it before handing over the next. The
finished job keeps its lease until its outcome is recorded: a crash meanwhile leaves it running in the journal,
recover_running puts it back in the queue, and its next turn finds the output written
(done) or the kept video (written without a new call).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from i2vd.jobs import received
from i2vd.jobs.beside import BesideThread
from i2vd.jobs.outcomes import Outcome
from i2vd.render.backends.base import VideoReply
from i2vd.store.journal import Job


@dataclass(frozen=True)
class Finishing:
    """Not an outcome yet: the reply is received; keeping, checking, tagging and writing it come beside
    the next call."""

    destination: Path
    reply: VideoReply
    server: dict


class Keeping:
    """Worker's side: a received reply kept under state_dir, then written (a mixin of Worker)."""

    def _keep_and_write(
        self, job: Job, destination: Path, reply: VideoReply, server: dict, *, beat: bool = True
    ) -> Outcome:
        try:
            video = received.keep(self.incoming, job, reply, server)
        except OSError as error:
            received.discard_reply(reply)
            return self._wait_for_disk(f"cannot keep the video under state_dir: {error.strerror or error}")
        return self._write_output(job, destination, video, server, reply.server_seconds, beat=beat)


class Finisher:
    """At most one video at a time being finished beside a worker's calls (on a thread kept between jobs)."""

    def __init__(self, name: str):
        self.name = name
        self._beside = BesideThread(name)

    @property
    def busy(self) -> bool:
        return self._beside.busy

    def start(self, work: Callable[[], None], after: threading.Event | None = None) -> None:
        """Run `work` on the finishing thread, once the previous video is finished (and the next request has
        left: `after`, beside.py)."""
        self._beside.submit(work, after)

    def wait(self) -> None:
        """Until the video being finished (if any) is written and its outcome recorded."""
        self._beside.wait()

    def close(self) -> None:
        """The video being finished written, the finishing thread ended (the worker's run is over)."""
        self._beside.close()
