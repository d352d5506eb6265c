"""ComfyUI API workflows: I2VD: titles, what each field sets, and what the recorded replies mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from i2vd.config.comfyui_workflow import (
    WorkflowError,
    default_seed,
    describe_bindings,
    field_values,
    load_workflow,
    parse_workflow,
    size_for,
)
from i2vd.render.backends.base import ServerOutOfMemory
from i2vd.render.backends.comfyui_protocol import (
    WorkflowRejected,
    execution_failure,
    history_failure,
    rejection,
    videos,
)

ROOT = Path(__file__).parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "comfyui" / "0.3.64"
EXAMPLES = ROOT / "examples" / "workflows"


def recorded(session: str, method: str, path_start: str) -> dict:
    entries = json.loads((RECORDED / f"{session}.json").read_text())
    return next(e for e in entries if e.get("method") == method and e.get("path", "").startswith(path_start))


def node(class_type: str, title: str | None = None, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs, **({"_meta": {"title": title}} if title else {})}


def values(**changes) -> dict:
    params = {"resolution": "512p", "frames": 16, "fps": 8, "steps": 30, "guidance": 6.0, "seed": None}
    return field_values(
        image_name="i2vd/x.png",
        prompt="waves",
        params=params | changes,
        image_size=(1920, 1080),
        image=b"img",
        job_id=12,
    )


def test_both_example_workflows_load_with_their_titles_in_place():
    free = load_workflow(EXAMPLES / "comfyui-model-free.json")
    assert [(b.node_id, b.field, b.input) for b in free.bindings] == [
        ("1", "image", "image"),
        ("2", "resolution", "width"),
        ("2", "resolution", "height"),
        ("3", "frames", "amount"),
        ("4", "fps", "fps"),
        ("5", "output", "filename_prefix"),
    ]
    wan = load_workflow(EXAMPLES / "wan2.1-i2v-480p.json")
    assert {b.field for b in wan.bindings} == {
        "image",
        "prompt",
        "frames",
        "fps",
        "steps",
        "guidance",
        "seed",
        "resolution",
        "output",
    }


def test_each_field_finds_its_input_by_name_or_by_the_title():
    workflow = parse_workflow(
        {
            "1": node("LoadImage", "I2VD:image", image="x.png"),
            "2": node("CLIPTextEncode", "I2VD:prompt", text="", clip=["9", 0]),
            "3": node("KSampler", "I2VD:seed", seed=1, steps=20, cfg=6.0),
            "4": node("KSampler", "I2VD:steps", seed=1, steps=20, cfg=6.0),
            "5": node("WanImageToVideo", "I2VD:frames", length=81, width=832, height=480),
            "6": node("SomeNode", "I2VD:guidance.scale", scale=1.0),
        }
    )
    built = workflow.build(values(seed=42))
    assert built["2"]["inputs"]["text"] == "waves"
    assert built["3"]["inputs"]["seed"] == 42 and built["4"]["inputs"]["steps"] == 30
    assert built["5"]["inputs"]["length"] == 16 and built["5"]["inputs"]["width"] == 832  # only the bound input
    assert built["6"]["inputs"]["scale"] == 6.0
    assert workflow.nodes["2"]["inputs"]["text"] == ""  # the loaded workflow is never changed


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ({"1": node("LoadImage", "Load Image", image="x.png")}, "no node is titled I2VD:image"),
        (
            {"1": node("LoadImage", "I2VD:image", image="x"), "2": node("KSampler", "I2VD:seed.noise", seed=1)},
            "node 2 (KSampler, titled 'I2VD:seed.noise'): has no input 'noise' (it has seed)",
        ),
        (
            {"1": node("LoadImage", "I2VD:image", image="x"), "2": node("KSampler", "I2VD:sampler", seed=1)},
            "'sampler' is not a field i2vd sets",
        ),
        (
            {"1": node("LoadImage", "I2VD:image", image="x"), "2": node("EmptyLatent", "I2VD:frames", count=1)},
            "has none of the inputs length, frames",
        ),
        (
            {"1": node("LoadImage", "I2VD:image", image="x"), "2": node("ImageScale", "I2VD:resolution", width=1)},
            "needs inputs width and height",
        ),
        (
            {"1": node("LoadImage", "I2VD:image", image="x"), "2": node("KSampler", "I2VD:seed", seed=["7", 0])},
            "input 'seed' is connected to node 7",
        ),
    ],
)
def test_a_workflow_i2vd_cannot_fill_is_refused_naming_the_node(nodes, message):
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(nodes, source="wan.json")
    assert message in str(caught.value)


def test_a_ui_workflow_is_refused_with_how_to_export_the_api_one():
    with pytest.raises(WorkflowError, match=r"UI workflow .* Export \(API\)"):
        parse_workflow({"nodes": [], "links": [], "version": 0.4})


def test_resolution_keeps_the_aspect_ratio_in_multiples_of_16():
    assert size_for("512p", (1920, 1080)) == {"width": 912, "height": 512, "short": 512}
    assert size_for("256p", (240, 320)) == {"width": 256, "height": 336, "short": 256}
    assert size_for("1024p", (500, 500)) == {"width": 1024, "height": 1024, "short": 1024}


def test_the_default_seed_comes_from_the_image_so_a_rerender_is_the_same():
    assert values()["seed"] == default_seed(b"img") == values()["seed"]
    assert default_seed(b"other") != default_seed(b"img") and values(seed=5)["seed"] == 5


def test_probe_lines_name_node_class_input_and_value():
    workflow = load_workflow(EXAMPLES / "comfyui-model-free.json")
    lines = describe_bindings(workflow, values())
    assert "node 2 ImageScale [I2VD:resolution]: width = 912" in lines
    assert "node 5 SaveVideo [I2VD:output]: filename_prefix = 'i2vd/12'" in lines


def test_the_recorded_400_reads_as_node_class_and_message():
    reply = recorded("rejected", "POST", "/prompt")["body"]["json"]
    assert rejection(reply) == (
        "node 9 (CheckpointLoaderSimple): Value not in list: "
        "ckpt_name: 'wan2.1_i2v_480p_14B_fp16.safetensors' not in []"
    )


def test_the_recorded_histories_read_as_video_error_and_interruption():
    finished = next(iter(recorded("free", "GET", "/history/")["body"]["json"].values()))
    assert finished["status"]["status_str"] == "success"
    assert [item["filename"] for item in videos(finished["outputs"]["5"])] == ["7_00006_.mp4"]
    failed = next(iter(recorded("error", "GET", "/history/")["body"]["json"].values()))
    assert "SaveVideo" in str(history_failure(failed["status"], "p"))
    interrupted = next(iter(recorded("watch", "GET", "/history/")["body"]["json"].values()))
    assert interrupted["status"]["status_str"] == "error"
    assert "interrupted" in str(history_failure(interrupted["status"], "p"))


def test_out_of_memory_messages_of_cpu_and_gpu_are_server_out_of_memory():
    gpu = {
        "node_id": "3",
        "node_type": "KSampler",
        "exception_type": "torch.OutOfMemoryError",
        "exception_message": "Allocation on device \nThis error means you ran out of memory on your GPU.",
    }
    assert isinstance(execution_failure(gpu), ServerOutOfMemory)
    entries = json.loads((RECORDED / "oom.json").read_text())
    (socket,) = [entry for entry in entries if "websocket" in entry]
    (cpu,) = [m["data"]["data"] for m in socket["messages"] if m.get("data", {}).get("type") == "execution_error"]
    assert cpu["exception_type"] == "RuntimeError" and isinstance(execution_failure(cpu), ServerOutOfMemory)
    assert isinstance(
        execution_failure({"exception_type": "FileNotFoundError", "exception_message": "x"}), WorkflowRejected
    )
