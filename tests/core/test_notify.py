"""sd_notify datagrams: a listener that does not read must never block the daemon's main thread."""

from __future__ import annotations

import socket
import threading
import uuid

from i2vd.core.notify import Notifier


def test_a_full_notify_socket_drops_messages_instead_of_blocking() -> None:
    name = f"i2vd-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)  # bound, never read: its queue fills after a few messages
    notifier = Notifier(f"@{name}")
    sent: list[bool] = []
    sender = threading.Thread(
        target=lambda: sent.extend(notifier.send(f"STATUS={index}") for index in range(200)), name="test-notify"
    )
    try:
        sender.start()
        sender.join(timeout=30)
        assert not sender.is_alive(), "sending to a full notify socket blocked"
        assert sent[0] is True and sent[-1] is False  # the first got through, the overflow was dropped
    finally:
        listener.close()
        sender.join(timeout=30)
