"""Tasks of a story, and the work logs of a task whose hours roll up to the task, story and sprint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.projects.v1 import task_pb2 as pb
from hishamos_kit import resources, validate
from hishamos_kit.errors import Violations
from hishamos_kit.listing import Field, ListSpec, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import base_fields
from hishamos_projects import common, dates
from hishamos_projects.children import ChildType
from hishamos_projects.models import Story, Task, WorkLog
from hishamos_projects.rollups import logged_hours
from hishamos_projects.stories import StoryType

STATES = validate.EnumCodes(pb.Task.State.items(), "STATE_")


class TaskType(ChildType[Task, pb.Task]):
    model = Task
    message = pb.Task
    field = "task"
    member_fields = ("assignee",)
    path = ResourcePath("organizations/{organization}/projects/{project}/stories/{story}/tasks/{task}")
    parent_path = StoryType.path
    scope = ("project_id", "story_id")
    ancestors = (Story,)
    updatable = frozenset(
        {"title", "description", "state", "assignee", "estimate_hours", "remaining_hours", "due_date"}
    )
    list_spec = ListSpec(
        filter_fields={
            "title": Field(Task.title, text=True),
            "state": STATES.filter_field(Task.state),
            "assignee": Field(Task.assignee),
            "due_date": Field(Task.due_date, dates.parse_date),
            "create_time": Field(Task.created_at, parse_time),
            "update_time": Field(Task.updated_at, parse_time),
        },
        order_fields={
            "title": Field(Task.title),
            "create_time": Field(Task.created_at, parse_time),
            "update_time": Field(Task.updated_at, parse_time),
        },
        default_order="create_time desc",
        id_column=Task.id,
    )
    rolls_up = True

    async def rollup(self, session: AsyncSession, rows: list[Task], messages: list[pb.Task]) -> None:
        hours = await logged_hours(session, WorkLog.task_id, [row.id for row in rows])
        for row, message in zip(rows, messages, strict=True):
            message.logged_hours = hours.get(row.id, 0.0)

    def to_message(self, row: Task) -> pb.Task:
        return pb.Task(
            name=self.path.format(row.organization_id, row.project_id, row.story_id, row.id),
            title=row.title,
            description=row.description,
            state=STATES.value(row.state),
            assignee=row.assignee,
            estimate_hours=row.estimate_hours,
            remaining_hours=row.remaining_hours,
            due_date=dates.to_message(row.due_date),
            **base_fields(row),
        )

    def apply(self, row: Task, message: pb.Task, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"task.{path}"
            if path == "title":
                row.title = validate.text(v, field, message.title, required=True)
            elif path == "description":
                row.description = validate.text(v, field, message.description, max_length=10_000)
            elif path == "state":
                row.state = STATES.check(v, field, message.state or pb.Task.STATE_TODO)
            elif path == "assignee":
                row.assignee = validate.reference(v, field, message.assignee, common.USER, row.organization_id)
            elif path in ("estimate_hours", "remaining_hours"):
                setattr(row, path, validate.number(v, field, getattr(message, path), high=10_000))
            elif path == "due_date":
                row.due_date = dates.to_date(v, field, message.due_date)


class WorkLogType(ChildType[WorkLog, pb.WorkLog]):
    model = WorkLog
    message = pb.WorkLog
    field = "work_log"
    user_fields = ("user",)
    path = ResourcePath(
        "organizations/{organization}/projects/{project}/stories/{story}/tasks/{task}/workLogs/{work_log}"
    )
    parent_path = TaskType.path
    scope = ("project_id", "story_id", "task_id")
    ancestors = (Story, Task)
    updatable = frozenset({"user", "work_time", "duration_minutes", "note"})
    list_spec = ListSpec(
        filter_fields={
            "user": Field(WorkLog.user),
            "work_time": Field(WorkLog.work_time, parse_time),
            "create_time": Field(WorkLog.created_at, parse_time),
        },
        order_fields={
            "work_time": Field(WorkLog.work_time, parse_time),
            "create_time": Field(WorkLog.created_at, parse_time),
        },
        default_order="create_time desc",
        id_column=WorkLog.id,
    )

    def to_message(self, row: WorkLog) -> pb.WorkLog:
        return pb.WorkLog(
            name=self.path.format(row.organization_id, row.project_id, row.story_id, row.task_id, row.id),
            user=row.user,
            work_time=resources.timestamp(row.work_time),
            duration_minutes=row.duration_minutes,
            note=row.note,
            **base_fields(row),
        )

    def apply(self, row: WorkLog, message: pb.WorkLog, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"work_log.{path}"
            if path == "user":
                row.user = validate.reference(v, field, message.user, common.USER, row.organization_id)
                v.check(bool(row.user), field, "is required")
            elif path == "work_time":
                if message.HasField("work_time"):
                    work_time = validate.timestamp(v, field, message.work_time)
                    if work_time is not None and work_time > datetime.now(UTC) + timedelta(days=1):
                        v.add(field, "is in the future: log work that was done")  # a day's allowance for clocks
                    elif work_time is not None:
                        row.work_time = work_time
                else:
                    v.add(field, "is required")
            elif path == "duration_minutes":
                validate.number(v, field, message.duration_minutes, low=1, high=1440)
                row.duration_minutes = message.duration_minutes
            elif path == "note":
                row.note = validate.text(v, field, message.note, max_length=2000)
