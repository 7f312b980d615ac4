"""Stage 5, evaluate: one protocol for every model, the statistics behind intervals, and the metric modules.
Does not import train/: what both need (loading a work item's model, padding a batch, response losses) lives below."""
