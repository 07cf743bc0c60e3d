"""Retention: an hourly pass deletes expired rows (hishamos_kit.retention) across organizations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from hishamos_kit import migrations

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrations.retained("idempotency_keys")


def downgrade() -> None:
    migrations.unretained("idempotency_keys")
