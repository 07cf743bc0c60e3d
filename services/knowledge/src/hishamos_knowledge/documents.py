"""Documents: how a Document row maps to its message and which values it accepts."""

from __future__ import annotations

import unicodedata

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.knowledge.v1 import document_pb2 as pb
from hishamos_kit import validate
from hishamos_kit.auth import require
from hishamos_kit.errors import InvalidArgument, Violations
from hishamos_kit.listing import Field, ListSpec, parse_bool, parse_int, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import ResourceType, base_fields
from hishamos_knowledge.models import Document
from hishamos_knowledge.projects import PROJECT, READ_PROJECTS, Projects

STATES = validate.EnumCodes(pb.Document.ProcessingState.items(), "PROCESSING_STATE_")

MAX_METADATA_BYTES = 64 * 1024
MAX_FILENAME = 255
# Embeddings and overrides of text direction: "x\u202egpj.exe" shows as "xexe.jpg".
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def canonical_project(literal: object) -> str:
    """A filter's project as documents store it (ids in canonical form), however the caller spelt the ids."""
    if not isinstance(literal, str):
        raise ValueError("expected a quoted name like `organizations/{organization}/projects/{project}`")
    if not literal:
        return ""
    try:
        return PROJECT.format(*PROJECT.parse(literal, "filter"))
    except InvalidArgument:
        raise ValueError("expected a name like `organizations/{organization}/projects/{project}`") from None


class DocumentType(ResourceType[Document, pb.Document]):
    model = Document
    message = pb.Document
    field = "document"
    path = ResourcePath("organizations/{organization}/documents/{document}")
    updatable = frozenset({"title", "filename", "metadata", "searchable", "project"})
    list_spec = ListSpec(
        filter_fields={
            "title": Field(Document.title, text=True),
            "filename": Field(Document.filename, text=True),
            "file_type": Field(Document.file_type),
            "processing_state": STATES.filter_field(Document.processing_state),
            "searchable": Field(Document.searchable, parse_bool),
            "project": Field(Document.project, canonical_project),
            "create_time": Field(Document.created_at, parse_time),
            "update_time": Field(Document.updated_at, parse_time),
        },
        order_fields={
            "title": Field(Document.title),
            "filename": Field(Document.filename),
            "size_bytes": Field(Document.size_bytes, parse_int),
            "create_time": Field(Document.created_at, parse_time),
            "update_time": Field(Document.updated_at, parse_time),
        },
        default_order="create_time desc",
        id_column=Document.id,
    )

    def __init__(self, projects: Projects) -> None:
        self.projects = projects

    async def before_write(self, session: AsyncSession, row: Document, action: str) -> None:
        """A project being set must exist: one deleted since must not block every other edit. Only a
        caller who may read projects sets one: the answer would otherwise tell anyone whether a project
        exists (knowledge asks with its own token)."""
        if action in ("create", "update") and row.project and inspect(row).attrs.project.history.has_changes():
            require(READ_PROJECTS, "giving a document a project")
            violations = Violations()
            await self.projects.check(violations, "document.project", row.project)
            violations.raise_if_any()

    def to_message(self, row: Document) -> pb.Document:
        return pb.Document(
            name=self.path.format(row.organization_id, row.id),
            title=row.title,
            filename=row.filename,
            file_type=row.file_type,
            size_bytes=row.size_bytes,
            metadata=json_format.ParseDict(row.metadata_, Struct()),
            processing_state=STATES.value(row.processing_state),
            processing_error=row.processing_error,
            searchable=row.searchable,
            embedding_model=row.embedding_model,
            project=row.project,
            **base_fields(row),
        )

    def apply(self, row: Document, message: pb.Document, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"document.{path}"
            if path == "title":
                row.title = validate.text(v, field, message.title, required=True, max_length=500)
            elif path == "filename" and message.filename != row.filename:  # a name kept from before the rules stays
                row.filename = self.filename(v, field, message.filename)
            elif path == "metadata":
                row.metadata_ = validate.json_object(v, field, message.metadata, max_bytes=MAX_METADATA_BYTES)
            elif path == "searchable":  # named but unset: its default (AIP-134)
                row.searchable = message.searchable if message.HasField("searchable") else True
            elif path == "project":
                row.project = validate.reference(v, field, message.project, PROJECT, row.organization_id)

    @staticmethod
    def filename(v: Violations, field: str, value: str) -> str:
        """A bare file name: no directories, so it can never be used to reach another path, and no control
        characters, which would break a Content-Disposition header or a terminal showing it, or disguise it."""
        value = validate.text(v, field, value, required=True, max_length=MAX_FILENAME)
        if value and (any(c in value for c in "/\\") or value in (".", "..")):
            v.add(field, 'must be a file name without "/" or "\\", and not "." or ".."')
        elif any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI_CONTROLS for c in value):
            v.add(field, "must not hold control characters such as line breaks, tabs, NUL or text direction marks")
        return value
