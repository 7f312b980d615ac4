"""Stage 7, infra: where steps run (the infra config → @resources / @kubernetes / @batch) and the flow mutators."""
