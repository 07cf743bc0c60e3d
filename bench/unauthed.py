"""The authentication ceiling: the projects service's own handlers and chassis, with a fixed caller
instead of credentials. Assembled here only; no setting can switch authentication off in a real server."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Mapping

import uvloop

from hishamos_kit import api
from hishamos_kit.auth import Principal
from hishamos_kit.db import Database
from hishamos_kit.server import serve
from hishamos_projects.service import build
from hishamos_projects.settings import ProjectsSettings


class FixedCaller:
    """Stands where the Authenticator stands: every call is this organization's admin."""

    def __init__(self, organization_id: uuid.UUID) -> None:
        self.principal = Principal(
            subject=f"organizations/{organization_id}/users/bench",
            organization_id=organization_id,
            roles=("admin",),
            expires_at=time.time() + 86_400,
            permissions=frozenset(api.permissions()),
        )

    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        return self.principal


async def main(port: int, organization_id: uuid.UUID) -> None:
    settings = ProjectsSettings.for_service("projects")
    settings.port, settings.metrics_port = port, -1
    db = Database(settings.database_url, settings.db_pool_size)
    try:
        await serve("projects", settings, await build(db, settings), FixedCaller(organization_id))  # type: ignore[arg-type]
    finally:
        await db.close()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), uuid.UUID(sys.argv[2])))
