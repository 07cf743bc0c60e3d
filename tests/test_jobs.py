"""The durable job queue: at least once, and a late result from a lapsed lease changes nothing."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

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
    counted = {
        o: REGISTRY.get_sample_value("hishamos_jobs_total", {"kind": kind, "outcome": o}) for o in ("done", "retried")
    }
    assert counted == {"done": 1, "retried": 1}


def test_a_job_whose_runs_never_end_is_given_up(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """A job that kills its process leaves no result; after the most attempts it is kept as failed,
    and the log says why at ERROR, for an operator who does not read the jobs table."""
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
    assert REGISTRY.get_sample_value("hishamos_jobs_total", {"kind": kind, "outcome": "given_up"}) == 1
    (logged,) = [r for r in caplog.records if r.getMessage() == "job failed"]
    assert logged.levelname == "ERROR" and logged.fields["given_up"] and logged.fields["error"] == error  # type: ignore[attr-defined]


def test_retries_outlast_a_night_long_outage() -> None:
    """A mail server down for hours (a reset mail waiting on it) must delay the job, not fail it for good."""
    waits = [jobs.backoff(attempts) for attempts in range(1, jobs.MOST_ATTEMPTS)]  # between the runs
    assert waits == sorted(waits) and max(waits) == 3600 and sum(waits) >= 8 * 3600


class Queue:
    """Jobs of one probe kind in identity's table, and the tenants whose jobs a worker ran, in order."""

    def __init__(self, db: Database, failing: str = "") -> None:
        self.db, self.kind = db, f"probe-{uuid.uuid4().hex[:8]}"
        self.ran: list[str] = []
        self.failing = failing  # the payload tag of a job that fails its first run

    async def add(self, tenant: str, tag: str = "") -> None:
        async with self.db.unscoped() as session:  # each its own request
            await self.enqueue(session, tenant, tag)

    async def enqueue(self, session: AsyncSession, tenant: str, tag: str = "") -> None:
        # Tenants of this queue only: a tenant's turns count its waiting jobs of every kind.
        payload = {"tenant": tenant, "tag": tag}
        await jobs.enqueue(session, Job, self.kind, payload, tenant=f"{self.kind} {tenant}")

    async def run(self, count: int | None = None) -> list[str]:
        """Run `count` jobs (all that are due when None); the tenants of those run."""
        worker = jobs.Worker(self.db, Job, {self.kind: self._handle})
        start = len(self.ran)
        while (count is None or len(self.ran) - start < count) and await worker.run_one():
            pass
        return self.ran[start:]

    async def _handle(self, job_id: uuid.UUID, payload: dict[str, Any]) -> None:
        self.ran.append(payload["tenant"])
        if payload["tag"] and payload["tag"] == self.failing:
            self.failing = ""
            raise RuntimeError("fails once")


def in_queue(stack: Stack, scenario: Callable[[Database], Awaitable[None]]) -> None:
    async def run() -> None:
        db = Database(stack.database_urls("identity")[0], 12)
        try:
            await scenario(db)
        finally:
            await db.close()

    asyncio.run(run())


def test_a_tenants_burst_takes_turns_with_another_tenants_job(stack: Stack) -> None:
    """One organization queues a burst; another's single job, queued after it, runs among the first, not last."""

    async def scenario(db: Database) -> None:
        queue = Queue(db)
        for tenant in ["busy"] * 30 + ["quiet"]:
            await queue.add(tenant)
        # Turns order the jobs and never hold one back: all 31 are due now, and run one after another.
        ran = await queue.run()
        assert ran.index("quiet") <= 2 and ran.count("busy") == 30

    in_queue(stack, scenario)


def test_turns_hold_when_the_worker_is_behind_enqueues_race_or_a_job_retries(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def behind(db: Database) -> None:
        queue = Queue(db)
        jobs.TURN = timedelta(milliseconds=1)  # the worker, at several ms a job, falls behind the turns
        for _ in range(30):
            await queue.add("busy")
        await queue.run(10)  # the worker has got through a third of the burst when another tenant's job comes
        await queue.add("quiet")
        assert (await queue.run()).index("quiet") <= 2

    async def newcomers(db: Database) -> None:
        queue = Queue(db)
        jobs.TURN = timedelta(milliseconds=20)
        await queue.add("patient")
        await queue.add("patient")
        ran = []
        for i in range(12):  # a stream of tenants, each with one job, as fast as the worker takes them
            await queue.add(f"newcomer-{i}")
            ran += await queue.run(1)
            await asyncio.sleep(0.01)
        # Its second job waits about a turn, not for every newcomer there is.
        assert ran.count("patient") == 2, ran

    async def racing(db: Database) -> None:
        queue = Queue(db)

        async def add_slowly() -> None:
            async with db.unscoped() as session:  # ten requests of one tenant, in flight together
                await queue.enqueue(session, "busy")
                await asyncio.sleep(0.05)

        await asyncio.gather(*(add_slowly() for _ in range(10)))
        async with db.unscoped() as session:
            turns = list(await session.scalars(select(Job.turn_at).where(Job.kind == queue.kind).order_by(Job.turn_at)))
        assert all(later - earlier >= jobs.TURN for earlier, later in itertools.pairwise(turns))  # one each
        assert len(await queue.run()) == 10

    async def retrying(db: Database) -> None:
        queue = Queue(db, failing="last")
        for i in range(5):
            await queue.add("busy", tag="last" if i == 4 else "")
        await queue.run()  # the last fails, and waits out its backoff: it holds no turn of busy's
        for _ in range(5):
            await queue.add("other")
        await queue.add("busy")
        assert (await queue.run()).index("busy") <= 2

    monkeypatch.setattr(jobs, "TURN", jobs.TURN)
    for scenario in (behind, newcomers, racing, retrying):
        in_queue(stack, scenario)
        jobs.TURN = timedelta(seconds=1)


def test_two_workers_claiming_together_take_a_waiting_job_and_a_due_retry(stack: Stack) -> None:
    """A claim locks only the job it takes: another worker claiming at that moment gets the other one."""

    async def scenario(db: Database) -> None:
        other = Database(stack.database_urls("identity")[0], 2)  # another process's connections
        try:
            for _ in range(10):
                queue = Queue(db)
                await queue.add("first")
                await queue.add("second")
                async with db.unscoped() as session:  # one of them failed once, and is due again
                    await session.execute(
                        text(
                            "update jobs set attempts = 1, run_at = now() - interval '1 second' where id = ("
                            "select id from jobs where kind = :kind order by turn_at limit 1)"
                        ),
                        {"kind": queue.kind},
                    )
                here = jobs.Worker(db, Job, {queue.kind: queue._handle})
                there = jobs.Worker(other, Job, {queue.kind: queue._handle})
                assert all(await asyncio.gather(here.run_one(), there.run_one()))
                assert sorted(queue.ran) == ["first", "second"]
        finally:
            await other.close()

    in_queue(stack, scenario)
