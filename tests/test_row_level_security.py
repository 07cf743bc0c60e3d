"""Row-level security stops a query that forgets to scope itself by organization."""

from __future__ import annotations

import pytest

from hishamos_devstack.stack import Stack
from tests.conftest import Tenant
from tests.db import app_role, superuser

TENANT_TABLES = {
    "identity": ["users", "refresh_tokens", "idempotency_keys", "organizations"],
    "projects": ["projects", "idempotency_keys"],
    "agents": ["platforms", "idempotency_keys"],
    "knowledge": ["documents", "idempotency_keys"],
}


@pytest.mark.parametrize("service", sorted(TENANT_TABLES))
def test_app_role_without_organization_sees_no_rows(stack: Stack, tenant: Tenant, service: str) -> None:
    with superuser(stack, service) as conn:
        role = conn.execute(
            "select rolsuper, rolbypassrls from pg_roles where rolname = %s", (stack.databases[service].app,)
        ).fetchone()
        assert role == (False, False)
        for table in TENANT_TABLES[service]:
            forced = conn.execute(
                "select relrowsecurity and relforcerowsecurity from pg_class where relname = %s", (table,)
            )
            assert forced.fetchone() == (True,), table
    with app_role(stack, service) as conn:
        for table in TENANT_TABLES[service]:
            assert conn.execute(f"select count(*) from {table}").fetchone() == (0,), table


@pytest.mark.parametrize("service", sorted(TENANT_TABLES))
def test_every_table_with_an_organization_is_under_forced_row_level_security(stack: Stack, service: str) -> None:
    """Found from the catalog, not listed by hand: a new tenant table without RLS fails here."""
    with superuser(stack, service) as conn:
        tables = conn.execute(
            "select c.relname, c.relrowsecurity and c.relforcerowsecurity from pg_class c "
            "join pg_attribute a on a.attrelid = c.oid and a.attname = 'organization_id' "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where c.relkind = 'r' and n.nspname = 'public'"
        ).fetchall()
    assert set(TENANT_TABLES[service]) - {"organizations"} <= {name for name, _ in tables}
    assert [name for name, forced in tables if not forced] == []


def test_app_role_sees_only_the_organization_it_sets(stack: Stack, tenant: Tenant, other_tenant: Tenant) -> None:
    org_id = tenant.organization.split("/")[1]
    with superuser(stack, "identity") as conn:
        assert conn.execute("select count(distinct organization_id) from users").fetchone()[0] >= 2  # type: ignore[index]
    with app_role(stack, "identity") as conn:
        conn.execute("select set_config('app.organization_id', %s, true)", (org_id,))
        rows = conn.execute("select distinct organization_id::text from users").fetchall()
        assert rows == [(org_id,)]
        orgs = conn.execute("select id::text from organizations").fetchall()
        assert orgs == [(org_id,)]
        # Writing a row for another organization is refused by the policy's WITH CHECK.
        other = other_tenant.organization.split("/")[1]
        with pytest.raises(Exception, match="row-level security"):
            conn.execute(
                "insert into users (id, organization_id, email, username, password_hash) "
                "values (gen_random_uuid(), %s, 'x@y.test', 'intruder', 'x')",
                (other,),
            )
