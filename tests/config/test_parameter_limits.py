"""A profile's or sidecar's frames, fps and steps against every server that may run the job.

ComfyUI runs Wan 2.x (81 frames at 16 fps), LTX-Video (up to 257 at 24-30), HunyuanVideo-I2V (129); the
/predict and Gradio servers and the builtin engine keep the /predict contract's 8-32 frames, 4-24 fps.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from i2vd.config.comfyui_workflow import field_values, load_workflow
from i2vd.config.load import ConfigError, parse_config
from i2vd.config.parameter_limits import job_limits, limits_for, range_problems, sending_limits
from i2vd.config.profiles import resolve_profile
from i2vd.config.sidecars import SidecarError, load_sidecar, read_sidecars

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "wan2.1-i2v-480p.json"
BASE = "output_dir: /srv/out\nwatch: [{path: /srv/in}]\n"
COMFYUI = f"{{kind: comfyui, url: 'http://gpu-b:8188', workflow: '{WORKFLOW}'}}"
PREDICT = "{kind: predict, url: 'http://gpu-a:7860'}"
WAN = "profiles:\n  wan: {prompt: waves, frames: 81, fps: 16}\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="test.yaml")
    return caught.value.problems


def test_a_comfyui_config_takes_the_frames_and_fps_of_current_models() -> None:
    config = parse_config(BASE + f"server: {COMFYUI}\n" + WAN + "  ltx: {frames: 257, fps: 30, steps: 8}\n")
    assert (config.profile("wan")["frames"], config.profile("wan")["fps"]) == (81, 16)
    assert (config.profile("ltx")["frames"], config.profile("ltx")["fps"], config.profile("ltx")["steps"]) == (
        257,
        30,
        8,
    )


def test_the_wan_example_workflow_gets_81_frames_at_16_fps_from_its_sample_profile() -> None:
    sample = "{resolution: 512p, frames: 81, fps: 16, steps: 20, guidance: 6}"  # examples/workflows/README.md
    config = parse_config(BASE + f"server: {COMFYUI}\nprofiles:\n  default: {sample}\n")
    resolved = resolve_profile(config, PurePosixPath("shore/a.jpg"), None)
    values = field_values(
        image_name="a.jpg", prompt=resolved.prompt, params=resolved.params, image_size=(832, 480), image=b"x", job_id=1
    )
    prompt = load_workflow(WORKFLOW).build(values)
    assert (prompt["50"]["class_type"], prompt["50"]["inputs"]["length"]) == ("WanImageToVideo", 81)
    assert (prompt["55"]["class_type"], prompt["55"]["inputs"]["fps"]) == ("CreateVideo", 16.0)
    assert (prompt["3"]["inputs"]["steps"], prompt["3"]["inputs"]["cfg"]) == (20, 6.0)


def test_a_comfyui_config_still_bounds_frames_against_a_typo() -> None:
    assert problems_of(BASE + f"server: {COMFYUI}\nprofiles: {{wan: {{frames: 10000, fps: 0}}}}\n") == [
        "profiles.wan.frames: 10000 is above 1024, the most the comfyui server at http://gpu-b:8188 takes",
        "profiles.wan.fps: 0 is below 1, the least the comfyui server at http://gpu-b:8188 takes",
    ]


def test_with_a_predict_and_a_comfyui_server_a_value_must_suit_both() -> None:
    text = BASE + f"servers:\n  - {PREDICT}\n  - {COMFYUI}\n" + WAN
    assert problems_of(text) == [
        "profiles.wan.frames: 81 is above 32, the most the predict server at http://gpu-a:7860 takes "
        "(ComfyUI servers take up to 1024)"
    ]


def test_a_named_server_is_named_and_every_problem_is_reported_at_once() -> None:
    text = (
        BASE
        + "servers:\n  - {kind: gradio, url: 'http://gpu-a:7860', name: svd}\n"
        + f"  - {COMFYUI}\n"
        + "profiles:\n  wan: {frames: 81, fps: 30, steps: 4, promt: x}\n  ok: {frames: 32}\n"
    )
    gradio = "the gradio server at http://gpu-a:7860 (svd) takes"
    assert problems_of(text) == [
        "profiles.wan.promt: unknown key (did you mean 'prompt'?)",
        f"profiles.wan.frames: 81 is above 32, the most {gradio} (ComfyUI servers take up to 1024)",
        f"profiles.wan.fps: 30 is above 24, the most {gradio} (ComfyUI servers take up to 60)",
        f"profiles.wan.steps: 4 is below 10, the least {gradio} (ComfyUI servers take from 1)",
    ]


def test_a_server_key_with_a_problem_does_not_hide_its_kinds_range() -> None:
    comfyui = f"{{kind: comfyui, url: 'http://gpu-b:8188', workflow: '{WORKFLOW}', timeout_seconds: 0}}"
    assert problems_of(BASE + f"server: {comfyui}\n" + WAN) == ["server.timeout_seconds: 0.0 is below 1"]
    predict = "{kind: predict, timeout_seconds: 0}"
    assert problems_of(BASE + f"server: {predict}\n" + WAN) == [
        "server.timeout_seconds: 0.0 is below 1",
        "profiles.wan.frames: 81 is above 32, the most the predict server takes (ComfyUI servers take up to 1024)",
    ]
    assert problems_of(BASE + "server: {kind: vllm}\n" + "profiles: {wan: {frames: 2000}}\n") == [
        "server.kind: 'vllm' is not one of builtin, predict, gradio, comfyui",
        "profiles.wan.frames: 2000 is above 1024, the most any server takes",
    ]


def _sidecar(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "in" / "wan"
    folder.mkdir(parents=True)
    sidecar = folder / "i2vd.yaml"
    sidecar.write_text(text, encoding="utf-8")
    return sidecar


def test_a_sidecar_is_held_to_the_configured_servers(tmp_path: Path) -> None:
    sidecar = _sidecar(tmp_path, "frames: 81\nfps: 16\n")
    comfyui = parse_config(BASE + f"server: {COMFYUI}\n")
    predict = parse_config(BASE + f"server: {PREDICT}\n")
    image = sidecar.parent / "a.jpg"
    assert read_sidecars(tmp_path / "in", image, limits_for(comfyui.servers)).overrides == {"frames": 81, "fps": 16}
    with pytest.raises(SidecarError) as caught:
        read_sidecars(tmp_path / "in", image, limits_for(predict.servers))
    assert caught.value.file == str(sidecar)
    assert caught.value.problems == [
        "frames: 81 is above 32, the most the predict server at http://gpu-a:7860 takes "
        "(ComfyUI servers take up to 1024)"
    ]


def test_a_sidecar_read_without_the_servers_takes_what_every_server_takes(tmp_path: Path) -> None:
    sidecar = _sidecar(tmp_path, "frames: 81\nsteps: 5000\nfps: x\n")
    with pytest.raises(SidecarError) as caught:
        load_sidecar(sidecar)
    assert caught.value.problems == [
        "fps: 'x' is not a whole number",
        "frames: 81 is above 32, the most every server takes (ComfyUI servers take up to 1024)",
        "steps: 5000 is above 100, the most every server takes (ComfyUI servers take up to 200)",
    ]


def test_with_the_celery_executor_the_ingest_host_holds_profiles_to_the_widest_range() -> None:
    """The ingest host does not know the GPU hosts' servers: each GPU host fails what its own cannot take."""
    celery = f"server: {PREDICT}\nexecutor: {{kind: celery, broker: 'redis://q:6379/0'}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + celery + WAN + "  typo: {frames: 2000}\n")
    assert [problem for problem in caught.value.problems if problem.startswith("profiles.")] == [
        "profiles.typo.frames: 2000 is above 1024, the most any server takes"
    ]
    on_gpu_hosts = parse_config(BASE + celery + WAN)  # 81 frames: a ComfyUI GPU host takes them
    config = parse_config(BASE + f"server: {PREDICT}\n")
    assert job_limits(config) == limits_for(config.servers)
    assert range_problems({"frames": 81}, job_limits(config)) != []
    assert range_problems({"frames": 81, "fps": 30}, job_limits(on_gpu_hosts)) == []
    # the ingest host's workers send to the queue, whatever its own `server:` says (a GPU host judges)
    assert range_problems({"frames": 81}, sending_limits(config, config.server)) != []
    assert range_problems({"frames": 81}, sending_limits(on_gpu_hosts, config.server)) == []
