"""Deleting rows that have outlived their use, so that tables grow with use, not with time.

A pass runs in every process of a service about once an hour (`retention_seconds`; the first within
minutes of start) and deletes, table by table, what each `Rule` says has expired; passes of several
processes only find less to do. Tables under row-level security admit it across organizations only
in a transaction that sets `RETENTION_SETTING`, through the policies `migrations.retained` gives
them; no request sets it.
Audit events are never deleted: the app role cannot (they are append-only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from sqlalchemy import text

from hishamos_kit.db import RETENTION_SETTING, Database, set_local

log = logging.getLogger("hishamos.retention")


@dataclass(frozen=True)
class Rule:
    table: str
    expired: str  # an SQL condition on the table's rows


# A retry that comes a week after its request is another request (AIP-155 asks for no particular span).
REQUEST_IDS = Rule("idempotency_keys", "created_at < now() - interval '7 days'")


class Retention:
    """The service's rules, always with its request-id ledger's (every service keeps one)."""

    def __init__(self, db: Database, *rules: Rule, every_seconds: float = 3600.0) -> None:
        self.db = db
        self.rules = (REQUEST_IDS, *rules)
        self.every_seconds = every_seconds

    async def run(self, stop: asyncio.Event) -> None:
        # Spread, so that the processes of a service started together do not all delete at once.
        delay = random.uniform(0.1, 1.0) * min(self.every_seconds, 300)
        while not await _stopped(stop, delay):
            try:
                await self.prune()
            except Exception:
                log.warning("retention pass failed; trying again at the next", exc_info=True)
            delay = self.every_seconds * random.uniform(0.9, 1.1)

    async def prune(self) -> dict[str, int]:
        """One pass: how many rows each table gave up."""
        deleted = {}
        for rule in self.rules:  # a transaction each, so no table waits on another's locks
            async with self.db.unscoped() as session:
                await set_local(session, RETENTION_SETTING, "on")
                result = await session.execute(text(f"DELETE FROM {rule.table} WHERE {rule.expired}"))
                deleted[rule.table] = result.rowcount  # type: ignore[attr-defined]
        if any(deleted.values()):
            log.info("expired rows deleted", extra={"fields": deleted})
        return deleted


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
