"""`i2vd check` in-process (`main(["check", ...])`), read through capsys.

A real config file and a real hot-folder tree with images, folder and image sidecars
and captions under tmp_path. check is read-only: it opens no journal and takes no lock.
"""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path

import pytest
from PIL import Image

from i2vd.cli.commands import EX_CONFIG, main
from i2vd.config.load import load_config
from i2vd.core.lock import StateLock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.store.journal import Journal
from tests.support.fakes import write_image
from tests.support.fakes import write_text as write

BEACH = "Waves crashing, camera panning left"
ROTATE = "Product rotating slowly on white background"
CONFIG = f"""
state_dir: state
output_dir: out
server: {{kind: predict, url: "http://127.0.0.1:9"}}
gpu: {{enabled: false}}
watch: [{{path: in, settle_seconds: 0}}]
profiles:
  beach: {{prompt: "{BEACH}"}}
  mountain: {{prompt: "Sunrise over mountains, time-lapse effect"}}
  product-rotate:
    {{prompt: "{ROTATE}", resolution: 512p, frames: 16, fps: 12, steps: 60, output: "sku_{{{{ stem }}}}_rotate.mp4"}}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def root(config_file: Path) -> Path:
    return config_file.parent / "in"


def check(capsys: pytest.CaptureFixture, config_file: Path, *path: Path | str) -> tuple[int, str, str]:
    code = main(["check", "-c", str(config_file), *map(str, path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def image(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, color=(shade, 60, 120))
    return path


def row(out: str, image_name: str) -> list[str]:
    """The table row of one image, split into its columns (two or more spaces apart)."""
    line = next((line for line in out.splitlines() if line.startswith(image_name + " ")), None)
    assert line is not None, f"no row for {image_name} in:\n{out}"
    return re.split(r"\s{2,}", line.strip())


def errors(out: str) -> list[str]:
    return [line.removeprefix("error: ") for line in out.splitlines() if line.startswith("error: ")]


# -- all is well ------------------------------------------------------------------------------


def test_a_good_tree_exits_0_and_shows_each_image_profile_prompt_parameters_and_output(capsys, config_file, root):
    image(root / "plain" / "cat_nap.jpg", 1)
    image(root / "plain" / "dog.jpg", 2)
    write(root / "plain" / "dog.txt", "  A dog leaps into the surf \n")
    write(root / "beach" / "i2vd.yaml", "profile: beach\n")
    image(root / "beach" / "b.jpg", 3)
    write(
        root / "beach" / "north" / "i2vd.yaml",
        "prompt: 'Waves at {{ place }}, {{ subject }}'\nvars: {place: Cornwall}\nfps: 10\n",
    )
    image(root / "beach" / "north" / "cove_1.jpg", 4)
    image(root / "beach" / "north" / "cove_2.jpg", 5)
    write(root / "beach" / "north" / "cove_2.jpg.yaml", "vars: {place: Kynance}\nfps: 12\nseed: 7\n")
    write(root / "products" / "i2vd.yaml", "profile: product-rotate\n")
    image(root / "products" / "mug.png", 6)

    code, out, err = check(capsys, config_file)

    assert code == 0, out
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"config {config_file}: ok (4 profiles: beach, default, mountain, product-rotate)"
    assert row(out, "IMAGE") == ["IMAGE", "PROFILE", "PROMPT", "PARAMETERS", "OUTPUT"]
    assert row(out, "plain/cat_nap.jpg") == [
        "plain/cat_nap.jpg",
        "default",
        "A cat nap scene with smooth motion",
        "512p 16f 8fps 50st g9",
        "plain/cat_nap.mp4",
    ]
    assert row(out, "plain/dog.jpg") == [
        "plain/dog.jpg",
        "default",
        "A dog leaps into the surf",
        "512p 16f 8fps 50st g9",
        "plain/dog.mp4",
    ]
    assert row(out, "beach/b.jpg") == ["beach/b.jpg", "beach", BEACH, "512p 16f 8fps 50st g9", "beach/b.mp4"]
    assert row(out, "beach/north/cove_1.jpg") == [
        "beach/north/cove_1.jpg",
        "beach",
        "Waves at Cornwall, cove 1",
        "512p 16f 10fps 50st g9",
        "beach/north/cove_1.mp4",
    ]
    assert row(out, "beach/north/cove_2.jpg") == [
        "beach/north/cove_2.jpg",
        "beach",
        "Waves at Kynance, cove 2",
        "512p 16f 12fps 50st g9 seed 7",
        "beach/north/cove_2.mp4",
    ]
    assert row(out, "products/mug.png") == [
        "products/mug.png",
        "product-rotate",
        ROTATE,
        "512p 16f 12fps 60st g9",
        "products/sku_mug_rotate.mp4",
    ]
    assert lines[-1] == "6 image(s), 0 problem(s)"
    assert errors(out) == []


def test_exif_date_and_camera_are_in_the_rendered_prompt(capsys, config_file, root):
    write(root / "i2vd.yaml", "prompt: \"{{ exif_camera or 'unknown camera' }} at {{ exif_date or 'some time' }}\"\n")
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", "EOS R5"
    exif.get_ifd(34665)[36867] = "2024:06:01 10:00:00"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(root / "shot.jpg", exif=exif)
    image(root / "plain.jpg", 7)

    code, out, _ = check(capsys, config_file)

    assert code == 0, out
    assert row(out, "shot.jpg")[2] == "Canon EOS R5 at 2024:06:01 10:00:00"
    assert row(out, "plain.jpg")[2] == "unknown camera at some time"


def test_check_is_read_only_and_needs_no_lock(capsys, config_file, root, tmp_path):
    image(root / "a.jpg", 8)
    with StateLock(tmp_path / "state"):  # a daemon is running
        code, out, _ = check(capsys, config_file)
    assert code == 0, out
    assert sorted(path.name for path in (tmp_path / "state").iterdir()) == ["i2vd.lock"]  # no journal made
    assert not (tmp_path / "out").exists()


def test_an_empty_root_is_fine(capsys, config_file):
    code, out, _ = check(capsys, config_file)
    assert code == 0
    assert out.splitlines()[-1] == "0 image(s), 0 problem(s)"


# -- every problem, with its file and key -------------------------------------------------------


def test_every_broken_sidecar_is_listed_with_its_file_and_key_and_exits_non_zero(capsys, config_file, root):
    broken = {
        "bad_yaml": ("profile: [beach\n", "not valid YAML"),
        "bad_key": ("profle: beach\n", "profle: unknown key (did you mean 'profile'?)"),
        "bad_value": ("fps: 40\n", "fps: 40 is above 24"),
        "bad_profile": (
            "profile: beech\n",
            (
                "profile: unknown profile 'beech' (did you mean 'beach'?); "
                "profiles: beach, default, mountain, product-rotate"
            ),
        ),
        "server": ("server: {url: 'http://elsewhere:7860'}\n", "server: not allowed in a sidecar"),
        "output_dir": ("output_dir: /tmp/elsewhere\n", "output_dir: not allowed in a sidecar"),
        "state_dir": ("state_dir: /tmp/elsewhere\n", "state_dir: not allowed in a sidecar"),
    }
    for index, (folder, (text, _)) in enumerate(broken.items()):
        write(root / folder / "i2vd.yaml", text)
        image(root / folder / "a.jpg", 20 + index)
        image(root / folder / "b.jpg", 40 + index)
    image(root / "fine" / "c.jpg", 90)

    code, out, _ = check(capsys, config_file)

    assert code != 0
    listed = errors(out)
    for folder, (_, problem) in broken.items():
        sidecar = root / folder / "i2vd.yaml"
        mine = [line for line in listed if line.startswith(f"{sidecar}: ")]
        assert len(mine) == 1, f"{folder}: {mine}"  # once, however many images it parks
        assert mine[0].removeprefix(f"{sidecar}: ").startswith(problem), mine[0]
        for name in ("a.jpg", "b.jpg"):
            assert row(out, f"{folder}/{name}")[1].startswith(f"ERROR: parked: sidecar {sidecar}: ")
    assert row(out, "fine/c.jpg")[1] == "default"
    assert out.splitlines()[-1] == f"15 image(s), {len(broken)} problem(s)"


def test_every_problem_of_one_sidecar_is_listed(capsys, config_file, root):
    sidecar = write(root / "i2vd.yaml", "profile: montain\nfsp: 10\nsteps: 1000\nvars: [x]\n")
    code, out, _ = check(capsys, config_file)
    assert code != 0
    assert sorted(errors(out)) == sorted(
        [
            f"{sidecar}: fsp: unknown key (did you mean 'fps'?)",
            f"{sidecar}: steps: 1000 is above 100, the most the predict server at http://127.0.0.1:9 takes "
            "(ComfyUI servers take up to 200)",
            f"{sidecar}: vars: a list is not a mapping",
            (
                f"{sidecar}: profile: unknown profile 'montain' (did you mean "
                f"'mountain'?); profiles: beach, default, mountain, product-rotate"
            ),
        ]
    )


def test_a_sidecar_value_the_configured_server_cannot_take_is_listed(capsys, config_file, root):
    sidecar = write(root / "wan" / "i2vd.yaml", "frames: 81\nfps: 16\n")
    image(root / "wan" / "a.jpg", 9)
    code, out, _ = check(capsys, config_file)
    assert code == 1
    message = (
        "frames: 81 is above 32, the most the predict server at http://127.0.0.1:9 takes "
        "(ComfyUI servers take up to 1024)"
    )
    assert errors(out) == [f"{sidecar}: {message}"]
    assert row(out, "wan/a.jpg")[1] == f"ERROR: parked: sidecar {sidecar}: {message}"


def test_a_broken_image_sidecar_is_listed_even_without_its_image(capsys, config_file, root):
    sidecar = write(root / "shop" / "IMG_01.jpg.yaml", "framez: 16\n")
    write(root / "shop" / "notes.yaml", "not: a sidecar\n")  # not named after an image: not checked
    code, out, _ = check(capsys, config_file)
    assert code != 0
    assert errors(out) == [f"{sidecar}: framez: unknown key (did you mean 'frames'?)"]


def test_a_sidecar_named_yml_is_listed_with_the_name_i2vd_reads(capsys, config_file, root):
    folder = write(root / "beach" / "i2vd.yml", "profile: beach\n")
    own = write(root / "shop" / "IMG_01.jpg.yml", "frames: 16\n")
    write(root / "shop" / "notes.yml", "not: a sidecar\n")  # not named after an image: not checked
    code, out, _ = check(capsys, config_file)
    assert code != 0
    assert errors(out) == [
        f"{folder}: i2vd reads sidecars named i2vd.yaml, not i2vd.yml: rename it (nothing in it applies until then)",
        f"{own}: i2vd reads sidecars named IMG_01.jpg.yaml, not IMG_01.jpg.yml: rename it"
        " (nothing in it applies until then)",
    ]


def test_an_image_over_max_image_mb_is_an_error_and_is_not_read(capsys, config_file, root):
    config_file.write_text(CONFIG.replace("settle_seconds: 0}", "settle_seconds: 0, max_image_mb: 0.05}"))
    write_image(root / "poster.bmp", size=(200, 200))  # uncompressed: 117 KB
    write_image(root / "small.jpg")
    code, out, _ = check(capsys, config_file)
    assert code != 0
    assert errors(out) == [
        f"{root / 'poster.bmp'}: poster.bmp is 0.1 MB; i2vd reads images up to 0.05 MB (watch.max_image_mb):"
        " export a smaller copy, or raise the limit if your server takes such files"
    ]


def test_an_unknown_template_variable_is_an_error_naming_the_image_and_the_variable(capsys, config_file, root):
    write(root / "shore" / "i2vd.yaml", "profile: beach\nprompt: 'A {{ moood }} sea'\nvars: {mood: calm}\n")
    picture = image(root / "shore" / "a.jpg", 9)
    code, out, _ = check(capsys, config_file)
    assert code != 0
    (problem,) = errors(out)
    assert problem.startswith(f"{picture}: ") and "'moood' is undefined" in problem
    assert "'moood' is undefined" in row(out, "shore/a.jpg")[1]


def test_an_output_template_with_a_path_is_an_error(capsys, config_file, root):
    write(root / "shore" / "i2vd.yaml", "output: '../{{ stem }}.mp4'\n")
    picture = image(root / "shore" / "a.jpg", 10)
    code, out, _ = check(capsys, config_file)
    assert code != 0
    (problem,) = errors(out)
    assert problem.startswith(f"{picture}: ") and "'../a.mp4' must be a plain file name" in problem


def test_a_file_named_like_an_image_that_is_not_one_is_an_error(capsys, config_file, root):
    (root / "notes.jpg").write_text("not an image", encoding="utf-8")
    code, out, _ = check(capsys, config_file)
    assert code != 0
    assert any(line.startswith(f"{root / 'notes.jpg'}: ") for line in errors(out))


def test_a_missing_watch_root_is_an_error(capsys, config_file, root):
    root.rmdir()
    code, out, _ = check(capsys, config_file)
    assert code != 0
    assert errors(out) == [f"{root}: watch root is not a folder"]


# -- one folder ---------------------------------------------------------------------------------


def test_with_a_path_only_that_folder_is_checked(capsys, config_file, root):
    write(root / "broken" / "i2vd.yaml", "fps: 40\n")
    image(root / "broken" / "x.jpg", 11)
    write(root / "beach" / "i2vd.yaml", "profile: beach\n")
    image(root / "beach" / "b.jpg", 12)
    image(root / "beach" / "deeper" / "c.jpg", 13)

    code, out, _ = check(capsys, config_file, root / "beach")

    assert code == 0, out
    assert row(out, "beach/b.jpg")[1:3] == ["beach", BEACH]
    assert row(out, "beach/deeper/c.jpg")[1:3] == ["beach", BEACH]
    assert "broken" not in out
    assert out.splitlines()[-1] == "2 image(s), 0 problem(s)"
    assert check(capsys, config_file, root / "broken")[0] != 0


def test_with_a_path_the_sidecars_above_it_apply(capsys, config_file, root):
    write(root / "i2vd.yaml", "profile: beach\nsteps: 30\n")
    image(root / "shore" / "a.jpg", 14)
    code, out, _ = check(capsys, config_file, root / "shore")
    assert code == 0, out
    assert row(out, "shore/a.jpg")[1:4] == ["beach", BEACH, "512p 16f 8fps 30st g9"]


def test_with_a_path_a_broken_sidecar_above_it_is_an_error(capsys, config_file, root):
    sidecar = write(root / "i2vd.yaml", "profle: beach\n")
    image(root / "shore" / "a.jpg", 15)
    code, out, _ = check(capsys, config_file, root / "shore")
    assert row(out, "shore/a.jpg")[1].startswith(f"ERROR: parked: sidecar {sidecar}")
    assert code != 0
    assert f"{sidecar}: profle: unknown key (did you mean 'profile'?)" in errors(out)


def test_a_path_outside_every_root_is_checked_as_a_root_of_its_own(capsys, config_file, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "i2vd.yaml", "profile: product-rotate\n")
    image(elsewhere / "sub" / "kettle.jpg", 16)
    code, out, _ = check(capsys, config_file, elsewhere)
    assert code == 0, out
    assert row(out, "sub/kettle.jpg") == [
        "sub/kettle.jpg",
        "product-rotate",
        ROTATE,
        "512p 16f 12fps 60st g9",
        "sub/sku_kettle_rotate.mp4",
    ]


def test_a_path_that_is_not_a_folder_exits_1(capsys, config_file, root):
    picture = image(root / "a.jpg", 17)
    code, out, _ = check(capsys, config_file, picture)
    assert code == 1
    assert f"{picture} is not a folder" in out
    assert check(capsys, config_file, root / "missing")[0] == 1


# -- the config itself ----------------------------------------------------------------------------


def test_a_bad_config_exits_78_listing_every_problem_with_hints(capsys, tmp_path):
    (tmp_path / "in").mkdir()
    bad = write(
        tmp_path / "bad.yaml",
        "output_dir: out\nwatch: [{path: in}]\nprofiles:\n  beach: {fps: 40, promt: x}\nservr: {}\n",
    )
    code, out, err = check(capsys, bad)
    assert code == EX_CONFIG == 78
    assert out == ""
    assert f"{bad}: 3 problem(s):" in err
    assert "profiles.beach.fps: 40 is above 24" in err
    assert "profiles.beach.promt: unknown key (did you mean 'prompt'?)" in err
    assert "servr: unknown key (did you mean 'server'?)" in err


def test_a_missing_config_exits_78(capsys, tmp_path):
    code, _, err = check(capsys, tmp_path / "nowhere.yaml")
    assert code == 78
    assert "cannot read" in err


def test_check_writes_to_the_stream_it_is_given(config_file, root):
    from i2vd.cli.check import run_check
    from i2vd.config.load import load_config

    image(root / "a.jpg", 18)
    stream = io.StringIO()
    assert run_check(load_config(config_file), None, stream) == 0
    assert "a.jpg" in stream.getvalue() and stream.getvalue().endswith("1 image(s), 0 problem(s)\n")


def test_a_fifo_named_like_a_sidecar_does_not_hang_check(capsys, config_file, root):
    fifo = root / "i2vd.yaml"
    os.mkfifo(fifo)
    codes: list[int] = []
    checker = threading.Thread(target=lambda: codes.append(main(["check", "-c", str(config_file)])), name="test-check")
    checker.start()
    checker.join(timeout=3)
    hung = checker.is_alive()
    if hung:  # let the blocked read finish: a writer appears and leaves at once
        os.close(os.open(fifo, os.O_WRONLY))
        checker.join(timeout=5)
    capsys.readouterr()
    assert not checker.is_alive()
    assert not hung, "i2vd check blocked on a FIFO named i2vd.yaml"


def test_a_truncated_jpeg_is_the_error_the_daemon_gives(capsys, config_file, root, tmp_path):
    whole = write_image(root / "whole.jpg", size=(320, 240), color=(90, 60, 120))
    scan = whole.index(b"\xff\xda")  # start of the compressed pixels: cut in them, the header stays whole
    cut = root / "cut.jpg"
    cut.write_bytes(whole[: scan + (len(whole) - scan) // 2])
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        config = load_config(config_file)
        daemon_says = Intake(config, journal).consider(cut, config.watch[0])
    finally:
        journal.close()
    assert daemon_says.outcome is Outcome.FAILED
    code, out, _ = check(capsys, config_file)
    assert code == 1
    assert errors(out) == [f"{cut}: {daemon_says.reason}"]
    assert row(out, "cut.jpg")[1] == f"ERROR: {daemon_says.reason}"
