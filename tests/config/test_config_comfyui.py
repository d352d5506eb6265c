"""`server.kind: comfyui` in the config: the workflow is found beside the config and checked at load (exit 78)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from i2vd.cli.commands import EX_CONFIG, main
from i2vd.config.load import ConfigError, load_config

EXAMPLE_WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "comfyui-model-free.json"


def write_config(folder: Path, server: str, gpu: str = "") -> Path:
    (folder / "in").mkdir(exist_ok=True)
    path = folder / "i2vd.yaml"
    path.write_text(f"output_dir: out\nstate_dir: state\nwatch: [{{path: in}}]\n{server}{gpu}", encoding="utf-8")
    return path


def test_the_workflow_is_taken_relative_to_the_config_file(tmp_path):
    (tmp_path / "flows").mkdir()
    shutil.copy(EXAMPLE_WORKFLOW, tmp_path / "flows" / "still.json")
    config = load_config(
        write_config(
            tmp_path,
            "server: {kind: comfyui, url: 'http://gpu:8188', workflow: flows/still.json, free_after_job: true}\n",
            "gpu: {source: comfyui}\n",
        )
    )
    server = config.server
    assert (server.kind, server.workflow, server.free_after_job) == ("comfyui", tmp_path / "flows" / "still.json", True)
    assert config.servers[0].gpu.source == "comfyui"


def test_several_comfyui_servers_each_with_its_workflow(tmp_path):
    shutil.copy(EXAMPLE_WORKFLOW, tmp_path / "still.json")
    config = load_config(
        write_config(
            tmp_path,
            "servers:\n  - {name: a, kind: comfyui, url: 'http://a:8188', workflow: still.json}\n"
            "  - {name: b, kind: comfyui, url: 'http://b:8188', workflow: still.json}\n",
        )
    )
    assert [entry.server.workflow for entry in config.servers] == [tmp_path / "still.json"] * 2


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda nodes: nodes["1"]["_meta"].update(title="Load Image"),
            "server.workflow: .* no node is titled I2VD:image",
        ),
        (lambda nodes: nodes["3"]["_meta"].update(title="I2VD:frames.count"), "node 3 .*has no input 'count'"),
    ],
)
def test_a_workflow_i2vd_cannot_fill_is_a_config_error(tmp_path, change, problem):
    nodes = json.loads(EXAMPLE_WORKFLOW.read_text())
    change(nodes)
    (tmp_path / "wf.json").write_text(json.dumps(nodes))
    path = write_config(tmp_path, "server: {kind: comfyui, workflow: wf.json}\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(path)
    assert main(["check", "-c", str(path)]) == EX_CONFIG


def test_comfyui_needs_a_workflow_and_its_vram_source_needs_comfyui(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, "server: {kind: comfyui}\n"))
    assert "server.workflow: is required when kind is comfyui" in str(caught.value)
    with pytest.raises(
        ConfigError, match="gpu.source: comfyui reads the VRAM of a ComfyUI server, but server.kind is gradio"
    ):
        load_config(write_config(tmp_path, "server: {kind: gradio}\n", "gpu: {source: comfyui}\n"))
    with pytest.raises(ConfigError, match="cannot read the workflow"):
        load_config(write_config(tmp_path, "server: {kind: comfyui, workflow: nowhere.json}\n"))
