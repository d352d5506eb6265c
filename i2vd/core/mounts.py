"""Which file system a hot folder lives on, from /proc/self/mountinfo.

inotify sees only changes made through this kernel: on an SMB or NFS share,
files written by a Mac or a Windows PC arrive without an event. `poll: auto`
therefore polls on network file systems and uses inotify elsewhere.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("i2vd.mounts")

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_TYPES = (
    "cifs",
    "smb3",
    "smbfs",
    "nfs",
    "nfs4",
    "9p",
    "fuse.*",
    "fuseblk",
    "afs",
    "ceph",
    "glusterfs",
    "lustre",
    "davfs",
    "ncpfs",
    "virtiofs",
)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fs_type: str
    source: str

    @property
    def is_network(self) -> bool:
        return any(fnmatch.fnmatchcase(self.fs_type, pattern) for pattern in NETWORK_TYPES)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue
        separator = fields.index("-")
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]), fs_type=fields[separator + 1], source=_unescape(fields[separator + 2])
            )
        )
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount a path lives on: the longest mount point that contains it (later mounts shadow earlier ones)."""
    text = str(path)
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = text == point or text.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def read_mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    try:
        return parse_mountinfo(mountinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []


def should_poll(setting: object, path: Path, mounts: list[Mount] | None = None) -> tuple[bool, str]:
    """(poll?, why) for a root's `poll:` setting: true, false, or auto (poll on network file systems)."""
    if setting is True:
        return True, "poll: true"
    if setting is False:
        return False, "poll: false"
    mount = mount_of(path, read_mounts() if mounts is None else mounts)
    if mount is None:
        return False, "file system unknown"
    if mount.is_network:
        return True, f"{mount.fs_type} network file system at {mount.mount_point}"
    return False, f"{mount.fs_type} at {mount.mount_point}"


class MountMemory:
    """Which watch roots were ever seen as mount points (mounted after i2vd started, too).

    A root that was a mount point and no longer is has lost its share: its files are
    offline, not deleted. The memory is kept in a small file under state_dir, so the
    worker and the intake share it and a restart while the share is away keeps it.
    """

    FILE_NAME = "mount-roots.json"

    def __init__(self, state_dir: Path | None, mountinfo: Path = MOUNTINFO):
        self.mountinfo = mountinfo
        self._file = state_dir / self.FILE_NAME if state_dir is not None else None
        self._seen: set[str] = set()

    def is_mount_point(self, path: Path) -> bool:
        mounts = read_mounts(self.mountinfo)
        if not mounts:  # no mountinfo (not Linux, no /proc): ask the kernel through stat
            return os.path.ismount(path)
        real = os.path.realpath(path)
        return any(mount.mount_point == real for mount in mounts)

    def observe(self, roots: list[Path]) -> None:
        """Remember each of `roots` that is a mount point now."""
        mounted = {str(root) for root in roots if self.is_mount_point(root)}
        if mounted - self._load():
            self._seen |= mounted
            self._save()

    def was_mount_point(self, root: Path) -> bool:
        return str(root) in self._load()

    def _load(self) -> set[str]:
        if self._file is not None:
            try:
                self._seen |= set(json.loads(self._file.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                pass  # not written yet, or unreadable: what this process saw still counts
        return self._seen

    def _save(self) -> None:
        if self._file is None:
            return
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._file.with_name(f".{self.FILE_NAME}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(sorted(self._seen)), encoding="utf-8")
            os.replace(temporary, self._file)
        except OSError as error:
            log.warning("cannot remember mount points in %s: %s", self._file, error.strerror or error)
