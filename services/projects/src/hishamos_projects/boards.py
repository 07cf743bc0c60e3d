"""What a team looks at to run a sprint: its board, its burndown, and the project's velocity.

Computed from the stories as they are now: a story counts for the sprint it is in, and as done
from the moment it last became done (done_at), so reopening a story takes it off the burndown. A
completed sprint answers with the figures it had when it completed (`keep_history`): completing moves
its unfinished stories on, and its done ones may be reopened or moved later, but its burndown,
velocity and logged hours are history.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from hishamos.projects.v1 import sprint_pb2 as pb
from hishamos.projects.v1 import story_pb2
from hishamos_kit import resources
from hishamos_projects import dates, stories
from hishamos_projects.models import Sprint, Story
from hishamos_projects.rollups import logged_hours
from hishamos_projects.sprints import SprintType

Present = Callable[[AsyncSession, list[Story]], Awaitable[list[story_pb2.Story]]]


def _live_stories(sprint_id: uuid.UUID) -> list[ColumnElement[bool]]:
    return [Story.sprint_id == sprint_id, Story.is_deleted.is_(False)]


# A board is one message: its cards leave out what can make a story large (a story may pass 100 KB,
# and 150 such stories were past gRPC's 16 MiB limit, so the board could not be read at all).
CARDS_PER_COLUMN = 200
NOT_ON_CARDS: tuple[Literal["description", "acceptance_criteria", "custom_fields"], ...] = (
    "description",
    "acceptance_criteria",
    "custom_fields",
)


async def board(session: AsyncSession, sprint: Sprint, present: Present) -> pb.SprintBoard:
    query = select(Story).where(*_live_stories(sprint.id)).order_by(Story.rank, Story.id)
    rows = list((await session.scalars(query)).all())
    by_state = {state: [row for row in rows if row.state == state] for state in stories.WORKFLOW}
    shown = [row for column in by_state.values() for row in column[:CARDS_PER_COLUMN]]
    cards = dict(zip((row.id for row in shown), await present(session, shown), strict=True))
    for card in cards.values():
        for field in NOT_ON_CARDS:
            card.ClearField(field)
    columns = [
        pb.SprintBoard.Column(
            state=stories.STATES.value(state),
            stories=[cards[row.id] for row in column[:CARDS_PER_COLUMN]],
            story_count=len(column),
            story_points=sum(row.story_points for row in column),
        )
        for state, column in by_state.items()
    ]
    return pb.SprintBoard(
        name=SprintType.path.format(sprint.organization_id, sprint.project_id, sprint.id) + "/board",
        columns=columns,
        total_story_points=sum(row.story_points for row in rows),
        done_story_points=sum(row.story_points for row in rows if row.state == "done"),
    )


async def keep_history(session: AsyncSession, sprint: Sprint) -> None:
    """Record a completing sprint's figures, before its unfinished stories move on. A sprint completed
    before its start date keeps one day, its first, so its burndown is never empty."""
    figures = await burndown(session, sprint, max(datetime.now(UTC).date(), sprint.start_date))
    done = await session.scalar(
        select(func.coalesce(func.sum(Story.story_points), 0)).where(*_live_stories(sprint.id), Story.state == "done")
    )
    hours = (await logged_hours(session, Story.sprint_id, [sprint.id])).get(sprint.id, 0.0)
    sprint.history = {
        "total_story_points": figures.total_story_points,
        "remaining_story_points": [day.remaining_story_points for day in figures.days],
        "done_story_points": int(done or 0),
        "logged_hours": hours,
    }


async def burndown(
    session: AsyncSession, sprint: Sprint, today: date | None = None
) -> pb.ComputeSprintBurndownResponse:
    if sprint.history is not None:
        remaining = sprint.history["remaining_story_points"]
        days = [
            pb.BurndownDay(date=dates.to_message(sprint.start_date + timedelta(days=i)), remaining_story_points=points)
            for i, points in enumerate(remaining)
        ]
        return pb.ComputeSprintBurndownResponse(total_story_points=sprint.history["total_story_points"], days=days)
    query = select(Story.story_points, Story.done_at, Story.state).where(*_live_stories(sprint.id))
    rows = (await session.execute(query)).all()
    total = sum(points for points, _, _ in rows)
    done_on = [
        (done_at.astimezone(UTC).date(), points) for points, done_at, state in rows if state == "done" and done_at
    ]
    last = min(sprint.end_date, today or datetime.now(UTC).date())
    days = []
    day = sprint.start_date
    while day <= last:
        remaining = total - sum(points for finished, points in done_on if finished <= day)
        days.append(pb.BurndownDay(date=dates.to_message(day), remaining_story_points=remaining))
        day += timedelta(days=1)
    return pb.ComputeSprintBurndownResponse(total_story_points=total, days=days)


async def velocity(session: AsyncSession, project_id: uuid.UUID, count: int) -> pb.ComputeSprintVelocityResponse:
    latest = (
        await session.scalars(
            select(Sprint)
            .where(Sprint.project_id == project_id, Sprint.state == "completed", Sprint.is_deleted.is_(False))
            .order_by(Sprint.completed_at.desc(), Sprint.id)
            .limit(count)
        )
    ).all()
    done = dict(
        (
            await session.execute(
                select(Story.sprint_id, func.sum(Story.story_points))
                .where(Story.sprint_id.in_([s.id for s in latest]), Story.state == "done", Story.is_deleted.is_(False))
                .group_by(Story.sprint_id)
            )
        ).all()
    )
    sprints = [
        pb.SprintVelocity(
            sprint=SprintType.path.format(s.organization_id, s.project_id, s.id),
            display_name=s.display_name,
            complete_time=resources.timestamp(s.completed_at),
            # Completed before it kept its history (migration 0009): counted from its stories now.
            done_story_points=s.history["done_story_points"] if s.history else int(done.get(s.id, 0)),
        )
        for s in reversed(latest)
    ]
    average = sum(s.done_story_points for s in sprints) / len(sprints) if sprints else 0.0
    return pb.ComputeSprintVelocityResponse(sprints=sprints, average_story_points=average)
