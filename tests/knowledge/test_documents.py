from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct

from hishamos.knowledge.v1 import document_pb2 as pb
from hishamos.knowledge.v1 import document_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.stack import Stack
from tests.conftest import Channels, Tenant
from tests.db import superuser
from tests.errors import failure
from tests.identity.test_api_keys import create as create_key
from tests.pages import every_page
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


def _project(channels: Channels, tenant: Tenant, slug: str) -> str:
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    request = project_pb2.CreateProjectRequest(
        parent=tenant.organization, project=project_pb2.Project(display_name=slug.title(), slug=slug)
    )
    return str(projects.CreateProject(request, metadata=tenant.metadata, timeout=10).project.name)


def test_new_document_waits_for_content_in_its_own_project(channels: Channels, tenant: Tenant) -> None:
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    project = _project(channels, tenant, f"docs-{uuid.uuid4().hex[:8]}")
    document = DOCUMENTS.valid(0)
    document.project = project
    created = api.CreateDocument(
        pb.CreateDocumentRequest(parent=tenant.organization, document=document), metadata=tenant.metadata, timeout=10
    ).document
    assert created.processing_state == pb.Document.PROCESSING_STATE_PENDING
    assert created.searchable and created.size_bytes == 0 and created.project == project
    assert dict(created.metadata) == {"team": "ops", "n": 0}
    for spelling in (
        project,
        project.upper().replace("ORGANIZATIONS", "organizations").replace("PROJECTS", "projects"),
    ):
        listed = api.ListDocuments(
            pb.ListDocumentsRequest(parent=tenant.organization, filter=f'project = "{spelling}"'),
            metadata=tenant.metadata,
            timeout=10,
        ).documents
        assert [d.name for d in listed] == [created.name], spelling  # the ids however spelt


def test_a_document_names_only_a_live_project_of_its_organization(
    channels: Channels, tenant: Tenant, other_tenant: Tenant
) -> None:
    """Knowledge asks projects, with a service token of its own, whether the project exists: a made-up id,
    a deleted project or another organization's is refused, and a refused update changes nothing."""
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    live = _project(channels, tenant, f"live-{uuid.uuid4().hex[:8]}")
    gone = _project(channels, tenant, f"gone-{uuid.uuid4().hex[:8]}")
    projects.DeleteProject(project_pb2.DeleteProjectRequest(name=gone), metadata=tenant.metadata, timeout=10)
    theirs = _project(channels, other_tenant, f"theirs-{uuid.uuid4().hex[:8]}")
    made_up = f"{tenant.organization}/projects/{uuid.uuid4()}"
    for project in (made_up, gone, theirs):
        document = pb.Document(title="Runbook", filename="runbook.md", project=project)
        request = pb.CreateDocumentRequest(parent=tenant.organization, document=document)
        f = failure(lambda request=request: api.CreateDocument(request, metadata=tenant.metadata, timeout=10))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"document.project"}, project

    document = pb.Document(title="Runbook", filename="runbook.md", project=live)
    created = api.CreateDocument(
        pb.CreateDocumentRequest(parent=tenant.organization, document=document), metadata=tenant.metadata, timeout=10
    ).document
    moved = pb.UpdateDocumentRequest(
        document=pb.Document(name=created.name, project=made_up), update_mask=FieldMask(paths=["project"])
    )
    f = failure(lambda: api.UpdateDocument(moved, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"document.project"}
    read = api.GetDocument(pb.GetDocumentRequest(name=created.name), metadata=tenant.metadata, timeout=10).document
    assert read.project == live and read.etag == created.etag

    # Its project deleted since, the document still takes other edits, its project unchanged.
    projects.DeleteProject(project_pb2.DeleteProjectRequest(name=live), metadata=tenant.metadata, timeout=10)
    retitled = pb.UpdateDocumentRequest(
        document=pb.Document(name=created.name, title="Runbook, kept", project=live),
        update_mask=FieldMask(paths=["title", "project"]),
    )
    kept = api.UpdateDocument(retitled, metadata=tenant.metadata, timeout=10).document
    assert kept.title == "Runbook, kept" and kept.project == live


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
    # Compared as JSON: -0.0 == 0.0 holds in Python, and would hide the difference. Keys sorted: a
    # map's order on the wire follows the order its keys were added, which protobuf leaves open.
    assert json_format.MessageToJson(created, sort_keys=True) == json_format.MessageToJson(read, sort_keys=True)
    assert "-0" not in json_format.MessageToJson(created.metadata)


def test_only_a_caller_who_may_read_projects_learns_whether_one_exists(channels: Channels, tenant: Tenant) -> None:
    """Knowledge checks a document's project with a token of its own: a caller without
    projects.projects.get is refused before it, so the answer tells it nothing about the project."""
    live = _project(channels, tenant, f"secret-{uuid.uuid4().hex[:8]}")
    key = create_key(channels, tenant, ["knowledge.documents.create"]).secret
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    for project in (live, f"{tenant.organization}/projects/{uuid.uuid4()}"):
        document = pb.Document(title="Probe", filename="probe.md", project=project)
        request = pb.CreateDocumentRequest(parent=tenant.organization, document=document)
        f = failure(lambda r=request: api.CreateDocument(r, metadata=(("x-api-key", key),), timeout=10))  # type: ignore[misc]
        assert (f.code, f.metadata["permission"]) == (grpc.StatusCode.PERMISSION_DENIED, "projects.projects.get")
    unfiled = pb.CreateDocumentRequest(parent=tenant.organization, document=pb.Document(title="Ok", filename="ok.md"))
    assert api.CreateDocument(unfiled, metadata=(("x-api-key", key),), timeout=10).document.title == "Ok"


def test_a_page_of_documents_with_the_most_metadata_holds_what_a_default_client_accepts(
    channels: Channels, tenant: Tenant
) -> None:
    """Sixty documents with 60 KB of metadata each are more than a gRPC client accepts in one message by
    default: a page holds fewer than its page_size, and the token goes on from there."""
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    for i in range(60):
        document = pb.Document(title=f"Heavy {i}", filename=f"heavy-{i}.md", metadata=metadata(blob="m" * 60_000))
        api.CreateDocument(
            pb.CreateDocumentRequest(parent=tenant.organization, document=document), metadata=tenant.metadata
        )
    request = pb.ListDocumentsRequest(parent=tenant.organization, page_size=1000, filter='title: "Heavy"')
    first = api.ListDocuments(request, metadata=tenant.metadata, timeout=30)  # a default channel: 4 MiB
    assert 1 <= len(first.documents) < 60 and first.next_page_token
    walked = every_page(api.ListDocuments, request, "documents", tenant.metadata)
    assert sorted(d.title for d in walked) == sorted(f"Heavy {i}" for i in range(60))


def test_a_file_name_holds_no_control_characters(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    """A name goes into Content-Disposition headers and terminals: a line break there splits a header."""
    api = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    for name in (
        "a\nb.md",
        "a\rb.md",
        "tab\t.md",
        "nul\0.md",
        "c1\x85.md",
        "del\x7f.md",
        "ls\u2028.md",
        "x\u202egpj.exe",
    ):
        document = pb.Document(title="Named", filename=name)
        request = pb.CreateDocumentRequest(parent=tenant.organization, document=document)
        f = failure(lambda r=request: api.CreateDocument(r, metadata=tenant.metadata, timeout=10))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"document.filename"}, name
    named = pb.Document(title="Named", filename="résumé 2026 (final).md")
    request = pb.CreateDocumentRequest(parent=tenant.organization, document=named)
    created = api.CreateDocument(request, metadata=tenant.metadata, timeout=10).document
    assert created.filename == named.filename
    # A name stored before the rule does not block a read-modify-write of everything else.
    with superuser(stack, "knowledge") as conn:
        conn.execute("UPDATE documents SET filename = 'old\tname.md' WHERE id = %s", (created.name.rsplit("/", 1)[1],))
    kept = api.GetDocument(pb.GetDocumentRequest(name=created.name), metadata=tenant.metadata, timeout=10).document
    kept.title = "Renamed"
    update = pb.UpdateDocumentRequest(document=kept, update_mask=FieldMask(paths=["*"]))
    updated = api.UpdateDocument(update, metadata=tenant.metadata, timeout=10).document
    assert (updated.title, updated.filename) == ("Renamed", "old\tname.md")
