"""A dashboard over a real journal, for the web tests: real images taken in by the real Intake,
real H.264 videos in output_dir, a failed job whose file is named like an HTML attack, and the
WebServer on an ephemeral 127.0.0.1 port (no daemon: the journal stays as the test made it)."""

from __future__ import annotations

import dataclasses
import http.client
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image

from i2vd.config.load import Config, HttpSettings, load_config
from i2vd.ingest.intake import Intake
from i2vd.service.daemon import journal_path
from i2vd.store.journal import Journal
from i2vd.web import WebServer

HOSTILE_NAME = "<img src=x onerror=alert(1)>.jpg"
PROMPTS = [
    "Waves crashing, camera panning left",
    "Sunrise over mountains, time-lapse effect",
    "Leaves rustling in wind, gentle dolly forward",
    "Product rotating slowly on white background",
]


@dataclass
class Site:
    config_path: Path
    config: Config
    journal: Journal
    server: WebServer
    done_ids: list[int] = field(default_factory=list)
    failed_id: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw request, the path sent exactly as given (no client-side normalising of `..`)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            given = {name.lower() for name in headers or {}}
            connection.putrequest(method, path, skip_host="host" in given, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.server.stop()
        self.journal.close()


def write_config(tmp_path: Path) -> Path:
    config = {
        "state_dir": str(tmp_path / "state"),
        "output_dir": str(tmp_path / "out"),
        "server": {"kind": "builtin"},
        "gpu": {"enabled": False},
        "watch": [{"path": str(tmp_path / "in"), "settle_seconds": 0}],
        "profiles": {
            "default": {"prompt": "A {{ subject }} scene with smooth motion"},
            "beach": {"prompt": "Waves crashing, camera panning left"},
        },
    }
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _image(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (96, 64), color).save(path, "JPEG")
    return path


def make_site(tmp_path: Path, mp4_bytes: bytes, *, token: str | None = None, videos: int = 3) -> Site:
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    config = dataclasses.replace(config, http=HttpSettings("127.0.0.1:0", "127.0.0.1", 0, token))
    journal = Journal(journal_path(config))
    intake = Intake(config, journal)
    root = config.watch[0]
    done_ids = []
    for index in range(videos):
        folder = ["beach", "studio"][index % 2]
        source = _image(root.path / folder / f"photo {index}.jpg", (40 * index % 255, 120, 200))
        job = intake.consider(source, root).job
        claimed = journal.claim_next("test", 60)
        assert claimed is not None and claimed.id == job.id
        video = config.output_dir / folder / f"photo {index}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(mp4_bytes)
        assert journal.set_output_path(job.id, str(video))
        journal.mark_done(job.id, {"kind": "builtin"}, 1.5 + index)
        done_ids.append(job.id)
    hostile = intake.consider(_image(root.path / HOSTILE_NAME, (200, 30, 30)), root).job
    assert journal.claim_next("test", 60).id == hostile.id
    journal.mark_failed(hostile.id, "server said: <b>no</b> (HTTP 500)")
    server = WebServer(config.http, lambda: config, journal)
    server.start()
    return Site(config_path, config, journal, server, done_ids, hostile.id)
