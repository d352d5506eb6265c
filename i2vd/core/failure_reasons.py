"""A failure's reason, from its error text: a few fixed values for metrics labels, never the text itself."""

from __future__ import annotations

import re

REASONS = (
    ("gpu_oom", re.compile(r"out of (gpu )?memory|\boom\b|cuda", re.I)),
    ("timeout", re.compile(r"timed? ?out|timeout|no result within", re.I)),
    ("server_unreachable", re.compile(r"connect|refused|unreachable|name or service|server .*down", re.I)),
    ("bad_video", re.compile(r"unusable video|not a video|no video", re.I)),
    ("bad_source", re.compile(r"source|image|decode|truncated|unreadable|empty|bomb|not a regular file", re.I)),
    ("interrupted", re.compile(r"interrupt|stopped|killed", re.I)),
    ("disk", re.compile(r"no space|read-only|quota|cannot write|output", re.I)),
    ("server_error", re.compile(r"server|http|gradio|status", re.I)),
)


def failure_reason(error: str) -> str:
    for reason, pattern in REASONS:
        if pattern.search(error):
            return reason
    return "other"
