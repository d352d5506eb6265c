"""More than one machine (`executor: celery`): the ingest host publishes jobs, GPU hosts run them and tell the
ingest host they are there (presence, mirrored into its journal)."""
