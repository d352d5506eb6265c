"""A worker's source files: reading the image, following its content when moved, offline roots, where the video
goes, and moving the source after (`after: move`, `on_failure: move`). A mixin of Worker."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from i2vd.config.load import Config, WatchRoot
from i2vd.core.images import read_regular_file
from i2vd.core.logs import job_fields
from i2vd.ingest import failed_folder
from i2vd.ingest.follow import present_copy
from i2vd.ingest.watcher import link_below
from i2vd.jobs import finished
from i2vd.render import output
from i2vd.store.journal import Job, JobState

log = logging.getLogger("i2vd.worker")


class SourceFiles:
    def _read_source(self, job: Job) -> bytes:
        """The job's image; a path through a linked folder is refused (links are never followed)."""
        source = Path(job.source_path)
        link = link_below(Path(job.root) if job.root else None, source)
        if link is not None:
            # As good as gone: what lies behind a link is never read (it may be outside every root).
            raise FileNotFoundError(errno.ENOENT, f"{link} is a symbolic link, never followed", str(source))
        return read_regular_file(source)

    def _follow_content(self, job: Job) -> tuple[tuple[Job, bytes] | None, frozenset[str]]:
        """The job's file is gone: the same content elsewhere under a root (a copy, a move) is used instead.
        Also returns the places looked at, for the "gone" verdict (outcomes.Gone)."""
        found, examined = present_copy(self.config, self.journal, job)
        if found is None:
            return None, examined
        path, root, data = found
        moved = self.journal.relocate(
            job.id, str(path), str(root.path), path.relative_to(root.path).as_posix(), from_states=(JobState.RUNNING,)
        )
        if moved is None:
            return None, examined
        log.info(
            "job %d: %s is gone; its content is at %s",
            job.id,
            job.rel_path,
            moved.rel_path,
            extra=job_fields(job.id, moved.source_path, "running"),
        )
        return (moved, data), examined

    def _root_offline(self, root: str) -> bool:
        """A watch root that is missing, or a mount point (when first seen) that is no longer mounted."""
        if not root:
            return False
        path = Path(root)
        if not path.is_dir():
            return True
        if self.mounts.is_mount_point(path):
            self.mounts.observe([path])
            return False
        return self.mounts.was_mount_point(path)

    def _note_mount_roots(self, config: Config) -> None:
        self.mounts.observe([root.path for root in config.watch if root.path.is_dir()])

    def _root(self, job: Job) -> WatchRoot | None:
        return self.config.root_for(Path(job.root)) if job.root else None

    def _destination(self, job: Job) -> Path:
        if job.output_path:
            return Path(job.output_path)
        root = self._root(job)
        output_dir = root.output_dir if root else self.config.output_dir
        first = output.default_video_path(output_dir, job.rel_path, job.output_name)
        return output.choose_path(
            first,
            job.idem_key,
            lambda candidate: self.journal.set_output_path(job.id, str(candidate)),
            job=(job.id, job.source_sha256),
            policy=(job.profile.get("fields") or {}).get("collision", "suffix"),
            take_over=lambda candidate: self.journal.take_output_path(job.id, str(candidate)),
        )

    def _move_failed(self, job: Job, error: str) -> None:
        """`on_failure: move`: the source of a job failed for good into <root>/.i2vd-failed/."""
        failed_folder.move_failed_source(self.config, job, error, self.clock.now())

    def _after(self, job: Job) -> None:
        """`after: move`: the source moves into <root>/.i2vd-done/ only once its video is safe."""
        root = self._root(job)
        if root is not None and root.after == "move":
            finished.move_to_done_folder(root, job)
