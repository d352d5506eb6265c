"""Big JSON replies read from a file without holding them in memory, and base64 decoded in chunks.

A /predict reply carries the video as one base64 string: 200 MB of JSON for a 150 MB video. Read
whole, that is the JSON text, the parsed string and the decoded bytes at once (~5x the video).
Here the reply is first streamed to a file (http.save_body); `load_json` then scans it once: every
string longer than BIG_STRING is left in the file and stands in the parsed value as a `BigString`
(its byte range), the rest is parsed by the json module. A BigString is decoded into the video
file in chunks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from i2vd.render.backends.base import BadReply

BIG_STRING = 64 * 1024
READ_CHUNK = 1024 * 1024
_QUOTE = re.compile(rb'"')
_STRING_STOP = re.compile(rb'["\\]')
_PLACEHOLDER = "\x00i2vd-big-string:"


class BigString:
    """A long JSON string left in the reply file: bytes [start, end) between its quotes, still escaped."""

    def __init__(self, path: Path, start: int, end: int, read_chunk: int = READ_CHUNK) -> None:
        self.path, self.start, self.end, self.read_chunk = path, start, end, read_chunk

    def __repr__(self) -> str:
        return f"<{self.end - self.start} bytes of JSON string in {self.path.name}>"

    def chunks(self) -> Iterator[str]:
        """The string's text (escapes undone), a chunk at a time."""
        with open(self.path, "rb") as source:
            source.seek(self.start)
            left = self.end - self.start
            carry = b""
            while left > 0:
                raw = carry + source.read(min(self.read_chunk, left))
                left = self.end - source.tell()
                cut = len(raw)
                escape = raw.rfind(b"\\", max(0, cut - 6))
                if escape >= 0 and left > 0:
                    while escape > 0 and raw[escape - 1] == 0x5C:
                        escape -= 1
                    cut = escape  # an escape that may go on in the next chunk: decode it with it
                carry = raw[cut:]
                if cut:
                    yield json.loads(b'"' + raw[:cut] + b'"')
            if carry:
                yield json.loads(b'"' + carry + b'"')


def load_json(path: Path, *, big_string: int = BIG_STRING, read_chunk: int = READ_CHUNK) -> Any:
    """The JSON in `path`, with strings longer than `big_string` bytes as BigString; BadReply when it is not JSON."""
    skeleton, bigs = _skeleton(path, big_string, read_chunk)
    try:
        value = json.loads(skeleton)
    except ValueError:
        raise BadReply(f"server reply is not JSON: {skeleton[:300]!r}") from None
    return _restore(value, bigs)


def _skeleton(path: Path, big_string: int, read_chunk: int) -> tuple[bytes, list[BigString]]:
    """The file's JSON with each long string replaced by a short placeholder string."""
    parts: list[bytes] = []
    bigs: list[BigString] = []
    with open(path, "rb") as source:
        data = source.read(read_chunk)
        offset = 0  # file offset of data[0]
        position = 0
        in_string = False
        string_start = 0  # file offset just after the opening quote
        kept: list[bytes] = []  # a short string's bytes so far
        kept_size = 0
        escaped = False
        while data:
            if not in_string:
                match = _QUOTE.search(data, position)
                if match is None:
                    parts.append(data[position:])
                else:
                    parts.append(data[position : match.end()])
                    in_string, escaped = True, False
                    string_start = offset + match.end()
                    kept, kept_size = [], 0
                    position = match.end()
                    continue
            else:
                end = position
                while True:
                    if escaped:
                        end, escaped = end + 1, False
                        if end > len(data):
                            end, escaped = len(data), True
                            break
                    match = _STRING_STOP.search(data, end)
                    if match is None:
                        end = len(data)
                        break
                    if match.group() == b"\\":
                        end, escaped = match.end(), True
                        continue
                    end = match.start()
                    break
                piece = data[position:end]
                if kept_size <= big_string:
                    kept.append(piece)
                    kept_size += len(piece)
                if end < len(data) and not escaped:  # the closing quote
                    if kept_size > big_string:
                        parts.append(json.dumps(f"{_PLACEHOLDER}{len(bigs)}")[1:-1].encode())
                        bigs.append(BigString(path, string_start, offset + end, read_chunk))
                    else:
                        parts.append(b"".join(kept))
                    parts.append(b'"')
                    in_string = False
                    position = end + 1
                    continue
            offset += len(data)
            data, position = source.read(read_chunk), 0
    if in_string:
        raise BadReply("server reply is not JSON: it ends inside a string")
    return b"".join(parts), bigs


def _restore(value: Any, bigs: list[BigString]) -> Any:
    if isinstance(value, str) and value.startswith(_PLACEHOLDER):
        return bigs[int(value[len(_PLACEHOLDER) :])]
    if isinstance(value, list):
        return [_restore(item, bigs) for item in value]
    if isinstance(value, dict):
        return {key: _restore(item, bigs) for key, item in value.items()}
    return value


def text_chunks(value: str | BigString) -> Iterator[str]:
    if isinstance(value, BigString):
        yield from value.chunks()
    else:
        yield value


def head(value: str | BigString, size: int = 64) -> str:
    """The first characters of a string reply, to tell a data URL or a path from plain base64."""
    if isinstance(value, str):
        return value[:size]
    text = ""
    for chunk in value.chunks():
        text += chunk
        if len(text) >= size:
            break
    return text[:size]


def decode_base64(chunks: Iterator[str], target: BinaryIO, skip_prefix: bool = False) -> int:
    """Base64 text (or a data URL, with skip_prefix) decoded into `target` in chunks; bytes written.

    BadReply when the text is not base64 or decodes to nothing.
    """
    carry = ""
    size = 0
    try:
        for chunk in chunks:
            if skip_prefix:
                carry += chunk
                if "," not in carry:
                    continue
                chunk, carry, skip_prefix = carry.partition(",")[2], "", False
            text = carry + chunk
            cut = len(text) - len(text) % 4
            carry = text[cut:]
            if cut:
                decoded = base64.b64decode(text[:cut], validate=True)
                target.write(decoded)
                size += len(decoded)
        if skip_prefix or carry:
            raise ValueError("incomplete base64")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise BadReply("video is neither base64 nor a data URL nor a server path") from None
    if not size:
        raise BadReply("the server returned an empty video")
    return size
