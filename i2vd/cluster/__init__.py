"""More than one machine: what the GPU hosts of `executor: celery` tell the ingest host (presence), and its mirror."""
