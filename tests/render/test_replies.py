"""Big JSON replies read from a file: the same values as json.loads, long strings decoded in chunks.

The scan is run with tiny read chunks and a tiny "long string" size, so every escape, quote and
base64 quantum of these small replies falls across a chunk boundary somewhere.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from i2vd.render.backends import replies
from i2vd.render.backends.base import BadReply

VIDEO = bytes(range(256)) * 3 + b"end"


def _plain(value):
    if isinstance(value, replies.BigString):
        return "".join(value.chunks())
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


@pytest.fixture(params=[1, 2, 3, 5, 7, 64, 1 << 20])
def load(request):
    """load_json reading `param` bytes at a time, leaving strings over 16 bytes in the file."""
    return lambda path: replies.load_json(path, big_string=16, read_chunk=request.param)


REPLIES = [
    {"data": [base64.b64encode(VIDEO).decode()], "is_generating": False, "duration": 1.5},
    {"data": ["data:video/mp4;base64," + base64.b64encode(VIDEO).decode()]},
    {"error": 'CUDA out of memory "quoted" \\ back \u00e9\u4e2d ' * 3, "data": None},
    {"data": [[{"name": "/tmp/gradio/x/video.mp4", "is_file": True}, None]], "note": 'short "q" \\'},
    [1, "two", {"three": [True, None, "x" * 40]}],
]


@pytest.mark.parametrize("reply", REPLIES, ids=["base64", "data_url", "escapes", "file_dict", "nested"])
def test_the_value_is_what_json_loads_gives(tmp_path: Path, load, reply):
    path = tmp_path / "reply.json"
    path.write_bytes(json.dumps(reply).encode())
    assert _plain(load(path)) == reply


def test_escaped_slashes_in_a_long_data_url_are_undone(tmp_path: Path, load):
    path = tmp_path / "reply.json"
    text = "data:video/mp4;base64," + base64.b64encode(VIDEO).decode()
    escaped = text.replace("/", "\\/").encode()  # as PHP and some Java encoders write it
    path.write_bytes(b'{"data": ["' + escaped + b'"]}')
    value = load(path)["data"][0]
    assert isinstance(value, replies.BigString)
    sink = io.BytesIO()
    replies.decode_base64(value.chunks(), sink, skip_prefix=True)
    assert sink.getvalue() == VIDEO


def test_long_strings_stay_in_the_file(tmp_path: Path, load):
    path = tmp_path / "reply.json"
    path.write_bytes(json.dumps({"data": [base64.b64encode(VIDEO).decode()], "short": "kept"}).encode())
    value = load(path)
    assert isinstance(value["data"][0], replies.BigString) and value["short"] == "kept"
    sink = io.BytesIO()
    assert replies.decode_base64(value["data"][0].chunks(), sink) == len(VIDEO)
    assert sink.getvalue() == VIDEO


@pytest.mark.parametrize("text", ['{"data": ["abc', "<html>Gradio is starting</html>", ""])
def test_what_is_not_json_is_a_bad_reply(tmp_path: Path, text):
    path = tmp_path / "reply.json"
    path.write_text(text)
    with pytest.raises(BadReply, match="not JSON"):
        replies.load_json(path)


@pytest.mark.parametrize("text", ["not base64 at all!", "QUJD=", "", "data:video/mp4;base64"])
def test_what_is_not_base64_is_a_bad_reply(text):
    with pytest.raises(BadReply):
        replies.decode_base64(iter([text[:3], text[3:]]), io.BytesIO(), skip_prefix=text.startswith("data:"))
