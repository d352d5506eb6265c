"""i2vd: a hot-folder service that turns dropped images into short videos."""

__version__ = "0.1.0"
