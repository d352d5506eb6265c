"""The shipped systemd units: valid (systemd-analyze verify prints nothing), hardened (exposure <= 2.0),
and saying what the daemon relies on (notify, watchdog, exit 78 is not restarted, GPU devices)."""

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


@needs_analyze
@pytest.mark.parametrize("unit", ["i2vd.service", "i2vd@.service"])
def test_systemd_analyze_verify_prints_nothing(unit, tmp_path):
    path = installable_copy(unit, tmp_path)
    result = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


@needs_analyze
@pytest.mark.parametrize("unit", ["i2vd.service", "i2vd@.service"])
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
