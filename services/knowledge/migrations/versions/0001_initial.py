"""Documents and the request-id ledger, under row-level security.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hishamos_kit import migrations

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Chunks and embeddings need pgvector. Provisioning creates it as superuser; this only states the
    # dependency (and fails early where it is missing). Downgrade leaves it: other objects may use it.
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "idempotency_keys",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint(
            "organization_id",
            "method",
            "request_id",
            name=op.f("uq_idempotency_keys_organization_id_method_request_id"),
        ),
    )
    migrations.tenant_table("idempotency_keys")
    op.create_table(
        "documents",
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("file_type", sa.String(length=255), server_default="", nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("processing_state", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("processing_error", sa.Text(), server_default="", nullable=False),
        sa.Column("searchable", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("embedding_model", sa.String(length=200), server_default="", nullable=False),
        sa.Column("project", sa.String(length=200), server_default="", nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    op.create_index(op.f("ix_documents_organization_id"), "documents", ["organization_id"])
    op.create_index(
        "ix_documents_organization_id_created_at", "documents", ["organization_id", sa.text("created_at DESC")]
    )
    op.create_index(
        "ix_documents_organization_id_processing_state", "documents", ["organization_id", "processing_state"]
    )
    migrations.tenant_table("documents")


def downgrade() -> None:
    op.drop_table("documents")
    op.drop_table("idempotency_keys")
