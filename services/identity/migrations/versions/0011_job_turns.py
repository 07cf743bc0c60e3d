"""Jobs take turns by tenant (hishamos_kit.jobs.TURN): one organization's burst no longer holds up another's mail.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from hishamos_kit import migrations

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrations.add_job_turns()


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_turn_at", table_name="jobs")
    op.drop_column("jobs", "turn_at")
    op.drop_column("jobs", "tenant")
