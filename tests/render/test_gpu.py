"""The VRAM gate with injected readers, and the command reader against real scripts."""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from i2vd.config.load import GpuConfig, parse_config
from i2vd.core.clock import ManualClock
from i2vd.render.gpu import GpuReadError, MemoryReading, VramGate, command_reader

BASE = "output_dir: /o\nwatch: [{path: /i}]\n"


def gpu_config(text: str = "") -> GpuConfig:
    return parse_config(BASE + f"gpu: {{{text}}}\n").gpu


def fixed(used: int, total: int | None = None) -> Callable[[], MemoryReading]:
    return lambda: MemoryReading(used_mb=used, total_mb=total)


def failing(message: str = "NVML read of GPU 0 failed: GPU is lost") -> Callable[[], MemoryReading]:
    def read() -> MemoryReading:
        raise GpuReadError(message)

    return read


class Sequence:
    """A reader that returns the given readings in turn, then the last one forever."""

    def __init__(self, *readings: MemoryReading | Exception):
        self.readings = list(readings)
        self.calls = 0

    def __call__(self) -> MemoryReading:
        reading = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        if isinstance(reading, Exception):
            raise reading
        return reading


# -- the gate's verdicts ---------------------------------------------------------------


def test_the_gate_is_open_at_or_under_the_threshold() -> None:
    gate = VramGate(gpu_config("max_used_mb: 10000"), fixed(10000))
    assert gate.state == "unknown"
    assert gate.check()
    assert gate.state == "open"
    assert gate.detail == "open: 10,000 MB used"
    assert gate.last_reading == MemoryReading(10000)


def test_the_gate_is_closed_above_the_threshold_and_says_why() -> None:
    gate = VramGate(gpu_config("max_used_mb: 10000"), fixed(10540, 24576))
    assert not gate.check()
    assert gate.state == "closed"
    assert gate.detail == "waiting for VRAM: 10,540 MB used > 10,000 MB"


def test_min_free_mode_waits_for_free_memory() -> None:
    config = gpu_config("min_free_mb: 12000")
    closed = VramGate(config, fixed(14000, 24576))  # 10,576 free
    assert not closed.check()
    assert closed.detail == "waiting for VRAM: 10,576 MB free < 12,000 MB"
    # a server holding 11 GB of weights while idle passes, though a used-threshold would never let it
    opened = VramGate(config, fixed(11000, 24576))
    assert opened.check()
    assert opened.state == "open"


def test_min_free_replaces_the_used_threshold() -> None:
    gate = VramGate(gpu_config("max_used_mb: 10000, min_free_mb: 4000"), fixed(20000, 24576))
    assert gate.check()  # 4,576 MB free is enough; 20,000 MB used does not matter


def test_min_free_mode_with_an_unknown_total_does_not_silently_open() -> None:
    gate = VramGate(gpu_config("min_free_mb: 12000"), fixed(23000))
    assert not gate.check()
    assert gate.state != "open"


def test_a_gate_without_a_reader_is_off_and_always_open() -> None:
    gate = VramGate(gpu_config(), None)
    assert gate.state == "off"
    assert gate.check()
    assert gate.detail == "gate off"


def test_an_unreadable_gpu_closes_the_gate_when_on_error_is_wait() -> None:
    gate = VramGate(gpu_config("on_error: wait"), failing())
    assert not gate.check()
    assert gate.state == "error"
    assert gate.detail == "cannot read GPU memory: NVML read of GPU 0 failed: GPU is lost"


def test_an_unreadable_gpu_lets_jobs_through_when_on_error_is_proceed() -> None:
    gate = VramGate(gpu_config("on_error: proceed"), failing())
    assert gate.check()
    assert gate.state == "error"
    assert gate.detail.startswith("cannot read GPU memory:")


def test_the_gate_recovers_after_a_read_error() -> None:
    reader = Sequence(GpuReadError("timeout"), MemoryReading(500))
    gate = VramGate(gpu_config(), reader)
    assert not gate.check()
    assert gate.check()
    assert (gate.state, gate.detail) == ("open", "open: 500 MB used")


# -- wait_open --------------------------------------------------------------------------


def test_wait_open_returns_true_once_the_reading_drops(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    reader = Sequence(MemoryReading(12000), MemoryReading(12000), GpuReadError("blip"), MemoryReading(9000))
    gate = VramGate(gpu_config("poll_seconds: 5"), reader, clock)
    details: list[str] = []
    started = clock.now()
    assert gate.wait_open(threading.Event(), on_wait=details.append)
    assert reader.calls == 4
    assert clock.now() - started == 15  # three polls waited on the clock, none slept
    # each change of reason is reported once, not every poll
    assert details == ["waiting for VRAM: 12,000 MB used > 10,000 MB", "cannot read GPU memory: blip"]
    assert gate.state == "open"


def test_wait_open_returns_at_once_when_open() -> None:
    clock = ManualClock()
    gate = VramGate(gpu_config(), fixed(0), clock)
    assert gate.wait_open(threading.Event())
    assert clock.now() == ManualClock().now()


def test_wait_open_returns_false_when_stop_is_set() -> None:
    stop = threading.Event()
    stop.set()
    gate = VramGate(gpu_config(), fixed(20000), ManualClock())
    assert not gate.wait_open(stop)


def test_wait_open_returns_false_when_stop_is_set_while_waiting() -> None:
    stop = threading.Event()
    calls = 0

    def read() -> MemoryReading:
        nonlocal calls
        calls += 1
        if calls == 3:
            stop.set()  # e.g. SIGTERM arrives while the gate is closed
        return MemoryReading(20000)

    gate = VramGate(gpu_config(), read, ManualClock())
    assert not gate.wait_open(stop)
    assert calls == 3
    assert gate.state == "closed"


# -- the ComfyUI reader ------------------------------------------------------------------


def test_a_comfyui_whose_system_stats_drips_forever_is_a_read_error_within_its_timeout() -> None:
    """The gate's reading bounds the whole call, as a job's does: a server that drips must not hold the worker."""
    from i2vd.render.gpu import comfyui_reader
    from tests.support.dripping import DrippingServer
    from tests.support.fakes import wait_for

    outcome: list[BaseException | MemoryReading] = []
    with DrippingServer() as comfy:
        reader = comfyui_reader(comfy.url, timeout_seconds=1)

        def read() -> None:
            try:
                outcome.append(reader())
            except BaseException as error:  # noqa: BLE001 - what the test looks at
                outcome.append(error)

        thread = threading.Thread(target=read, name="gate-read")
        thread.start()
        try:
            wait_for(lambda: outcome, timeout=15, message="the reading never ended")
        finally:
            comfy.stopping.set()
            thread.join()
    assert isinstance(outcome[0], GpuReadError) and "system_stats" in str(outcome[0])


# -- the command reader ------------------------------------------------------------------


def script(tmp_path: Path, body: str, name: str = "vram") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("output", "reading"),
    [
        ("10540", MemoryReading(10540)),
        ("10540, 24576", MemoryReading(10540, 24576)),
        ("10540 MiB, 24576 MiB", MemoryReading(10540, 24576)),
        ("  10540  ", MemoryReading(10540)),
        ("\n10540\n2000", MemoryReading(10540)),  # the first GPU's line
    ],
)
def test_the_command_reader_parses_used_and_total(tmp_path: Path, output: str, reading: MemoryReading) -> None:
    command = script(tmp_path, f"printf '{output}\\n'")
    assert command_reader(command)() == reading


def test_the_command_is_split_like_a_shell_line(tmp_path: Path) -> None:
    command = script(tmp_path, 'echo "$1, $2"', name="two args")
    assert command_reader(f"'{command}' 700 '8000'")() == MemoryReading(700, 8000)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("echo garbage", "gpu.command printed 'garbage', expected used MiB (a number)"),
        ("echo 10540,", "gpu.command printed '10540,', expected used MiB (a number)"),
        ("echo '1, 2, 3'", "gpu.command printed '1, 2, 3', expected 'used' or 'used, total' MiB"),
        ("echo -5", "gpu.command printed '-5', expected 'used' or 'used, total' MiB"),
        ("echo '[N/A]'", "gpu.command printed '[N/A]', expected used MiB (a number)"),
        ("true", "gpu.command printed nothing"),
        ("echo; echo '   '", "gpu.command printed nothing"),
        ("echo 'NVIDIA-SMI has failed' >&2; exit 9", "gpu.command exited 9: NVIDIA-SMI has failed"),
        ("exit 1", "gpu.command exited 1: "),
    ],
)
def test_the_command_reader_is_strict_with_clear_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(GpuReadError) as caught:
        command_reader(script(tmp_path, body))()
    assert str(caught.value) == message


@pytest.mark.parametrize("printed", ["inf", "1e400"])
def test_the_command_reader_refuses_infinite_numbers(tmp_path: Path, printed: str) -> None:
    with pytest.raises(GpuReadError):
        command_reader(script(tmp_path, f"echo {printed}"))()


def test_a_missing_command_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(GpuReadError, match="gpu.command failed to run"):
        command_reader(str(tmp_path / "no-such-command"))()


def test_a_command_that_hangs_is_a_read_error(tmp_path: Path) -> None:
    command = script(tmp_path, "exec sleep 30")
    with pytest.raises(GpuReadError, match="gpu.command failed to run"):
        command_reader(command, timeout_seconds=0.2)()


def test_a_gate_over_a_failing_command_waits_and_says_so(tmp_path: Path) -> None:
    gate = VramGate(gpu_config(), command_reader(script(tmp_path, "exit 3")))
    assert not gate.check()
    assert gate.detail == "cannot read GPU memory: gpu.command exited 3: "


# -- from_config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["enabled: false", "source: none", "enabled: true, source: none", "enabled: false, source: command"]
)
def test_from_config_has_no_reader_when_disabled(text: str) -> None:
    gate = VramGate.from_config(gpu_config(text))
    assert gate.reader is None
    assert gate.state == "off"
    assert gate.check()


def test_from_config_uses_an_injected_reader() -> None:
    gate = VramGate.from_config(gpu_config("enabled: true"), reader=fixed(20000))
    assert not gate.check()


def test_from_config_builds_a_command_reader(tmp_path: Path) -> None:
    command = script(tmp_path, "echo 123, 456")
    gate = VramGate.from_config(gpu_config(f"source: command, command: '{command}'"))
    assert gate.check()
    assert gate.last_reading == MemoryReading(123, 456)


def test_from_config_refuses_source_command_without_a_command() -> None:
    """Config validation reports this first; the gate still refuses a GpuConfig built by hand."""
    with pytest.raises(GpuReadError, match="gpu.command is empty"):
        VramGate.from_config(dataclasses.replace(gpu_config("source: none"), source="command"))


NVML_PRESENT = importlib.util.find_spec("pynvml") is not None


@pytest.mark.skipif(NVML_PRESENT, reason="nvidia-ml-py is installed here: the GPU-less path is not what runs")
def test_nvml_with_enabled_auto_on_a_machine_without_nvml_turns_the_gate_off_and_says_why() -> None:
    gate = VramGate.from_config(gpu_config("enabled: auto, source: nvml"))
    assert gate.reader is None
    assert gate.state == "off"
    assert gate.detail.startswith("gate off (")
    assert "NVML" in gate.detail
    assert gate.check()


@pytest.mark.skipif(NVML_PRESENT, reason="nvidia-ml-py is installed here: the GPU-less path is not what runs")
def test_nvml_with_enabled_true_on_a_machine_without_nvml_is_an_error() -> None:
    with pytest.raises(GpuReadError, match="NVML"):
        VramGate.from_config(gpu_config("enabled: true, source: nvml"))


def test_a_gate_closed_by_the_idle_server_itself_says_so_after_stuck_minutes(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    readings = [MemoryReading(11020, 24576)] * 13 + [MemoryReading(2000, 24576)]
    gate = VramGate(gpu_config("poll_seconds: 60, stuck_minutes: 10"), Sequence(*readings), clock)
    details: list[str] = []
    with caplog.at_level("INFO", logger="i2vd.gpu"):
        assert gate.wait_open(threading.Event(), on_wait=details.append)
    stuck = [
        record.getMessage()
        for record in caplog.records
        if record.levelname == "WARNING" and "while no i2vd job runs" in record.getMessage()
    ]
    assert len(stuck) == 1, caplog.messages  # warned once; the minute-by-minute reports repeat it at INFO
    assert "closed 10 min while no i2vd job runs on this GPU (idle reading: 11,020 MB used of 24,576 MB)" in stuck[0]
    assert "set gpu.min_free_mb" in stuck[0]
    assert details[0] == "waiting for VRAM: 11,020 MB used > 10,000 MB"
    assert "while no i2vd job runs" in gate.detail or gate.state == "open"
    assert any("VRAM gate open again" in message for message in caplog.messages)


def test_a_moving_reading_is_reported_once_a_minute_not_at_every_poll() -> None:
    clock = ManualClock()
    readings = [MemoryReading(12000 + step) for step in range(30)] + [MemoryReading(1)]
    gate = VramGate(gpu_config("poll_seconds: 5"), Sequence(*readings), clock)
    details: list[str] = []
    assert gate.wait_open(threading.Event(), on_wait=details.append)
    assert len(details) == 3  # 150 s closed: at 0, 60 and 120 s
