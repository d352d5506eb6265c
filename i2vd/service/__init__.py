"""The daemon: wires ingest, jobs and the dashboard together under one lock."""
