"""The knowledge gRPC API: thin handlers over the standard methods."""

from __future__ import annotations

from hishamos.knowledge.v1 import document_pb2 as pb
from hishamos.knowledge.v1 import document_pb2_grpc
from hishamos_kit.db import Database
from hishamos_kit.handlers import standard_handlers
from hishamos_kit.server import Service
from hishamos_kit.standard import StandardMethods
from hishamos_knowledge.documents import DocumentType
from hishamos_knowledge.models import IdempotencyKey
from hishamos_knowledge.projects import Projects
from hishamos_knowledge.settings import KnowledgeSettings


@standard_handlers(pb, "Document", "document", "documents")
class DocumentService(document_pb2_grpc.DocumentServiceServicer):
    def __init__(self, db: Database, projects: Projects) -> None:
        self.methods = StandardMethods(db, DocumentType(projects), IdempotencyKey)


async def build(db: Database, settings: KnowledgeSettings) -> list[Service]:
    if not settings.service_credential:
        raise SystemExit("HISHAMOS_KNOWLEDGE_SERVICE_CREDENTIAL is not set; `make up` sets it for the local stack")
    projects = Projects(settings.identity_target, settings.projects_target, settings.service_credential)
    return [
        Service(
            "hishamos.knowledge.v1.DocumentService",
            DocumentService(db, projects),  # type: ignore[abstract]  # handlers added by the decorator
            document_pb2_grpc.add_DocumentServiceServicer_to_server,
        )
    ]
