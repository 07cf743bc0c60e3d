"""Tables of the identity database."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    Float,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hishamos_kit.db import Resource, TenantResource, Timestamps, new_metadata
from hishamos_kit.jobs import JobColumns
from hishamos_kit.resources import IdempotencyKeyColumns
from hishamos_kit.schema import Schema

# What this build needs of its database (the newest migration); the service waits for it at start.
SCHEMA = Schema("alembic_version_identity", "0014")


class Base(DeclarativeBase):
    metadata = new_metadata()


class Job(JobColumns, Base):
    pass


class IdempotencyKey(IdempotencyKeyColumns, Base):
    pass


class Organization(Resource, Base):
    """The tenant itself: row-level security admits it by id, or by slug while signing in."""

    __tablename__ = "organizations"

    slug: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    contact_email: Mapped[str] = mapped_column(String(254), default="", server_default="")
    contact_phone: Mapped[str] = mapped_column(String(50), default="", server_default="")
    website: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    max_users: Mapped[int] = mapped_column(default=50, server_default=text("50"))
    max_projects: Mapped[int] = mapped_column(default=20, server_default=text("20"))
    max_storage_gb: Mapped[int] = mapped_column(default=10, server_default=text("10"))
    state: Mapped[str] = mapped_column(String(20), default="active", server_default="active")


class User(TenantResource, Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("organization_id", "email"),
        UniqueConstraint("organization_id", "username"),
        Index("ix_users_organization_id_created_at", "organization_id", text("created_at DESC")),
    )

    email: Mapped[str] = mapped_column(String(254))
    username: Mapped[str] = mapped_column(String(64))
    full_name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list, server_default="{}")
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    last_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    avatar_uri: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    bio: Mapped[str] = mapped_column(Text, default="", server_default="")
    time_zone: Mapped[str] = mapped_column(String(64), default="", server_default="")
    state: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    # Brute-force protection: failures are counted atomically, and the fifth locks (signin.FAILED).
    failed_logins: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    lockouts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # Two-factor sign-in: the secret sealed with the key-encryption key; recovery codes as SHA-256.
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    totp_last_step: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    recovery_codes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list, server_default="{}")


class Role(TenantResource, Base):
    """A custom role; the predefined ones live in code (hishamos_identity.roles)."""

    __tablename__ = "roles"
    __table_args__ = (
        UniqueConstraint("organization_id", "role_id"),
        Index("ix_roles_organization_id_created_at", "organization_id", text("created_at DESC")),
    )

    role_id: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    permissions: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list, server_default="{}")


class AuditEvent(Timestamps, Base):
    """Append-only: the app role may insert and read, never update or delete."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_organization_id_created_at", "organization_id", text("created_at DESC")),)

    organization_id: Mapped[uuid.UUID] = mapped_column()  # indexed first in the index above
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200), default="", server_default="")
    target: Mapped[str] = mapped_column(String(300), default="", server_default="")
    request_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")


class SigningKey(Timestamps, Base):
    """Ed25519 keys that sign access tokens; the private half is sealed with the key-encryption key."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    private_key_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RefreshToken(Timestamps, Base):
    """A refresh token, stored only as its SHA-256; rotation links a family of tokens."""

    __tablename__ = "refresh_tokens"

    organization_id: Mapped[uuid.UUID] = mapped_column()  # never looked up alone: by hash, user or family
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# A token that still works: what revoking touches (an expired one is left to retention, so that the
# two never lock the same rows) and what makes a session live.
LIVE_REFRESH_TOKEN = RefreshToken.revoked_at.is_(None) & (RefreshToken.expires_at > func.now())


class ApiKey(Timestamps, Base):
    """An API key, stored only as the SHA-256 of its secret and a visible prefix."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_organization_id_created_at", "organization_id", text("created_at DESC")),)

    organization_id: Mapped[uuid.UUID] = mapped_column()  # indexed first in the index above
    owner_id: Mapped[uuid.UUID] = mapped_column(index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list, server_default="{}")
    rate_limit_per_minute: Mapped[int] = mapped_column(default=600, server_default=text("600"))
    # Calls left of that limit as of `allowance_at`; NULL: all of them.
    allowance: Mapped[float | None] = mapped_column(Float)
    allowance_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The etag, bumped by updates and revocation only: not a version_id_col, since every use
    # writes the row (last use, allowance) and a client's etag must not go stale by that.
    version: Mapped[int] = mapped_column(default=1, server_default=text("1"))


class EmailToken(Timestamps, Base):
    """A single-use token mailed to a user (password reset, email verification), stored as SHA-256."""

    RESET, VERIFY, INVITE = "password_reset", "email_verification", "invitation"  # its purposes
    SETS_PASSWORD = (RESET, INVITE)

    __tablename__ = "email_tokens"

    organization_id: Mapped[uuid.UUID] = mapped_column()  # never looked up alone: by hash or user
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
