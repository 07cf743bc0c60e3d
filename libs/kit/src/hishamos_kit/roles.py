"""The predefined roles: rules over the permission catalog, which every service knows.

They live here, not in identity, because an access token names a user's predefined roles instead of
listing what they allow: each service expands them against its own catalog (`granted_by`), so a
token's size does not grow with the catalog. Identity lists only what custom roles add.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

from hishamos_kit import api

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
def predefined_permissions(role_id: str) -> frozenset[str]:
    """The role's rule over the catalog, never reaching the operator permissions (admin included)."""
    allowed = PREDEFINED[role_id][2]
    return frozenset(p for p in tenant_permissions() if allowed(p))


@cache
def tenant_permissions() -> list[str]:
    """The catalog less the operator permissions: all that a tenant's role may hold."""
    return [p for p in api.permissions() if p not in api.operator_permissions()]


def granted_by(roles: Iterable[str]) -> frozenset[str]:
    """What the predefined roles among `roles` allow; other role ids (custom roles) add nothing here."""
    return frozenset().union(*(predefined_permissions(r) for r in roles if r in PREDEFINED))
