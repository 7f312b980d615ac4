"""Stage 5, train: the LoRA training loop, shared-prefix batches and resumable checkpoints."""
