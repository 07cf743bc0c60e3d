"""Direct SQL access for tests that must look behind the API (secrets at rest, row-level security)."""

from __future__ import annotations

from typing import Any

import psycopg

from hishamos_devstack.stack import Stack


def superuser(stack: Stack, service: str) -> psycopg.Connection[Any]:
    """Connects as the cluster superuser, which bypasses row-level security."""
    url = stack.postgres.admin_url.replace("postgresql+psycopg", "postgresql").rsplit("/", 1)[0]
    return psycopg.connect(f"{url}/hishamos_{service}", autocommit=True)


def app_role(stack: Stack, service: str) -> psycopg.Connection[Any]:
    """Connects as the role the service itself uses."""
    return psycopg.connect(stack.databases[service].app_url.replace("postgresql+psycopg", "postgresql"))
