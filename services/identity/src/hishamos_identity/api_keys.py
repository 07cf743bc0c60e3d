"""API keys: created with a secret shown once, scoped to part of the owner's permissions, revocable."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.identity.v1 import api_key_pb2 as pb
from hishamos_identity import audit, users
from hishamos_identity.grants import check_acting_for, permissions_of
from hishamos_identity.models import ApiKey, IdempotencyKey, Organization, User
from hishamos_kit import resources, validate
from hishamos_kit.auth import Principal, current_principal
from hishamos_kit.db import Database
from hishamos_kit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Violations,
)
from hishamos_kit.listing import Field, ListSpec, list_page, parse_text, parse_time

PATH = resources.ResourcePath("organizations/{organization}/apiKeys/{api_key}")
# hos_<organization id, 32 hex>_<secret>: the organization tells which tenant's table to look in.
KEY = re.compile(r"^hos_(?P<org>[0-9a-f]{32})_(?P<secret>[A-Za-z0-9_-]{43})\Z")
DEFAULT_RATE = 600
UPDATABLE = ("display_name", "scopes", "rate_limit_per_minute")


def parse_owner(value: object) -> uuid.UUID:
    try:
        organization_id, user_id = users.PATH.parse(parse_text(value), "owner")
    except InvalidArgument:
        raise ValueError(f"expected a user's name, {users.PATH.pattern}") from None
    # Another organization's user owns no key here, whatever their id.
    return user_id if organization_id == current_principal().organization_id else uuid.UUID(int=0)


LIST = ListSpec(
    filter_fields={"owner": Field(ApiKey.owner_id, parse_owner), "create_time": Field(ApiKey.created_at, parse_time)},
    order_fields={"create_time": Field(ApiKey.created_at, parse_time)},
    default_order="create_time desc",
    id_column=ApiKey.id,
)


def hash_key(key: str) -> str:
    """Keys carry 256 random bits: a fast hash makes a stolen table useless."""
    return hashlib.sha256(key.encode()).hexdigest()


def to_message(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        name=PATH.format(key.organization_id, key.id),
        display_name=key.display_name,
        prefix=key.prefix,
        owner=users.PATH.format(key.organization_id, key.owner_id),
        scopes=list(key.scopes),
        expire_time=resources.timestamp(key.expires_at),
        rate_limit_per_minute=key.rate_limit_per_minute,
        last_used_time=resources.timestamp(key.last_used_at),
        revoke_time=resources.timestamp(key.revoked_at),
        create_time=resources.timestamp(key.created_at),
        etag=resources.etag(key),
    )


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, principal: Principal, parent: str, message: pb.ApiKey, request_id: str = ""
    ) -> pb.CreateApiKeyResponse:
        organization_id = resources.own_parent(principal, parent)
        resources.request_key(request_id)  # a malformed one is refused before any work
        owner_id = resources.own_name(principal, users.PATH, principal.subject, "owner")
        v = Violations()
        check_fields(v, principal, message, UPDATABLE)
        expires = (
            validate.timestamp(v, "api_key.expire_time", message.expire_time)
            if message.HasField("expire_time")
            else None
        )
        if expires is not None and expires <= datetime.now(UTC) + timedelta(minutes=1):
            v.add("api_key.expire_time", "must be at least a minute in the future")
        made_by_key = principal.api_key_expires
        if made_by_key is not None and (expires is None or expires > made_by_key):
            # A key made with a key ends when that one does, or it would outlive it.
            v.add("api_key.expire_time", "must come no later than the expiry of the API key making it")
        v.raise_if_any()
        secret = f"hos_{organization_id.hex}_{secrets.token_urlsafe(32)}"
        key = ApiKey(
            id=uuid.uuid4(),
            organization_id=organization_id,
            owner_id=owner_id,
            display_name=message.display_name.strip(),
            prefix=secret[:4] + secret[37:45],
            secret_hash=hash_key(secret),
            scopes=sorted(set(message.scopes)),
            rate_limit_per_minute=message.rate_limit_per_minute or DEFAULT_RATE,
            expires_at=expires,
        )

        async def insert(session: AsyncSession) -> pb.CreateApiKeyResponse:
            # A user deactivated meanwhile must not mint a key that works again the day they are
            # reactivated: the key's insert checks its owner, the caller, again (standing.py).
            session.add(key)
            await session.flush()
            audit.record(
                session, organization_id, "api_key.created", principal.subject, PATH.format(organization_id, key.id)
            )
            return pb.CreateApiKeyResponse(api_key=to_message(key), secret=secret)

        def without_secret(response: pb.CreateApiKeyResponse) -> pb.CreateApiKeyResponse:
            return pb.CreateApiKeyResponse(api_key=response.api_key)

        async with self.db.tenant(organization_id) as session:
            return await resources.once(
                session,
                IdempotencyKey,
                organization_id,
                # The owner's own: another user sending the same id makes a key of their own, not a
                # retry answered with someone else's key.
                resources.keyed_method("CreateApiKey", [owner_id]),
                request_id,
                pb.CreateApiKeyResponse,
                lambda: insert(session),
                stored=without_secret,
            )

    async def _load(
        self, session: AsyncSession, principal: Principal, name: str, field: str = "name", *, mine: bool = False
    ) -> ApiKey:
        """The key `name`; `mine`: locked, and the caller must own it or manage its owner."""
        key = await session.get(ApiKey, resources.own_name(principal, PATH, name, field), with_for_update=mine)
        if key is None:
            raise NotFound(name)
        if mine:
            owner = users.PATH.format(key.organization_id, key.owner_id)
            await check_acting_for(session, principal, owner, key.owner_id)
        return key

    async def get(self, principal: Principal, name: str) -> pb.ApiKey:
        async with self.db.tenant(principal.organization_id) as session:
            return to_message(await self._load(session, principal, name))

    async def list(self, principal: Principal, request: pb.ListApiKeysRequest) -> pb.ListApiKeysResponse:
        organization_id = resources.own_parent(principal, request.parent)
        async with self.db.tenant(organization_id) as session:
            page = await list_page(
                session,
                LIST,
                select(ApiKey),
                page_size=request.page_size,
                page_token=request.page_token,
                filter=request.filter,
                order_by=request.order_by,
                scope=(request.parent,),
            )
        keys, token = page.fit(to_message(k) for k in page.rows)
        return pb.ListApiKeysResponse(api_keys=keys, next_page_token=token)

    async def revoke(self, principal: Principal, name: str, etag: str) -> pb.ApiKey:
        async with self.db.tenant(principal.organization_id) as session:
            key = await self._load(session, principal, name, mine=True)
            resources.check_etag(key, etag, name)
            check_reach(principal, key)
            if key.revoked_at is None:
                key.revoked_at = datetime.now(UTC)
                key.version += 1
                audit.record(session, principal.organization_id, "api_key.revoked", principal.subject, name)
            await session.flush()
            return to_message(key)

    async def update(self, principal: Principal, message: pb.ApiKey, mask: FieldMask) -> pb.ApiKey:
        paths = resources.update_paths(mask, message, UPDATABLE, "api_key")
        v = Violations()
        check_fields(v, principal, message, paths)
        v.raise_if_any()
        async with self.db.tenant(principal.organization_id) as session:
            key = await self._load(session, principal, message.name, "api_key.name", mine=True)
            paths = resources.immutable_kept(paths, message, to_message(key), "api_key")
            resources.check_etag(key, message.etag, message.name)
            if key.revoked_at is not None:
                raise FailedPrecondition("the key is revoked; create another", "API_KEY_REVOKED")
            check_reach(principal, key)
            if "scopes" in paths and users.PATH.format(key.organization_id, key.owner_id) != principal.subject:
                # The owner's key: scopes the owner lacks would wake up the day the owner gains them.
                roles = await session.scalar(select(User.roles).where(User.id == key.owner_id))
                held = set(await permissions_of(session, roles or ()))
                v = Violations()
                for i, scope in enumerate(message.scopes):
                    if scope not in held:
                        v.add(f"api_key.scopes[{i}]", f"the key's owner does not hold {scope}")
                v.raise_if_any()
            key.version += 1
            if "display_name" in paths:
                key.display_name = message.display_name.strip()
            if "scopes" in paths:
                key.scopes = sorted(set(message.scopes))
            if "rate_limit_per_minute" in paths:
                key.rate_limit_per_minute = message.rate_limit_per_minute or DEFAULT_RATE
            await session.flush()
            audit.record(
                session, principal.organization_id, "api_key.updated", principal.subject, message.name, fields=paths
            )
            return to_message(key)

    async def authenticate(self, secret: str, reserve_calls: int) -> pb.AuthenticateApiKeyResponse:
        v = Violations()
        v.check(bool(secret), "key", "is required")
        validate.number(v, "reserve_calls", reserve_calls, low=0, high=100_000)
        v.raise_if_any()
        match = KEY.match(secret)
        if match is None:
            raise Unauthenticated("the API key is not valid", "API_KEY_INVALID")
        organization_id = uuid.UUID(match["org"])
        now = datetime.now(UTC)
        async with self.db.tenant(organization_id) as session:
            query = select(ApiKey).where(ApiKey.secret_hash == hash_key(secret))
            # Reservations of one key queue on its row, each taking from what the one before left.
            key = await session.scalar(query.with_for_update() if reserve_calls else query)
            owner = await session.get(User, key.owner_id) if key is not None else None
            org = await session.get(Organization, organization_id)
            usable = (
                key is not None
                and key.revoked_at is None
                and (key.expires_at is None or key.expires_at > now)
                and owner is not None
                and not owner.is_deleted
                and owner.state == "active"
                and org is not None
            )
            if not usable or key is None or owner is None or org is None:
                raise Unauthenticated("the API key is not valid", "API_KEY_INVALID")
            if org.state != "active":  # the key is genuine, so its holder may learn why it fails
                raise PermissionDenied("the organization is suspended", "ORGANIZATION_SUSPENDED")
            held = set(await permissions_of(session, owner.roles))
            if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
                key.last_used_at = now
            reserved, wait = take_calls(key, reserve_calls, now) if reserve_calls else (0, 0.0)
            response = pb.AuthenticateApiKeyResponse(
                api_key=PATH.format(organization_id, key.id),
                owner=users.user_name(owner),
                organization=resources.ORGANIZATION.format(organization_id),
                permissions=[p for p in key.scopes if p in held],
                rate_limit_per_minute=key.rate_limit_per_minute,
                expire_time=resources.timestamp(key.expires_at) if key.expires_at else None,
                reserved_calls=reserved,
            )
            if wait:
                response.retry_delay.FromTimedelta(timedelta(seconds=wait))
            return response


def check_reach(principal: Principal, key: ApiKey) -> None:
    """As at creation: a key that ends reaches no further than its own expiry through another."""
    made_by_key = principal.api_key_expires
    if made_by_key is not None and (key.expires_at is None or key.expires_at > made_by_key):
        raise PermissionDenied(
            "an API key that expires may change or revoke only keys that end no later than it does",
            "KEY_OUTLIVES_CALLER",
        )


def check_fields(v: Violations, principal: Principal, message: pb.ApiKey, paths: Collection[str]) -> None:
    """The settable fields among `paths`, as a create or an update sets them: scopes at least one,
    each held by the caller making or changing the key."""
    if "display_name" in paths:
        validate.text(v, "api_key.display_name", message.display_name, required=True)
    if "scopes" in paths:
        if not message.scopes:
            v.add("api_key.scopes", "must name at least one permission")
        for i, scope in enumerate(message.scopes):
            if scope not in principal.permissions:
                v.add(f"api_key.scopes[{i}]", f"you do not hold {scope}, so a key of yours cannot")
    if "rate_limit_per_minute" in paths:
        validate.number(v, "api_key.rate_limit_per_minute", message.rate_limit_per_minute, low=0, high=100_000)


def take_calls(key: ApiKey, wanted: int, now: datetime) -> tuple[int, float]:
    """Up to `wanted` calls from the key's token bucket (refilled evenly over the minute), and, when
    it has none, the seconds until it has them."""
    limit = max(key.rate_limit_per_minute, 1)
    left, at = (float(limit) if key.allowance is None else key.allowance), now
    if key.allowance_at is not None:
        # `now` was read before the row lock: a reservation that waited for it must not move time back.
        at = max(now, key.allowance_at)
        left = min(float(limit), left + (at - key.allowance_at).total_seconds() * limit / 60)
    taken = min(wanted, int(left))
    key.allowance, key.allowance_at = left - taken, at
    # Told to wait until all it asked for is there, a process over the limit asks again only so often.
    return taken, 0.0 if taken else (min(wanted, limit) - left) * 60 / limit
