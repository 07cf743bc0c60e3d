"""Tasks of a story and work logs of a task.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from hishamos_kit import migrations

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrations.create_tenant_resource_table(
        "tasks",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("story_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="todo", nullable=False),
        sa.Column("assignee", sa.String(length=200), server_default="", nullable=False),
        sa.Column("estimate_hours", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("remaining_hours", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_tasks_project_id_projects")),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"], name=op.f("fk_tasks_story_id_stories")),
    )
    op.create_index(op.f("ix_tasks_project_id"), "tasks", ["project_id"])
    op.create_index(op.f("ix_tasks_story_id"), "tasks", ["story_id"])
    migrations.create_tenant_resource_table(
        "work_logs",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("story_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=False),
        sa.Column("work_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_work_logs_project_id_projects")),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"], name=op.f("fk_work_logs_story_id_stories")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_work_logs_task_id_tasks")),
    )
    op.create_index(op.f("ix_work_logs_project_id"), "work_logs", ["project_id"])
    op.create_index(op.f("ix_work_logs_story_id"), "work_logs", ["story_id"])
    op.create_index(op.f("ix_work_logs_task_id"), "work_logs", ["task_id"])


def downgrade() -> None:
    op.drop_table("work_logs")
    op.drop_table("tasks")
