"""Config loading and the schema: every problem at once, with its dotted path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from i2vd.cli.commands import EX_CONFIG, main
from i2vd.config.load import DEFAULT_PROMPT, ConfigError, RetryPolicy, load_config, parse_config
from i2vd.config.messages import did_you_mean
from i2vd.config.reference import model_keys, reference

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.example.yaml"
MINIMAL = "output_dir: /srv/out\nwatch: [{path: /srv/in}]\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="test.yaml")
    return caught.value.problems


# -- the example config ------------------------------------------------------------


def test_the_example_config_loads_with_every_profile() -> None:
    config = load_config(EXAMPLE)
    assert config.output_dir == Path("/srv/i2v/out")
    assert config.state_dir == Path("/var/lib/i2vd")
    assert [root.path for root in config.watch] == [Path("/srv/i2v/in")]
    assert config.watch[0].output_dir == Path("/srv/i2v/out")
    assert config.server.kind == "predict"
    assert config.gpu.max_used_mb == 10000 and config.gpu.min_free_mb is None
    assert set(config.profiles) == {"default", "beach", "mountain", "forest", "product-rotate"}
    rotate = config.profile("product-rotate")
    assert (rotate["fps"], rotate["steps"], rotate["output"]) == (12, 60, "sku_{{ stem }}_rotate.mp4")
    assert rotate["guidance"] == 9.0  # inherited from default


def test_the_example_config_is_the_reference_generated_from_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    # Regenerate it with: .venv/bin/i2vd config --example > config.example.yaml
    assert EXAMPLE.read_text(encoding="utf-8") == reference()
    assert main(["config", "--example"]) == 0
    assert capsys.readouterr().out == reference()


def test_the_example_config_mentions_every_schema_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = model_keys()
    assert {"server.kind", "gpu.max_used_mb", "retry.attempts", "watch.after", "profiles.fps", "servers.name"} <= set(
        keys
    )
    missing = [
        key
        for key in keys
        if not re.search(rf"^\s*(#\s*)?(-\s*)?{re.escape(key.rsplit('.', 1)[-1])}:", text, re.MULTILINE)
    ]
    assert missing == []


# -- defaults, paths, profiles -----------------------------------------------------


def test_a_minimal_config_gets_every_default() -> None:
    config = parse_config(MINIMAL)
    assert config.server.kind == "builtin"
    assert config.gpu.enabled == "auto" and config.gpu.source == "nvml"
    assert config.retry == RetryPolicy(
        attempts=3, initial_backoff_seconds=10.0, max_backoff_seconds=600.0, max_interruptions=3
    )
    assert config.watch[0].settle_seconds == 5.0 and config.watch[0].after == "keep"
    assert config.profiles["default"] == {
        "prompt": DEFAULT_PROMPT,
        "resolution": "512p",
        "frames": 16,
        "fps": 8,
        "steps": 50,
        "guidance": 9.0,
        "seed": None,
        "output": None,
        "collision": "suffix",
    }


def test_relative_paths_are_resolved_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config_file = folder / "config.yaml"
    config_file.write_text(
        "state_dir: state\noutput_dir: ../out\nwatch:\n  - path: in\n  - path: other\n    output_dir: other-out\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/config.yaml"))
    assert config.state_dir == folder / "state"
    assert config.output_dir == tmp_path / "out"
    assert config.watch[0].path == folder / "in"
    assert config.watch[0].output_dir == tmp_path / "out"
    assert config.watch[1].output_dir == folder / "other-out"


def test_profiles_inherit_every_field_they_do_not_set_from_default() -> None:
    config = parse_config(MINIMAL + "profiles:\n  default: {fps: 12, steps: 30}\n  beach: {prompt: Waves, steps: 70}\n")
    assert config.profiles["beach"] == {"prompt": "Waves", "steps": 70}
    beach = config.profile("beach")
    assert beach["prompt"] == "Waves"
    assert (beach["fps"], beach["steps"], beach["frames"], beach["resolution"]) == (12, 70, 16, "512p")


def test_a_profile_without_fields_is_default() -> None:
    config = parse_config(MINIMAL + "profiles:\n  plain:\n")
    assert config.profile("plain") == config.profiles["default"]


def test_root_for_finds_the_root_holding_a_path() -> None:
    config = parse_config("output_dir: /o\nwatch: [{path: /a}, {path: /b}]\n")
    assert config.root_for(Path("/b/x/y.jpg")) is config.watch[1]
    assert config.root_for(Path("/a")) is config.watch[0]
    assert config.root_for(Path("/ab/y.jpg")) is None


# -- errors ------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_dotted_path() -> None:
    problems = problems_of(
        "output_dir: /o\n"
        "watch: [{path: /i, settle_seconds: -1, after: delete}]\n"
        "server: {kind: predict, timeout_seconds: 0}\n"
        "profiles:\n"
        "  beach: {fps: 40}\n"
        "  mountain: {frames: 7}\n"
    )
    # server.kind is predict, even with a problem in another server key: its ranges hold
    predict = "the predict server takes (ComfyUI servers take"
    assert f"profiles.beach.fps: 40 is above 24, the most {predict} up to 60)" in problems
    assert f"profiles.mountain.frames: 7 is below 8, the least {predict} from 1)" in problems
    assert "watch[0].settle_seconds: -1.0 is below 0" in problems  # numbers in float fields are shown as floats
    assert any(problem.startswith("watch[0].after: 'delete' is not one of keep, move") for problem in problems)
    assert "server.timeout_seconds: 0.0 is below 1" in problems
    assert len(problems) == 5


def test_the_error_message_and_report_name_the_source_and_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "profiles: {beach: {fps: 40, steps: 5}}\n", source="/etc/i2vd/config.yaml")
    error = caught.value
    assert str(error).startswith("/etc/i2vd/config.yaml: ")
    report = error.report().splitlines()
    assert report[0] == "/etc/i2vd/config.yaml: 2 problem(s):"
    builtin = "the builtin engine takes (ComfyUI servers take"
    assert f"  profiles.beach.fps: 40 is above 24, the most {builtin} up to 60)" in report
    assert f"  profiles.beach.steps: 5 is below 10, the least {builtin} from 1)" in report


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("profiles: {beach: {promt: x}}", "profiles.beach.promt: unknown key (did you mean 'prompt'?)"),
        ("servr: {kind: predict}", "servr: unknown key (did you mean 'server'?)"),
        ("gpu: {max_use_mb: 5}", "gpu.max_use_mb: unknown key (did you mean 'max_used_mb'?)"),
        ("retry: {zzz: 1}", "retry.zzz: unknown key"),
    ],
)
def test_unknown_keys_are_errors_with_a_did_you_mean_hint(yaml_text: str, expected: str) -> None:
    assert expected in problems_of(MINIMAL + yaml_text + "\n")


def test_did_you_mean_gives_nothing_for_a_far_away_key() -> None:
    assert did_you_mean("zzz", ["prompt", "fps"]) == ""
    assert did_you_mean("fsp", ["prompt", "fps"]) == " (did you mean 'fps'?)"


def test_a_wrong_choice_gets_a_hint() -> None:
    assert problems_of(MINIMAL + "profiles: {beach: {resolution: 521p}}\n") == [
        "profiles.beach.resolution: '521p' is not one of 256p, 512p, 768p, 1024p (did you mean '512p'?)"
    ]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("resolution", "720p", "'720p' is not one of 256p, 512p, 768p, 1024p"),
        ("frames", "7", "7 is below 8, the least the builtin engine takes (ComfyUI servers take from 1)"),
        ("frames", "33", "33 is above 32, the most the builtin engine takes (ComfyUI servers take up to 1024)"),
        ("fps", "3", "3 is below 4, the least the builtin engine takes (ComfyUI servers take from 1)"),
        ("fps", "25", "25 is above 24, the most the builtin engine takes (ComfyUI servers take up to 60)"),
        ("steps", "9", "9 is below 10, the least the builtin engine takes (ComfyUI servers take from 1)"),
        ("steps", "101", "101 is above 100, the most the builtin engine takes (ComfyUI servers take up to 200)"),
        ("guidance", "0.5", "0.5 is below 1"),
        ("guidance", "20.5", "20.5 is above 20"),
        ("frames", "8.5", "8.5 is not a whole number"),
        ("frames", "true", "True is not a whole number"),
        ("guidance", "'9'", "'9' is not a number"),
        ("seed", "-1", "-1 is below 0"),
        ("frames", "", "is empty, expected a whole number"),
    ],
)
def test_profile_fields_are_checked_against_the_predict_ranges(field: str, value: str, expected: str) -> None:
    problems = problems_of(MINIMAL + f"profiles:\n  default:\n    {field}: {value}\n")
    assert problems == [f"profiles.default.{field}: {expected}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resolution", "256p"),
        ("resolution", "1024p"),
        ("frames", 8),
        ("frames", 32),
        ("fps", 4),
        ("fps", 24),
        ("steps", 10),
        ("steps", 100),
        ("guidance", 1),
        ("guidance", 20),
        ("seed", 0),
    ],
)
def test_the_ends_of_each_range_are_accepted(field: str, value: object) -> None:
    config = parse_config(MINIMAL + f"profiles:\n  p:\n    {field}: {value}\n")
    assert config.profile("p")[field] == value


def test_bad_yaml_is_one_problem_naming_the_place() -> None:
    problems = problems_of("output_dir: /o\nwatch: [\n")
    assert len(problems) == 1
    assert problems[0].startswith("not valid YAML:")
    assert "line" in problems[0]


def test_a_file_that_is_not_a_mapping_is_a_problem() -> None:
    assert "the file: a list is not a mapping" in problems_of("- a\n- b\n")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.source == str(missing)
    assert caught.value.problems == [
        "cannot read: No such file or directory (give the config with -c CONFIG or $I2VD_CONFIG)"
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.problems == ["cannot read: Is a directory"]


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"output_dir: /srv/caf\xe9\nwatch: [{path: /in}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 1
    assert "UTF-8" in caught.value.problems[0] or "utf-8" in caught.value.problems[0]


def test_output_dir_is_required() -> None:
    assert problems_of("watch: [{path: /i}]\n") == ["output_dir: is required"]


@pytest.mark.parametrize("watch", ["", "watch: []\n"])
def test_a_config_without_a_hot_folder_is_refused(watch: str) -> None:
    assert problems_of("output_dir: /o\n" + watch) == ["watch: needs at least one hot folder"]


def test_a_watch_entry_without_path_is_refused() -> None:
    assert problems_of("output_dir: /o\nwatch: [{settle_seconds: 1}]\n") == ["watch[0].path: is required"]


def test_a_missing_watch_is_reported_together_with_other_problems() -> None:
    problems = problems_of("log_level: loud\n")
    assert "output_dir: is required" in problems
    assert "watch: needs at least one hot folder" in problems


def test_nested_roots_are_rejected() -> None:
    problems = problems_of("output_dir: /o\nwatch: [{path: /srv/in}, {path: /srv/in/sub}]\n")
    assert problems == ["watch[1].path: /srv/in/sub is inside watch[0].path /srv/in"]
    problems = problems_of("output_dir: /o\nwatch: [{path: /srv/in/sub}, {path: /srv/in}]\n")
    assert problems == ["watch[0].path: /srv/in/sub is inside watch[1].path /srv/in"]


def test_sibling_roots_with_a_common_prefix_are_not_nested() -> None:
    config = parse_config("output_dir: /o\nwatch: [{path: /srv/in}, {path: /srv/in2}]\n")
    assert len(config.watch) == 2


def test_the_same_root_twice_is_rejected() -> None:
    problems = problems_of("output_dir: /o\nwatch: [{path: /srv/in}, {path: /srv/in/}]\n")
    assert len(problems) == 1 and "watch[1].path" in problems[0]


@pytest.mark.parametrize("field", ["prompt", "output"])
def test_template_syntax_errors_are_reported_with_their_place(field: str) -> None:
    problems = problems_of(MINIMAL + f'profiles:\n  beach:\n    {field}: "{{{{ stem "\n')
    assert len(problems) == 1
    assert problems[0].startswith(f"profiles.beach.{field}: template error: ")
    assert "(line 1)" in problems[0]


def test_a_template_with_a_filter_and_a_condition_is_accepted() -> None:
    config = parse_config(
        MINIMAL + 'profiles:\n  p: {prompt: "{% if caption %}{{ caption|upper }}{% else %}x{% endif %}"}\n'
    )
    assert "caption|upper" in config.profile("p")["prompt"]


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("true", True), ("false", False)])
def test_gpu_enabled_accepts_auto_true_and_false(value: str, expected: object) -> None:
    assert parse_config(MINIMAL + f"gpu: {{enabled: {value}}}\n").gpu.enabled == expected


@pytest.mark.parametrize("value", ["'yes please'", "on-demand", "2", "{a: 1}"])
def test_gpu_enabled_refuses_anything_else(value: str) -> None:
    problems = problems_of(MINIMAL + f"gpu: {{enabled: {value}}}\n")
    assert len(problems) == 1
    assert problems[0].startswith("gpu.enabled: ") and problems[0].endswith("is not one of auto, true, false")


@pytest.mark.parametrize("value", ["1", "0", "1.0"])
def test_gpu_enabled_refuses_numbers_that_equal_a_bool(value: str) -> None:
    problems = problems_of(MINIMAL + f"gpu: {{enabled: {value}}}\n")
    assert problems == [f"gpu.enabled: {value} is not one of auto, true, false"]


def test_watch_poll_accepts_auto_true_and_false_only() -> None:
    assert parse_config("output_dir: /o\nwatch: [{path: /i, poll: true}]\n").watch[0].poll is True
    assert problems_of("output_dir: /o\nwatch: [{path: /i, poll: sometimes}]\n") == [
        "watch[0].poll: 'sometimes' is not one of auto, true, false"
    ]


def test_checks_across_keys_are_reported_together_with_the_other_problems() -> None:
    problems = problems_of(
        "output_dir: /o\nwatch: [{path: /srv/in}, {path: /srv/in/sub}]\n"
        "gpu: {source: command}\nprofiles: {beach: {fps: 40}}\nlog_level: loud\n"
    )
    assert "profiles.beach.fps: 40 is above 24, the most the builtin engine takes (ComfyUI servers take up to 60)" in (
        problems
    )
    assert "log_level: 'loud' is not one of debug, info, warning, error" in problems
    assert "gpu.command: is required when gpu.source is command" in problems
    assert "watch[1].path: /srv/in/sub is inside watch[0].path /srv/in" in problems
    assert len(problems) == 4


def test_each_of_several_servers_is_checked_with_its_index() -> None:
    problems = problems_of(
        MINIMAL + "servers:\n  - {name: a, url: 'ftp://x', gpu: {max_use_mb: 1}}\n"
        "  - {name: b, kind: gradoi, gpu: {source: command}}\n"
    )
    assert problems == [
        "servers[0].url: 'ftp://x' is not an http:// or https:// URL",
        "servers[0].gpu.max_use_mb: unknown key (did you mean 'max_used_mb'?)",
        "servers[1].kind: 'gradoi' is not one of builtin, predict, gradio, comfyui (did you mean 'gradio'?)",
    ]
    problems = problems_of(MINIMAL + "servers: [{name: a}, {name: a, gpu: {source: command}}]\nserver: {}\n")
    assert "servers: 'a' appears twice: give each server its own name" in problems
    assert "server: give either `server` or `servers`, not both" in problems
    assert problems_of(MINIMAL + "servers: [{name: a}, {name: b, gpu: {source: command}}]\n") == [
        "servers[1].gpu.command: is required when gpu.source is command"
    ]
    assert problems_of(MINIMAL + "servers: []\n") == ["servers: needs at least 1 entry"]


def test_a_server_takes_its_gpu_keys_from_the_top_level_gpu() -> None:
    config = parse_config(
        MINIMAL + "gpu: {max_used_mb: 500, index: 3}\nservers: [{name: a, gpu: {index: 1}}, {name: b}]\n"
    )
    gates = [(entry.name, entry.gpu.index, entry.gpu.max_used_mb) for entry in config.servers]
    assert gates == [("a", 1, 500), ("b", 3, 500)]


@pytest.mark.parametrize(
    ("value", "expected"), [(".nan", "nan is not a finite number"), (".inf", "inf is not a finite number")]
)
def test_a_number_must_be_finite(value: str, expected: str) -> None:
    problems = problems_of(MINIMAL + f"profiles: {{default: {{guidance: {value}}}}}\n")
    assert problems == [f"profiles.default.guidance: {expected}"]


def test_gpu_source_command_needs_a_command() -> None:
    problems = problems_of(MINIMAL + "gpu: {source: command}\n")
    assert any(problem.startswith("gpu.command:") for problem in problems)


# -- the retry policy --------------------------------------------------------------


def test_backoff_doubles_from_the_initial_wait_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_seconds=10, max_backoff_seconds=600)
    assert [policy.backoff_seconds(failures) for failures in range(1, 9)] == [10, 20, 40, 80, 160, 320, 600, 600]
    assert policy.backoff_seconds(0) == 10
    assert policy.backoff_seconds(100) == 600


def test_the_retry_section_builds_the_policy() -> None:
    config = parse_config(MINIMAL + "retry: {attempts: 5, initial_backoff_seconds: 1, max_backoff_seconds: 3}\n")
    assert config.retry.attempts == 5
    assert [config.retry.backoff_seconds(failures) for failures in (1, 2, 3)] == [1, 2, 3]


# -- the CLI, in-process -------------------------------------------------------------


def test_run_with_a_bad_config_exits_78_listing_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "output_dir: out\nwatch: [{path: in}]\n"
        "profiles:\n  beach: {fps: 40, promt: waves}\n  forest: {resolution: 4k}\n",
        encoding="utf-8",
    )
    assert main(["run", "-c", str(bad)]) == EX_CONFIG == 78
    err = capsys.readouterr().err
    assert f"{bad}: 3 problem(s):" in err
    assert "profiles.beach.fps: 40 is above 24" in err
    assert "profiles.beach.promt: unknown key (did you mean 'prompt'?)" in err
    assert "profiles.forest.resolution: '4k' is not one of 256p, 512p, 768p, 1024p" in err
    assert not (tmp_path / "out").exists()  # nothing started


def test_run_with_a_missing_config_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-c", str(tmp_path / "missing.yaml")]) == 78
    assert "cannot read: No such file or directory" in capsys.readouterr().err


def test_the_config_comes_from_i2vd_config_when_no_option_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "env.yaml"
    bad.write_text("output_dir: /o\nwatch: [{path: /i}]\nlog_level: loud\n", encoding="utf-8")
    monkeypatch.setenv("I2VD_CONFIG", str(bad))
    assert main(["run"]) == 78
    assert "log_level: 'loud' is not one of debug, info, warning, error" in capsys.readouterr().err
