"""Create one resource in a project in one round trip on a plain connection, as fastlist reads a page.

Through the ORM a create cost six statements (BEGIN, tenant setting, project lock, checks, INSERT,
COMMIT), each with the ORM's per-statement CPU: several times the database's own work. Here a
statement locks the live project FOR KEY SHARE (as `children.live_project` does), and one more
evaluates every check (the ancestors, the guards of referenced rows) and inserts only when all of
them hold; both are prepared, and travel with BEGIN, the tenant setting and COMMIT. When nothing is
inserted, the same answer says why (NOT_FOUND, the violations, or a project changed since its columns
were checked). With a request_id the statement also claims the key, and the response is stored before
COMMIT (AIP-155, as `hishamos_kit.resources.once`). Values reach SQL only as parameters
(`hishamos_kit.db.ScriptConnections.run`)."""

from __future__ import annotations

import uuid
from functools import cache, lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import psycopg
from google.protobuf.message import Message
from psycopg.types.json import Jsonb
from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from hishamos_kit import resources
from hishamos_kit.auth import Principal
from hishamos_kit.db import Prepared, ScriptConnections, columns_of, in_tenant
from hishamos_kit.errors import Aborted, NotFound, Violations
from hishamos_projects.guards import Guard, archived, facts_sql, live
from hishamos_projects.models import IdempotencyKey

KEYS = IdempotencyKey.__tablename__
DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
SEEN_PROJECTS = 10_000
CLAIM = (
    f"INSERT INTO {KEYS} (id, organization_id, method, request_id) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (organization_id, method, request_id) DO NOTHING RETURNING id"
)

ONE_ROW = "(VALUES (1)) AS one(x) LEFT JOIN facts ON true"
# Column types that store a validated value exactly as sent, so a create answers with what it sent.
STORED_AS_SENT = ("UUID", "VARCHAR", "TEXT", "SMALLINT", "INTEGER", "BIGINT", "BOOLEAN", "DATE", "TIMESTAMP")
# Taken on its own, before the checks: they then read what was committed before it was granted
# (a sprint completed while this create waited is seen completed).
LOCK = Prepared("fastcreate_lock", "SELECT 1 FROM projects WHERE id = %s AND NOT is_deleted FOR KEY SHARE")
STORE = Prepared("fastcreate_store", f"UPDATE {KEYS} SET response = %s WHERE id = %s")
STORED = Prepared(
    "fastcreate_stored",
    f"SELECT response FROM {KEYS} WHERE organization_id = %s AND method = %s AND request_id = %s",
)

# project id → (version, values of the project columns) last read: the rules checked against them
# hold while the project keeps that version, which the INSERT's condition confirms.
_projects: dict[uuid.UUID, tuple[int, tuple[Any, ...]]] = {}

if TYPE_CHECKING:
    from hishamos_projects.children import ChildMethods


class Draft:
    """The row being created, as the kind's `apply` fills it: a plain object, since the ORM's
    instrumentation of every attribute set cost more than the checks. Unset attributes read as
    None and are left to the column defaults."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


async def create(
    methods: ChildMethods[Any, Any],
    principal: Principal,
    parent: str,
    parents: tuple[uuid.UUID, ...],
    message: Message,
    request_id: str,
) -> Any:
    """The created resource's message; NOT_FOUND unless the project and the parents are live."""
    kind, organization_id, project_id = methods.kind, principal.organization_id, parents[0]
    row: Any = Draft()
    row.id, row.organization_id = uuid.uuid4(), organization_id
    for column, value in zip(kind.scope, parents, strict=True):
        setattr(row, column, value)
    refused = Violations()
    paths = sorted(kind.updatable)
    guards = await methods.prepare(row, message, paths, refused)
    kind.on_create(row, message)
    ancestors = [
        Guard(*live(model, parents[depth], *zip(kind.scope[:depth], parents, strict=False)), "")
        for depth, model in enumerate(kind.ancestors, start=1)
    ]
    checks = [*ancestors, *guards.values()]
    texts = tuple(check.sql for check in checks)
    facts_params = (*(p for check in checks for p in check.params), project_id)
    method = resources.callers_method(resources.keyed_method(f"Create{type(message).__name__}", parents))
    key_id = uuid.uuid4() if request_id else None
    async with methods.db.scripts.connection() as conn:
        loader = methods.db.scripts.adapter(conn)
        for _ in range(3):
            seen = _projects.get(project_id) if kind.project_columns else (0, ())
            ready = not refused.failed and seen is not None
            if seen is not None and ready and kind.project_columns:
                checked = Violations()
                project = SimpleNamespace(**dict(zip(kind.project_columns, seen[1], strict=True)))
                kind.check_project(row, project, paths, checked)
                ready = not checked.failed
            params: list[Any] = [key_id, organization_id, method, request_id] if request_id else []
            params += facts_params
            inserted, sent = None, {}
            if seen is not None and ready:
                inserted = _inserted(kind.model, row)
                sent = _sent(kind.model, row, inserted)
                params += _bound(kind.model, inserted, sent)
                params += [seen[0]] if kind.project_columns else []
            statement = _statement(kind, texts, bool(request_id), inserted)
            # With a request_id, COMMIT follows the stored response.
            steps = in_tenant(organization_id, (LOCK, (project_id,)), (statement, params), commit=not request_id)
            try:
                results = await methods.db.scripts.run(conn, steps)
            except psycopg.errors.UniqueViolation as exc:
                duplicate = methods.duplicate(exc.diag.constraint_name)
                if duplicate is None:
                    raise
                raise duplicate from None
            loader.set_pgresult(results[-1])
            answer = loader.load_row(0, tuple)
            claimed = bool(answer[0]) if request_id else True
            facts_row = answer[1:] if request_id else answer
            width = 2 + len(kind.project_columns) + len(checks)
            made_row = facts_row[width:]
            if made_row and made_row[0] is not None:
                assert inserted is not None
                # The row as sent, and what the server filled in (the values sent come back unchanged:
                # validation keeps them within their columns, so no cast truncates or rounds them).
                sent.update(zip(_returned(kind, inserted), made_row, strict=True))
                made = kind.to_message(SimpleNamespace(**sent))
                if request_id:
                    await methods.db.scripts.run(conn, [(STORE, (made.SerializeToString(), key_id)), ("COMMIT", ())])
                return made
            if request_id:
                await methods.db.scripts.run(conn, [("ROLLBACK", ())])
                if not claimed:
                    return await _stored(methods.db.scripts, conn, organization_id, method, request_id, kind.message)
            if facts_row[0] is None:  # no live project
                raise NotFound(parent)
            version, active, *values = facts_row[:width]
            if not active:
                raise archived(project_id)
            project_values, live_values = values[: len(kind.project_columns)], values[len(kind.project_columns) :]
            if not all(live_values[: len(ancestors)]):
                raise NotFound(parent)
            violations = Violations()
            violations.merge(refused)
            methods.judge(row, paths, guards, (*project_values, *live_values[len(ancestors) :]), violations)
            violations.raise_if_any()
            if kind.project_columns:  # what the rules were checked against is out of date
                if len(_projects) >= SEEN_PROJECTS:
                    _projects.clear()
                _projects[project_id] = (version, tuple(project_values))
    raise Aborted(f"{parent} keeps changing; retry", "CONCURRENT_UPDATE")


async def _stored(
    scripts: ScriptConnections, conn: Any, organization_id: uuid.UUID, method: str, request_id: str, kind: Any
) -> Any:
    """The response the first create with this request_id stored."""
    _, found = await scripts.run(conn, in_tenant(organization_id, (STORED, (organization_id, method, request_id))))
    loader = scripts.adapter(conn)
    loader.set_pgresult(found)
    (response,) = loader.load_row(0, tuple)
    return kind.FromString(bytes(response or b""))


@lru_cache(maxsize=1000)
def _statement(kind: Any, checks: tuple[str, ...], claim: bool, inserted: tuple[int, ...] | None) -> Prepared:
    """The statement of one shape of create (its checks, a request_id or not, the columns it sets;
    no insert while the project columns are unknown). PostgreSQL plans a statement with CTEs in more
    time than it runs, so each connection prepares it once; building its text costs more than binding
    the values, so it is built once.

    One row whatever the facts: a replay is recognised even when the project is gone."""
    ctes, selected, source = [f"facts AS ({facts_sql(kind, checks)})"], ["facts.*"], ONE_ROW
    if claim:
        ctes.insert(0, f"claim AS ({CLAIM})")
        selected.insert(0, "(SELECT count(*) FROM claim)")
    if inserted is not None:
        # The insert happens only when every fact holds, in the statement that reads them.
        conditions = ["facts.is_active", *(f"facts.ok{i}" for i in range(len(checks)))]
        conditions += ["facts.version = %s"] if kind.project_columns else []
        ctes.append(f"made AS ({_insert(kind, inserted, 'facts, claim' if claim else 'facts', conditions)})")
        selected.append("made.*")
        source += " LEFT JOIN made ON true"
    statement = f"WITH {', '.join(ctes)} SELECT {', '.join(selected)} FROM {source}"
    return Prepared("fastcreate", statement)


@cache
def _columns(model: Any) -> tuple[tuple[str, str, Any, bool, str], ...]:
    """(attribute, column, scalar default or None, is JSONB, SQL type) of every column of `model`."""
    return tuple(
        (
            attribute,
            column.name,
            column.default.arg if isinstance(column.default, ScalarElementColumnDefault) else None,
            isinstance(column.type, JSONB),
            column.type.compile(dialect=DIALECT),
        )
        for attribute, column in columns_of(model)
    )


def _inserted(model: Any, row: Any) -> tuple[int, ...]:
    """The columns (by position in `_columns`) the INSERT sets: those set on `row`, and those with
    a scalar default; the server's defaults fill the rest."""
    values = row.__dict__
    return tuple(i for i, (key, _, default, _, _) in enumerate(_columns(model)) if key in values or default is not None)


def _sent(model: Any, row: Any, inserted: tuple[int, ...]) -> dict[str, Any]:
    """The values of the `inserted` columns of `row` by attribute, in the INSERT's order; they come
    before the condition's parameters."""
    columns, values = _columns(model), row.__dict__
    return {columns[i][0]: values.get(columns[i][0], columns[i][2]) for i in inserted}


def _bound(model: Any, inserted: tuple[int, ...], sent: dict[str, Any]) -> list[Any]:
    """`sent` as the INSERT binds it: JSON columns' values as JSONB."""
    columns = _columns(model)
    return [
        Jsonb(value) if columns[i][3] and value is not None else value
        for i, value in zip(inserted, sent.values(), strict=True)
    ]


@lru_cache(maxsize=100)
def _returned(kind: Any, inserted: tuple[int, ...]) -> tuple[str, ...]:
    """The attributes the INSERT returns: the id first (never NULL, so a row not inserted shows), then
    those the server fills in (ranks from a sequence, times, NULLs) and those it may store otherwise
    than sent (a float's -0.0 is stored as 0, JSON numbers become numeric)."""
    columns = enumerate(_columns(kind.model))
    return ("id", *(c[0] for i, c in columns if i not in inserted or not c[4].startswith(STORED_AS_SENT)))


def _insert(kind: Any, inserted: tuple[int, ...], sources: str, conditions: list[str]) -> str:
    """INSERT of the `inserted` columns for each row of `sources` meeting `conditions`, returning
    the `_returned` columns."""
    columns = _columns(kind.model)
    names = ", ".join(f'"{columns[i][1]}"' for i in inserted)
    casts = ", ".join(f"CAST(%s AS {columns[i][4]})" for i in inserted)  # prepared parameters need types
    column_of = {column[0]: column[1] for column in columns}
    returning = ", ".join(f'"{column_of[attribute]}"' for attribute in _returned(kind, inserted))
    table = inspect(kind.model).local_table.name
    return (
        f'INSERT INTO "{table}" ({names}) SELECT {casts} FROM {sources} '
        f"WHERE {' AND '.join(conditions)} RETURNING {returning}"
    )
