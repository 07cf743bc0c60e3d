"""Projects, as knowledge asks it: whether the project a document names exists."""

from __future__ import annotations

from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_kit import outbound
from hishamos_kit.errors import Violations
from hishamos_kit.outbound import ServiceTokens
from hishamos_kit.resources import ResourcePath

PROJECT = ResourcePath("organizations/{organization}/projects/{project}")
READ_PROJECTS = "projects.projects.get"


class Projects:
    def __init__(self, identity_target: str, projects_target: str, credential: str) -> None:
        self._identity = outbound.channel(identity_target)
        self._channel = outbound.channel(projects_target)
        self._tokens = ServiceTokens(self._identity, credential, (READ_PROJECTS,))
        self._projects = project_pb2_grpc.ProjectServiceStub(self._channel)

    async def check(self, violations: Violations, field: str, name: str) -> None:
        """`name` must be a project of the organization that is not deleted. Asked whenever a document
        is given a project, never remembered: a project deleted a moment ago takes no new documents."""
        organization_id, _ = PROJECT.parse(name, field)
        request = project_pb2.GetProjectRequest(name=name)
        found = await self._tokens.find(organization_id, self._projects.GetProject, request, "projects")
        if found is None or found.project.HasField("delete_time"):
            violations.add(field, "names no project of this organization")
