"""Access tokens (EdDSA JWTs) and refresh tokens (opaque, stored as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.identity.v1 import auth_pb2 as pb
from hishamos_identity.keys import KeyStore
from hishamos_identity.models import RefreshToken, User
from hishamos_identity.settings import IdentitySettings

REFRESH_PREFIX = "hosr_"


def user_name(user: User) -> str:
    return f"organizations/{user.organization_id}/users/{user.id}"


def hash_refresh_token(token: str) -> str:
    """Refresh tokens carry 256 random bits, so a fast hash is enough to make a stolen table useless."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenIssuer:
    def __init__(self, keys: KeyStore, settings: IdentitySettings) -> None:
        self._keys = keys
        self._settings = settings

    async def access_token(self, user: User) -> str:
        kid, private_key = await self._keys.signing_key()
        now = int(time.time())
        claims = {
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "sub": user_name(user),
            "org": str(user.organization_id),
            "roles": list(user.roles),
            "iat": now,
            "exp": now + self._settings.access_token_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": kid})

    async def pair(self, session: AsyncSession, user: User, family_id: uuid.UUID | None = None) -> pb.TokenPair:
        """A new access token and a new refresh token (recorded in `session`'s transaction)."""
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                organization_id=user.organization_id,
                user_id=user.id,
                family_id=family_id or uuid.uuid4(),
                token_hash=hash_refresh_token(refresh),
                expires_at=datetime.now(UTC) + timedelta(days=self._settings.refresh_token_days),
            )
        )
        return pb.TokenPair(
            access_token=await self.access_token(user),
            token_type="Bearer",
            expires_in=self._settings.access_token_seconds,
            refresh_token=refresh,
        )
