"""Projects asks identity (with its own service token) whether users exist and how many projects fit."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import user_pb2, user_pb2_grpc
from hishamos.projects.v1 import (
    epic_pb2,
    epic_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    story_pb2,
    story_pb2_grpc,
)
from hishamos_devstack.stack import Stack
from tests.conftest import Channels, Operator, Tenant, add_user, set_quotas
from tests.db import superuser
from tests.errors import failure
from tests.projects.support import add_member, create_project


def projects(channels: Channels) -> project_pb2_grpc.ProjectServiceStub:
    return project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))


def new_project(channels: Channels, tenant: Tenant, slug: str, manager: str = "") -> project_pb2.Project:
    request = project_pb2.CreateProjectRequest(
        parent=tenant.organization, project=project_pb2.Project(display_name=slug, slug=slug, manager=manager)
    )
    return projects(channels).CreateProject(request, metadata=tenant.metadata, timeout=10).project


def test_manager_and_assignee_must_be_active_users(channels: Channels, tenant: Tenant) -> None:
    stranger = f"{tenant.organization}/users/{uuid.uuid4()}"
    f = failure(lambda: new_project(channels, tenant, "ghost", manager=stranger))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"project.manager"}
    member = add_user(channels, tenant, "developer")
    project = new_project(channels, tenant, "real", manager=member.user)
    assert project.manager == member.user
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    orphan = story_pb2.CreateStoryRequest(parent=project.name, story=story_pb2.Story(title="T", assignee=stranger))
    f = failure(lambda: stories.CreateStory(orphan, metadata=tenant.metadata, timeout=10))
    assert set(f.violations) == {"story.assignee"}
    team = dataclasses.replace(tenant, organization=project.name)
    f = failure(lambda: add_member(channels, team, stranger))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"member.user"}
    add_member(channels, team, member.user)
    assigned = story_pb2.CreateStoryRequest(parent=project.name, story=story_pb2.Story(title="T", assignee=member.user))
    assert stories.CreateStory(assigned, metadata=tenant.metadata, timeout=10).story.assignee == member.user
    gone = add_user(channels, tenant)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    users.DeactivateUser(user_pb2.DeactivateUserRequest(name=gone.user), metadata=tenant.metadata, timeout=10)
    change = project_pb2.Project(name=project.name, manager=gone.user)
    update = project_pb2.UpdateProjectRequest(project=change, update_mask=FieldMask(paths=["manager"]))
    assert set(
        failure(lambda: projects(channels).UpdateProject(update, metadata=tenant.metadata, timeout=10)).violations
    ) == {"project.manager"}


def test_a_project_whose_manager_left_can_still_be_edited(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    gone = add_user(channels, tenant)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    users.DeactivateUser(user_pb2.DeactivateUserRequest(name=gone.user), metadata=tenant.metadata, timeout=10)
    project = new_project(channels, tenant, "left")
    # As if the manager left after being set (written here: the service would refuse them now).
    with superuser(stack, "projects") as conn:
        conn.execute("UPDATE projects SET manager = %s WHERE id = %s", (gone.user, project.name.rsplit("/", 1)[1]))
    renamed = project_pb2.Project(name=project.name, display_name="Renamed")
    update = project_pb2.UpdateProjectRequest(project=renamed, update_mask=FieldMask(paths=["display_name"]))
    edited = projects(channels).UpdateProject(update, metadata=tenant.metadata, timeout=10).project
    assert (edited.display_name, edited.manager) == ("Renamed", gone.user)
    successor = add_user(channels, tenant, "manager")
    handover = project_pb2.Project(name=project.name, manager=successor.user)
    update = project_pb2.UpdateProjectRequest(project=handover, update_mask=FieldMask(paths=["manager"]))
    assert projects(channels).UpdateProject(update, metadata=tenant.metadata, timeout=10).project.manager == (
        successor.user
    )


def test_max_projects_from_identity_is_enforced(channels: Channels, tenant: Tenant, operator: Operator) -> None:
    set_quotas(channels, operator, tenant.organization, max_projects=2)
    first = create_project(channels, tenant)
    new_project(channels, tenant, "second")
    f = failure(lambda: new_project(channels, tenant, "third"))
    assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED and f.metadata == {"quota": "max_projects", "limit": "2"}
    projects(channels).DeleteProject(
        project_pb2.DeleteProjectRequest(name=first.name, force=True), metadata=tenant.metadata, timeout=10
    )
    new_project(channels, tenant, "third")
    undelete = project_pb2.UndeleteProjectRequest(name=first.name)
    f = failure(lambda: projects(channels).UndeleteProject(undelete, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_user_deactivated_since_blocks_no_edit_that_keeps_them(channels: Channels, tenant: Tenant) -> None:
    """A read-modify-write (no mask, or `*`) sends the user back unchanged: that is no new reference."""
    owner = add_user(channels, tenant)
    project = new_project(channels, tenant, "kept-owner")
    team = dataclasses.replace(tenant, organization=project.name)
    epics = epic_pb2_grpc.EpicServiceStub(channels.direct("projects"))
    epic = epics.CreateEpic(
        epic_pb2.CreateEpicRequest(parent=project.name, epic=epic_pb2.Epic(title="E", owner=owner.user)),
        metadata=tenant.metadata,
        timeout=10,
    ).epic
    joined = add_member(channels, team, owner.user)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    users.DeactivateUser(user_pb2.DeactivateUserRequest(name=owner.user), metadata=tenant.metadata, timeout=10)

    epic.title = "E, renamed"
    renamed = epics.UpdateEpic(epic_pb2.UpdateEpicRequest(epic=epic), metadata=tenant.metadata, timeout=10).epic
    assert (renamed.title, renamed.owner) == ("E, renamed", owner.user)
    joined.role = member_pb2.Member.ROLE_OBSERVER
    members = member_pb2_grpc.MemberServiceStub(channels.direct("projects"))
    everything = member_pb2.UpdateMemberRequest(member=joined, update_mask=FieldMask(paths=["*"]))
    assert members.UpdateMember(everything, metadata=tenant.metadata, timeout=10).member.role == joined.role

    # Setting them anew is still refused.
    other = epics.CreateEpic(
        epic_pb2.CreateEpicRequest(parent=project.name, epic=epic_pb2.Epic(title="F")), metadata=tenant.metadata
    ).epic
    other.owner = owner.user
    f = failure(lambda: epics.UpdateEpic(epic_pb2.UpdateEpicRequest(epic=other), metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"epic.owner"}


def test_a_removed_member_deactivated_since_cannot_come_back(channels: Channels, tenant: Tenant) -> None:
    """UndeleteMember asks identity as CreateMember does: a deactivated user rejoins no team, and is
    neither counted nor given work."""
    dev = add_user(channels, tenant)
    project = new_project(channels, tenant, "no-rejoin")
    team = dataclasses.replace(tenant, organization=project.name)
    members = member_pb2_grpc.MemberServiceStub(channels.direct("projects"))
    joined = add_member(channels, team, dev.user)
    members.DeleteMember(member_pb2.DeleteMemberRequest(name=joined.name), metadata=tenant.metadata, timeout=10)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    users.DeactivateUser(user_pb2.DeactivateUserRequest(name=dev.user), metadata=tenant.metadata, timeout=10)

    back = member_pb2.UndeleteMemberRequest(name=joined.name)
    f = failure(lambda: members.UndeleteMember(back, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.FAILED_PRECONDITION and f.reason == "USER_INACTIVE"
    got = projects(channels).GetProject(project_pb2.GetProjectRequest(name=project.name), metadata=tenant.metadata)
    assert got.project.member_count == 0
    got_member = members.GetMember(member_pb2.GetMemberRequest(name=joined.name), metadata=tenant.metadata).member
    assert got_member.HasField("delete_time")

    users.ActivateUser(user_pb2.ActivateUserRequest(name=dev.user), metadata=tenant.metadata, timeout=10)
    assert not members.UndeleteMember(back, metadata=tenant.metadata, timeout=10).member.HasField("delete_time")


def test_a_project_edit_waiting_on_identity_holds_up_no_work_in_the_project(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    """An edit holds its project's row while it asks identity about a new manager: a story created in the
    project meanwhile (which takes a key-share lock on that row) must not wait for identity."""
    manager = add_user(channels, tenant, "manager")
    project = new_project(channels, tenant, "held")
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    story = story_pb2.CreateStoryRequest(parent=project.name, story=story_pb2.Story(title="meanwhile"))
    stories.CreateStory(story, metadata=tenant.metadata, timeout=10)
    change = project_pb2.Project(name=project.name, manager=manager.user)
    update = project_pb2.UpdateProjectRequest(project=change, update_mask=FieldMask(paths=["manager"]))
    identity = stack.processes["identity"].pid
    os.kill(identity, signal.SIGSTOP)  # identity answers nothing until resumed
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            edit = pool.submit(lambda: projects(channels).UpdateProject(update, metadata=tenant.metadata, timeout=20))
            time.sleep(0.5)  # the edit holds the project's row, waiting on identity
            made = stories.CreateStory(story, metadata=tenant.metadata, timeout=3)
            assert made.story.title == "meanwhile"
            os.kill(identity, signal.SIGCONT)
            assert edit.result().project.manager == manager.user
    finally:
        os.kill(identity, signal.SIGCONT)
