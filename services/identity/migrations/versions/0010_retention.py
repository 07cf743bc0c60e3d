"""Retention: an hourly pass deletes expired rows (hishamos_kit.retention) across organizations.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from hishamos_kit import migrations

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("idempotency_keys", "refresh_tokens", "email_tokens")


def upgrade() -> None:
    migrations.retained(*TABLES)
    migrations.grant("jobs", "DELETE")  # finished jobs: the queue itself has no organization column


def downgrade() -> None:
    migrations.unretained(*TABLES)
    op.execute(f'REVOKE DELETE ON TABLE jobs FROM "{migrations.app_role()}"')
