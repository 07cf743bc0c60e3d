"""The knowledge gRPC API: thin handlers over the standard methods."""

from __future__ import annotations

from grpc.aio import ServicerContext as Context

from hishamos.knowledge.v1 import document_pb2 as pb
from hishamos.knowledge.v1 import document_pb2_grpc
from hishamos_kit.auth import current_principal
from hishamos_kit.db import Database
from hishamos_kit.server import Service
from hishamos_kit.standard import StandardMethods
from hishamos_knowledge.documents import DocumentType
from hishamos_knowledge.models import IdempotencyKey


class DocumentService(document_pb2_grpc.DocumentServiceServicer):
    def __init__(self, db: Database) -> None:
        self.documents = StandardMethods(db, DocumentType(), IdempotencyKey)

    async def CreateDocument(self, request: pb.CreateDocumentRequest, context: Context) -> pb.CreateDocumentResponse:
        document = await self.documents.create(
            current_principal(), request.parent, request.document, request.request_id
        )
        return pb.CreateDocumentResponse(document=document)

    async def GetDocument(self, request: pb.GetDocumentRequest, context: Context) -> pb.GetDocumentResponse:
        return pb.GetDocumentResponse(document=await self.documents.get(current_principal(), request.name))

    async def ListDocuments(self, request: pb.ListDocumentsRequest, context: Context) -> pb.ListDocumentsResponse:
        documents, token = await self.documents.list(current_principal(), request)
        return pb.ListDocumentsResponse(documents=documents, next_page_token=token)

    async def UpdateDocument(self, request: pb.UpdateDocumentRequest, context: Context) -> pb.UpdateDocumentResponse:
        document = await self.documents.update(current_principal(), request.document, request.update_mask)
        return pb.UpdateDocumentResponse(document=document)

    async def DeleteDocument(self, request: pb.DeleteDocumentRequest, context: Context) -> pb.DeleteDocumentResponse:
        document = await self.documents.delete(current_principal(), request.name, request.etag)
        return pb.DeleteDocumentResponse(document=document)

    async def UndeleteDocument(
        self, request: pb.UndeleteDocumentRequest, context: Context
    ) -> pb.UndeleteDocumentResponse:
        document = await self.documents.undelete(current_principal(), request.name, request.etag)
        return pb.UndeleteDocumentResponse(document=document)


async def build(db: Database) -> list[Service]:
    return [
        Service(
            "hishamos.knowledge.v1.DocumentService",
            DocumentService(db),
            document_pb2_grpc.add_DocumentServiceServicer_to_server,
        )
    ]
