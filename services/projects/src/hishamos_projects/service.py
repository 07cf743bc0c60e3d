"""The projects gRPC API: thin handlers over the standard methods and the domain functions."""

from __future__ import annotations

from grpc.aio import ServicerContext as Context
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.projects.v1 import (
    epic_pb2,
    epic_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    project_pb2_grpc,
    sprint_pb2,
    sprint_pb2_grpc,
    story_pb2,
    story_pb2_grpc,
    task_pb2,
    task_pb2_grpc,
)
from hishamos.projects.v1 import project_pb2 as pb
from hishamos_kit import listing, validate
from hishamos_kit.auth import current_principal, require
from hishamos_kit.db import Database
from hishamos_kit.errors import InvalidArgument, Violations
from hishamos_kit.handlers import standard_handlers
from hishamos_kit.server import Service
from hishamos_projects import boards, directory, sprints, stories
from hishamos_projects.children import PROJECT, ChildMethods, live_project, own_parent
from hishamos_projects.epics import EpicType
from hishamos_projects.members import MemberType
from hishamos_projects.models import IdempotencyKey, Sprint, Story
from hishamos_projects.projects import ProjectMethods, ProjectType
from hishamos_projects.settings import ProjectsSettings
from hishamos_projects.tasks import TaskType, WorkLogType


@standard_handlers(pb, "Project", "project", "projects")
class ProjectService(project_pb2_grpc.ProjectServiceServicer):
    """The standard handlers (Delete takes `force`), and Archive/Unarchive."""

    def __init__(self, db: Database) -> None:
        self.methods = ProjectMethods(db, ProjectType(), IdempotencyKey)

    async def DeleteProject(self, request: pb.DeleteProjectRequest, context: Context) -> pb.DeleteProjectResponse:
        project = await self.methods.delete_project(
            current_principal(), request.name, request.etag, force=request.force
        )
        return pb.DeleteProjectResponse(project=project)

    async def ArchiveProject(self, request: pb.ArchiveProjectRequest, context: Context) -> pb.ArchiveProjectResponse:
        project = await self.methods.set_active(current_principal(), request.name, request.etag, active=False)
        return pb.ArchiveProjectResponse(project=project)

    async def UnarchiveProject(
        self, request: pb.UnarchiveProjectRequest, context: Context
    ) -> pb.UnarchiveProjectResponse:
        project = await self.methods.set_active(current_principal(), request.name, request.etag, active=True)
        return pb.UnarchiveProjectResponse(project=project)


@standard_handlers(member_pb2, "Member", "member", "members")
class MemberService(member_pb2_grpc.MemberServiceServicer):
    def __init__(self, db: Database) -> None:
        self.methods = ChildMethods(db, MemberType(), IdempotencyKey)


@standard_handlers(sprint_pb2, "Sprint", "sprint", "sprints")
class SprintService(sprint_pb2_grpc.SprintServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
        self.methods = ChildMethods(db, sprints.SprintType(), IdempotencyKey)
        self.stories = ChildMethods(db, stories.StoryType(), IdempotencyKey)

    async def GetSprintBoard(
        self, request: sprint_pb2.GetSprintBoardRequest, context: Context
    ) -> sprint_pb2.GetSprintBoardResponse:
        sprint = request.name.removesuffix("/board")
        if sprint == request.name:
            raise InvalidArgument({"name": "must be a board name like `organizations/…/sprints/…/board`"})
        require("projects.stories.list", "a board shows the sprint's stories, so reading it")

        async def compute(session: AsyncSession, row: Sprint) -> sprint_pb2.SprintBoard:
            return await boards.board(session, row, self.stories.present)

        board = await self.methods.read(current_principal(), sprint, compute)
        return sprint_pb2.GetSprintBoardResponse(sprint_board=board)

    async def ComputeSprintBurndown(
        self, request: sprint_pb2.ComputeSprintBurndownRequest, context: Context
    ) -> sprint_pb2.ComputeSprintBurndownResponse:
        require("projects.stories.list", "a burndown shows the sprint's story points, so reading it")
        return await self.methods.read(current_principal(), request.name, boards.burndown)

    async def ComputeSprintVelocity(
        self, request: sprint_pb2.ComputeSprintVelocityRequest, context: Context
    ) -> sprint_pb2.ComputeSprintVelocityResponse:
        principal = current_principal()
        (project_id,) = own_parent(principal, PROJECT, request.parent)
        require("projects.stories.list", "velocity sums the sprints' story points, so reading it")
        v = Violations()
        validate.number(v, "sprint_count", request.sprint_count, high=100)
        v.raise_if_any()
        async with self.db.tenant(principal.organization_id) as session:
            await live_project(session, project_id, request.parent)
            return await boards.velocity(session, project_id, request.sprint_count or 10)

    async def StartSprint(
        self, request: sprint_pb2.StartSprintRequest, context: Context
    ) -> sprint_pb2.StartSprintResponse:
        sprint = await self.methods.act(current_principal(), request.name, request.etag, sprints.start, lock="update")
        return sprint_pb2.StartSprintResponse(sprint=sprint)

    async def CompleteSprint(
        self, request: sprint_pb2.CompleteSprintRequest, context: Context
    ) -> sprint_pb2.CompleteSprintResponse:
        moved: list[str] = []
        require("projects.stories.update", "completing a sprint moves its unfinished stories, so completing it")

        async def change(session: AsyncSession, row: Sprint) -> None:
            await sprints.complete(session, row)
            await boards.keep_history(session, row)  # before its unfinished stories move on
            moved.extend(await stories.release_unfinished(session, row, request.next_sprint))

        sprint = await self.methods.act(current_principal(), request.name, request.etag, change, lock="update")
        return sprint_pb2.CompleteSprintResponse(sprint=sprint, moved_stories=moved)


@standard_handlers(epic_pb2, "Epic", "epic", "epics")
class EpicService(epic_pb2_grpc.EpicServiceServicer):
    def __init__(self, db: Database) -> None:
        self.methods = ChildMethods(db, EpicType(), IdempotencyKey)


@standard_handlers(story_pb2, "Story", "story", "stories")
class StoryService(story_pb2_grpc.StoryServiceServicer):
    def __init__(self, db: Database) -> None:
        self.methods = ChildMethods(db, stories.StoryType(), IdempotencyKey)

    async def BatchCreateStories(
        self, request: story_pb2.BatchCreateStoriesRequest, context: Context
    ) -> story_pb2.BatchCreateStoriesResponse:
        check_batch(request, most=500)
        return await self.methods.create_many(
            current_principal(),
            request.parent,
            [r.story for r in request.requests],
            request.request_id,
            story_pb2.BatchCreateStoriesResponse,
            lambda made: story_pb2.BatchCreateStoriesResponse(stories=made),
        )

    async def MoveStory(self, request: story_pb2.MoveStoryRequest, context: Context) -> story_pb2.MoveStoryResponse:
        after = request.WhichOneof("position") == "after"
        target = request.after if after else request.before
        require("projects.stories.get", "the answer is the story moved, so moving it")

        async def change(session: AsyncSession, row: Story) -> None:
            await stories.move(session, row, target, after=after)

        story = await self.methods.act(current_principal(), request.name, request.etag, change, lock="update")
        return story_pb2.MoveStoryResponse(story=story)


def check_batch(batch: story_pb2.BatchCreateStoriesRequest, most: int) -> None:
    """AIP-233: 1..most requests, each with no parent or the batch's, and no request_id of its own (the
    batch's makes the whole of it idempotent). Its answer holds every story it makes, about as large as
    the request: a batch whose answer a client could not receive (4 MiB unless it asks for more) would
    create its stories and fail all the same, and a retry would create them again."""
    v = Violations()
    v.check(0 < len(batch.requests) <= most, "requests", f"must hold 1-{most} requests")
    v.check(
        batch.ByteSize() <= listing.MAX_PAGE_BYTES,
        "requests",
        f"must total at most {listing.MAX_PAGE_BYTES >> 20} MiB, as the answer repeats them; send fewer at a time",
    )
    for i, request in enumerate(batch.requests):
        v.check(
            request.parent in ("", batch.parent), f"requests[{i}].parent", "must be empty or equal the batch's parent"
        )
        v.check(not request.request_id, f"requests[{i}].request_id", "must be empty: set the batch's request_id")
    v.raise_if_any()


@standard_handlers(task_pb2, "Task", "task", "tasks")
class TaskService(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, db: Database) -> None:
        self.methods = ChildMethods(db, TaskType(), IdempotencyKey)


@standard_handlers(task_pb2, "WorkLog", "work_log", "work_logs")
class WorkLogService(task_pb2_grpc.WorkLogServiceServicer):
    def __init__(self, db: Database) -> None:
        self.methods = ChildMethods(db, WorkLogType(), IdempotencyKey)


async def build(db: Database, settings: ProjectsSettings) -> list[Service]:
    if not settings.service_credential:
        raise SystemExit("HISHAMOS_PROJECTS_SERVICE_CREDENTIAL is not set; `make up` sets it for the local stack")
    directory.install(directory.Directory(settings.identity_target, settings.service_credential))
    # mypy sees the generated servicers' methods as abstract; @standard_handlers adds them at import.
    sprint_service = SprintService(db)  # type: ignore[abstract]
    epic_service = EpicService(db)  # type: ignore[abstract]
    story_service = StoryService(db)  # type: ignore[abstract]
    task_service = TaskService(db)  # type: ignore[abstract]
    work_log_service = WorkLogService(db)  # type: ignore[abstract]
    return [
        Service(
            "hishamos.projects.v1.ProjectService",
            ProjectService(db),  # type: ignore[abstract]
            project_pb2_grpc.add_ProjectServiceServicer_to_server,
        ),
        Service(
            "hishamos.projects.v1.MemberService",
            MemberService(db),  # type: ignore[abstract]
            member_pb2_grpc.add_MemberServiceServicer_to_server,
        ),
        Service(
            "hishamos.projects.v1.SprintService",
            sprint_service,
            sprint_pb2_grpc.add_SprintServiceServicer_to_server,
        ),
        Service("hishamos.projects.v1.EpicService", epic_service, epic_pb2_grpc.add_EpicServiceServicer_to_server),
        Service("hishamos.projects.v1.StoryService", story_service, story_pb2_grpc.add_StoryServiceServicer_to_server),
        Service("hishamos.projects.v1.TaskService", task_service, task_pb2_grpc.add_TaskServiceServicer_to_server),
        Service(
            "hishamos.projects.v1.WorkLogService", work_log_service, task_pb2_grpc.add_WorkLogServiceServicer_to_server
        ),
    ]
