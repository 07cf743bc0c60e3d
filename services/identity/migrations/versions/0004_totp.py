"""Two-factor sign-in: TOTP secret, last used step, recovery codes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    sa.Column("totp_secret_sealed", sa.LargeBinary(), nullable=True),
    sa.Column("totp_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    sa.Column("totp_last_step", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    sa.Column("recovery_codes", sa.ARRAY(sa.String(length=64)), server_default="{}", nullable=False),
]


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("users", column)


def downgrade() -> None:
    for column in reversed(COLUMNS):
        op.drop_column("users", column.name)
