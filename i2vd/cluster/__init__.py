"""More than one machine (`executor: celery`): the ingest host publishes jobs, GPU hosts run them."""
