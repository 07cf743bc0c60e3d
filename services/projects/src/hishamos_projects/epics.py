"""Epics: large bodies of work in a project, broken down into stories."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.projects.v1 import epic_pb2 as pb
from hishamos_kit import validate
from hishamos_kit.errors import Violations
from hishamos_kit.listing import Field, ListSpec, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import base_fields
from hishamos_projects import common
from hishamos_projects.children import ChildType
from hishamos_projects.models import Epic, Story

STATES = validate.EnumCodes(pb.Epic.State.items(), "STATE_")


class EpicType(ChildType[Epic, pb.Epic]):
    model = Epic
    message = pb.Epic
    field = "epic"
    user_fields = ("owner",)
    path = ResourcePath("organizations/{organization}/projects/{project}/epics/{epic}")
    updatable = frozenset({"title", "description", "state", "priority", "owner"})
    list_spec = ListSpec(
        filter_fields={
            "title": Field(Epic.title, text=True),
            "state": STATES.filter_field(Epic.state),
            "priority": Field(Epic.priority, common.parse_priority),
            "owner": Field(Epic.owner),
            "create_time": Field(Epic.created_at, parse_time),
            "update_time": Field(Epic.updated_at, parse_time),
        },
        order_fields={
            "title": Field(Epic.title),
            "priority": Field(Epic.priority),
            "create_time": Field(Epic.created_at, parse_time),
            "update_time": Field(Epic.updated_at, parse_time),
        },
        default_order="create_time desc",
        id_column=Epic.id,
    )

    def to_message(self, row: Epic) -> pb.Epic:
        return pb.Epic(
            name=self.path.format(row.organization_id, row.project_id, row.id),
            title=row.title,
            description=row.description,
            state=STATES.value(row.state),
            priority=row.priority,  # type: ignore[arg-type]  # stored as the enum's number
            owner=row.owner,
            **base_fields(row),
        )

    rolls_up = True

    async def rollup(self, session: AsyncSession, rows: list[Epic], messages: list[pb.Epic]) -> None:
        done = func.coalesce(func.sum(Story.story_points).filter(Story.state == "done"), 0)
        totals = await session.execute(
            select(Story.epic_id, func.sum(Story.story_points), done)
            .where(Story.epic_id.in_([row.id for row in rows]), Story.is_deleted.is_(False))
            .group_by(Story.epic_id)
        )
        by_epic = {epic_id: (int(total), int(finished)) for epic_id, total, finished in totals}
        for row, message in zip(rows, messages, strict=True):
            total, finished = by_epic.get(row.id, (0, 0))
            message.total_story_points, message.done_story_points = total, finished
            message.progress = finished / total if total else 0.0

    def apply(self, row: Epic, message: pb.Epic, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"epic.{path}"
            if path == "title":
                row.title = validate.text(v, field, message.title, required=True)
            elif path == "description":
                row.description = validate.text(v, field, message.description, max_length=10_000)
            elif path == "state":
                row.state = STATES.check(v, field, message.state or pb.Epic.STATE_OPEN)
            elif path == "priority":
                row.priority = common.priority(v, field, message.priority)
            elif path == "owner":
                row.owner = validate.reference(v, field, message.owner, common.USER, row.organization_id)
