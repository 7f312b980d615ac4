"""Which requests to send: how many per wave, and which seeds each one shows.

Every request is fixed by its index and the settings' seed (its seed tasks are drawn from a generator seeded by
both), so a resumed or repeated run sends the very same requests and the teacher's response cache answers them.
The first wave is sized by the expected keep rate; each later one by the keep rate observed so far, both capped
by what the request budget has left.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from barbarossa.selfinstruct.settings import SelfInstruct


@dataclass(frozen=True)
class Request:
    """One request: its index (0, 1, ...) and the seed tasks it shows, by their index in the seed list."""

    index: int
    seeds: tuple[int, ...]


def request_rng(seed: int, index: int) -> random.Random:
    """The generator of request `index`: the same draw on every machine and Python (a str seed is hashed by
    SHA-512, not by the salted `hash`)."""
    return random.Random(f"selfinstruct:{seed}:{index}")


def sample_seeds(seeds: Sequence, k: int, rng: random.Random) -> list:
    """k seed tasks (all of them where there are fewer), in the order drawn."""
    return rng.sample(list(seeds), min(k, len(seeds)))


def plan_requests(seed_count: int, settings: SelfInstruct, first: int, count: int) -> list[Request]:
    """Requests first .. first+count-1, each with its seed indices."""
    if seed_count < 1:
        raise ValueError("self-instruct needs at least one seed task")
    return [
        Request(
            index, tuple(sample_seeds(range(seed_count), settings.seeds_per_prompt, request_rng(settings.seed, index)))
        )
        for index in range(first, first + count)
    ]


def wave_size(settings: SelfInstruct, kept: int, requested: int) -> int:
    """How many requests the next wave sends: enough for the tasks still wanted at the keep rate seen so far (the
    expected one before any task is kept), within the budget left; 0 once the target is reached."""
    wanted, left = settings.target - kept, settings.request_budget - requested
    if wanted <= 0 or left <= 0:
        return 0
    per_request = kept / requested if kept else settings.new_per_request * settings.expected_keep_rate
    return min(left, math.ceil(wanted / per_request))


def in_groups(requests: list[Request], size: int) -> list[list[Request]]:
    """Requests split into the groups one parallel task sends (the flow's foreach)."""
    return [requests[start : start + size] for start in range(0, len(requests), size)]
