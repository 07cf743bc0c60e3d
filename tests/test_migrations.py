"""Every service's migrations upgrade, downgrade to nothing and upgrade again, with no drift from the models."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from alembic import command
from alembic.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_declares_the_revision_its_migrations_end_at(service: str) -> None:
    """What a service waits for at start (`SCHEMA`) is the newest migration it ships."""
    from alembic.script import ScriptDirectory

    declared = importlib.import_module(f"hishamos_{service}.models").SCHEMA
    head = ScriptDirectory.from_config(Config(str(ROOT / "services" / service / "alembic.ini"))).get_current_head()
    assert declared.revision == head


def test_a_service_serves_only_once_its_database_has_its_schema(fresh: Stack) -> None:
    """Pods start while their migration job may still run: on the old schema a service would say
    SERVING and fail its calls. It waits instead, saying for what, and serves once migrated."""
    _, owner_url, app_role = fresh.database_urls("agents")
    migrate("agents", owner_url, app_role, "base", downgrade=True)
    migrate("agents", owner_url, app_role, "0002")  # one release back
    log = fresh.data_dir / "agents-waiting.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hishamos_agents"],
            env={**fresh.service_env("agents"), "HISHAMOS_AGENTS_METRICS_PORT": "-1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    target = f"127.0.0.1:{fresh.ports.services['agents']}"
    try:
        deadline = time.monotonic() + 30
        while "waiting to serve" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "this build needs revision 0003: run the service's migrations" in log.read_text()
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=2)  # not listening yet
        migrate("agents", owner_url, app_role)
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.terminate()
        process.wait(timeout=30)
