"""The translation flow's library: backends, protected spans, per-row QA. Builds data for stage 1."""
