"""Finding a root's file system in /proc/self/mountinfo, and poll: auto choosing polling on network shares."""

from __future__ import annotations

from pathlib import Path

from i2vd.core.mounts import mount_of, parse_mountinfo, read_mounts, should_poll

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:45 / /srv/i2v rw,relatime - ext4 /dev/sdb1 rw
41 40 0:46 / /srv/i2v/nas rw,relatime - cifs //nas/photos rw,vers=3.0
42 27 0:47 / /mnt/nfs\\040share rw - nfs4 server:/export rw
43 27 0:48 / /mnt/sshfs rw - fuse.sshfs user@host:/ rw
44 27 0:49 / /mnt/9p rw - 9p hostshare rw
"""


def test_mountinfo_lines_are_parsed_with_escaped_spaces():
    mounts = parse_mountinfo(MOUNTINFO + "garbage line\n")
    assert [mount.mount_point for mount in mounts] == [
        "/proc",
        "/",
        "/srv/i2v",
        "/srv/i2v/nas",
        "/mnt/nfs share",
        "/mnt/sshfs",
        "/mnt/9p",
    ]
    assert mounts[3].fs_type == "cifs" and mounts[3].source == "//nas/photos"


def test_the_deepest_mount_containing_a_path_wins():
    mounts = parse_mountinfo(MOUNTINFO)
    assert mount_of(Path("/srv/i2v/nas/in/a.jpg"), mounts).fs_type == "cifs"
    assert mount_of(Path("/srv/i2v/local"), mounts).fs_type == "ext4"
    assert mount_of(Path("/srv/i2v-other"), mounts).mount_point == "/"  # a prefix of the name is not containment
    assert mount_of(Path("/mnt/nfs share/x"), mounts).fs_type == "nfs4"


def test_poll_auto_polls_on_network_file_systems_and_says_why():
    mounts = parse_mountinfo(MOUNTINFO)
    assert should_poll("auto", Path("/srv/i2v/nas/in"), mounts) == (True, "cifs network file system at /srv/i2v/nas")
    assert should_poll("auto", Path("/mnt/nfs share/in"), mounts)[0] is True
    assert should_poll("auto", Path("/mnt/sshfs/in"), mounts)[0] is True
    assert should_poll("auto", Path("/mnt/9p/in"), mounts)[0] is True
    assert should_poll("auto", Path("/srv/i2v/in"), mounts) == (False, "ext4 at /srv/i2v")
    assert should_poll(True, Path("/srv/i2v/in"), mounts) == (True, "poll: true")
    assert should_poll(False, Path("/srv/i2v/nas"), mounts) == (False, "poll: false")
    assert should_poll("auto", Path("/x"), []) == (False, "file system unknown")


def test_this_machine_mountinfo_is_readable_and_knows_tmp(tmp_path):
    mounts = read_mounts()
    assert mounts, "every Linux has /proc/self/mountinfo"
    assert mount_of(tmp_path, mounts) is not None
    assert read_mounts(tmp_path / "missing") == []


def test_mount_memory_remembers_a_root_mounted_after_start_across_instances(tmp_path):
    from i2vd.core.mounts import MountMemory

    root = tmp_path / "share"
    root.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    memory = MountMemory(tmp_path / "state", mountinfo)
    memory.observe([root])
    assert not memory.is_mount_point(root) and not memory.was_mount_point(root)
    mountinfo.write_text(f"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n36 22 0:45 / {root} rw - cifs //nas/x rw\n")
    memory.observe([root])
    mountinfo.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    assert not memory.is_mount_point(root)
    assert MountMemory(tmp_path / "state", mountinfo).was_mount_point(root), "another process (or a restart) knows it"
