"""Sprints: planned → active → completed, at most one active per project."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.projects.v1 import sprint_pb2 as pb
from hishamos_kit import resources, validate
from hishamos_kit.auth import require
from hishamos_kit.errors import FailedPrecondition, Violations
from hishamos_kit.listing import Field, ListSpec, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import base_fields
from hishamos_projects import dates
from hishamos_projects.children import ChildType
from hishamos_projects.models import Sprint, Story
from hishamos_projects.rollups import logged_hours

STATES = validate.EnumCodes(pb.Sprint.State.items(), "STATE_")


MAX_SPRINT_DAYS = 366  # a sprint's burndown has a row per day


class SprintType(ChildType[Sprint, pb.Sprint]):
    model = Sprint
    message = pb.Sprint
    field = "sprint"
    path = ResourcePath("organizations/{organization}/projects/{project}/sprints/{sprint}")
    updatable = frozenset({"display_name", "goal", "start_date", "end_date"})
    list_spec = ListSpec(
        filter_fields={
            "display_name": Field(Sprint.display_name, text=True),
            "state": STATES.filter_field(Sprint.state),
            "start_date": Field(Sprint.start_date, dates.parse_date),
            "end_date": Field(Sprint.end_date, dates.parse_date),
            "create_time": Field(Sprint.created_at, parse_time),
            "update_time": Field(Sprint.updated_at, parse_time),
        },
        order_fields={
            "display_name": Field(Sprint.display_name),
            "start_date": Field(Sprint.start_date),
            "end_date": Field(Sprint.end_date),
            "create_time": Field(Sprint.created_at, parse_time),
            "update_time": Field(Sprint.updated_at, parse_time),
        },
        default_order="create_time desc",
        id_column=Sprint.id,
    )

    def to_message(self, row: Sprint) -> pb.Sprint:
        return pb.Sprint(
            name=self.path.format(row.organization_id, row.project_id, row.id),
            display_name=row.display_name,
            goal=row.goal,
            start_date=dates.to_message(row.start_date),
            end_date=dates.to_message(row.end_date),
            state=STATES.value(row.state),
            complete_time=resources.timestamp(row.completed_at),
            **base_fields(row),
        )

    def apply(self, row: Sprint, message: pb.Sprint, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"sprint.{path}"
            if path == "display_name":
                row.display_name = validate.text(v, field, message.display_name, required=True)
            elif path == "goal":
                row.goal = validate.text(v, field, message.goal, max_length=10_000)
            elif path in ("start_date", "end_date"):
                value = dates.to_date(v, field, getattr(message, path), required=True)
                if value is not None and value != getattr(row, path) and row.state == "completed":
                    v.defer(  # its burndown and velocity are history
                        FailedPrecondition(
                            "a completed sprint's dates cannot change", "SPRINT_COMPLETED", {"field": field}
                        )
                    )
                if value is not None:
                    setattr(row, path, value)
        # Told on the date the caller sent (the end when both were): the other is as stored.
        field = "sprint.end_date" if "end_date" in paths else "sprint.start_date"
        if row.start_date and row.end_date and row.end_date <= row.start_date and "sprint.start_date" not in v.items:
            v.add(field, "must be after start_date" if field == "sprint.end_date" else "must be before end_date")
        elif row.start_date and row.end_date and (row.end_date - row.start_date).days > MAX_SPRINT_DAYS:
            v.add(field, f"a sprint lasts at most {MAX_SPRINT_DAYS} days")

    rolls_up = True

    async def rollup(self, session: AsyncSession, rows: list[Sprint], messages: list[pb.Sprint]) -> None:
        hours = await logged_hours(session, Story.sprint_id, [row.id for row in rows if row.history is None])
        for row, message in zip(rows, messages, strict=True):
            message.logged_hours = row.history["logged_hours"] if row.history else hours.get(row.id, 0.0)

    def before_delete(self, row: Sprint, name: str) -> None:
        if row.state == "active":
            raise FailedPrecondition(
                f"{name} is active; complete it before deleting it", "SPRINT_ACTIVE", {"sprint": name}
            )

    fast_create = False  # before_write writes
    delete_lock = "update"  # no story joins the sprint while its stories go back to the backlog

    async def before_write(self, session: AsyncSession, row: Sprint, action: str) -> None:
        """A deleted sprint's stories go back to the backlog (a completed one's stay: they are its history)."""
        if action == "delete" and row.state == "planned":
            moved = await session.execute(
                update(Story)
                .where(Story.sprint_id == row.id)
                .values(sprint_id=None, version=Story.version + 1, updated_at=func.now())
                .returning(Story.is_deleted)
                .execution_options(synchronize_session=False)
            )
            if not all(moved.scalars()):  # a live story moved (deleted ones go along unseen)
                require("projects.stories.update", "deleting a sprint with stories moves them, so deleting it")


def _wrong_state(row: Sprint, action: str, needed: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"only a {needed} sprint can be {action}; this one is {row.state}",
        "INVALID_STATE_TRANSITION",
        {"state": STATES.prefix + row.state.upper()},
    )


async def start(session: AsyncSession, row: Sprint) -> None:
    """Planned → active, unless another sprint of the project is active (the project row is locked)."""
    if row.state != "planned":
        raise _wrong_state(row, "started", "planned")
    active = await session.scalar(
        select(Sprint.id).where(Sprint.project_id == row.project_id, Sprint.state == "active").limit(1)
    )
    if active is not None:
        raise FailedPrecondition(
            "another sprint of this project is active; complete it first",
            "ANOTHER_SPRINT_ACTIVE",
            {"active_sprint": SprintType.path.format(row.organization_id, row.project_id, active)},
        )
    row.state = "active"


async def complete(session: AsyncSession, row: Sprint) -> None:
    """Active → completed."""
    if row.state != "active":
        raise _wrong_state(row, "completed", "active")
    row.state = "completed"
    row.completed_at = datetime.now(UTC)
