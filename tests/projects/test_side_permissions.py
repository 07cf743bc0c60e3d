"""What a call does or shows beside its own resource needs the permission for that too: moving stories,
showing their points, checking users or members with the service's own rights. Callers are API keys with
exactly the scopes named, so each test holds one boundary."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.type.date_pb2 import Date

from hishamos.identity.v1 import user_pb2, user_pb2_grpc
from hishamos.projects.v1 import (
    epic_pb2,
    epic_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    sprint_pb2,
    sprint_pb2_grpc,
    story_pb2,
    story_pb2_grpc,
)
from tests.conftest import Channels, Tenant, add_user
from tests.errors import Failure, decode
from tests.identity.test_api_keys import create as create_key
from tests.projects.support import create_project

Story = story_pb2.Story


def _key(channels: Channels, tenant: Tenant, *scopes: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", create_key(channels, tenant, list(scopes)).secret),)


def _outcome(call: Callable[[], Any]) -> tuple[Failure | None, Any]:
    """(None, reply) when the call succeeds, (failure, None) when it fails."""
    try:
        return None, call()
    except grpc.RpcError as exc:
        return decode(exc), None


def _day(offset: int) -> Date:
    d = datetime.now(UTC).date() + timedelta(days=offset)
    return Date(year=d.year, month=d.month, day=d.day)


def _sprints(channels: Channels) -> sprint_pb2_grpc.SprintServiceStub:
    return sprint_pb2_grpc.SprintServiceStub(channels.direct("projects"))


def _stories(channels: Channels) -> story_pb2_grpc.StoryServiceStub:
    return story_pb2_grpc.StoryServiceStub(channels.direct("projects"))


def _sprint(channels: Channels, tenant: Tenant, project: str, name: str) -> sprint_pb2.Sprint:
    s = sprint_pb2.Sprint(display_name=name, start_date=_day(-2), end_date=_day(5))
    return (
        _sprints(channels)
        .CreateSprint(sprint_pb2.CreateSprintRequest(parent=project, sprint=s), metadata=tenant.metadata, timeout=10)
        .sprint
    )


def _story(channels: Channels, tenant: Tenant, project: str, **fields: object) -> Story:
    return (
        _stories(channels)
        .CreateStory(
            story_pb2.CreateStoryRequest(parent=project, story=Story(**fields)),  # type: ignore[arg-type]
            metadata=tenant.metadata,
            timeout=10,
        )
        .story
    )


def _get_story(channels: Channels, tenant: Tenant, name: str) -> Story:
    return _stories(channels).GetStory(story_pb2.GetStoryRequest(name=name), metadata=tenant.metadata, timeout=10).story


def _denied(f: Failure | None, permission: str) -> bool:
    return f is not None and f.code == grpc.StatusCode.PERMISSION_DENIED and f.metadata.get("permission") == permission


# 1. CompleteSprint moves stories (a stories.update change) for a caller holding only projects.sprints.update,
#    and names them (a stories.list answer).


def test_complete_sprint_moves_stories_for_a_caller_who_may_not_update_stories(
    channels: Channels, tenant: Tenant
) -> None:
    project = create_project(channels, tenant).name
    running = _sprint(channels, tenant, project, "Running")
    target = _sprint(channels, tenant, project, "Next")
    secret = _story(channels, tenant, project, title="secret story", story_points=8, sprint=running.name, state=2)
    _sprints(channels).StartSprint(
        sprint_pb2.StartSprintRequest(name=running.name), metadata=tenant.metadata, timeout=10
    )
    key = _key(channels, tenant, "projects.sprints.update")
    f, reply = _outcome(
        lambda: _sprints(channels).CompleteSprint(
            sprint_pb2.CompleteSprintRequest(name=running.name, next_sprint=target.name), metadata=key, timeout=10
        )
    )
    moved_to = _get_story(channels, tenant, secret.name).sprint
    assert _denied(f, "projects.stories.update"), (
        f"a projects.sprints.update-only key completed the sprint; moved_stories={list(reply.moved_stories)}, "
        f"story's sprint is now {moved_to!r} (was {running.name!r})"
    )


# 2. DeleteSprint sends a planned sprint's stories to the backlog for a caller holding only projects.sprints.delete.


def test_delete_sprint_unplans_stories_for_a_caller_who_may_not_update_stories(
    channels: Channels, tenant: Tenant
) -> None:
    project = create_project(channels, tenant).name
    planned = _sprint(channels, tenant, project, "Planned")
    story = _story(channels, tenant, project, title="planned work", story_points=3, sprint=planned.name)
    key = _key(channels, tenant, "projects.sprints.delete")
    f, _ = _outcome(
        lambda: _sprints(channels).DeleteSprint(
            sprint_pb2.DeleteSprintRequest(name=planned.name), metadata=key, timeout=10
        )
    )
    after = _get_story(channels, tenant, story.name)
    assert _denied(f, "projects.stories.update") or after.sprint == planned.name, (
        f"a projects.sprints.delete-only key took the story out of its sprint: sprint is now {after.sprint!r}"
    )


# 3. ComputeSprintBurndown shows the sprint's stories' points to a caller without projects.stories.list,
#    which GetSprintBoard requires for the same figures.


def test_burndown_needs_what_the_board_needs(channels: Channels, tenant: Tenant) -> None:
    project = create_project(channels, tenant).name
    s = _sprint(channels, tenant, project, "Burn")
    _story(channels, tenant, project, title="a", story_points=13, sprint=s.name)
    _story(channels, tenant, project, title="b", story_points=21, sprint=s.name, state=1)
    key = _key(channels, tenant, "projects.sprints.get")
    board, _ = _outcome(
        lambda: _sprints(channels).GetSprintBoard(
            sprint_pb2.GetSprintBoardRequest(name=f"{s.name}/board"), metadata=key, timeout=10
        )
    )
    assert _denied(board, "projects.stories.list")  # the board is guarded
    f, reply = _outcome(
        lambda: _sprints(channels).ComputeSprintBurndown(
            sprint_pb2.ComputeSprintBurndownRequest(name=s.name), metadata=key, timeout=10
        )
    )
    assert _denied(f, "projects.stories.list"), (
        f"the board's own figure (total_story_points) through the burndown: {reply.total_story_points}"
    )


# 4. ComputeSprintVelocity: done story points of completed sprints for a projects.sprints.list-only caller.


def test_velocity_needs_stories_list(channels: Channels, tenant: Tenant) -> None:
    project = create_project(channels, tenant).name
    s = _sprint(channels, tenant, project, "Done")
    _story(channels, tenant, project, title="done", story_points=34, sprint=s.name, state=5)
    _sprints(channels).StartSprint(sprint_pb2.StartSprintRequest(name=s.name), metadata=tenant.metadata, timeout=10)
    _sprints(channels).CompleteSprint(
        sprint_pb2.CompleteSprintRequest(name=s.name), metadata=tenant.metadata, timeout=10
    )
    key = _key(channels, tenant, "projects.sprints.list")
    f, reply = _outcome(
        lambda: _sprints(channels).ComputeSprintVelocity(
            sprint_pb2.ComputeSprintVelocityRequest(parent=project), metadata=key, timeout=10
        )
    )
    assert _denied(f, "projects.stories.list"), f"stories' done points without stories.list: {reply}"


# 5. A user reference (epic owner, project manager, work log user) is checked with identity using the service's
#    own token: the answer tells a caller without identity.users.get which users exist and are active. Knowledge
#    refuses the same oracle for projects (PERMISSION_DENIED before asking).


def test_epic_owner_is_no_user_oracle_for_a_caller_who_may_not_read_users(channels: Channels, tenant: Tenant) -> None:
    project = create_project(channels, tenant).name
    api = epic_pb2_grpc.EpicServiceStub(channels.direct("projects"))
    key = _key(channels, tenant, "projects.epics.create")
    answers = {}
    for label, owner in (("real user", tenant.user), ("no user", f"{tenant.organization}/users/{uuid.uuid4()}")):
        request = epic_pb2.CreateEpicRequest(parent=project, epic=epic_pb2.Epic(title="probe", owner=owner))
        f, _ = _outcome(lambda r=request: api.CreateEpic(r, metadata=key, timeout=10))  # type: ignore[misc]
        answers[label] = "OK" if f is None else f"{f.code.name} {f.violations or f.metadata}"
    assert all(a.startswith("PERMISSION_DENIED") for a in answers.values()), f"the answers tell users apart: {answers}"


def test_project_manager_is_no_user_oracle_for_a_caller_who_may_not_read_users(
    channels: Channels, tenant: Tenant
) -> None:
    api = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    key = _key(channels, tenant, "projects.projects.create")
    answers = {}
    for label, manager in (("real user", tenant.user), ("no user", f"{tenant.organization}/users/{uuid.uuid4()}")):
        slug = f"m-{uuid.uuid4().hex[:10]}"
        request = project_pb2.CreateProjectRequest(
            parent=tenant.organization, project=project_pb2.Project(display_name="p", slug=slug, manager=manager)
        )
        f, _ = _outcome(lambda r=request: api.CreateProject(r, metadata=key, timeout=10))  # type: ignore[misc]
        answers[label] = "OK" if f is None else f"{f.code.name} {f.violations or f.metadata}"
    assert all(a.startswith("PERMISSION_DENIED") for a in answers.values()), f"the answers tell users apart: {answers}"


# 6. A story's assignee must be a member: the answer tells a caller without projects.members.list who is on
#    the team.


def test_story_assignee_is_no_membership_oracle_for_a_caller_who_may_not_list_members(
    channels: Channels, tenant: Tenant
) -> None:
    project = create_project(channels, tenant).name
    insider = add_user(channels, tenant, "viewer")
    outsider = add_user(channels, tenant, "viewer")
    member_pb2_grpc.MemberServiceStub(channels.direct("projects")).CreateMember(
        member_pb2.CreateMemberRequest(parent=project, member=member_pb2.Member(user=insider.user)),
        metadata=tenant.metadata,
        timeout=10,
    )
    key = _key(channels, tenant, "projects.stories.create")
    answers = {}
    for label, who in (("member", insider.user), ("not a member", outsider.user)):
        request = story_pb2.CreateStoryRequest(parent=project, story=Story(title="probe", assignee=who))
        f, _ = _outcome(lambda r=request: _stories(channels).CreateStory(r, metadata=key, timeout=10))  # type: ignore[misc]
        answers[label] = "OK" if f is None else f"{f.code.name} {f.violations}"
    assert answers["member"] == answers["not a member"] or all(
        a.startswith("PERMISSION_DENIED") for a in answers.values()
    ), f"a stories.create-only key learns the team: {answers}"


# 7. MoveStory (projects.stories.move) answers with the whole story: a key that may only reorder the backlog
#    reads every story's description and custom fields.


def test_move_only_key_does_not_read_stories(channels: Channels, tenant: Tenant) -> None:
    project = create_project(channels, tenant).name
    a = _story(channels, tenant, project, title="a", description="confidential plan")
    b = _story(channels, tenant, project, title="b")
    key = _key(channels, tenant, "projects.stories.move")
    denied, _ = _outcome(
        lambda: _stories(channels).GetStory(story_pb2.GetStoryRequest(name=a.name), metadata=key, timeout=10)
    )
    assert _denied(denied, "projects.stories.get")
    f, reply = _outcome(
        lambda: _stories(channels).MoveStory(
            story_pb2.MoveStoryRequest(name=a.name, after=b.name), metadata=key, timeout=10
        )
    )
    assert f is not None or reply.story.description == "", (
        f"a stories.move-only key read the story: description={reply.story.description!r}"
    )


def test_member_undelete_is_no_user_oracle(channels: Channels, tenant: Tenant) -> None:
    """Naming a user has projects ask identity with its own rights, so it needs identity.users.get (a create
    does); UndeleteMember asks identity too, and its answer tells a projects.members.delete-only key whether
    the user is still active."""
    project = create_project(channels, tenant).name
    members = member_pb2_grpc.MemberServiceStub(channels.direct("projects"))
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    active, gone = add_user(channels, tenant, "viewer"), add_user(channels, tenant, "viewer")
    named = {}
    for label, who in (("active user", active), ("deactivated user", gone)):
        named[label] = members.CreateMember(
            member_pb2.CreateMemberRequest(parent=project, member=member_pb2.Member(user=who.user)),
            metadata=tenant.metadata,
            timeout=10,
        ).member.name
    users.DeactivateUser(user_pb2.DeactivateUserRequest(name=gone.user), metadata=tenant.metadata, timeout=10)
    key = (("x-api-key", create_key(channels, tenant, ["projects.members.delete"]).secret),)
    answers = {}
    for label, name in named.items():
        members.DeleteMember(member_pb2.DeleteMemberRequest(name=name), metadata=key, timeout=10)
        f, _ = _outcome(
            lambda n=name: members.UndeleteMember(member_pb2.UndeleteMemberRequest(name=n), metadata=key, timeout=10)
        )
        answers[label] = "OK" if f is None else f"{f.code.name} {f.reason}"
    assert answers["active user"] == answers["deactivated user"] or all(
        a.startswith("PERMISSION_DENIED") for a in answers.values()
    ), f"a projects.members.delete-only key learns who is still an active user: {answers}"


def test_an_epic_naming_nobody_needs_no_identity_permission(channels: Channels, tenant: Tenant) -> None:
    """Only a user being named is checked with identity, so only that needs identity.users.get."""
    from hishamos.projects.v1 import epic_pb2, epic_pb2_grpc

    project = create_project(channels, tenant).name
    key = (("x-api-key", create_key(channels, tenant, ["projects.epics.create"]).secret),)
    api = epic_pb2_grpc.EpicServiceStub(channels.direct("projects"))
    request = epic_pb2.CreateEpicRequest(parent=project, epic=epic_pb2.Epic(title="no owner"))
    f, _ = _outcome(lambda: api.CreateEpic(request, metadata=key, timeout=10))
    assert f is None, f"an epic naming no user was refused: {f.code.name} {f.reason} {f.metadata} {f.message}"
