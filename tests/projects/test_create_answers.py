"""A write answers with the resource as stored, for every field a client sets: what it sent comes back
from what it sent, what the server filled in (rank, times) from the database, and a Get agrees."""

from __future__ import annotations

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date

from hishamos.projects.v1 import story_pb2, story_pb2_grpc, task_pb2, task_pb2_grpc
from hishamos.projects.v1.priority_pb2 import PRIORITY_HIGH
from tests.conftest import Channels, Tenant
from tests.projects.support import add_member


def test_every_field_of_a_story_task_and_work_log_comes_back_as_stored(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    channel = channels.envoy()
    stories = story_pb2_grpc.StoryServiceStub(channel)
    tasks = task_pb2_grpc.TaskServiceStub(channel)
    logs = task_pb2_grpc.WorkLogServiceStub(channel)
    project = team.organization
    add_member(channels, team, tenant.user)
    custom = Struct()
    custom.update({"risk": "high", "days": 2.5, "flags": [True, None, "ü"], "nested": {"a": {"b": -1, "z": -0.0}}})
    story = story_pb2.Story(
        title="  Every field  ",
        description="line one\nline 'two' \\ three",
        acceptance_criteria=["given", "when ✓", "then"],
        story_points=8,
        priority=PRIORITY_HIGH,
        assignee=tenant.user,
        labels=["b", "a", "b"],
        generated_by_ai=True,
        workflow_execution="workflows/w/executions/e",
        custom_fields=custom,
    )
    made = stories.CreateStory(
        story_pb2.CreateStoryRequest(parent=project, story=story), metadata=tenant.metadata
    ).story
    assert (made.title, list(made.labels)) == ("Every field", ["b", "a"])
    assert made.custom_fields["nested"]["a"]["b"] == -1 and made.custom_fields["risk"] == "high"
    assert made == stories.GetStory(story_pb2.GetStoryRequest(name=made.name), metadata=tenant.metadata).story

    task = task_pb2.Task(
        title="Measure",
        assignee=tenant.user,
        estimate_hours=1.1,
        remaining_hours=-0.0,  # stored as 0
        due_date=Date(year=2028, month=2, day=29),
    )
    made_task = tasks.CreateTask(task_pb2.CreateTaskRequest(parent=made.name, task=task), metadata=tenant.metadata).task
    assert made_task.estimate_hours == 1.1
    assert made_task == tasks.GetTask(task_pb2.GetTaskRequest(name=made_task.name), metadata=tenant.metadata).task
    change = task_pb2.Task(name=made_task.name, estimate_hours=-0.0)
    mask = FieldMask(paths=["estimate_hours"])
    updated = tasks.UpdateTask(task_pb2.UpdateTaskRequest(task=change, update_mask=mask), metadata=tenant.metadata).task
    assert updated == tasks.GetTask(task_pb2.GetTaskRequest(name=made_task.name), metadata=tenant.metadata).task

    log = task_pb2.WorkLog(
        user=tenant.user, work_time=Timestamp(seconds=1_780_000_000, nanos=123_456_000), duration_minutes=45
    )
    request = task_pb2.CreateWorkLogRequest(parent=made_task.name, work_log=log)
    made_log = logs.CreateWorkLog(request, metadata=tenant.metadata).work_log
    assert made_log.work_time == log.work_time
    got = logs.GetWorkLog(task_pb2.GetWorkLogRequest(name=made_log.name), metadata=tenant.metadata).work_log
    assert made_log == got
