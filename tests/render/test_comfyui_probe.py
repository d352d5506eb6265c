"""`i2vd probe` and `i2vd check` on ComfyUI: the replayed 0.3.64 server, and the workflow's I2VD: nodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from i2vd.cli.commands import main
from tests.support.comfyui_replay import ReplayedComfyUI

WAN = Path(__file__).parents[2] / "examples" / "workflows" / "wan2.1-i2v-480p.json"


def write_config(tmp_path: Path, url: str) -> Path:
    shutil.copy(WAN, tmp_path / "wan.json")
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "i2vd.yaml"
    path.write_text(
        f"output_dir: out\nstate_dir: state\nwatch: [{{path: in}}]\n"
        f"server: {{kind: comfyui, url: '{url}', workflow: wan.json}}\n"
        "profiles: {default: {prompt: 'Waves crashing', resolution: 512p, frames: 29, fps: 16, seed: 5}}\n"
    )
    return path


def test_probe_of_a_url_says_comfyui_with_its_version_and_vram(capsys):
    with ReplayedComfyUI("free") as comfy:
        assert main(["probe", comfy.url]) == 0
        url = comfy.url
    out = capsys.readouterr().out
    assert out.startswith(f"{url}: ComfyUI 0.3.64\n")
    assert "device cpu (cpu): VRAM " in out and "MiB used of 24105 MiB" in out


def test_probe_with_the_config_lists_each_i2vd_node_and_the_value_a_sample_image_gets(capsys, tmp_path):
    with ReplayedComfyUI("free") as comfy:
        assert main(["probe", "-c", str(write_config(tmp_path, comfy.url)), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["kind"], report["version"], report["usable"]) == ("comfyui", "0.3.64", True)
    details = "\n".join(report["details"])
    assert "node 6 CLIPTextEncode [I2VD:prompt]: text = 'Waves crashing'" in details
    assert "node 50 WanImageToVideo [I2VD:resolution,frames]: width = 912" in details  # 1280x720 at 512p
    assert "node 50 WanImageToVideo [I2VD:resolution,frames]: length = 29" in details
    assert "node 3 KSampler [I2VD:seed,steps,guidance]: seed = 5" in details
    assert "node 55 CreateVideo [I2VD:fps]: fps = 16.0" in details


def test_check_shows_the_workflow_offline(capsys, tmp_path):
    assert main(["check", "-c", str(write_config(tmp_path, "http://127.0.0.1:9"))]) == 0
    out = capsys.readouterr().out
    assert "server http://127.0.0.1:9 (comfyui):" in out
    assert "node 52 LoadImage [I2VD:image]: image = 'i2vd/<key>.jpg'" in out
