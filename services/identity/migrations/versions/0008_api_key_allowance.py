"""What is left of each API key's per-minute limit, kept here so every service shares one bucket.

NULL is a full bucket: existing keys start with their whole limit.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("allowance", sa.Float(), nullable=True))
    op.add_column("api_keys", sa.Column("allowance_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "allowance_at")
    op.drop_column("api_keys", "allowance")
