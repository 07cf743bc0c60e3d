"""Helpers for resources that live in a project."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import pytest

from hishamos.projects.v1 import member_pb2, member_pb2_grpc, project_pb2, project_pb2_grpc
from tests.conftest import Channels, Tenant
from tests.standard import StandardMethodsContract


def create_project(channels: Channels, tenant: Tenant) -> project_pb2.Project:
    api = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    slug = f"p-{uuid.uuid4().hex[:10]}"
    project = project_pb2.Project(display_name=f"Project {slug}", slug=slug)
    request = project_pb2.CreateProjectRequest(parent=tenant.organization, project=project)
    return api.CreateProject(request, metadata=tenant.metadata, timeout=10).project


def add_member(channels: Channels, team: Tenant, user: str, role: int = 0) -> member_pb2.Member:
    """`user` on the team of `team`'s project (its `organization`, as `in_project` makes it)."""
    request = member_pb2.CreateMemberRequest(parent=team.organization, member=member_pb2.Member(user=user, role=role))  # type: ignore[arg-type]
    return (
        member_pb2_grpc.MemberServiceStub(channels.direct("projects"))
        .CreateMember(request, metadata=team.metadata, timeout=10)
        .member
    )


def in_project(channels: Channels, tenant: Tenant) -> Tenant:
    """The tenant with a fresh project standing in as its `organization`, the parent the standard
    contract (tests/standard.py) creates and lists under: the contract then checks a project's
    child resource exactly as it checks an organization's."""
    return dataclasses.replace(tenant, organization=create_project(channels, tenant).name)


class ProjectChildContract(StandardMethodsContract):
    """The standard contract with a fresh parent (a project by default; a story or a task where
    `place` says so) standing in for each tenant's organization."""

    place: Callable[[Channels, Tenant], Tenant] = staticmethod(in_project)

    @pytest.fixture
    def tenant(self, channels: Channels, tenant: Tenant) -> Tenant:
        return self.place(channels, tenant)

    @pytest.fixture
    def other_tenant(self, channels: Channels, other_tenant: Tenant) -> Tenant:
        return self.place(channels, other_tenant)
