"""The AIP standard methods for resources that live in a project, directly or below another resource.

The kit's StandardMethods serves resources whose parent is the organization. A project's sprints,
epics, stories, tasks and work logs differ in three ways, handled here: the parent is a project (or
a story, or a task) whose ids are in every name and on every row; a deleted parent hides its
children (they keep their own flags, so an undelete of the parent restores exactly what its delete
hid); and some rules need the database (references to siblings, one active sprint) or forbid a delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import cached_property
from types import SimpleNamespace
from typing import Any, Literal, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos_kit import resources
from hishamos_kit.auth import Principal, require
from hishamos_kit.db import Database, Prepared, columns_of
from hishamos_kit.errors import NotFound, Violations
from hishamos_kit.listing import list_page
from hishamos_kit.lru import LruBytes
from hishamos_kit.resources import IdempotencyKeyColumns, ResourcePath
from hishamos_kit.standard import ListRequest, ResourceType, StandardMethods
from hishamos_kit.wire import Encoded
from hishamos_projects import directory, fastcreate, fastlist
from hishamos_projects.guards import Guard, archived, facts_query, is_member
from hishamos_projects.models import Project, ProjectChild

ENCODED_CACHE_BYTES = 32 << 20  # per kind and process: some 100,000 stories without long descriptions
PROJECT = ResourcePath("organizations/{organization}/projects/{project}")

Child = TypeVar("Child", bound=ProjectChild)
Msg = TypeVar("Msg", bound=Message)
Reply = TypeVar("Reply", bound=Message)
R = TypeVar("R")
Lock = Literal["share", "update"]


class ChildType(ResourceType[Child, Msg]):
    """A ResourceType whose path is `organizations/{organization}/projects/{project}/[…/]<collection>/{id}`."""

    parent_path: ResourcePath = PROJECT
    scope: tuple[str, ...] = ("project_id",)  # the columns holding the name's ids between organization and own
    ancestors: tuple[type[ProjectChild], ...] = ()  # the resources between the project and this one

    user_fields: tuple[str, ...] = ()  # fields naming a user, checked with identity when they change
    member_fields: tuple[str, ...] = ()  # fields naming a user who must be a member of the project
    rolls_up = False  # whether `rollup` adds figures computed from other tables
    # The same figures as correlated subqueries, so that a List reads them with its page (fastlist).
    # fastlist caches a message by the row's id, version and these figures: `to_message` and
    # `finish` may read nothing else, and every write changing a column they read bumps the version.
    extra_columns: Mapping[str, Any] = {}

    def finish(self, row: Any, message: Msg) -> None:
        """Copy `extra_columns` values of a row read by fastlist onto its message."""

    async def rollup(self, session: AsyncSession, rows: list[Child], messages: list[Msg]) -> None:
        """Fill output-only figures derived from other rows (e.g. an epic's progress), one query per page."""

    project_columns: tuple[str, ...] = ()  # columns of the project row that `check_project` reads
    fast_create = True  # single creates go through hishamos_projects.fastcreate (not when before_write writes)

    def guards(self, row: Child, message: Msg, paths: list[str], violations: Violations) -> dict[str, Guard]:
        """References to other rows (a story's epic), as field → (condition the database must confirm,
        violation when it does not). They are evaluated together in the write's transaction."""
        return {}

    def check_project(self, row: Child, project: Any, paths: list[str], violations: Violations) -> None:
        """Rules against the project's `project_columns` (a story's custom fields against its schema)."""

    def before_delete(self, row: Child, name: str) -> None:
        """Raise when the domain forbids deleting `row`."""

    # The project lock a delete or undelete takes: "update" when its before_write changes rows that
    # other writes (holding "share") may be adding to at the same time.
    delete_lock: Lock = "share"


async def live_project(session: AsyncSession, project_id: uuid.UUID, name: str, lock: Lock | None = None) -> Project:
    """The live project, locked when asked; NOT_FOUND (naming `name`) when it is missing or deleted.

    Child writes lock it FOR KEY SHARE (the lock their foreign key takes anyway; a stronger shared
    lock on one hot row makes every concurrent write queue on its multixact) and a project delete
    FOR UPDATE, so a child cannot appear in a project while the project's delete checks that it has none.
    """
    query = select(Project).where(Project.id == project_id, Project.is_deleted.is_(False))
    if lock:
        query = query.with_for_update(read=lock == "share", key_share=lock == "share")
    project = (await session.scalars(query)).one_or_none()
    if project is None:
        raise NotFound(name)
    if lock and not project.is_active:
        raise archived(project_id)
    return project


def own_parent(principal: Principal, path: ResourcePath, parent: str, field: str = "parent") -> tuple[uuid.UUID, ...]:
    """The ids after the organization of a `parent` in the caller's organization; another's is NOT_FOUND."""
    organization_id, *ids = path.parse(parent, field)
    if organization_id != principal.organization_id:
        raise NotFound(parent)
    return tuple(ids)


async def live_parents(
    session: AsyncSession, kind: ChildType[Any, Any], ids: tuple[uuid.UUID, ...], name: str, lock: Lock | None
) -> None:
    """NOT_FOUND (naming `name`) unless the project and every ancestor in `ids` are live and nested as named."""
    await live_project(session, ids[0], name, lock)
    for depth, model in enumerate(kind.ancestors, start=1):
        row = await session.get(model, ids[depth])
        if row is None or row.is_deleted or any(getattr(row, c) != ids[i] for i, c in enumerate(kind.scope[:depth])):
            raise NotFound(name)


class ChildMethods(StandardMethods[Child, Msg]):
    kind: ChildType[Child, Msg]

    def __init__(self, db: Database, kind: ChildType[Child, Msg], keys: type[IdempotencyKeyColumns]) -> None:
        super().__init__(db, kind, keys)
        self.encoded = LruBytes(ENCODED_CACHE_BYTES)  # fastlist's encoded messages
        if kind.fast_create and type(kind).before_write is not ChildType.before_write:
            raise TypeError(f"{type(kind).__name__} writes in before_write, which fastcreate skips: set fast_create")

    def name(self, row: Child) -> str:
        return self.kind.path.format(row.organization_id, *(getattr(row, c) for c in self.kind.scope), row.id)

    def ids(self, principal: Principal, name: str, field: str = "name") -> tuple[tuple[uuid.UUID, ...], uuid.UUID]:
        """(parent ids after the organization, resource id) of a name in the caller's organization."""
        organization_id, *parents, row_id = self.kind.path.parse(name, field)
        if organization_id != principal.organization_id:
            raise NotFound(name)
        return tuple(parents), row_id

    def _in_scope(self, row: Child, parents: tuple[uuid.UUID, ...]) -> bool:
        return all(getattr(row, c) == i for c, i in zip(self.kind.scope, parents, strict=True))

    @cached_property
    def _select_by_id(self) -> tuple[Prepared, list[str]]:
        """By id and project, and only while the project is live, for `Database.read_one`."""
        mapped = columns_of(self.kind.model)
        columns = ", ".join(f'c."{column.name}"' for _, column in mapped)
        table = inspect(self.kind.model).local_table.name
        query = Prepared(
            f"get_{table}",
            f'SELECT {columns} FROM "{table}" c JOIN projects p ON p.id = c.project_id '
            "WHERE c.id = %s AND c.project_id = %s AND NOT p.is_deleted",
        )
        return query, [attribute for attribute, _ in mapped]

    async def _load(
        self, session: AsyncSession, principal: Principal, name: str, field: str = "name", lock: Lock | None = None
    ) -> Child:
        """The row named `name` under live parents. Writes pass `lock`, which also refuses an archived
        project; reads take none, so an archived project's work stays readable."""
        parents, row_id = self.ids(principal, name, field)
        await live_parents(session, self.kind, parents, name, lock)
        # A write holds the row (see StandardMethods._load_for_write); reads take no lock.
        row = await session.get(self.kind.model, row_id, with_for_update={"key_share": True} if lock else None)
        if row is None or not self._in_scope(row, parents):
            raise NotFound(name)
        return row

    async def prepare(self, row: Child, message: Msg, paths: list[str], violations: Violations) -> dict[str, Guard]:
        """The checks of a write that need no database: the fields themselves, then users with
        identity. Returns the guards the database must confirm, with the member fields' among them."""
        before = {field: getattr(row, field) for field in (*self.kind.user_fields, *self.kind.member_fields)}
        self.kind.apply(row, message, paths, violations)
        # Only a user being set is checked: one deactivated since must not block every other edit.
        # Whether a user is active, or a member, is asked here with the service's own rights; a caller
        # who may not read users, or the team, must not learn it from the answer.
        for field in self.kind.user_fields:
            if field in paths and (user := getattr(row, field)) and user != before[field]:
                require("identity.users.get", f"naming a user in {self.kind.field}.{field} checks them, so setting it")
                await directory.current().check_user(violations, f"{self.kind.field}.{field}", user)
        guards = self.kind.guards(row, message, paths, violations)
        for field in self.kind.member_fields:  # a member removed later stays on the work they had
            new, name = getattr(row, field), f"{self.kind.field}.{field}"
            if field in paths and new and new != before[field] and name not in violations.items:
                require("projects.members.list", f"{name} must name a member, so setting it")
                guards[name] = is_member(row, new)
        return guards

    def judge(
        self, row: Child, paths: list[str], guards: dict[str, Guard], facts: Sequence[Any], violations: Violations
    ) -> None:
        """Violations from what the database answered: the project columns, then one boolean per guard."""
        project = SimpleNamespace(**dict(zip(self.kind.project_columns, facts, strict=False)))
        for (field, guard), holds in zip(guards.items(), facts[len(self.kind.project_columns) :], strict=True):
            if not holds:
                violations.add(field, guard.problem)
        self.kind.check_project(row, project, paths, violations)

    async def _validate(
        self, session: AsyncSession, row: Child, message: Msg, paths: list[str], violations: Violations
    ) -> None:
        """Everything a write through the ORM checks, the database's part in one statement."""
        guards = await self.prepare(row, message, paths, violations)
        if guards or self.kind.project_columns:
            sql, params = facts_query(self.kind, row.project_id, guards.values())
            facts = (await (await session.connection()).exec_driver_sql(sql, params)).one()
            self.judge(row, paths, guards, facts[2:], violations)  # after the version and is_active

    async def _apply(self, session: AsyncSession, row: Child, message: Msg, paths: list[str]) -> None:
        violations = Violations()
        await self._validate(session, row, message, paths, violations)
        violations.raise_if_any()

    async def _insert(
        self,
        session: AsyncSession,
        principal: Principal,
        parents: tuple[uuid.UUID, ...],
        messages: list[Msg],
        batch: bool,
    ) -> list[Msg]:
        """Validate every message (a batch reports every violation as `requests[i].<field>`), then insert all."""
        rows: list[Child] = []
        problems = Violations()
        for i, message in enumerate(messages):
            row = self.kind.model()
            row.id, row.organization_id = uuid.uuid4(), principal.organization_id
            for column, value in zip(self.kind.scope, parents, strict=True):
                setattr(row, column, value)
            violations = Violations()
            await self._validate(session, row, message, sorted(self.kind.updatable), violations)
            prefix = f"requests[{i}]." if batch else ""
            problems.merge(violations, prefix)
            self.kind.on_create(row, message)
            rows.append(row)
        problems.raise_if_any()
        for row in rows:
            await self.kind.before_write(session, row, "create")
        session.add_all(rows)
        await self._flush(session, self.kind.field)
        return [self.kind.to_message(row) for row in rows]  # nothing rolls up to a resource just made

    async def _create(
        self,
        principal: Principal,
        parent: str,
        messages: list[Msg],
        request_id: str,
        method: str,
        response: type[Reply],
        reply: Callable[[list[Msg]], Reply],
        batch: bool,
    ) -> Reply:
        parents = own_parent(principal, self.kind.parent_path, parent)
        request_id = resources.request_key(request_id)
        organization_id = principal.organization_id

        async def insert(session: AsyncSession) -> Reply:
            await live_parents(session, self.kind, parents, parent, "share")
            return reply(await self._insert(session, principal, parents, messages, batch))

        async with self.db.tenant(organization_id) as session:
            method = resources.keyed_method(method, parents)
            return await resources.once(
                session, self.keys, organization_id, method, request_id, response, lambda: insert(session)
            )

    async def create(self, principal: Principal, parent: str, message: Msg, request_id: str) -> Msg:
        if self.kind.fast_create:
            parents = own_parent(principal, self.kind.parent_path, parent)
            request_id = resources.request_key(request_id)
            made: Msg = await fastcreate.create(self, principal, parent, parents, message, request_id)
            return made
        method = f"Create{type(message).__name__}"
        return await self._create(
            principal, parent, [message], request_id, method, self.kind.message, lambda made: made[0], batch=False
        )

    async def create_many(
        self,
        principal: Principal,
        parent: str,
        messages: list[Msg],
        request_id: str,
        response: type[Reply],
        reply: Callable[[list[Msg]], Reply],
    ) -> Reply:
        """AIP-233: all or nothing, in one transaction; `reply` wraps the created resources."""
        return await self._create(
            principal,
            parent,
            messages,
            request_id,
            f"BatchCreate{self.kind.message.__name__}",
            response,
            reply,
            batch=True,
        )

    async def present(self, session: AsyncSession, rows: list[Child]) -> list[Msg]:
        """The messages of `rows`, with their rolled-up figures."""
        messages = [self.kind.to_message(row) for row in rows]
        if self.kind.rolls_up and rows:
            await self.kind.rollup(session, rows, messages)
        return messages

    async def get(self, principal: Principal, name: str) -> Msg:
        if self.kind.rolls_up or self.kind.ancestors:
            async with self.db.tenant(principal.organization_id) as session:
                return (await self.present(session, [await self._load(session, principal, name)]))[0]
        (project_id,), row_id = self.ids(principal, name)
        query, names = self._select_by_id
        row = await self.db.read_one(principal.organization_id, query, names, row_id, project_id)
        if row is None:
            raise NotFound(name)
        return self.kind.to_message(row)  # type: ignore[arg-type]  # the row has the model's attributes

    @cached_property
    def fast(self) -> bool:
        """Whether fastlist answers this kind's List: a project's direct children whose derived figures
        are columns (`extra_columns`)."""
        return not self.kind.ancestors and (bool(self.kind.extra_columns) or not self.kind.rolls_up)

    async def list_response(
        self, principal: Principal, request: ListRequest, page: Callable[[Sequence[Msg], str], Message]
    ) -> Message | Encoded:
        if not self.fast:
            return await super().list_response(principal, request, page)
        (project_id,) = own_parent(principal, self.kind.parent_path, request.parent)
        return await fastlist.list_children(
            self.db, self.kind, principal.organization_id, project_id, request, self.encoded
        )

    async def list(self, principal: Principal, request: ListRequest) -> tuple[list[Msg], str]:
        """A page through the ORM, for any kind (the List RPC of a `fast` kind goes through fastlist)."""
        parents = own_parent(principal, self.kind.parent_path, request.parent)
        model = self.kind.model
        query = select(model).where(
            model.organization_id == principal.organization_id,
            *(getattr(model, c) == i for c, i in zip(self.kind.scope, parents, strict=True)),
        )
        if not request.show_deleted:
            query = query.where(model.is_deleted.is_(False))
        async with self.db.tenant(principal.organization_id) as session:
            await live_parents(session, self.kind, parents, request.parent, None)
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
            return page.fit(await self.present(session, page.rows))

    async def update(self, principal: Principal, message: Msg, mask: FieldMask) -> Msg:
        given: Any = message  # every resource message has name and etag
        field = self.kind.field
        self.ids(principal, given.name, f"{field}.name")
        paths = resources.update_paths(mask, message, self.kind.updatable, field)

        async def change(session: AsyncSession, row: Child) -> None:
            await self._apply(session, row, message, paths)
            await self.kind.before_write(session, row, "update")

        return await self.act(principal, given.name, given.etag, change, field=f"{field}.name")

    async def read(self, principal: Principal, name: str, compute: Callable[[AsyncSession, Child], Awaitable[R]]) -> R:
        """A read-only view computed from a live resource (boards, burndown), in one transaction."""
        async with self.db.tenant(principal.organization_id) as session:
            row = await self._load(session, principal, name)
            if row.is_deleted:
                raise NotFound(name)
            return await compute(session, row)

    async def act(
        self,
        principal: Principal,
        name: str,
        etag: str,
        change: Callable[[AsyncSession, Child], Awaitable[None]],
        *,
        field: str = "name",
        lock: Lock = "share",
    ) -> Msg:
        """Change a live resource in one transaction: the shape of Update and of custom methods (AIP-136).

        `lock="update"` serialises the change with every other one in the project (rank moves,
        starting a sprint) by locking the project row.
        """
        async with self.db.tenant(principal.organization_id) as session:
            row = await self._load(session, principal, name, field, lock)
            if row.is_deleted:
                raise NotFound(name)
            resources.check_etag(row, etag, name)
            await change(session, row)
            await self._flush(session, name)
            return (await self.present(session, [row]))[0]

    async def _set_deleted(self, principal: Principal, name: str, etag: str, *, deleted: bool) -> Msg:
        async with self.db.tenant(principal.organization_id) as session:
            row = await self._load(session, principal, name, lock=self.kind.delete_lock)
            if deleted:  # a deleted one is NOT_FOUND, a live one to undelete ALREADY_EXISTS, whatever the etag
                resources.soft_delete(row, name)
                resources.check_etag(row, etag, name)
                self.kind.before_delete(row, name)
            else:
                resources.undelete(row, name)
                resources.check_etag(row, etag, name)
            await self.kind.before_write(session, row, "delete" if deleted else "undelete")
            await self._flush(session, name)
            return (await self.present(session, [row]))[0]
