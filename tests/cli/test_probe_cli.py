"""`i2vd probe`, called in-process as `main([...])` and read through capsys.

Against the real Gradio apps of tests/support/gradio_apps.py (the 7-input predict app and the SVD app),
the fake /predict server and a port nobody listens on; with a URL, or reading every server of
a config file. The apps come from test_gradio_backend.py's session fixture `apps`, imported
here: pytest keeps one per module that holds it, so a run of several such modules starts the
apps once for each, which costs a few seconds and nothing else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from i2vd.cli.commands import main
from tests.support.fakes import FakePredictServer
from tests.support.gradio_apps import SVD_INPUTS, RunningApps, free_port

pytestmark = pytest.mark.filterwarnings("ignore:::gradio")  # Gradio's own pandas deprecations


PREDICT_PARAMETERS = ("image", "prompt", "resolution", "frames", "fps", "steps", "guidance")


def probe(capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str]:
    code = main(["probe", *arguments])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def probe_json(capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, list[dict]]:
    code, out = probe(capsys, *arguments, "--json")
    return code, json.loads(out)


def write_config(tmp_path: Path, servers: list[dict]) -> Path:
    path = tmp_path / "config.yaml"
    (tmp_path / "in").mkdir(exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "state_dir": "state",
                "output_dir": "out",
                "gpu": {"enabled": False},
                "watch": [{"path": "in"}],
                "servers": servers,
            }
        ),
        encoding="utf-8",
    )
    return path


# -- a URL -------------------------------------------------------------------------------------------


def test_probe_of_the_7_input_app_shows_version_protocol_endpoints_and_mapping(apps: RunningApps, capsys):
    code, text = probe(capsys, apps.predict_url)

    assert code == 0, text
    first = text.splitlines()[0]
    assert first.startswith(f"{apps.predict_url}: Gradio {apps.version} app (protocol sse")
    assert "API prefix /gradio_api" in first
    assert "endpoints (parameters read from /info):" in text
    assert re.search(r"^  /generate \(fn_index \d+\)$", text, re.MULTILINE)
    assert re.search(r"^  /caption \(fn_index \d+\)$", text, re.MULTILINE)
    assert re.search(r"^  /generate_hidden \(fn_index \d+, hidden\)$", text, re.MULTILINE)
    assert re.search(r"^    2: resolution 'Resolution' \[Dropdown .*\] default \"512p\"$", text, re.MULTILINE)
    assert re.search(r"^    3: frames 'Frames' \[Slider .*\] default 16$", text, re.MULTILINE)
    assert re.search(r"^    0: image 'Input image' \[Image .*\] required$", text, re.MULTILINE)
    assert "    returns: video 'Video'" in text
    assert re.search(
        r"^i2vd would call /generate \(queue: POST /gradio_api/queue/join \+ GET /gradio_api/queue/data\) with:$",
        text,
        re.MULTILINE,
    )
    for name in PREDICT_PARAMETERS:
        assert re.search(rf"^  {name} +<- {name}$", text, re.MULTILINE), name
    assert "cannot use" not in text


def test_probe_json_of_the_7_input_app(apps: RunningApps, capsys):
    code, reports = probe_json(capsys, apps.predict_url)

    assert code == 0
    [report] = reports
    assert (report["kind"], report["usable"], report["version"], report["api_prefix"]) == (
        "gradio",
        True,
        apps.version,
        "/gradio_api",
    )
    assert report["protocol"].startswith("sse") and report["source"] == "info"
    assert report["problem"] is None
    endpoints = {endpoint["api_name"]: endpoint for endpoint in report["endpoints"]}
    assert set(endpoints) == {"/generate", "/caption", "/generate_hidden"}
    assert [p["name"] for p in endpoints["/generate"]["parameters"]] == list(PREDICT_PARAMETERS)
    assert endpoints["/generate_hidden"]["public"] is False
    assert report["endpoint"] == report["mapping"]["endpoint"] == "/generate"
    assert [(b["parameter"], b["field"]) for b in report["mapping"]["inputs"]] == [(n, n) for n in PREDICT_PARAMETERS]


def test_probe_of_the_svd_app_without_a_mapping_names_the_parameter_to_map(apps: RunningApps, capsys):
    code, text = probe(capsys, apps.svd_url)

    assert code == 1
    assert f"Gradio {apps.version} app" in text
    assert re.search(r"^  /sample \(fn_index \d+\)$", text, re.MULTILINE)
    assert re.search(r"^    3: motion_bucket_id 'Motion bucket id' \[Number .*\] required$", text, re.MULTILINE)
    assert re.search(r"^i2vd cannot use it: .*'motion_bucket_id'.*server\.inputs", text, re.MULTILINE)
    assert "i2vd would call" not in text
    [report] = probe_json(capsys, apps.svd_url)[1]
    assert report["usable"] is False and report["mapping"] is None and "motion_bucket_id" in report["problem"]


def test_probe_of_a_predict_server_names_it_and_suggests_kind_predict(fake_server: FakePredictServer, capsys):
    code, text = probe(capsys, fake_server.url)

    # Deliberate (ProbeReport.usable): i2vd can use a /predict server, as server.kind: predict.
    assert code == 0, text
    assert text.splitlines()[0] == f"{fake_server.url}: not a Gradio app, but an I2VGen-XL style /predict server"
    assert "suggestion: use server.kind: predict" in text
    assert "endpoints" not in text
    [report] = probe_json(capsys, fake_server.url)[1]
    assert (report["kind"], report["version"], report["mapping"]) == ("predict", None, None)
    assert "server.kind: predict" in report["suggestion"]
    assert fake_server.requests == []  # probing only reads


def test_probe_of_a_url_where_nothing_listens_says_so(capsys):
    url = f"http://127.0.0.1:{free_port()}"

    code, text = probe(capsys, url, "--timeout", "2")

    assert code == 1
    assert text.splitlines()[0] == f"{url}: no server answers"
    assert re.search(r"^i2vd cannot use it: cannot reach .*refused", text, re.MULTILINE)
    [report] = probe_json(capsys, url, "--timeout", "2")[1]
    assert (report["kind"], report["usable"]) == ("unreachable", False)


def test_probe_of_host_and_port_without_a_scheme_assumes_http_and_says_so(capsys, tmp_path):
    from tests.support.fakes import make_test_mp4
    from tests.support.gradio_replay import ReplayedGradio

    with ReplayedGradio("vgen-3.39", video=make_test_mp4(tmp_path / "clip.mp4", frames=4)) as app:
        url = app.url
        address = url.removeprefix("http://")
        code, out = probe(capsys, address)
    assert code == 0, out
    assert f"no scheme in {address!r}: assuming {url}" in out
    assert f"{url}: Gradio 3.39.0 app" in out


def test_probe_of_an_unreachable_host_and_port_without_a_scheme_is_a_clear_message(capsys):
    address = f"127.0.0.1:{free_port()}"
    code, out = probe(capsys, address)
    assert code == 1
    assert "No connection adapters" not in out and "assuming http://" in out
    assert f"http://{address}: no server answers" in out


def test_probe_of_a_url_with_another_scheme_says_what_it_takes(capsys):
    code, out = probe(capsys, "ftp://127.0.0.1:21")
    assert code == 2
    assert "i2vd probe: 'ftp://127.0.0.1:21' is not an http:// or https:// URL" in out


# -- the servers of a config file ---------------------------------------------------------------------


def test_probe_reads_every_server_of_the_config_with_its_inputs_mapping(apps: RunningApps, tmp_path, capsys):
    config = write_config(
        tmp_path,
        [
            {"name": "t2v", "kind": "gradio", "url": apps.predict_url},
            {"name": "svd", "kind": "gradio", "url": apps.svd_url, "inputs": SVD_INPUTS},
            {"name": "preview", "kind": "builtin"},  # nothing to probe
        ],
    )

    code, text = probe(capsys, "-c", str(config))

    assert code == 0, text
    predict_part, svd_part = text.split("\n\n")
    assert predict_part.startswith(f"{apps.predict_url}: Gradio {apps.version} app")
    assert "i2vd would call /generate" in predict_part
    assert svd_part.startswith(f"{apps.svd_url}: Gradio {apps.version} app")
    assert "i2vd would call /sample" in svd_part
    assert re.search(r"^  image +<- image$", svd_part, re.MULTILINE)
    assert re.search(r"^  seed +<- seed$", svd_part, re.MULTILINE)
    assert re.search(r"^  randomize_seed +<- default true$", svd_part, re.MULTILINE)
    assert re.search(r"^  motion_bucket_id +<- constant 127$", svd_part, re.MULTILINE)
    assert re.search(r"^  fps_id +<- fps$", svd_part, re.MULTILINE)
    assert re.search(r"^  \(not sent: .*\)$", svd_part, re.MULTILINE)
    assert "cannot use" not in text

    code, reports = probe_json(capsys, "-c", str(config))
    assert code == 0
    assert [(r["url"], r["usable"]) for r in reports] == [(apps.predict_url, True), (apps.svd_url, True)]
    svd_inputs = {b["parameter"]: (b["field"], b["value"], b["origin"]) for b in reports[1]["mapping"]["inputs"]}
    assert svd_inputs["motion_bucket_id"] == (None, 127, "config")
    assert svd_inputs["fps_id"] == ("fps", None, "config")


def test_probe_of_a_config_exits_1_when_one_server_cannot_be_used(apps: RunningApps, tmp_path, capsys):
    config = write_config(
        tmp_path,
        [
            {"name": "t2v", "kind": "gradio", "url": apps.predict_url},
            {"name": "svd", "kind": "gradio", "url": apps.svd_url},  # no inputs: motion_bucket_id is unmapped
        ],
    )

    code, reports = probe_json(capsys, "-c", str(config))

    assert code == 1
    assert [r["usable"] for r in reports] == [True, False]
    assert "motion_bucket_id" in reports[1]["problem"]


def test_probe_of_a_config_uses_its_api_name(apps: RunningApps, tmp_path, capsys):
    config = write_config(tmp_path, [{"kind": "gradio", "url": apps.predict_url, "api_name": "/generate_hidden"}])

    code, text = probe(capsys, "-c", str(config))

    assert code == 0, text
    assert "i2vd would call /generate_hidden" in text
    assert "parameters read from /config; /info: it does not list /generate_hidden" in text


def test_probe_of_a_config_with_only_the_builtin_engine_asks_for_a_url(tmp_path, capsys):
    config = write_config(tmp_path, [{"kind": "builtin"}])

    code, text = probe(capsys, "-c", str(config))

    assert code == 1
    assert "built-in engine only" in text and "give a URL" in text


def test_probe_of_a_config_says_a_gradio_entry_pointing_at_a_predict_server_cannot_work(fake_server, tmp_path, capsys):
    config = write_config(tmp_path, [{"kind": "gradio", "url": fake_server.url}])

    code, reports = probe_json(capsys, "-c", str(config))

    assert reports[0]["kind"] == "predict" and "server.kind: predict" in reports[0]["suggestion"]
    assert code == 1
    assert reports[0]["usable"] is False


def test_probe_of_a_config_shows_the_configured_transport(apps: RunningApps, tmp_path, capsys):
    config = write_config(tmp_path, [{"kind": "gradio", "url": apps.predict_url, "transport": "call"}])

    code, text = probe(capsys, "-c", str(config))

    assert code == 0, text
    assert "i2vd would call /generate (POST /gradio_api/call/<api> + its event stream) with:" in text
