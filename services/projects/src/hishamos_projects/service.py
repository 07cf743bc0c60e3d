"""The projects gRPC API: thin handlers over the standard methods."""

from __future__ import annotations

from grpc.aio import ServicerContext as Context

from hishamos.projects.v1 import project_pb2 as pb
from hishamos.projects.v1 import project_pb2_grpc
from hishamos_kit.auth import current_principal
from hishamos_kit.db import Database
from hishamos_kit.server import Service
from hishamos_kit.standard import StandardMethods
from hishamos_projects.models import IdempotencyKey
from hishamos_projects.projects import ProjectType


class ProjectService(project_pb2_grpc.ProjectServiceServicer):
    def __init__(self, db: Database) -> None:
        self.projects = StandardMethods(db, ProjectType(), IdempotencyKey)

    async def CreateProject(self, request: pb.CreateProjectRequest, context: Context) -> pb.CreateProjectResponse:
        project = await self.projects.create(current_principal(), request.parent, request.project, request.request_id)
        return pb.CreateProjectResponse(project=project)

    async def GetProject(self, request: pb.GetProjectRequest, context: Context) -> pb.GetProjectResponse:
        return pb.GetProjectResponse(project=await self.projects.get(current_principal(), request.name))

    async def ListProjects(self, request: pb.ListProjectsRequest, context: Context) -> pb.ListProjectsResponse:
        projects, token = await self.projects.list(current_principal(), request)
        return pb.ListProjectsResponse(projects=projects, next_page_token=token)

    async def UpdateProject(self, request: pb.UpdateProjectRequest, context: Context) -> pb.UpdateProjectResponse:
        project = await self.projects.update(current_principal(), request.project, request.update_mask)
        return pb.UpdateProjectResponse(project=project)

    async def DeleteProject(self, request: pb.DeleteProjectRequest, context: Context) -> pb.DeleteProjectResponse:
        return pb.DeleteProjectResponse(
            project=await self.projects.delete(current_principal(), request.name, request.etag)
        )

    async def UndeleteProject(self, request: pb.UndeleteProjectRequest, context: Context) -> pb.UndeleteProjectResponse:
        project = await self.projects.undelete(current_principal(), request.name, request.etag)
        return pb.UndeleteProjectResponse(project=project)


async def build(db: Database) -> list[Service]:
    return [
        Service(
            "hishamos.projects.v1.ProjectService",
            ProjectService(db),
            project_pb2_grpc.add_ProjectServiceServicer_to_server,
        )
    ]
