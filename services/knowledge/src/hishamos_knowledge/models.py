"""Tables of the knowledge database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hishamos_kit.db import TenantResource, new_metadata
from hishamos_kit.resources import IdempotencyKeyColumns
from hishamos_kit.schema import Schema

# What this build needs of its database (the newest migration); the service waits for it at start.
SCHEMA = Schema("alembic_version_knowledge", "0003")


class Base(DeclarativeBase):
    metadata = new_metadata()


class IdempotencyKey(IdempotencyKeyColumns, Base):
    pass


class Document(TenantResource, Base):
    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_organization_id_created_at", "organization_id", text("created_at DESC")),
        Index("ix_documents_organization_id_processing_state", "organization_id", "processing_state"),
    )

    title: Mapped[str] = mapped_column(String(500))
    filename: Mapped[str] = mapped_column(String(255))
    file_type: Mapped[str] = mapped_column(String(255), default="", server_default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # `metadata` is taken by the declarative class, hence the trailing underscore on the attribute only.
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    processing_state: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    processing_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    searchable: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    embedding_model: Mapped[str] = mapped_column(String(200), default="", server_default="")
    project: Mapped[str] = mapped_column(String(200), default="", server_default="")
