"""What roles allow. Predefined roles are rules over the permission catalog rather than stored
lists, so a new RPC's permission reaches the right roles the day it is declared."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos_identity.models import Role, User
from hishamos_kit import api
from hishamos_kit.auth import Principal
from hishamos_kit.errors import PermissionDenied
from hishamos_kit.roles import PREDEFINED, granted_by


async def permissions_of(session: AsyncSession, roles: Iterable[str]) -> list[str]:
    """What holding `roles` allows: predefined ones from the catalog, custom ones from the table."""
    return sorted(without_operators(granted_by(roles) | await custom_permissions(session, roles)))


def without_operators(granted: Iterable[str]) -> set[str]:
    return set(granted) - api.operator_permissions()  # even if a role's row were written by hand


def custom_query(roles: Iterable[str]) -> Select[list[str]] | None:
    """What the custom roles among `roles` list (predefined ones list nothing: they are rules)."""
    custom = [r for r in roles if r not in PREDEFINED]
    return select(Role.permissions).where(Role.role_id.in_(custom)) if custom else None


async def custom_permissions(session: AsyncSession, roles: Iterable[str]) -> set[str]:
    query = custom_query(roles)
    rows = await session.scalars(query) if query is not None else ()
    return {p for permissions in rows for p in permissions}


async def unknown_roles(session: AsyncSession, roles: Iterable[str]) -> list[str]:
    """The role ids in `roles` that are neither predefined nor custom roles of this organization. The
    custom ones found stay locked until the transaction ends, as for AssignRole: a DeleteRole cannot
    slip in before the user who is given them is written, and leave them holding a deleted role's id."""
    custom = [r for r in roles if r not in PREDEFINED]
    held = select(Role.role_id).where(Role.role_id.in_(custom)).with_for_update(read=True)
    found = set(await session.scalars(held)) if custom else set()
    return [r for r in custom if r not in found]


async def check_delegation(session: AsyncSession, principal: Principal, roles: Iterable[str]) -> list[str]:
    """A caller grants, takes away or edits only within its own permissions: a manager cannot make
    an admin, nor change an admin's roles, email or state (that would be a way to become one).
    What `roles` hold, for a check that asks more (`check_outranks`)."""
    held = await permissions_of(session, roles)
    check_within(principal, held)
    return held


async def check_acting_for(session: AsyncSession, principal: Principal, owner_name: str, owner_id: uuid.UUID) -> None:
    """Another user's API keys and sessions are looked after by a user manager (`identity.users.update`)
    holding every permission the owner does: a manager does not rescope, throttle or end an admin's."""
    if owner_name == principal.subject:
        return
    if "identity.users.update" not in principal.permissions:
        raise PermissionDenied("only its owner or a user manager may do this", "NOT_OWNER")
    await check_delegation(
        session, principal, await session.scalar(select(User.roles).where(User.id == owner_id)) or ()
    )


def check_outranks(principal: Principal, held: Iterable[str]) -> None:
    """What only a user's superior does to them: beyond `check_delegation` (every permission they
    `held`), the caller holds more. Moving a user's email is one: the account is recovered through it,
    so a peer (one manager, or admin, of another) who moved it could reset the password and sign in as them."""
    if principal.permissions.issubset(held):
        raise PermissionDenied(
            "a user's email is changed by that user or by someone holding permissions beyond theirs: "
            "their account is recovered through it",
            "DELEGATION_DENIED",
        )


def check_within(principal: Principal, permissions: Iterable[str]) -> None:
    """PERMISSION_DENIED unless the caller holds every one of `permissions`."""
    beyond = sorted(set(permissions) - principal.permissions)
    if beyond:
        raise PermissionDenied(
            "this reaches beyond your own permissions ("
            + ", ".join(beyond[:3])
            + ("…" if len(beyond) > 3 else "")
            + ")",
            "DELEGATION_DENIED",
            {"beyond": ",".join(beyond[:10])},
        )
