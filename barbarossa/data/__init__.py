"""Stage 1, data: instruction records (load, validate, split, write), near-copy removal, the prompt template and
its masking, the token cache, and synthetic data for benchmarks. Imports nothing from a later stage."""
