"""The agents gRPC API: thin handlers over the standard methods."""

from __future__ import annotations

from grpc.aio import ServicerContext as Context

from hishamos.agents.v1 import platform_pb2 as pb
from hishamos.agents.v1 import platform_pb2_grpc
from hishamos_agents.models import IdempotencyKey
from hishamos_agents.platforms import PlatformType
from hishamos_agents.settings import AgentsSettings
from hishamos_kit import crypto
from hishamos_kit.auth import current_principal
from hishamos_kit.db import Database
from hishamos_kit.server import Service
from hishamos_kit.standard import StandardMethods


class PlatformService(platform_pb2_grpc.PlatformServiceServicer):
    def __init__(self, db: Database, sealer: crypto.Sealer) -> None:
        self.platforms = StandardMethods(db, PlatformType(sealer), IdempotencyKey)

    async def CreatePlatform(self, request: pb.CreatePlatformRequest, context: Context) -> pb.CreatePlatformResponse:
        platform = await self.platforms.create(
            current_principal(), request.parent, request.platform, request.request_id
        )
        return pb.CreatePlatformResponse(platform=platform)

    async def GetPlatform(self, request: pb.GetPlatformRequest, context: Context) -> pb.GetPlatformResponse:
        return pb.GetPlatformResponse(platform=await self.platforms.get(current_principal(), request.name))

    async def ListPlatforms(self, request: pb.ListPlatformsRequest, context: Context) -> pb.ListPlatformsResponse:
        platforms, token = await self.platforms.list(current_principal(), request)
        return pb.ListPlatformsResponse(platforms=platforms, next_page_token=token)

    async def UpdatePlatform(self, request: pb.UpdatePlatformRequest, context: Context) -> pb.UpdatePlatformResponse:
        platform = await self.platforms.update(current_principal(), request.platform, request.update_mask)
        return pb.UpdatePlatformResponse(platform=platform)

    async def DeletePlatform(self, request: pb.DeletePlatformRequest, context: Context) -> pb.DeletePlatformResponse:
        platform = await self.platforms.delete(current_principal(), request.name, request.etag)
        return pb.DeletePlatformResponse(platform=platform)

    async def UndeletePlatform(
        self, request: pb.UndeletePlatformRequest, context: Context
    ) -> pb.UndeletePlatformResponse:
        platform = await self.platforms.undelete(current_principal(), request.name, request.etag)
        return pb.UndeletePlatformResponse(platform=platform)


async def build(db: Database, settings: AgentsSettings | None = None) -> list[Service]:
    """The agents services. Without a valid credentials key the process stops here, naming the setting."""
    settings = settings or AgentsSettings.for_service("agents")
    key = crypto.load_key(settings.credentials_key, "HISHAMOS_AGENTS_CREDENTIALS_KEY")
    return [
        Service(
            "hishamos.agents.v1.PlatformService",
            PlatformService(db, crypto.Sealer(key)),
            platform_pb2_grpc.add_PlatformServiceServicer_to_server,
        )
    ]
