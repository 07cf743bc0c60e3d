"""Brute force meets a hard limit; security events land in an append-only audit log."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import grpc
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    role_pb2,
    role_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from hishamos_devstack.stack import Stack
from hishamos_identity.accounts import MAX_FAILURES
from tests.conftest import PASSWORD, Channels, Tenant, add_user
from tests.db import app_role, superuser
from tests.errors import Failure, failure
from tests.identity.test_totp import enrol


def login(channels: Channels, tenant: Tenant, password: str) -> auth_pb2.LoginResponse:
    request = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=tenant.username, password=password)
    return auth_pb2_grpc.AuthServiceStub(channels.direct("identity")).Login(request, timeout=60)


def events(channels: Channels, tenant: Tenant, filter: str) -> list[audit_pb2.AuditEvent]:
    request = audit_pb2.ListAuditEventsRequest(parent=tenant.organization, filter=filter, page_size=1000)
    api = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    return list(api.ListAuditEvents(request, metadata=tenant.metadata, timeout=10).audit_events)


def test_parallel_guesses_get_no_more_answers_than_the_limit(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    victim = add_user(channels, tenant)
    with ThreadPoolExecutor(max_workers=50) as pool:
        failures = list(pool.map(lambda i: failure(lambda: login(channels, victim, f"guess-number-{i}")), range(50)))
    assert {(f.code, f.reason) for f in failures} == {(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")}
    checked = events(channels, tenant, f'action = "login.failed" AND target = "{victim.user}"')
    assert sum(1 for e in checked if not e.details["locked"]) == MAX_FAILURES
    assert len(events(channels, tenant, f'action = "user.locked" AND target = "{victim.user}"')) == 1
    # Locked: even the right password fails, with the same error as a wrong one.
    assert failure(lambda: login(channels, victim, PASSWORD)).reason == "INVALID_CREDENTIALS"
    user_id = victim.user.rsplit("/", 1)[1]
    with superuser(stack, "identity") as conn:
        conn.execute("update users set locked_until = now() - interval '1 second' where id = %s", (user_id,))
    assert login(channels, victim, PASSWORD).user.name == victim.user


def test_parallel_sign_ins_with_the_right_password_all_succeed(channels: Channels, tenant: Tenant) -> None:
    user = add_user(channels, tenant)
    succeeded = f'action = "login.succeeded" AND target = "{user.user}"'
    before = len(events(channels, tenant, succeeded))
    with ThreadPoolExecutor(max_workers=MAX_FAILURES * 2) as pool:
        signed = list(pool.map(lambda _: login(channels, user, PASSWORD), range(MAX_FAILURES * 2)))
    assert {s.user.name for s in signed} == {user.user}
    assert len({s.tokens.refresh_token for s in signed}) == MAX_FAILURES * 2
    assert len(events(channels, tenant, succeeded)) == before + MAX_FAILURES * 2
    assert not events(channels, tenant, f'action = "login.failed" AND target = "{user.user}"')


def test_a_lock_that_ran_out_starts_a_new_count(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    user = add_user(channels, tenant)
    for i in range(MAX_FAILURES):
        failure(lambda i=i: login(channels, user, f"wrong-password-{i}"))
    user_id = user.user.rsplit("/", 1)[1]
    with superuser(stack, "identity") as conn:
        failed, lockouts = conn.execute(
            "select failed_logins, lockouts from users where id = %s", (user_id,)
        ).fetchone()
        assert (failed, lockouts) == (MAX_FAILURES, 1)
        conn.execute("update users set locked_until = now() - interval '1 second' where id = %s", (user_id,))
    failure(lambda: login(channels, user, "wrong-password-again"))
    with superuser(stack, "identity") as conn:
        row = conn.execute(
            "select failed_logins, lockouts, locked_until from users where id = %s", (user_id,)
        ).fetchone()
        assert row == (1, 1, None)  # counting anew; the lockouts in a row are remembered
    # The next lockout in a row lasts twice as long: two minutes.
    for i in range(MAX_FAILURES - 1):
        failure(lambda i=i: login(channels, user, f"wrong-password-{i}"))
    with superuser(stack, "identity") as conn:
        lockouts, minutes = conn.execute(
            "select lockouts, extract(epoch from locked_until - now()) / 60 from users where id = %s", (user_id,)
        ).fetchone()
    assert lockouts == 2 and 1.5 < minutes <= 2


def test_security_events_are_audited_and_only_admins_read_them(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    failure(lambda: login(channels, member, "wrong-password-1"))
    role_pb2_grpc.RoleServiceStub(channels.direct("identity")).AssignRole(
        role_pb2.AssignRoleRequest(user=member.user, role=f"{tenant.organization}/roles/developer"),
        metadata=tenant.metadata,
        timeout=10,
    )
    actions = {e.action for e in events(channels, tenant, "")}
    assert {"organization.created", "user.created", "login.succeeded", "login.failed", "role.assigned"} <= actions
    assigned = events(channels, tenant, 'action = "role.assigned"')[0]
    assert assigned.actor == tenant.user and assigned.target == member.user and assigned.details["role"] == "developer"
    assert assigned.request_id and assigned.create_time.seconds > 0
    request = audit_pb2.ListAuditEventsRequest(parent=tenant.organization)
    api = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    assert failure(lambda: api.ListAuditEvents(request, metadata=member.metadata, timeout=10)).code == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Read as a story, oldest first: the organization's creation opens it.
    oldest = audit_pb2.ListAuditEventsRequest(parent=tenant.organization, order_by="create_time", page_size=1)
    (first,) = api.ListAuditEvents(oldest, metadata=tenant.metadata).audit_events
    assert (first.action, first.actor, first.target) == ("organization.created", tenant.user, tenant.organization)
    oldest.order_by = "action"
    f = failure(lambda: api.ListAuditEvents(oldest, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"order_by"}


@pytest.mark.parametrize("statement", ["update audit_events set action = 'nothing'", "delete from audit_events"])
def test_the_service_role_cannot_rewrite_history(stack: Stack, tenant: Tenant, statement: str) -> None:
    with app_role(stack, "identity") as conn:
        conn.execute("select set_config('app.organization_id', %s, false)", (tenant.organization.split("/")[1],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_password_guesses_through_change_password_count_toward_the_lockout(channels: Channels, tenant: Tenant) -> None:
    """A stolen access token is no way around the limit."""
    victim = add_user(channels, tenant)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    for i in range(MAX_FAILURES + 2):
        guess = user_pb2.ChangePasswordRequest(
            name=victim.user, current_password=f"guess-number-{i}", new_password="mine-now-12345"
        )
        f = failure(lambda g=guess: users.ChangePassword(g, metadata=victim.metadata, timeout=60))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "current_password" in f.violations
    assert len(events(channels, tenant, f'action = "user.locked" AND target = "{victim.user}"')) == 1
    # Locked now: sign-in fails with the right password, and so does changing it.
    assert failure(lambda: login(channels, victim, PASSWORD)).reason == "INVALID_CREDENTIALS"
    right = user_pb2.ChangePasswordRequest(name=victim.user, current_password=PASSWORD, new_password="mine-now-12345")
    assert failure(lambda: users.ChangePassword(right, metadata=victim.metadata, timeout=60)).reason == "WRONG_PASSWORD"


def test_user_changes_and_unknown_sign_ins_are_audited(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    renamed = user_pb2.User(name=member.user, full_name="Renamed", bio="hello")
    mask = FieldMask(paths=["full_name", "bio"])
    user = users.UpdateUser(user_pb2.UpdateUserRequest(user=renamed, update_mask=mask), metadata=tenant.metadata).user
    user = users.DeleteUser(user_pb2.DeleteUserRequest(name=member.user, etag=user.etag), metadata=tenant.metadata).user
    users.UndeleteUser(user_pb2.UndeleteUserRequest(name=member.user, etag=user.etag), metadata=tenant.metadata)
    logged = events(channels, tenant, f'target = "{member.user}" AND action != "login.succeeded"')
    assert [(e.action, e.actor) for e in reversed(logged)] == [
        ("user.created", tenant.user),
        ("user.updated", tenant.user),
        ("user.deleted", tenant.user),
        ("user.undeleted", tenant.user),
    ]
    assert logged[2].details["fields"] == ["bio", "full_name"]
    # A login nobody has is on record, filed under no user even when it is a user's name, and without what
    # was typed: that is sometimes the password.
    for typed in ("nobody-here", member.user, "My-Passw0rd-typed-in-the-wrong-field"):
        stranger = Tenant(tenant.organization, tenant.slug, "", typed, "", "", "")
        assert failure(lambda s=stranger: login(channels, s, PASSWORD)).reason == "INVALID_CREDENTIALS"  # type: ignore[misc]
    unknown = events(channels, tenant, 'action = "login.failed" AND target = ""')
    assert [dict(e.details) for e in unknown] == [{"unknown_user": True}] * 3
    assert not events(channels, tenant, f'action = "login.failed" AND target = "{member.user}"')


def locked_while_checking(
    stack: Stack, channels: Channels, tenant: Tenant, victim: Tenant, call: Callable[[], object]
) -> Failure:
    """What `call`, which checks the victim's right password, answers when the account locks while
    argon2 runs (as a burst of guesses locks it): a decoy's guesses keep the hashing threads busy, so the
    victim's password is checked well after its row was read, and after the lock."""
    decoy = add_user(channels, tenant)
    with ThreadPoolExecutor(max_workers=41) as pool:
        for i in range(40):
            pool.submit(failure, lambda i=i: login(channels, decoy, f"guess-number-{i}"))  # type: ignore[misc]
        time.sleep(0.05)
        answer = pool.submit(failure, call)
        time.sleep(0.25)  # the victim's row read, unlocked; its hash waits behind the decoy's
        with superuser(stack, "identity") as conn:
            conn.execute(
                "update users set locked_until = now() + interval '1 hour' where id = %s", (victim.user.split("/")[-1],)
            )
        return answer.result()


def test_the_right_password_checked_while_the_account_locked_gets_no_true_answer(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    """Of parallel guesses at most MAX_FAILURES get a true answer: a right password whose check ends after
    the lock changes nothing and looks wrong, in ChangePassword as at sign-in, a second factor's included."""
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    victim = add_user(channels, tenant)
    change = user_pb2.ChangePasswordRequest(name=victim.user, current_password=PASSWORD, new_password="mine-now-12345")
    f = locked_while_checking(
        stack, channels, tenant, victim, lambda: users.ChangePassword(change, metadata=victim.metadata, timeout=60)
    )
    assert (f.code, f.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "WRONG_PASSWORD")
    assert not events(channels, tenant, f'action = "password.changed" AND target = "{victim.user}"')

    two_factor = add_user(channels, tenant)
    enrol(channels, two_factor)
    f = locked_while_checking(stack, channels, tenant, two_factor, lambda: login(channels, two_factor, PASSWORD))
    assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"), "not TOTP_REQUIRED"


def test_an_admin_unlocks_a_locked_user_and_nobody_unlocks_themself(channels: Channels, tenant: Tenant) -> None:
    """The lockout says until when in the audit log; an admin who has heard from the user lifts it early, but
    not a locked admin for themself, with a token the guesser may hold."""
    victim = add_user(channels, tenant, "admin")
    for i in range(MAX_FAILURES):
        failure(lambda i=i: login(channels, victim, f"wrong-password-{i}"))
    (locked,) = events(channels, tenant, f'action = "user.locked" AND target = "{victim.user}"')
    assert locked.details["until"]  # when the lock runs out, for the admin reading the log
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    unlock = user_pb2.UnlockUserRequest(name=victim.user)
    refused = failure(lambda: api.UnlockUser(unlock, metadata=victim.metadata, timeout=10))
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "UNLOCK_SELF")
    assert failure(lambda: login(channels, victim, PASSWORD)).reason == "INVALID_CREDENTIALS"  # still locked
    api.UnlockUser(unlock, metadata=tenant.metadata, timeout=10)
    assert login(channels, victim, PASSWORD).user.name == victim.user
    (unlocked,) = events(channels, tenant, f'action = "user.unlocked" AND target = "{victim.user}"')
    was, until = (datetime.fromisoformat(str(t)) for t in (unlocked.details["was_until"], locked.details["until"]))
    assert unlocked.actor == tenant.user and was == until
    api.UnlockUser(unlock, metadata=tenant.metadata, timeout=10)  # not locked: nothing changes, nothing recorded
    assert len(events(channels, tenant, f'action = "user.unlocked" AND target = "{victim.user}"')) == 1


def test_an_unlock_is_filed_under_the_users_name_however_it_was_spelt(channels: Channels, tenant: Tenant) -> None:
    """A UUID in capitals names the same user; the event is filed under the user's name, as user.locked is."""
    victim = add_user(channels, tenant, "viewer")
    for i in range(MAX_FAILURES):
        failure(lambda i=i: login(channels, victim, f"wrong-password-{i}"))
    assert events(channels, tenant, f'action = "user.locked" AND target = "{victim.user}"')
    org, user_id = victim.user.rsplit("/users/", 1)
    spelt = f"{org}/users/{user_id.upper()}"
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    api.UnlockUser(user_pb2.UnlockUserRequest(name=spelt), metadata=tenant.metadata, timeout=10)
    assert login(channels, victim, victim.password).user.name == victim.user  # unlocked indeed
    found = events(channels, tenant, f'action = "user.unlocked" AND target = "{victim.user}"')
    filed = [e.target for e in events(channels, tenant, 'action = "user.unlocked"')]
    assert found, f"the unlock is filed under {filed}, not {victim.user!r}"
