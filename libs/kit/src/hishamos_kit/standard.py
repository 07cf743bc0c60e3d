"""The AIP standard methods (Create, Get, List, Update, Delete, Undelete) of a tenant resource.

A service describes a resource once (its table, name pattern, list fields and how proto fields map
to columns); these methods then hold every cross-cutting rule: tenancy, request ids, field masks,
etags, soft delete, uniqueness errors and paging.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from hishamos_kit import resources
from hishamos_kit.auth import Principal
from hishamos_kit.db import Database, Prepared, TenantResource, columns_of, violated_constraint
from hishamos_kit.errors import Aborted, AlreadyExists, NotFound, Violations
from hishamos_kit.listing import ListSpec, list_page
from hishamos_kit.resources import IdempotencyKeyColumns, ResourcePath
from hishamos_kit.wire import Encoded

Row = TypeVar("Row", bound=TenantResource)
Msg = TypeVar("Msg", bound=Message)


class ListRequest(Protocol):
    parent: str
    page_size: int
    page_token: str
    filter: str
    order_by: str
    show_deleted: bool


class ResourceType(ABC, Generic[Row, Msg]):
    """How one resource maps between its table and its message. Subclasses set the attributes."""

    model: type[Row]
    message: type[Msg]
    field: str  # the request field that carries it, e.g. "project"
    path: ResourcePath
    list_spec: ListSpec
    updatable: frozenset[str]
    unique: Mapping[str, str] = {}  # constraint name → field it protects

    @abstractmethod
    def to_message(self, row: Row) -> Msg: ...

    @abstractmethod
    def apply(self, row: Row, message: Msg, paths: list[str], violations: Violations) -> None:
        """Validate `paths` of `message` into `violations` and copy them onto `row`."""

    def on_create(self, row: Row, message: Msg) -> None:
        """Defaults for fields a create may leave unset."""

    async def before_write(self, session: AsyncSession, row: Row, action: str) -> None:
        """Rules that need the database (quotas, cascades), inside the write's own transaction.

        `action` is create, update, delete or undelete.
        """


class StandardMethods(Generic[Row, Msg]):
    def __init__(self, db: Database, kind: ResourceType[Row, Msg], keys: type[IdempotencyKeyColumns]) -> None:
        self.db = db
        self.kind = kind
        self.keys = keys

    @cached_property
    def _select_by_id(self) -> tuple[Prepared, list[str]]:
        """SELECT of every column by id, and the model attribute of each, for `Database.read_one`."""
        mapped = columns_of(self.kind.model)
        columns = ", ".join(f'"{column.name}"' for _, column in mapped)
        table = inspect(self.kind.model).local_table.name
        query = Prepared(f"get_{table}", f'SELECT {columns} FROM "{table}" WHERE id = %s')
        return query, [attribute for attribute, _ in mapped]

    def name(self, row: Row) -> str:
        return self.kind.path.format(row.organization_id, row.id)

    async def _load_for_write(self, session: AsyncSession, principal: Principal, name: str, field: str = "name") -> Row:
        """The row, held until the transaction ends: a write without an etag then applies to the row as
        the write before it left it (AIP-154: the last one wins), where reading it unlocked made it fail
        ABORTED whenever another write came between. FOR NO KEY UPDATE, as the UPDATE itself locks: it
        leaves alone the key-share locks that writes of the row's children take on it."""
        row_id = resources.own_name(principal, self.kind.path, name, field)
        row = await session.get(self.kind.model, row_id, with_for_update={"key_share": True})
        if row is None:
            raise NotFound(name)
        return row

    def duplicate(self, constraint: str | None) -> AlreadyExists | None:
        """The error for a broken unique constraint of `kind.unique`; None for any other constraint."""
        field = self.kind.unique.get(constraint or "")
        if field is None:
            return None
        return AlreadyExists(
            f"another {self.kind.field} already has this {field.rsplit('.', 1)[-1]}", "ALREADY_EXISTS", {"field": field}
        )

    async def _flush(self, session: AsyncSession, name: str) -> None:
        try:
            await session.flush()
        except IntegrityError as exc:
            duplicate = self.duplicate(violated_constraint(exc))
            if duplicate is None:
                raise
            raise duplicate from None
        except StaleDataError:
            raise Aborted(f"{name} changed concurrently; get it again and retry", "CONCURRENT_UPDATE") from None

    async def create(self, principal: Principal, parent: str, message: Msg, request_id: str) -> Msg:
        organization_id = resources.own_parent(principal, parent)
        request_id = resources.request_key(request_id)
        row = self.kind.model()
        row.id, row.organization_id = uuid.uuid4(), organization_id
        violations = Violations()
        self.kind.apply(row, message, sorted(self.kind.updatable), violations)
        violations.raise_if_any()
        self.kind.on_create(row, message)

        async def insert(session: AsyncSession) -> Msg:
            await self.kind.before_write(session, row, "create")
            session.add(row)
            await self._flush(session, self.kind.field)
            return self.kind.to_message(row)

        async with self.db.tenant(organization_id) as session:
            return await resources.once(
                session,
                self.keys,
                organization_id,
                f"Create{type(message).__name__}",
                request_id,
                self.kind.message,
                lambda: insert(session),
            )

    async def get(self, principal: Principal, name: str) -> Msg:
        row_id = resources.own_name(principal, self.kind.path, name)
        query, names = self._select_by_id
        row = await self.db.read_one(principal.organization_id, query, names, row_id)
        if row is None:
            raise NotFound(name)
        return self.kind.to_message(row)  # type: ignore[arg-type]  # the row has the model's attributes

    async def list(self, principal: Principal, request: ListRequest) -> tuple[list[Msg], str]:
        organization_id = resources.own_parent(principal, request.parent)
        model = self.kind.model
        query = select(model).where(model.organization_id == organization_id)
        if not request.show_deleted:
            query = query.where(model.is_deleted.is_(False))
        async with self.db.tenant(organization_id) as session:
            page = await list_page(
                session,
                self.kind.list_spec,
                query,
                page_size=request.page_size,
                page_token=request.page_token,
                filter=request.filter,
                order_by=request.order_by,
                scope=(request.parent, request.show_deleted),
            )
        return page.fit(self.kind.to_message(row) for row in page.rows)

    async def list_response(
        self, principal: Principal, request: ListRequest, page: Callable[[Sequence[Msg], str], Message]
    ) -> Message | Encoded:
        """The List response: `page` of what `list` finds. A subclass may instead answer with
        resources it encoded earlier (`hishamos_kit.wire`)."""
        return page(*await self.list(principal, request))

    async def update(self, principal: Principal, message: Msg, mask: FieldMask) -> Msg:
        given: Any = message  # every resource message has name and etag
        name: str = given.name
        field = self.kind.field
        resources.own_name(principal, self.kind.path, name, f"{field}.name")
        paths = resources.update_paths(mask, message, self.kind.updatable, field)
        async with self.db.tenant(principal.organization_id) as session:
            row = await self._load_for_write(session, principal, name, f"{field}.name")
            if row.is_deleted:
                raise NotFound(name)
            resources.check_etag(row, given.etag, name)
            violations = Violations()
            self.kind.apply(row, message, paths, violations)
            violations.raise_if_any()
            await self.kind.before_write(session, row, "update")
            await self._flush(session, name)
            return self.kind.to_message(row)

    async def delete(self, principal: Principal, name: str, etag: str) -> Msg:
        return await self._set_deleted(principal, name, etag, deleted=True)

    async def undelete(self, principal: Principal, name: str, etag: str) -> Msg:
        return await self._set_deleted(principal, name, etag, deleted=False)

    async def _set_deleted(self, principal: Principal, name: str, etag: str, *, deleted: bool) -> Msg:
        async with self.db.tenant(principal.organization_id) as session:
            row = await self._load_for_write(session, principal, name)
            # Deleting a deleted one is NOT_FOUND, undeleting a live one ALREADY_EXISTS, whatever the etag.
            (resources.soft_delete if deleted else resources.undelete)(row, name)
            resources.check_etag(row, etag, name)
            await self.kind.before_write(session, row, "delete" if deleted else "undelete")
            await self._flush(session, name)
            return self.kind.to_message(row)


def base_fields(row: TenantResource) -> dict[str, Any]:
    """The message fields every resource has, from its base columns."""
    return {
        "create_time": resources.timestamp(row.created_at),
        "update_time": resources.timestamp(row.updated_at),
        "delete_time": resources.timestamp(row.deleted_at),
        "etag": resources.etag(row),
    }
