"""List a project's children in one round trip, the way `Database.read_one` reads one row.

Through the ORM a page of 50 stories cost five round trips (BEGIN, tenant setting, project check,
page, rollup) and an ORM entity per row: several times the database's own work. Here the page query
is built with the same filter, order and keyset rules as `hishamos_kit.listing.list_page`, compiled,
its parameters bound client-side by psycopg's own quoting (`ClientCursor.mogrify`, so nothing a client
sends is spliced in unquoted), and sent with the tenant setting and the project check as one script.
"""

from __future__ import annotations

import base64
import json
import uuid
from types import SimpleNamespace
from typing import Any

from psycopg import AsyncClientCursor
from psycopg.adapt import Transformer
from sqlalchemy import exists, inspect, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import Compiled

from hishamos_kit import listing
from hishamos_kit.db import TENANT_SETTING, Database, run_script
from hishamos_kit.errors import InvalidArgument, NotFound
from hishamos_kit.standard import ListRequest
from hishamos_projects.models import Project

DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined,no-untyped-call]


_COMPILED: dict[Any, Compiled] = {}  # by statement shape; literal values are parameters


def _sql(query: Select[Any], cursor: AsyncClientCursor[Any]) -> str:
    """The statement as SQL text with its values quoted by psycopg. Compiling costs more than the query,
    so each shape (filter, order, token or not) is compiled once, as SQLAlchemy's own statement cache
    does, and reused with the values extracted from the new statement's cache key."""
    key = query._generate_cache_key()
    if key is None:
        compiled: Compiled = query.compile(dialect=DIALECT)
        return cursor.mogrify(str(compiled), compiled.params)
    compiled = _COMPILED.get(key.key) or DIALECT.statement_compiler(DIALECT, query, cache_key=key)
    if len(_COMPILED) < 1000:
        _COMPILED[key.key] = compiled
    return cursor.mogrify(str(compiled), compiled.construct_params(extracted_parameters=key.bindparams))


async def list_children(
    db: Database,
    kind: Any,  # a ChildType without ancestors
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    request: ListRequest,
) -> tuple[list[SimpleNamespace], str]:
    """One page of `kind`'s rows in a live project (NOT_FOUND otherwise), and the next page token."""
    spec: listing.ListSpec = kind.list_spec
    if request.page_size < 0:
        raise InvalidArgument({"page_size": "must not be negative"})
    size = min(request.page_size or listing.DEFAULT_PAGE_SIZE, listing.MAX_PAGE_SIZE)
    condition = listing.parse_filter(request.filter, spec.filter_fields)
    order = listing.parse_order_by(request.order_by, spec)
    keys = [(spec.order_fields[name], desc) for name, desc in order] + [(listing.Field(spec.id_column), False)]
    fingerprint = listing._fingerprint(request.filter, order, request.parent, request.show_deleted)

    model = kind.model
    attributes = list(inspect(model).column_attrs)
    extras = [expression.label(name) for name, expression in kind.extra_columns.items()]
    live = exists().where(Project.id == project_id, Project.is_deleted.is_(False))
    query = select(*(a.columns[0] for a in attributes), *extras).where(
        model.organization_id == organization_id, model.project_id == project_id, live
    )
    if not request.show_deleted:
        query = query.where(model.is_deleted.is_(False))
    if condition is not None:
        query = query.where(condition)
    if request.page_token:
        query = query.where(listing._after(listing._read_token(request.page_token, fingerprint, keys), keys))
    query = query.order_by(*(f.column.desc() if desc else f.column.asc() for f, desc in keys)).limit(size + 1)
    names = [a.key for a in attributes] + list(kind.extra_columns)

    async with db.scripts.connection() as conn:
        cursor = AsyncClientCursor(conn)
        page = _sql(query, cursor)
        check = _sql(select(live), cursor)
        script = f"BEGIN READ ONLY; SET LOCAL {TENANT_SETTING} = '{organization_id}'; {page}; {check}; COMMIT"
        _, _, found, project, _ = await run_script(conn, script.encode())
        loader = Transformer(conn)
        loader.set_pgresult(found)
        values = loader.load_rows(0, found.ntuples, tuple)
        loader.set_pgresult(project)
        (project_live,) = loader.load_row(0, tuple)
    if not project_live:
        raise NotFound(request.parent)
    rows = [SimpleNamespace(**dict(zip(names, v, strict=True))) for v in values]
    if len(rows) <= size:
        return rows, ""
    last = rows[size - 1]
    token_values = [listing._encode(getattr(last, f.column.key)) for f, _ in keys]
    token = base64.urlsafe_b64encode(json.dumps({"k": token_values, "f": fingerprint}).encode()).decode().rstrip("=")
    return rows[:size], token
