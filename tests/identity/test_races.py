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
    api_key_pb2,
    auth_pb2,
    organization_pb2,
    role_pb2,
    user_pb2,
)
from hishamos_devstack.stack import Stack
from tests.conftest import PASSWORD, Channels, Mailbox, Operator, Tenant, add_user, sign_up
from tests.db import superuser
from tests.errors import decode, failure
from tests.identity.stubs import MAILED_TOKEN, auth, keys, orgs, roles, users


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except grpc.RpcError as exc:
        return exc.code()


def claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def saturate_argon2(channels: Channels, n: int = 20) -> list[threading.Thread]:
    """Queue `n` sign-ins as an unknown login of a throwaway slug: each costs a decoy argon2id hash on the
    pool every password check shares (no account is touched), so a hash asked for next waits about n/2 hashes
    (~200 ms here): far longer than what the test does meanwhile, on a faster or slower machine alike."""
    slug = f"nobody-{uuid.uuid4().hex[:8]}"

    def one() -> None:
        request = auth_pb2.LoginRequest(organization_slug=slug, login="nobody", password="wrong-password-1")
        outcome(lambda: auth(channels).Login(request, timeout=30))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.02)  # they are in the pool's queue
    return threads


def at_once(first: Callable[[], Any], second: Callable[[], Any], spread: float = 0.006) -> tuple[Any, Any]:
    """Two calls sent together, the second up to `spread` seconds after the first: their outcomes."""
    go = threading.Barrier(2)

    def run(call: Callable[[], Any], delay: float) -> Any:
        go.wait()
        time.sleep(delay)
        return outcome(call)

    with ThreadPoolExecutor(2) as pool:
        one, two = pool.submit(run, first, 0.0), pool.submit(run, second, random.uniform(0.0, spread))
        return one.result(), two.result()


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(outcome(call)))
    thread.start()
    return thread, box


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
        deleted, undeleted = at_once(
            lambda: users(channels).DeleteUser(
                user_pb2.DeleteUserRequest(name=a.user), metadata=tenant.metadata, timeout=10
            ),
            lambda: users(channels).UndeleteUser(
                user_pb2.UndeleteUserRequest(name=a.user), metadata=a.metadata, timeout=10
            ),
        )
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
        deactivated, _ = at_once(
            lambda: users(channels).DeactivateUser(
                user_pb2.DeactivateUserRequest(name=a.user), metadata=tenant.metadata, timeout=10
            ),
            lambda: users(channels).ActivateUser(
                user_pb2.ActivateUserRequest(name=a.user), metadata=a.metadata, timeout=10
            ),
        )
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
        send = user_pb2.SendEmailVerificationRequest(name=member.user)
        moved = user_pb2.User(name=member.user, email=new)
        move = user_pb2.UpdateUserRequest(user=moved, update_mask=FieldMask(paths=["email"]))
        at_once(
            lambda: users(channels).SendEmailVerification(send, metadata=member.metadata, timeout=10),
            lambda: users(channels).UpdateUser(move, metadata=tenant.metadata, timeout=10),
            spread=0.008,
        )
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


# --- 4. What the re-check must not cost: calls that take nothing away run side by side ---------------------


def verdict(call: Callable[[], Any]) -> str:
    """`OK`, or the refusal's code and reason."""
    try:
        call()
    except grpc.RpcError as exc:
        f = decode(exc)
        return f"{f.code.name}:{f.reason}"
    return "OK"


def advisory_users_lock(tenant: Tenant) -> tuple[str, tuple[str]]:
    """The statement taking the organization's users lock, which every seat or admin change takes: held by a
    test, it lines calls up at a known point."""
    return "SELECT pg_advisory_lock(hashtext('users:' || %s))", (tenant.organization.rsplit("/", 1)[1],)


def test_one_users_create_api_key_calls_with_request_ids_run_side_by_side(channels: Channels, tenant: Tenant) -> None:
    bad: list[str] = []
    for _ in range(3):
        go = threading.Barrier(6)

        def one(i: int) -> str:
            key = api_key_pb2.ApiKey(display_name=f"k{i}", scopes=["projects.projects.list"])
            request = api_key_pb2.CreateApiKeyRequest(
                parent=tenant.organization, api_key=key, request_id=str(uuid.uuid4())
            )
            go.wait()
            return verdict(lambda: keys(channels).CreateApiKey(request, metadata=tenant.metadata, timeout=30))

        with ThreadPoolExecutor(6) as pool:
            bad += [o for o in pool.map(one, range(6)) if o != "OK"]
    assert bad == [], f"{len(bad)}/18 parallel CreateApiKey calls with request ids failed: {sorted(set(bad))}"


def test_two_admins_editing_each_other_and_the_organization_all_succeed(channels: Channels, tenant: Tenant) -> None:
    """Edits that take no standing away do not wait for the re-check's lock on their target, nor it for them."""
    a, b = add_user(channels, tenant, "admin"), add_user(channels, tenant, "admin")
    bad: list[str] = []
    for i in range(20):
        go = threading.Barrier(3)

        def edit(actor: Tenant, target: Tenant) -> str:
            user = user_pb2.User(name=target.user, full_name=f"by {actor.username} {i}")
            request = user_pb2.UpdateUserRequest(user=user, update_mask=FieldMask(paths=["full_name"]))
            go.wait()
            return verdict(lambda: users(channels).UpdateUser(request, metadata=actor.metadata, timeout=30))

        def org_edit() -> str:
            org = organization_pb2.Organization(name=tenant.organization, description=f"d{i}")
            request = organization_pb2.UpdateOrganizationRequest(
                organization=org, update_mask=FieldMask(paths=["description"])
            )
            go.wait()
            return verdict(lambda: orgs(channels).UpdateOrganization(request, metadata=a.metadata, timeout=30))

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(edit, a, b), pool.submit(edit, b, a), pool.submit(org_edit)]
            bad += [o for o in (f.result() for f in futures) if o != "OK"]
    assert bad == [], f"{len(bad)} of 60 calls failed: {sorted(set(bad))}"


def test_update_role_taking_a_permission_away_waits_for_a_write_under_way(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    """A CreateUser past its first write (its request id claimed, waiting for the seat lock) holds its
    caller's custom role: UpdateRole taking the permission away answers only after the user is made."""
    role_id = f"hr-{uuid.uuid4().hex[:6]}"
    perms = ["identity.users.create", "identity.users.get", "identity.users.list", "identity.roles.get"]
    role = role_pb2.Role(display_name="HR", permissions=perms)
    created = roles(channels).CreateRole(
        role_pb2.CreateRoleRequest(parent=tenant.organization, role_id=role_id, role=role),
        metadata=tenant.metadata,
        timeout=10,
    )
    hr = add_user(channels, tenant, "viewer", role_id)
    name = f"made-{uuid.uuid4().hex[:6]}"
    create = user_pb2.CreateUserRequest(
        parent=tenant.organization,
        user=user_pb2.User(email=f"{name}@x.test", username=name),
        password="correct-horse-42",
        request_id=str(uuid.uuid4()),
    )
    narrowed = role_pb2.Role(name=created.role.name, permissions=["identity.users.get", "identity.roles.get"])
    update = role_pb2.UpdateRoleRequest(role=narrowed, update_mask=FieldMask(paths=["permissions"]))
    with superuser(stack, "identity") as db:
        db.execute(*advisory_users_lock(tenant))
        creating, made = in_thread(lambda: verdict(lambda: users(channels).CreateUser(create, metadata=hr.metadata)))
        time.sleep(0.5)
        narrowing, narrowed_at = in_thread(
            lambda: (verdict(lambda: roles(channels).UpdateRole(update, metadata=tenant.metadata)), time.monotonic())
        )
        time.sleep(0.5)
        assert not narrowed_at, "UpdateRole answered while a write it stops was under way"
        released_at = time.monotonic()
        db.execute("SELECT pg_advisory_unlock(hashtext('users:' || %s))", advisory_users_lock(tenant)[1])
    creating.join()
    narrowing.join()
    assert made == ["OK"] and narrowed_at[0][0] == "OK" and narrowed_at[0][1] > released_at
    again = user_pb2.CreateUserRequest(
        parent=tenant.organization, user=user_pb2.User(email=f"x{name}@x.test", username=f"x{name}")
    )
    f = failure(lambda: users(channels).CreateUser(again, metadata=hr.metadata, timeout=30))
    assert f.code == grpc.StatusCode.PERMISSION_DENIED  # the permission is gone for the next call


def test_two_admins_deactivating_each_other_are_never_both_obeyed(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    """Each holds the other's row and then needs its own: one is deactivated first, and the other's call is
    refused, as its caller's (ABORTED when PostgreSQL broke the tie: sent again, it is USER_INACTIVE)."""
    a, b = add_user(channels, tenant, "admin"), add_user(channels, tenant, "admin")
    with superuser(stack, "identity") as db:
        db.execute(*advisory_users_lock(tenant))
        calls = [
            in_thread(
                lambda actor=actor, target=target: verdict(
                    lambda: users(channels).DeactivateUser(
                        user_pb2.DeactivateUserRequest(name=target.user), metadata=actor.metadata, timeout=30
                    )
                )
            )
            for actor, target in ((a, b), (b, a))
        ]
        time.sleep(0.8)
        db.execute("SELECT pg_advisory_unlock(hashtext('users:' || %s))", advisory_users_lock(tenant)[1])
    for thread, _ in calls:
        thread.join()
    answers = {box[0] for _, box in calls}
    assert answers in ({"OK", "ABORTED:CONCURRENT_UPDATE"}, {"OK", "UNAUTHENTICATED:USER_INACTIVE"}), answers
    states = {
        users(channels).GetUser(user_pb2.GetUserRequest(name=u.user), metadata=tenant.metadata).user.state
        for u in (a, b)
    }
    assert states == {user_pb2.User.STATE_ACTIVE, user_pb2.User.STATE_DEACTIVATED}


def test_a_sign_in_locked_and_suspended_while_argon2_ran_answers_as_a_wrong_password(
    stack: Stack, channels: Channels, operator: Operator
) -> None:
    """Any answer but a session tells that the password was right, so a locked account answers as a wrong
    password, whatever else happened to the organization meanwhile."""
    answers: list[str] = []
    for _ in range(3):
        t = sign_up(channels.direct("identity"))
        victim = add_user(channels, t, "viewer")
        login = auth_pb2.LoginRequest(organization_slug=t.slug, login=victim.username, password=PASSWORD)
        pool = saturate_argon2(channels)
        thread, box = in_thread(lambda: verdict(lambda: auth(channels).Login(login, timeout=30)))
        time.sleep(0.03)  # found unlocked and active; its hash waits in the queue
        with superuser(stack, "identity") as db:  # the lock five parallel wrong guesses would leave
            db.execute(
                "UPDATE users SET failed_logins = 5, lockouts = 1, locked_until = now() + interval '1 hour' "
                "WHERE id = %s",
                (victim.user.rsplit("/", 1)[1],),
            )
        suspend = organization_pb2.SuspendOrganizationRequest(name=t.organization, reason="test")
        orgs(channels).SuspendOrganization(suspend, metadata=operator.metadata, timeout=10)
        thread.join()
        for p in pool:
            p.join()
        answers.append(box[0])
    assert answers == ["UNAUTHENTICATED:INVALID_CREDENTIALS"] * 3
