"""The login ceiling: raw argon2id verifications per second, with identity's parameters and two threads."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher

from bench.load import Figure
from hishamos_identity.settings import IdentitySettings


def measure(seconds: float, workers: int = 2) -> Figure:
    s = IdentitySettings()
    hasher = PasswordHasher(
        time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib, parallelism=s.argon2_parallelism
    )
    stored = hasher.hash("correct-horse-42")
    stop = time.perf_counter() + seconds

    def work() -> int:
        done = 0
        while time.perf_counter() < stop:
            hasher.verify(stored, "correct-horse-42")
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(lambda _: work(), range(workers)))
    return Figure(total / (time.perf_counter() - started), 0.0, 0.0, total, 0)
