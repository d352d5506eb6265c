"""`i2vd probe`: connect to a server (a URL, or each server of the config) and say what it is and how i2vd would
call it (kind, version, endpoints, the parameter mapping)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from i2vd.config.load import Config


def run_probe(arguments: argparse.Namespace, load: Callable[[argparse.Namespace], Config]) -> int:
    """`i2vd probe [URL]`: what each server is and the mapping i2vd would use; `load` reads the config (`-c`)."""
    from i2vd.render.backends.gradio_probe import probe

    if arguments.url:
        url = arguments.url.strip()
        if "://" not in url:  # "host:port", as people type it
            print(f"i2vd probe: no scheme in {url!r}: assuming http://{url}", file=sys.stderr)
            url = f"http://{url}"
        elif not url.lower().startswith(("http://", "https://")):
            print(f"i2vd probe: {url!r} is not an http:// or https:// URL", file=sys.stderr)
            return 2
        reports = [probe(url, timeout_seconds=arguments.timeout)]
    else:
        config = load(arguments)
        servers = [entry.server for entry in config.servers if entry.server.kind != "builtin"]
        if not servers:
            print("i2vd probe: the config uses the built-in engine only; give a URL to probe a server")
            return 1
        reports = [
            probe(
                server.url,
                api_name=server.api_name,
                inputs=server.inputs,
                timeout_seconds=arguments.timeout,
                transport=server.transport,
                kind=server.kind,
                workflow=server.workflow,
                config=config,
            )
            for server in servers
        ]
    if arguments.json:
        print(json.dumps([report.as_dict() for report in reports], indent=2, sort_keys=True))
    else:
        print("\n\n".join(report.render() for report in reports))
    return 0 if all(report.usable for report in reports) else 1
