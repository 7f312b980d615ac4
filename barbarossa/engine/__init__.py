"""Stage 3, engine: what training and evaluation share to run a model: the per-task runtime decision (device,
dtype, attention, 4-bit), loading a model and its tokenizer, fused kernels, response losses, shared-prefix
batches and response scoring."""
