from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct

from hishamos.knowledge.v1 import document_pb2 as pb
from hishamos.knowledge.v1 import document_pb2_grpc
from tests.conftest import Channels, Tenant
from tests.standard import Case, StandardMethodsContract


def metadata(**values: Any) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


DOCUMENTS = Case(
    service="knowledge",
    pb=pb,
    stub=document_pb2_grpc.DocumentServiceStub,
    kind="Document",
    field="document",
    plural="documents",
    valid=lambda i: pb.Document(title=f"Runbook {i}", filename=f"runbook-{i}.md", metadata=metadata(team="ops", n=i)),
    invalid=lambda: pb.Document(
        title="",
        filename="../../etc/passwd",
        project="organizations/x/projects/y",
        metadata=metadata(blob="x" * 70_000),
    ),
    invalid_fields={"document.title", "document.filename", "document.project", "document.metadata"},
    update=("title", "Runbook, revised"),
    filter_true=lambda d: f'filename = "{d.filename}" AND processing_state = PROCESSING_STATE_PENDING',
)


class TestDocumentStandardMethods(StandardMethodsContract):
    case = DOCUMENTS


def test_new_document_waits_for_content_in_its_own_project(channels: Channels, tenant: Tenant) -> None:
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    project = f"{tenant.organization}/projects/{uuid.uuid4()}"
    document = DOCUMENTS.valid(0)
    document.project = project
    created = api.CreateDocument(
        pb.CreateDocumentRequest(parent=tenant.organization, document=document), metadata=tenant.metadata, timeout=10
    ).document
    assert created.processing_state == pb.Document.PROCESSING_STATE_PENDING
    assert created.searchable and created.size_bytes == 0 and created.project == project
    assert dict(created.metadata) == {"team": "ops", "n": 0}
    listed = api.ListDocuments(
        pb.ListDocumentsRequest(parent=tenant.organization, filter=f'project = "{project}"'),
        metadata=tenant.metadata,
        timeout=10,
    ).documents
    assert [d.name for d in listed] == [created.name]


def test_searchable_named_but_unset_is_its_default(channels: Channels, tenant: Tenant) -> None:
    """AIP-134: a field in the mask but not in the message takes its default (searchable: true)."""
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    hidden = pb.Document(title="Private notes", filename="notes.md", searchable=False)
    made = api.CreateDocument(
        pb.CreateDocumentRequest(parent=tenant.organization, document=hidden), metadata=tenant.metadata
    )
    assert not made.document.searchable
    named = pb.UpdateDocumentRequest(
        document=pb.Document(name=made.document.name), update_mask=FieldMask(paths=["searchable"])
    )
    assert api.UpdateDocument(named, metadata=tenant.metadata, timeout=10).document.searchable


def test_a_create_answers_the_metadata_a_read_returns(channels: Channels, tenant: Tenant) -> None:
    """The database keeps no negative zero; the answer to the write must not show one either."""
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    document = pb.Document(title="Zero", filename="zero.md", metadata=metadata(v=-0.0, nested={"w": [-0.0]}))
    created = api.CreateDocument(
        pb.CreateDocumentRequest(parent=tenant.organization, document=document), metadata=tenant.metadata, timeout=10
    ).document
    read = api.GetDocument(pb.GetDocumentRequest(name=created.name), metadata=tenant.metadata, timeout=10).document
    # Compared as JSON: -0.0 == 0.0 holds in Python, and would hide the difference.
    assert json_format.MessageToJson(created) == json_format.MessageToJson(read)
    assert "-0" not in json_format.MessageToJson(created.metadata)
