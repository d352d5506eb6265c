"""Which file system a hot folder lives on, from /proc/self/mountinfo.

inotify sees only changes made through this kernel: on an SMB or NFS share,
files written by a Mac or a Windows PC arrive without an event. `poll: auto`
therefore polls on network file systems and uses inotify elsewhere.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_TYPES = ("cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "fuse.*", "fuseblk", "afs", "ceph", "glusterfs", "lustre", "davfs", "ncpfs", "virtiofs")


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
        mounts.append(Mount(mount_point=_unescape(fields[4]), fs_type=fields[separator + 1], source=_unescape(fields[separator + 2])))
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
