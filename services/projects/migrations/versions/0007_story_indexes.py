"""Drop ix_stories_project_id: ix_stories_project_id_rank_id leads with the same column.

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


def upgrade() -> None:
    op.drop_index("ix_stories_project_id", table_name="stories")


def downgrade() -> None:
    op.create_index("ix_stories_project_id", "stories", ["project_id"])
