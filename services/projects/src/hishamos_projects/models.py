"""Tables of the projects database."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from hishamos_kit.db import TenantResource, new_metadata
from hishamos_kit.resources import IdempotencyKeyColumns
from hishamos_kit.schema import Schema

# What this build needs of its database (the newest migration); the service waits for it at start.
SCHEMA = Schema("alembic_version_projects", "0010")


class Base(DeclarativeBase):
    metadata = new_metadata()


class IdempotencyKey(IdempotencyKeyColumns, Base):
    pass


class Project(TenantResource, Base):
    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("organization_id", "slug"),
        Index("ix_projects_organization_id_created_at", "organization_id", text("created_at DESC")),
    )

    slug: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    manager: Mapped[str] = mapped_column(String(200), default="", server_default="")
    is_active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    member_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    story_custom_fields_schema: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")


class ProjectChild(TenantResource):
    """A resource that lives in one project. Its rows carry no deleted flag of the project's: a deleted
    project hides them by its own state, so an undelete restores exactly what the delete hid."""

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Index, ...]:  # noqa: N805 - declared_attr receives the class
        table = cls.__tablename__  # type: ignore[attr-defined]
        return (Index(f"ix_{table}_organization_id_created_at", "organization_id", text("created_at DESC")),)


class Member(ProjectChild, Base):
    __tablename__ = "members"
    __table_args__ = (
        Index("ix_members_organization_id_created_at", "organization_id", text("created_at DESC")),
        # A user is on a project's team once; a removed membership stays for the record.
        Index("uq_members_project_id_user", "project_id", "user", unique=True, postgresql_where=text("NOT is_deleted")),
    )

    user: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="contributor", server_default="contributor")


class Sprint(ProjectChild, Base):
    __tablename__ = "sprints"
    __table_args__ = (
        Index("ix_sprints_organization_id_created_at", "organization_id", text("created_at DESC")),
        # At most one active sprint per project, whatever races the domain check loses.
        Index("uq_sprints_project_id_active", "project_id", unique=True, postgresql_where=text("state = 'active'")),
    )

    display_name: Mapped[str] = mapped_column(String(200))
    goal: Mapped[str] = mapped_column(Text, default="", server_default="")
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16), default="planned", server_default="planned", index=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Its figures when it completed (boards.keep_history): its stories move on and change, its history does not.
    history: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Epic(ProjectChild, Base):
    __tablename__ = "epics"

    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    state: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    priority: Mapped[int] = mapped_column(SmallInteger, default=2, server_default=text("2"))
    owner: Mapped[str] = mapped_column(String(200), default="", server_default="")


class Story(ProjectChild, Base):
    __tablename__ = "stories"
    __table_args__ = (
        Index("ix_stories_organization_id_created_at", "organization_id", text("created_at DESC")),
        # The backlog and sprint boards read a project's stories in rank order.
        Index("ix_stories_project_id_rank_id", "project_id", "rank", "id"),
        Index("ix_stories_labels", "labels", postgresql_using="gin"),
    )
    # No index of its own: ix_stories_project_id_rank_id leads with it, and every index costs each create.
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))

    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    acceptance_criteria: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    story_points: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    state: Mapped[str] = mapped_column(String(16), default="backlog", server_default="backlog")
    priority: Mapped[int] = mapped_column(SmallInteger, default=2, server_default=text("2"))
    assignee: Mapped[str] = mapped_column(String(200), default="", server_default="")
    epic_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("epics.id"), index=True)
    sprint_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sprints.id"), index=True)
    labels: Mapped[list[str]] = mapped_column(ARRAY(String(50)), default=list, server_default="{}")
    rank: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('story_ranks')"))
    generated_by_ai: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    workflow_execution: Mapped[str] = mapped_column(String(500), default="", server_default="")
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # for burndown and velocity


class Task(ProjectChild, Base):
    __tablename__ = "tasks"

    story_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stories.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    state: Mapped[str] = mapped_column(String(16), default="todo", server_default="todo")
    assignee: Mapped[str] = mapped_column(String(200), default="", server_default="")
    estimate_hours: Mapped[float] = mapped_column(Float, default=0, server_default=text("0"))
    remaining_hours: Mapped[float] = mapped_column(Float, default=0, server_default=text("0"))
    due_date: Mapped[date | None] = mapped_column(Date)


class WorkLog(ProjectChild, Base):
    __tablename__ = "work_logs"

    story_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stories.id"), index=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id"), index=True)
    user: Mapped[str] = mapped_column(String(200))
    work_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_minutes: Mapped[int]
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
