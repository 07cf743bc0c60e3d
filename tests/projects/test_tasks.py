from __future__ import annotations

import dataclasses
import time
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date

from hishamos.projects.v1 import sprint_pb2, sprint_pb2_grpc, story_pb2, story_pb2_grpc, task_pb2, task_pb2_grpc
from tests.conftest import Channels, Tenant
from tests.errors import failure
from tests.projects.support import ProjectChildContract, in_project
from tests.standard import Case

Task = task_pb2.Task
WorkLog = task_pb2.WorkLog


def in_story(channels: Channels, tenant: Tenant, sprint: str = "") -> Tenant:
    """The tenant with a fresh story standing in as the parent (see tests.projects.support.in_project)."""
    team = in_project(channels, tenant)
    request = story_pb2.CreateStoryRequest(
        parent=team.organization, story=story_pb2.Story(title="Story", sprint=sprint)
    )
    story = story_pb2_grpc.StoryServiceStub(channels.direct("projects")).CreateStory(request, metadata=tenant.metadata)
    return dataclasses.replace(tenant, organization=story.story.name)


def in_task(channels: Channels, tenant: Tenant) -> Tenant:
    story = in_story(channels, tenant)
    task = tasks(channels).CreateTask(
        task_pb2.CreateTaskRequest(parent=story.organization, task=Task(title="Task")), metadata=tenant.metadata
    )
    return dataclasses.replace(tenant, organization=task.task.name)


def tasks(channels: Channels) -> task_pb2_grpc.TaskServiceStub:
    return task_pb2_grpc.TaskServiceStub(channels.direct("projects"))


def work_logs(channels: Channels) -> task_pb2_grpc.WorkLogServiceStub:
    return task_pb2_grpc.WorkLogServiceStub(channels.direct("projects"))


TASKS = Case(
    service="projects",
    pb=task_pb2,
    stub=task_pb2_grpc.TaskServiceStub,
    kind="Task",
    field="task",
    plural="tasks",
    valid=lambda i: Task(
        title=f"Write tests {i}", estimate_hours=4, remaining_hours=4, due_date=Date(year=2026, month=5, day=1)
    ),
    invalid=lambda: Task(title="", estimate_hours=-1, assignee="u", due_date=Date(year=2026, month=13, day=1)),
    invalid_fields={"task.title", "task.estimate_hours", "task.assignee", "task.due_date"},
    update=("title", "Write more tests"),
    filter_true=lambda t: f'title = "{t.title}"',
)


class TestTaskStandardMethods(ProjectChildContract):
    case = TASKS

    place = staticmethod(in_story)


def work(minutes: int, i: int = 0, user: str = "") -> WorkLog:
    return WorkLog(user=user, work_time=Timestamp(seconds=1_780_000_000 + i), duration_minutes=minutes, note=f"log {i}")


class WorkLogs(str):
    """tests/standard.py spells the collection, the list field and the List method with one word;
    work logs need three: `workLogs` in names, `work_logs` in the response, `ListWorkLogs`."""

    def __format__(self, spec: str) -> str:
        return "workLogs"

    def capitalize(self) -> str:
        return "WorkLogs"


class TestWorkLogStandardMethods(ProjectChildContract):
    case = Case(
        service="projects",
        pb=task_pb2,
        stub=task_pb2_grpc.WorkLogServiceStub,
        kind="WorkLog",
        field="work_log",
        plural=WorkLogs("work_logs"),
        valid=lambda i: work(30, i, user="organizations/00000000-0000-0000-0000-000000000000/users/x"),
        invalid=lambda: WorkLog(duration_minutes=0, note="n" * 2001),
        invalid_fields={"work_log.user", "work_log.work_time", "work_log.duration_minutes", "work_log.note"},
        update=("note", "paired"),
        filter_true=lambda w: f'work_time = "{w.work_time.ToJsonString()}"',
    )

    place = staticmethod(in_task)

    def create(self, api: Any, tenant: Tenant, index: int = 0, **extra: Any) -> Any:
        # The user must be an active user of the caller's organization, so the admin logs the work.
        log = work(30, index, user=tenant.user)
        reply = self.call(api, "CreateWorkLog", tenant, parent=tenant.organization, work_log=log, **extra)
        return reply.work_log


def test_logged_hours_roll_up_to_task_story_and_sprint(channels: Channels, tenant: Tenant) -> None:
    team = in_project(channels, tenant)
    sprint_request = sprint_pb2.CreateSprintRequest(
        parent=team.organization,
        sprint=sprint_pb2.Sprint(
            display_name="S", start_date=Date(year=2026, month=6, day=1), end_date=Date(year=2026, month=6, day=14)
        ),
    )
    sprints = sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))
    sprint = sprints.CreateSprint(sprint_request, metadata=tenant.metadata).sprint
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    story = stories.CreateStory(
        story_pb2.CreateStoryRequest(parent=team.organization, story=story_pb2.Story(title="s", sprint=sprint.name)),
        metadata=tenant.metadata,
    ).story
    made = [
        tasks(channels)
        .CreateTask(task_pb2.CreateTaskRequest(parent=story.name, task=Task(title=t)), metadata=tenant.metadata)
        .task
        for t in ("build", "test")
    ]

    def log(task: Task, minutes: int) -> WorkLog:
        request = task_pb2.CreateWorkLogRequest(parent=task.name, work_log=work(minutes, user=tenant.user))
        return work_logs(channels).CreateWorkLog(request, metadata=tenant.metadata).work_log

    first = log(made[0], 90)
    log(made[0], 30)
    log(made[1], 60)

    def hours() -> tuple[float, float, float, float]:
        return (
            tasks(channels)
            .GetTask(task_pb2.GetTaskRequest(name=made[0].name), metadata=tenant.metadata)
            .task.logged_hours,
            tasks(channels)
            .GetTask(task_pb2.GetTaskRequest(name=made[1].name), metadata=tenant.metadata)
            .task.logged_hours,
            stories.GetStory(story_pb2.GetStoryRequest(name=story.name), metadata=tenant.metadata).story.logged_hours,
            sprints.GetSprint(
                sprint_pb2.GetSprintRequest(name=sprint.name), metadata=tenant.metadata
            ).sprint.logged_hours,
        )

    assert hours() == (2.0, 1.0, 3.0, 3.0)
    work_logs(channels).DeleteWorkLog(task_pb2.DeleteWorkLogRequest(name=first.name), metadata=tenant.metadata)
    assert hours() == (0.5, 1.0, 1.5, 1.5)
    tasks(channels).DeleteTask(task_pb2.DeleteTaskRequest(name=made[1].name), metadata=tenant.metadata)
    (listed,) = stories.ListStories(
        story_pb2.ListStoriesRequest(parent=team.organization), metadata=tenant.metadata
    ).stories
    assert listed.logged_hours == 0.5


def test_a_deleted_story_hides_its_tasks_and_work_logs_until_undeleted(channels: Channels, tenant: Tenant) -> None:
    task_parent = in_task(channels, tenant)
    log = (
        work_logs(channels)
        .CreateWorkLog(
            task_pb2.CreateWorkLogRequest(parent=task_parent.organization, work_log=work(15, user=tenant.user)),
            metadata=tenant.metadata,
        )
        .work_log
    )
    story_name = task_parent.organization.rsplit("/tasks/", 1)[0]
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    stories.DeleteStory(story_pb2.DeleteStoryRequest(name=story_name), metadata=tenant.metadata)
    hidden = [
        lambda: tasks(channels).GetTask(
            task_pb2.GetTaskRequest(name=task_parent.organization), metadata=tenant.metadata
        ),
        lambda: tasks(channels).ListTasks(task_pb2.ListTasksRequest(parent=story_name), metadata=tenant.metadata),
        lambda: work_logs(channels).GetWorkLog(task_pb2.GetWorkLogRequest(name=log.name), metadata=tenant.metadata),
        lambda: work_logs(channels).CreateWorkLog(
            task_pb2.CreateWorkLogRequest(parent=task_parent.organization, work_log=work(5, user=tenant.user)),
            metadata=tenant.metadata,
        ),
    ]
    for call in hidden:
        assert failure(call).code == grpc.StatusCode.NOT_FOUND
    stories.UndeleteStory(story_pb2.UndeleteStoryRequest(name=story_name), metadata=tenant.metadata)
    again = work_logs(channels).GetWorkLog(task_pb2.GetWorkLogRequest(name=log.name), metadata=tenant.metadata)
    assert again.work_log == log


def test_a_work_time_beyond_timestamps_range_or_in_the_future_is_a_field_violation(
    channels: Channels, tenant: Tenant
) -> None:
    task = in_task(channels, tenant)
    next_week = Timestamp(seconds=int(time.time()) + 7 * 86_400)  # hours logged must have been worked
    for moment in (Timestamp(seconds=253_402_300_800), Timestamp(seconds=1_780_000_000, nanos=-1), next_week):
        bad = WorkLog(user=tenant.user, work_time=moment, duration_minutes=30)
        request = task_pb2.CreateWorkLogRequest(parent=task.organization, work_log=bad)
        f = failure(lambda r=request: work_logs(channels).CreateWorkLog(r, metadata=tenant.metadata, timeout=10))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"work_log.work_time"}
