"""Identity answers to a user's standing now, not to what an access token issued before says: it is
where access is given, so an older token must not give it back."""

from __future__ import annotations

import grpc

from hishamos.identity.v1 import role_pb2, role_pb2_grpc, user_pb2, user_pb2_grpc
from tests.conftest import Channels, Tenant, add_user
from tests.errors import failure


def users(channels: Channels) -> user_pb2_grpc.UserServiceStub:
    return user_pb2_grpc.UserServiceStub(channels.direct("identity"))


def get(channels: Channels, tenant: Tenant, name: str) -> user_pb2.User:
    return users(channels).GetUser(user_pb2.GetUserRequest(name=name), metadata=tenant.metadata, timeout=10).user


def test_a_demoted_manager_cannot_take_the_role_back_with_the_token_it_had(channels: Channels, tenant: Tenant) -> None:
    manager = add_user(channels, tenant, "manager")
    roles = role_pb2_grpc.RoleServiceStub(channels.direct("identity"))
    role = f"{tenant.organization}/roles/manager"
    roles.UnassignRole(role_pb2.UnassignRoleRequest(user=manager.user, role=role), metadata=tenant.metadata)
    again = role_pb2.AssignRoleRequest(user=manager.user, role=role)
    f = failure(lambda: roles.AssignRole(again, metadata=manager.metadata, timeout=10))
    assert (f.code, f.metadata["permission"]) == (grpc.StatusCode.PERMISSION_DENIED, "identity.roles.assign")
    assert "manager" not in get(channels, tenant, manager.user).roles


def test_a_deactivated_or_deleted_user_cannot_undo_it_with_the_token_it_had(channels: Channels, tenant: Tenant) -> None:
    deactivated, deleted = add_user(channels, tenant, "admin"), add_user(channels, tenant, "admin")
    api = users(channels)
    api.DeactivateUser(user_pb2.DeactivateUserRequest(name=deactivated.user), metadata=tenant.metadata, timeout=10)
    api.DeleteUser(user_pb2.DeleteUserRequest(name=deleted.user), metadata=tenant.metadata, timeout=10)
    shadow = user_pb2.CreateUserRequest(
        parent=tenant.organization,
        user=user_pb2.User(email=f"shadow@{tenant.slug}.test", username="shadow"),
        password="correct-horse-42",
        roles=["admin"],
    )
    for refused in (
        lambda: api.ActivateUser(user_pb2.ActivateUserRequest(name=deactivated.user), metadata=deactivated.metadata),
        lambda: api.CreateUser(shadow, metadata=deactivated.metadata),
        lambda: api.UndeleteUser(user_pb2.UndeleteUserRequest(name=deleted.user), metadata=deleted.metadata),
    ):
        f = failure(refused)
        assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, "USER_INACTIVE")
    assert get(channels, tenant, deactivated.user).state == user_pb2.User.STATE_DEACTIVATED
    assert get(channels, tenant, deleted.user).HasField("delete_time")
    listed = api.ListUsers(
        user_pb2.ListUsersRequest(parent=tenant.organization, filter='username = "shadow"'), metadata=tenant.metadata
    )
    assert not listed.users
