"""The durable job queue: at least once, and a late result from a lapsed lease changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text

from hishamos_devstack.stack import Stack
from hishamos_identity.models import Job
from hishamos_kit import jobs
from hishamos_kit.db import Database

STATE = text("select attempts, finished_at is not null, failed, last_error from jobs where kind = :kind")


@asynccontextmanager
async def one_job(stack: Stack, kind: str, attempts: int = 0) -> AsyncIterator[Database]:
    """Identity's database with one job of `kind` queued, as if `attempts` runs had claimed it already."""
    db = Database(stack.database_urls("identity")[0], 2)
    try:
        async with db.unscoped() as session:
            await jobs.enqueue(session, Job, kind, {}, tenant="")
            params = {"kind": kind, "attempts": attempts}
            await session.execute(text("update jobs set attempts = :attempts where kind = :kind"), params)
        yield db
    finally:
        await db.close()


async def state(db: Database, kind: str) -> tuple[Any, ...]:
    async with db.unscoped() as session:
        return tuple((await session.execute(STATE, {"kind": kind})).one())


def test_a_worker_whose_lease_ran_out_cannot_reopen_a_finished_job(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "LEASE_SECONDS", 1)
    kind = f"probe-{uuid.uuid4().hex[:8]}"
    runs: list[str] = []

    async def slow_then_fail(job_id: uuid.UUID, payload: dict[str, Any]) -> None:
        runs.append("slow")
        await asyncio.sleep(2.5)  # past its lease: another worker has taken the job meanwhile
        raise RuntimeError("failed late")

    async def quick(job_id: uuid.UUID, payload: dict[str, Any]) -> None:
        runs.append("quick")

    async def scenario() -> tuple[Any, ...]:
        async with one_job(stack, kind) as db:
            late = asyncio.create_task(jobs.Worker(db, Job, {kind: slow_then_fail}).run_one())
            await asyncio.sleep(1.3)
            assert await jobs.Worker(db, Job, {kind: quick}).run_one()
            await late
            await asyncio.sleep(2.2)  # were the job open again, it would be due by now
            assert not await jobs.Worker(db, Job, {kind: quick}).run_one()
            return await state(db, kind)

    attempts, finished, failed, error = asyncio.run(scenario())
    assert runs == ["slow", "quick"]
    assert (attempts, finished, failed, error) == (2, True, False, "")


def test_a_job_whose_runs_never_end_is_given_up(stack: Stack) -> None:
    """A job that kills its process leaves no result; after the most attempts it is kept as failed."""
    kind = f"probe-{uuid.uuid4().hex[:8]}"
    runs: list[str] = []

    async def handler(job_id: uuid.UUID, payload: dict[str, Any]) -> None:
        runs.append("ran")

    async def scenario() -> tuple[Any, ...]:
        async with one_job(stack, kind, attempts=jobs.MOST_ATTEMPTS) as db:  # every run so far died holding it
            assert await jobs.Worker(db, Job, {kind: handler}).run_one()
            return await state(db, kind)

    attempts, finished, failed, error = asyncio.run(scenario())
    assert runs == [] and (attempts, finished, failed) == (jobs.MOST_ATTEMPTS + 1, True, True)
    assert "no result" in error


def test_retries_outlast_a_night_long_outage() -> None:
    """A mail server down for hours (a reset mail waiting on it) must delay the job, not fail it for good."""
    waits = [jobs.backoff(attempts) for attempts in range(1, jobs.MOST_ATTEMPTS)]  # between the runs
    assert waits == sorted(waits) and max(waits) == 3600 and sum(waits) >= 8 * 3600


def test_a_tenants_burst_takes_turns_with_another_tenants_job(stack: Stack) -> None:
    """One organization queues a burst; another's single job, queued after it, runs second, not last."""
    kind = f"probe-{uuid.uuid4().hex[:8]}"
    ran: list[str] = []

    async def handler(job_id: uuid.UUID, payload: dict[str, Any]) -> None:
        ran.append(payload["tenant"])

    async def scenario() -> None:
        db = Database(stack.database_urls("identity")[0], 2)
        try:
            for tenant in ["busy"] * 30 + ["quiet"]:
                async with db.unscoped() as session:  # each its own request
                    await jobs.enqueue(session, Job, kind, {"tenant": tenant}, tenant=tenant)
            worker = jobs.Worker(db, Job, {kind: handler})
            # Turns order the jobs and never hold one back: all 31 are due now, and run one after another.
            for _ in range(31):
                assert await worker.run_one()
            assert not await worker.run_one()
        finally:
            await db.close()

    asyncio.run(scenario())
    assert ran.index("quiet") == 1 and ran.count("busy") == 30
