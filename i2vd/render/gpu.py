"""The VRAM gate: a job is sent only while the GPU's memory use is under the threshold.

Readers are small callables returning (used MiB, total MiB or None). NVML is
imported lazily because a machine without a GPU is normal; `enabled: auto` turns
the gate on only when NVML finds one. A gate that cannot read the GPU does not
silently pass: it waits (or proceeds, if configured) and says so.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

from i2vd.config.load import GpuConfig
from i2vd.core.clock import Clock

log = logging.getLogger("i2vd.gpu")
REPORT_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class MemoryReading:
    used_mb: int
    total_mb: int | None = None

    @property
    def free_mb(self) -> int | None:
        return None if self.total_mb is None else self.total_mb - self.used_mb


Reader = Callable[[], MemoryReading]


class GpuReadError(Exception):
    pass


def nvml_reader(index: int) -> Reader:
    """Raises GpuReadError at once when NVML or the GPU is not there."""
    try:
        import pynvml  # from nvidia-ml-py, imported only when asked for
    except ImportError:
        raise GpuReadError("NVML is not installed (pip install 'i2vd[nvml]')") from None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError as error:
        raise GpuReadError(f"NVML cannot open GPU {index}: {error}") from None

    def read() -> MemoryReading:
        try:
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except pynvml.NVMLError as error:
            raise GpuReadError(f"NVML read of GPU {index} failed: {error}") from None
        return MemoryReading(used_mb=int(memory.used // (1024 * 1024)), total_mb=int(memory.total // (1024 * 1024)))

    return read


def command_reader(command: str, timeout_seconds: float = 30) -> Reader:
    """A command printing used MiB (optionally `used, total`) on its first line, e.g. nvidia-smi over ssh."""

    def read() -> MemoryReading:
        try:
            finished = subprocess.run(
                shlex.split(command), capture_output=True, text=True, timeout=timeout_seconds, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise GpuReadError(f"gpu.command failed to run: {error}") from None
        if finished.returncode != 0:
            raise GpuReadError(f"gpu.command exited {finished.returncode}: {finished.stderr.strip()[:200]}")
        lines = [line for line in finished.stdout.splitlines() if line.strip()]
        if not lines:
            raise GpuReadError("gpu.command printed nothing")
        fields = [field.strip().removesuffix("MiB").strip() for field in lines[0].split(",")]
        try:
            numbers = [int(float(field)) for field in fields]
        except (ValueError, OverflowError):
            raise GpuReadError(f"gpu.command printed {lines[0]!r}, expected used MiB (a number)") from None
        if len(numbers) > 2 or any(number < 0 for number in numbers):
            raise GpuReadError(f"gpu.command printed {lines[0]!r}, expected 'used' or 'used, total' MiB")
        return MemoryReading(used_mb=numbers[0], total_mb=numbers[1] if len(numbers) == 2 else None)

    return read


def comfyui_reader(url: str, timeout_seconds: float = 10) -> Reader:
    """`gpu.source: comfyui`: the server's own `/system_stats` (devices[0]: vram_total − vram_free), each reading
    bounded as a whole by `timeout_seconds` (a server that drips its reply must not hold the worker at the gate)."""
    import json

    from i2vd.render.backends import http, sessions
    from i2vd.render.backends.base import BackendError

    session = sessions.server_session()  # one per reader: its connection is kept between readings
    stats_url = f"{url.rstrip('/')}/system_stats"

    def read() -> MemoryReading:
        try:
            with http.Deadline(timeout_seconds, f"ComfyUI /system_stats at {url}") as deadline:
                reply = http.request(session, "GET", stats_url, deadline, timeout_seconds)
                body = http.read_all(reply, deadline)
            if not reply.ok:
                raise GpuReadError(f"ComfyUI /system_stats at {url} unreadable: HTTP {reply.status_code}")
            device = json.loads(body)["devices"][0]
            total, free = int(device["vram_total"]), int(device["vram_free"])
        except (BackendError, ValueError, KeyError, IndexError, TypeError) as error:
            raise GpuReadError(f"ComfyUI /system_stats at {url} unreadable: {error}") from None
        return MemoryReading(used_mb=(total - free) // (1024 * 1024), total_mb=total // (1024 * 1024))

    return read


class VramGate:
    def __init__(self, config: GpuConfig, reader: Reader | None, clock: Clock | None = None):
        self.config = config
        self.reader = reader
        self.clock = clock or Clock()
        self.state = "off" if reader is None else "unknown"
        self.last_reading: MemoryReading | None = None
        self.detail = "gate off"

    @classmethod
    def from_config(
        cls,
        config: GpuConfig,
        clock: Clock | None = None,
        reader: Reader | None = None,
        *,
        server_url: str | None = None,
    ) -> VramGate:
        if reader is not None or config.enabled is False or config.source == "none":
            return cls(config, reader, clock)
        if config.source == "comfyui" and server_url:
            return cls(config, comfyui_reader(server_url), clock)
        if config.source == "command":
            if not config.command:
                raise GpuReadError("gpu.source is command but gpu.command is empty")
            return cls(config, command_reader(config.command), clock)
        try:
            return cls(config, nvml_reader(config.index), clock)
        except GpuReadError as error:
            if config.enabled == "auto":
                log.warning("VRAM gate off (gpu.enabled: auto found no GPU): %s", error)
                gate = cls(config, None, clock)
                gate.detail = f"gate off ({error})"
                return gate
            raise

    def _verdict(self, reading: MemoryReading) -> str | None:
        """Why the gate is closed for this reading, or None when it is open."""
        if (
            self.config.min_free_mb is not None
            and reading.free_mb is not None
            and reading.free_mb < self.config.min_free_mb
        ):
            return f"waiting for VRAM: {reading.free_mb:,} MB free < {self.config.min_free_mb:,} MB"
        if (
            self.config.max_used_mb is not None
            and self.config.min_free_mb is None
            and reading.used_mb > self.config.max_used_mb
        ):
            return f"waiting for VRAM: {reading.used_mb:,} MB used > {self.config.max_used_mb:,} MB"
        return None

    def check(self) -> bool:
        """Read once: True when a job may go now."""
        if self.reader is None:
            return True
        try:
            reading = self.reader()
        except GpuReadError as error:
            self.state = "error"
            self.detail = f"cannot read GPU memory: {error}"
            return self.config.on_error == "proceed"
        self.last_reading = reading
        if self.config.min_free_mb is not None and reading.total_mb is None:
            self.state = "error"
            self.detail = "cannot read GPU memory: gpu.min_free_mb needs the total (print 'used, total')"
            return self.config.on_error == "proceed"
        closed_because = self._verdict(reading)
        self.state = "closed" if closed_because else "open"
        self.detail = closed_because or f"open: {reading.used_mb:,} MB used"
        return closed_because is None

    def wait_open(
        self,
        stop: threading.Event,
        on_wait: Callable[[str], None] = lambda detail: None,
        on_poll: Callable[[], None] = lambda: None,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Block until the gate opens (True), or `stop` or `cancel` is set (False).

        `on_wait` hears each new reason (a change of state or of error, and again every
        REPORT_EVERY_SECONDS while it lasts: readings move, the log should not follow each);
        `on_poll` hears every read. Closed for gpu.stuck_minutes while i2vd runs nothing
        on this GPU means the threshold can never open: that is said, with advice.
        """
        last_reason = None
        last_report = closed_since = float("-inf")
        stuck_said = False
        while not stop.is_set():
            on_poll()
            if cancel is not None and cancel.is_set():
                return False
            if self.check():
                if stuck_said:
                    log.info("VRAM gate open again: %s", self.detail)
                return True
            now = self.clock.monotonic()
            closed_since = now if closed_since == float("-inf") else closed_since
            stuck_for = now - closed_since
            if self.state == "closed" and stuck_for >= self.config.stuck_minutes * 60:
                self.detail += self._stuck_advice(stuck_for)
                if not stuck_said:
                    log.warning(self.detail)
                    stuck_said = True
            reason = (self.state, self.detail if self.state == "error" else None)
            if reason != last_reason or now - last_report >= REPORT_EVERY_SECONDS:
                log.info(self.detail)
                on_wait(self.detail)
                last_reason, last_report = reason, now
            self.clock.wait(stop, self.config.poll_seconds)
        return False

    def _stuck_advice(self, seconds: float) -> str:
        reading = self.last_reading
        idle = (
            f"{reading.used_mb:,} MB used" + (f" of {reading.total_mb:,} MB" if reading and reading.total_mb else "")
            if reading
            else "unknown use"
        )
        advice = (
            ""
            if self.config.min_free_mb is not None
            else (
                "; if the server keeps its model loaded, set gpu.min_free_mb "
                "(wait while free < N MB) instead of max_used_mb"
            )
        )
        return f" — closed {seconds / 60:.0f} min while no i2vd job runs on this GPU (idle reading: {idle}){advice}"
