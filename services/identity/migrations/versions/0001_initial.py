"""Organizations, users, signing keys, refresh tokens and the request-id ledger, under row-level security.

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

TENANT = "nullif(current_setting('app.organization_id', true), '')::uuid"
SLUG = "nullif(current_setting('app.organization_slug', true), '')"


def upgrade() -> None:
    migrations.create_idempotency_keys()

    op.create_table(
        "organizations",
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("contact_email", sa.String(length=254), server_default="", nullable=False),
        sa.Column("contact_phone", sa.String(length=50), server_default="", nullable=False),
        sa.Column("website", sa.String(length=2000), server_default="", nullable=False),
        sa.Column("max_users", sa.Integer(), server_default=sa.text("50"), nullable=False),
        sa.Column("max_projects", sa.Integer(), server_default=sa.text("20"), nullable=False),
        sa.Column("max_storage_gb", sa.Integer(), server_default=sa.text("10"), nullable=False),
        sa.Column("state", sa.String(length=20), server_default="active", nullable=False),
        *migrations.resource_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organizations_slug")),
    )
    # The tenant row itself: visible to its own members, or by slug while someone signs in to it.
    op.execute("ALTER TABLE organizations ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE organizations FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON organizations USING (id = {TENANT} OR slug = {SLUG}) "
        f"WITH CHECK (id = {TENANT})"
    )
    migrations.grant("organizations")

    migrations.create_tenant_resource_table(
        "users",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("full_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("roles", sa.ARRAY(sa.String(length=64)), server_default="{}", nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("organization_id", "email", name=op.f("uq_users_organization_id_email")),
        sa.UniqueConstraint("organization_id", "username", name=op.f("uq_users_organization_id_username")),
    )

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("private_key_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        *migrations.base_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("kid", name=op.f("uq_signing_keys_kid")),
    )
    migrations.grant("signing_keys", "SELECT, INSERT, UPDATE")

    op.create_table(
        "refresh_tokens",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        *migrations.base_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    for column in ("organization_id", "user_id", "family_id"):
        op.create_index(op.f(f"ix_refresh_tokens_{column}"), "refresh_tokens", [column])
    migrations.tenant_table("refresh_tokens")


def downgrade() -> None:
    for table in ("refresh_tokens", "signing_keys", "users", "organizations", "idempotency_keys"):
        op.drop_table(table)
