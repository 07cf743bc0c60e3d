"""ListStories answers from a cache of encoded stories (hishamos_projects.fastlist): after every kind of
write, each listed story must still be exactly what GetStory returns."""

from __future__ import annotations

import grpc
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from hishamos.projects.v1 import (
    project_pb2,
    project_pb2_grpc,
    sprint_pb2,
    sprint_pb2_grpc,
    story_pb2,
    task_pb2,
    task_pb2_grpc,
)
from tests.conftest import Channels, Tenant
from tests.errors import failure
from tests.pages import every_page
from tests.projects.support import in_project
from tests.projects.test_stories import api, create, make_sprint, move, update

Story = story_pb2.Story


def pages(channels: Channels, team: Tenant, show_deleted: bool = False) -> list[Story]:
    """Every story of the project in rank order, two a page."""
    stories: list[Story] = []
    token = ""
    while True:
        request = story_pb2.ListStoriesRequest(
            parent=team.organization, page_size=2, order_by="rank", page_token=token, show_deleted=show_deleted
        )
        reply = api(channels).ListStories(request, metadata=team.metadata, timeout=10)
        stories.extend(reply.stories)
        token = reply.next_page_token
        if not token:
            return stories


def as_got(channels: Channels, team: Tenant, stories: list[Story]) -> list[Story]:
    return [
        api(channels).GetStory(story_pb2.GetStoryRequest(name=s.name), metadata=team.metadata, timeout=10).story
        for s in stories
    ]


def listed(channels: Channels, team: Tenant, show_deleted: bool = False) -> list[Story]:
    """The listed stories, checked against GetStory one by one, read twice (the second from the cache)."""
    first = pages(channels, team, show_deleted=show_deleted)
    assert first == as_got(channels, team, first)
    assert pages(channels, team, show_deleted=show_deleted) == first
    return first


def test_a_listed_story_is_what_get_returns_after_every_kind_of_write(channels: Channels, tenant: Tenant) -> None:
    team = in_project(channels, tenant)
    sprint = make_sprint(channels, team)
    a, b, c = (create(channels, team, Story(title=t, sprint=sprint.name)) for t in "abc")
    assert [s.title for s in listed(channels, team)] == ["a", "b", "c"]

    # Update: a new version of the row.
    update(channels, team, Story(name=a.name, title="a2", etag=a.etag), "title")
    assert [s.title for s in listed(channels, team)] == ["a2", "b", "c"]

    # Work logged on a task of b: the story's version stays, its logged hours change.
    task = (
        task_pb2_grpc.TaskServiceStub(channels.direct("projects"))
        .CreateTask(task_pb2.CreateTaskRequest(parent=b.name, task=task_pb2.Task(title="t")), metadata=team.metadata)
        .task
    )
    work_logs = task_pb2_grpc.WorkLogServiceStub(channels.direct("projects"))
    log = work_logs.CreateWorkLog(
        task_pb2.CreateWorkLogRequest(
            parent=task.name,
            work_log=task_pb2.WorkLog(user=team.user, work_time=Timestamp(seconds=1_780_000_000), duration_minutes=45),
        ),
        metadata=team.metadata,
    ).work_log
    assert [s.logged_hours for s in listed(channels, team)] == [0, 0.75, 0]
    work_logs.DeleteWorkLog(task_pb2.DeleteWorkLogRequest(name=log.name), metadata=team.metadata)
    assert [s.logged_hours for s in listed(channels, team)] == [0, 0, 0]
    work_logs.UndeleteWorkLog(task_pb2.UndeleteWorkLogRequest(name=log.name), metadata=team.metadata)

    # Delete and undelete: hidden, then shown with its delete time, then back.
    api(channels).DeleteStory(story_pb2.DeleteStoryRequest(name=b.name), metadata=team.metadata)
    assert [s.title for s in listed(channels, team)] == ["a2", "c"]
    assert [(s.title, s.HasField("delete_time")) for s in listed(channels, team, show_deleted=True)] == [
        ("a2", False),
        ("b", True),
        ("c", False),
    ]
    api(channels).UndeleteStory(story_pb2.UndeleteStoryRequest(name=b.name), metadata=team.metadata)
    assert [(s.title, s.logged_hours) for s in listed(channels, team)] == [("a2", 0), ("b", 0.75), ("c", 0)]

    # Moves change the order (and renumber ranks, which are not in the message).
    for _ in range(18):  # each move halves the gap after `a2`: enough to renumber the project
        move(channels, team, c.name, after=a.name)
        move(channels, team, b.name, after=a.name)
    assert [s.title for s in listed(channels, team)] == ["a2", "b", "c"]

    # Completing the sprint moves the unfinished stories back to the backlog with a raw UPDATE.
    sprints = sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))
    sprints.StartSprint(sprint_pb2.StartSprintRequest(name=sprint.name), metadata=team.metadata)
    sprints.CompleteSprint(sprint_pb2.CompleteSprintRequest(name=sprint.name), metadata=team.metadata)
    assert [s.sprint for s in listed(channels, team)] == ["", "", ""]


def test_a_deleted_project_lists_nothing_even_when_its_stories_were_listed(channels: Channels, tenant: Tenant) -> None:
    team = in_project(channels, tenant)
    create(channels, team, Story(title="a"))
    assert len(listed(channels, team)) == 1
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    projects.DeleteProject(project_pb2.DeleteProjectRequest(name=team.organization, force=True), metadata=team.metadata)
    assert failure(lambda: pages(channels, team)).code == grpc.StatusCode.NOT_FOUND


def test_a_page_of_long_stories_holds_what_a_default_client_accepts(channels: Channels, tenant: Tenant) -> None:
    """Forty stories of the longest kind (about 120 KB each) are more than a gRPC client accepts in one
    message by default (4 MiB): a page holds fewer than its page_size, and the token goes on from there."""
    team = in_project(channels, tenant)
    fields = Struct()
    fields.update({f"k{j}": "v" * 1000 for j in range(60)})
    longest = Story(description="d" * 10_000, acceptance_criteria=["a" * 1000] * 50, custom_fields=fields)

    def story(i: int) -> Story:
        made = Story(title=f"long {i}")
        made.MergeFrom(longest)
        return made

    for batch in range(2):  # a batch's answer holds every story it made
        requests = [story_pb2.CreateStoryRequest(story=story(i)) for i in range(batch * 20, batch * 20 + 20)]
        api(channels).BatchCreateStories(
            story_pb2.BatchCreateStoriesRequest(parent=team.organization, requests=requests),
            metadata=team.metadata,
            timeout=60,
        )
    request = story_pb2.ListStoriesRequest(parent=team.organization, page_size=1000)
    first = api(channels).ListStories(request, metadata=team.metadata, timeout=30)  # a default channel: 4 MiB
    assert 1 <= len(first.stories) < 40 and first.next_page_token
    walked = every_page(api(channels).ListStories, request, "stories", team.metadata)
    assert sorted(s.title for s in walked) == sorted(f"long {i}" for i in range(40))
