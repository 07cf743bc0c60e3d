"""Stories of a project, ranked; the project's JSON schema for their custom fields.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hishamos_kit import migrations

RANK_GAP = 1 << 16  # hishamos_projects.stories.RANK_GAP when this migration was written

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "projects",
        sa.Column("story_custom_fields_schema", postgresql.JSONB(), server_default="{}", nullable=False),
    )
    # Ranks of new stories: increasing without a lock, so creates in one project do not queue.
    op.execute(f"CREATE SEQUENCE story_ranks INCREMENT BY {RANK_GAP}")
    op.execute(f'GRANT USAGE ON SEQUENCE story_ranks TO "{migrations.app_role()}"')
    migrations.create_tenant_resource_table(
        "stories",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("acceptance_criteria", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("story_points", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="backlog", nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("2"), nullable=False),
        sa.Column("assignee", sa.String(length=200), server_default="", nullable=False),
        sa.Column("epic_id", sa.Uuid(), nullable=True),
        sa.Column("sprint_id", sa.Uuid(), nullable=True),
        sa.Column("labels", postgresql.ARRAY(sa.String(length=50)), server_default="{}", nullable=False),
        sa.Column("rank", sa.BigInteger(), server_default=sa.text("nextval('story_ranks')"), nullable=False),
        sa.Column("generated_by_ai", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("workflow_execution", sa.String(length=500), server_default="", nullable=False),
        sa.Column("custom_fields", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_stories_project_id_projects")),
        sa.ForeignKeyConstraint(["epic_id"], ["epics.id"], name=op.f("fk_stories_epic_id_epics")),
        sa.ForeignKeyConstraint(["sprint_id"], ["sprints.id"], name=op.f("fk_stories_sprint_id_sprints")),
    )
    op.create_index(op.f("ix_stories_project_id"), "stories", ["project_id"])
    op.create_index(op.f("ix_stories_epic_id"), "stories", ["epic_id"])
    op.create_index(op.f("ix_stories_sprint_id"), "stories", ["sprint_id"])
    op.create_index("ix_stories_project_id_rank_id", "stories", ["project_id", "rank", "id"])
    op.create_index("ix_stories_labels", "stories", ["labels"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_table("stories")
    op.execute("DROP SEQUENCE story_ranks")
    op.drop_column("projects", "story_custom_fields_schema")
