"""Hours logged, rolled up from work logs to tasks, stories and sprints when they are read.

Computed, not stored: a work log, task or story that is deleted, undeleted or moved to another
sprint changes the totals with nothing to keep in step. One grouped query per page of results.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos_projects.models import Story, Task, WorkLog


async def logged_hours(session: AsyncSession, by: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """Hours of live work logs on live tasks of live stories, grouped by `by` (a task, story or sprint id column)."""
    query = (
        select(by, func.sum(WorkLog.duration_minutes))
        .join(Task, Task.id == WorkLog.task_id)
        .join(Story, Story.id == WorkLog.story_id)
        .where(by.in_(ids), WorkLog.is_deleted.is_(False), Task.is_deleted.is_(False), Story.is_deleted.is_(False))
        .group_by(by)
    )
    return {key: minutes / 60 for key, minutes in await session.execute(query)}


def logged_minutes_of_story() -> Any:
    """Minutes logged on a story (its `logged_hours` times 60) as a correlated subquery, for fastlist:
    the same rule as `logged_hours`, so a deleted story lists none, as its Get shows."""
    return (
        select(func.coalesce(func.sum(WorkLog.duration_minutes), 0))
        .join(Task, Task.id == WorkLog.task_id)
        .where(
            WorkLog.story_id == Story.id,
            WorkLog.is_deleted.is_(False),
            Task.is_deleted.is_(False),
            Story.is_deleted.is_(False),
        )
        .scalar_subquery()
    )
