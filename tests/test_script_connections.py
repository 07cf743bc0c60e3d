"""Script connections (`hishamos_kit.db.ScriptConnections`) when PostgreSQL goes away under them, on
the event loop the services run (uvloop)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
import uvloop

from hishamos_devstack.stack import Stack
from hishamos_kit.db import Database, Prepared
from tests.db import superuser

PID = Prepared("probe_pid", "SELECT pg_backend_pid()")
SLEEP = Prepared("probe_sleep", "SELECT pg_sleep(30)")
PAD = Prepared("probe_pad", "SELECT length(%s)")


def test_a_pipeline_whose_server_dies_before_reading_it_fails_instead_of_hanging(stack: Stack) -> None:
    """The server ends the connection (here: terminated; in a crash: killed) while most of a pipeline
    is still unread in its socket: the client's socket then reports an error together with the
    server's last message, and the call must fail with that, not wait for an answer that cannot come."""

    async def run() -> None:
        db = Database(stack.databases["projects"].app_url, pool_size=1)
        try:
            pid = (await db.script((PID, ())))[0][0][0]
            # The server reads 8 KiB at a time and stops reading while it sleeps: the rest stays unread.
            pipeline = db.script((SLEEP, ()), *[(PAD, ("x" * 4096,))] * 64)
            running = asyncio.ensure_future(pipeline)
            await asyncio.sleep(0.5)
            with superuser(stack, "projects") as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            with pytest.raises(psycopg.OperationalError):
                await asyncio.wait_for(running, timeout=10)
            # The pool opens a new connection in its place.
            assert (await db.script((PID, ())))[0][0][0] != pid
        finally:
            await db.close()

    uvloop.run(run())
