"""Profiles, sidecars and captions through the real daemon: what the SERVER RECEIVED is the proof.

`i2vd run` is a subprocess watching a temp hot folder with real inotify; the fake
/predict server on 127.0.0.1 records every request (prompt, frames, fps, steps,
guidance, resolution index and the image's sha256), so each check maps an image's
content to the request it caused. Several folders with different sidecars share one
daemon run to keep the file quick.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import yaml
from PIL import Image

from i2vd.store.journal import Job, Journal
from tests.end_to_end.harness import (
    REPO,
    journal_counts,
    run_cli,
    videos,
    write_config,
)
from tests.support.fakes import FakePredictServer, ReceivedRequest, wait_for, write_image
from tests.support.fakes import write_text as write

EXAMPLE_PROFILES = yaml.safe_load((REPO / "config.example.yaml").read_text(encoding="utf-8"))["profiles"]
BEACH = "Waves crashing, camera panning left"
MOUNTAIN = "Sunrise over mountains, time-lapse effect"
FOREST = "Leaves rustling in wind, gentle dolly forward"
ROTATE = "Product rotating slowly on white background"
TIMEOUT = 30


class Pictures:
    """Writes distinct real JPEGs and remembers which path each content hash came from."""

    def __init__(self) -> None:
        self.by_sha: dict[str, str] = {}
        self._count = 0

    def write(self, path: Path, data: bytes | None = None) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            self._count += 1
            data = write_image(
                path, color=(self._count * 23 % 256, 255 - self._count * 11 % 256, self._count * 5 % 256)
            )
        else:
            path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        assert digest not in self.by_sha, "images must have distinct content"
        self.by_sha[digest] = path.name
        return digest


def exif_jpeg(make: str, model: str, taken: str) -> bytes:
    exif = Image.Exif()
    exif[271], exif[272] = make, model
    exif.get_ifd(34665)[36867] = taken  # DateTimeOriginal
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 140, 220)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def requests_for(server: FakePredictServer, sha: str) -> list[ReceivedRequest]:
    return [request for request in server.requests if request.image_sha256 == sha]


def received(server: FakePredictServer, sha: str) -> tuple:
    """(prompt, resolution index, frames, fps, steps, guidance) of the one request for this image."""
    (request,) = requests_for(server, sha)
    return request.prompt, request.resolution_index, request.frames, request.fps, request.steps, request.guidance


def journal_jobs(state_dir: Path) -> dict[str, Job]:
    journal = Journal(state_dir / "journal.sqlite3")
    try:
        return {job.rel_path: job for job in journal.jobs()}
    finally:
        journal.close()


def sidecar_config(tmp_path: Path, server: FakePredictServer) -> Path:
    return write_config(tmp_path, server.url, profiles=EXAMPLE_PROFILES)


# -- profiles, folder and image sidecars, vars, captions and EXIF decide the request ------------


def test_sidecars_captions_and_exif_decide_what_the_server_receives_and_the_job_and_record_keep_it(
    tmp_path, fake_server, daemon_factory
):
    config = sidecar_config(tmp_path, fake_server)
    root = tmp_path / "in"
    daemon = daemon_factory(config).start()
    pictures = Pictures()

    write(root / "i2vd.yaml", "profile: forest\nvars: {place: somewhere}\n")
    oak = pictures.write(root / "woods" / "oak.jpg")
    write(root / "beach" / "i2vd.yaml", "profile: beach\n")
    shore = pictures.write(root / "beach" / "shore.jpg")
    write(
        root / "beach" / "north" / "i2vd.yaml",
        "prompt: 'Waves at {{ place }}, {{ subject }}'\nvars: {place: Cornwall}\nfps: 10\n",
    )
    cove_1 = pictures.write(root / "beach" / "north" / "cove_1.jpg")
    write(root / "beach" / "north" / "cove_2.jpg.yaml", "vars: {place: Kynance}\nfps: 12\nguidance: 7.5\n")
    cove_2 = pictures.write(root / "beach" / "north" / "cove_2.jpg")
    write(root / "products" / "i2vd.yaml", "profile: product-rotate\n")
    mug = pictures.write(root / "products" / "mug.jpg")
    write(root / "captions" / "i2vd.yaml", "profile: default\n")
    dog = pictures.write(root / "captions" / "dog.jpg")
    write(
        root / "captions" / "dog.txt", "  A dog leaps into the surf \n\n"
    )  # after its image, within the settle window
    cat = pictures.write(root / "captions" / "cat_nap.jpg")
    write(root / "exif" / "i2vd.yaml", "prompt: 'Shot on {{ exif_camera }} at {{ exif_date }} in {{ folder }}'\n")
    shot = pictures.write(root / "exif" / "shot.jpg", exif_jpeg("Canon", "EOS R5", "2024:06:01 10:00:00"))

    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 8,
        timeout=TIMEOUT,
        message=f"8 done; log:\n{daemon.log()}",
    )

    assert received(fake_server, oak) == (FOREST, 1, 16, 8, 50, 9.0)
    assert received(fake_server, shore) == (BEACH, 1, 16, 8, 50, 9.0)
    assert received(fake_server, cove_1) == ("Waves at Cornwall, cove 1", 1, 16, 10, 50, 9.0)
    assert received(fake_server, cove_2) == ("Waves at Kynance, cove 2", 1, 16, 12, 50, 7.5)
    assert received(fake_server, mug) == (ROTATE, 1, 16, 12, 60, 9.0)
    assert received(fake_server, dog) == ("A dog leaps into the surf", 1, 16, 8, 50, 9.0)
    assert received(fake_server, cat) == ("A cat nap scene with smooth motion", 1, 16, 8, 50, 9.0)
    assert received(fake_server, shot) == ("Shot on Canon EOS R5 at 2024:06:01 10:00:00 in exif", 1, 16, 8, 50, 9.0)
    assert len(fake_server.requests) == 8 and fake_server.rejections == []

    # The job stores the resolved profile: `i2vd jobs --json`.
    listed = {job["rel_path"]: job for job in json.loads(run_cli(config, "jobs", "--json").stdout)}
    cove = listed["beach/north/cove_2.jpg"]
    assert (cove["profile_name"], cove["prompt"]) == ("beach", "Waves at Kynance, cove 2")
    assert cove["params"] == {"resolution": "512p", "frames": 16, "fps": 12, "steps": 50, "guidance": 7.5, "seed": None}
    assert cove["profile"]["sidecars"] == [
        str(root / "i2vd.yaml"),
        str(root / "beach" / "i2vd.yaml"),
        str(root / "beach" / "north" / "i2vd.yaml"),
        str(root / "beach" / "north" / "cove_2.jpg.yaml"),
    ]
    assert cove["profile"]["fields"]["prompt"] == "Waves at {{ place }}, {{ subject }}"
    assert (cove["profile"]["fields"]["fps"], cove["profile"]["fields"]["guidance"]) == (12, 7.5)
    assert len(cove["profile"]["hash"]) == 16
    assert cove["profile"]["hash"] != listed["beach/north/cove_1.jpg"]["profile"]["hash"]

    # ... and so does the metadata record beside the video.
    assert [video.relative_to(tmp_path / "out").as_posix() for video in videos(tmp_path / "out")] == [
        "beach/north/cove_1.mp4",
        "beach/north/cove_2.mp4",
        "beach/shore.mp4",
        "captions/cat_nap.mp4",
        "captions/dog.mp4",
        "exif/shot.mp4",
        "products/sku_mug_rotate.mp4",
        "woods/oak.mp4",
    ]
    record = json.loads((tmp_path / "out" / "products" / "sku_mug_rotate.mp4.json").read_text())
    product = listed["products/mug.jpg"]
    assert (record["profile"], record["prompt"]) == ("product-rotate", ROTATE)
    assert record["parameters"] == {
        "resolution": "512p",
        "frames": 16,
        "fps": 12,
        "steps": 60,
        "guidance": 9.0,
        "seed": None,
    }
    assert record["profile_hash"] == product["profile"]["hash"]
    assert record["profile_fields"] == product["profile"]["fields"]
    assert record["profile_fields"]["output"] == "sku_{{ stem }}_rotate.mp4"
    assert record["sidecars"] == [str(root / "i2vd.yaml"), str(root / "products" / "i2vd.yaml")]

    # Editing a sidecar later regenerates nothing: only new images get the new settings.
    write(root / "beach" / "i2vd.yaml", "profile: mountain\n")
    shore_2 = pictures.write(root / "beach" / "shore_2.jpg")  # after the edit: proves the edit was seen
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 9,
        timeout=TIMEOUT,
        message=f"shore_2 done; log:\n{daemon.log()}",
    )
    assert received(fake_server, shore_2)[0] == MOUNTAIN
    shore_job = journal_jobs(tmp_path / "state")["beach/shore.jpg"]
    assert (shore_job.state.value, shore_job.profile_name, shore_job.prompt) == ("done", "beach", BEACH)

    # `i2vd retry ID` regenerates one, with the sidecar as it is now.
    retried = run_cli(config, "retry", str(shore_job.id))
    assert f"job {shore_job.id} beach/shore.jpg: queued with profile mountain" in retried.stdout
    wait_for(
        lambda: (
            len(requests_for(fake_server, shore)) == 2
            and journal_jobs(tmp_path / "state")["beach/shore.jpg"].state.value == "done"
        ),
        timeout=TIMEOUT,
        message=f"the retried job was not done again; log:\n{daemon.log()}",
    )
    assert requests_for(fake_server, shore)[-1].prompt == MOUNTAIN
    again = journal_jobs(tmp_path / "state")["beach/shore.jpg"]
    assert (again.profile_name, again.prompt, again.attempts) == ("mountain", MOUNTAIN, 0)
    new_record = json.loads(Path(again.output_path + ".json").read_text())
    assert (new_record["profile"], new_record["prompt"], new_record["job_id"]) == ("mountain", MOUNTAIN, shore_job.id)
    assert new_record["sidecars"] == [str(root / "i2vd.yaml"), str(root / "beach" / "i2vd.yaml")]
    assert daemon.stop() == 0
    assert len(fake_server.requests) == 10  # 8, shore_2 and the one retry: the edit itself regenerated nothing


# -- broken sidecars park their folder; fixing them releases the jobs without a restart --------


BROKEN = {  # folder: (broken sidecar, the problem it names, the fix, the prompt and fps the server then gets)
    "bad_yaml": ("profile: [beach\n", "not valid YAML", "profile: beach\n", (BEACH, 8)),
    "bad_key": (
        "profle: mountain\n",
        "profle: unknown key (did you mean 'profile'?)",
        "profile: mountain\n",
        (MOUNTAIN, 8),
    ),
    "bad_value": ("profile: forest\nfps: 40\n", "fps: 40 is above 24", "profile: forest\nfps: 20\n", (FOREST, 20)),
    "bad_profile": (
        "profile: beech\n",
        "profile: unknown profile 'beech' (did you mean 'beach'?)",
        "profile: beach\n",
        (BEACH, 8),
    ),
    "server": (
        "profile: beach\nserver: {url: 'http://127.0.0.1:9'}\n",
        "server: not allowed in a sidecar",
        "profile: beach\n",
        (BEACH, 8),
    ),
    "dirs": (
        "output_dir: /tmp/stolen\nstate_dir: /tmp/stolen\n",
        "output_dir: not allowed in a sidecar",
        "profile: mountain\nfps: 6\n",
        (MOUNTAIN, 6),
    ),
}


def test_broken_sidecars_park_their_folders_visibly_and_fixing_them_releases_the_jobs_without_a_restart(
    tmp_path, fake_server, daemon_factory
):
    config = sidecar_config(tmp_path, fake_server)
    root = tmp_path / "in"
    daemon = daemon_factory(config).start()
    pid = daemon.process.pid
    pictures = Pictures()
    shas: dict[str, list[str]] = {}
    for folder, (broken, *_) in BROKEN.items():
        write(root / folder / "i2vd.yaml", broken)
        shas[folder] = [pictures.write(root / folder / "a.jpg"), pictures.write(root / folder / "sub" / "b.jpg")]
    write(root / "escape" / "i2vd.yaml", "output: '../{{ stem }}.mp4'\n")
    pictures.write(root / "escape" / "e.jpg")
    write(root / "typo" / "i2vd.yaml", "profile: beach\nprompt: 'A {{ moood }} sea'\nvars: {mood: calm}\n")
    pictures.write(root / "typo" / "t.jpg")
    good = pictures.write(root / "fine" / "g.jpg")
    parked_count = 2 * len(BROKEN)

    wait_for(
        lambda: (
            journal_counts(tmp_path / "state")
            == {"queued": 0, "running": 0, "parked": parked_count, "done": 1, "failed": 2}
        ),
        timeout=TIMEOUT,
        message=f"parked, failed and done; log:\n{daemon.log()}",
    )
    assert [request.image_sha256 for request in fake_server.requests] == [good]
    assert daemon.process.poll() is None

    status = run_cli(config, "status").stdout
    parked_lines = [line for line in status.splitlines() if line.startswith("parked:")]
    assert len(parked_lines) == len(BROKEN), status
    for folder, (_, problem, *_) in BROKEN.items():
        sidecar = root / folder / "i2vd.yaml"
        (line,) = [line for line in parked_lines if f"sidecar {sidecar}: " in line]
        assert "2 job(s)" in line and f"{folder}/a.jpg" in line and f"{folder}/sub/b.jpg" in line and problem in line, (
            line
        )
        assert f"parked: sidecar {sidecar}: " in daemon.log() and problem in daemon.log()
    groups = json.loads(run_cli(config, "status", "--json").stdout)["parked"]
    assert sorted(len(group["files"]) for group in groups) == [2] * len(BROKEN)
    assert all(
        group["reason"].startswith(f"sidecar {root / group['files'][0].split('/')[0] / 'i2vd.yaml'}: ")
        for group in groups
    )
    parked_listing = run_cli(config, "jobs", "--state", "parked").stdout
    parked_jobs = json.loads(run_cli(config, "jobs", "--state", "parked", "--json").stdout)
    assert sorted(job["rel_path"] for job in parked_jobs) == sorted(
        f"{folder}/{name}" for folder in BROKEN for name in ("a.jpg", "sub/b.jpg")
    )
    for job in parked_jobs:
        folder = job["rel_path"].split("/")[0]
        assert job["state"] == "parked" and job["attempts"] == 0
        assert (
            job["last_error"].startswith(f"sidecar {root / folder / 'i2vd.yaml'}: ")
            and BROKEN[folder][1] in job["last_error"]
        )
        assert job["rel_path"] in parked_listing
    assert "profle: unknown key (did you mean 'profile'?)" in parked_listing

    failed = {
        job["rel_path"]: job["last_error"]
        for job in json.loads(run_cli(config, "jobs", "--state", "failed", "--json").stdout)
    }
    assert "'moood' is undefined" in failed["typo/t.jpg"]
    assert "'../e.mp4' must be a plain file name" in failed["escape/e.jpg"]

    for folder, (_, _, fix, _) in BROKEN.items():
        write(root / folder / "i2vd.yaml", fix)
    done = 1 + parked_count
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == done,
        timeout=TIMEOUT,
        message=f"released after the fix; log:\n{daemon.log()}",
    )

    assert daemon.process.poll() is None and daemon.process.pid == pid  # the same daemon, never restarted
    for folder, (*_, (prompt, fps)) in BROKEN.items():
        for sha in shas[folder]:
            assert received(fake_server, sha)[0::3] == (prompt, fps), folder
    assert len(fake_server.requests) == done
    assert not [line for line in run_cli(config, "status").stdout.splitlines() if line.startswith("parked:")]
    assert all(
        job["attempts"] == 0 for job in json.loads(run_cli(config, "jobs", "--json").stdout) if job["state"] == "done"
    )
    assert daemon.stop() == 0
    made = sorted(path for path in tmp_path.rglob("*.mp4"))
    assert all((tmp_path / "out") in path.parents for path in made), made  # nothing written outside the output folder
    assert not [path for path in made if path.stem == "e"]
    assert len(videos(tmp_path / "out")) == done


# -- a folder copied in with its sidecar, in any order -------------------------------------------


def test_a_folder_copied_with_its_sidecar_in_any_order_gets_the_sidecar_for_every_image(
    tmp_path, fake_server, daemon_factory
):
    config = sidecar_config(tmp_path, fake_server)
    root = tmp_path / "in"
    staging = tmp_path / "staging"
    daemon = daemon_factory(config).start()
    pictures = Pictures()
    expected: dict[str, str] = {}

    def sidecar_for(folder: str) -> str:
        return f"profile: beach\nprompt: '{folder}: {{{{ subject }}}}'\n"

    # Images first, then the sidecar, within the settle window.
    for name in ("a_1.jpg", "a_2.jpg", "a_3.jpg"):
        expected[pictures.write(root / "images_first" / name)] = f"images_first: {name[:-4].replace('_', ' ')}"
    write(root / "images_first" / "i2vd.yaml", sidecar_for("images_first"))
    # The sidecar first, then the images.
    write(root / "sidecar_first" / "i2vd.yaml", sidecar_for("sidecar_first"))
    for name in ("b_1.jpg", "b_2.jpg", "b_3.jpg"):
        expected[pictures.write(root / "sidecar_first" / name)] = f"sidecar_first: {name[:-4].replace('_', ' ')}"
    # Images in a subfolder first, then the sidecar in the folder above them.
    for name in ("c_1.jpg", "c_2.jpg"):
        expected[pictures.write(root / "parent_later" / "day1" / name)] = f"parent_later: {name[:-4].replace('_', ' ')}"
    write(root / "parent_later" / "i2vd.yaml", sidecar_for("parent_later"))
    # A whole folder moved in at once, and one copied in file by file (cp -r).
    for folder, prefix in (("moved_in", "d"), ("copied_in", "e")):
        write(staging / folder / "i2vd.yaml", sidecar_for(folder))
        for index in (1, 2, 3):
            expected[pictures.write(staging / folder / f"{prefix}_{index}.jpg")] = f"{folder}: {prefix} {index}"
    os.rename(staging / "moved_in", root / "moved_in")
    shutil.copytree(staging / "copied_in", root / "copied_in")

    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == len(expected),
        timeout=TIMEOUT,
        message=f"{len(expected)} done; log:\n{daemon.log()}",
    )
    assert daemon.stop() == 0

    got = {request.image_sha256: request.prompt for request in fake_server.requests}
    assert got == expected
    assert len(fake_server.requests) == len(expected)
    assert journal_counts(tmp_path / "state") == {
        "queued": 0,
        "running": 0,
        "parked": 0,
        "done": len(expected),
        "failed": 0,
    }
