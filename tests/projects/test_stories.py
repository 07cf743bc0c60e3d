from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct
from google.type.date_pb2 import Date
from referencing.exceptions import Unresolvable

from hishamos.identity.v1 import api_key_pb2, api_key_pb2_grpc
from hishamos.projects.v1 import (
    epic_pb2,
    epic_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    sprint_pb2,
    sprint_pb2_grpc,
    story_pb2,
    story_pb2_grpc,
)
from hishamos_devstack.stack import Stack
from hishamos_projects import schemas
from tests.conftest import Channels, Tenant
from tests.db import superuser
from tests.errors import failure
from tests.projects.support import ProjectChildContract, add_member, in_project
from tests.standard import Case

Story = story_pb2.Story

STORIES = Case(
    service="projects",
    pb=story_pb2,
    stub=story_pb2_grpc.StoryServiceStub,
    kind="Story",
    field="story",
    plural="stories",
    valid=lambda i: Story(title=f"Sign in {i}", story_points=3, labels=["auth"], acceptance_criteria=["works"]),
    invalid=lambda: Story(
        title="",
        story_points=2000,
        assignee="users/1",
        labels=[""],
        acceptance_criteria=["x" * 1001],
        epic="epics/1",
    ),
    invalid_fields={
        "story.title",
        "story.story_points",
        "story.assignee",
        "story.labels[0]",
        "story.acceptance_criteria[0]",
        "story.epic",
    },
    update=("title", "Sign in with a passkey"),
    filter_true=lambda s: f'title = "{s.title}"',
    default_order=lambda made: made,  # rank order, and a new story ranks last
)


class TestStoryStandardMethods(ProjectChildContract):
    case = STORIES


def api(channels: Channels) -> story_pb2_grpc.StoryServiceStub:
    return story_pb2_grpc.StoryServiceStub(channels.direct("projects"))


def create(channels: Channels, team: Tenant, story: Story) -> Story:
    request = story_pb2.CreateStoryRequest(parent=team.organization, story=story)
    return api(channels).CreateStory(request, metadata=team.metadata, timeout=10).story


def update(channels: Channels, team: Tenant, story: Story, *paths: str) -> Story:
    request = story_pb2.UpdateStoryRequest(story=story, update_mask=FieldMask(paths=list(paths)))
    return api(channels).UpdateStory(request, metadata=team.metadata, timeout=10).story


def listed(channels: Channels, team: Tenant, **fields: Any) -> list[Story]:
    request = story_pb2.ListStoriesRequest(parent=team.organization, page_size=1000, **fields)
    return list(api(channels).ListStories(request, metadata=team.metadata, timeout=10).stories)


def move(channels: Channels, team: Tenant, name: str, **position: str) -> Story:
    request = story_pb2.MoveStoryRequest(name=name, **position)
    return api(channels).MoveStory(request, metadata=team.metadata, timeout=30).story


def in_rank_order(channels: Channels, team: Tenant) -> list[str]:
    return [s.name for s in listed(channels, team, order_by="rank")]


def set_state(channels: Channels, team: Tenant, name: str, state: Any) -> Story:
    return update(channels, team, Story(name=name, state=state), "state")


def test_stories_follow_the_workflow_one_step_at_a_time_or_back_to_the_backlog(
    channels: Channels, team: Tenant
) -> None:
    story = create(channels, team, Story(title="Export"))
    assert story.state == Story.STATE_BACKLOG
    skip = failure(lambda: set_state(channels, team, story.name, Story.STATE_IN_PROGRESS))
    assert skip.code == grpc.StatusCode.FAILED_PRECONDITION and skip.reason == "INVALID_STATE_TRANSITION"
    assert skip.metadata == {"from": "STATE_BACKLOG", "to": "STATE_IN_PROGRESS"}
    # Bad fields beside a bad step are told first, all of them (AIP-193: arguments before state).
    bad = Story(name=story.name, title="", story_points=-5, state=Story.STATE_DONE)
    f = failure(lambda: update(channels, team, bad, "state", "title", "story_points"))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"story.title", "story.story_points"}
    for state in (Story.STATE_TODO, Story.STATE_IN_PROGRESS, Story.STATE_REVIEW, Story.STATE_DONE):
        assert set_state(channels, team, story.name, state).state == state
    assert set_state(channels, team, story.name, Story.STATE_REVIEW).state == Story.STATE_REVIEW  # back one step
    assert failure(lambda: set_state(channels, team, story.name, Story.STATE_TODO)).reason == "INVALID_STATE_TRANSITION"
    assert set_state(channels, team, story.name, Story.STATE_BACKLOG).state == Story.STATE_BACKLOG


def make_sprint(channels: Channels, team: Tenant, i: int = 0) -> sprint_pb2.Sprint:
    sprint = sprint_pb2.Sprint(
        display_name=f"Sprint {i}",
        start_date=Date(year=2026, month=4, day=1),
        end_date=Date(year=2026, month=4, day=14),
    )
    request = sprint_pb2.CreateSprintRequest(parent=team.organization, sprint=sprint)
    return (
        sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))
        .CreateSprint(request, metadata=team.metadata)
        .sprint
    )


def make_epic(channels: Channels, team: Tenant) -> epic_pb2.Epic:
    request = epic_pb2.CreateEpicRequest(parent=team.organization, epic=epic_pb2.Epic(title="Billing"))
    return epic_pb2_grpc.EpicServiceStub(channels.direct("projects")).CreateEpic(request, metadata=team.metadata).epic


def test_epic_and_sprint_must_be_live_ones_of_the_same_project(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    elsewhere = in_project(channels, tenant)
    foreign_epic, foreign_sprint = make_epic(channels, elsewhere), make_sprint(channels, elsewhere)
    f = failure(lambda: create(channels, team, Story(title="x", epic=foreign_epic.name, sprint=foreign_sprint.name)))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"story.epic", "story.sprint"}

    epic, sprint = make_epic(channels, team), make_sprint(channels, team)
    story = create(channels, team, Story(title="Invoice", epic=epic.name, sprint=sprint.name, state=Story.STATE_DONE))
    assert (story.epic, story.sprint) == (epic.name, sprint.name)
    sprints = sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))
    sprints.StartSprint(sprint_pb2.StartSprintRequest(name=sprint.name), metadata=team.metadata)
    sprints.CompleteSprint(sprint_pb2.CompleteSprintRequest(name=sprint.name), metadata=team.metadata)
    f = failure(lambda: create(channels, team, Story(title="Late", sprint=sprint.name)))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"story.sprint"}
    # A done story stays in its completed sprint and can still be edited (no mask: every field it carries).
    renamed = Story(name=story.name, title="Invoice PDF", epic=epic.name, sprint=sprint.name)
    edited = api(channels).UpdateStory(story_pb2.UpdateStoryRequest(story=renamed), metadata=team.metadata).story
    assert (edited.title, edited.sprint) == ("Invoice PDF", sprint.name)


def test_list_filters_by_sprint_epic_label_assignee_state_and_text(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    epic, sprint = make_epic(channels, team), make_sprint(channels, team)
    add_member(channels, team, tenant.user)
    planned = create(
        channels, team, Story(title="Login page", sprint=sprint.name, labels=["ui", "auth"], assignee=tenant.user)
    )
    epic_story = create(
        channels, team, Story(title="Refunds", description="money back", epic=epic.name, labels=["api"])
    )
    loose = create(channels, team, Story(title="Refactor", state=Story.STATE_TODO))

    def names(text: str) -> set[str]:
        return {s.name for s in listed(channels, team, filter=text)}

    assert names(f'sprint = "{sprint.name}"') == {planned.name}
    assert names('sprint = ""') == {epic_story.name, loose.name}
    assert names(f'epic = "{epic.name}"') == {epic_story.name}
    assert names('label = "auth"') == {planned.name}
    assert names('label = "api"') == {epic_story.name}  # same query shape, new value: no stale parameters
    assert names('label != "auth"') == {epic_story.name, loose.name}
    assert names(f'assignee = "{tenant.user}"') == {planned.name}
    assert names("state = STATE_TODO") == {loose.name}
    assert names('text: "MONEY"') == {epic_story.name}
    assert names('text: "re" AND NOT label = "api"') == {loose.name}
    # Values no column can hold are the filter's fault, not the database's.
    for refused in (
        'label > "a"',
        'sprint < ""',
        'epic >= ""',
        'title = "a\\u0000b"',
        "title = a\x00b",
        "story_points = 3000000000",
        "story_points = 1_0",
        "story_points = +3",
        "story_points = \u0663",  # an Arabic-Indic three, which Python's int() reads as 3
    ):
        f = failure(lambda r=refused: listed(channels, team, filter=r))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"filter"}, refused
    assert names("story_points < 2147483647") == {planned.name, epic_story.name, loose.name}
    # A negation holds where the field is unset (AIP-160): "not in this sprint" includes the backlog.
    for negated in (f'sprint != "{sprint.name}"', f'NOT sprint = "{sprint.name}"', f'-sprint = "{sprint.name}"'):
        assert names(negated) == {epic_story.name, loose.name}, negated
    assert names(f'NOT epic = "{epic.name}"') == {planned.name, loose.name}
    assert names('NOT text: "money"') == {planned.name, loose.name}  # no description is no match

    # An enum compares in its declared order (the workflow's), not as its codes spell.
    review = create(channels, team, Story(title="Review me", state=Story.STATE_REVIEW))
    done = create(channels, team, Story(title="Shipped", state=Story.STATE_DONE))
    assert names("state >= STATE_IN_PROGRESS") == {review.name, done.name}
    assert names("state < STATE_TODO") == {planned.name, epic_story.name}
    assert names("state > STATE_DONE") == set()
    assert names("NOT state <= STATE_REVIEW") == {done.name}


def test_new_stories_rank_last_and_move_before_or_after_another(channels: Channels, team: Tenant) -> None:
    a, b, c, d = (create(channels, team, Story(title=t)).name for t in "abcd")
    assert in_rank_order(channels, team) == [a, b, c, d]
    move(channels, team, d, before=a)
    assert in_rank_order(channels, team) == [d, a, b, c]
    move(channels, team, d, after=b)
    assert in_rank_order(channels, team) == [a, b, d, c]
    move(channels, team, a, after=c)
    assert in_rank_order(channels, team) == [b, d, c, a]
    nowhere = failure(lambda: move(channels, team, a))
    assert nowhere.code == grpc.StatusCode.INVALID_ARGUMENT and set(nowhere.violations) == {"before"}
    same = failure(lambda: move(channels, team, a, before=a))
    assert same.code == grpc.StatusCode.INVALID_ARGUMENT
    missing = failure(lambda: move(channels, team, a, before=a.rsplit("/", 1)[0] + f"/{uuid.uuid4()}"))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert in_rank_order(channels, team) == [b, d, c, a]
    assert [s.name for s in listed(channels, team)] == [b, d, c, a]  # without order_by too


def test_a_story_moves_only_next_to_one_of_its_own_project(channels: Channels, tenant: Tenant, team: Tenant) -> None:
    mine = create(channels, team, Story(title="mine")).name
    elsewhere = in_project(channels, tenant)
    theirs = create(channels, elsewhere, Story(title="theirs")).name
    # Their story's id under this project's name, and under its own: neither is a story of this project.
    for target in (f"{team.organization}/stories/{theirs.rsplit('/', 1)[1]}", theirs):
        assert failure(lambda t=target: move(channels, team, mine, before=t)).code == grpc.StatusCode.NOT_FOUND  # type: ignore[misc]


def test_inserting_again_and_again_at_one_spot_renumbers_without_losing_order(channels: Channels, team: Tenant) -> None:
    first, last = create(channels, team, Story(title="first")).name, create(channels, team, Story(title="last")).name
    inserted = []
    for i in range(20):  # each insert halves the gap right after `first`; 16 halvings exhaust it
        story = create(channels, team, Story(title=f"n{i}")).name
        move(channels, team, story, after=first)
        inserted.append(story)
    assert in_rank_order(channels, team) == [first, *reversed(inserted), last]
    newest = create(channels, team, Story(title="newest")).name
    assert in_rank_order(channels, team)[-2:] == [last, newest]


def test_a_walk_by_rank_goes_on_where_it_was_when_the_project_is_renumbered(channels: Channels, team: Tenant) -> None:
    names = [create(channels, team, Story(title=f"s{i}")).name for i in range(6)]
    request = story_pb2.ListStoriesRequest(parent=team.organization, order_by="rank", page_size=2)
    first = api(channels).ListStories(request, metadata=team.metadata)
    assert [s.name for s in first.stories] == names[:2]
    # Someone else keeps inserting right after the first story: the gap runs out and every rank changes.
    inserted = []
    for i in range(20):
        story = create(channels, team, Story(title=f"n{i}")).name
        move(channels, team, story, after=names[0])
        inserted.append(story)
    assert in_rank_order(channels, team) == [names[0], *reversed(inserted), *names[1:]]
    rest: list[str] = []
    token = first.next_page_token
    while token:
        request = story_pb2.ListStoriesRequest(parent=team.organization, order_by="rank", page_size=2, page_token=token)
        reply = api(channels).ListStories(request, metadata=team.metadata)
        rest += [s.name for s in reply.stories]
        token = reply.next_page_token
    assert rest == names[2:]  # what followed the first page, each once


def test_concurrent_moves_keep_one_consistent_order(stack: Stack, channels: Channels, team: Tenant) -> None:
    names = [create(channels, team, Story(title=f"s{i}")).name for i in range(12)]
    anchor, movers = names[0], names[6:]

    def to_front(name: str) -> None:
        move(channels, team, name, before=anchor)

    with ThreadPoolExecutor(len(movers)) as pool:
        list(pool.map(to_front, movers))
    order = in_rank_order(channels, team)
    # Every move landed right before the anchor: none was lost or overwritten by another.
    assert sorted(order) == sorted(names)
    assert set(order[: len(movers)]) == set(movers) and order[len(movers)] == anchor
    assert order[len(movers) :] == [anchor, *names[1:6]]

    rng = random.Random(7)
    jobs = [(rng.choice(names), rng.choice(names), rng.random() < 0.5) for _ in range(40)]

    def shuffle(job: tuple[str, str, bool]) -> None:
        name, target, after = job
        if name != target:
            move(channels, team, name, **{"after" if after else "before": target})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(shuffle, jobs))
    ranked = in_rank_order(channels, team)
    assert sorted(ranked) == sorted(names)
    # The order is one consistent sequence: paging through it by rank sees each story once.
    paged: list[str] = []
    token = ""
    while True:
        request = story_pb2.ListStoriesRequest(parent=team.organization, order_by="rank", page_size=5, page_token=token)
        reply = api(channels).ListStories(request, metadata=team.metadata)
        paged += [s.name for s in reply.stories]
        token = reply.next_page_token
        if not token:
            break
        # Ranks come from a sequence shared by every organization: a token must not show one.
        with superuser(stack, "projects") as conn:
            (rank,) = conn.execute(
                "select rank from stories where id = %s", (reply.stories[-1].name.rsplit("/", 1)[1],)
            ).fetchone()
        opened = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert str(rank).encode() not in opened
        with pytest.raises(ValueError):
            json.loads(opened)
    assert paged == ranked


SCHEMA = {
    "type": "object",
    "properties": {"risk": {"enum": ["low", "high"]}, "days": {"type": "integer", "minimum": 1}},
    "required": ["risk"],
    "additionalProperties": False,
}


def struct(value: dict[str, Any]) -> Struct:
    message = Struct()
    message.update(value)
    return message


def schema_setter(channels: Channels, team: Tenant) -> Callable[[dict[str, Any]], object]:
    """UpdateProject of the team's project with `schema` as its stories' custom-fields schema."""
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))

    def set_schema(schema: dict[str, Any]) -> object:
        project = project_pb2.Project(name=team.organization, story_custom_fields_schema=struct(schema))
        mask = FieldMask(paths=["story_custom_fields_schema"])
        request = project_pb2.UpdateProjectRequest(project=project, update_mask=mask)
        return projects.UpdateProject(request, metadata=team.metadata, timeout=10)

    return set_schema


def test_custom_fields_must_match_the_projects_schema(channels: Channels, team: Tenant) -> None:
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    broken = project_pb2.Project(name=team.organization, story_custom_fields_schema=struct({"type": "nonsense"}))
    f = failure(
        lambda: projects.UpdateProject(
            project_pb2.UpdateProjectRequest(
                project=broken, update_mask=FieldMask(paths=["story_custom_fields_schema"])
            ),
            metadata=team.metadata,
        )
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"project.story_custom_fields_schema"}
    anything = create(channels, team, Story(title="before", custom_fields=struct({"whatever": 1})))
    assert anything.custom_fields == struct({"whatever": 1})

    schema = project_pb2.Project(name=team.organization, story_custom_fields_schema=struct(SCHEMA))
    projects.UpdateProject(
        project_pb2.UpdateProjectRequest(project=schema, update_mask=FieldMask(paths=["story_custom_fields_schema"])),
        metadata=team.metadata,
    )
    f = failure(lambda: create(channels, team, Story(title="x", custom_fields=struct({"risk": "mid", "days": 0}))))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {"story.custom_fields.risk", "story.custom_fields.days"}
    f = failure(lambda: create(channels, team, Story(title="x")))
    assert set(f.violations) == {"story.custom_fields"} and "risk" in f.violations["story.custom_fields"]
    ok = create(channels, team, Story(title="x", custom_fields=struct({"risk": "high", "days": 3})))
    assert ok.custom_fields["risk"] == "high" and ok.custom_fields["days"] == 3
    f = failure(
        lambda: update(
            channels, team, Story(name=ok.name, custom_fields=struct({"risk": "high", "x": 1})), "custom_fields"
        )
    )
    assert set(f.violations) == {"story.custom_fields"}


def batch(channels: Channels, team: Tenant, stories: list[Story], **fields: Any) -> list[Story]:
    request = story_pb2.BatchCreateStoriesRequest(
        parent=team.organization, requests=[story_pb2.CreateStoryRequest(story=s) for s in stories], **fields
    )
    return list(api(channels).BatchCreateStories(request, metadata=team.metadata, timeout=30).stories)


def test_batch_create_is_all_or_nothing_and_ranks_in_request_order(channels: Channels, team: Tenant) -> None:
    first = create(channels, team, Story(title="already there"))
    f = failure(lambda: batch(channels, team, [Story(title="ok"), Story(title=""), Story(title="ok", story_points=-1)]))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {"requests[1].story.title", "requests[2].story.story_points"}
    assert [s.name for s in listed(channels, team)] == [first.name]

    request_id = str(uuid.uuid4())
    made = batch(channels, team, [Story(title=f"b{i}") for i in range(5)], request_id=request_id)
    assert [s.title for s in made] == [f"b{i}" for i in range(5)]
    assert batch(channels, team, [Story(title=f"b{i}") for i in range(5)], request_id=request_id) == made
    assert in_rank_order(channels, team) == [first.name, *(s.name for s in made)]

    too_many = failure(lambda: batch(channels, team, [Story(title="x")] * 501))
    assert too_many.code == grpc.StatusCode.INVALID_ARGUMENT and "requests" in too_many.violations
    # An answer no default client could receive (it repeats the stories) is refused before anything is made.
    long = Story(title="long", description="d" * 10_000, acceptance_criteria=["a" * 1000] * 10)
    too_big = failure(lambda: batch(channels, team, [long] * 200))
    assert too_big.code == grpc.StatusCode.INVALID_ARGUMENT and "MiB" in too_big.violations["requests"]
    # One request_id covers the batch: one on an item would be a promise nobody keeps.
    keyed = story_pb2.BatchCreateStoriesRequest(
        parent=team.organization,
        requests=[story_pb2.CreateStoryRequest(story=Story(title="x"), request_id=str(uuid.uuid4()))],
    )
    f = failure(lambda: api(channels).BatchCreateStories(keyed, metadata=team.metadata, timeout=30))
    assert set(f.violations) == {"requests[0].request_id"}
    assert len(listed(channels, team)) == 6


def test_completing_a_sprint_moves_unfinished_stories_to_the_next_sprint_or_the_backlog(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    sprints = sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))
    current, following = make_sprint(channels, team, 1), make_sprint(channels, team, 2)
    done = create(channels, team, Story(title="done", sprint=current.name, state=Story.STATE_DONE))
    open_ = [create(channels, team, Story(title=f"open {i}", sprint=current.name)).name for i in range(2)]
    sprints.StartSprint(sprint_pb2.StartSprintRequest(name=current.name), metadata=team.metadata)

    for bad in (current.name, make_sprint(channels, in_project(channels, tenant)).name):
        f = failure(
            lambda b=bad: sprints.CompleteSprint(
                sprint_pb2.CompleteSprintRequest(name=current.name, next_sprint=b), metadata=team.metadata
            )
        )
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "next_sprint" in f.violations
    reply = sprints.CompleteSprint(
        sprint_pb2.CompleteSprintRequest(name=current.name, next_sprint=following.name), metadata=team.metadata
    )
    assert reply.sprint.state == sprint_pb2.Sprint.STATE_COMPLETED and sorted(reply.moved_stories) == sorted(open_)
    assert {s.name for s in listed(channels, team, filter=f'sprint = "{following.name}"')} == set(open_)
    assert [s.name for s in listed(channels, team, filter=f'sprint = "{current.name}"')] == [done.name]

    sprints.StartSprint(sprint_pb2.StartSprintRequest(name=following.name), metadata=team.metadata)
    reply = sprints.CompleteSprint(sprint_pb2.CompleteSprintRequest(name=following.name), metadata=team.metadata)
    assert sorted(reply.moved_stories) == sorted(open_)
    assert {s.name for s in listed(channels, team, filter='sprint = ""')} == set(open_)


def test_epic_progress_is_done_points_over_total_points_of_its_live_stories(channels: Channels, team: Tenant) -> None:
    epics = epic_pb2_grpc.EpicServiceStub(channels.direct("projects"))
    epic = make_epic(channels, team)
    assert (epic.progress, epic.total_story_points) == (0, 0)
    create(channels, team, Story(title="a", epic=epic.name, story_points=5, state=Story.STATE_DONE))
    pending = create(channels, team, Story(title="b", epic=epic.name, story_points=15))
    create(channels, team, Story(title="elsewhere", story_points=8, state=Story.STATE_DONE))
    got = epics.GetEpic(epic_pb2.GetEpicRequest(name=epic.name), metadata=team.metadata).epic
    assert (got.total_story_points, got.done_story_points, got.progress) == (20, 5, 0.25)
    api(channels).DeleteStory(story_pb2.DeleteStoryRequest(name=pending.name), metadata=team.metadata)
    (only,) = epics.ListEpics(epic_pb2.ListEpicsRequest(parent=team.organization), metadata=team.metadata).epics
    assert (only.total_story_points, only.done_story_points, only.progress) == (5, 5, 1.0)


class Fetched:
    """A loopback HTTP server that records the paths asked of it, serving an empty schema."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Fetched:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_schema_references_are_local_and_a_dangling_or_endless_one_fails_cleanly(
    channels: Channels, team: Tenant
) -> None:
    set_schema = schema_setter(channels, team)

    # Nothing a schema names is fetched: a loopback server stands for a host inside the network.
    with Fetched() as inside:
        for keyword in ("$ref", "$dynamicRef"):
            remote = {"properties": {"x": {keyword: f"{inside.url}/schema.json"}}}
            assert set(failure(lambda r=remote: set_schema(r)).violations) == {"project.story_custom_fields_schema"}
        # Nor would be one that got past that check: the validator's registry retrieves nothing.
        with pytest.raises(Unresolvable):
            list(schemas._validator(json.dumps({"$dynamicRef": f"{inside.url}/schema.json"})).iter_errors({}))
    assert inside.paths == []
    set_schema({"properties": {"x": {"$ref": "#/$defs/missing"}}})
    f = failure(lambda: create(channels, team, Story(title="x", custom_fields=struct({"x": 1}))))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"story.custom_fields"}

    # A schema no story could pass the check of is refused when set, and the old one stays.
    endless = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    for never in (endless, {"$ref": "#/$defs/missing"}):
        f = failure(lambda n=never: set_schema(n))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(f.violations) == {"project.story_custom_fields_schema"}
    assert create(channels, team, Story(title="still checked")).title == "still checked"
    # A cycle reached only through a field fails the stories that have that field, as a violation.
    set_schema({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "properties": {"x": {"$ref": "#/$defs/a"}}})
    f = failure(lambda: create(channels, team, Story(title="x", custom_fields=struct({"x": 1}))))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"story.custom_fields"}
    assert create(channels, team, Story(title="without x")).title == "without x"


def test_no_schema_makes_checking_a_story_costly(channels: Channels, team: Tenant) -> None:
    """A project's schema runs on every story write: whatever a manager writes, a check stays cheap."""
    set_schema = schema_setter(channels, team)

    # Two references to the next definition, 30 deep: a kilobyte and a half that expands to 2^30 checks.
    fan_out = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)} | {"d30": {}}
    dynamic = {f"d{i}": {"allOf": [{"$dynamicRef": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)} | {"d30": {}}
    refused = (
        {"$defs": fan_out, "$ref": "#/$defs/d0"},
        {"$defs": dynamic, "properties": {"x": {"$dynamicRef": "#/$defs/d0"}}},  # the same, by the other keyword
        {"properties": {"code": {"pattern": "^(a)\\1$"}}},  # a backreference: RE2 cannot run it
        {"patternProperties": {"^(a+)+$": {"type": "string"}}},
    )
    for schema in refused:
        f = failure(lambda s=schema: set_schema(s))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {
            "project.story_custom_fields_schema"
        }
    # A pattern that backtracks exponentially in Python's `re` runs in linear time.
    set_schema({"properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}})
    f = failure(lambda: create(channels, team, Story(title="x", custom_fields=struct({"code": "a" * 5000 + "!"}))))
    assert (
        set(f.violations) == {"story.custom_fields.code"}
        and "does not match" in f.violations["story.custom_fields.code"]
    )
    assert (
        create(channels, team, Story(title="y", custom_fields=struct({"code": "aaa"}))).custom_fields["code"] == "aaa"
    )
    # The work of a check (the schema's size times the values checked) has a ceiling.
    items = {"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": i} for i in range(1, 200)]}}
    set_schema({"properties": {"list": items}})
    f = failure(lambda: create(channels, team, Story(title="z", custom_fields=struct({"list": ["x"] * 2000}))))
    assert set(f.violations) == {"story.custom_fields"} and "too many values" in f.violations["story.custom_fields"]
    made = create(channels, team, Story(title="w", custom_fields=struct({"list": ["x"] * 20})))
    assert len(made.custom_fields.get_or_create_list("list")) == 20


def test_concurrent_retries_of_one_request_id_create_one_story(channels: Channels, team: Tenant) -> None:
    request = story_pb2.CreateStoryRequest(
        parent=team.organization, story=Story(title="Exactly once"), request_id=str(uuid.uuid4())
    )
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: api(channels).CreateStory(request, metadata=team.metadata).story, range(8)))
    assert all(story == made[0] for story in made)
    assert [s.name for s in listed(channels, team, filter='title = "Exactly once"')] == [made[0].name]


def test_a_retry_after_the_project_is_gone_still_gets_the_first_result(channels: Channels, team: Tenant) -> None:
    request = story_pb2.CreateStoryRequest(
        parent=team.organization, story=Story(title="Kept"), request_id=str(uuid.uuid4())
    )
    first = api(channels).CreateStory(request, metadata=team.metadata).story
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    delete = project_pb2.DeleteProjectRequest(name=team.organization, force=True)
    projects.DeleteProject(delete, metadata=team.metadata)
    assert api(channels).CreateStory(request, metadata=team.metadata).story == first
    fresh = story_pb2.CreateStoryRequest(
        parent=team.organization, story=Story(title="New"), request_id=str(uuid.uuid4())
    )
    assert failure(lambda: api(channels).CreateStory(fresh, metadata=team.metadata)).code == grpc.StatusCode.NOT_FOUND


def scoped_key(channels: Channels, tenant: Tenant, *scopes: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a new API key of `tenant`'s admin that may do only `scopes`."""
    key = api_key_pb2.ApiKey(display_name="scoped", scopes=scopes)
    made = api_key_pb2_grpc.ApiKeyServiceStub(channels.direct("identity")).CreateApiKey(
        api_key_pb2.CreateApiKeyRequest(parent=tenant.organization, api_key=key), metadata=tenant.metadata
    )
    return (("x-api-key", made.secret),)


def test_naming_a_sprint_or_epic_takes_the_right_to_read_it(channels: Channels, tenant: Tenant) -> None:
    """Whether a sprint or epic exists, is completed or was deleted is for its readers: a caller that may
    write stories but not read sprints (or epics) cannot find out by naming one."""
    team = in_project(channels, tenant)
    sprint, epic = make_sprint(channels, team), make_epic(channels, team)
    story = create(channels, team, Story(title="Referenced"))
    blind = scoped_key(channels, tenant, "projects.stories.create", "projects.stories.update")
    seeing = scoped_key(
        channels,
        tenant,
        "projects.stories.create",
        "projects.stories.update",
        "projects.sprints.get",
        "projects.epics.get",
    )
    for field, name in (("sprint", sprint.name), ("epic", epic.name)):
        naming, moving = Story(title="x"), Story(name=story.name)
        setattr(naming, field, name)
        setattr(moving, field, name)
        made = story_pb2.CreateStoryRequest(parent=team.organization, story=naming)
        moved = story_pb2.UpdateStoryRequest(story=moving, update_mask=FieldMask(paths=[field]))
        calls = (
            lambda r=made: api(channels).CreateStory(r, metadata=blind, timeout=10),  # type: ignore[misc]
            lambda r=moved: api(channels).UpdateStory(r, metadata=blind, timeout=10),  # type: ignore[misc]
        )
        for call in calls:
            f = failure(call)
            assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.metadata["permission"] == f"projects.{field}s.get"
        assert getattr(api(channels).CreateStory(made, metadata=seeing, timeout=10).story, field) == name
        assert getattr(api(channels).UpdateStory(moved, metadata=seeing, timeout=10).story, field) == name


def test_a_request_id_another_caller_sent_creates_for_that_caller(channels: Channels, tenant: Tenant) -> None:
    """A request_id is its caller's: an API key that may create stories but not read them, sending the id
    of its owner's create, gets a story of its own (and its own on a retry), never the owner's."""
    team, rid = in_project(channels, tenant), str(uuid.uuid4())
    secret = Story(title="Takeover plan", description="not for every key")
    owners = story_pb2.CreateStoryRequest(parent=team.organization, story=secret, request_id=rid)
    first = api(channels).CreateStory(owners, metadata=team.metadata).story
    keyed = scoped_key(channels, tenant, "projects.stories.create")
    mine = story_pb2.CreateStoryRequest(parent=team.organization, story=Story(title="Mine"), request_id=rid)
    made = api(channels).CreateStory(mine, metadata=keyed).story
    assert made.name != first.name and (made.title, made.description) == ("Mine", "")
    assert api(channels).CreateStory(mine, metadata=keyed).story == made
    item = story_pb2.CreateStoryRequest(story=Story(title="Mine too"))
    batch = story_pb2.BatchCreateStoriesRequest(parent=team.organization, requests=[item], request_id=rid)
    owner_batch = api(channels).BatchCreateStories(batch, metadata=team.metadata).stories
    assert api(channels).BatchCreateStories(batch, metadata=keyed).stories[0].name != owner_batch[0].name
    assert api(channels).CreateStory(owners, metadata=team.metadata).story == first


def test_a_request_id_sent_to_another_project_creates_there(channels: Channels, tenant: Tenant) -> None:
    """A retry is the same request to the same parent: the id sent to another project must not answer
    with the first project's story."""
    first, second = in_project(channels, tenant), in_project(channels, tenant)
    rid = str(uuid.uuid4())
    for team in (first, second):
        request = story_pb2.CreateStoryRequest(parent=team.organization, story=Story(title="Here"), request_id=rid)
        made = api(channels).CreateStory(request, metadata=team.metadata).story
        assert (
            made.name.startswith(f"{team.organization}/")
            and api(channels).CreateStory(request, metadata=team.metadata).story == made
        )
        item = story_pb2.CreateStoryRequest(story=Story(title="Here"))
        batch = story_pb2.BatchCreateStoriesRequest(parent=team.organization, requests=[item], request_id=rid)
        made = api(channels).BatchCreateStories(batch, metadata=team.metadata).stories[0]
        assert made.name.startswith(f"{team.organization}/")
    assert [len(listed(channels, team, filter='title = "Here"')) for team in (first, second)] == [2, 2]
