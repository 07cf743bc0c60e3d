"""The job queue: mail goes out from it, written in the transaction that asks for it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

from hishamos_kit import migrations

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrations.create_jobs()


def downgrade() -> None:
    op.drop_table("jobs")
