"""Async SQLAlchemy: deterministic constraint names, the base columns, and tenant-scoped transactions."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from psycopg import AsyncConnection, abc, pq
from psycopg.adapt import Transformer
from psycopg.types.json import Jsonb
from sqlalchemy import Column, DateTime, MetaData, func, inspect, make_url, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from hishamos_kit.errors import ApiError

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TENANT_SETTING = "app.organization_id"


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


class TenantResource(Resource):
    """A resource owned by one organization; row-level security keys on organization_id."""

    organization_id: Mapped[uuid.UUID] = mapped_column(index=True)


# Script sessions: standard_conforming_strings on (and UTF-8, set at connect), so that `literal` quotes a
# string by doubling its quotes; and generic plans for prepared statements, since a custom plan per call
# (PostgreSQL's choice for the first five calls, and whenever it guesses one cheaper) costs more than
# running a page query.
SCRIPT_OPTIONS = "-c standard_conforming_strings=on -c plan_cache_mode=force_generic_plan"


class ScriptConnections:
    """Autocommit psycopg connections for scripts sent with `run_script` (`Database.read_one`, the
    hot paths of services), handed out through a queue. A script holds its own BEGIN and COMMIT.

    Opened on demand up to `size`; a connection that failed in any other way than an ApiError is
    closed rather than reused, so a restarted database costs one failed call per connection, not a stuck pool.
    """

    PREPARED_PER_CONNECTION = 100

    def __init__(self, conninfo: str, size: int) -> None:
        self._conninfo = conninfo
        self._size = size
        self._idle: asyncio.Queue[AsyncConnection[Any]] = asyncio.Queue()
        self._open = 0
        self._prepared: WeakKeyDictionary[AsyncConnection[Any], OrderedDict[str, None]] = WeakKeyDictionary()

    def prepare(self, conn: AsyncConnection[Any], name: str, sql: str) -> list[str]:
        """`PREPARE name AS sql` when `conn` has not prepared `name` yet, else nothing: statements to
        put before a script that runs `EXECUTE name(…)`. PostgreSQL then parses and plans the statement
        once per connection instead of once per call. A connection keeps its most recently used ones."""
        prepared = self._prepared.setdefault(conn, OrderedDict())
        if name in prepared:
            prepared.move_to_end(name)
            return []
        prepared[name] = None
        statements = [f"PREPARE {name} AS {sql}"]
        if len(prepared) > self.PREPARED_PER_CONNECTION:
            statements.append(f"DEALLOCATE {prepared.popitem(last=False)[0]}")
        return statements

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._idle.empty() and self._open < self._size:
            self._open += 1
            try:
                conn = await AsyncConnection.connect(
                    self._conninfo, autocommit=True, client_encoding="UTF8", options=SCRIPT_OPTIONS
                )
            except BaseException:
                self._open -= 1
                raise
            if (conn.pgconn.parameter_status(b"standard_conforming_strings"), conn.info.encoding) != (b"on", "utf-8"):
                self._open -= 1
                await conn.close()  # `literal` would not quote safely: say so rather than guess
                raise RuntimeError("script connections need standard_conforming_strings=on and UTF-8")
        else:
            conn = await self._idle.get()
        try:
            yield conn
        except ApiError:
            # A refusal (NOT_FOUND, INVALID_ARGUMENT…) leaves the connection sound: end whatever
            # transaction the script had open and keep it.
            if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                try:
                    await run_script(conn, b"ROLLBACK")
                except BaseException:
                    self._open -= 1
                    await conn.close()
                    raise
            self._idle.put_nowait(conn)
            raise
        except BaseException:
            self._open -= 1
            await conn.close()
            raise
        self._idle.put_nowait(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()


class Database:
    """One engine per service; one session and transaction per RPC.

    Writes go through the SQLAlchemy ORM. Hot paths (`read_one`, a project's lists and creates) send
    scripts on plain psycopg connections: on a small CPU the ORM's per-statement cost is several
    times the query's (docs/architecture.md, "Reads").
    """

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.scripts = ScriptConnections(conninfo, pool_size)

    async def read_one(
        self, organization_id: uuid.UUID, query: str, names: Sequence[str], *ids: uuid.UUID
    ) -> SimpleNamespace | None:
        """One row of `query` as seen by one organization, in a single round trip.

        BEGIN, the tenant setting, the query and COMMIT travel as one simple-protocol message.
        Only UUID objects are interpolated (`{}` in `query`), and their text cannot inject SQL.
        The row comes back as attributes named by `names`, the query's columns in order.
        """
        if not all(isinstance(i, uuid.UUID) for i in (organization_id, *ids)):
            raise TypeError("read_one interpolates UUID objects only")
        literals = [f"'{i}'::uuid" for i in ids]
        script = "; ".join(in_tenant(organization_id, query.format(*literals), read_only=True))

        async with self.scripts.connection() as conn:
            _, _, rows, _ = await run_script(conn, script.encode())
            if not rows.ntuples:
                return None
            loader = Transformer(conn)
            loader.set_pgresult(rows)
            values = loader.load_row(0, tuple)
        return SimpleNamespace(**dict(zip(names, values, strict=True)))

    async def script(self, *statements: tuple[str | Prepared, Mapping[str, Any]]) -> list[list[tuple[Any, ...]]]:
        """`statements` as one transaction in one round trip, and the rows each returned.

        For hot paths that write (sign-in): BEGIN, the statements and COMMIT travel as one
        simple-protocol message, like `read_one`. Each statement's `%(name)s` parameters are bound
        client-side as quoted literals (`bind`), so values a client sent are never spliced in raw.
        Row-level security still applies: a statement that sets the tenant comes first.
        A failing statement raises its error and nothing commits (the connection is discarded).
        """
        async with self.scripts.connection() as conn:
            loader = Transformer(conn)
            prepare = [
                line
                for s in {s.name: s for s, _ in statements if isinstance(s, Prepared)}.values()
                for line in self.scripts.prepare(conn, s.name, s.sql)
            ]
            body = []
            for statement, params in statements:
                sql = statement.execute if isinstance(statement, Prepared) else statement
                body.append(bind(sql, params, loader))
            results = await run_script(conn, "; ".join([*prepare, "BEGIN", *body, "COMMIT"]).encode())
            found: list[list[tuple[Any, ...]]] = []
            for result in results[len(prepare) + 1 : -1]:
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


PLACEHOLDER = re.compile(r"%\((\w+)\)s")
POSITIONAL = re.compile(r"%%|%s")


class Prepared:
    """A statement each connection plans once and then only executes, for `Database.script`.

    PostgreSQL plans every statement of a simple-protocol script anew, and for a statement with
    CTEs and subqueries the plan costs more than the run. The first script on a connection that
    uses it sends `PREPARE name AS …` with it; later ones send `EXECUTE name(…)`, bound with `bind`.
    `sql` takes `%(name)s` parameters, or `%s` ones bound in order, as any statement; their types
    are inferred by PostgreSQL.
    """

    def __init__(self, name: str, sql: str) -> None:
        self.name = name
        params = list(dict.fromkeys(PLACEHOLDER.findall(sql)))
        # `%` formatting, as psycopg reads the text: a parameter becomes `$n`, and `%%` a `%`.
        if params:
            self.sql = sql % {param: f"${i}" for i, param in enumerate(params, start=1)}
            arguments = [f"%({p})s" for p in params]
        else:
            count = POSITIONAL.findall(sql).count("%s")
            self.sql = sql % tuple(f"${i}" for i in range(1, count + 1))
            arguments = ["%s"] * count
        self.execute = f"EXECUTE {name}({', '.join(arguments)})" if arguments else f"EXECUTE {name}"


def in_tenant(organization_id: uuid.UUID, *statements: str, read_only: bool = False, commit: bool = True) -> list[str]:
    """A script's statements as one transaction of one organization: BEGIN, the tenant setting that
    row-level security reads, `statements`, and COMMIT (left to the caller with `commit=False`)."""
    if type(organization_id) is not uuid.UUID:  # its text, spliced in, cannot inject SQL
        raise TypeError("in_tenant takes the organization as a UUID")
    begin = "BEGIN READ ONLY" if read_only else "BEGIN"
    return [begin, f"SET LOCAL {TENANT_SETTING} = '{organization_id}'", *statements, *(["COMMIT"] if commit else [])]


def bind(sql: str, params: Mapping[str, Any] | Sequence[Any], transformer: abc.Transformer) -> str:
    """`sql` with its `%(name)s` (or `%s`) parameters replaced by literals, as psycopg's
    `ClientCursor.mogrify` does (`%%` is a `%`), for a connection of `ScriptConnections`."""
    if isinstance(params, Mapping):
        if "%s" in sql and "%s" in POSITIONAL.findall(sql):  # `%` would splice in the mapping's repr
            raise TypeError("a statement with %s parameters takes a sequence of values")
        return sql % {name: literal(value, transformer) for name, value in params.items()}
    return sql % tuple(literal(value, transformer) for value in params)


def literal(value: Any, transformer: abc.Transformer) -> str:
    """`value` as an SQL literal. The common types are quoted here, in a fraction of the time
    psycopg's adapters take (a script binds dozens of values); the rest by psycopg."""
    kind = type(value)
    if kind is str:
        return _quote(value)
    if value is None:
        return "NULL"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        # In parentheses: `x -%s` must not become a `--` comment, nor `%s::int8` apply to the digits only.
        return f"({value})" if value < 0 else str(value)
    if kind is uuid.UUID:
        return f"'{value}'::uuid"
    if kind is Jsonb:
        return _quote((value.dumps or json.dumps)(value.obj)) + "::jsonb"
    if kind is list and all(type(item) is str for item in value):
        items = (item.replace("\\", "\\\\").replace('"', '\\"') for item in value)
        return _quote("{" + ",".join(f'"{item}"' for item in items) + "}")
    return bytes(transformer.as_literal(value)).decode()


def _quote(text: str) -> str:
    """A string literal. Its only special character is the quote: the session has
    standard_conforming_strings on and speaks UTF-8 (no multi-byte character hides a quote byte)."""
    if "\x00" in text:
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    return "'" + text.replace("'", "''") + "'"


async def run_script(conn: AsyncConnection[Any], script: bytes) -> list[pq.abc.PGresult]:
    """Send a multi-statement script and collect one result per statement, straight on libpq.

    psycopg's cursor costs more CPU per query than the whole round trip on loopback; this path
    is one send, one wait for the socket, and no cursor. A failed statement raises its error.
    """
    pgconn = conn.pgconn
    loop = asyncio.get_running_loop()
    pgconn.send_query(script)
    while pgconn.flush():
        await _ready(loop.add_writer, loop.remove_writer, pgconn.socket)
    results: list[pq.abc.PGresult] = []
    while True:
        pgconn.consume_input()
        if pgconn.is_busy():
            await _ready(loop.add_reader, loop.remove_reader, pgconn.socket)
            continue
        result = pgconn.get_result()
        if result is None:
            break
        results.append(result)
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    return results


async def _ready(add: Any, remove: Any, fd: int) -> None:
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    add(fd, wake)
    try:
        await waiter
    finally:
        remove(fd)


async def set_local(session: AsyncSession, setting: str, value: str) -> None:
    """SET LOCAL with a bound value: it lasts until the transaction ends, so a pooled connection forgets it."""
    await session.execute(text("select set_config(:setting, :value, true)"), {"setting": setting, "value": value})


def violated_constraint(exc: IntegrityError) -> str | None:
    """Name of the constraint an INSERT/UPDATE broke, so callers can map it to a field."""
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)
