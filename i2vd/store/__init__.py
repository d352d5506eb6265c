"""The SQLite journal: every job, file and event; the one place state lives."""
