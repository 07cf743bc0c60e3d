"""Sessions: a user's refresh-token families, listed and revoked."""

from __future__ import annotations

from sqlalchemy import func, select

from hishamos.identity.v1 import session_pb2 as pb
from hishamos_identity import audit, users
from hishamos_identity.grants import check_acting_for
from hishamos_identity.models import LIVE_REFRESH_TOKEN, RefreshToken
from hishamos_kit import resources
from hishamos_kit.auth import Principal
from hishamos_kit.db import Database
from hishamos_kit.errors import NotFound
from hishamos_kit.listing import (
    Field,
    ListSpec,
    after,
    fingerprint_of,
    make_token,
    page_size_of,
    parse_time,
    read_token,
)

PATH = resources.ResourcePath("organizations/{organization}/users/{user}/sessions/{session}")
LIST = ListSpec(filter_fields={}, order_fields={}, default_order="", id_column=RefreshToken.family_id)
BEGAN = func.min(RefreshToken.created_at)
_KEYS = [(Field(BEGAN, parse_time), True), (Field(RefreshToken.family_id), False)]


class Sessions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(self, principal: Principal, request: pb.ListSessionsRequest) -> pb.ListSessionsResponse:
        """A session is a family of refresh tokens: pages go by when it began, then its family id."""
        user_id = resources.own_name(principal, users.PATH, request.parent, "parent")
        size = page_size_of(request.page_size)
        fingerprint = fingerprint_of(LIST, user_id)
        query = (
            select(BEGAN, RefreshToken.family_id, func.max(RefreshToken.created_at), func.max(RefreshToken.expires_at))
            .where(RefreshToken.user_id == user_id)
            .group_by(RefreshToken.family_id)
            .having(func.bool_or(LIVE_REFRESH_TOKEN))
            .order_by(BEGAN.desc(), RefreshToken.family_id)
            .limit(size + 1)
        )
        if request.page_token:
            query = query.having(after(read_token(request.page_token, fingerprint, _KEYS), _KEYS))
        async with self.db.tenant(principal.organization_id) as session:
            await users.live_user(session, user_id, request.parent)  # no such user: NOT_FOUND, not an empty page
            await check_acting_for(session, principal, users.PATH.format(principal.organization_id, user_id), user_id)
            rows = (await session.execute(query)).all()
        token = make_token(rows[size - 1][:2], fingerprint) if len(rows) > size else ""
        return pb.ListSessionsResponse(
            sessions=[
                pb.Session(
                    name=PATH.format(principal.organization_id, user_id, family),
                    create_time=resources.timestamp(began),
                    refresh_time=resources.timestamp(refreshed),
                    expire_time=resources.timestamp(expires),
                )
                for began, family, refreshed, expires in rows[:size]
            ],
            next_page_token=token,
        )

    async def revoke(self, principal: Principal, name: str) -> None:
        organization_id, user_id, family_id = PATH.parse(name, "name")
        if organization_id != principal.organization_id:
            raise NotFound(name)
        async with self.db.tenant(organization_id) as session:
            await check_acting_for(session, principal, users.PATH.format(organization_id, user_id), user_id)
            if not await users.end_sessions(session, user_id, RefreshToken.family_id == family_id):
                raise NotFound(name)
            audit.record(session, organization_id, "session.revoked", principal.subject, name)
