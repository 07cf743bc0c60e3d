"""Identity's answers under races: a sign-in, or a user's own call, under way while an admin or an operator
takes away what it relies on. Whatever returned first wins; nothing is granted after its removal returned."""

# The closures below run within their loop iteration, on the values of that iteration.
# ruff: noqa: B023

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    organization_pb2,
    role_pb2,
    user_pb2,
)
from hishamos.projects.v1 import project_pb2_grpc
from tests.conftest import PASSWORD, Channels, Mailbox, Operator, Tenant, add_user, sign_up
from tests.identity.stubs import MAILED_TOKEN, auth, orgs, roles, users


def projects(channels: Channels) -> project_pb2_grpc.ProjectServiceStub:
    return project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except grpc.RpcError as exc:
        return exc.code()


def claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def saturate_argon2(channels: Channels, n: int = 10) -> list[threading.Thread]:
    """Queue `n` sign-ins as an unknown login of a throwaway slug: each costs a decoy argon2id hash on the
    pool every password check shares (no account is touched), so a hash asked for next waits ~n*20 ms."""
    slug = f"nobody-{uuid.uuid4().hex[:8]}"

    def one() -> None:
        request = auth_pb2.LoginRequest(organization_slug=slug, login="nobody", password="wrong-password-1")
        outcome(lambda: auth(channels).Login(request, timeout=30))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.02)  # they are in the pool's queue
    return threads


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(outcome(call)))
    thread.start()
    return thread, box


def audited(channels: Channels, tenant: Tenant, action: str) -> list[audit_pb2.AuditEvent]:
    request = audit_pb2.ListAuditEventsRequest(parent=tenant.organization, filter=f'action = "{action}"')
    stub = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    return list(stub.ListAuditEvents(request, metadata=tenant.metadata, timeout=10).audit_events)


# --- 1. Login racing a change of the organization or of the user's roles ------------------------------


def test_a_login_racing_suspension_gets_no_session(channels: Channels, operator: Operator) -> None:
    """A login whose password check was under way when the suspension returned gets no tokens."""
    hits = 0
    for _ in range(3):
        tenant = sign_up(channels.direct("identity"))
        login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login="admin", password=PASSWORD)
        pool = saturate_argon2(channels)
        thread, box = in_thread(lambda: auth(channels).Login(login, timeout=30))
        time.sleep(0.03)  # the login found the organization active; its hash waits in the queue
        suspend = organization_pb2.SuspendOrganizationRequest(name=tenant.organization, reason="probe")
        orgs(channels).SuspendOrganization(suspend, metadata=operator.metadata, timeout=10)
        suspended_at = time.monotonic()
        thread.join()
        for t in pool:
            t.join()
        answered_at = time.monotonic()
        assert answered_at > suspended_at
        if isinstance(box[0], auth_pb2.LoginResponse):
            hits += 1
    assert hits == 0, f"{hits}/3 logins answered OK with tokens after SuspendOrganization had returned"


def test_a_login_racing_demotion_gets_the_roles_left(channels: Channels, tenant: Tenant) -> None:
    """A login under way when UnassignRole(admin) returned gets a token without `admin`."""
    hits = 0
    for _ in range(3):
        second = add_user(channels, tenant, "admin")
        login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=second.username, password=PASSWORD)
        pool = saturate_argon2(channels)
        thread, box = in_thread(lambda: auth(channels).Login(login, timeout=30))
        time.sleep(0.03)
        unassign = role_pb2.UnassignRoleRequest(user=second.user, role=f"{tenant.organization}/roles/admin")
        roles(channels).UnassignRole(unassign, metadata=tenant.metadata, timeout=10)
        thread.join()
        for t in pool:
            t.join()
        if isinstance(box[0], auth_pb2.LoginResponse) and "admin" in claims(box[0].tokens.access_token)["roles"]:
            hits += 1
    assert hits == 0, f"{hits}/3 logins issued a token naming `admin` after UnassignRole(admin) returned"


def test_a_login_racing_delete_role_gets_none_of_its_permissions(channels: Channels, tenant: Tenant) -> None:
    hits = 0
    for _ in range(3):
        role_id = f"r-{uuid.uuid4().hex[:8]}"
        role = role_pb2.Role(display_name="Projects", permissions=["projects.projects.create"])
        created = roles(channels).CreateRole(
            role_pb2.CreateRoleRequest(parent=tenant.organization, role_id=role_id, role=role),
            metadata=tenant.metadata,
            timeout=10,
        )
        member = add_user(channels, tenant, "viewer", created.role.name.rsplit("/", 1)[1])
        login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password=PASSWORD)
        pool = saturate_argon2(channels)
        thread, box = in_thread(lambda: auth(channels).Login(login, timeout=30))
        time.sleep(0.03)
        roles(channels).DeleteRole(role_pb2.DeleteRoleRequest(name=created.role.name), metadata=tenant.metadata)
        thread.join()
        for t in pool:
            t.join()
        if isinstance(box[0], auth_pb2.LoginResponse):
            token = claims(box[0].tokens.access_token)
            if "projects.projects.create" in token["perms"]:
                hits += 1
    assert hits == 0, f"{hits}/3 logins issued a token with a role's permissions after DeleteRole returned"


# --- 2. A user's own call racing their removal -----------------------------------------------------------


def test_a_user_deactivated_mid_call_creates_no_account(channels: Channels, tenant: Tenant) -> None:
    """A CreateUser under way (hashing the new password) when DeactivateUser of its caller returned makes
    no account."""
    hits = 0
    for _ in range(3):
        insider = add_user(channels, tenant, "admin")
        name = f"backdoor-{uuid.uuid4().hex[:6]}"
        create = user_pb2.CreateUserRequest(
            parent=tenant.organization,
            user=user_pb2.User(email=f"{name}@x.test", username=name),
            password=PASSWORD,
            roles=["admin"],
        )
        pool = saturate_argon2(channels)
        thread, box = in_thread(lambda: users(channels).CreateUser(create, metadata=insider.metadata, timeout=30))
        time.sleep(0.03)  # its standing was checked; its password hash waits in the queue
        deactivate = user_pb2.DeactivateUserRequest(name=insider.user)
        users(channels).DeactivateUser(deactivate, metadata=tenant.metadata, timeout=10)
        thread.join()
        for t in pool:
            t.join()
        if isinstance(box[0], user_pb2.CreateUserResponse):
            hits += 1
    assert hits == 0, f"{hits}/3: an admin was created by a user after DeactivateUser(that user) returned"


def test_a_user_being_deleted_cannot_undelete_themself(channels: Channels, tenant: Tenant) -> None:
    """DeleteUser(A) by an admin and UndeleteUser(A) by A at once: A never stays undeleted by their own call
    after DeleteUser answered OK."""
    trials, hits = 20, 0
    for _ in range(trials):
        a = add_user(channels, tenant, "admin")
        go = threading.Barrier(2)

        def delete() -> Any:
            go.wait()
            return outcome(
                lambda: users(channels).DeleteUser(
                    user_pb2.DeleteUserRequest(name=a.user), metadata=tenant.metadata, timeout=10
                )
            )

        def undelete() -> Any:
            go.wait()
            time.sleep(random.uniform(0.0, 0.006))
            return outcome(
                lambda: users(channels).UndeleteUser(
                    user_pb2.UndeleteUserRequest(name=a.user), metadata=a.metadata, timeout=10
                )
            )

        with ThreadPoolExecutor(2) as ex:
            d, u = ex.submit(delete), ex.submit(undelete)
            deleted, undeleted = d.result(), u.result()
        after = users(channels).GetUser(user_pb2.GetUserRequest(name=a.user), metadata=tenant.metadata).user
        if isinstance(deleted, user_pb2.DeleteUserResponse) and not after.HasField("delete_time"):
            assert isinstance(undeleted, user_pb2.UndeleteUserResponse)
            hits += 1
    # The control: the same UndeleteUser sent after DeleteUser has returned is refused by the standing check.
    a = add_user(channels, tenant, "admin")
    users(channels).DeleteUser(user_pb2.DeleteUserRequest(name=a.user), metadata=tenant.metadata, timeout=10)
    late = outcome(lambda: users(channels).UndeleteUser(user_pb2.UndeleteUserRequest(name=a.user), metadata=a.metadata))
    assert late == grpc.StatusCode.UNAUTHENTICATED
    assert hits == 0, f"{hits}/{trials}: a user deleted by an admin undeleted themself with their own token"


def test_a_user_being_deactivated_cannot_reactivate_themself(channels: Channels, tenant: Tenant) -> None:
    trials, hits = 20, 0
    for _ in range(trials):
        a = add_user(channels, tenant, "admin")
        go = threading.Barrier(2)

        def deactivate() -> Any:
            go.wait()
            return outcome(
                lambda: users(channels).DeactivateUser(
                    user_pb2.DeactivateUserRequest(name=a.user), metadata=tenant.metadata, timeout=10
                )
            )

        def activate() -> Any:
            go.wait()
            time.sleep(random.uniform(0.0, 0.006))
            return outcome(
                lambda: users(channels).ActivateUser(
                    user_pb2.ActivateUserRequest(name=a.user), metadata=a.metadata, timeout=10
                )
            )

        with ThreadPoolExecutor(2) as ex:
            d, u = ex.submit(deactivate), ex.submit(activate)
            deactivated, _ = d.result(), u.result()
        state = users(channels).GetUser(user_pb2.GetUserRequest(name=a.user), metadata=tenant.metadata).user.state
        if isinstance(deactivated, user_pb2.DeactivateUserResponse) and state == user_pb2.User.STATE_ACTIVE:
            hits += 1
    assert hits == 0, f"{hits}/{trials}: DeactivateUser returned OK yet the user was active after, by their own call"


# --- 3. Mailed tokens racing an email change ------------------------------------------------------------


def test_a_token_mailed_to_the_old_address_does_not_verify_the_new_one(
    channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    """SendEmailVerification racing an UpdateUser that moves the email: no token mailed to the old address
    verifies the new one."""
    trials, hits = 20, 0
    for _ in range(trials):
        member = add_user(channels, tenant)
        old = f"{member.username}@{tenant.slug}.test"
        new = f"moved-{member.username}@elsewhere.test"
        go = threading.Barrier(2)

        def send() -> Any:
            go.wait()
            request = user_pb2.SendEmailVerificationRequest(name=member.user)
            return outcome(lambda: users(channels).SendEmailVerification(request, metadata=member.metadata, timeout=10))

        def move() -> Any:
            go.wait()
            time.sleep(random.uniform(0.0, 0.008))
            moved = user_pb2.User(name=member.user, email=new)
            request = user_pb2.UpdateUserRequest(user=moved, update_mask=FieldMask(paths=["email"]))
            return outcome(lambda: users(channels).UpdateUser(request, metadata=tenant.metadata, timeout=10))

        with ThreadPoolExecutor(2) as ex:
            s, m = ex.submit(send), ex.submit(move)
            s.result(), m.result()
        try:
            mail = mailbox.wait_for(old, timeout=5)
        except AssertionError:
            continue  # the move came first: mail went to the new address (or none)
        token = MAILED_TOKEN.search(mail.get_content())
        assert token
        verified = outcome(lambda: auth(channels).VerifyEmail(auth_pb2.VerifyEmailRequest(token=token[0]), timeout=10))
        if isinstance(verified, auth_pb2.VerifyEmailResponse):
            assert verified.user.email == new
            if verified.user.email_verified:
                hits += 1
    mailbox.messages.clear()  # the mail to the new addresses, which nobody waits for
    assert hits == 0, f"{hits}/{trials}: a token mailed to the old address verified the new one"
