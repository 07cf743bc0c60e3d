"""Access tokens (EdDSA JWTs carrying the caller's permissions) and refresh-token sessions."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.identity.v1 import auth_pb2 as pb
from hishamos_identity import audit, users
from hishamos_identity.grants import custom_permissions
from hishamos_identity.keys import KeyStore
from hishamos_identity.models import Organization, RefreshToken, User
from hishamos_identity.sessions import PATH as SESSION
from hishamos_identity.settings import IdentitySettings
from hishamos_identity.users import end_sessions, lock_sessions, user_name
from hishamos_kit import api
from hishamos_kit.auth import REFRESH_TOKEN_PREFIX
from hishamos_kit.db import Database
from hishamos_kit.errors import InvalidArgument, PermissionDenied, Unauthenticated
from hishamos_kit.retention import Rule
from hishamos_kit.roles import granted_by

# hosr_<organization id, 32 hex><secret>: the organization tells which tenant's table to look in.
REFRESH = re.compile(rf"^{REFRESH_TOKEN_PREFIX}(?P<org>[0-9a-f]{{32}})(?P<secret>[A-Za-z0-9_-]{{43}})\Z")
BAD_REFRESH = "refresh token is not valid; log in again"


# A family whose tokens all ran out a day ago goes whole. A live family keeps its first token, which
# says when the session began, and loses the others that ran out: presented, they were refused as
# expired, and are now refused as unknown, with the same answer.
RETENTION = Rule(
    "refresh_tokens",
    """expires_at < now() - interval '1 day' AND (
    EXISTS (SELECT FROM refresh_tokens earlier
        WHERE earlier.family_id = refresh_tokens.family_id AND earlier.created_at < refresh_tokens.created_at)
    OR NOT EXISTS (SELECT FROM refresh_tokens live
        WHERE live.family_id = refresh_tokens.family_id AND live.expires_at >= now() - interval '1 day'))""",
)


def hash_refresh_token(token: str) -> str:
    """Refresh tokens carry 256 random bits, so a fast hash is enough to make a stolen table useless."""
    return hashlib.sha256(token.encode()).hexdigest()


async def sign(
    keys: KeyStore,
    settings: IdentitySettings,
    subject: str,
    organization_id: uuid.UUID,
    permissions: Iterable[str],
    lifetime: int,
    roles: Iterable[str] = (),
    session: uuid.UUID | None = None,
) -> str:
    """An access token: an EdDSA JWT, signed by the active key, that every service verifies alike.
    A user's names the session (`sid`, its sign-in's family of refresh tokens) it was issued in."""
    kid, private_key = await keys.signing_key()
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "org": str(organization_id),
        "roles": list(roles),
        "perms": list(permissions),
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        **({"sid": str(session)} if session else {}),
    }
    return jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": kid})


def credential_holder(metadata: Mapping[str, str], header: str, configured: Mapping[str, str], reason: str) -> str:
    """Who sent `<header>: <name>:<secret>`, when that secret is the one configured for `name`
    (compared in constant time); UNAUTHENTICATED otherwise."""
    name, _, secret = metadata.get(header, "").partition(":")
    expected = configured.get(name, "")
    if not expected or not hmac.compare_digest(expected.encode(), secret.encode()):
        raise Unauthenticated(f"send a valid `{header}: <name>:<secret>`", reason)
    return name


class TokenIssuer:
    def __init__(self, db: Database, keys: KeyStore, settings: IdentitySettings) -> None:
        self._db = db
        self._keys = keys
        self._settings = settings

    async def access_token(self, user: User, custom: Iterable[str], session: uuid.UUID) -> str:
        """A user's token in `session` (a family of refresh tokens) names their roles and lists only what
        their custom roles allow beyond the predefined ones (`custom`: the custom roles' permissions):
        every service expands predefined roles."""
        listed = set(custom) - granted_by(user.roles) - api.operator_permissions()  # even if a row were written by hand
        return await sign(
            self._keys,
            self._settings,
            user_name(user),
            user.organization_id,
            sorted(listed),
            self._settings.access_token_seconds,
            roles=user.roles,
            session=session,
        )

    def new_refresh_token(
        self, user: User, family_id: uuid.UUID | None = None, expires_at: datetime | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A new refresh token and the columns of the row that records it (only its hash), not yet written;
        a rotated one ends when the token it replaces did (`expires_at`)."""
        refresh = f"{REFRESH_TOKEN_PREFIX}{user.organization_id.hex}{secrets.token_urlsafe(32)}"
        row = {
            "id": uuid.uuid4(),
            "organization_id": user.organization_id,
            "user_id": user.id,
            "family_id": family_id or uuid.uuid4(),
            "token_hash": hash_refresh_token(refresh),
            "expires_at": expires_at or datetime.now(UTC) + timedelta(days=self._settings.refresh_token_days),
        }
        return refresh, row

    def token_pair(self, access_token: str, refresh_token: str) -> pb.TokenPair:
        return pb.TokenPair(
            access_token=access_token,
            token_type="Bearer",
            expires_in=self._settings.access_token_seconds,
            refresh_token=refresh_token,
        )

    async def pair(
        self, session: AsyncSession, user: User, family_id: uuid.UUID | None = None, expires_at: datetime | None = None
    ) -> pb.TokenPair:
        """A new access token and a new refresh token (recorded in `session`'s transaction)."""
        refresh, row = self.new_refresh_token(user, family_id, expires_at)
        session.add(RefreshToken(**row))
        access = await self.access_token(user, await custom_permissions(session, user.roles), row["family_id"])
        return self.token_pair(access, refresh)

    async def refresh(self, token: str) -> pb.TokenPair:
        """Rotate: the presented token is spent; a spent token presented again ends its family."""
        organization_id = self._organization_of(token)
        digest = hash_refresh_token(token)
        async with self._db.tenant(organization_id) as session:
            user_id = await session.scalar(select(RefreshToken.user_id).where(RefreshToken.token_hash == digest))
            if user_id is not None:  # the user's sessions held first, as their end holds them (lock_sessions)
                await lock_sessions(session, user_id)
            record = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == digest).with_for_update()
            )
            if record is None or record.expires_at <= datetime.now(UTC):
                raise Unauthenticated(BAD_REFRESH, "REFRESH_TOKEN_INVALID")
            if record.revoked_at is not None:
                successor = select(RefreshToken.id).where(
                    RefreshToken.family_id == record.family_id, RefreshToken.created_at > record.created_at
                )
                if not await session.scalar(successor.limit(1)):
                    # Ended (Logout, a password change, RevokeSession), not rotated: no sign of theft.
                    raise Unauthenticated("this session has ended; log in again", "SESSION_ENDED")
                await end_sessions(session, record.user_id, RefreshToken.family_id == record.family_id)
                audit.record(session, organization_id, "session.token_reused", target=session_name(record))
                reuse = True
            else:
                reuse = False
                record.revoked_at = datetime.now(UTC)
                user = await session.get(User, record.user_id)
                org = await session.get(Organization, organization_id)
                usable = user is not None and not user.is_deleted and user.state == "active"
                if not usable or org is None:
                    raise Unauthenticated(BAD_REFRESH, "REFRESH_TOKEN_INVALID")
                if org.state != "active":  # raised inside the transaction: the token is not spent
                    raise PermissionDenied("the organization is suspended", "ORGANIZATION_SUSPENDED")
                assert user is not None
                # A session lasts REFRESH_TOKEN_DAYS from its sign-in however often it is refreshed, so
                # a stolen one cannot be kept alive for ever (OWASP ASVS 3.3: re-authenticate periodically).
                tokens = await self.pair(session, user, record.family_id, record.expires_at)
        if reuse:  # raised after commit, so the family stays revoked
            raise Unauthenticated(BAD_REFRESH, "REFRESH_TOKEN_REUSED")
        return tokens

    async def logout(self, token: str) -> None:
        organization_id = self._organization_of(token)
        async with self._db.tenant(organization_id) as session:
            record = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(token))
            )
            if record is None or record.expires_at <= datetime.now(UTC):  # as refresh answers: retention forgets it
                raise Unauthenticated(BAD_REFRESH, "REFRESH_TOKEN_INVALID")
            await end_sessions(session, record.user_id, RefreshToken.family_id == record.family_id)
            owner = users.PATH.format(organization_id, record.user_id)
            audit.record(session, organization_id, "session.ended", owner, session_name(record))

    @staticmethod
    def _organization_of(token: str) -> uuid.UUID:
        if not token:
            raise InvalidArgument({"refresh_token": "is required"})
        match = REFRESH.match(token)
        if match is None:
            raise Unauthenticated(BAD_REFRESH, "REFRESH_TOKEN_INVALID")
        return uuid.UUID(match["org"])


def session_name(token: RefreshToken) -> str:
    """The session a refresh token belongs to, as ListSessions names it: a family of rotated tokens."""
    return SESSION.format(token.organization_id, token.user_id, token.family_id)
