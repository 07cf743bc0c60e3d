"""The agents gRPC API: thin handlers over the standard methods."""

from __future__ import annotations

from hishamos.agents.v1 import platform_pb2 as pb
from hishamos.agents.v1 import platform_pb2_grpc
from hishamos_agents.models import IdempotencyKey
from hishamos_agents.platforms import PlatformType
from hishamos_agents.settings import AgentsSettings
from hishamos_kit import crypto
from hishamos_kit.db import Database
from hishamos_kit.handlers import standard_handlers
from hishamos_kit.server import Service
from hishamos_kit.standard import StandardMethods


@standard_handlers(pb, "Platform", "platform", "platforms")
class PlatformService(platform_pb2_grpc.PlatformServiceServicer):
    def __init__(self, db: Database, sealer: crypto.Sealer) -> None:
        self.methods = StandardMethods(db, PlatformType(sealer), IdempotencyKey)


async def build(db: Database, settings: AgentsSettings | None = None) -> list[Service]:
    """The agents services. Without a valid credentials key the process stops here, naming the setting."""
    settings = settings or AgentsSettings.for_service("agents")
    key = crypto.load_key(settings.credentials_key, "HISHAMOS_AGENTS_CREDENTIALS_KEY")
    return [
        Service(
            "hishamos.agents.v1.PlatformService",
            PlatformService(db, crypto.Sealer(key)),  # type: ignore[abstract]  # handlers added by the decorator
            platform_pb2_grpc.add_PlatformServiceServicer_to_server,
        )
    ]
