from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.type.date_pb2 import Date

from hishamos.projects.v1 import project_pb2, project_pb2_grpc, sprint_pb2, sprint_pb2_grpc, story_pb2, story_pb2_grpc
from tests.conftest import Channels, Tenant
from tests.errors import failure
from tests.pages import every_page
from tests.projects.support import ProjectChildContract, in_project
from tests.standard import Case

Sprint = sprint_pb2.Sprint


def sprint(i: int = 0, start: int = 1, end: int = 14) -> Sprint:
    return Sprint(
        display_name=f"Sprint {i}",
        goal="ship it",
        start_date=Date(year=2026, month=3, day=start),
        end_date=Date(year=2026, month=3, day=end),
    )


SPRINTS = Case(
    service="projects",
    pb=sprint_pb2,
    stub=sprint_pb2_grpc.SprintServiceStub,
    kind="Sprint",
    field="sprint",
    plural="sprints",
    valid=sprint,
    invalid=lambda: Sprint(display_name=" ", goal="g" * 10_001, start_date=Date(year=2026, month=2, day=30)),
    invalid_fields={"sprint.display_name", "sprint.goal", "sprint.start_date", "sprint.end_date"},
    update=("display_name", "Sprint renamed"),
    filter_true=lambda s: f'display_name = "{s.display_name}"',
)


class TestSprintStandardMethods(ProjectChildContract):
    case = SPRINTS


def api(channels: Channels) -> sprint_pb2_grpc.SprintServiceStub:
    return sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))


def create(channels: Channels, team: Tenant, s: Sprint) -> Sprint:
    request = sprint_pb2.CreateSprintRequest(parent=team.organization, sprint=s)
    return api(channels).CreateSprint(request, metadata=team.metadata, timeout=10).sprint


def start(channels: Channels, team: Tenant, name: str) -> Sprint:
    request = sprint_pb2.StartSprintRequest(name=name)
    return api(channels).StartSprint(request, metadata=team.metadata, timeout=10).sprint


def complete(channels: Channels, team: Tenant, name: str) -> Sprint:
    request = sprint_pb2.CompleteSprintRequest(name=name)
    return api(channels).CompleteSprint(request, metadata=team.metadata, timeout=10).sprint


def test_a_sprint_must_end_after_it_starts(channels: Channels, team: Tenant) -> None:
    f = failure(lambda: create(channels, team, sprint(start=10, end=10)))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"sprint.end_date"}
    created = create(channels, team, sprint(start=1, end=14))
    moved_end = Sprint(name=created.name, end_date=Date(year=2026, month=2, day=20))
    request = sprint_pb2.UpdateSprintRequest(sprint=moved_end, update_mask=FieldMask(paths=["end_date"]))
    f = failure(lambda: api(channels).UpdateSprint(request, metadata=team.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"sprint.end_date"}
    # Only the start sent, past the stored end: the violation names the field the caller sent.
    late_start = Sprint(name=created.name, start_date=Date(year=2026, month=3, day=20))
    request = sprint_pb2.UpdateSprintRequest(sprint=late_start, update_mask=FieldMask(paths=["start_date"]))
    f = failure(lambda: api(channels).UpdateSprint(request, metadata=team.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"sprint.start_date"}
    assert (
        api(channels).GetSprint(sprint_pb2.GetSprintRequest(name=created.name), metadata=team.metadata).sprint
        == created
    )


def test_sprint_runs_planned_active_completed_one_at_a_time(channels: Channels, team: Tenant) -> None:
    first, second = create(channels, team, sprint(1)), create(channels, team, sprint(2))
    assert first.state == Sprint.STATE_PLANNED
    assert failure(lambda: complete(channels, team, first.name)).reason == "INVALID_STATE_TRANSITION"

    active = start(channels, team, first.name)
    assert active.state == Sprint.STATE_ACTIVE and active.etag != first.etag
    busy = failure(lambda: start(channels, team, second.name))
    assert busy.code == grpc.StatusCode.FAILED_PRECONDITION and busy.reason == "ANOTHER_SPRINT_ACTIVE"
    assert busy.metadata["active_sprint"] == first.name
    again = failure(lambda: start(channels, team, first.name))
    assert again.code == grpc.StatusCode.FAILED_PRECONDITION and again.reason == "INVALID_STATE_TRANSITION"

    done = complete(channels, team, first.name)
    assert done.state == Sprint.STATE_COMPLETED and done.complete_time.seconds > 0
    assert failure(lambda: start(channels, team, first.name)).code == grpc.StatusCode.FAILED_PRECONDITION
    assert start(channels, team, second.name).state == Sprint.STATE_ACTIVE

    listed = api(channels).ListSprints(
        sprint_pb2.ListSprintsRequest(parent=team.organization, filter="state = STATE_COMPLETED"),
        metadata=team.metadata,
    )
    assert [s.name for s in listed.sprints] == [first.name]


def test_concurrent_starts_leave_exactly_one_active_sprint(channels: Channels, team: Tenant) -> None:
    planned = [create(channels, team, sprint(i)) for i in range(6)]

    def attempt(s: Sprint) -> bool:
        try:
            start(channels, team, s.name)
            return True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
            return False

    with ThreadPoolExecutor(len(planned)) as pool:
        outcomes = list(pool.map(attempt, planned))
    assert outcomes.count(True) == 1
    listed = api(channels).ListSprints(
        sprint_pb2.ListSprintsRequest(parent=team.organization, filter="state = STATE_ACTIVE"),
        metadata=team.metadata,
    )
    assert [s.name for s in listed.sprints] == [planned[outcomes.index(True)].name]


def test_an_active_sprint_cannot_be_deleted(channels: Channels, team: Tenant) -> None:
    running = start(channels, team, create(channels, team, sprint()).name)
    request = sprint_pb2.DeleteSprintRequest(name=running.name)
    f = failure(lambda: api(channels).DeleteSprint(request, metadata=team.metadata, timeout=10))
    assert f.code == grpc.StatusCode.FAILED_PRECONDITION and f.reason == "SPRINT_ACTIVE"
    finished = complete(channels, team, running.name)
    assert api(channels).DeleteSprint(request, metadata=team.metadata).sprint.delete_time.seconds > 0
    assert finished.state == Sprint.STATE_COMPLETED


def test_a_deleted_project_hides_its_sprints_until_undeleted(channels: Channels, tenant: Tenant, team: Tenant) -> None:
    kept = create(channels, team, sprint())
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    projects.DeleteProject(project_pb2.DeleteProjectRequest(name=team.organization, force=True), metadata=team.metadata)
    hidden = [
        lambda: api(channels).GetSprint(sprint_pb2.GetSprintRequest(name=kept.name), metadata=team.metadata),
        lambda: api(channels).ListSprints(
            sprint_pb2.ListSprintsRequest(parent=team.organization), metadata=team.metadata
        ),
        lambda: create(channels, team, sprint(1)),
        lambda: start(channels, team, kept.name),
    ]
    for call in hidden:
        assert failure(call).code == grpc.StatusCode.NOT_FOUND
    projects.UndeleteProject(project_pb2.UndeleteProjectRequest(name=team.organization), metadata=team.metadata)
    listed = api(channels).ListSprints(sprint_pb2.ListSprintsRequest(parent=team.organization), metadata=team.metadata)
    assert list(listed.sprints) == [kept]


def test_a_sprint_of_another_project_is_not_found_by_this_projects_name(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    elsewhere = in_project(channels, tenant)
    theirs = create(channels, elsewhere, sprint())
    wrong = theirs.name.replace(elsewhere.organization, team.organization)
    f = failure(lambda: api(channels).GetSprint(sprint_pb2.GetSprintRequest(name=wrong), metadata=team.metadata))
    assert f.code == grpc.StatusCode.NOT_FOUND
    f = failure(lambda: start(channels, team, wrong))
    assert f.code == grpc.StatusCode.NOT_FOUND
    assert (
        api(channels).GetSprint(sprint_pb2.GetSprintRequest(name=theirs.name), metadata=team.metadata).sprint == theirs
    )


def test_sprints_list_by_start_or_end_date_page_by_page(channels: Channels, team: Tenant) -> None:
    spans = [("2026-03-02", "2026-03-30"), ("2025-12-01", "2026-04-01"), ("2026-05-04", "2026-05-18")]
    spans += [("2026-01-05", "2026-01-19"), ("2024-02-29", "2024-03-14")]
    for i, (start, end) in enumerate(spans):
        create(channels, team, Sprint(display_name=f"S{i}", start_date=day(start), end_date=day(end)))

    def walk(order_by: str) -> list[str]:
        request = sprint_pb2.ListSprintsRequest(parent=team.organization, order_by=order_by, page_size=2)
        sprints = every_page(api(channels).ListSprints, request, "sprints", team.metadata)
        return [s.display_name for s in sprints]

    assert walk("start_date desc") == ["S2", "S0", "S3", "S1", "S4"]
    assert walk("end_date") == ["S4", "S3", "S0", "S1", "S2"]


def day(text: str) -> Date:
    year, month, dom = (int(part) for part in text.split("-"))
    return Date(year=year, month=month, day=dom)


def stories(channels: Channels) -> story_pb2_grpc.StoryServiceStub:
    return story_pb2_grpc.StoryServiceStub(channels.direct("projects"))


def test_a_deleted_planned_sprint_sends_its_stories_back_to_the_backlog(channels: Channels, team: Tenant) -> None:
    planned = create(channels, team, sprint())
    request = story_pb2.CreateStoryRequest(
        parent=team.organization, story=story_pb2.Story(title="s", sprint=planned.name)
    )
    story = stories(channels).CreateStory(request, metadata=team.metadata).story
    api(channels).DeleteSprint(sprint_pb2.DeleteSprintRequest(name=planned.name), metadata=team.metadata)
    got = stories(channels).GetStory(story_pb2.GetStoryRequest(name=story.name), metadata=team.metadata).story
    assert got.sprint == "" and got.etag != story.etag


def test_a_completed_sprint_keeps_its_dates_and_gets_no_story_back(channels: Channels, team: Tenant) -> None:
    running = start(channels, team, create(channels, team, sprint()).name)
    points = story_pb2.Story(title="s", story_points=3, sprint=running.name)
    story = (
        stories(channels)
        .CreateStory(story_pb2.CreateStoryRequest(parent=team.organization, story=points), metadata=team.metadata)
        .story
    )
    stories(channels).DeleteStory(story_pb2.DeleteStoryRequest(name=story.name), metadata=team.metadata)
    done = complete(channels, team, running.name)
    back = stories(channels).UndeleteStory(story_pb2.UndeleteStoryRequest(name=story.name), metadata=team.metadata)
    assert back.story.sprint == ""  # deleted or not, an unfinished story left the sprint when it completed
    board = api(channels).GetSprintBoard(
        sprint_pb2.GetSprintBoardRequest(name=f"{done.name}/board"), metadata=team.metadata
    )
    assert board.sprint_board.total_story_points == 0

    moved = Sprint(name=done.name, start_date=done.start_date, end_date=Date(year=2026, month=3, day=15))
    request = sprint_pb2.UpdateSprintRequest(sprint=moved, update_mask=FieldMask(paths=["start_date", "end_date"]))
    f = failure(lambda: api(channels).UpdateSprint(request, metadata=team.metadata, timeout=10))
    assert f.code == grpc.StatusCode.FAILED_PRECONDITION and f.reason == "SPRINT_COMPLETED"
    moved.display_name = " "  # and a bad field beside it is told first
    request = sprint_pb2.UpdateSprintRequest(sprint=moved, update_mask=FieldMask(paths=["display_name", "end_date"]))
    f = failure(lambda: api(channels).UpdateSprint(request, metadata=team.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"sprint.display_name"}
    renamed = Sprint(name=done.name, display_name="Done", start_date=done.start_date, end_date=done.end_date)
    request = sprint_pb2.UpdateSprintRequest(sprint=renamed, update_mask=FieldMask(paths=["*"]))
    assert api(channels).UpdateSprint(request, metadata=team.metadata, timeout=10).sprint.display_name == "Done"
