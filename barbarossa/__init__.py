"""Barbarossa: fine-tune a roster of open LLMs for Azerbaijani and rank them on one leaderboard."""

__version__ = "0.1.0"
