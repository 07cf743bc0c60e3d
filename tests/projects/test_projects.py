from __future__ import annotations

import grpc
from google.type.date_pb2 import Date

from hishamos.projects.v1 import project_pb2, project_pb2_grpc, sprint_pb2, sprint_pb2_grpc, story_pb2, story_pb2_grpc
from tests.conftest import Channels, Tenant
from tests.errors import failure
from tests.projects.support import create_project
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
    assert not archived.is_active and archived.etag == "v2"
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
