"""User profiles and lockout, custom roles, and the append-only audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hishamos_kit import migrations

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_COLUMNS = [
    sa.Column("first_name", sa.String(length=100), server_default="", nullable=False),
    sa.Column("last_name", sa.String(length=100), server_default="", nullable=False),
    sa.Column("avatar_uri", sa.String(length=2000), server_default="", nullable=False),
    sa.Column("bio", sa.Text(), server_default="", nullable=False),
    sa.Column("time_zone", sa.String(length=64), server_default="", nullable=False),
    sa.Column("state", sa.String(length=20), server_default="active", nullable=False),
    sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False),
    sa.Column("lockouts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
]


def upgrade() -> None:
    for column in USER_COLUMNS:
        op.add_column("users", column)
    migrations.create_tenant_resource_table(
        "roles",
        sa.Column("role_id", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("permissions", sa.ARRAY(sa.String(length=100)), server_default="{}", nullable=False),
        sa.UniqueConstraint("organization_id", "role_id", name=op.f("uq_roles_organization_id_role_id")),
    )
    op.create_table(
        "audit_events",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=200), server_default="", nullable=False),
        sa.Column("target", sa.String(length=300), server_default="", nullable=False),
        sa.Column("request_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        *migrations.base_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_organization_id"), "audit_events", ["organization_id"])
    op.create_index(
        "ix_audit_events_organization_id_created_at", "audit_events", ["organization_id", sa.text("created_at DESC")]
    )
    migrations.tenant_table("audit_events", privileges="SELECT, INSERT")


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("roles")
    for column in reversed(USER_COLUMNS):
        op.drop_column("users", column.name)
