"""The schema revision a build was written for, and waiting at start for the database to have it.

In a deployment the service's pods start while its migration job may still be running (Kubernetes
orders neither), and a pod on the old schema would report SERVING and fail its calls. So a service
serves only once its database is reachable and at this build's revision, or at a later one (a
rolled-back build runs on the schema of the next, as expand-then-contract migrations allow).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import sqlalchemy.exc
from sqlalchemy import text

from hishamos_kit.db import Database

log = logging.getLogger("hishamos.schema")


@dataclass(frozen=True)
class Schema:
    version_table: str  # Alembic's, one per service
    revision: str  # the newest migration this build has; tests/test_migrations.py keeps it so


def behind(found: str, needed: str) -> bool:
    """Whether revision `found` comes before `needed`: revisions are numbered (0001, 0002, …)."""
    return found.isdigit() and needed.isdigit() and int(found) < int(needed)


async def revision(db: Database, schema: Schema) -> str | None:
    """The database's revision, or None when it has none yet: no migration ran, or not the one that lets
    the service read it."""
    try:
        async with db.engine.connect() as conn:
            return (await conn.execute(text(f'SELECT version_num FROM "{schema.version_table}"'))).scalar()
    except sqlalchemy.exc.ProgrammingError:  # no such table, or no grant on it yet
        return None


async def wait_until_current(db: Database, schema: Schema, every: float = 2.0, note_every: float = 10.0) -> None:
    """Return once the database is reachable and at `schema.revision` or beyond, saying what it waits for."""
    noted = 0.0
    while True:
        try:
            found = await revision(db, schema)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, OSError) as exc:
            # The driver's own first line says why (refused, no such database, a wrong password); it
            # never quotes the password.
            said = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            reason = f"the database is unreachable ({said}); check DATABASE_URL and that it runs"
        else:
            if found == schema.revision or (found is not None and behind(schema.revision, found)):
                if found != schema.revision:
                    log.warning("the database is at revision %s, newer than this build's %s", found, schema.revision)
                return
            at = f"at revision {found}" if found else "not there yet, or older than revisions tell this build"
            reason = (
                f"the database schema is {at}, and this build needs revision {schema.revision}: run the service's "
                "migrations (`make migrate`, or its migrate job)"
            )
        if time.monotonic() - noted >= note_every:
            log.warning("waiting to serve: %s", reason)
            noted = time.monotonic()
        await asyncio.sleep(every)
