"""Plumbing every layer uses: clock, logs, the state lock, systemd notify and watchdog, image facts,
mounts. Imports nothing of i2vd."""
