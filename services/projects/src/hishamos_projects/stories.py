"""Stories: the workflow graph, references to epics and sprints, custom fields and ranks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.projects.v1 import story_pb2 as pb
from hishamos_kit import validate
from hishamos_kit.auth import require
from hishamos_kit.errors import FailedPrecondition, InvalidArgument, NotFound, Violations
from hishamos_kit.listing import Field, ListSpec, parse_bool, parse_int, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import base_fields
from hishamos_projects import common, filters
from hishamos_projects.children import ChildType
from hishamos_projects.epics import EpicType
from hishamos_projects.guards import Guard, live
from hishamos_projects.models import Epic, Sprint, Story, WorkLog
from hishamos_projects.projects import struct
from hishamos_projects.rollups import logged_hours, logged_minutes_of_story
from hishamos_projects.schemas import check_custom_fields
from hishamos_projects.sprints import SprintType

STATES = validate.EnumCodes(pb.Story.State.items(), "STATE_")
WORKFLOW = ["backlog", "todo", "in_progress", "review", "done"]
RANK_GAP = 1 << 16  # room for 16 halvings between neighbours before the project is renumbered
# New stories take ranks from one sequence (step RANK_GAP, the column's default): always above every
# rank given before, with no lock, so creates in a project never queue. Ranks stay internal: their values would tell one
# organization how many stories others create; clients see only the order.
NEXT_RANK = text("nextval('story_ranks')")


def may_move(current: str, target: str) -> bool:
    """One step forward or back along the workflow, or back to the backlog from anywhere."""
    return target in (current, "backlog") or abs(WORKFLOW.index(current) - WORKFLOW.index(target)) == 1


class StoryType(ChildType[Story, pb.Story]):
    model = Story
    message = pb.Story
    field = "story"
    member_fields = ("assignee",)
    path = ResourcePath("organizations/{organization}/projects/{project}/stories/{story}")
    updatable = frozenset(
        {
            "title",
            "description",
            "acceptance_criteria",
            "story_points",
            "state",
            "priority",
            "assignee",
            "epic",
            "sprint",
            "labels",
            "generated_by_ai",
            "workflow_execution",
            "custom_fields",
        }
    )
    list_spec = ListSpec(
        filter_fields={
            "title": Field(Story.title, text=True),
            "text": Field(filters.AnyText("text", Story.title, Story.description), text=True),
            "state": STATES.filter_field(Story.state),
            "priority": Field(Story.priority, common.parse_priority),
            "assignee": Field(Story.assignee),
            "sprint": Field(Story.sprint_id, filters.reference(SprintType.path)),
            "epic": Field(Story.epic_id, filters.reference(EpicType.path)),
            "label": Field(filters.HasElement(Story.labels, "label")),
            "story_points": Field(Story.story_points, parse_int),
            "generated_by_ai": Field(Story.generated_by_ai, parse_bool),
            "create_time": Field(Story.created_at, parse_time),
            "update_time": Field(Story.updated_at, parse_time),
        },
        order_fields={
            "rank": Field(Story.rank, parse_int, renumbered=True),  # by `move`
            "priority": Field(Story.priority, parse_int),
            "story_points": Field(Story.story_points, parse_int),
            "title": Field(Story.title),
            "create_time": Field(Story.created_at, parse_time),
            "update_time": Field(Story.updated_at, parse_time),
        },
        default_order="rank",  # the backlog's order, as the proto promises
        id_column=Story.id,
    )

    def to_message(self, row: Story) -> pb.Story:
        o, p = row.organization_id, row.project_id
        return pb.Story(
            name=self.path.format(o, p, row.id),
            title=row.title,
            description=row.description,
            acceptance_criteria=row.acceptance_criteria,
            story_points=row.story_points,
            state=STATES.value(row.state),
            priority=row.priority,  # type: ignore[arg-type]  # stored as the enum's number
            assignee=row.assignee,
            epic=EpicType.path.format(o, p, row.epic_id) if row.epic_id else "",
            sprint=SprintType.path.format(o, p, row.sprint_id) if row.sprint_id else "",
            labels=row.labels,
            generated_by_ai=row.generated_by_ai,
            workflow_execution=row.workflow_execution,
            custom_fields=struct(row.custom_fields),
            **base_fields(row),
        )

    def apply(self, row: Story, message: pb.Story, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"story.{path}"
            if path == "title":
                row.title = validate.text(v, field, message.title, required=True)
            elif path == "description":
                row.description = validate.text(v, field, message.description, max_length=10_000)
            elif path == "acceptance_criteria":
                row.acceptance_criteria = _texts(v, field, message.acceptance_criteria, most=50, longest=1000)
            elif path == "labels":
                row.labels = list(dict.fromkeys(_texts(v, field, message.labels, most=20, longest=50)))
            elif path == "story_points":
                validate.number(v, field, message.story_points, high=1000)
                row.story_points = message.story_points
            elif path == "state":
                state = STATES.check(v, field, message.state or pb.Story.STATE_BACKLOG)
                if row.state and state and not may_move(row.state, state):
                    v.defer(
                        FailedPrecondition(
                            f"a story cannot go from {row.state} to {state}; it moves one step at a time or to the "
                            "backlog",
                            "INVALID_STATE_TRANSITION",
                            {"from": STATES.prefix + row.state.upper(), "to": STATES.prefix + state.upper()},
                        )
                    )
                if state != row.state:
                    row.done_at = datetime.now(UTC) if state == "done" else None
                row.state = state
            elif path == "priority":
                row.priority = common.priority(v, field, message.priority)
            elif path == "assignee":
                row.assignee = validate.reference(v, field, message.assignee, common.USER, row.organization_id)
            elif path == "generated_by_ai":
                row.generated_by_ai = message.generated_by_ai
            elif path == "workflow_execution":
                row.workflow_execution = validate.text(v, field, message.workflow_execution, max_length=500)
            elif path == "custom_fields":
                fields = message.custom_fields
                row.custom_fields = validate.json_object(v, field, fields) if fields.fields else {}  # most have none

    def guards(self, row: Story, message: pb.Story, paths: list[str], violations: Violations) -> dict[str, Guard]:
        o, p = row.organization_id, row.project_id
        found = {}
        # A reference left as it is stays valid (a story may stay in the sprint it finished in).
        if "epic" in paths and message.epic != (EpicType.path.format(o, p, row.epic_id) if row.epic_id else ""):
            row.epic_id, guard = sibling(violations, "story.epic", message.epic, row, Epic)
            found.update({"story.epic": guard} if guard else {})
        if "sprint" in paths and message.sprint != (
            SprintType.path.format(o, p, row.sprint_id) if row.sprint_id else ""
        ):
            row.sprint_id, guard = sibling(violations, "story.sprint", message.sprint, row, Sprint)
            found.update({"story.sprint": guard} if guard else {})
        return found

    project_columns = ("story_custom_fields_schema",)

    def check_project(self, row: Story, project: Any, paths: list[str], violations: Violations) -> None:
        if "custom_fields" in paths:
            check_custom_fields(
                violations, "story.custom_fields", row.custom_fields, project.story_custom_fields_schema
            )

    rolls_up = True
    extra_columns = {"logged_minutes": logged_minutes_of_story()}

    def finish(self, row: Any, message: pb.Story) -> None:
        message.logged_hours = row.logged_minutes / 60

    async def rollup(self, session: AsyncSession, rows: list[Story], messages: list[pb.Story]) -> None:
        hours = await logged_hours(session, WorkLog.story_id, [row.id for row in rows])
        for row, message in zip(rows, messages, strict=True):
            message.logged_hours = hours.get(row.id, 0.0)


def _texts(v: Violations, field: str, values: Any, *, most: int, longest: int) -> list[str]:
    items = [value.strip() for value in values]
    if len(items) > most:
        v.add(field, f"at most {most} items")
    for i, item in enumerate(items):
        if not item or len(item) > longest:
            v.add(f"{field}[{i}]", f"must be 1-{longest} characters")
        elif "\x00" in item:
            v.add(f"{field}[{i}]", "must not contain NUL characters")
    return items


def sibling(
    v: Violations, field: str, name: str, row: Story, model: type[Epic] | type[Sprint]
) -> tuple[uuid.UUID | None, Guard | None]:
    """The id `name` gives and the guard that it is a live epic or sprint (not yet completed) of the
    story's project; a name that cannot be one is a violation at once."""
    if not name:
        return None, None
    kind, path, live_one = (
        ("epic", EpicType.path, "epic") if model is Epic else ("sprint", SprintType.path, "planned or active sprint")
    )
    # The answer tells whether it exists, is done or was deleted: its readers' to know.
    require(f"projects.{kind}s.get", f"naming a {kind}")
    problem = f"must name a live {live_one} of this project, `{path.pattern}`"
    try:
        organization_id, project_id, sibling_id = path.parse(name, field)
    except InvalidArgument:
        organization_id = project_id = sibling_id = uuid.UUID(int=0)
    if (organization_id, project_id) != (row.organization_id, row.project_id):
        v.add(field, problem)
        return None, None
    usable = "state <> 'completed'" if model is Sprint else ""
    sql, params = live(model, sibling_id, ("project_id", row.project_id), also=usable)
    return sibling_id, Guard(sql, params, problem)


async def move(session: AsyncSession, row: Story, target_name: str, *, after: bool) -> None:
    """Put `row` right before (or after) the target in the project's rank order.

    The caller holds the project row FOR UPDATE, so no other move in the project reads the same
    neighbours (creates take fresh ranks above all of them). When two neighbours are adjacent
    integers, the project is renumbered with fresh gaps first (one UPDATE), which keeps the order
    and so needs no new etags.
    """
    field = "after" if after else "before"
    if not target_name:
        raise InvalidArgument({"before": "set `before` or `after` to the name of another story"})
    organization_id, project_id, target_id = StoryType.path.parse(target_name, field)
    named_here = (organization_id, project_id) == (row.organization_id, row.project_id)
    target = await session.get(Story, target_id) if named_here else None
    # The story itself must be of this project too: an id comes under whatever name a caller puts it.
    if target is None or target.is_deleted or target.project_id != row.project_id:
        raise NotFound(target_name)
    if target.id == row.id:
        raise InvalidArgument({field: "must name another story"})
    for _ in range(2):
        rank = await _rank_next_to(session, row, target, after=after)
        if rank is not None:
            row.rank = rank
            return
        await session.execute(
            text(
                "UPDATE stories s SET rank = r.n * :gap FROM (SELECT id, row_number() OVER (ORDER BY rank, id) AS n "
                "FROM stories WHERE project_id = :project) r WHERE s.id = r.id"
            ),
            {"gap": RANK_GAP, "project": row.project_id},
        )
        await session.refresh(target, ["rank"])
    raise RuntimeError("no room between two stories even after renumbering")


async def _rank_next_to(session: AsyncSession, row: Story, target: Story, *, after: bool) -> int | None:
    others = select(Story.rank).where(Story.project_id == row.project_id, Story.id != row.id, Story.id != target.id)
    if after:
        neighbour = await session.scalar(others.where(Story.rank >= target.rank).order_by(Story.rank).limit(1))
        if neighbour is None:  # the new last story: above every rank, including those of creates to come
            return int(await session.scalar(select(NEXT_RANK)) or 0)
    else:
        neighbour = await session.scalar(others.where(Story.rank <= target.rank).order_by(Story.rank.desc()).limit(1))
        if neighbour is None:
            return target.rank - RANK_GAP
    low, high = sorted((target.rank, neighbour))
    return (low + high) // 2 if high - low >= 2 else None


async def release_unfinished(session: AsyncSession, sprint: Sprint, next_sprint: str) -> list[str]:
    """Move the sprint's unfinished stories to `next_sprint` (a planned sprint of the project) or the
    backlog; deleted ones too, or undeleting one would put it back into a completed sprint."""
    target = None
    if next_sprint:
        v = Violations()
        probe = Story(organization_id=sprint.organization_id, project_id=sprint.project_id)
        target, guard = sibling(v, "next_sprint", next_sprint, probe, Sprint)
        if (
            guard
            and not (await (await session.connection()).exec_driver_sql(f"SELECT {guard.sql}", guard.params)).scalar()
        ):
            v.add("next_sprint", guard.problem)
        if target == sprint.id:
            v.add("next_sprint", "must be another sprint than the one completing")
        v.raise_if_any()
    moved = await session.execute(
        update(Story)
        .where(Story.sprint_id == sprint.id, Story.state != "done")
        .values(sprint_id=target, version=Story.version + 1, updated_at=func.now())
        .returning(Story.id, Story.is_deleted)
        .execution_options(synchronize_session=False)
    )
    return [StoryType.path.format(sprint.organization_id, sprint.project_id, i) for i, gone in moved if not gone]
