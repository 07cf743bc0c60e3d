from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date

from hishamos.projects.v1 import (
    epic_pb2,
    epic_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    sprint_pb2,
    sprint_pb2_grpc,
    story_pb2,
    story_pb2_grpc,
    task_pb2,
    task_pb2_grpc,
)
from tests.conftest import Channels, Tenant, add_user
from tests.errors import failure
from tests.projects.support import add_member, create_project
from tests.standard import Case, StandardMethodsContract

PROJECTS = Case(
    service="projects",
    pb=project_pb2,
    stub=project_pb2_grpc.ProjectServiceStub,
    kind="Project",
    field="project",
    plural="projects",
    valid=lambda i: project_pb2.Project(display_name=f"Apollo {i}", slug=f"apollo-{i}", description="to the moon"),
    invalid=lambda: project_pb2.Project(
        display_name="", slug="Not A Slug", manager="users/1", description="x" * 10_001
    ),
    invalid_fields={"project.display_name", "project.slug", "project.manager", "project.description"},
    update=("display_name", "Artemis"),
    unique_field="slug",
    filter_true=lambda p: f'slug = "{p.slug}"',
)


class TestProjectStandardMethods(StandardMethodsContract):
    case = PROJECTS


def test_deleting_a_project_with_live_work_needs_force_and_undelete_restores_it_all(
    channels: Channels, tenant: Tenant
) -> None:
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    sprints = sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    m = tenant.metadata
    empty = create_project(channels, tenant)
    assert projects.DeleteProject(project_pb2.DeleteProjectRequest(name=empty.name), metadata=m).project.delete_time

    project = create_project(channels, tenant)
    dates = {"start_date": Date(year=2026, month=7, day=1), "end_date": Date(year=2026, month=7, day=14)}
    sprint = sprints.CreateSprint(
        sprint_pb2.CreateSprintRequest(parent=project.name, sprint=sprint_pb2.Sprint(display_name="S", **dates)),
        metadata=m,
    ).sprint
    story = stories.CreateStory(
        story_pb2.CreateStoryRequest(parent=project.name, story=story_pb2.Story(title="s", sprint=sprint.name)),
        metadata=m,
    ).story
    refused = failure(lambda: projects.DeleteProject(project_pb2.DeleteProjectRequest(name=project.name), metadata=m))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason == "PROJECT_NOT_EMPTY"
    assert refused.metadata == {"sprints": "1", "epics": "0", "stories": "1"}
    assert projects.GetProject(project_pb2.GetProjectRequest(name=project.name), metadata=m).project == project

    forced = projects.DeleteProject(project_pb2.DeleteProjectRequest(name=project.name, force=True), metadata=m)
    assert forced.project.delete_time.seconds > 0
    gone = failure(lambda: stories.GetStory(story_pb2.GetStoryRequest(name=story.name), metadata=m))
    assert gone.code == grpc.StatusCode.NOT_FOUND
    projects.UndeleteProject(project_pb2.UndeleteProjectRequest(name=project.name), metadata=m)
    assert stories.GetStory(story_pb2.GetStoryRequest(name=story.name), metadata=m).story == story
    assert sprints.GetSprint(sprint_pb2.GetSprintRequest(name=sprint.name), metadata=m).sprint == sprint


def test_an_archived_projects_work_is_read_only_until_it_is_unarchived(
    channels: Channels, tenant: Tenant, other_tenant: Tenant
) -> None:
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    m = tenant.metadata
    project = create_project(channels, tenant)
    story = stories.CreateStory(
        story_pb2.CreateStoryRequest(parent=project.name, story=story_pb2.Story(title="Before")), metadata=m
    ).story
    stale = project_pb2.ArchiveProjectRequest(name=project.name, etag="v99")
    assert failure(lambda: projects.ArchiveProject(stale, metadata=m)).code == grpc.StatusCode.ABORTED
    archive = project_pb2.ArchiveProjectRequest(name=project.name)
    f = failure(lambda: projects.ArchiveProject(archive, metadata=other_tenant.metadata))
    assert f.code == grpc.StatusCode.NOT_FOUND
    archived = projects.ArchiveProject(archive, metadata=m).project
    assert not archived.is_active and archived.etag not in ("", project.etag)
    assert projects.ArchiveProject(archive, metadata=m).project == archived  # already archived: nothing changes

    writes = [
        lambda: stories.CreateStory(
            story_pb2.CreateStoryRequest(parent=project.name, story=story_pb2.Story(title="After")), metadata=m
        ),
        lambda: stories.UpdateStory(
            story_pb2.UpdateStoryRequest(story=story_pb2.Story(name=story.name, title="Changed")), metadata=m
        ),
        lambda: stories.DeleteStory(story_pb2.DeleteStoryRequest(name=story.name), metadata=m),
    ]
    for write in writes:
        f = failure(write)
        assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROJECT_ARCHIVED")
    listed = stories.ListStories(story_pb2.ListStoriesRequest(parent=project.name), metadata=m).stories
    assert [s.name for s in listed] == [story.name] and listed[0].title == "Before"  # reads go on

    unarchived = projects.UnarchiveProject(project_pb2.UnarchiveProjectRequest(name=project.name), metadata=m)
    assert unarchived.project.is_active
    writes[0]()
    assert len(stories.ListStories(story_pb2.ListStoriesRequest(parent=project.name), metadata=m).stories) == 2


def test_every_work_item_of_an_archived_project_can_still_be_read(channels: Channels, tenant: Tenant) -> None:
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    members = member_pb2_grpc.MemberServiceStub(channels.direct("projects"))
    sprints = sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))
    epics = epic_pb2_grpc.EpicServiceStub(channels.direct("projects"))
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    tasks = task_pb2_grpc.TaskServiceStub(channels.direct("projects"))
    work_logs = task_pb2_grpc.WorkLogServiceStub(channels.direct("projects"))
    m = tenant.metadata
    project = create_project(channels, tenant)
    member = add_member(channels, dataclasses.replace(tenant, organization=project.name), tenant.user)
    dates = {"start_date": Date(year=2026, month=7, day=1), "end_date": Date(year=2026, month=7, day=14)}
    sprint = sprints.CreateSprint(
        sprint_pb2.CreateSprintRequest(parent=project.name, sprint=sprint_pb2.Sprint(display_name="S", **dates)),
        metadata=m,
    ).sprint
    epic = epics.CreateEpic(
        epic_pb2.CreateEpicRequest(parent=project.name, epic=epic_pb2.Epic(title="E")), metadata=m
    ).epic
    story = stories.CreateStory(
        story_pb2.CreateStoryRequest(
            parent=project.name, story=story_pb2.Story(title="s", sprint=sprint.name, epic=epic.name)
        ),
        metadata=m,
    ).story
    task = tasks.CreateTask(
        task_pb2.CreateTaskRequest(parent=story.name, task=task_pb2.Task(title="t")), metadata=m
    ).task
    log = task_pb2.WorkLog(user=tenant.user, work_time=Timestamp(seconds=1_780_000_000), duration_minutes=30)
    work_log = work_logs.CreateWorkLog(task_pb2.CreateWorkLogRequest(parent=task.name, work_log=log), metadata=m)
    gets: dict[str, Callable[[], Message]] = {
        "member": lambda: members.GetMember(member_pb2.GetMemberRequest(name=member.name), metadata=m).member,
        "sprint": lambda: sprints.GetSprint(sprint_pb2.GetSprintRequest(name=sprint.name), metadata=m).sprint,
        "epic": lambda: epics.GetEpic(epic_pb2.GetEpicRequest(name=epic.name), metadata=m).epic,
        "story": lambda: stories.GetStory(story_pb2.GetStoryRequest(name=story.name), metadata=m).story,
        "task": lambda: tasks.GetTask(task_pb2.GetTaskRequest(name=task.name), metadata=m).task,
        "work_log": lambda: (
            work_logs.GetWorkLog(task_pb2.GetWorkLogRequest(name=work_log.work_log.name), metadata=m).work_log
        ),
    }
    before = {kind: get() for kind, get in gets.items()}  # what Get answers must not change with the archive
    projects.ArchiveProject(project_pb2.ArchiveProjectRequest(name=project.name), metadata=m)

    assert {kind: get() for kind, get in gets.items()} == before
    lists = {
        "member": members.ListMembers(member_pb2.ListMembersRequest(parent=project.name), metadata=m).members,
        "sprint": sprints.ListSprints(sprint_pb2.ListSprintsRequest(parent=project.name), metadata=m).sprints,
        "epic": epics.ListEpics(epic_pb2.ListEpicsRequest(parent=project.name), metadata=m).epics,
        "story": stories.ListStories(story_pb2.ListStoriesRequest(parent=project.name), metadata=m).stories,
        "task": tasks.ListTasks(task_pb2.ListTasksRequest(parent=story.name), metadata=m).tasks,
        "work_log": work_logs.ListWorkLogs(task_pb2.ListWorkLogsRequest(parent=task.name), metadata=m).work_logs,
    }
    assert {kind: list(listed) for kind, listed in lists.items()} == {kind: [item] for kind, item in before.items()}

    writes = [
        lambda: sprints.StartSprint(sprint_pb2.StartSprintRequest(name=sprint.name), metadata=m),
        lambda: epics.DeleteEpic(epic_pb2.DeleteEpicRequest(name=epic.name), metadata=m),
        lambda: tasks.CreateTask(
            task_pb2.CreateTaskRequest(parent=story.name, task=task_pb2.Task(title="more")), metadata=m
        ),
        lambda: work_logs.DeleteWorkLog(task_pb2.DeleteWorkLogRequest(name=work_log.work_log.name), metadata=m),
        lambda: members.DeleteMember(member_pb2.DeleteMemberRequest(name=member.name), metadata=m),
    ]
    for write in writes:
        f = failure(write)
        assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROJECT_ARCHIVED")
    assert {kind: get() for kind, get in gets.items()} == before


def test_only_archive_project_archives_not_update_or_create(channels: Channels, tenant: Tenant) -> None:
    """is_active is output only: a developer (who may update projects but not archive them) cannot
    archive one through UpdateProject, and CreateProject always makes an active project."""
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    developer = add_user(channels, tenant, "developer")
    project = create_project(channels, tenant)
    archive = project_pb2.Project(name=project.name, is_active=False)
    named = project_pb2.UpdateProjectRequest(project=archive, update_mask=FieldMask(paths=["is_active"]))
    f = failure(lambda: projects.UpdateProject(named, metadata=developer.metadata))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask.paths[0]" in f.violations
    renamed = project_pb2.Project(name=project.name, display_name="Renamed", is_active=False)
    updated = projects.UpdateProject(project_pb2.UpdateProjectRequest(project=renamed), metadata=developer.metadata)
    assert updated.project.display_name == "Renamed" and updated.project.is_active  # no mask: is_active ignored
    denied = failure(
        lambda: projects.ArchiveProject(
            project_pb2.ArchiveProjectRequest(name=project.name), metadata=developer.metadata
        )
    )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    story = story_pb2.CreateStoryRequest(parent=project.name, story=story_pb2.Story(title="still writable"))
    assert stories.CreateStory(story, metadata=developer.metadata).story.title == "still writable"

    inactive = project_pb2.Project(display_name="Born archived?", slug="born-archived", is_active=False)
    made = projects.CreateProject(
        project_pb2.CreateProjectRequest(parent=tenant.organization, project=inactive), metadata=developer.metadata
    ).project
    assert made.is_active
