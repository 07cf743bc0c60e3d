"""Durable background jobs in the service's own database (DESIGN §7).

A job is a row written in the transaction of the request that needs it, so it exists exactly when
that request's other changes do: a crash before COMMIT loses both, a crash after loses neither. A
worker in every process of the service claims due jobs with FOR UPDATE SKIP LOCKED (so any number
of processes share the queue) and leases each for `LEASE`: a process that dies mid-job leaves it
due again when the lease ends. A failed job is retried with exponential backoff, at most
`MOST_ATTEMPTS` times, then kept as failed with its last error, until `RETENTION` deletes it.
Delivery is at least once: a handler must tolerate a repeat (e.g. mail carries the job id as its
Message-ID, so a receiver can tell a repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import DateTime, Index, String, Text, UniqueConstraint, func, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from hishamos_kit.db import Database, Prepared, Timestamps
from hishamos_kit.metrics import JOBS_RUN
from hishamos_kit.retention import Rule

log = logging.getLogger("hishamos.jobs")

# A finished job is kept a week, a given-up one a month, for whoever looks into why.
RETENTION = Rule("jobs", "finished_at < now() - CASE WHEN failed THEN interval '30 days' ELSE interval '7 days' END")
# Jobs waiting for their first run go in order of their turn (start-time fair queueing). A tenant's
# job takes its turn one TURN after that tenant's last such job, or, if none waits, one TURN after the
# queue's present (the first waiting turn, or now when the queue keeps up). A tenant that queues a
# thousand mails at once spreads them over a thousand seconds of turns, so another's mail, queued a
# moment later, runs after a few of them, however far behind the worker is; and a tenant alone still
# has every job run as fast as the worker goes (turns order jobs, never delay them). A retry takes its
# place by the time it falls due (behind a worker that lags, after the newcomers it lags behind).
TURN = timedelta(seconds=1)
_WAITING = "finished_at IS NULL AND attempts = 0"
_RETRYING = "finished_at IS NULL AND attempts > 0"  # waiting out a backoff, or leased to a worker now
CANDIDATES = 8  # of each kind a claim considers: more than the workers that claim at one moment
LEASE_SECONDS = 300
MOST_ATTEMPTS = 20  # with `backoff`, retries span about ten hours: an outage of a night delays, loses nothing
Handler = Callable[[uuid.UUID, dict[str, Any]], Awaitable[None]]


class JobColumns(Timestamps):
    """The queue. Each service maps it to its own `jobs` table. It is under no row-level security,
    since a worker serves every organization; `tenant` says whose work a job is, for fair turns."""

    __tablename__ = "jobs"

    kind: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))  # the same (kind, key) enqueued twice is one job
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=sa.func.now())
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    tenant: Mapped[str] = mapped_column(String(100), default="", server_default="")
    turn_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=sa.func.now())

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:  # noqa: N805 - declared_attr receives the class
        return (
            UniqueConstraint("kind", "key"),
            Index("ix_jobs_tenant_turn_at", "tenant", "turn_at", postgresql_where=text(_WAITING)),
            Index("ix_jobs_waiting_turn_at", "turn_at", postgresql_where=text(_WAITING)),
            Index("ix_jobs_retrying_run_at", "run_at", postgresql_where=text(_RETRYING)),
        )


async def enqueue(
    session: AsyncSession,
    model: type[JobColumns],
    kind: str,
    payload: Mapping[str, Any],
    *,
    tenant: str,
    key: str = "",
) -> None:
    """Add a job in the caller's transaction; with a `key`, once per (kind, key). `tenant` (an
    organization id, say) takes turns with the others: see `TURN`. A transaction enqueues for one
    tenant only: each holds the tenant's lock until it ends, and two held in either order could deadlock."""
    # One enqueue of a tenant at a time, until its transaction ends: each then sees the last one's turn.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"jobs {tenant}"))))
    waiting = text(_WAITING)
    last = select(func.max(model.turn_at)).where(model.tenant == tenant, waiting).scalar_subquery()
    head = select(func.min(model.turn_at)).where(waiting).scalar_subquery()
    # least() and greatest() pass over NULL: an empty queue's present is now. One TURN after it, so
    # that newcomers, however many, move the present on past the first waiting job.
    turn = func.greatest(func.least(func.now(), head) + TURN, last + TURN)
    job = {"id": uuid.uuid4(), "kind": kind, "key": key or str(uuid.uuid4()), "payload": dict(payload)}
    await session.execute(
        insert(model).values(**job, tenant=tenant, turn_at=turn).on_conflict_do_nothing(index_elements=["kind", "key"])
    )


def backoff(attempts: int) -> int:
    """Seconds before attempt `attempts + 1`: 2, 4, 8 … at most an hour."""
    return int(min(2**attempts, 3600))


class Worker:
    """Runs due jobs of the kinds in `handlers`, one at a time, until `stop` is set."""

    def __init__(
        self, db: Database, model: type[JobColumns], handlers: Mapping[str, Handler], poll_seconds: float = 0.5
    ) -> None:
        self.db, self.handlers, self.poll_seconds = db, dict(handlers), poll_seconds
        table = model.__tablename__
        # A poll that finds nothing is most of what a worker does: one prepared round trip, two index
        # probes. The first waiting jobs by turn and the first due retries by due time (each index holds
        # only its own kind of job, so neither walks past the other's), and of those the earliest that
        # no other worker holds: only that row is locked (locking a candidate not taken would make a
        # worker claiming beside this one skip a due job), and it is checked again once locked.
        self._claim = Prepared(
            f"jobs_claim_{table}",
            f"UPDATE {table} SET attempts = attempts + 1, run_at = now() + make_interval(secs => %(lease)s) "
            f"WHERE id = (SELECT job.id FROM {table} AS job JOIN ("
            f"(SELECT id, turn_at AS place FROM {table} WHERE {_WAITING} AND kind = ANY(%(kinds)s) "
            f"ORDER BY turn_at LIMIT {CANDIDATES}) UNION ALL "
            f"(SELECT id, run_at AS place FROM {table} WHERE {_RETRYING} AND run_at <= now() "
            f"AND kind = ANY(%(kinds)s) ORDER BY run_at LIMIT {CANDIDATES})) AS first USING (id) "
            "WHERE job.finished_at IS NULL AND (job.attempts = 0 OR job.run_at <= now()) "
            "ORDER BY first.place LIMIT 1 FOR UPDATE OF job SKIP LOCKED) "
            "RETURNING id, kind, payload, attempts",
        )
        # A result counts only for the claim it ends (its attempt): a worker whose lease ran out, and
        # whose job another worker claimed since, changes nothing by finishing late.
        mine = "WHERE id = :id AND attempts = :attempts AND finished_at IS NULL"
        self._done = text(f"UPDATE {table} SET finished_at = now(), last_error = '' {mine}")
        self._retry = text(
            f"UPDATE {table} SET run_at = now() + make_interval(secs => :delay), last_error = :error, "
            f"finished_at = CASE WHEN :give_up THEN now() END, failed = :give_up {mine}"
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                worked = await self.run_one()
            except Exception:
                log.warning("job queue unavailable; retrying", exc_info=True)
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def run_one(self) -> bool:
        """Claim and run one due job; False when none is due."""
        (claimed,) = await self.db.script((self._claim, {"lease": LEASE_SECONDS, "kinds": list(self.handlers)}))
        if not claimed:
            return False
        job_id, kind, payload, attempts = claimed[0]
        try:
            if attempts > MOST_ATTEMPTS:  # its runs kept ending without a result: the process died in it
                raise RuntimeError(f"no result from {MOST_ATTEMPTS} runs")
            await self.handlers[kind](job_id, payload)
        except Exception as exc:  # noqa: BLE001 - any failure is retried later, and recorded
            give_up = attempts >= MOST_ATTEMPTS
            error = f"{type(exc).__name__}: {exc}"[:2000]
            fields = {"job": str(job_id), "kind": kind, "attempts": attempts, "given_up": give_up, "error": error[:500]}
            log.log(logging.ERROR if give_up else logging.WARNING, "job failed", extra={"fields": fields})
            JOBS_RUN.labels(kind, "given_up" if give_up else "retried").inc()
            async with self.db.unscoped() as session:
                params = {"delay": backoff(attempts), "error": error, "give_up": give_up}
                await session.execute(self._retry, {"id": job_id, "attempts": attempts, **params})
            return True
        async with self.db.unscoped() as session:
            await session.execute(self._done, {"id": job_id, "attempts": attempts})
        JOBS_RUN.labels(kind, "done").inc()
        return True
