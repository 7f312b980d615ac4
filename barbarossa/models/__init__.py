"""Stage 2, models: the catalogue: the roster (what to tune), architecture families, where weights come from and
the local cache they land in, and tiny random models for tests."""
