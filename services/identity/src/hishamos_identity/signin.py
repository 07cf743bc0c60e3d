"""The database side of a sign-in in two round trips: find the user; record the outcome.

Through the ORM a login cost about a dozen statements in two transactions, and on a two-core machine
their CPU (about 10 ms) was a fifth of the argon2id work the login exists to do. Here each transaction
is one `Database.script`: hand-written SQL over the model's columns, values sent as parameters,
row-level security as everywhere (the organization is set first, from the slug when finding).

The lockout needs no write before the password is checked: an outcome counts only when the statement
recording it finds the account unlocked (`SUCCEEDED` and `FAILED` both re-check that against the row as
the last committed sign-in left it), so of parallel guesses at most MAX_FAILURES get a true answer,
while parallel sign-ins with the right password all succeed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hishamos_identity import users
from hishamos_identity.models import Organization, User
from hishamos_kit.db import SET_TENANT, TENANT_SETTING, Database, Prepared, columns_of, loaded
from hishamos_kit.errors import PermissionDenied
from hishamos_kit.logs import request_id_var

SLUG_SETTING = "app.organization_slug"
MAX_FAILURES = 5

_USER = [(attribute, column.name) for attribute, column in columns_of(User)]

SET_SLUG = Prepared("signin_set_slug", f"SELECT set_config('{SLUG_SETTING}', %(slug)s, true)")
# Row-level security shows the organization whose slug was typed; its id then scopes the users.
SET_TENANT_FROM_SLUG = Prepared(
    "signin_set_tenant_from_slug",
    f"SELECT set_config('{TENANT_SETTING}', coalesce("
    "(SELECT id::text FROM organizations WHERE slug = %(slug)s AND NOT is_deleted), ''), true)",
)
# Unlocked: never locked, or the lock has run out (the next failure then starts a new count).
UNLOCKED = "(users.locked_until IS NULL OR users.locked_until <= now())"
# The organization and the user, and whether the account is locked.
FIND = Prepared(
    "signin_find",
    f"""
WITH org AS (
    SELECT id, state FROM organizations WHERE slug = %(slug)s AND NOT is_deleted
), found AS (
    SELECT users.*, NOT {UNLOCKED} AS locked FROM users JOIN org ON users.organization_id = org.id
    WHERE NOT users.is_deleted AND (users.email = %(email)s OR users.username = %(login)s)
)
SELECT org.id, org.state, coalesce(found.locked, false),
    {", ".join(f'found."{column}"' for _, column in _USER)}
FROM org LEFT JOIN found ON true
""",
)

# Signing in is not an edit: the user's version (etag) and update time stay as they were. The user
# must still be as the password check found them, and unlocked, in an active organization: a password
# changed, an account deactivated, deleted or locked by parallel guesses, or the organization suspended
# while argon2 ran refuses the sign-in (no `signed` row), and then neither a session nor an event is
# written (each is inserted from the updated row). The token is made from the roles the updated row
# holds, so a role taken away or deleted while argon2 ran is not in it. A suspension is told apart
# from the other refusals only for a user still as the check found them: a locked account's answer
# must not tell that the password was right.
SUCCEEDED = Prepared(
    "signin_succeeded",
    f"""
WITH signed AS (
    UPDATE users SET last_login_at = now(), failed_logins = 0, lockouts = 0, locked_until = NULL,
        password_hash = coalesce(%(rehash)s, password_hash)
    WHERE id = %(user_id)s AND password_hash = %(verified_hash)s AND state = 'active' AND NOT is_deleted
        AND {UNLOCKED}
        AND EXISTS (SELECT FROM organizations WHERE id = users.organization_id AND state = 'active' AND NOT is_deleted)
    RETURNING last_login_at, roles
), session AS (
    INSERT INTO refresh_tokens (id, organization_id, user_id, family_id, token_hash, expires_at)
    SELECT %(id)s, %(organization_id)s, %(user_id)s, %(family_id)s, %(token_hash)s, %(expires_at)s FROM signed
), event AS (
    INSERT INTO audit_events (id, organization_id, action, actor, target, request_id, details)
    SELECT %(event_id)s, %(organization_id)s, 'login.succeeded', %(name)s, %(name)s, %(request_id)s, '{{}}' FROM signed
)
SELECT org.state <> 'active' AND EXISTS (
        SELECT FROM users WHERE id = %(user_id)s AND password_hash = %(verified_hash)s AND state = 'active'
            AND NOT is_deleted AND {UNLOCKED}),
    signed.last_login_at, signed.roles,
    (SELECT coalesce(array_agg(DISTINCT p), '{{}}') FROM roles, unnest(roles.permissions) AS p
        WHERE roles.organization_id = %(organization_id)s AND roles.role_id = ANY(signed.roles))
FROM (SELECT state FROM organizations WHERE id = %(organization_id)s) AS org LEFT JOIN signed ON true
""",
)

# A failure takes one of an unlocked user's attempts; the one that takes the last locks the account
# for 1, 2, 4 … minutes (at most an hour), doubling with each lockout in a row. Parallel failures
# queue on the row, and each re-checks it as the one before left it (READ COMMITTED), so no more
# than MAX_FAILURES are counted. A failure while locked is only audited.
COUNT = "CASE WHEN users.locked_until <= now() THEN 1 ELSE users.failed_logins + 1 END"
FAILED = Prepared(
    "signin_failed",
    f"""
WITH attempt AS (
    UPDATE users SET
        failed_logins = {COUNT},
        locked_until = CASE WHEN {COUNT} >= {MAX_FAILURES}
            THEN now() + least(60, power(2, users.lockouts)) * interval '1 minute' END,
        lockouts = users.lockouts + CASE WHEN {COUNT} >= {MAX_FAILURES} THEN 1 ELSE 0 END
    WHERE id = %(user_id)s AND {UNLOCKED}
    RETURNING failed_logins, locked_until
), failed AS (
    INSERT INTO audit_events (id, organization_id, action, actor, target, request_id, details)
    SELECT %(event_id)s, %(organization_id)s, 'login.failed', '', %(name)s, %(request_id)s,
        jsonb_build_object('locked', NOT EXISTS (SELECT FROM attempt), 'factor', %(factor)s::text)
), locked AS (
    INSERT INTO audit_events (id, organization_id, action, actor, target, request_id, details)
    SELECT %(lock_event_id)s, %(organization_id)s, 'user.locked', '', %(name)s, %(request_id)s,
        jsonb_build_object('until', locked_until)
    FROM attempt WHERE failed_logins >= {MAX_FAILURES}
)
SELECT failed_logins FROM attempt
""",
)


# Whether a password checked while parallel guesses ran still counts: the account unlocked, the password
# the same. Asked before an answer other than a session tells that the password was right.
STILL_CHECKED = Prepared(
    "signin_still_checked",
    f"SELECT FROM users WHERE id = %(user_id)s AND password_hash = %(verified_hash)s AND {UNLOCKED}",
)


# Nobody by that login: audited too, which also gives the answer the round trip a wrong password takes.
# Filed under no user, and without the login typed: people type their password into the login field,
# and the audit log, append-only, would keep it in plain text for good.
UNKNOWN = Prepared(
    "signin_unknown",
    "INSERT INTO audit_events (id, organization_id, action, actor, target, request_id, details) "
    "VALUES (%(event_id)s, %(organization_id)s, 'login.failed', '', '', %(request_id)s, "
    """'{"unknown_user": true}')""",
)


@dataclass(frozen=True)
class Found:
    """What a sign-in attempt found; `locked`: the user's account is locked."""

    organization: Organization | None = None
    user: User | None = None
    locked: bool = False


@dataclass(frozen=True)
class Signed:
    """A recorded sign-in: when, and the roles (and their custom permissions) the user holds now."""

    last_login: datetime
    roles: list[str]
    custom_permissions: list[str]


async def find(db: Database, slug: str, login: str) -> Found:
    """The organization and user a sign-in names, in one round trip that writes nothing."""
    params = {"slug": slug, "email": login.lower(), "login": login}
    *_, rows = await db.script((SET_SLUG, params), (SET_TENANT_FROM_SLUG, params), (FIND, params))
    if not rows:
        return Found()
    organization_id, state, locked, *user_values = rows[0]
    organization = loaded(Organization, {"id": organization_id, "slug": slug, "state": state})
    if user_values[0] is None:  # no such user: the LEFT JOIN found nothing
        return Found(organization)
    user = loaded(User, {key: value for (key, _), value in zip(_USER, user_values, strict=True)})
    return Found(organization, user, locked)


async def succeeded(db: Database, user: User, rehash: str | None, refresh: Mapping[str, Any]) -> Signed | None:
    """Record a sign-in in one round trip: the user's last login and cleared attempts (and a new
    hash when the parameters changed), the audit event, and the session's refresh token. None, with
    nothing written, when the user changed or was locked since the password was checked;
    PERMISSION_DENIED when the organization was suspended meanwhile."""
    values = {
        **refresh,  # the refresh token's row
        "rehash": rehash,
        "verified_hash": user.password_hash,
        "event_id": uuid.uuid4(),
        "name": users.user_name(user),
        "request_id": request_id_var.get(),
    }
    _, rows = await db.script((SET_TENANT, (str(user.organization_id),)), (SUCCEEDED, values))
    suspended, last_login, roles, custom = rows[0] if rows else (False, None, None, None)
    if last_login is None:
        if suspended:
            raise PermissionDenied("the organization is suspended", "ORGANIZATION_SUSPENDED")
        return None
    return Signed(last_login, roles, custom)


async def failed(db: Database, user: User, factor: str = "password") -> bool:
    """Record a failed sign-in (and the lockout it may cause) in one round trip; False when the
    account was locked, so the failure did not count. `factor` says what was wrong: "totp" after the
    right password tells an admin that someone else knows it."""
    values = {
        "factor": factor,
        "user_id": user.id,
        "organization_id": user.organization_id,
        "event_id": uuid.uuid4(),
        "lock_event_id": uuid.uuid4(),
        "name": users.user_name(user),
        "request_id": request_id_var.get(),
    }
    _, rows = await db.script((SET_TENANT, (str(user.organization_id),)), (FAILED, values))
    return bool(rows)


async def unknown(db: Database, organization_id: uuid.UUID) -> None:
    """Record a sign-in as nobody this organization knows, in one round trip like a failure's."""
    values = {"event_id": uuid.uuid4(), "organization_id": organization_id, "request_id": request_id_var.get()}
    await db.script((SET_TENANT, (str(organization_id),)), (UNKNOWN, values))


async def still_checked(db: Database, user: User) -> bool:
    """Whether the password just found right still counts (STILL_CHECKED), in one round trip."""
    values = {"user_id": user.id, "verified_hash": user.password_hash}
    _, rows = await db.script((SET_TENANT, (str(user.organization_id),)), (STILL_CHECKED, values))
    return bool(rows)
