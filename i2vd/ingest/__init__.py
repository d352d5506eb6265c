"""A dropped file becomes a job: watching, settling, intake, following renamed content, operations."""
