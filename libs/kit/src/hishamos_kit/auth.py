"""Who is calling: access-token verification against identity's JWKS, and the caller's principal."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hishamos.identity.v1 import api_key_pb2, api_key_pb2_grpc, auth_pb2, auth_pb2_grpc
from hishamos_kit import outbound
from hishamos_kit.errors import ApiError, PermissionDenied, ResourceExhausted, Unauthenticated, Unavailable
from hishamos_kit.roles import granted_by

log = logging.getLogger("hishamos.auth")

ALGORITHM = "EdDSA"
# Header parameters that would let a token choose its own verification key (RFC 7515 §4.1).
FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. `organization_id` bounds everything it may see or change."""

    subject: str
    organization_id: uuid.UUID
    roles: tuple[str, ...]
    expires_at: float
    permissions: frozenset[str] = frozenset()
    api_key_expires: datetime | None = None  # the caller is an API key that expires then
    api_key: str = ""  # the caller is this API key (its name), acting for `subject`
    session: uuid.UUID | None = None  # the sign-in the token came from (identity ends tokens with it)

    @property
    def organization_name(self) -> str:
        return f"organizations/{self.organization_id}"


# Platform operators act across organizations and belong to none: their tokens carry the nil id
# as organization, which no tenant has, so any tenant-scoped query they reach finds nothing.
OPERATOR_PREFIX = "operators/"
NO_ORGANIZATION = uuid.UUID(int=0)


def is_operator(principal: Principal) -> bool:
    return principal.subject.startswith(OPERATOR_PREFIX) and principal.organization_id == NO_ORGANIZATION


principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The caller of the RPC being served; the server sets it before any handler runs."""
    return principal_var.get()


def require(permission: str, what: str) -> None:
    """A permission a call needs beside its declared one, for `what` it does or shows besides."""
    if permission not in current_principal().permissions:
        raise PermissionDenied(
            f"{what} needs the permission {permission}", "PERMISSION_DENIED", {"permission": permission}
        )


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def public_key_from_jwk(jwk: Mapping[str, str]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError(f"unsupported key {jwk.get('kid')}: only OKP/Ed25519")
    return Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))


class KeySource(Protocol):
    """Where verification keys come from: identity's own store, or identity's JWKS over gRPC."""

    async def key(self, kid: str) -> Ed25519PublicKey | None: ...


class JwksClient:
    """Identity's JWKS fetched over gRPC and cached.

    An unknown kid refreshes the set, at most once every few seconds: a token signed by a key that
    was rotated in a moment ago waits for that refresh rather than failing, and a flood of made-up
    kids costs identity one call per interval. When identity does not answer, the keys in hand keep
    verifying: the next attempt waits its interval, and callers never queue behind a hung one for
    more than a second.
    """

    def __init__(self, target: str, ttl_seconds: float = 60.0, min_refresh_seconds: float = 5.0) -> None:
        self._target = target
        self._ttl = ttl_seconds
        self._min_refresh = min(min_refresh_seconds, ttl_seconds)
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at = float("-inf")  # the last refresh that succeeded
        self._tried_at = float("-inf")  # the last one attempted
        self._lock = asyncio.Lock()
        self._channel: grpc.aio.Channel | None = None

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self._ttl and now - self._tried_at > self._min_refresh
        if stale or kid not in self._keys:
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        seen = self._tried_at
        async with self._lock:
            if self._tried_at != seen:
                return  # tried while we waited: one attempt answers every caller queued behind it
            wait = self._min_refresh - (time.monotonic() - self._tried_at)
            if wait > 0:
                await asyncio.sleep(wait)
            if self._channel is None:
                self._channel = outbound.channel(self._target)
            stub = auth_pb2_grpc.AuthServiceStub(self._channel)
            # With keys in hand a slow identity may not hold every caller up for long.
            timeout = min(outbound.timeout(), 1.0) if self._keys else outbound.timeout()
            try:
                response = await stub.GetJwks(auth_pb2.GetJwksRequest(), metadata=outbound.traced(), timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                self._tried_at = time.monotonic()
                if self._keys:
                    log.warning("identity's JWKS is unreachable; verifying with the keys in hand")
                    return
                raise Unavailable(
                    "cannot verify tokens now: identity is unreachable; retry", "JWKS_UNAVAILABLE"
                ) from exc
            self._keys = {k["kid"]: public_key_from_jwk(k) for k in json.loads(response.jwks_json)["keys"]}
            self._fetched_at = self._tried_at = time.monotonic()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


# Identity's clock may run ahead of a service's: a token issued "in the future" by this much (and
# expired by as much) still passes, or a call right after sign-in would fail on another host.
CLOCK_SKEW_SECONDS = 30


class TokenVerifier:
    """Verifies EdDSA access tokens. Verified tokens are cached until they expire or keys change."""

    def __init__(self, keys: KeySource, issuer: str, audience: str, cache_size: int = 10_000) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._cache: dict[str, tuple[Principal, str, Ed25519PublicKey]] = {}
        self._cache_size = cache_size

    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            principal, kid, key = cached
            # A cached token stays valid only while unexpired and while its key is still published.
            if principal.expires_at > time.time() and await self._keys.key(kid) is key:
                return principal
            self._cache.pop(token, None)  # a parallel call with this token may have dropped it already
        principal, kid, key = await self._verify(token)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (principal, kid, key)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, str, Ed25519PublicKey]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed access token", "TOKEN_INVALID") from exc
        if header.get("alg") != ALGORITHM or FORBIDDEN_HEADERS & header.keys():
            raise Unauthenticated("access token uses a forbidden algorithm or header", "TOKEN_INVALID")
        kid = header.get("kid")
        if not isinstance(kid, str) or (key := await self._keys.key(kid)) is None:
            raise Unauthenticated(f"access token signed by a key no longer in use; {RENEW}", "TOKEN_INVALID")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "org"]},
                leeway=CLOCK_SKEW_SECONDS,
            )
            roles = tuple(str(r) for r in claims.get("roles", ()))
            principal = Principal(
                subject=str(claims["sub"]),
                organization_id=uuid.UUID(str(claims["org"])),
                roles=roles,
                expires_at=float(claims["exp"]),
                # What the token lists (custom roles' additions) and what its predefined roles allow.
                permissions=frozenset(str(p) for p in claims.get("perms", ())) | granted_by(roles),
                session=uuid.UUID(str(claims["sid"])) if "sid" in claims else None,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated(f"access token expired; {RENEW}", "TOKEN_EXPIRED") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthenticated("access token is not valid here", "TOKEN_INVALID") from exc
        return principal, kid, key


def bearer_token(metadata: Mapping[str, str]) -> str:
    value = metadata.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token:
        if value:  # a credential without its scheme, say: the header was sent, and is what to fix
            raise Unauthenticated("write the header as `authorization: Bearer <token>`", "CREDENTIALS_MALFORMED")
        raise Unauthenticated(
            "send `authorization: Bearer <access token or API key>`, or an API key in `x-api-key`",
            "CREDENTIALS_MISSING",
        )
    return token.strip()


API_KEY_PREFIX = "hos_"
# What a caller whose token ran out does next, whoever it is.
RENEW = "log in or refresh (services: IssueServiceToken; operators: IssueOperatorToken)"
REFRESH_TOKEN_PREFIX = "hosr_"  # identity's refresh tokens, which callers send as access tokens by mistake


@dataclass(slots=True)
class _KeyState:
    """What one process knows of an API key: who it acts as, and the calls it may still admit."""

    principal: Principal
    limit: int  # calls per minute
    fresh_until: float  # monotonic: verify again after this
    calls: int  # reserved from identity and not yet admitted
    blocked_until: float  # monotonic: identity had no calls to give before this


class ApiKeys:
    """API keys verified by identity's AuthenticateApiKey and cached for `ttl_seconds`.

    A key's per-minute limit is a bucket identity keeps for every process of every service: each
    process reserves about two seconds' worth of calls at a time and admits calls from them, so the
    limit holds however many services and replicas a caller spreads its calls over. Reserved calls
    still unused when the key is verified again are dropped, never admitted late."""

    def __init__(self, target: str, ttl_seconds: float = 10.0) -> None:
        self._target = target
        self._ttl = ttl_seconds
        self._states: dict[str, _KeyState] = {}
        # Keys identity refused, until when, and why: a client retrying a revoked key, or one of a
        # suspended organization, reaches identity once per `ttl_seconds`, not with every call.
        self._refused: dict[str, tuple[float, str | None]] = {}  # until, and identity's denial (None: invalid)
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._channel: grpc.aio.Channel | None = None

    async def verify(self, key: str) -> Principal:
        while True:
            now = time.monotonic()
            state = self._states.get(key)
            if state is not None and state.fresh_until > now:
                if state.calls > 0:
                    state.calls -= 1
                    return state.principal
                if state.blocked_until > now:
                    raise ResourceExhausted(
                        f"this API key allows {state.limit} calls a minute; slow down",
                        "RATE_LIMITED",
                        {"limit": str(state.limit)},
                        retry_delay=state.blocked_until - now,
                    )
            refused = self._refused.get(key)
            if refused is not None and refused[0] > now:
                raise _refusal(refused[1])
            await self._reserve(key, state)

    async def _reserve(self, key: str, state: _KeyState | None) -> None:
        """One request to identity per key at a time, however many calls wait for it."""
        pending = self._pending.get(key)
        if pending is None:
            calls = 1 if state is None else max(1, state.limit // 30)
            pending = self._pending[key] = asyncio.ensure_future(self._authenticate(key, calls))
            pending.add_done_callback(lambda done: self._settled(key, done))
        await asyncio.shield(pending)

    def _settled(self, key: str, done: asyncio.Future[None]) -> None:
        del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter was cancelled

    async def _authenticate(self, key: str, calls: int) -> None:
        if self._channel is None:
            self._channel = outbound.channel(self._target)
        stub = api_key_pb2_grpc.ApiKeyServiceStub(self._channel)
        request = api_key_pb2.AuthenticateApiKeyRequest(key=key, reserve_calls=calls)
        try:
            reply = await stub.AuthenticateApiKey(request, metadata=outbound.traced(), timeout=outbound.timeout())
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                denial = None
            elif exc.code() == grpc.StatusCode.PERMISSION_DENIED:  # a valid key that may not act now
                denial = exc.details() or "the API key may not be used now"
            else:
                raise Unavailable(
                    "cannot verify API keys now: identity is unreachable; retry", "API_KEY_UNVERIFIED"
                ) from exc
            self._states.pop(key, None)
            if len(self._refused) >= 10_000:
                self._refused.clear()
            self._refused[key] = (time.monotonic() + self._ttl, denial)
            raise _refusal(denial) from None
        # Kept no longer than the key lives: its expiry, unlike a revocation, is known in advance.
        expires = reply.expire_time.ToDatetime(UTC) if reply.HasField("expire_time") else None
        lifetime = self._ttl if expires is None else min(self._ttl, expires.timestamp() - time.time())
        principal = Principal(
            subject=reply.owner,
            organization_id=uuid.UUID(reply.organization.rsplit("/", 1)[1]),
            roles=(),
            expires_at=time.time() + lifetime,
            permissions=frozenset(reply.permissions),
            api_key_expires=expires,
            api_key=reply.api_key,
        )
        now = time.monotonic()
        blocked_until = (
            0.0 if reply.reserved_calls else now + max(reply.retry_delay.ToTimedelta().total_seconds(), 0.01)
        )
        if len(self._states) >= 10_000:
            self._states.clear()
        self._states[key] = _KeyState(
            principal, reply.rate_limit_per_minute, now + lifetime, reply.reserved_calls, blocked_until
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


# What a service that keeps the users knows of a caller now, beside what its credential says.
Standing = Callable[[Principal], Awaitable[Principal]]


def _refusal(denial: str | None) -> ApiError:
    """A new error for each refused call: one raised again and again would keep every call's frames, and
    what they hold (the request among them), in its traceback."""
    if denial is None:
        return Unauthenticated("the API key is not valid", "API_KEY_INVALID")
    return PermissionDenied(denial, "API_KEY_DENIED")


class Authenticator:
    """The caller from the request metadata: an access token, or an API key (`x-api-key`, or a
    bearer credential that starts with `hos_`); `standing`, when given, then has the last word."""

    def __init__(self, tokens: TokenVerifier, api_keys: ApiKeys, standing: Standing | None = None) -> None:
        self.tokens = tokens
        self.api_keys = api_keys
        self.standing = standing

    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        principal = await self._credential(metadata)
        return principal if self.standing is None else await self.standing(principal)

    async def _credential(self, metadata: Mapping[str, str]) -> Principal:
        key = metadata.get("x-api-key", "").strip()
        if key:  # a blank one is no credential: the bearer token, if any, decides
            if not key.startswith(API_KEY_PREFIX):
                raise Unauthenticated(
                    f"x-api-key takes an API key (`{API_KEY_PREFIX}…`); send an access token as "
                    "`authorization: Bearer <token>`",
                    "API_KEY_INVALID",
                )
            return await self.api_keys.verify(key)
        token = bearer_token(metadata)
        if token.startswith(API_KEY_PREFIX):
            return await self.api_keys.verify(token)
        if token.startswith(REFRESH_TOKEN_PREFIX):
            raise Unauthenticated(
                "this is a refresh token: AuthService/RefreshToken exchanges it for an access token", "TOKEN_INVALID"
            )
        return await self.tokens.verify(token)
