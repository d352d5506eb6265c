"""The web dashboard, JSON API, videos and Prometheus metrics the daemon serves when `http:` is set."""

from i2vd.web.server import WebServer

__all__ = ["WebServer"]
