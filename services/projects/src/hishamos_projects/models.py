"""Tables of the projects database."""

from __future__ import annotations

from sqlalchemy import Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hishamos_kit.db import TenantResource, new_metadata
from hishamos_kit.resources import IdempotencyKeyColumns


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
