"""A user's standing now, for identity's own calls.

An access token carries the permissions its user had when it was issued and lives 15 minutes; other
services accept that window. Identity cannot: it is where access is given, and a demoted, deactivated
or deleted user's token would otherwise give it back for good (AssignRole to oneself, ActivateUser,
UndeleteUser, a new account). So identity narrows every user's token to what the user holds now, and
refuses it once the user is gone or the organization suspended.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from hishamos_identity import users
from hishamos_identity.grants import permissions_of
from hishamos_identity.models import Organization, User
from hishamos_kit.auth import Principal
from hishamos_kit.db import Database
from hishamos_kit.errors import PermissionDenied, Unauthenticated


class Standing:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, principal: Principal) -> Principal:
        """The caller's permissions narrowed to what its user's roles hold now; operators and services
        (`operators/…`, `services/…`) are left as they are."""
        if not principal.subject.startswith("organizations/"):
            return principal
        organization_id, user_id = users.PATH.parse(principal.subject, "sub")
        async with self.db.tenant(organization_id) as session:
            query = (
                select(User.state, User.is_deleted, User.roles, Organization.state)
                .join(Organization, Organization.id == User.organization_id)
                .where(User.id == user_id)
            )
            found = (await session.execute(query)).one_or_none()
            if found is None or found[1] or found[0] != "active":
                raise Unauthenticated("this user was deactivated or deleted; ask an admin", "USER_INACTIVE")
            if found[3] != "active":
                raise PermissionDenied("the organization is suspended", "ORGANIZATION_SUSPENDED")
            held = await permissions_of(session, found[2])
        return dataclasses.replace(principal, permissions=principal.permissions.intersection(held))
