"""Every service's migrations upgrade, downgrade to nothing and upgrade again, with no drift from the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config

from hishamos_devstack.stack import ROOT, SERVICES, Ports, Stack, migrate


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A PostgreSQL of its own: downgrading must not pull tables from under the other tests."""
    stack = Stack(Path(tmp_path_factory.mktemp("migrations")), Ports.free(), progress=lambda _: None)
    stack.start_postgres()
    yield stack
    stack.stop()


def tables(stack: Stack, service: str) -> set[str]:
    url = stack.databases[service].owner_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
    return {name for (name,) in rows}


@pytest.mark.parametrize("service", SERVICES)
def test_upgrade_downgrade_upgrade_without_drift(fresh: Stack, service: str) -> None:
    _, owner_url, app_role = fresh.database_urls(service)
    migrate(service, owner_url, app_role)
    created = tables(fresh, service)
    assert f"alembic_version_{service}" in created and "idempotency_keys" in created
    migrate(service, owner_url, app_role, "base", downgrade=True)
    assert tables(fresh, service) == {f"alembic_version_{service}"}
    migrate(service, owner_url, app_role)
    assert tables(fresh, service) == created
    cfg = Config(str(ROOT / "services" / service / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", owner_url.replace("%", "%%"))
    cfg.set_main_option("app_role", app_role)
    command.check(cfg)  # raises when the models and the migrations disagree
