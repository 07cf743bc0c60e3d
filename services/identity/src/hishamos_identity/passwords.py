"""argon2id at OWASP parameters, off the event loop (the hash is CPU- and memory-bound by design)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hishamos_kit.errors import Violations

MIN_LENGTH = 10
MAX_LENGTH = 128


def check_strength(v: Violations, field: str, password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        v.add(field, f"must be {MIN_LENGTH}-{MAX_LENGTH} characters")
    elif password.isalpha() or password.isdigit():
        v.add(field, "must mix letters with digits or symbols")
    elif len(set(password)) < 4:
        v.add(field, "must not repeat so few characters")


class Passwords:
    """Hashes on a pool of its own, one thread per CPU: the hash releases the GIL, so each thread
    keeps a core busy, and more threads than cores would only add 19 MiB each and evict each
    other's memory from the cache. Calls beyond that wait their turn instead of sharing a core."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int, threads: int = 0) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        # Verified against when the user does not exist, so that case costs the same time.
        self._decoy = self._hasher.hash("decoy password that never matches")
        workers = threads or len(os.sched_getaffinity(0))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._decoy, password) and bool(stored)  # '': invited, none yet
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
