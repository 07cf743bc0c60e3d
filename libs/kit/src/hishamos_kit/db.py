"""Async SQLAlchemy: deterministic constraint names, the base columns, and tenant-scoped transactions."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import psycopg
from psycopg import AsyncConnection, abc, pq
from psycopg.abc import Buffer
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import Column, DateTime, MetaData, func, inspect, make_url, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, sessionmaker
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.instrumentation import manager_of_class

from hishamos_kit.errors import ApiError

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TENANT_SETTING = "app.organization_id"
RETENTION_SETTING = "app.retention"  # set only by a retention pass (hishamos_kit.retention)


def new_metadata() -> MetaData:
    """Each service gets its own metadata (its own database), with the shared naming convention."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class Timestamps:
    """Base columns of every table: id, created_at, updated_at."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Resource(Timestamps):
    """An API resource: soft delete (AIP-164) and a version column that is its etag (AIP-154).

    The version is SQLAlchemy's version_id_col, so an UPDATE that raced another one fails
    (StaleDataError) instead of silently overwriting it.
    """

    is_deleted: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(default=1, server_default=text("1"))

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805 - declared_attr receives the class
        # eager_defaults: server-set columns (updated_at) come back through RETURNING, not a second SELECT.
        return {"version_id_col": cls.__table__.c.version, "eager_defaults": True}  # type: ignore[attr-defined]


def columns_of(model: type[Any]) -> tuple[tuple[str, Column[Any]], ...]:
    """(attribute, column) of every mapped column of `model`, in mapping order: what the paths that
    write SQL themselves (scripts, prepared statements) select, insert and read back. Callers build
    their statements once and keep them."""
    return tuple((attribute.key, attribute.columns[0]) for attribute in inspect(model).column_attrs)


M = TypeVar("M")


def loaded(model: type[M], values: Mapping[str, Any]) -> M:
    """An instance of `model` holding `values`, built as the ORM builds the rows it loads: the
    constructor fires an attribute event per column, some 4 µs each, which a script's hot path
    reading a wide row (sign-in's user) does not need."""
    instance: M = manager_of_class(model).new_instance()
    instance_state(instance).dict.update(values)
    return instance


class TenantResource(Resource):
    """A resource owned by one organization; row-level security keys on organization_id."""

    organization_id: Mapped[uuid.UUID] = mapped_column(index=True)


# Generic plans for prepared statements: a custom plan per call (PostgreSQL's choice for the first five
# calls, and whenever it guesses one cheaper) costs more than running a page query. Strings are standard
# (as by default), so a bytea parameter's text form has its single backslash.
SCRIPT_OPTIONS = "-c standard_conforming_strings=on -c plan_cache_mode=force_generic_plan"
# A server that takes a connection and does not answer (a PostgreSQL restarting on a busy machine
# queues it) fails the call as UNAVAILABLE after this long, instead of holding it past its deadline.
CONNECT_TIMEOUT_SECONDS = 5

PLACEHOLDER = re.compile(r"%\((\w+)\)s")
POSITIONAL = re.compile(r"%%|%s")


class Prepared:
    """A statement each connection plans once and then only executes, in a `Step`.

    PostgreSQL would plan a statement with CTEs and subqueries in more time than it runs. `sql`
    takes `%(name)s` parameters (values then come as a mapping, which may hold more) or `%s` ones
    (a sequence, in order); `%%` is a `%`. Their types are inferred by PostgreSQL from where they stand.
    The name a connection prepares it under is `label` and a digest of `sql`: two statements never
    share one, however they were labelled.
    """

    def __init__(self, label: str, sql: str) -> None:
        self.name = f"{label}_{hashlib.sha1(sql.encode()).hexdigest()[:16]}".encode()
        self.names = tuple(dict.fromkeys(PLACEHOLDER.findall(sql)))
        if self.names:
            self.count = len(self.names)
            self.sql = (sql % {param: f"${i}" for i, param in enumerate(self.names, start=1)}).encode()
        else:
            self.count = POSITIONAL.findall(sql).count("%s")
            self.sql = (sql % tuple(f"${i}" for i in range(1, self.count + 1))).encode()

    def values(self, params: Mapping[str, Any] | Sequence[Any]) -> Sequence[Any]:
        if self.names:
            if not isinstance(params, Mapping):
                raise TypeError(f"{self.name.decode()} takes its values by name")
            return [params[name] for name in self.names]
        if isinstance(params, Mapping) or len(params) != self.count:
            raise TypeError(f"{self.name.decode()} takes {self.count} values in order")
        return params


# A step of a pipeline: a prepared statement and its values, or a statement without any (BEGIN, COMMIT).
Step = tuple[Prepared | str, Mapping[str, Any] | Sequence[Any]]
SET_TENANT = Prepared("kit_set_tenant", f"SELECT set_config('{TENANT_SETTING}', %s, true)")


def in_tenant(organization_id: uuid.UUID, *steps: Step, commit: bool = True) -> list[Step]:
    """`steps` as one transaction of one organization, after the tenant setting that row-level security
    reads. A pipeline is one transaction (implicit, committed at its end, rolled back at its first
    error); with `commit=False` it is an explicit one (BEGIN) that a later pipeline of the caller ends."""
    return [*([] if commit else [("BEGIN", ())]), (SET_TENANT, (str(organization_id),)), *steps]


class _Readable:
    """Wakes the pipeline waiting for a connection's answers. Its socket stays registered with the
    event loop between pipelines: uvloop makes and closes a poll handle, five system calls, each
    time a reader is added and removed."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None  # while registered
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, again: bool = False) -> None:
        """Until the socket has something to read. `again`: a later wait of the pipeline an earlier one
        woke. That wake may have been an error on the socket (the server gone with the pipeline
        unread: a crash, a terminated backend), which uvloop reports once, with the server's last
        message still to read, and then stops watching the socket; so the registration is made anew."""
        if again:
            self.stop()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._fd, self._wake)
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is None:  # something came between pipelines (the server closing it, say)
            self.stop()  # so the loop does not call again and again; the next wait registers again
        elif not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        """Unregister, as before the connection closes: the loop must not watch a reused fd."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None


@dataclass(frozen=True)
class _Kept:
    """What a script connection keeps between pipelines: the statements it prepared, most recently
    used last, a Transformer that has looked up the loaders and dumpers of the types it used, and
    its socket's registration with the event loop."""

    prepared: OrderedDict[bytes, None]
    adapter: abc.Transformer  # dumps values in text form, as PostgreSQL's input functions read them
    readable: _Readable


class ScriptConnections:
    """Autocommit psycopg connections for pipelines sent with `run` (`Database.read_one`, the
    hot paths of services), handed out through a queue. A pipeline is its own transaction.

    Opened on demand up to `size`; a connection that failed in any other way than an ApiError is
    closed rather than reused, so a restarted database costs one failed call per connection, not a stuck pool.
    """

    PREPARED_PER_CONNECTION = 100

    def __init__(self, conninfo: str, size: int) -> None:
        self._conninfo = conninfo
        self._size = size
        self._idle: asyncio.Queue[AsyncConnection[Any] | None] = asyncio.Queue()  # None: a free place
        self._open = 0
        self._kept: WeakKeyDictionary[AsyncConnection[Any], _Kept] = WeakKeyDictionary()

    async def run(self, conn: AsyncConnection[Any], steps: Sequence[Step]) -> list[pq.abc.PGresult]:
        """Send `steps` in one pipeline (one write, one round trip) and return one result per step.

        psycopg's cursor costs more CPU per query than the whole round trip on loopback; this is
        libpq's pipeline mode, straight: each step is a Bind and an Execute of a statement the
        connection prepared once (a Parse the first time, sent ahead of the steps), with its values
        as parameters, never spliced into SQL. Unless a step says BEGIN, the steps are one implicit
        transaction that the pipeline's end commits; a failed step rolls it back and raises its error
        once the pipeline is read.
        """
        kept = self._kept_by(conn)
        values: list[Sequence[Buffer | None] | None] = []
        for statement, params in steps:
            ordered = statement.values(params) if isinstance(statement, Prepared) else ()
            values.append(kept.adapter.dump_sequence(ordered, [PyFormat.TEXT] * len(ordered)) if ordered else None)
        pgconn = conn.pgconn
        pgconn.enter_pipeline_mode()
        preparing = 0  # results of statements sent ahead of the steps
        for statement in {s.name: s for s, _ in steps if isinstance(s, Prepared)}.values():
            if statement.name in kept.prepared:
                kept.prepared.move_to_end(statement.name)
                continue
            pgconn.send_prepare(statement.name, statement.sql)
            kept.prepared[statement.name] = None
            preparing += 1
            if len(kept.prepared) > self.PREPARED_PER_CONNECTION:  # the least recently used, not one of these
                pgconn.send_query_params(b"DEALLOCATE " + kept.prepared.popitem(last=False)[0], None)
                preparing += 1
        for (statement, _), dumped in zip(steps, values, strict=True):
            if isinstance(statement, Prepared):
                pgconn.send_query_prepared(statement.name, dumped)
            else:
                pgconn.send_query_params(statement.encode(), None)
        pgconn.pipeline_sync()
        while pgconn.flush():
            await _writable(pgconn.socket)
        results: list[pq.abc.PGresult] = []
        woken = False
        while True:
            while pgconn.is_busy():
                await kept.readable.wait(again=woken)
                woken = True
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:  # the end of one statement's results
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                break
            results.append(result)
        pgconn.exit_pipeline_mode()
        for result in results:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        return results[preparing:]

    def adapter(self, conn: AsyncConnection[Any]) -> abc.Transformer:
        """The Transformer that reads `conn`'s results (and dumps its values): kept, so the loaders of
        the types it read before are looked up once."""
        return self._kept_by(conn).adapter

    def _kept_by(self, conn: AsyncConnection[Any]) -> _Kept:
        kept = self._kept.get(conn)
        if kept is None:
            kept = self._kept[conn] = _Kept(OrderedDict(), Transformer(conn), _Readable(conn.pgconn.socket))
        return kept

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        conn = await self._acquire()
        try:
            yield conn
        except ApiError:
            # A refusal (NOT_FOUND, INVALID_ARGUMENT…) leaves the connection sound: end whatever
            # transaction the pipeline had open and keep it.
            if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                try:
                    await self.run(conn, [("ROLLBACK", ())])
                except BaseException:
                    await self._discard(conn)
                    raise
            self._idle.put_nowait(conn)
            raise
        except BaseException:
            await self._discard(conn)
            raise
        self._idle.put_nowait(conn)

    async def _acquire(self) -> AsyncConnection[Any]:
        while True:
            if self._idle.empty() and self._open < self._size:
                return await self._connect()
            taken = await self._idle.get()
            if taken is not None:
                return taken
            if self._open < self._size:  # a freed place, unless another caller took it first
                return await self._connect()

    async def _connect(self) -> AsyncConnection[Any]:
        self._open += 1
        try:
            return await AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                client_encoding="UTF8",
                options=SCRIPT_OPTIONS,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )
        except BaseException:
            self._open -= 1
            self._idle.put_nowait(None)  # the place is free again, for whoever waits
            raise

    async def _discard(self, conn: AsyncConnection[Any]) -> None:
        """Close a connection in an unknown state; its place goes to the next caller (None in the queue),
        who opens another, so callers waiting for a connection are not left waiting for ever."""
        self._open -= 1
        self._idle.put_nowait(None)
        await self._close(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            if (conn := self._idle.get_nowait()) is not None:
                await self._close(conn)

    async def _close(self, conn: AsyncConnection[Any]) -> None:
        if (kept := self._kept.pop(conn, None)) is not None:
            kept.readable.stop()
        await conn.close()


class Database:
    """One engine per service; one session and transaction per RPC.

    Writes go through the SQLAlchemy ORM. Hot paths (`read_one`, a project's lists and creates) send
    scripts on plain psycopg connections: on a small CPU the ORM's per-statement cost is several
    times the query's (docs/architecture.md, "Reads").
    """

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
        # The sessions' synchronous side, for a service's ORM event listeners (identity's standing).
        self.sync_sessions = sessionmaker()
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, sync_session_class=self.sync_sessions)
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.scripts = ScriptConnections(conninfo, pool_size)

    async def read_one(
        self, organization_id: uuid.UUID, query: Prepared, names: Sequence[str], *ids: uuid.UUID
    ) -> SimpleNamespace | None:
        """One row of `query` (given `ids`) as seen by one organization, in a single round trip;
        its columns come back as attributes named by `names`."""
        async with self.scripts.connection() as conn:
            _, rows = await self.scripts.run(conn, in_tenant(organization_id, (query, ids)))
            if not rows.ntuples:
                return None
            loader = self.scripts.adapter(conn)
            loader.set_pgresult(rows)
            values = loader.load_row(0, tuple)
        return SimpleNamespace(**dict(zip(names, values, strict=True)))

    async def script(self, *steps: tuple[Prepared, Mapping[str, Any] | Sequence[Any]]) -> list[list[tuple[Any, ...]]]:
        """`steps` as one transaction in one round trip, and the rows each returned.

        For hot paths that write (sign-in, claiming a job): the statements travel as one pipeline
        (`ScriptConnections.run`), one transaction. Row-level security still applies: a statement
        that sets the tenant comes first. A failing statement raises its error and nothing commits
        (the connection is discarded).
        """
        async with self.scripts.connection() as conn:
            loader = self.scripts.adapter(conn)
            results = await self.scripts.run(conn, steps)
            found: list[list[tuple[Any, ...]]] = []
            for result in results:
                if result.status != pq.ExecStatus.TUPLES_OK:
                    found.append([])
                    continue
                loader.set_pgresult(result)
                found.append(loader.load_rows(0, result.ntuples, tuple))
        return found

    @asynccontextmanager
    async def tenant(self, organization_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
        """A transaction that row-level security confines to one organization."""
        async with self.sessions() as session, session.begin():
            await set_local(session, TENANT_SETTING, str(organization_id))
            yield session

    @asynccontextmanager
    async def unscoped(self) -> AsyncIterator[AsyncSession]:
        """A transaction with no organization: tenant tables look empty, only global tables are visible."""
        async with self.sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        await self.scripts.close()
        await self.engine.dispose()


async def _writable(fd: int) -> None:
    """Until `fd` takes more (a pipeline larger than the socket's buffer)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await waiter
    finally:
        loop.remove_writer(fd)


async def set_local(session: AsyncSession, setting: str, value: str) -> None:
    """SET LOCAL with a bound value: it lasts until the transaction ends, so a pooled connection forgets it."""
    await session.execute(text("select set_config(:setting, :value, true)"), {"setting": setting, "value": value})


def violated_constraint(exc: IntegrityError) -> str | None:
    """Name of the constraint an INSERT/UPDATE broke, so callers can map it to a field."""
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)
