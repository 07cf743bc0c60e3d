"""What every service's Alembic environment and migrations share: the runner and row-level security."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError
from sqlalchemy import MetaData, create_engine, pool
from sqlalchemy.dialects.postgresql import JSONB

from hishamos_kit.db import RETENTION_SETTING, TENANT_SETTING


class UnknownRevision(Exception):
    """The database is at a revision these migrations do not have: another branch or a newer release migrated
    it. Alembic says only `Can't locate revision identified by '…'`, which names neither database nor cause."""

    def __init__(self, version_table: str, revisions: list[str]) -> None:
        self.version_table = version_table
        self.revisions = revisions
        super().__init__(
            f"the database is at revision {', '.join(revisions)} ({version_table}), which these migrations do not have"
        )


def _unknown_revisions() -> list[str]:
    known = {script.revision for script in context.script.walk_revisions()}
    return [revision for revision in context.get_context().get_current_heads() if revision not in known]


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
        context.config.attributes["version_table"] = version_table
        with context.begin_transaction():
            try:
                context.run_migrations()
            except CommandError as exc:
                if unknown := _unknown_revisions():
                    raise UnknownRevision(version_table, unknown) from exc
                raise
    engine.dispose()


def app_role() -> str:
    role = context.config.attributes.get("app_role", "")
    if not role:
        raise SystemExit("no app role: set the service's APP_ROLE so migrations can grant it access")
    return str(role)


def grant_version_table(revoke: bool = False) -> None:
    """Let the app role read which revision the schema is at (`hishamos_kit.schema`)."""
    table = context.config.attributes["version_table"]
    if revoke:
        op.execute(f'REVOKE SELECT ON TABLE "{table}" FROM "{app_role()}"')
    else:
        grant(table, "SELECT")


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


def retained(*tables: str) -> None:
    """Let a retention pass (`hishamos_kit.retention`), and only it, read and delete rows of every
    organization in tables under row-level security (policies add up: these or the tenant's)."""
    admitted = f"current_setting('{RETENTION_SETTING}', true) = 'on'"
    for table in tables:
        for command in ("SELECT", "DELETE"):
            op.execute(
                f'CREATE POLICY retention_{command.lower()} ON "{table}" FOR {command} TO "{app_role()}" '
                f"USING ({admitted})"
            )


def unretained(*tables: str) -> None:
    """Undo `retained`."""
    for table in tables:
        for command in ("select", "delete"):
            op.execute(f'DROP POLICY retention_{command} ON "{table}"')


# Table builders for the columns every table shares (hishamos_kit.db). They are part of the schema's
# history: change them only together with a new migration, never to reshape tables already created.


def base_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    ]


def resource_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        *base_columns(),
    ]


def create_tenant_resource_table(name: str, *items: Any) -> None:
    """A TenantResource table: its own columns, the base ones, the standard indexes, and RLS."""
    op.create_table(
        name,
        *items,
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        *resource_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    op.create_index(op.f(f"ix_{name}_organization_id"), name, ["organization_id"])
    op.create_index(f"ix_{name}_organization_id_created_at", name, ["organization_id", sa.text("created_at DESC")])
    tenant_table(name)


def create_idempotency_keys() -> None:
    """The request-id ledger of hishamos_kit.resources.IdempotencyKeyColumns."""
    op.create_table(
        "idempotency_keys",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        *base_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint(
            "organization_id",
            "method",
            "request_id",
            name=op.f("uq_idempotency_keys_organization_id_method_request_id"),
        ),
    )
    tenant_table("idempotency_keys")


def create_jobs() -> None:
    """The queue of hishamos_kit.jobs.JobColumns; the app role may read, add and update jobs, never delete them."""
    op.create_table(
        "jobs",
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        *base_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_jobs_kind_key")),
    )
    op.create_index("ix_jobs_due", "jobs", ["run_at"], postgresql_where=sa.text("finished_at IS NULL"))
    grant("jobs", "SELECT, INSERT, UPDATE")


def add_job_turns() -> None:
    """The columns of `JobColumns` by which tenants take turns; waiting jobs keep their order."""
    op.add_column("jobs", sa.Column("tenant", sa.String(length=100), server_default="", nullable=False))
    op.add_column(
        "jobs", sa.Column("turn_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)
    )
    op.execute("UPDATE jobs SET turn_at = run_at WHERE finished_at IS NULL")
    op.create_index(
        "ix_jobs_tenant_turn_at", "jobs", ["tenant", "turn_at"], postgresql_where=sa.text("finished_at IS NULL")
    )


def index_job_turns() -> None:
    """The claim walks unfinished jobs by turn (without this index it sorted the whole backlog each
    time); the index by run_at it walked before serves nothing now."""
    op.create_index("ix_jobs_turn_at", "jobs", ["turn_at"], postgresql_where=sa.text("finished_at IS NULL"))
    op.drop_index("ix_jobs_due", table_name="jobs")


def split_job_indexes() -> None:
    """Waiting jobs by turn and retrying ones by due time, each index holding only its own: one index
    over both made every claim walk past every job waiting out a backoff."""
    waiting, retrying = "finished_at IS NULL AND attempts = 0", "finished_at IS NULL AND attempts > 0"
    op.create_index("ix_jobs_waiting_turn_at", "jobs", ["turn_at"], postgresql_where=sa.text(waiting))
    op.create_index("ix_jobs_retrying_run_at", "jobs", ["run_at"], postgresql_where=sa.text(retrying))
    op.drop_index("ix_jobs_turn_at", table_name="jobs")
    op.drop_index("ix_jobs_tenant_turn_at", table_name="jobs")
    op.create_index("ix_jobs_tenant_turn_at", "jobs", ["tenant", "turn_at"], postgresql_where=sa.text(waiting))
