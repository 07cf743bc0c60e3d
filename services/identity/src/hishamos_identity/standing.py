"""A user's standing now, for identity's own calls.

An access token carries the permissions its user had when it was issued and lives 15 minutes; other
services accept that window. Identity cannot: it is where access is given, and a demoted, deactivated
or deleted user's token would otherwise give it back for good (AssignRole to oneself, ActivateUser,
UndeleteUser, a new account). So identity narrows every user's token to what the user holds now, and
refuses it once the user is gone or the organization suspended.

That check runs before the handler, in a transaction of its own; a deactivation committed between it
and the handler's write would not stop the write. So a user's write checks again, in its own
transaction, at its first statement that writes, holding the user's row and their custom roles' rows
FOR KEY SHARE until it commits. What takes a user's standing away locks those rows FOR UPDATE (or
deletes them): DeactivateUser, DeleteUser, UnassignRole, UpdateRole, DeleteRole. It either came first
and refuses the write, or waits for it. Edits of the user that take nothing away (UpdateUser, another
admin's writes on them) lock FOR NO KEY UPDATE, which KEY SHARE does not block: a FOR SHARE here made two
admins editing each other deadlock. Two admins deactivating each other at once still do; PostgreSQL
ends one after a second (ABORTED), and sent again it finds its caller gone. A suspension does not wait
for writes under way: the organization's row stays unlocked, as every write would otherwise hold it.
"""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import Exists, Row, event, exists, select, true
from sqlalchemy.orm import ORMExecuteState, Session

from hishamos_identity import users
from hishamos_identity.grants import custom_query, permissions_of, without_operators
from hishamos_identity.models import LIVE_REFRESH_TOKEN, Organization, RefreshToken, User
from hishamos_kit.auth import Principal, principal_var
from hishamos_kit.db import Database
from hishamos_kit.errors import Aborted, PermissionDenied, Unauthenticated
from hishamos_kit.roles import granted_by

STANDING = select(User.state, User.is_deleted, User.roles, Organization.state).join(
    Organization, Organization.id == User.organization_id
)
CHECKED = "standing_checked"  # session.info: the transaction whose writes were checked


class Standing:
    def __init__(self, db: Database) -> None:
        self.db = db
        event.listen(db.sync_sessions, "before_flush", lambda session, *_: _check_writer(session))
        event.listen(db.sync_sessions, "do_orm_execute", _on_execute)

    async def __call__(self, principal: Principal) -> Principal:
        """The caller's permissions narrowed to what its user's roles hold now; operators and services
        (`operators/…`, `services/…`) are left as they are."""
        user_id = users.user_id_of(principal)
        if user_id is None:
            return principal
        # The token's session is asked in the same round trip (a key's or a session-less token's is none).
        live = true() if principal.session is None else live_session(user_id, principal.session)
        async with self.db.tenant(principal.organization_id) as session:
            found = (await session.execute(STANDING.add_columns(live).where(User.id == user_id))).one_or_none()
            roles = _standing(found)
            if found is not None and not found[4]:
                raise Unauthenticated("this session has ended; log in again", "SESSION_ENDED")
            held = await permissions_of(session, roles)
        return dataclasses.replace(principal, permissions=principal.permissions.intersection(held))


def live_session(user_id: uuid.UUID, session: uuid.UUID) -> Exists:
    """Whether the sign-in a token came from still goes on: a token of a session ended by Logout,
    RevokeSession, a password change or a stolen refresh token's reuse gets nothing more from identity,
    the service that gives access, though other services take it until it expires (15 minutes)."""
    return exists().where(RefreshToken.user_id == user_id, RefreshToken.family_id == session, LIVE_REFRESH_TOKEN)


def _standing(found: Row[str, bool, list[str], str] | None) -> list[str]:
    """The user's roles, when the user and the organization may still act."""
    if found is None or found[1] or found[0] != "active":
        raise Unauthenticated("this user was deactivated or deleted; ask an admin", "USER_INACTIVE")
    if found[3] != "active":
        raise PermissionDenied("the organization is suspended", "ORGANIZATION_SUSPENDED")
    return found[2]


def _on_execute(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        _check_writer(state.session)


def _check_writer(session: Session) -> None:
    """At a transaction's first write, on behalf of a user: the user still as the call was authorized."""
    transaction = session.get_transaction()
    if session.info.get(CHECKED) is transaction:
        return
    session.info[CHECKED] = transaction
    principal = principal_var.get(None)
    user_id = None if principal is None else users.user_id_of(principal)
    if principal is None or user_id is None:
        return
    connection = session.connection()
    query = STANDING.where(User.id == user_id).with_for_update(read=True, key_share=True, of=User)
    roles = _standing(connection.execute(query).one_or_none())
    custom = custom_query(roles)
    if custom is not None:
        custom = custom.with_for_update(read=True, key_share=True)
    held = granted_by(roles) | {p for ps in (connection.scalars(custom) if custom is not None else ()) for p in ps}
    if not principal.permissions <= without_operators(held):
        raise Aborted("your roles changed while this call ran; send it again", "ROLES_CHANGED")
