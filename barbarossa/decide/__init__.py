"""Stage 6, decide: the leaderboard and its release decisions, earlier runs, release bundles and cards."""
