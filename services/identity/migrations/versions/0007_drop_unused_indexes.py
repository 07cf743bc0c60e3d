"""Drop four indexes no query uses, each of which every insert paid for (a sign-in writes two of them).

audit_events and api_keys are read by organization through their (organization_id, created_at DESC)
indexes, which lead with the same column; refresh and email tokens are found by hash, user or family.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNUSED = ("audit_events", "api_keys", "refresh_tokens", "email_tokens")


def upgrade() -> None:
    for table in UNUSED:
        op.drop_index(op.f(f"ix_{table}_organization_id"), table_name=table)


def downgrade() -> None:
    for table in UNUSED:
        op.create_index(op.f(f"ix_{table}_organization_id"), table, ["organization_id"])
