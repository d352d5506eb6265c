"""`i2vd probe URL`: what kind of server a URL is, and how i2vd would call it.

A ComfyUI says so: its version, devices and VRAM, and with the config's workflow what each
`I2VD:` node would get (comfyui_probe.py).
For a Gradio app: its version, protocol and API prefix, every endpoint with its parameters,
where they were read (/info, or /config when /info is hidden or broken), the endpoint i2vd
would call and the value each parameter would get, or why i2vd cannot use the app. A URL
that is not Gradio but answers on the /predict path is named as such (`server.kind: predict`).
Probing only reads: GET requests, no job is started.
"""

from __future__ import annotations

from typing import Any

import requests

from i2vd.config.checks import input_problems
from i2vd.render.backends import http, sessions
from i2vd.render.backends.base import BackendError
from i2vd.render.backends.comfyui_probe import comfyui_report, system_stats
from i2vd.render.backends.gradio import QUEUE_PROTOCOLS
from i2vd.render.backends.gradio_app import AppMismatch, choose_endpoint
from i2vd.render.backends.gradio_mapping import build_mapping
from i2vd.render.backends.gradio_wire import discover_app
from i2vd.render.backends.probe_report import ProbeReport

PREDICT_PATHS = ("/api/predict/", "/run/predict", "/predict")
PROBE_CALLS = 4  # the probe's requests (a handful of GETs) take at most this many timeout_seconds together


def probe(
    url: str,
    *,
    api_name: str | None = None,
    inputs: dict | None = None,
    timeout_seconds: float = 10,
    session: requests.Session | None = None,
    transport: str = "auto",
    kind: str | None = None,
    workflow: str | None = None,
    config: Any = None,
) -> ProbeReport:
    """What the server at `url` is and how i2vd would call it; with `kind` (the configured
    server.kind), a server of another kind is a problem with the advice to change it."""
    url = url.rstrip("/")
    own_session = session is None
    session = sessions.server_session(session)  # as a backend's: its requests name i2vd
    try:
        # Each request within timeout_seconds, and all of them within PROBE_CALLS of it: a server that drips its
        # answers a byte at a time must not hold the terminal (as timeout_seconds bounds a job's whole call).
        with http.Deadline(PROBE_CALLS * timeout_seconds, url):
            stats = system_stats(session, url, timeout_seconds) if kind == "comfyui" else None
            if stats is not None:
                report = comfyui_report(url, stats, workflow=workflow, config=config)
            else:
                report = _probe(session, url, api_name, inputs, timeout_seconds, transport)
    finally:
        if own_session:
            session.close()
    known = report.kind in ("gradio", "predict", "comfyui")
    if kind is not None and known and report.kind != kind and not report.problem:
        report.problem = f"the config says server.kind: {kind}, but this is a {report.kind} server"
        report.suggestion = f"use server.kind: {report.kind}"
    return report


def _probe(
    session: requests.Session,
    url: str,
    api_name: str | None,
    inputs: dict | None,
    timeout: float,
    transport: str = "auto",
) -> ProbeReport:
    try:
        app = discover_app(session, url, timeout, timeout)
    except AppMismatch as error:
        stats = system_stats(session, url, timeout)
        if stats is not None:
            return comfyui_report(url, stats)
        return _not_gradio(session, url, str(error), timeout)
    except BackendError as error:  # down, or connected and then silent or lost (failures.py)
        return ProbeReport(url, "unreachable", problem=str(error))
    report = ProbeReport(
        url, "gradio", app.version, app.protocol, app.api_prefix, app.source, app.info_problem, list(app.endpoints)
    )
    prefix = app.api_prefix
    if transport == "call" and not app.is_v3:
        report.transport = f"POST {prefix}/call/<api> + its event stream"
    elif transport == "queue" and not app.is_v3:
        report.transport = f"queue: POST {prefix}/queue/join + GET {prefix}/queue/data"
    elif app.is_v3 and app.queue:
        report.transport = "the websocket queue /queue/join (the app has a queue; a direct call would skip it)"
    elif app.is_v3:
        report.transport = "POST /run/<api> (the app has no queue)"
    elif app.protocol == "sse":
        report.transport = f"queue: GET {prefix}/queue/join + POST {prefix}/queue/data"
    elif app.protocol in QUEUE_PROTOCOLS:
        report.transport = f"queue: POST {prefix}/queue/join + GET {prefix}/queue/data"
    else:
        report.transport = f"POST {prefix}/call/<api> + its event stream"
    problems = input_problems(inputs)
    if problems:
        report.problem = "; ".join(problems)
        return report
    try:
        endpoint = choose_endpoint(app, api_name)
        report.endpoint, report.source = endpoint.title, endpoint.source
        if endpoint.source == "config" and app.source == "info":
            report.info_problem = f"it does not list {endpoint.title}"
        report.mapping = build_mapping(endpoint, inputs)
    except AppMismatch as error:
        report.problem = str(error)
    return report


def _not_gradio(session: requests.Session, url: str, reason: str, timeout: float) -> ProbeReport:
    for path in PREDICT_PATHS:
        try:
            response = session.get(url + path, timeout=(timeout, timeout))
        except requests.RequestException:
            break
        if response.status_code == 405:  # the path exists and takes POST only
            return ProbeReport(
                url,
                "predict",
                problem=None,
                suggestion=f"use server.kind: predict (server.path: {path})"
                if path != "/api/predict/"
                else "use server.kind: predict",
            )
    return ProbeReport(url, "unknown", problem=reason)
