"""Index waiting jobs by turn and retrying jobs by due time, apart.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from hishamos_kit import migrations

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrations.split_job_indexes()


def downgrade() -> None:
    unfinished = sa.text("finished_at IS NULL")
    op.drop_index("ix_jobs_tenant_turn_at", table_name="jobs")
    op.create_index("ix_jobs_tenant_turn_at", "jobs", ["tenant", "turn_at"], postgresql_where=unfinished)
    op.create_index("ix_jobs_turn_at", "jobs", ["turn_at"], postgresql_where=unfinished)
    op.drop_index("ix_jobs_retrying_run_at", table_name="jobs")
    op.drop_index("ix_jobs_waiting_turn_at", table_name="jobs")
