"""The shipped systemd units: valid (systemd-analyze verify prints nothing), hardened (exposure <= 2.0),
and saying what the daemon relies on (notify, watchdog, exit 78 is not restarted, GPU devices); the GPU-host
worker's units (`executor: celery`) likewise, with the daemon's hardening line for line."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from i2vd.config.load import ConfigFile

STOP_GRACE_SECONDS = ConfigFile.model_fields["stop_grace_seconds"].default

UNITS = Path(__file__).resolve().parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")


def installable_copy(unit: str, tmp_path: Path, instance: str = "studio") -> Path:
    """The unit as it would be installed, with ExecStart pointing at a program that exists here."""
    text = (UNITS / unit).read_text().replace("/opt/i2vd/bin/i2vd", shutil.which("true"))
    name = unit.replace("@.", f"@{instance}.")
    (tmp_path / name).write_text(text)
    return tmp_path / name


def service_section(unit: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        match = re.match(r"^(\w+)=(.*)$", line)
        if match:
            values.setdefault(match.group(1), []).append(match.group(2))
    return values


ALL_UNITS = ["i2vd.service", "i2vd@.service", "i2vd-worker.service", "i2vd-worker@.service"]


@needs_analyze
@pytest.mark.parametrize("unit", ALL_UNITS)
def test_systemd_analyze_verify_prints_nothing(unit, tmp_path):
    path = installable_copy(unit, tmp_path)
    result = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


@needs_analyze
@pytest.mark.parametrize("unit", ALL_UNITS)
def test_security_exposure_is_at_most_2(unit, tmp_path):
    path = installable_copy(unit, tmp_path)
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(path)], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


@pytest.mark.parametrize("unit", ["i2vd.service", "i2vd@.service"])
def test_the_unit_says_what_the_daemon_relies_on(unit):
    service = service_section(unit)
    assert service["Type"] == ["notify"]
    assert service["RestartPreventExitStatus"] == ["78"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillMode"] == ["mixed"]
    assert service["User"] == ["i2vd"]
    assert int(service["TimeoutStopSec"][0]) > STOP_GRACE_SECONDS, (
        "systemd must not kill before the running job's grace ends"
    )
    assert int(service["WatchdogSec"][0]) > 0
    assert "char-nvidia* rw" in service["DeviceAllow"]
    assert service["ReadWritePaths"]
    assert service["StateDirectory"][0].startswith("i2vd")


def test_the_instance_unit_reads_its_own_config():
    service = service_section("i2vd@.service")
    assert service["ExecStart"] == ["/opt/i2vd/bin/i2vd run -c /etc/i2vd/%i.yaml"]
    assert service["StateDirectory"] == ["i2vd/%i"]


def test_both_units_differ_only_in_the_instance_lines():
    plain = (UNITS / "i2vd.service").read_text().splitlines()
    instance = (UNITS / "i2vd@.service").read_text().splitlines()
    differing = [(a, b) for a, b in zip(plain, instance, strict=True) if a != b]
    assert [a.split("=")[0] for a, _ in differing] == ["Description", "ExecStart", "StateDirectory"]


def hardening(unit: str) -> list[str]:
    """The unit's lines from its `# Hardening` comment to [Install], comments and blank lines left out."""
    lines = (UNITS / unit).read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("# Hardening"))
    end = lines.index("[Install]")
    return [line for line in lines[start:end] if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("unit", ["i2vd-worker.service", "i2vd-worker@.service"])
def test_the_worker_unit_has_the_daemons_hardening_and_says_what_the_worker_relies_on(unit):
    # the daemon's hardening, but for ReadWritePaths: a worker writes only its state directory
    assert hardening(unit) == [line for line in hardening("i2vd.service") if not line.startswith("ReadWritePaths=")]
    service = service_section(unit)
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]  # READY=1 once it consumes
    assert service["RestartPreventExitStatus"] == ["78"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillMode"] == ["mixed"]
    assert service["User"] == ["i2vd"]
    assert int(service["TimeoutStopSec"][0]) > STOP_GRACE_SECONDS
    assert "TimeoutStartSec" not in service  # READY=1 comes before the broker answers: boot never waits for it
    assert "char-nvidia* rw" in service["DeviceAllow"]  # NVML: the worker's own VRAM gate
    assert "ReadWritePaths" not in service
    assert service["StateDirectory"][0].startswith("i2vd-worker")
    assert service["ExecStart"][0].startswith("/opt/i2vd/bin/i2vd worker -c /etc/i2vd/")


def test_the_worker_units_differ_only_in_the_instance_lines():
    plain = (UNITS / "i2vd-worker.service").read_text().splitlines()
    instance = (UNITS / "i2vd-worker@.service").read_text().splitlines()
    differing = [(a, b) for a, b in zip(plain, instance, strict=True) if a != b]
    assert [a.split("=")[0] for a, _ in differing] == ["Description", "ExecStart", "StateDirectory"]
    assert service_section("i2vd-worker.service")["ExecStart"] == [
        "/opt/i2vd/bin/i2vd worker -c /etc/i2vd/gpu-host.yaml"
    ]
    assert service_section("i2vd-worker@.service")["ExecStart"] == ["/opt/i2vd/bin/i2vd worker -c /etc/i2vd/%i.yaml"]
    assert service_section("i2vd-worker@.service")["StateDirectory"] == ["i2vd-worker/%i"]
