"""What every service's Alembic environment and migrations share: the runner and row-level security."""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import MetaData, create_engine, pool

from hishamos_kit.db import TENANT_SETTING


def run(metadata: MetaData, version_table: str, default_url: str, default_app_role: str) -> None:
    """Body of a service's migrations/env.py. The URL is the owner role's; the app role gets grants."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url") or default_url
    if not url:
        raise SystemExit("no database URL: set the service's MIGRATION_DATABASE_URL or run `make migrate`")
    app_role = config.get_main_option("app_role") or default_app_role
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
            compare_type=True,
            transaction_per_migration=True,
        )
        context.config.attributes["app_role"] = app_role
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def app_role() -> str:
    role = context.config.attributes.get("app_role", "")
    if not role:
        raise SystemExit("no app role: set the service's APP_ROLE so migrations can grant it access")
    return str(role)


def grant(table: str, privileges: str = "SELECT, INSERT, UPDATE, DELETE") -> None:
    op.execute(f'GRANT {privileges} ON TABLE "{table}" TO "{app_role()}"')


def tenant_table(
    table: str, column: str = "organization_id", privileges: str = "SELECT, INSERT, UPDATE, DELETE"
) -> None:
    """Confine a table to the organization set per transaction, for every role including its owner.

    With no organization set, current_setting(..., true) is NULL and the policy admits no row.
    """
    op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
    op.execute(
        f'CREATE POLICY tenant_isolation ON "{table}" '
        f"USING ({column} = nullif(current_setting('{TENANT_SETTING}', true), '')::uuid) "
        f"WITH CHECK ({column} = nullif(current_setting('{TENANT_SETTING}', true), '')::uuid)"
    )
    grant(table, privileges)
