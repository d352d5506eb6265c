"""Webhooks with `i2vd run` as a real subprocess: the receiver fails, hangs, the daemon is stopped and
started again, the receiver comes back — and every event arrives, each with one stable delivery id."""

from __future__ import annotations

from pathlib import Path

from tests.end_to_end.harness import journal_counts, run_cli, write_config
from tests.support.fakes import wait_for, write_image
from tests.support.webhook_receiver import Receiver


def test_nothing_is_missing_across_a_failing_and_hanging_receiver_and_a_restart(tmp_path: Path, daemon_factory):
    receiver = Receiver()
    try:
        (tmp_path / "secret").write_text("k\n")
        hooks = [
            {
                "url": receiver.url,
                "events": ["done", "failed", "parked"],
                "secret_file": str(tmp_path / "secret"),
                "timeout_seconds": 1,
            }
        ]
        config = write_config(tmp_path, None, webhooks=hooks)
        receiver.mode = "hang"
        first = daemon_factory(config).start()
        for index in range(3):
            write_image(tmp_path / "in" / f"a{index}.png", color=(index, 50, 50))
        # a hanging receiver holds up no job
        wait_for(lambda: journal_counts(tmp_path / "state").get("done") == 3, timeout=60, message=first.log())
        wait_for(lambda: len(receiver.attempts()) >= 1, timeout=30, message=first.log())
        receiver.mode = "fail"
        wait_for(lambda: any(item.answered == 500 for item in receiver.attempts()), timeout=30, message=first.log())
        assert first.stop() == 0

        status = run_cli(config, "status").stdout
        assert "webhooks: 3 undelivered" in status and "last error:" in status
        ids_tried = {item.headers["X-I2VD-Delivery"] for item in receiver.attempts()}

        receiver.mode = "ok"
        second = daemon_factory(config).start()
        write_image(tmp_path / "in" / "late.png", color=(1, 2, 3))
        wait_for(
            lambda: len({item.headers["X-I2VD-Delivery"] for item in receiver.delivered()}) == 4,
            timeout=60,
            message=second.log(),
        )
        assert second.stop() == 0
        delivered = receiver.delivered()
        ids = [item.headers["X-I2VD-Delivery"] for item in delivered]
        assert len(ids) == len(set(ids)) == 4  # each delivered once here (the receiver dedupes by id anyway)
        assert ids_tried <= set(ids)  # what was tried before the restart is the same delivery after it
        files = sorted(item.document["job"]["source"]["relative_path"] for item in delivered)
        assert files == ["a0.png", "a1.png", "a2.png", "late.png"]
        assert {item.document["event"] for item in delivered} == {"done"}
        assert "0 undelivered" in run_cli(config, "status").stdout
    finally:
        receiver.close()
