"""Self-instruct for a language pack: requests a teacher model continues, its answers parsed and filtered into
instruction rows (pure functions; the flow sends the requests)."""
