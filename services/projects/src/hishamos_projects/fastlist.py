"""List a project's children in one round trip, answered from a cache of their encoded messages.

Through the ORM a page of 50 stories cost five round trips and an ORM entity per row, and building
fifty messages in Python still cost more CPU than the database's whole work. So:

- The page query has the same filter, order and keyset rules as `hishamos_kit.listing.list_page`.
  It is built and compiled once per shape (kind, filter, order, page size, show_deleted, token or
  not) and prepared once per connection; a call sends its own values (organization, project, the
  token's sort keys) as parameters. The tenant setting, the page and the project check travel as
  one pipeline, one transaction, like `Database.read_one`.
- The page query returns only each row's cache key and sort keys. The key is the text of the id,
  the version and the derived figures (`extra_columns`), and a resource's message is a function
  of exactly those: every write that changes a column of the message bumps the version (the ORM's
  version_id_col; raw UPDATEs must bump it too; rank renumbering does not, rank is not in the
  message). So the encoded message is cached under that key: correct across processes because
  the key comes from the database, never invalidated, only aged out (`LruBytes`).
- When a row of the page is not cached, the page is read again with every column (a second round
  trip, only then) and that read alone makes the response, so a page is always one snapshot.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from psycopg import abc
from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Select

from hishamos_kit import listing, wire
from hishamos_kit.db import Database, Prepared, columns_of, in_tenant
from hishamos_kit.errors import NotFound
from hishamos_kit.lru import LruBytes
from hishamos_kit.standard import ListRequest
from hishamos_projects.models import Project

DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined,no-untyped-call]


@dataclass(frozen=True)
class Shape:
    """The statements of one kind of page, and how to read their results."""

    keys: Prepared  # the page's cache keys and sort keys
    full: Prepared  # the same page with every column after those
    check: Prepared  # whether the project is live
    params: dict[str, Any]  # the filter's values
    sort_keys: list[tuple[listing.Field, bool]]
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
    size = listing.page_size_of(request.page_size)
    order = tuple(listing.parse_order_by(request.order_by, spec))
    shape = _shape(kind, request.filter, order, request.show_deleted, bool(request.page_token), size)
    fingerprint = listing.fingerprint_of(spec, request.filter, order, request.parent, request.show_deleted)
    params = {**shape.params, "organization": organization_id, "project": project_id}
    if request.page_token:
        after = listing.read_token(request.page_token, fingerprint, shape.sort_keys)
        params.update({f"after_{i}": value for i, value in enumerate(after)})

    async with db.scripts.connection() as conn:

        async def read(page: Prepared) -> tuple[Any, Any]:
            """The page's and the project check's results."""
            steps = in_tenant(organization_id, (page, params), (shape.check, params))
            _, found, live = await db.scripts.run(conn, steps)
            return found, live

        found, live = await read(shape.keys)
        entries = cache.get_all([found.get_value(row, 0) for row in range(min(found.ntuples, size))])
        if entries is None:  # a row not cached yet: read the page again, whole
            found, live = await read(shape.full)
            entries = _encode(kind, db.scripts.adapter(conn), found, min(found.ntuples, size), shape, cache)
        count = listing.fitting(len(entry) for entry in entries)
        more = count < len(entries) or found.ntuples > size
        token = _token_after(db.scripts.adapter(conn), found, count - 1, shape, fingerprint) if more else ""
    if not _live(live):
        raise NotFound(request.parent)
    return wire.list_response(entries[:count], token)


def _live(result: Any) -> bool:
    return bool(result.get_value(0, 0) == b"t")


def _encode(kind: Any, loader: abc.Transformer, result: Any, count: int, shape: Shape, cache: LruBytes) -> list[bytes]:
    """The entries of a full read's rows, encoding (and caching) those not cached."""
    entries = []
    loader.set_pgresult(result)
    skip = 1 + len(shape.sort_keys)  # the key, the id and the other sort keys
    for row in range(count):
        key = result.get_value(row, 0)
        entry = cache.get(key)
        if entry is None:
            item = SimpleNamespace(**dict(zip(shape.names, loader.load_row(row, tuple)[skip:], strict=True)))
            message = kind.to_message(item)
            kind.finish(item, message)
            entry = wire.length_delimited(wire.RESOURCES_FIELD, message.SerializeToString())
            cache.put(key, entry)
        entries.append(entry)
    return entries


def _token_after(loader: abc.Transformer, result: Any, index: int, shape: Shape, fingerprint: str) -> str:
    """The token that continues after the page's row `index`."""
    loader.set_pgresult(result)
    row = loader.load_row(index, tuple)
    return listing.make_token([*row[2 : 1 + len(shape.sort_keys)], row[1]], fingerprint)  # the id sorts last


@lru_cache(maxsize=256)
def _shape(
    kind: Any, filter: str, order: tuple[tuple[str, bool], ...], show_deleted: bool, token: bool, size: int
) -> Shape:
    """Build and compile the scripts of one kind of page: this costs more than running them."""
    spec: listing.ListSpec = kind.list_spec
    model = kind.model
    condition = listing.parse_filter(filter, spec.filter_fields)
    sort_keys = listing.sort_keys(spec, order)

    live = exists().where(Project.id == bindparam("project"), Project.is_deleted.is_(False))
    where = [model.organization_id == bindparam("organization"), model.project_id == bindparam("project"), live]
    if not show_deleted:
        where.append(model.is_deleted.is_(False))
    if condition is not None:
        where.append(condition)
    if token:
        where.append(listing.after([bindparam(f"after_{i}") for i in range(len(sort_keys))], sort_keys))
    ordering = [f.column.desc() if desc else f.column.asc() for f, desc in sort_keys]
    # What a message is a function of (module docstring), as one text: the cache key.
    key = func.concat_ws(" ", model.id, model.version, *kind.extra_columns.values())
    keys = [key, model.id, *(f.column for f, _ in sort_keys[:-1])]
    mapped = columns_of(model)
    names = [attribute for attribute, _ in mapped] + list(kind.extra_columns)

    def page(columns: list[Any]) -> Select[Any]:
        labelled = [column.label(f"c{i}") for i, column in enumerate(columns)]
        return select(*labelled).where(*where).order_by(*ordering).limit(size + 1)

    full_columns = keys + [column for _, column in mapped] + list(kind.extra_columns.values())
    (keys_page, params), (full_page, _), (check, _) = (
        _statement(query) for query in (page(keys), page(full_columns), select(live))
    )
    for name in ("organization", "project", *(f"after_{i}" for i in range(len(sort_keys)))):
        params.pop(name, None)
    return Shape(keys_page, full_page, check, params, sort_keys, names)


def _statement(query: Select[Any]) -> tuple[Prepared, dict[str, Any]]:
    """`query` as a statement to prepare, and the values it was built with."""
    compiled = query.compile(dialect=DIALECT)
    return Prepared("fastlist", str(compiled)), dict(compiled.params)
