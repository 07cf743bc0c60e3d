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
    migrations.create_idempotency_keys()
    migrations.create_tenant_resource_table(
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
        sa.UniqueConstraint("organization_id", "display_name", name=op.f("uq_platforms_organization_id_display_name")),
    )


def downgrade() -> None:
    op.drop_table("platforms")
    op.drop_table("idempotency_keys")
