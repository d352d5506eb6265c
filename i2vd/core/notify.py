"""sd_notify without systemd-python: one datagram per message to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1, STOPPING=1; does nothing outside systemd."""

    def __init__(self, address: str | None = None, watchdog_usec: str | None = None):
        self._watchdog_usec = watchdog_usec
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract socket namespace
        self.address = address or None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block: a listener that stopped reading must not freeze the main thread (nor SIGTERM).
                sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError:
            return False
        return True

    def watchdog_interval(self) -> float | None:
        """Half of WATCHDOG_USEC in seconds, when systemd asked for pings for this process."""
        usec = self._watchdog_usec if self._watchdog_usec is not None else os.environ.get("WATCHDOG_USEC")
        pid = None if self._watchdog_usec is not None else os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None
