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
    migrations.create_idempotency_keys()
    migrations.create_tenant_resource_table(
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
    )
    op.create_index(
        "ix_documents_organization_id_processing_state", "documents", ["organization_id", "processing_state"]
    )


def downgrade() -> None:
    op.drop_table("documents")
    op.drop_table("idempotency_keys")
