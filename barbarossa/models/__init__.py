"""Stage 2, models: the roster (what to tune), architecture families, where weights come from and how they load,
tiny random models for tests, the per-task runtime decision, the cost plan and the checks `start` makes."""
