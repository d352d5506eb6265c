"""A queued job is rendered and recorded: the worker decides an outcome, one place applies it."""
