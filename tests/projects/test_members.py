"""A project's team: members with a project role, member_count kept true, and work assigned only to members."""

from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import user_pb2, user_pb2_grpc
from hishamos.projects.v1 import (
    member_pb2,
    member_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    story_pb2,
    story_pb2_grpc,
    task_pb2,
    task_pb2_grpc,
)
from tests.conftest import Channels, Tenant, add_user
from tests.errors import failure
from tests.pages import every_page
from tests.projects.support import add_member, in_project

Member = member_pb2.Member


def api(channels: Channels) -> member_pb2_grpc.MemberServiceStub:
    return member_pb2_grpc.MemberServiceStub(channels.direct("projects"))


def member_count(channels: Channels, team: Tenant) -> int:
    request = project_pb2.GetProjectRequest(name=team.organization)
    stub = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    return stub.GetProject(request, metadata=team.metadata, timeout=10).project.member_count


def listed(channels: Channels, team: Tenant, **fields: object) -> list[Member]:
    request = member_pb2.ListMembersRequest(parent=team.organization, **fields)  # type: ignore[arg-type]
    return list(api(channels).ListMembers(request, metadata=team.metadata, timeout=10).members)


def remove(channels: Channels, team: Tenant, name: str) -> Member:
    request = member_pb2.DeleteMemberRequest(name=name)
    return api(channels).DeleteMember(request, metadata=team.metadata, timeout=10).member


def restore(channels: Channels, team: Tenant, name: str) -> Member:
    request = member_pb2.UndeleteMemberRequest(name=name)
    return api(channels).UndeleteMember(request, metadata=team.metadata, timeout=10).member


def story(channels: Channels, team: Tenant, assignee: str) -> story_pb2.Story:
    request = story_pb2.CreateStoryRequest(
        parent=team.organization, story=story_pb2.Story(title="S", assignee=assignee)
    )
    return (
        story_pb2_grpc.StoryServiceStub(channels.direct("projects")).CreateStory(request, metadata=team.metadata).story
    )


def test_members_join_leave_and_come_back_with_member_count_kept(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    assert member_count(channels, team) == 0
    dev = add_user(channels, tenant, "developer")
    joined = add_member(channels, team, dev.user)
    assert joined.name.startswith(f"{team.organization}/members/")
    assert (joined.user, joined.role) == (dev.user, Member.ROLE_CONTRIBUTOR) and joined.etag
    key = str(uuid.uuid4())
    request = member_pb2.CreateMemberRequest(
        parent=team.organization, member=Member(user=tenant.user, role=Member.ROLE_MANAGER), request_id=key
    )
    lead = api(channels).CreateMember(request, metadata=team.metadata, timeout=10).member
    assert api(channels).CreateMember(request, metadata=team.metadata, timeout=10).member == lead  # a retry
    assert member_count(channels, team) == 2
    got = api(channels).GetMember(member_pb2.GetMemberRequest(name=lead.name), metadata=team.metadata).member
    assert got == lead

    f = failure(lambda: add_member(channels, team, dev.user))
    assert f.code == grpc.StatusCode.ALREADY_EXISTS and f.metadata == {"field": "member.user"}
    assert member_count(channels, team) == 2

    gone = remove(channels, team, joined.name)
    assert gone.HasField("delete_time") and member_count(channels, team) == 1
    assert [m.name for m in listed(channels, team)] == [lead.name]
    assert {m.name for m in listed(channels, team, show_deleted=True)} == {lead.name, joined.name}
    assert failure(lambda: remove(channels, team, joined.name)).code == grpc.StatusCode.NOT_FOUND
    assert member_count(channels, team) == 1

    rejoined = add_member(channels, team, dev.user)  # a new membership; the old one stays on record
    assert rejoined.name != joined.name and member_count(channels, team) == 2
    f = failure(lambda: restore(channels, team, joined.name))
    assert f.code == grpc.StatusCode.ALREADY_EXISTS and member_count(channels, team) == 2
    remove(channels, team, rejoined.name)
    assert restore(channels, team, joined.name).user == dev.user and member_count(channels, team) == 2


def test_role_changes_with_etag_and_filters(channels: Channels, tenant: Tenant, team: Tenant) -> None:
    dev = add_member(channels, team, add_user(channels, tenant).user)
    lead = add_member(channels, team, tenant.user, Member.ROLE_MANAGER)
    change = Member(name=dev.name, role=Member.ROLE_OBSERVER, etag=dev.etag)
    update = member_pb2.UpdateMemberRequest(member=change, update_mask=FieldMask(paths=["role"]))
    changed = api(channels).UpdateMember(update, metadata=team.metadata, timeout=10).member
    assert changed.role == Member.ROLE_OBSERVER and changed.etag not in ("", dev.etag)
    f = failure(lambda: api(channels).UpdateMember(update, metadata=team.metadata, timeout=10))
    assert f.code == grpc.StatusCode.ABORTED
    other_user = Member(name=dev.name, user=tenant.user)
    f = failure(
        lambda: api(channels).UpdateMember(member_pb2.UpdateMemberRequest(member=other_user), metadata=team.metadata)
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"member.user"}
    assert [m.name for m in listed(channels, team, filter="role = ROLE_MANAGER")] == [lead.name]
    assert [m.name for m in listed(channels, team, filter=f'user = "{dev.user}"')] == [dev.name]
    assert [m.name for m in listed(channels, team, order_by="role")] == [lead.name, dev.name]  # manager < observer


def test_members_order_by_role_as_the_enum_ranks_them(channels: Channels, tenant: Tenant, team: Tenant) -> None:
    roles = [Member.ROLE_OBSERVER, Member.ROLE_CONTRIBUTOR, Member.ROLE_MANAGER, Member.ROLE_CONTRIBUTOR]
    made = {add_member(channels, team, add_user(channels, tenant).user, role).name: role for role in roles}

    def walk(order_by: str) -> list[int]:
        request = member_pb2.ListMembersRequest(parent=team.organization, order_by=order_by, page_size=1)
        members = every_page(api(channels).ListMembers, request, "members", team.metadata)
        return [made[m.name] for m in members]

    manager, contributor, observer = Member.ROLE_MANAGER, Member.ROLE_CONTRIBUTOR, Member.ROLE_OBSERVER
    assert walk("role") == [manager, contributor, contributor, observer]
    assert walk("role desc") == [observer, contributor, contributor, manager]


def test_bad_members_are_refused_and_nothing_changes(
    channels: Channels, tenant: Tenant, other_tenant: Tenant, team: Tenant
) -> None:
    cases = {
        "member.user": [
            Member(),  # required
            Member(user="users/1"),  # malformed
            Member(user=other_tenant.user),  # another organization's user
            Member(user=f"{tenant.organization}/users/{uuid.uuid4()}"),  # no such user in identity
        ],
        "member.role": [Member(user=tenant.user, role=9)],  # type: ignore[arg-type]
    }
    for field, members in cases.items():
        for member in members:
            request = member_pb2.CreateMemberRequest(parent=team.organization, member=member)
            f = failure(lambda r=request: api(channels).CreateMember(r, metadata=team.metadata, timeout=10))
            assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {field}, member
    assert listed(channels, team, show_deleted=True) == [] and member_count(channels, team) == 0


def test_another_organizations_members_are_not_found(
    channels: Channels, tenant: Tenant, other_tenant: Tenant, team: Tenant
) -> None:
    mine = add_member(channels, team, tenant.user)
    theirs = in_project(channels, other_tenant)
    calls = [
        lambda: api(channels).GetMember(member_pb2.GetMemberRequest(name=mine.name), metadata=theirs.metadata),
        lambda: remove(channels, theirs, mine.name),
        lambda: api(channels).UpdateMember(
            member_pb2.UpdateMemberRequest(member=Member(name=mine.name, role=Member.ROLE_OBSERVER)),
            metadata=theirs.metadata,
        ),
        lambda: add_member(channels, dataclasses.replace(theirs, organization=team.organization), other_tenant.user),
    ]
    for call in calls:
        assert failure(call).code == grpc.StatusCode.NOT_FOUND
    assert api(channels).GetMember(member_pb2.GetMemberRequest(name=mine.name), metadata=team.metadata).member == mine
    assert member_count(channels, team) == 1


def test_work_goes_only_to_members_and_stays_with_those_who_leave(
    channels: Channels, tenant: Tenant, team: Tenant
) -> None:
    outsider = add_user(channels, tenant, "developer")
    f = failure(lambda: story(channels, team, outsider.user))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"story.assignee"}
    joined = add_member(channels, team, outsider.user)
    assigned = story(channels, team, outsider.user)
    tasks = task_pb2_grpc.TaskServiceStub(channels.direct("projects"))
    task = task_pb2.Task(title="T", assignee=tenant.user)
    f = failure(
        lambda: tasks.CreateTask(task_pb2.CreateTaskRequest(parent=assigned.name, task=task), metadata=team.metadata)
    )
    assert set(f.violations) == {"task.assignee"}

    remove(channels, team, joined.name)
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    renamed = story_pb2.Story(name=assigned.name, title="Renamed", assignee=outsider.user)  # assignee unchanged
    kept = stories.UpdateStory(story_pb2.UpdateStoryRequest(story=renamed), metadata=team.metadata).story
    assert (kept.title, kept.assignee) == ("Renamed", outsider.user)
    again = story(channels, team, "")
    reassign = story_pb2.Story(name=again.name, assignee=outsider.user)
    mask = FieldMask(paths=["assignee"])
    f = failure(
        lambda: stories.UpdateStory(
            story_pb2.UpdateStoryRequest(story=reassign, update_mask=mask), metadata=team.metadata
        )
    )
    assert set(f.violations) == {"story.assignee"}


def test_concurrent_joins_and_leaves_keep_member_count_true(channels: Channels, tenant: Tenant, team: Tenant) -> None:
    users = [add_user(channels, tenant).user for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        members = list(pool.map(lambda u: add_member(channels, team, u), users))
        list(pool.map(lambda m: remove(channels, team, m.name), members[:5]))
        list(pool.map(lambda m: restore(channels, team, m.name), members[:2]))
    assert member_count(channels, team) == len(listed(channels, team)) == 5


def test_a_user_deactivated_a_moment_ago_joins_no_team(channels: Channels, tenant: Tenant) -> None:
    """Projects asks identity at every join: having said yes a moment ago is no answer now."""
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    dev = add_user(channels, tenant)
    first, second = in_project(channels, tenant), in_project(channels, tenant)
    add_member(channels, first, dev.user)
    users.DeactivateUser(user_pb2.DeactivateUserRequest(name=dev.user), metadata=tenant.metadata, timeout=10)
    f = failure(lambda: add_member(channels, second, dev.user))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"member.user"}
