"""People of an organization: the standard methods, the max_users quota, activation, own password."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc, user_pb2_grpc
from hishamos.identity.v1 import user_pb2 as pb
from tests.conftest import PASSWORD, Channels, Operator, Tenant, add_user, set_quotas
from tests.errors import failure
from tests.identity.test_api_keys import create as create_key
from tests.standard import Case, StandardMethodsContract

USERS = Case(
    service="identity",
    pb=pb,
    stub=user_pb2_grpc.UserServiceStub,
    kind="User",
    field="user",
    plural="users",
    valid=lambda i: pb.User(email=f"dev{i}@example.test", username=f"dev{i}", full_name=f"Dev {i}"),
    invalid=lambda: pb.User(email="nope", username="x", avatar_uri="javascript:alert(1)", time_zone="Mars/Olympus"),
    invalid_fields={"user.email", "user.username", "user.avatar_uri", "user.time_zone"},
    update=("full_name", "Grace Hopper"),
    unique_field="email",
    filter_true=lambda u: f'email = "{u.email}"',
    create_fields={"password": PASSWORD},
    preexisting=lambda tenant: {tenant.user},
)


class TestUserStandardMethods(StandardMethodsContract):
    case = USERS


def users(channels: Channels) -> user_pb2_grpc.UserServiceStub:
    return user_pb2_grpc.UserServiceStub(channels.direct("identity"))


def login(channels: Channels, tenant: Tenant, username: str, password: str = PASSWORD) -> auth_pb2.LoginResponse:
    request = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=username, password=password)
    return auth_pb2_grpc.AuthServiceStub(channels.direct("identity")).Login(request, timeout=30)


def test_new_users_are_viewers_and_can_sign_in(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    user = users(channels).GetUser(pb.GetUserRequest(name=member.user), metadata=tenant.metadata, timeout=10).user
    assert list(user.roles) == ["viewer"] and user.state == pb.User.STATE_ACTIVE
    assert login(channels, tenant, member.username).user.name == member.user


def test_profile_fields_are_validated(channels: Channels, tenant: Tenant) -> None:
    bad = pb.User(name=tenant.user, avatar_uri="javascript:alert(1)", time_zone="Mars/Olympus", bio="b" * 2001)
    request = pb.UpdateUserRequest(user=bad, update_mask=FieldMask(paths=["avatar_uri", "time_zone", "bio"]))
    f = failure(lambda: users(channels).UpdateUser(request, metadata=tenant.metadata, timeout=10))
    assert set(f.violations) == {"user.avatar_uri", "user.time_zone", "user.bio"}
    good = pb.User(name=tenant.user, avatar_uri="https://cdn.test/a.png", time_zone="Europe/Berlin")
    request = pb.UpdateUserRequest(user=good, update_mask=FieldMask(paths=["avatar_uri", "time_zone"]))
    updated = users(channels).UpdateUser(request, metadata=tenant.metadata, timeout=10).user
    assert (updated.avatar_uri, updated.time_zone) == ("https://cdn.test/a.png", "Europe/Berlin")


def test_a_line_break_or_nul_does_not_slip_past_the_patterns(channels: Channels, tenant: Tenant) -> None:
    """`$` in a Python pattern also matches before a final line break: "bob\n" would be a second bob,
    one that could never sign in (Login strips what is typed)."""
    for user, field in (
        (pb.User(email="bob@example.test", username="bob\n"), "user.username"),
        (pb.User(email="bob\x00@example.test", username="bob"), "user.email"),
    ):
        request = pb.CreateUserRequest(parent=tenant.organization, user=user, password=PASSWORD)
        f = failure(lambda r=request: users(channels).CreateUser(r, metadata=tenant.metadata, timeout=10))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {field}
    sign_up = auth_pb2.SignUpRequest(
        organization_display_name="Acme",
        organization_slug="acme\n",
        email="founder@example.test",
        username="founder",
        password=PASSWORD,
    )
    f = failure(lambda: auth_pb2_grpc.AuthServiceStub(channels.direct("identity")).SignUp(sign_up, timeout=30))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"organization_slug"}


def test_max_users_is_enforced(channels: Channels, tenant: Tenant, operator: Operator) -> None:
    set_quotas(channels, operator, tenant.organization, max_users=2)
    second = add_user(channels, tenant)
    f = failure(lambda: add_user(channels, tenant))
    assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED and f.metadata["quota"] == "max_users"
    assert "ask a platform operator" in f.message  # a tenant cannot raise it
    users(channels).DeleteUser(pb.DeleteUserRequest(name=second.user), metadata=tenant.metadata, timeout=10)
    third = add_user(channels, tenant)  # the deleted user's seat is free again
    f = failure(
        lambda: users(channels).UndeleteUser(
            pb.UndeleteUserRequest(name=second.user), metadata=tenant.metadata, timeout=10
        )
    )
    assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert third.user != second.user
    # With one seat free, the deleted user takes it back.
    users(channels).DeleteUser(pb.DeleteUserRequest(name=third.user), metadata=tenant.metadata, timeout=10)
    back = users(channels).UndeleteUser(pb.UndeleteUserRequest(name=second.user), metadata=tenant.metadata, timeout=10)
    assert back.user.name == second.user and back.user.state == pb.User.State.STATE_ACTIVE


def test_a_list_field_is_asked_whether_it_holds_a_value(channels: Channels, tenant: Tenant) -> None:
    add_user(channels, tenant, "developer")
    listed = users(channels).ListUsers(
        pb.ListUsersRequest(parent=tenant.organization, filter='roles:"developer"'), metadata=tenant.metadata
    )
    assert [list(u.roles) for u in listed.users] == [["developer"]]
    for bad in ('roles = "admin"', 'roles != "admin"'):
        request = pb.ListUsersRequest(parent=tenant.organization, filter=bad)
        f = failure(lambda r=request: users(channels).ListUsers(r, metadata=tenant.metadata, timeout=10))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "filter" in f.violations


def test_deactivated_users_cannot_sign_in_or_refresh(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant, "developer")
    request = pb.DeactivateUserRequest(name=member.user)
    deactivated = users(channels).DeactivateUser(request, metadata=tenant.metadata, timeout=10).user
    assert deactivated.state == pb.User.STATE_DEACTIVATED
    assert failure(lambda: login(channels, tenant, member.username)).reason == "USER_DEACTIVATED"
    refresh = auth_pb2.RefreshTokenRequest(refresh_token=member.refresh_token)
    auth = auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))
    assert failure(lambda: auth.RefreshToken(refresh, timeout=10)).code == grpc.StatusCode.UNAUTHENTICATED
    # Their access token lives until it expires, but identity no longer takes it: it mints no key to
    # come back with once reactivated.
    f = failure(lambda: create_key(channels, member, ["projects.projects.list"]))
    assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, "USER_INACTIVE")
    users(channels).ActivateUser(pb.ActivateUserRequest(name=member.user), metadata=tenant.metadata, timeout=10)
    assert login(channels, tenant, member.username).user.state == pb.User.STATE_ACTIVE


def test_change_password_needs_the_current_one_and_only_for_oneself(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    api = users(channels)
    wrong = pb.ChangePasswordRequest(name=member.user, current_password="not-it-123", new_password="brand-new-pass-9")
    f = failure(lambda: api.ChangePassword(wrong, metadata=member.metadata, timeout=30))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "current_password" in f.violations
    weak = pb.ChangePasswordRequest(name=member.user, current_password=PASSWORD, new_password="short")
    assert "new_password" in failure(lambda: api.ChangePassword(weak, metadata=member.metadata, timeout=30)).violations
    someone_else = pb.ChangePasswordRequest(
        name=tenant.user, current_password=PASSWORD, new_password="brand-new-pass-9"
    )
    f = failure(lambda: api.ChangePassword(someone_else, metadata=member.metadata, timeout=30))
    assert f.code == grpc.StatusCode.PERMISSION_DENIED
    elsewhere = login(channels, tenant, member.username).tokens  # perhaps somebody who learned the password
    good = pb.ChangePasswordRequest(name=member.user, current_password=PASSWORD, new_password="brand-new-pass-9")
    api.ChangePassword(good, metadata=member.metadata, timeout=30)
    assert failure(lambda: login(channels, tenant, member.username)).code == grpc.StatusCode.UNAUTHENTICATED
    assert login(channels, tenant, member.username, "brand-new-pass-9").user.name == member.user
    # Changing the password ends the other sessions opened with the old one, at once in identity too;
    # the one it was changed in goes on.
    auth = auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))
    ended = auth_pb2.RefreshTokenRequest(refresh_token=elsewhere.refresh_token)
    assert failure(lambda: auth.RefreshToken(ended, timeout=10)).reason == "SESSION_ENDED"
    theirs = (("authorization", f"Bearer {elsewhere.access_token}"),)
    mine = pb.GetUserRequest(name=member.user)
    assert failure(lambda: api.GetUser(mine, metadata=theirs, timeout=10)).reason == "SESSION_ENDED"
    assert api.GetUser(mine, metadata=member.metadata, timeout=10).user.name == member.user
    kept = auth_pb2.RefreshTokenRequest(refresh_token=member.refresh_token)
    assert auth.RefreshToken(kept, timeout=10).tokens.access_token


def test_moving_ones_own_email_takes_the_password(channels: Channels, tenant: Tenant) -> None:
    """With a token alone, a thief would move the address, then reset the password through it."""
    member = add_user(channels, tenant, "manager")

    def move(caller: Tenant, email: str, password: str = "") -> pb.User:
        request = pb.UpdateUserRequest(
            user=pb.User(name=member.user, email=email),
            update_mask=FieldMask(paths=["email"]),
            current_password=password,
        )
        return users(channels).UpdateUser(request, metadata=caller.metadata, timeout=30).user

    for password, said in (("", "is required to change your own email"), ("wrong-horse-42", "does not match")):
        f = failure(lambda p=password: move(member, "thief@evil.test", p))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and f.violations == {"current_password": said}
    got = users(channels).GetUser(pb.GetUserRequest(name=member.user), metadata=tenant.metadata).user
    assert got.email == f"{member.username}@{tenant.slug}.test"
    assert move(member, "New@Example.test", PASSWORD).email == "new@example.test"
    assert move(member, "new@example.test").email == "new@example.test"  # unchanged: nothing to prove
    assert move(tenant, "moved-by-admin@example.test").email == "moved-by-admin@example.test"  # someone else's


def test_everyone_edits_their_own_profile_and_only_managers_edit_others(channels: Channels, tenant: Tenant) -> None:
    for role in ("viewer", "developer"):
        member, other = add_user(channels, tenant, role), add_user(channels, tenant, role)
        mine = pb.User(name=member.user, full_name="Ada L.", time_zone="Europe/London", bio="hello")
        mask = FieldMask(paths=["full_name", "time_zone", "bio"])
        profile = pb.UpdateProfileRequest(user=mine, update_mask=mask)
        edited = users(channels).UpdateProfile(profile, metadata=member.metadata, timeout=10).user
        assert (edited.full_name, edited.time_zone, edited.bio) == ("Ada L.", "Europe/London", "hello")
        moved = pb.UpdateProfileRequest(
            user=pb.User(name=member.user, email="ada@example.test"), update_mask=FieldMask(paths=["email"])
        )
        assert failure(
            lambda r=moved, m=member: users(channels).UpdateProfile(r, metadata=m.metadata, timeout=10)
        ).violations == {  # type: ignore[misc]
            "current_password": "is required to change your own email"
        }
        renamed = pb.User(name=other.user, full_name="Renamed")
        theirs = pb.UpdateProfileRequest(user=renamed, update_mask=mask)
        f = failure(lambda r=theirs, m=member: users(channels).UpdateProfile(r, metadata=m.metadata, timeout=10))  # type: ignore[misc]
        assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_SELF")
        update = pb.UpdateUserRequest(user=renamed, update_mask=mask)
        f = failure(lambda r=update, m=member: users(channels).UpdateUser(r, metadata=m.metadata, timeout=10))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.metadata["permission"] == "identity.users.update"
        assert (
            users(channels).GetUser(pb.GetUserRequest(name=other.user), metadata=tenant.metadata).user.full_name == ""
        )
    nameless = pb.UpdateProfileRequest(user=pb.User(name="me", bio="x"), update_mask=FieldMask(paths=["bio"]))
    f = failure(lambda: users(channels).UpdateProfile(nameless, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"user.name"}


def test_a_peer_cannot_move_a_users_email_and_take_the_account_over(channels: Channels, tenant: Tenant) -> None:
    """Moved to the mover's address, the email would bring the password reset there: only the user, or
    someone holding permissions beyond theirs, moves it; a manager does not move another manager's, nor
    an admin another admin's."""
    for role in ("manager", "admin"):
        mover, owner = add_user(channels, tenant, role), add_user(channels, tenant, role)
        moved = pb.User(name=owner.user, email=f"taken-{owner.username}@evil.test")
        request = pb.UpdateUserRequest(user=moved, update_mask=FieldMask(paths=["email"]))
        f = failure(lambda r=request, m=mover: users(channels).UpdateUser(r, metadata=m.metadata, timeout=10))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.reason == "DELEGATION_DENIED"
        got = users(channels).GetUser(pb.GetUserRequest(name=owner.user), metadata=tenant.metadata).user
        assert got.email == f"{owner.username}@{tenant.slug}.test"
        # Their other profile fields a peer may still edit.
        renamed = pb.UpdateUserRequest(
            user=pb.User(name=owner.user, bio="edited"), update_mask=FieldMask(paths=["bio"])
        )
        assert users(channels).UpdateUser(renamed, metadata=mover.metadata, timeout=10).user.bio == "edited"
