"""Stage 4, planning: the cost plan (tokens, GPU-hours, GPU memory per candidate), the measured MFU calibration it
reads, and the checks `start` makes before spending any GPU time."""
