"""i2vd/config/sidecars.py on its own: which files are sidecars, in what order they apply, what each may say.

Real files under tmp_path; no daemon, no journal. The shipped config.example.yaml is
checked here too, because its profiles are what a sidecar's `profile:` names.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath

import pytest

from i2vd.config.load import DEFAULT_PROMPT, load_config
from i2vd.config.profiles import resolve_profile
from i2vd.config.sidecars import (
    CAPTION_LIMIT,
    FOLDER_SIDECAR,
    ProfileError,
    SidecarError,
    caption_path,
    image_sidecar,
    is_sidecar_name,
    load_sidecar,
    read_caption,
    read_sidecars,
    sidecar_files,
)
from tests.support.fakes import write_text as write

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
PROFILES = ("default", "beach", "mountain", "forest", "product-rotate")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "beach" / "day1").mkdir(parents=True)
    return root


# -- the profiles config.example.yaml ships ---------------------------------------------


def test_the_example_config_ships_the_four_named_profiles_with_their_exact_prompts() -> None:
    config = load_config(EXAMPLE)
    assert set(config.profiles) == set(PROFILES)
    prompts = {name: config.profile(name)["prompt"] for name in PROFILES}
    assert prompts == {
        "default": DEFAULT_PROMPT,
        "beach": "Waves crashing, camera panning left",
        "mountain": "Sunrise over mountains, time-lapse effect",
        "forest": "Leaves rustling in wind, gentle dolly forward",
        "product-rotate": "Product rotating slowly on white background",
    }
    assert DEFAULT_PROMPT == "{{ caption or ('A ' ~ subject ~ ' scene with smooth motion') }}"


def test_the_example_product_rotate_profile_is_512p_16_frames_12_fps_60_steps_with_an_sku_name() -> None:
    config = load_config(EXAMPLE)
    rotate = config.profile("product-rotate")
    assert {key: rotate[key] for key in ("resolution", "frames", "fps", "steps", "output")} == {
        "resolution": "512p",
        "frames": 16,
        "fps": 12,
        "steps": 60,
        "output": "sku_{{ stem }}_rotate.mp4",
    }
    resolved = resolve_profile(config, PurePosixPath("shop/mug_blue.jpg"), None, "product-rotate")
    assert resolved.prompt == "Product rotating slowly on white background"
    assert resolved.params == {
        "resolution": "512p",
        "frames": 16,
        "fps": 12,
        "steps": 60,
        "guidance": 9.0,
        "seed": None,
    }
    assert resolved.output_name == "sku_mug_blue_rotate.mp4"


@pytest.mark.parametrize("name", ["beach", "mountain", "forest"])
def test_the_example_scene_profiles_inherit_every_other_field_from_default(name: str) -> None:
    config = load_config(EXAMPLE)
    resolved = resolve_profile(config, PurePosixPath("x/photo.jpg"), None, name)
    assert resolved.params == {"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0, "seed": None}
    assert resolved.output_name is None
    assert config.profiles[name] == {"prompt": config.profile(name)["prompt"]}  # sets only its prompt


def test_the_example_default_prompt_uses_the_caption_or_the_subject() -> None:
    config = load_config(EXAMPLE)
    path = PurePosixPath("golden_retriever-2.jpg")
    assert resolve_profile(config, path, None).prompt == "A golden retriever 2 scene with smooth motion"
    assert resolve_profile(config, path, None, caption="A dog on a lawn").prompt == "A dog on a lawn"


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    # .yml: never applied, but found (it parks what it was written for until renamed): its change matters
    ["i2vd.yaml", "IMG_01.jpg.yaml", "photo.png.yaml", "photo.txt", "notes.txt", "i2vd.yml", "IMG_01.jpg.yml"],
)
def test_sidecar_and_caption_names_are_sidecars(name: str) -> None:
    assert is_sidecar_name(name)


@pytest.mark.parametrize("name", ["photo.jpg", "i2vd.yaml.bak", "photo.jpg.part", "photo.txt~", "yaml", "README"])
def test_other_names_are_not_sidecars(name: str) -> None:
    assert not is_sidecar_name(name)


def test_the_image_sidecar_is_the_full_image_name_plus_yaml(tmp_path: Path) -> None:
    assert image_sidecar(tmp_path / "IMG_01.jpg") == tmp_path / "IMG_01.jpg.yaml"
    assert image_sidecar(tmp_path / "a.b.png") == tmp_path / "a.b.png.yaml"
    assert image_sidecar(PurePosixPath("x/IMG_01.JPG")) == PurePosixPath("x/IMG_01.JPG.yaml")


def test_the_caption_is_the_stem_plus_txt(tmp_path: Path) -> None:
    assert caption_path(tmp_path / "IMG_01.jpg") == tmp_path / "IMG_01.txt"
    assert caption_path(tmp_path / "a.b.png") == tmp_path / "a.b.txt"
    assert caption_path(tmp_path / "photo.jpeg") == caption_path(tmp_path / "photo.png")


# -- captions --------------------------------------------------------------------------


def test_a_caption_is_read_and_trimmed(tmp_path: Path) -> None:
    write(tmp_path / "dog.txt", "\n  A dog leaps into the surf  \n\n")
    assert read_caption(tmp_path / "dog.jpg") == "A dog leaps into the surf"


def test_a_multi_line_caption_keeps_its_inner_lines(tmp_path: Path) -> None:
    write(tmp_path / "dog.txt", " line one\nline two \n")
    assert read_caption(tmp_path / "dog.jpg") == "line one\nline two"


@pytest.mark.parametrize("text", ["", "   \n\t\n"])
def test_an_empty_or_blank_caption_is_none(tmp_path: Path, text: str) -> None:
    write(tmp_path / "dog.txt", text)
    assert read_caption(tmp_path / "dog.jpg") is None


def test_no_caption_file_is_none(tmp_path: Path) -> None:
    assert read_caption(tmp_path / "dog.jpg") is None


def test_a_folder_named_like_a_caption_is_none(tmp_path: Path) -> None:
    (tmp_path / "dog.txt").mkdir()
    assert read_caption(tmp_path / "dog.jpg") is None


def test_a_caption_that_is_not_utf8_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "dog.txt").write_bytes(b"caf\xe9 terrace\n")
    caption = read_caption(tmp_path / "dog.jpg")
    assert caption is not None and caption.startswith("caf") and caption.endswith(" terrace")


def test_a_huge_caption_is_cut_at_the_limit(tmp_path: Path) -> None:
    write(tmp_path / "dog.txt", "x" * (CAPTION_LIMIT * 3))
    assert read_caption(tmp_path / "dog.jpg") == "x" * CAPTION_LIMIT


def test_a_fifo_named_like_a_caption_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "dog.txt"
    os.mkfifo(fifo)
    results: list[str | None] = []
    reader = threading.Thread(
        target=lambda: results.append(read_caption(tmp_path / "dog.jpg")), name="test-caption-reader"
    )
    reader.start()
    reader.join(timeout=2)
    hung = reader.is_alive()
    if hung:  # let the blocked open() return: a writer appears and leaves at once
        os.close(os.open(fifo, os.O_WRONLY))
        reader.join(timeout=5)
    assert not reader.is_alive()
    assert not hung, "read_caption blocked on a FIFO"
    assert results == [None]


# -- which sidecars apply, in what order -----------------------------------------------


def test_sidecar_files_run_from_the_root_down_then_the_image_own(root: Path) -> None:
    image = root / "beach" / "day1" / "IMG_01.jpg"
    top = write(root / FOLDER_SIDECAR, "fps: 4\n")
    middle = write(root / "beach" / FOLDER_SIDECAR, "fps: 5\n")
    deepest = write(root / "beach" / "day1" / FOLDER_SIDECAR, "fps: 6\n")
    own = write(root / "beach" / "day1" / "IMG_01.jpg.yaml", "fps: 7\n")
    write(root / "beach" / "day1" / "IMG_02.jpg.yaml", "fps: 8\n")  # another image's
    write(root.parent / FOLDER_SIDECAR, "fps: 9\n")  # above the root: never applies
    assert sidecar_files(root, image) == [top, middle, deepest, own]


def test_folders_without_a_sidecar_are_skipped(root: Path) -> None:
    image = root / "beach" / "day1" / "IMG_01.jpg"
    middle = write(root / "beach" / FOLDER_SIDECAR, "fps: 5\n")
    assert sidecar_files(root, image) == [middle]


def test_an_image_at_the_root_sees_the_root_sidecar_and_its_own(root: Path) -> None:
    top = write(root / FOLDER_SIDECAR, "fps: 4\n")
    own = write(root / "x.jpg.yaml", "fps: 5\n")
    assert sidecar_files(root, root / "x.jpg") == [top, own]
    assert sidecar_files(root, root / "y.jpg") == [top]


def test_a_folder_named_like_a_sidecar_is_not_one(root: Path) -> None:
    (root / "beach" / FOLDER_SIDECAR).mkdir()
    (root / "beach" / "x.jpg.yaml").mkdir()
    assert sidecar_files(root, root / "beach" / "x.jpg") == []


def test_a_fifo_named_like_a_sidecar_is_not_read(root: Path) -> None:
    os.mkfifo(root / "beach" / FOLDER_SIDECAR)
    assert sidecar_files(root, root / "beach" / "x.jpg") == []
    assert read_sidecars(root, root / "beach" / "x.jpg").sources == ()


def test_the_nearest_profile_wins_and_its_sidecar_is_named(root: Path) -> None:
    write(root / FOLDER_SIDECAR, "profile: forest\nsteps: 40\nvars: {place: coast, mood: calm}\n")
    deepest = write(root / "beach" / "day1" / FOLDER_SIDECAR, "profile: beach\nvars: {place: Brighton}\n")
    write(root / "beach" / FOLDER_SIDECAR, "fps: 10\n")
    settings = read_sidecars(root, root / "beach" / "day1" / "x.jpg")
    assert (settings.profile, settings.profile_source) == ("beach", str(deepest))
    assert settings.variables == {"place": "Brighton", "mood": "calm"}
    assert settings.overrides == {"steps": 40, "fps": 10}


def test_an_image_sidecar_overrides_for_that_image_only(root: Path) -> None:
    write(root / "beach" / FOLDER_SIDECAR, "profile: beach\nfps: 10\n")
    own = write(root / "beach" / "IMG_01.jpg.yaml", "profile: mountain\nfps: 12\n")
    mine = read_sidecars(root, root / "beach" / "IMG_01.jpg")
    assert (mine.profile, mine.profile_source, mine.overrides) == ("mountain", str(own), {"fps": 12})
    neighbour = read_sidecars(root, root / "beach" / "IMG_02.jpg")
    assert (neighbour.profile, neighbour.overrides) == ("beach", {"fps": 10})


# -- what one sidecar may say ------------------------------------------------------------


def test_load_sidecar_keeps_only_the_keys_it_sets(root: Path) -> None:
    sidecar = write(root / FOLDER_SIDECAR, "profile: beach\nfps: 12\nvars: {mood: calm}\n")
    assert load_sidecar(sidecar, profiles=PROFILES) == {"profile": "beach", "fps": 12, "vars": {"mood": "calm"}}


def test_an_empty_sidecar_is_an_empty_mapping(root: Path) -> None:
    assert load_sidecar(write(root / FOLDER_SIDECAR, ""), profiles=PROFILES) == {}
    assert load_sidecar(write(root / FOLDER_SIDECAR, "# nothing yet\n"), profiles=PROFILES) == {}


def test_an_integer_guidance_becomes_a_number(root: Path) -> None:
    assert load_sidecar(write(root / FOLDER_SIDECAR, "guidance: 7\n")) == {"guidance": 7.0}


def test_an_unknown_profile_is_a_problem_only_when_the_profiles_are_given(root: Path) -> None:
    sidecar = write(root / FOLDER_SIDECAR, "profile: beech\n")
    assert load_sidecar(sidecar) == {"profile": "beech"}
    with pytest.raises(SidecarError) as caught:
        load_sidecar(sidecar, profiles=PROFILES)
    assert caught.value.file == str(sidecar)
    assert caught.value.problems == [
        (
            "profile: unknown profile 'beech' (did you mean 'beach'?); "
            "profiles: beach, default, forest, mountain, product-rotate"
        )
    ]


def test_an_unknown_profile_far_from_any_gets_no_hint_but_the_list(root: Path) -> None:
    sidecar = write(root / FOLDER_SIDECAR, "profile: zzzzzz\n")
    message = str(pytest.raises(SidecarError, load_sidecar, sidecar, profiles=PROFILES).value)
    assert "unknown profile 'zzzzzz'; profiles: beach, default" in message
    assert "did you mean" not in message


def test_a_null_profile_is_no_choice(root: Path) -> None:
    assert load_sidecar(write(root / FOLDER_SIDECAR, "profile:\n"), profiles=PROFILES) == {"profile": None}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("profle: beach\n", "profle: unknown key (did you mean 'profile'?)"),
        ("fsp: 10\n", "fsp: unknown key (did you mean 'fps'?)"),
        ("fps: 40\n", "fps: 40 is above 24"),
        ("frames: 2\n", "frames: 2 is below 8"),
        ("resolution: 720p\n", "resolution: '720p' is not one of 256p, 512p, 768p, 1024p"),
        ("steps: many\n", "steps: 'many' is not a whole number"),
        ("vars: [a, b]\n", "vars: a list is not a mapping"),
        ("vars: {1: one}\n", "vars: key 1 is not a name"),
        ("prompt: '{{ stem'\n", "prompt: template error"),
        ("output: '{% if %}'\n", "output: template error"),
        ("server: {url: 'http://evil:7860'}\n", "server: not allowed in a sidecar"),
        ("output_dir: /etc\n", "output_dir: not allowed in a sidecar"),
        ("state_dir: /tmp/elsewhere\n", "state_dir: not allowed in a sidecar"),
        ("watch: [{path: /}]\n", "watch: not allowed in a sidecar"),
    ],
)
def test_a_bad_sidecar_names_the_file_and_the_key(root: Path, text: str, problem: str) -> None:
    sidecar = write(root / "beach" / FOLDER_SIDECAR, text)
    with pytest.raises(SidecarError) as caught:
        load_sidecar(sidecar, profiles=PROFILES)
    assert caught.value.file == str(sidecar)
    assert any(found.startswith(problem) for found in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith(f"sidecar {sidecar}: ")


def test_every_problem_of_one_sidecar_is_listed(root: Path) -> None:
    sidecar = write(root / FOLDER_SIDECAR, "profile: beech\nfps: 40\nfsp: 3\nserver: {}\n")
    problems = pytest.raises(SidecarError, load_sidecar, sidecar, profiles=PROFILES).value.problems
    assert len(problems) == 4, problems
    assert any(problem.startswith("fps: 40 is above 24") for problem in problems)
    assert any(problem.startswith("fsp: unknown key (did you mean 'fps'?)") for problem in problems)
    assert any(problem.startswith("server: not allowed in a sidecar") for problem in problems)
    assert any(problem.startswith("profile: unknown profile 'beech'") for problem in problems)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"profile: [beach\n", "not valid YAML"),
        (b"- beach\n- forest\n", "the file: a list is not a mapping"),
        (b"just words\n", "the file: 'just words' is not a mapping"),
        (b"fps: \xff\n", "cannot read"),
    ],
)
def test_a_sidecar_that_is_not_a_yaml_mapping_is_one_problem(root: Path, content: bytes, problem: str) -> None:
    sidecar = root / FOLDER_SIDECAR
    sidecar.write_bytes(content)
    error = pytest.raises(SidecarError, load_sidecar, sidecar).value
    assert len(error.problems) == 1 and error.problems[0].startswith(problem), error.problems


def test_a_sidecar_error_is_a_profile_error(root: Path) -> None:
    sidecar = write(root / FOLDER_SIDECAR, "fps: 40\n")
    assert isinstance(pytest.raises(SidecarError, load_sidecar, sidecar).value, ProfileError)


def test_read_sidecars_stops_at_the_first_broken_file_and_names_it(root: Path) -> None:
    write(root / FOLDER_SIDECAR, "profile: beach\n")
    broken = write(root / "beach" / FOLDER_SIDECAR, "fps: 99\n")
    error = pytest.raises(SidecarError, read_sidecars, root, root / "beach" / "day1" / "x.jpg").value
    assert error.file == str(broken)
    assert read_sidecars(root, root / "y.jpg").profile == "beach"  # a sibling folder is unaffected


def test_priority_comes_from_the_deepest_sidecar_that_sets_it_and_is_not_a_video_setting(root: Path) -> None:
    write(root / "i2vd.yaml", "priority: 5\n")
    write(root / "beach" / "i2vd.yaml", "profile: beach\n")
    assert read_sidecars(root, root / "beach" / "day1" / "x.jpg").priority == 5
    write(root / "beach" / "day1" / "i2vd.yaml", "priority: -3\n")
    settings = read_sidecars(root, root / "beach" / "day1" / "x.jpg")
    assert settings.priority == -3
    assert "priority" not in settings.overrides
    assert read_sidecars(root, root / "elsewhere.jpg").priority == 5


def test_a_priority_out_of_range_is_a_sidecar_error(root: Path) -> None:
    write(root / "i2vd.yaml", "priority: 99999\n")
    with pytest.raises(SidecarError, match="priority: 99999 is above 1000"):
        read_sidecars(root, root / "x.jpg")


def test_a_sidecar_edited_between_two_images_applies_to_the_second_whatever_its_size_and_mtime(tmp_path: Path) -> None:
    # Each sidecar is parsed once per content (a folder's images share it): an edit must still reach the next image,
    # even one keeping the file's size and mtime, and a broken edit must park it, not reuse the last good parse.
    folder = tmp_path / "shoot"
    folder.mkdir()
    sidecar = folder / "i2vd.yaml"
    sidecar.write_text("steps: 20\nvars: {scene: studio}\n")
    before = sidecar.stat()
    first = read_sidecars(tmp_path, folder / "one.png")
    sidecar.write_text("steps: 30\nvars: {scene: sunset}\n")
    os.utime(sidecar, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = read_sidecars(tmp_path, folder / "two.png")
    assert (first.overrides["steps"], first.variables) == (20, {"scene": "studio"})
    assert (second.overrides["steps"], second.variables) == (30, {"scene": "sunset"})
    sidecar.write_text("steps: 20\nvars: {scene: studio}\n")
    again = read_sidecars(tmp_path, folder / "three.png")  # the first content again: the same settings as the first
    assert (again.overrides, again.variables, again.sources) == (first.overrides, first.variables, first.sources)
    sidecar.write_text("steps: [20\n")
    with pytest.raises(SidecarError, match="not valid YAML"):
        read_sidecars(tmp_path, folder / "four.png")
