"""Index jobs by turn, not by run_at: the claim walks it instead of sorting the whole backlog.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from hishamos_kit import migrations

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrations.index_job_turns()


def downgrade() -> None:
    op.create_index("ix_jobs_due", "jobs", ["run_at"], postgresql_where=sa.text("finished_at IS NULL"))
    op.drop_index("ix_jobs_turn_at", table_name="jobs")
