"""The job an image makes with its profile and sidecars as they are now: queued, parked (a broken sidecar) or failed.

Nothing here reads or writes the journal, so the intake's pool processes work it out beside the intake
thread (examine_pool.py) as well as the intake thread itself (a single file, a job re-resolved).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from i2vd.config.load import Config, WatchRoot
from i2vd.config.parameter_limits import job_limits
from i2vd.config.profiles import resolve_profile
from i2vd.config.sidecars import ProfileError, SidecarError, read_caption, read_sidecars
from i2vd.core.images import ImageFacts, sha256_of
from i2vd.ingest.reasons import sidecar_profile_name
from i2vd.store.journal import NewJob


def relative_path(path: Path, root: WatchRoot | None) -> PurePosixPath:
    if root is None:
        return PurePosixPath(path.name)
    text, prefix = str(path), str(root.path).rstrip(os.sep) + os.sep
    if os.sep == "/" and text.startswith(prefix):  # Path.relative_to's work, by the text: once per file of a burst
        return PurePosixPath(text[len(prefix) :])
    return PurePosixPath(path.relative_to(root.path).as_posix())


def job_settings(
    config: Config,
    path: Path,
    root: WatchRoot | None,
    sha256: str,
    size: int,
    facts: ImageFacts | None,
    profile_name: str,
    error: str | None,
) -> NewJob:
    """The job this image makes; `error` (why it cannot be a video) makes it a failed job."""
    relative = relative_path(path, root)
    resolved = parked = None
    priority = 0
    if error is None:
        try:
            sidecars = read_sidecars(root.path if root else None, path, job_limits(config))
            priority = sidecars.priority
            resolved = resolve_profile(config, relative, facts, profile_name, sidecars, caption=read_caption(path))
        except SidecarError as problem:
            parked = str(problem)
        except ProfileError as problem:
            error = str(problem)
    # The facts are flat: asdict's deep copy was 6 % of a file's intake.
    profile = {"facts": dict(vars(facts)) if facts else None, "requested": profile_name}
    if resolved is not None:
        profile.update(fields=resolved.fields, sidecars=list(resolved.sidecars), hash=resolved.profile_hash)
    return NewJob(
        idem_key=resolved.idempotency_key(sha256)
        if resolved
        else f"{'parked' if parked else 'rejected'}:{sha256}:{sha256_of(os.fsencode(path))}",
        source_path=str(path),
        root=str(root.path) if root else "",
        rel_path=str(relative),
        source_sha256=sha256,
        source_size=size,
        profile_name=resolved.name if resolved else sidecar_profile_name(root, path, profile_name),
        prompt=resolved.prompt if resolved else "",
        params=resolved.params if resolved else {},
        output_name=resolved.output_name if resolved else None,
        profile=profile,
        priority=priority,
        error=error,
        parked=parked,
    )
