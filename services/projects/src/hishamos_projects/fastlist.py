"""List a project's children in one round trip, answered from a cache of their encoded messages.

Through the ORM a page of 50 stories cost five round trips and an ORM entity per row, and building
fifty messages in Python still cost more CPU than the database's whole work. So:

- The page query has the same filter, order and keyset rules as `hishamos_kit.listing.list_page`.
  It is built and compiled once per shape (kind, filter, order, page size, show_deleted, token or
  not) and kept as SQL text; a call binds its own values (organization, project, the token's sort
  keys) client-side with psycopg's quoting (`ClientCursor.mogrify`), so nothing a client sends is
  spliced in unquoted. BEGIN READ ONLY, the tenant setting, the page and the project check travel
  as one script, like `Database.read_one`.
- The page query returns only each row's id, version, derived figures (`extra_columns`) and sort
  keys. A resource's message is a function of exactly those: every write that changes a column of
  the message bumps the version (the ORM's version_id_col; raw UPDATEs must bump it too), and
  the figures derived from other tables are part of the key. So the encoded message is cached
  under their text: correct across processes because the key comes from the database, never
  invalidated, only aged out (`LruBytes`).
- When a row of the page is not cached, the page is read again with every column (a second round
  trip, only then) and that read alone makes the response, so a page is always one snapshot.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection
from psycopg.adapt import Transformer
from sqlalchemy import bindparam, exists, inspect, select
from sqlalchemy.dialects import postgresql

from hishamos_kit import listing, wire
from hishamos_kit.db import TENANT_SETTING, Database, run_script
from hishamos_kit.errors import InvalidArgument, NotFound
from hishamos_kit.lru import LruBytes
from hishamos_kit.standard import ListRequest
from hishamos_projects.models import Project

DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined,no-untyped-call]


@dataclass(frozen=True)
class Shape:
    """The compiled scripts of one kind of page, and how to read their results."""

    keys_script: str  # the page's key columns and sort keys, then the project check
    full_script: str  # the same page with every column after those
    params: dict[str, Any]  # the filter's values
    sort_keys: list[tuple[listing.Field, bool]]
    key_width: int  # id, version and the derived figures: what the message is a function of
    names: list[str]  # the row attributes of the full read's columns after the sort keys


async def list_children(
    db: Database,
    kind: Any,  # a ChildType without ancestors
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    request: ListRequest,
    cache: LruBytes,
) -> wire.Encoded:
    """The List response for one page of `kind`'s rows in a live project (NOT_FOUND otherwise)."""
    spec: listing.ListSpec = kind.list_spec
    if request.page_size < 0:
        raise InvalidArgument({"page_size": "must not be negative"})
    size = min(request.page_size or listing.DEFAULT_PAGE_SIZE, listing.MAX_PAGE_SIZE)
    order = tuple(listing.parse_order_by(request.order_by, spec))
    shape = _shape(kind, request.filter, order, request.show_deleted, bool(request.page_token), size)
    fingerprint = listing._fingerprint(request.filter, order, request.parent, request.show_deleted)
    params = {**shape.params, "tenant": str(organization_id), "organization": organization_id, "project": project_id}
    if request.page_token:
        after = listing._read_token(request.page_token, fingerprint, shape.sort_keys)
        params.update({f"after_{i}": value for i, value in enumerate(after)})

    async with db.reads.connection() as conn:
        cursor = AsyncClientCursor(conn)
        _, _, found, live, _ = await run_script(conn, cursor.mogrify(shape.keys_script, params).encode())
        entries = _cached(found, min(found.ntuples, size), shape.key_width, cache) if _live(live) else []
        if entries is None:  # a row not cached yet: read the page again, whole
            _, _, found, live, _ = await run_script(conn, cursor.mogrify(shape.full_script, params).encode())
            entries = _encode(kind, conn, found, min(found.ntuples, size), shape, cache)
        token = _next_token(conn, found, size, shape, fingerprint)
    if not _live(live):
        raise NotFound(request.parent)
    return wire.list_response(entries, token)


def _live(result: Any) -> bool:
    return bool(result.get_value(0, 0) == b"t")


def _key(result: Any, row: int, width: int) -> tuple[bytes, ...]:
    return tuple(result.get_value(row, column) for column in range(width))


def _cached(result: Any, count: int, width: int, cache: LruBytes) -> list[bytes] | None:
    """The encoded entries of the page's rows, or None when one is not cached."""
    entries = []
    for row in range(count):
        entry = cache.get(_key(result, row, width))
        if entry is None:
            return None
        entries.append(entry)
    return entries


def _encode(
    kind: Any, conn: AsyncConnection[Any], result: Any, count: int, shape: Shape, cache: LruBytes
) -> list[bytes]:
    """The entries of a full read's rows, encoding (and caching) those not cached."""
    entries = []
    loader = Transformer(conn)
    loader.set_pgresult(result)
    skip = shape.key_width + len(shape.sort_keys) - 1
    extras = list(kind.extra_columns)
    for row in range(count):
        key = _key(result, row, shape.key_width)
        entry = cache.get(key)
        if entry is None:
            values = loader.load_row(row, tuple)
            fields = dict(zip(shape.names, values[skip:], strict=True))
            fields.update(zip(extras, values[2 : shape.key_width], strict=True))
            item = SimpleNamespace(**fields)
            message = kind.to_message(item)
            kind.finish(item, message)
            entry = wire.length_delimited(wire.RESOURCES_FIELD, message.SerializeToString())
            cache.put(key, entry)
        entries.append(entry)
    return entries


def _next_token(conn: AsyncConnection[Any], result: Any, size: int, shape: Shape, fingerprint: str) -> str:
    """The token after the page's last row, when more rows follow it."""
    if result.ntuples <= size:
        return ""
    loader = Transformer(conn)
    loader.set_pgresult(result)
    row = loader.load_row(size - 1, tuple)
    first = shape.key_width
    values = [*row[first : first + len(shape.sort_keys) - 1], row[0]]  # the sort keys end with the id
    keys = [listing._encode(value) for value in values]
    return base64.urlsafe_b64encode(json.dumps({"k": keys, "f": fingerprint}).encode()).decode().rstrip("=")


@lru_cache(maxsize=256)
def _shape(
    kind: Any, filter: str, order: tuple[tuple[str, bool], ...], show_deleted: bool, token: bool, size: int
) -> Shape:
    """Build and compile the scripts of one kind of page: this costs more than running them."""
    spec: listing.ListSpec = kind.list_spec
    model = kind.model
    condition = listing.parse_filter(filter, spec.filter_fields)
    sort_keys = [(spec.order_fields[name], desc) for name, desc in order] + [(listing.Field(spec.id_column), False)]

    live = exists().where(Project.id == bindparam("project"), Project.is_deleted.is_(False))
    where = [model.organization_id == bindparam("organization"), model.project_id == bindparam("project"), live]
    if not show_deleted:
        where.append(model.is_deleted.is_(False))
    if condition is not None:
        where.append(condition)
    if token:
        after: list[Any] = [bindparam(f"after_{i}") for i in range(len(sort_keys))]
        where.append(listing._after(after, sort_keys))
    ordering = [f.column.desc() if desc else f.column.asc() for f, desc in sort_keys]
    extras = list(kind.extra_columns.values())
    keys = [model.id, model.version, *extras, *(f.column for f, _ in sort_keys[:-1])]
    attributes = list(inspect(model).column_attrs)

    def script(columns: list[Any]) -> tuple[str, dict[str, Any]]:
        labelled = [column.label(f"c{i}") for i, column in enumerate(columns)]
        page = select(*labelled).where(*where).order_by(*ordering).limit(size + 1).compile(dialect=DIALECT)
        check = select(live).compile(dialect=DIALECT)
        text = f"BEGIN READ ONLY; SET LOCAL {TENANT_SETTING} = %(tenant)s; {page}; {check}; COMMIT"
        return text, {**check.params, **page.params}

    keys_script, params = script(keys)
    full_script, _ = script(keys + [a.columns[0] for a in attributes])
    for name in ("tenant", "organization", "project", *(f"after_{i}" for i in range(len(sort_keys)))):
        params.pop(name, None)
    return Shape(keys_script, full_script, params, sort_keys, 2 + len(extras), [a.key for a in attributes])
