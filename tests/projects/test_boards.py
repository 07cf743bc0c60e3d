from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date

from hishamos.projects.v1 import sprint_pb2, sprint_pb2_grpc, story_pb2, story_pb2_grpc, task_pb2, task_pb2_grpc
from tests.conftest import Channels, Tenant, add_user
from tests.errors import failure
from tests.identity.test_roles import create_role

Story = story_pb2.Story


def sprints(channels: Channels) -> sprint_pb2_grpc.SprintServiceStub:
    return sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))


def stories(channels: Channels) -> story_pb2_grpc.StoryServiceStub:
    return story_pb2_grpc.StoryServiceStub(channels.direct("projects"))


def day(offset: int) -> Date:
    d = datetime.now(UTC).date() + timedelta(days=offset)
    return Date(year=d.year, month=d.month, day=d.day)


def sprint(channels: Channels, team: Tenant, name: str, start: int = -2, end: int = 5) -> sprint_pb2.Sprint:
    s = sprint_pb2.Sprint(display_name=name, start_date=day(start), end_date=day(end))
    return (
        sprints(channels)
        .CreateSprint(sprint_pb2.CreateSprintRequest(parent=team.organization, sprint=s), metadata=team.metadata)
        .sprint
    )


def story(channels: Channels, team: Tenant, title: str, points: int, sprint_name: str, state: int = 0) -> Story:
    s = Story(title=title, story_points=points, sprint=sprint_name, state=state)  # type: ignore[arg-type]
    return (
        stories(channels)
        .CreateStory(story_pb2.CreateStoryRequest(parent=team.organization, story=s), metadata=team.metadata)
        .story
    )


def test_board_groups_the_sprints_stories_by_state_in_rank_order_with_totals(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    s = sprint(channels, team, "Board")
    todo_a = story(channels, team, "todo a", 3, s.name, Story.STATE_TODO)
    todo_b = story(channels, team, "todo b", 5, s.name, Story.STATE_TODO)
    done = story(channels, team, "done", 8, s.name, Story.STATE_DONE)
    story(channels, team, "not in the sprint", 13, "", Story.STATE_TODO)
    gone = story(channels, team, "deleted", 1, s.name, Story.STATE_TODO)
    stories(channels).DeleteStory(story_pb2.DeleteStoryRequest(name=gone.name), metadata=team.metadata)
    stories(channels).MoveStory(
        story_pb2.MoveStoryRequest(name=todo_b.name, before=todo_a.name), metadata=team.metadata
    )

    board = (
        sprints(channels)
        .GetSprintBoard(sprint_pb2.GetSprintBoardRequest(name=f"{s.name}/board"), metadata=team.metadata)
        .sprint_board
    )
    assert board.name == f"{s.name}/board"
    assert [c.state for c in board.columns] == [
        Story.STATE_BACKLOG,
        Story.STATE_TODO,
        Story.STATE_IN_PROGRESS,
        Story.STATE_REVIEW,
        Story.STATE_DONE,
    ]
    columns = {c.state: c for c in board.columns}
    assert [x.name for x in columns[Story.STATE_TODO].stories] == [todo_b.name, todo_a.name]
    assert (columns[Story.STATE_TODO].story_count, columns[Story.STATE_TODO].story_points) == (2, 8)
    assert [x.name for x in columns[Story.STATE_DONE].stories] == [done.name]
    assert columns[Story.STATE_REVIEW].story_count == 0
    assert (board.total_story_points, board.done_story_points) == (16, 8)
    f = failure(
        lambda: sprints(channels).GetSprintBoard(sprint_pb2.GetSprintBoardRequest(name=s.name), metadata=team.metadata)
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    # The board shows stories: a role that may read sprints but not list stories does not see it.
    create_role(channels, tenant, "sprint-reader", ["projects.sprints.get"])
    reader = add_user(channels, tenant, "sprint-reader")
    board_request = sprint_pb2.GetSprintBoardRequest(name=f"{s.name}/board")
    f = failure(lambda: sprints(channels).GetSprintBoard(board_request, metadata=reader.metadata, timeout=10))
    assert (f.code, f.metadata["permission"]) == (grpc.StatusCode.PERMISSION_DENIED, "projects.stories.list")


def test_a_board_shows_cards_and_at_most_200_a_column_whatever_the_sprint_holds(
    channels: Channels, team: Tenant
) -> None:
    s = sprint(channels, team, "Big")
    heavy = Story(title="t", story_points=1, sprint=s.name, description="d" * 2000, acceptance_criteria=["a" * 100])
    batch = story_pb2.BatchCreateStoriesRequest(
        parent=team.organization, requests=[story_pb2.CreateStoryRequest(story=heavy)] * 201
    )
    stories(channels).BatchCreateStories(batch, metadata=team.metadata, timeout=60)
    board = (
        sprints(channels)
        .GetSprintBoard(sprint_pb2.GetSprintBoardRequest(name=f"{s.name}/board"), metadata=team.metadata)
        .sprint_board
    )
    backlog = board.columns[0]
    assert (backlog.story_count, backlog.story_points, len(backlog.stories)) == (201, 201, 200)
    card = backlog.stories[0]
    assert card.title == "t" and card.story_points == 1 and not card.description and not card.acceptance_criteria
    full = stories(channels).GetStory(story_pb2.GetStoryRequest(name=card.name), metadata=team.metadata).story
    assert full.description == "d" * 2000 and list(full.acceptance_criteria) == ["a" * 100]


def test_burndown_has_one_day_per_sprint_day_so_far_with_points_still_open(channels: Channels, team: Tenant) -> None:
    s = sprint(channels, team, "Burn", start=-2, end=5)
    story(channels, team, "done", 5, s.name, Story.STATE_DONE)
    story(channels, team, "open", 3, s.name)
    reply = sprints(channels).ComputeSprintBurndown(
        sprint_pb2.ComputeSprintBurndownRequest(name=s.name), metadata=team.metadata
    )
    assert reply.total_story_points == 8
    assert [(d.date, d.remaining_story_points) for d in reply.days] == [(day(-2), 8), (day(-1), 8), (day(0), 3)]


def test_velocity_is_done_points_per_completed_sprint(channels: Channels, team: Tenant) -> None:
    first, second, planned = (
        sprint(channels, team, "One"),
        sprint(channels, team, "Two"),
        sprint(channels, team, "Three"),
    )
    story(channels, team, "a", 5, first.name, Story.STATE_DONE)
    story(channels, team, "b", 3, first.name)
    story(channels, team, "c", 2, second.name, Story.STATE_DONE)
    story(channels, team, "d", 40, planned.name, Story.STATE_DONE)
    for s in (first, second):
        sprints(channels).StartSprint(sprint_pb2.StartSprintRequest(name=s.name), metadata=team.metadata)
        sprints(channels).CompleteSprint(sprint_pb2.CompleteSprintRequest(name=s.name), metadata=team.metadata)
    reply = sprints(channels).ComputeSprintVelocity(
        sprint_pb2.ComputeSprintVelocityRequest(parent=team.organization), metadata=team.metadata
    )
    assert [(v.sprint, v.done_story_points) for v in reply.sprints] == [(first.name, 5), (second.name, 2)]
    assert reply.average_story_points == 3.5
    latest = sprints(channels).ComputeSprintVelocity(
        sprint_pb2.ComputeSprintVelocityRequest(parent=team.organization, sprint_count=1), metadata=team.metadata
    )
    assert [v.sprint for v in latest.sprints] == [second.name]


def test_a_completed_sprint_keeps_its_figures_whatever_its_stories_do_after(channels: Channels, team: Tenant) -> None:
    """Completing moves the unfinished stories on, and a done one may be reopened or moved later: the
    sprint's burndown, velocity and logged hours stay what they were when it completed."""
    s, following = sprint(channels, team, "Kept"), sprint(channels, team, "Next")
    done = story(channels, team, "done", 5, s.name, Story.STATE_DONE)
    story(channels, team, "open", 3, s.name)
    tasks = task_pb2_grpc.TaskServiceStub(channels.direct("projects"))
    task = tasks.CreateTask(
        task_pb2.CreateTaskRequest(parent=done.name, task=task_pb2.Task(title="build")), metadata=team.metadata
    ).task
    logs = task_pb2_grpc.WorkLogServiceStub(channels.direct("projects"))
    log = task_pb2.WorkLog(user=team.user, work_time=Timestamp(seconds=1_780_000_000), duration_minutes=120)
    logs.CreateWorkLog(task_pb2.CreateWorkLogRequest(parent=task.name, work_log=log), metadata=team.metadata)

    def figures() -> tuple[int, list[int], list[int], float]:
        burn = sprints(channels).ComputeSprintBurndown(
            sprint_pb2.ComputeSprintBurndownRequest(name=s.name), metadata=team.metadata
        )
        velocity = sprints(channels).ComputeSprintVelocity(
            sprint_pb2.ComputeSprintVelocityRequest(parent=team.organization), metadata=team.metadata
        )
        got = sprints(channels).GetSprint(sprint_pb2.GetSprintRequest(name=s.name), metadata=team.metadata).sprint
        remaining = [d.remaining_story_points for d in burn.days]
        return burn.total_story_points, remaining, [v.done_story_points for v in velocity.sprints], got.logged_hours

    sprints(channels).StartSprint(sprint_pb2.StartSprintRequest(name=s.name), metadata=team.metadata)
    complete = sprint_pb2.CompleteSprintRequest(name=s.name, next_sprint=following.name)
    sprints(channels).CompleteSprint(complete, metadata=team.metadata)
    kept = figures()
    assert kept == (8, [8, 8, 3], [5], 2.0)

    reopened = Story(name=done.name, state=Story.STATE_REVIEW)
    update = story_pb2.UpdateStoryRequest(story=reopened, update_mask=FieldMask(paths=["state"]))
    stories(channels).UpdateStory(update, metadata=team.metadata)
    moved = story_pb2.UpdateStoryRequest(
        story=Story(name=done.name, sprint=following.name), update_mask=FieldMask(paths=["sprint"])
    )
    stories(channels).UpdateStory(moved, metadata=team.metadata)
    assert figures() == kept


def test_a_sprint_completed_before_its_start_date_keeps_a_burndown_day(channels: Channels, team: Tenant) -> None:
    early = sprint(channels, team, "Early", start=3, end=10)
    story(channels, team, "done", 5, early.name, Story.STATE_DONE)
    story(channels, team, "open", 3, early.name)
    sprints(channels).StartSprint(sprint_pb2.StartSprintRequest(name=early.name), metadata=team.metadata)
    sprints(channels).CompleteSprint(sprint_pb2.CompleteSprintRequest(name=early.name), metadata=team.metadata)
    burn = sprints(channels).ComputeSprintBurndown(
        sprint_pb2.ComputeSprintBurndownRequest(name=early.name), metadata=team.metadata
    )
    assert burn.total_story_points == 8
    assert [(d.date, d.remaining_story_points) for d in burn.days] == [(day(3), 3)]
