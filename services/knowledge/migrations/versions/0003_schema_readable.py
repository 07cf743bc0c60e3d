"""The app role reads the schema's revision, so a service serves only on the schema it was built for.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from hishamos_kit import migrations

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrations.grant_version_table()


def downgrade() -> None:
    migrations.grant_version_table(revoke=True)
