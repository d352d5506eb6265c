"""`i2vd probe` and `i2vd check` for ComfyUI: the server (version, devices, VRAM) and the workflow's I2VD: nodes.

What each `I2VD:` node would get is shown for a sample 1280×720 image with the default profile,
so that a workflow can be checked before the first job: node, class, title, input and value.
Probing only reads (`GET /system_stats`); no prompt is sent.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import requests

from i2vd.config.comfyui_workflow import (
    Workflow,
    WorkflowError,
    describe_bindings,
    field_values,
    load_workflow,
)
from i2vd.config.load import Config
from i2vd.config.model import ProfileFields
from i2vd.core.images import ImageFacts
from i2vd.render.backends.probe_report import ProbeReport

SAMPLE = ImageFacts(1280, 720, "JPEG")
SAMPLE_NAME = "sample.jpg"


def system_stats(session: requests.Session, url: str, timeout: float) -> dict | None:
    """ComfyUI's /system_stats, or None when the URL is not a ComfyUI."""
    try:
        response = session.get(f"{url}/system_stats", timeout=(timeout, timeout))
        stats = response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None
    if isinstance(stats, dict) and isinstance(stats.get("system"), dict) and "comfyui_version" in stats["system"]:
        return stats
    return None


def device_lines(stats: dict) -> list[str]:
    lines = []
    for device in stats.get("devices") or []:
        total, free = device.get("vram_total") or 0, device.get("vram_free") or 0
        lines.append(
            f"  device {device.get('name')} ({device.get('type')}): VRAM {(total - free) // 2**20} MiB used "
            f"of {total // 2**20} MiB (gpu.source: comfyui reads this)"
        )
    return lines or ["  no devices listed"]


def sample_lines(workflow: Workflow, config: Config | None) -> list[str]:
    """What each bound input gets for a sample image with the default profile."""
    if config is not None:
        from i2vd.config.profiles import resolve_profile

        resolved = resolve_profile(config, PurePosixPath(SAMPLE_NAME), SAMPLE)
        prompt, params = resolved.prompt, resolved.params
    else:
        params = ProfileFields().model_dump()
        prompt = "(the profile's prompt)"
    values = field_values(
        image_name=f"i2vd/<key>{PurePosixPath(SAMPLE_NAME).suffix}",
        prompt=prompt,
        params=params,
        image_size=(SAMPLE.width, SAMPLE.height),
        image=SAMPLE_NAME.encode(),
        job_id=None,
    )
    lines = [f"  a {SAMPLE.width}x{SAMPLE.height} {SAMPLE_NAME} with the default profile would set:"]
    lines += [f"    {line}" for line in describe_bindings(workflow, values)]
    if params.get("seed") is None and any(binding.field == "seed" for binding in workflow.bindings):
        lines.append("    (no seed in the profile: each image's seed comes from its SHA-256, the same on a re-render)")
    if not any(binding.field == "output" for binding in workflow.bindings):
        lines.append("    (no I2VD:output node: the video is taken from the only node that makes one)")
    return lines


def workflow_lines(path: str | None, config: Config | None) -> tuple[list[str], str | None]:
    """(lines, problem) for the workflow at `path`."""
    if not path:
        return ["  no workflow given (server.workflow in the config, then probe -c CONFIG)"], None
    try:
        workflow = load_workflow(path)
    except WorkflowError as error:
        return [f"  workflow {path}"], str(error)
    return [f"  workflow {path}: {len(workflow.bindings)} input(s) from I2VD: titles"] + sample_lines(
        workflow, config
    ), None


def check_lines(config: Config) -> list[str]:
    """For `i2vd check`: each ComfyUI server's workflow and what a sample image sets (read offline)."""
    lines: list[str] = []
    for entry in config.servers:
        if entry.server.kind == "comfyui":
            found, problem = workflow_lines(entry.server.workflow, config)
            lines += [f"server {entry.name} (comfyui):"] + found + ([f"  error: {problem}"] if problem else [])
    return lines


def comfyui_report(url: str, stats: dict, *, workflow: str | None = None, config: Config | None = None) -> ProbeReport:
    lines, problem = workflow_lines(workflow, config)
    report = ProbeReport(url, "comfyui", version=str(stats["system"]["comfyui_version"]), problem=problem)
    report.details = device_lines(stats) + lines
    return report
