"""The fake I2V server and the helpers in tests/support/fakes.py do what other tests rely on."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.fakes import FakePredictServer, ReceivedRequest, wait_for, write_image, write_slowly

TIMEOUT = 10


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_image(tmp_path_factory.mktemp("images") / "photo.jpg")


def payload(image: bytes, prompt: str = "waves", image_field: str | None = None, **changes: object) -> dict:
    fields = {"resolution_index": 1, "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0} | changes
    image_field = image_field if image_field is not None else base64.b64encode(image).decode()
    return {"data": [image_field, prompt, *fields.values()]}


def predict(server: FakePredictServer, body: dict | str, path: str = "/api/predict/") -> requests.Response:
    sent = {"data": body} if isinstance(body, str) else {"json": body}
    return requests.post(server.url + path, timeout=TIMEOUT, **sent)


def video_of(server: FakePredictServer, reply: requests.Response) -> bytes:
    """Follow any reply form to the video bytes, as a client would."""
    value = reply.json()["data"][0]
    if isinstance(value, list):
        value = value[0]
    if isinstance(value, dict):
        value = value["name"]
    if value.startswith("data:video/mp4;base64,"):
        return base64.b64decode(value.split(",", 1)[1])
    if value.startswith("/tmp/"):
        download = requests.get(f"{server.url}/file={value}", timeout=TIMEOUT)
        download.raise_for_status()
        return download.content
    return base64.b64decode(value)


@pytest.mark.parametrize("form", ["base64", "data_url", "path", "file_dict", "gradio3_list"])
def test_every_reply_form_carries_the_video(fake_server, jpeg, mp4_bytes, form):
    fake_server.reply_form = form
    reply = predict(fake_server, payload(jpeg))
    assert reply.status_code == 200
    assert video_of(fake_server, reply) == mp4_bytes
    assert len(fake_server.file_downloads) == (form in ("path", "file_dict", "gradio3_list"))


def test_request_is_recorded_with_its_parameters(fake_server, jpeg):
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    predict(fake_server, payload(jpeg, "sunrise", image_field=data_url, frames=32), path="/run/predict")
    [request] = fake_server.requests
    assert isinstance(request, ReceivedRequest)
    assert (request.image, request.image_sha256) == (jpeg, hashlib.sha256(jpeg).hexdigest())
    assert (request.prompt, request.resolution_index, request.frames, request.fps) == ("sunrise", 1, 32, 8)
    assert (request.steps, request.guidance, request.image_encoding) == (50, 9.0, "data_url")
    assert request.path == "/run/predict"


def test_unknown_paths_and_files_are_404(fake_server, jpeg):
    assert predict(fake_server, payload(jpeg), path="/predict").status_code == 404
    assert requests.get(fake_server.url + "/file=/etc/passwd", timeout=TIMEOUT).status_code == 404


CONTRACT_VIOLATIONS = [
    (lambda image: {"data": [1, 2]}, "7 inputs"),
    (lambda image: {"fn_index": 0}, '"data" list'),
    (lambda image: "not json", "not JSON"),
    (lambda image: payload(image, image_field="not base64!"), "not valid base64"),
    (lambda image: payload(image, image_field="data:text/plain;base64,aGk="), "data URL"),
    (lambda image: payload(b"not an image"), "not a decodable image"),
    (lambda image: payload(image, prompt=None), "prompt"),
    (lambda image: payload(image, resolution_index=4), "between 0 and 3"),
    (lambda image: payload(image, frames=33), "between 8 and 32"),
    (lambda image: payload(image, fps=3), "between 4 and 24"),
    (lambda image: payload(image, steps=101), "between 10 and 100"),
    (lambda image: payload(image, guidance=20.5), "between 1 and 20"),
    (lambda image: payload(image, frames=16.0), "integer"),
    (lambda image: payload(image, steps=True), "integer"),
    (lambda image: payload(image, guidance="9"), "number"),
]


@pytest.mark.parametrize("make_body, complaint", CONTRACT_VIOLATIONS, ids=[case[1] for case in CONTRACT_VIOLATIONS])
def test_contract_violations_get_422(fake_server, jpeg, make_body, complaint):
    reply = predict(fake_server, make_body(jpeg))
    assert reply.status_code == 422
    assert complaint in reply.json()["detail"]
    assert fake_server.requests == [] and fake_server.rejections == [reply.json()["detail"]]


def test_fail_with_times_then_success(fake_server, jpeg):
    fake_server.fail_with(503, "warming up", times=1)
    first, second = predict(fake_server, payload(jpeg)), predict(fake_server, payload(jpeg))
    assert (first.status_code, first.text) == (503, "warming up")
    assert second.status_code == 200


def test_faults_select_by_predicate(fake_server, jpeg):
    fake_server.reply_oom(when=lambda request: request.prompt == "big")
    assert predict(fake_server, payload(jpeg, "small")).status_code == 200
    oom = predict(fake_server, payload(jpeg, "big"))
    assert oom.status_code == 500 and "CUDA out of memory. Tried to allocate 2.00 GiB" in oom.text


def test_garbage_and_empty_replies(fake_server, jpeg, mp4_bytes):
    fake_server.reply_garbage(times=1)
    fake_server.reply_empty(times=1)
    fake_server.reply_empty(times=1, body={})
    garbage = predict(fake_server, payload(jpeg))
    assert garbage.status_code == 200 and video_of(fake_server, garbage) not in (b"", mp4_bytes)
    assert predict(fake_server, payload(jpeg)).json() == {"data": []}
    assert predict(fake_server, payload(jpeg)).json() == {}
    assert video_of(fake_server, predict(fake_server, payload(jpeg))) == mp4_bytes


def test_hang_is_released_by_clear_faults(fake_server, jpeg, mp4_bytes):
    fake_server.hang()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(predict, fake_server, payload(jpeg))
        wait_for(lambda: len(fake_server.requests) == 1, message="request never arrived")
        assert not pending.done() and fake_server.in_flight == 1
        fake_server.clear_faults()
        assert video_of(fake_server, pending.result(TIMEOUT)) == mp4_bytes


def test_stop_cuts_a_hanging_request_short(mp4_bytes, jpeg):
    server = FakePredictServer(video=mp4_bytes).start()
    server.hang()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(predict, server, payload(jpeg))
        wait_for(lambda: server.in_flight == 1)
        server.stop()
        with pytest.raises(requests.ConnectionError):
            pending.result(TIMEOUT)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("FakePredictServer")]


def test_go_down_refuses_and_come_up_serves_on_the_same_port(fake_server, jpeg):
    url = fake_server.url
    fake_server.go_down()
    with pytest.raises(requests.ConnectionError):
        predict(fake_server, payload(jpeg))
    fake_server.come_up()
    assert fake_server.url == url
    assert predict(fake_server, payload(jpeg)).status_code == 200


def test_go_down_drops_keep_alive_connections(fake_server, jpeg):
    with requests.Session() as session:
        assert session.post(fake_server.url + "/api/predict/", json=payload(jpeg), timeout=TIMEOUT).ok
        fake_server.go_down()
        with pytest.raises(requests.ConnectionError):
            session.post(fake_server.url + "/api/predict/", json=payload(jpeg), timeout=TIMEOUT)


def test_max_concurrent_counts_overlapping_requests(fake_server, jpeg):
    fake_server.latency_seconds = 0.3
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda _: predict(fake_server, payload(jpeg)), range(2)))
    assert [reply.status_code for reply in replies] == [200, 200]
    assert fake_server.max_concurrent == 2
    assert fake_server.errors == []


def test_write_slowly_waits_for_the_event(tmp_path):
    target, go_on = tmp_path / "slow.bin", threading.Event()
    writer = threading.Thread(target=write_slowly, args=(target, b"abcdef", 3, go_on))
    writer.start()
    wait_for(lambda: target.exists() and target.read_bytes() == b"ab")
    go_on.set()
    writer.join(TIMEOUT)
    assert target.read_bytes() == b"abcdef"


def test_wait_for_reports_the_last_value():
    with pytest.raises(AssertionError, match="never true within 0.05 s .last value: 0"):
        wait_for(lambda: 0, timeout=0.05, message="never true")


def test_keep_alive_connections_send_without_nagle(fake_server, jpeg):
    """TCP_NODELAY, as uvicorn sets it: a reply's body does not wait behind its headers for a delayed ACK."""
    with requests.Session() as session:
        assert session.post(fake_server.url + "/api/predict/", json=payload(jpeg), timeout=TIMEOUT).ok
        with fake_server._http.connections_lock:
            sockets = list(fake_server._http.connections.values())
        assert sockets, "the keep-alive connection is still open"
        assert all(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for sock in sockets)
