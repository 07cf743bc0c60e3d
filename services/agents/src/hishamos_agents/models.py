"""Tables of the agents database."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Index, LargeBinary, Numeric, String, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hishamos_kit.db import TenantResource, new_metadata
from hishamos_kit.resources import IdempotencyKeyColumns
from hishamos_kit.schema import Schema

# What this build needs of its database (the newest migration); the service waits for it at start.
SCHEMA = Schema("alembic_version_agents", "0003")


class Base(DeclarativeBase):
    metadata = new_metadata()


class IdempotencyKey(IdempotencyKeyColumns, Base):
    pass


class Platform(TenantResource, Base):
    """An AI provider endpoint. The API key is sealed to its row and organization, never stored in clear."""

    __tablename__ = "platforms"
    __table_args__ = (
        UniqueConstraint("organization_id", "display_name"),
        Index("ix_platforms_organization_id_created_at", "organization_id", text("created_at DESC")),
    )

    display_name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(20))  # enum name without prefix, lowercase: "openai"
    api_type: Mapped[str] = mapped_column(String(50), default="", server_default="")
    base_url: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    default_model: Mapped[str] = mapped_column(String(200))
    api_key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_key_hint: Mapped[str] = mapped_column(String(20), default="", server_default="")
    enabled: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    priority: Mapped[int] = mapped_column(default=100, server_default=text("100"))
    rate_limit_per_minute: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    token_limit_per_minute: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    input_price_per_million: Mapped[Decimal] = mapped_column(
        Numeric(12, 6), default=Decimal(0), server_default=text("0")
    )
    output_price_per_million: Mapped[Decimal] = mapped_column(
        Numeric(12, 6), default=Decimal(0), server_default=text("0")
    )
