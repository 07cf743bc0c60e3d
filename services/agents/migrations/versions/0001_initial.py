"""Platforms and the request-id ledger, under row-level security.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from hishamos_kit import migrations

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
        "platforms",
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("api_type", sa.String(length=50), server_default="", nullable=False),
        sa.Column("base_url", sa.String(length=2000), server_default="", nullable=False),
        sa.Column("default_model", sa.String(length=200), nullable=False),
        sa.Column("api_key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("api_key_hint", sa.String(length=20), server_default="", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("token_limit_per_minute", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "input_price_per_million",
            sa.Numeric(precision=12, scale=6),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column(
            "output_price_per_million",
            sa.Numeric(precision=12, scale=6),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platforms")),
        sa.UniqueConstraint("organization_id", "display_name", name=op.f("uq_platforms_organization_id_display_name")),
    )
    op.create_index(op.f("ix_platforms_organization_id"), "platforms", ["organization_id"])
    op.create_index(
        "ix_platforms_organization_id_created_at", "platforms", ["organization_id", sa.text("created_at DESC")]
    )
    migrations.tenant_table("platforms")


def downgrade() -> None:
    op.drop_table("platforms")
    op.drop_table("idempotency_keys")
