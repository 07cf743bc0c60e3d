"""Sessions: a user's refresh-token families, listed and revoked."""

from __future__ import annotations

from sqlalchemy import func, select, update

from hishamos.identity.v1 import session_pb2 as pb
from hishamos_identity import audit, users
from hishamos_identity.grants import check_acting_for
from hishamos_identity.models import RefreshToken
from hishamos_kit import resources
from hishamos_kit.auth import Principal
from hishamos_kit.db import Database
from hishamos_kit.errors import NotFound

PATH = resources.ResourcePath("organizations/{organization}/users/{user}/sessions/{session}")


class Sessions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(self, principal: Principal, parent: str) -> list[pb.Session]:
        user_id = resources.own_name(principal, users.PATH, parent, "parent")
        live = (RefreshToken.revoked_at.is_(None)) & (RefreshToken.expires_at > func.now())
        query = (
            select(
                RefreshToken.family_id,
                func.min(RefreshToken.created_at),
                func.max(RefreshToken.created_at),
                func.max(RefreshToken.expires_at),
            )
            .where(RefreshToken.user_id == user_id)
            .group_by(RefreshToken.family_id)
            .having(func.bool_or(live))
            .order_by(func.min(RefreshToken.created_at).desc())
        )
        async with self.db.tenant(principal.organization_id) as session:
            await check_acting_for(session, principal, users.PATH.format(principal.organization_id, user_id), user_id)
            rows = (await session.execute(query)).all()
        return [
            pb.Session(
                name=PATH.format(principal.organization_id, user_id, family),
                create_time=resources.timestamp(created),
                refresh_time=resources.timestamp(refreshed),
                expire_time=resources.timestamp(expires),
            )
            for family, created, refreshed, expires in rows
        ]

    async def revoke(self, principal: Principal, name: str) -> None:
        organization_id, user_id, family_id = PATH.parse(name, "name")
        if organization_id != principal.organization_id:
            raise NotFound(name)
        async with self.db.tenant(organization_id) as session:
            await check_acting_for(session, principal, users.PATH.format(organization_id, user_id), user_id)
            ended = await session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.user_id == user_id,
                    RefreshToken.family_id == family_id,
                    RefreshToken.revoked_at.is_(None),
                )
                .values(revoked_at=func.now())
            )
            if not ended.rowcount:  # type: ignore[attr-defined]
                raise NotFound(name)
            audit.record(session, organization_id, "session.revoked", principal.subject, name)
