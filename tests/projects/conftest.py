"""Fixtures every projects test module shares."""

from __future__ import annotations

import pytest

from tests.conftest import Channels, Tenant
from tests.projects.support import in_project


@pytest.fixture
def team(channels: Channels, tenant: Tenant) -> Tenant:
    """The tenant with a fresh project standing in as its `organization` (see `in_project`)."""
    return in_project(channels, tenant)
