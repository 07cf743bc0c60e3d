"""Signing keys: created when missing, sealed at rest, published as a JWKS, used to sign access tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from sqlalchemy import func, select, text, update

from hishamos_identity.models import SigningKey
from hishamos_kit.crypto import Sealer
from hishamos_kit.db import Database, Prepared

log = logging.getLogger("hishamos.identity.keys")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(kid: str, public_key: bytes) -> dict[str, str]:
    return {"kid": kid, "kty": "OKP", "crv": "Ed25519", "x": b64url(public_key), "alg": "EdDSA", "use": "sig"}


SIGNING_FRESH_SECONDS = 1.0
PUBLISHED = "retired_at IS NULL OR retired_at > now()"
# On a script connection: a request signing inside its own transaction (RefreshToken) holds one of
# the session pool's, and waiting there for a second could wait for ever once every one is held so.
LOAD = Prepared(
    "signing_keys_published",
    f"SELECT kid, public_key, private_key_sealed, active FROM signing_keys WHERE {PUBLISHED} "
    "ORDER BY active DESC, created_at DESC",
)


class KeyStore:
    """Identity's view of its keys. Verification keys refresh from the table, so every replica
    learns of a rotation within `refresh_seconds`, or at once when a token names an unknown kid."""

    def __init__(self, db: Database, sealer: Sealer, overlap_seconds: float, refresh_seconds: float = 30.0) -> None:
        self._db = db
        self._sealer = sealer
        self._overlap = overlap_seconds
        self._refresh_seconds = refresh_seconds
        self._public: dict[str, Ed25519PublicKey] = {}
        self._jwks: list[dict[str, str]] = []
        self._signing: tuple[str, Ed25519PrivateKey] | None = None
        self._loaded_at = float("-inf")
        self._loading = asyncio.Lock()

    async def ensure_active(self) -> None:
        """Create the first signing key; replicas starting together agree through an advisory lock."""
        async with self._db.unscoped() as session:
            await session.execute(text("select pg_advisory_xact_lock(hashtext('identity.signing_keys'))"))
            if await session.scalar(select(SigningKey.id).where(SigningKey.active)) is None:
                session.add(self._new_key())
        await self._load()

    def _new_key(self) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        kid = f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return SigningKey(
            kid=kid,
            public_key=private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            private_key_sealed=self._sealer.seal(raw, kid),
        )

    async def rotate(self, operator: str, retire_previous: bool = False) -> tuple[str, list[str]]:
        """A new signing key; the old one is published until `overlap_seconds` from now, then retires,
        or, with `retire_previous`, every earlier key retires now. Logged rather than audited: the
        audit log is an organization's, and the keys are the platform's."""
        async with self._db.unscoped() as session:
            await session.execute(text("select pg_advisory_xact_lock(hashtext('identity.signing_keys'))"))
            await session.execute(
                update(SigningKey)
                .where(SigningKey.active)
                .values(active=False, retired_at=func.now() + timedelta(seconds=self._overlap))
            )
            if retire_previous:
                await session.execute(text(f"UPDATE signing_keys SET retired_at = now() WHERE {PUBLISHED}"))
            session.add(self._new_key())
        async with self._loading:  # after any read begun before the rotation committed
            await self._load()
        assert self._signing is not None
        fields = {"operator": operator, "kid": self._signing[0], "previous_retired": retire_previous}
        log.info("signing key rotated", extra={"fields": fields})
        return self._signing[0], [k["kid"] for k in self._jwks]

    async def _load(self) -> None:
        (rows,) = await self._db.script((LOAD, ()))
        self._public = {kid: Ed25519PublicKey.from_public_bytes(public) for kid, public, _, _ in rows}
        self._jwks = [jwk(kid, public) for kid, public, _, _ in rows]
        active = next((row for row in rows if row[3]), None)
        if active is not None and (self._signing is None or self._signing[0] != active[0]):
            kid, _, sealed, _ = active
            self._signing = (kid, Ed25519PrivateKey.from_private_bytes(self._sealer.open(sealed, kid)))
        self._loaded_at = time.monotonic()

    async def _fresh(self, kid: str | None = None, most_seconds: float | None = None) -> None:
        def stale() -> bool:
            age = time.monotonic() - self._loaded_at
            return age > (most_seconds or self._refresh_seconds) or (
                kid is not None and kid not in self._public and age > 1.0
            )

        if stale():
            async with self._loading:  # callers that find the keys stale together wait for one read
                if stale():
                    await self._load()

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        await self._fresh(kid)
        return self._public.get(kid)

    async def jwks_json(self) -> str:
        await self._fresh()
        return json.dumps({"keys": self._jwks})

    async def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        # Read again within the second: a key retired at once (a leak), by another replica, must stop
        # signing here too, and no token signed with it be handed out as a fresh one.
        await self._fresh(most_seconds=SIGNING_FRESH_SECONDS)
        if self._signing is None:
            raise RuntimeError("no active signing key; identity start-up creates one")
        return self._signing
