"""What roles allow. Predefined roles are rules over the permission catalog rather than stored
lists, so a new RPC's permission reaches the right roles the day it is declared."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos_identity.models import Role
from hishamos_kit import api
from hishamos_kit.auth import Principal
from hishamos_kit.errors import PermissionDenied

WORK = {"agents", "projects", "knowledge"}  # contexts where the team's work lives
READ = {"get", "list"}
SELF_SERVICE = {"identity.self.update", "identity.sessions.revoke"}  # what everyone does for themselves


def _parts(permission: str) -> tuple[str, str, str]:
    context, resource, verb = permission.split(".")
    return context, resource, verb


def _viewer(p: str) -> bool:
    _, resource, verb = _parts(p)
    return (verb in READ and resource not in ("audit",)) or p in SELF_SERVICE


def _developer(p: str) -> bool:
    context, resource, verb = _parts(p)
    return _viewer(p) or (context in WORK and verb not in ("delete", "archive")) or resource == "api_keys"


def _manager(p: str) -> bool:
    context, resource, _ = _parts(p)
    return _developer(p) or context in WORK or resource == "users" or p == "identity.roles.assign"


PREDEFINED: dict[str, tuple[str, str, Callable[[str], bool]]] = {
    "admin": ("Admin", "Everything, including the organization, roles, API keys and the audit log.", lambda p: True),
    "manager": ("Manager", "Runs the work and the team: all work resources, users and role grants.", _manager),
    "developer": (
        "Developer",
        "Reads everything, creates and edits work; deletes and archives nothing.",
        _developer,
    ),
    "viewer": ("Viewer", "Reads everything but the audit log; changes only their own password.", _viewer),
}


@cache
def predefined_permissions(role_id: str) -> list[str]:
    """The role's rule over the catalog, never reaching the operator permissions (admin included)."""
    allowed = PREDEFINED[role_id][2]
    return [p for p in tenant_permissions() if allowed(p)]


@cache
def tenant_permissions() -> list[str]:
    """The catalog less the operator permissions: all that a tenant's role may hold."""
    return [p for p in api.permissions() if p not in api.operator_permissions()]


async def permissions_of(session: AsyncSession, roles: Iterable[str]) -> list[str]:
    """What holding `roles` allows: predefined ones from the catalog, custom ones from the table."""
    custom = [r for r in roles if r not in PREDEFINED]
    rows = await session.scalars(select(Role.permissions).where(Role.role_id.in_(custom))) if custom else ()
    return combined(roles, rows)


def combined(roles: Iterable[str], custom: Iterable[Iterable[str]]) -> list[str]:
    """The permissions of the predefined roles among `roles` and of the custom roles' lists `custom`."""
    granted: set[str] = set()
    for role in roles:
        if role in PREDEFINED:
            granted.update(predefined_permissions(role))
    for permissions in custom:
        granted.update(permissions)
    return sorted(granted - api.operator_permissions())  # even if a row were written by hand


async def unknown_roles(session: AsyncSession, roles: Iterable[str]) -> list[str]:
    """The role ids in `roles` that are neither predefined nor custom roles of this organization."""
    custom = [r for r in roles if r not in PREDEFINED]
    found = set(await session.scalars(select(Role.role_id).where(Role.role_id.in_(custom)))) if custom else set()
    return [r for r in custom if r not in found]


async def check_delegation(session: AsyncSession, principal: Principal, roles: Iterable[str]) -> None:
    """A caller grants, takes away or edits only within its own permissions: a manager cannot make
    an admin, nor change an admin's roles, email or state (that would be a way to become one)."""
    check_within(principal, await permissions_of(session, roles))


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
