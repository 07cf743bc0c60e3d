"""Roles: the predefined four, custom roles per organization, and who holds which."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Literal

from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import any_, delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.identity.v1 import role_pb2 as pb
from hishamos_identity import audit, users
from hishamos_identity.grants import check_delegation, check_within
from hishamos_identity.models import IdempotencyKey, Role, User
from hishamos_kit import api, resources, validate
from hishamos_kit.auth import Principal
from hishamos_kit.db import Database
from hishamos_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Violations
from hishamos_kit.listing import Field, ListSpec, fingerprint_of, make_token, page_size_of, read_token
from hishamos_kit.roles import PREDEFINED, predefined_permissions

ROLE_NAME = re.compile(r"^organizations/(?P<org>[^/]+)/roles/(?P<role>[a-z0-9-]+)\Z")


def role_name(organization_id: uuid.UUID, role_id: str) -> str:
    return f"organizations/{organization_id}/roles/{role_id}"


def parse_role(principal: Principal, name: str, field: str) -> str:
    match = ROLE_NAME.match(name)
    if match is None:
        raise InvalidArgument({field: "must be a role name like `organizations/{organization}/roles/{role}`"})
    # The organization segment is a UUID as in every other name, in whatever spelling.
    (organization_id,) = resources.ORGANIZATION.parse(f"organizations/{match['org']}", field)
    if organization_id != principal.organization_id:
        raise NotFound(name)
    return match["role"]


def predefined_message(organization_id: uuid.UUID, role_id: str) -> pb.Role:
    display, description, _ = PREDEFINED[role_id]
    return pb.Role(
        name=role_name(organization_id, role_id),
        display_name=display,
        description=description,
        permissions=sorted(predefined_permissions(role_id)),
        predefined=True,
        etag="predefined",
    )


def to_message(role: Role) -> pb.Role:
    return pb.Role(
        name=role_name(role.organization_id, role.role_id),
        display_name=role.display_name,
        description=role.description,
        permissions=sorted(role.permissions),
        create_time=resources.timestamp(role.created_at),
        update_time=resources.timestamp(role.updated_at),
        etag=resources.etag(role),
    )


def _apply(role: Role, message: pb.Role, paths: Iterable[str], v: Violations) -> None:
    for path in paths:
        field = f"role.{path}"
        if path == "display_name":
            role.display_name = validate.text(v, field, message.display_name, required=True)
        elif path == "description":
            role.description = validate.text(v, field, message.description, max_length=2000)
        elif path == "permissions":
            catalog = set(api.permissions())
            if not message.permissions:
                v.add(field, "must grant at least one permission")
            for i, permission in enumerate(message.permissions):
                if permission not in catalog:
                    v.add(f"{field}[{i}]", f"`{permission}` is not a permission; see RoleService.ListPermissions")
                elif permission in api.operator_permissions():
                    v.add(f"{field}[{i}]", f"`{permission}` belongs to platform operators; no role can hold it")
            role.permissions = sorted(set(message.permissions))


UPDATABLE = frozenset({"display_name", "description", "permissions"})
LIST = ListSpec(filter_fields={}, order_fields={}, default_order="", id_column=Role.role_id)
_KEY = [(Field(Role.role_id), False)]


class Roles:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, principal: Principal, name: str) -> pb.Role:
        role_id = parse_role(principal, name, "name")
        if role_id in PREDEFINED:
            return predefined_message(principal.organization_id, role_id)
        async with self.db.tenant(principal.organization_id) as session:
            return to_message(await self._custom(session, role_id, name))

    async def _custom(
        self, session: AsyncSession, role_id: str, name: str, lock: Literal["share", "update"] | None = None
    ) -> Role:
        query = select(Role).where(Role.role_id == role_id)
        if lock is not None:
            query = query.with_for_update(read=lock == "share")
        role = await session.scalar(query)
        if role is None:
            raise NotFound(name)
        return role

    async def list(self, principal: Principal, request: pb.ListRolesRequest) -> pb.ListRolesResponse:
        """Predefined roles, then custom ones by id: the token holds the last id listed (ids are
        unique across both, since a custom role cannot take a predefined id)."""
        organization_id = resources.own_parent(principal, request.parent)
        size = page_size_of(request.page_size)
        fingerprint = fingerprint_of(LIST, request.parent)
        last = read_token(request.page_token, fingerprint, _KEY)[0] if request.page_token else None
        order = list(PREDEFINED)
        following = order if last is None else order[order.index(last) + 1 :] if last in PREDEFINED else []
        listed = [(r, predefined_message(organization_id, r)) for r in following[: size + 1]]
        if len(listed) <= size:
            query = select(Role).order_by(Role.role_id).limit(size + 1 - len(listed))
            if last is not None and last not in PREDEFINED:
                query = query.where(Role.role_id > last)
            async with self.db.tenant(organization_id) as session:
                listed += [(r.role_id, to_message(r)) for r in await session.scalars(query)]
        token = make_token([listed[size - 1][0]], fingerprint) if len(listed) > size else ""
        return pb.ListRolesResponse(roles=[m for _, m in listed[:size]], next_page_token=token)

    async def create(self, principal: Principal, request: pb.CreateRoleRequest) -> pb.CreateRoleResponse:
        organization_id = resources.own_parent(principal, request.parent)
        role_id = request.role_id
        v = Violations()
        validate.slug(v, "role_id", role_id)
        if role_id in PREDEFINED:
            v.add("role_id", "is a predefined role's id")
        role = Role(id=uuid.uuid4(), organization_id=organization_id, role_id=role_id)
        _apply(role, request.role, sorted(UPDATABLE), v)
        v.raise_if_any()
        check_within(principal, role.permissions)  # else a role would be a way to gain permissions
        name = role_name(organization_id, role_id)

        async def insert(session: AsyncSession) -> pb.CreateRoleResponse:
            session.add(role)
            try:
                await session.flush()
            except IntegrityError:
                raise AlreadyExists(f"role {role_id} exists", "ALREADY_EXISTS", {"field": "role_id"}) from None
            audit.record(session, organization_id, "role.created", principal.subject, name)
            return pb.CreateRoleResponse(role=to_message(role))

        async with self.db.tenant(organization_id) as session:
            return await resources.once(
                session,
                IdempotencyKey,
                organization_id,
                "CreateRole",
                request.request_id,
                pb.CreateRoleResponse,
                lambda: insert(session),
            )

    async def update(self, principal: Principal, message: pb.Role, mask: FieldMask) -> pb.Role:
        role_id = parse_role(principal, message.name, "role.name")
        if role_id in PREDEFINED:
            raise FailedPrecondition(f"{role_id} is predefined and cannot change", "ROLE_PREDEFINED")
        paths = resources.update_paths(mask, message, UPDATABLE, "role")
        async with self.db.tenant(principal.organization_id) as session:
            role = await self._custom(session, role_id, message.name, lock="update")
            resources.check_etag(role, message.etag, message.name)
            before = role.permissions
            v = Violations()
            _apply(role, message, paths, v)
            v.raise_if_any()
            if "permissions" in paths:  # what it gives and what it takes away
                check_within(principal, [*before, *role.permissions])
            await session.flush()
            audit.record(
                session, principal.organization_id, "role.updated", principal.subject, message.name, fields=paths
            )
            return to_message(role)

    async def delete(self, principal: Principal, name: str, etag: str = "") -> None:
        role_id = parse_role(principal, name, "name")
        if role_id in PREDEFINED:
            raise FailedPrecondition(f"{role_id} is predefined and cannot be deleted", "ROLE_PREDEFINED")
        async with self.db.tenant(principal.organization_id) as session:
            # Locked: an assignment waiting on the role then finds it gone instead of granting it.
            role = await self._custom(session, role_id, name, lock="update")
            resources.check_etag(role, etag, name)
            check_within(principal, role.permissions)  # taking powers away is within one's own too
            await session.execute(delete(Role).where(Role.id == role.id))
            await session.execute(
                update(User)
                .where(literal(role_id) == any_(User.roles))
                .values(users.edited(roles=func.array_remove(User.roles, role_id)))
            )
            audit.record(session, principal.organization_id, "role.deleted", principal.subject, name)

    async def assign(self, principal: Principal, user_name: str, role: str, *, grant: bool) -> users.UserMessage:
        v = Violations()
        v.check(bool(user_name), "user", "is required")
        v.check(bool(role), "role", "is required")
        v.raise_if_any()
        user_id = resources.own_name(principal, users.PATH, user_name, "user")
        role_id = parse_role(principal, role, "role")
        async with self.db.tenant(principal.organization_id) as session:
            if role_id not in PREDEFINED:  # held until the grant commits, so no delete slips between
                await self._custom(session, role_id, role, lock="share")
            user = await users.live_user(session, user_id, user_name, lock=True)
            await check_delegation(session, principal, [role_id, *user.roles])
            if grant == (role_id in user.roles):  # held already, or not held: nothing changes, nothing to record
                return users.to_message(user)
            if grant:
                user.roles = [*user.roles, role_id]
            else:
                await users.keep_an_admin(session, user, role_id)
                user.roles = [r for r in user.roles if r != role_id]
            await session.flush()
            action = "role.assigned" if grant else "role.unassigned"
            audit.record(session, principal.organization_id, action, principal.subject, user_name, role=role_id)
            return users.to_message(user)
