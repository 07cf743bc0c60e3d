"""Password reset and email verification by mail, through a real SMTP server on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import (
    auth_pb2,
    organization_pb2,
    organization_pb2_grpc,
    user_pb2_grpc,
)
from hishamos.identity.v1 import user_pb2 as pb
from hishamos_devstack.stack import Stack
from tests.conftest import Channels, Mailbox, Tenant, add_user, sign_up
from tests.db import superuser
from tests.errors import failure
from tests.identity.stubs import MAILED_TOKEN, auth
from tests.identity.test_operators import audited


def mailed_reset(channels: Channels, mailbox: Mailbox, tenant: Tenant) -> tuple[Tenant, auth_pb2.ResetPasswordRequest]:
    """A new member, and the ResetPassword request the token mailed to them makes."""
    member = add_user(channels, tenant)
    email = f"{member.username}@{tenant.slug}.test"
    request = auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email=email)
    auth(channels).RequestPasswordReset(request, timeout=10)
    token = MAILED_TOKEN.search(mailbox.wait_for(email).get_content())
    assert token
    return member, auth_pb2.ResetPasswordRequest(token=token[0], new_password="fresh-password-42")


@contextmanager
def refused_reset(channels: Channels, mailbox: Mailbox, tenant: Tenant, email: str) -> Iterator[None]:
    """A reset asked for while the mail server refuses mail: inside, identity has tried to send it once."""
    mailbox.refusing, refused = True, mailbox.refused
    try:
        request = auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email=email)
        auth(channels).RequestPasswordReset(request, timeout=10)  # answered at once, whatever the mail server does
        deadline = time.monotonic() + 10
        while mailbox.refused == refused and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mailbox.refused > refused, "identity tried to send"
        yield
    finally:
        mailbox.refusing = False


def test_password_reset_by_mail_works_once_and_ends_sessions(
    stack: Stack, channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    member = add_user(channels, tenant)
    email = f"{member.username}@{tenant.slug}.test"
    auth(channels).RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email=email.upper()), timeout=10
    )
    # Unknown addresses and organizations get the same empty answer, and no mail; what is no address is told.
    for slug, address in ((tenant.slug, "nobody@nowhere.test"), ("no-such-org", email)):
        auth(channels).RequestPasswordReset(
            auth_pb2.RequestPasswordResetRequest(organization_slug=slug, email=address), timeout=10
        )
    typo = auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email=f"{member.username}.example.test")
    assert set(failure(lambda: auth(channels).RequestPasswordReset(typo, timeout=10)).violations) == {"email"}
    mail = mailbox.wait_for(email)
    token = MAILED_TOKEN.search(mail.get_content())
    assert token and mail["Subject"] == "Reset your HishamOS password"
    with superuser(stack, "identity") as conn:
        for table in ("email_tokens", "jobs"):  # the queued mail is sealed, too
            assert token[0] not in str(conn.execute(f"select * from {table}").fetchall())
    weak = auth_pb2.ResetPasswordRequest(token=token[0], new_password="short")
    assert "new_password" in failure(lambda: auth(channels).ResetPassword(weak, timeout=30)).violations
    reset = auth_pb2.ResetPasswordRequest(token=token[0], new_password="fresh-password-42")
    auth(channels).ResetPassword(reset, timeout=30)
    again = failure(lambda: auth(channels).ResetPassword(reset, timeout=30))
    assert again.code == grpc.StatusCode.INVALID_ARGUMENT and "token" in again.violations
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password="fresh-password-42")
    assert auth(channels).Login(login, timeout=30).user.name == member.user
    refresh = auth_pb2.RefreshTokenRequest(refresh_token=member.refresh_token)
    assert failure(lambda: auth(channels).RefreshToken(refresh, timeout=10)).code == grpc.StatusCode.UNAUTHENTICATED
    assert mailbox.messages == [], "no mail went to unknown addresses"


def test_a_new_password_ends_the_reset_tokens_still_out(
    stack: Stack, channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    """Whether set by one of them or changed by its owner, a password leaves no older token that sets another."""
    member = add_user(channels, tenant)
    email = f"{member.username}@{tenant.slug}.test"

    def reset_token() -> str:
        request = auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email=email)
        auth(channels).RequestPasswordReset(request, timeout=10)
        token = MAILED_TOKEN.search(mailbox.wait_for(email).get_content())
        assert token
        with superuser(stack, "identity") as conn:  # as if the minute in which resets are one had passed
            conn.execute(
                "update jobs set key = id::text where kind = 'password_reset' and payload->>'email' = %s", (email,)
            )
        return token[0]

    def reset(token: str, password: str) -> None:
        auth(channels).ResetPassword(auth_pb2.ResetPasswordRequest(token=token, new_password=password), timeout=30)

    older, newer = reset_token(), reset_token()
    reset(newer, "fresh-password-42")
    f = failure(lambda: reset(older, "stolen-password-42"))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "token" in f.violations
    pending = reset_token()
    change = pb.ChangePasswordRequest(
        name=member.user, current_password="fresh-password-42", new_password="changed-password-42"
    )
    # The reset ended every session of theirs, in identity at once: they sign in again to change it.
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    assert failure(lambda: api.ChangePassword(change, metadata=member.metadata, timeout=30)).reason == "SESSION_ENDED"
    again = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password="fresh-password-42")
    signed_in = (("authorization", f"Bearer {auth(channels).Login(again, timeout=30).tokens.access_token}"),)
    api.ChangePassword(change, metadata=signed_in, timeout=30)
    assert "token" in failure(lambda: reset(pending, "stolen-password-42")).violations
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password="changed-password-42")
    assert auth(channels).Login(login, timeout=30).user.name == member.user


def test_email_verification_and_a_changed_address_needs_it_again(
    channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    member = add_user(channels, tenant)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    address = f"{member.username}@{tenant.slug}.test"
    for _ in range(5):  # asked again and again: one mail a minute, so no way to flood an address
        request = pb.SendEmailVerificationRequest(name=member.user)
        users.SendEmailVerification(request, metadata=member.metadata, timeout=10)
    token = MAILED_TOKEN.search(mailbox.wait_for(address).get_content())
    assert token
    time.sleep(1.5)
    again = [m for m in mailbox.messages if m["To"] == address]
    assert len(again) <= 1  # a second only if a minute began between the calls
    sent = audited(channels, tenant, "email.verification_sent")
    assert len(sent) == 1 + len(again) and sent[0].actor == member.user
    for message in again:
        mailbox.messages.remove(message)
    verified = auth(channels).VerifyEmail(auth_pb2.VerifyEmailRequest(token=token[0]), timeout=10).user
    assert verified.name == member.user and verified.email_verified
    bogus = auth_pb2.VerifyEmailRequest(token=token[0][:-2] + "xx")
    assert failure(lambda: auth(channels).VerifyEmail(bogus, timeout=10)).code == grpc.StatusCode.INVALID_ARGUMENT
    moved = pb.User(name=member.user, email=f"new-{member.username}@{tenant.slug}.test")
    changed = users.UpdateUser(
        pb.UpdateUserRequest(user=moved, update_mask=FieldMask(paths=["email"])), metadata=tenant.metadata, timeout=10
    ).user
    assert not changed.email_verified


def test_a_token_mailed_before_the_address_changed_proves_nothing(
    channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    member = add_user(channels, tenant)
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    # Only the user asks for their own verification mail.
    other = pb.SendEmailVerificationRequest(name=tenant.user)
    denied = failure(lambda: users.SendEmailVerification(other, metadata=member.metadata, timeout=10))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED and denied.reason == "NOT_SELF"
    users.SendEmailVerification(pb.SendEmailVerificationRequest(name=member.user), metadata=member.metadata, timeout=10)
    token = MAILED_TOKEN.search(mailbox.wait_for(f"{member.username}@{tenant.slug}.test").get_content())
    assert token
    moved = pb.User(name=member.user, email=f"elsewhere-{member.username}@example.test")
    mask = FieldMask(paths=["email"])
    users.UpdateUser(pb.UpdateUserRequest(user=moved, update_mask=mask), metadata=tenant.metadata, timeout=10)
    stale = failure(lambda: auth(channels).VerifyEmail(auth_pb2.VerifyEmailRequest(token=token[0]), timeout=10))
    assert stale.code == grpc.StatusCode.INVALID_ARGUMENT and "token" in stale.violations
    got = users.GetUser(pb.GetUserRequest(name=member.user), metadata=tenant.metadata, timeout=10).user
    assert got.email == moved.email and not got.email_verified


def test_mail_waits_out_a_mail_server_that_refuses_and_arrives_once(
    stack: Stack, channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    member = add_user(channels, tenant)
    email = f"{member.username}@{tenant.slug}.test"
    with refused_reset(channels, mailbox, tenant, email):
        pass
    mail = mailbox.wait_for(email, timeout=20)  # the queue retries after a backoff
    assert MAILED_TOKEN.search(mail.get_content()) and mail["Message-ID"]
    time.sleep(1)
    assert all(m["To"] != email for m in mailbox.messages), "delivered once"
    with superuser(stack, "identity") as conn:
        (attempts, finished) = conn.execute(
            "select attempts, finished_at is not null from jobs where payload->>'to' = %s", (email,)
        ).fetchone()
    assert attempts >= 2 and finished


def test_an_invited_user_chooses_a_password_from_the_mail_and_is_verified(
    channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    email = f"guest-{tenant.slug}@{tenant.slug}.test"
    invite = pb.CreateUserRequest(
        parent=tenant.organization, user=pb.User(email=email, username=f"guest-{tenant.slug}")
    )
    invited = users.CreateUser(invite, metadata=tenant.metadata, timeout=30).user
    assert not invited.email_verified
    mail = mailbox.wait_for(email)
    token = MAILED_TOKEN.search(mail.get_content())
    inviting = next(line for line in mail.get_content().splitlines() if "invited you" in line)
    assert token and "organizations/" not in inviting  # the admin by name, not by resource name
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=email, password="any-guess-12345")
    f = failure(lambda: auth(channels).Login(login, timeout=30))  # no password works before it is accepted
    assert f.code == grpc.StatusCode.UNAUTHENTICATED
    accept = auth_pb2.ResetPasswordRequest(token=token[0], new_password="my-own-choice-77")
    auth(channels).ResetPassword(accept, timeout=30)
    assert failure(lambda: auth(channels).ResetPassword(accept, timeout=30)).code == grpc.StatusCode.INVALID_ARGUMENT
    login.password = "my-own-choice-77"
    signed_in = auth(channels).Login(login, timeout=30).user
    assert signed_in.name == invited.name and signed_in.email_verified


def test_an_invitation_dies_with_the_user_it_invited(channels: Channels, mailbox: Mailbox, tenant: Tenant) -> None:
    """An invitation sent to the wrong address, and the user deleted for it: the mail's token must not give
    whoever holds it a password for that user, to sign in with once the user is undeleted."""
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    email = f"mistyped-{tenant.slug}@{tenant.slug}.test"
    invite = pb.CreateUserRequest(parent=tenant.organization, user=pb.User(email=email, username=f"m-{tenant.slug}"))
    invited = users.CreateUser(invite, metadata=tenant.metadata, timeout=30).user
    token = MAILED_TOKEN.search(mailbox.wait_for(email).get_content())
    assert token
    deleted = users.DeleteUser(pb.DeleteUserRequest(name=invited.name), metadata=tenant.metadata, timeout=10).user
    accept = auth_pb2.ResetPasswordRequest(token=token[0], new_password="chosen-by-stranger-1")
    f = failure(lambda: auth(channels).ResetPassword(accept, timeout=30))
    assert (f.code, f.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOKEN_INVALID")
    undelete = pb.UndeleteUserRequest(name=invited.name, etag=deleted.etag)
    users.UndeleteUser(undelete, metadata=tenant.metadata, timeout=10)
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=email, password="chosen-by-stranger-1")
    assert failure(lambda: auth(channels).Login(login, timeout=30)).code == grpc.StatusCode.UNAUTHENTICATED


def test_a_line_break_in_the_organizations_name_does_not_stop_its_invitations(
    channels: Channels, mailbox: Mailbox
) -> None:
    founder = sign_up(channels.direct("identity"))
    renamed = organization_pb2.Organization(name=founder.organization, display_name="Acme\nCorp")
    request = organization_pb2.UpdateOrganizationRequest(
        organization=renamed, update_mask=FieldMask(paths=["display_name"])
    )
    organization_pb2_grpc.OrganizationServiceStub(channels.direct("identity")).UpdateOrganization(
        request, metadata=founder.metadata, timeout=10
    )
    email = f"guest@{founder.slug}.test"
    invite = pb.CreateUserRequest(parent=founder.organization, user=pb.User(email=email, username="guest"))
    user_pb2_grpc.UserServiceStub(channels.direct("identity")).CreateUser(invite, metadata=founder.metadata, timeout=30)
    mail = mailbox.wait_for(email, timeout=30)
    assert mail["Subject"] == "You are invited to Acme Corp on HishamOS" and MAILED_TOKEN.search(mail.get_content())


def test_a_reset_cut_short_spends_its_token_only_with_the_password_it_sets(
    stack: Stack, channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    """A client whose reset timed out retries with the same token: it must still be good unless the
    password was set."""
    member, reset = mailed_reset(channels, mailbox, tenant)
    cut = failure(lambda: auth(channels).ResetPassword(reset, timeout=0.005))  # gone while the hash runs
    assert cut.code == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1)
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password="fresh-password-42")
    try:
        changed = bool(auth(channels).Login(login, timeout=30))
    except grpc.RpcError:
        changed = False
    with superuser(stack, "identity") as conn:  # read after the sign-in: a reset still running has ended by now
        spent = conn.execute(
            "select used_at is not null from email_tokens where user_id = %s", (member.user.rsplit("/", 1)[1],)
        ).fetchall()
    assert spent == [(changed,)]
    if not changed:
        auth(channels).ResetPassword(reset, timeout=30)
    assert auth(channels).Login(login, timeout=30).user.name == member.user


def test_a_reset_job_run_again_after_a_crash_mails_no_second_token(
    stack: Stack, channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    """As if identity died after the job's work committed and before the job was marked done."""
    member = add_user(channels, tenant)
    email = f"{member.username}@{tenant.slug}.test"
    request = auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email=email)
    auth(channels).RequestPasswordReset(request, timeout=10)
    mailbox.wait_for(email)
    query = "select id from jobs where kind = 'password_reset' and payload->>'email' = %s"
    with superuser(stack, "identity") as conn:
        (job_id,) = conn.execute(query, (email,)).fetchone() or ()
        conn.execute("update jobs set finished_at = null, run_at = now() where id = %s", (job_id,))
        for _ in range(100):  # until the worker has run it again
            time.sleep(0.1)
            if conn.execute("select finished_at is not null from jobs where id = %s", (job_id,)).fetchone() == (True,):
                break
        else:
            pytest.fail("the worker did not run the job again")
        tokens = conn.execute("select count(*) from email_tokens where user_id = %s", (member.user.rsplit("/", 1)[1],))
        assert tokens.fetchone() == (1,)
    time.sleep(1)
    assert [m for m in mailbox.messages if m["To"] == email] == []


def test_resets_asked_for_again_and_again_send_one_mail(channels: Channels, mailbox: Mailbox, tenant: Tenant) -> None:
    """A flood of resets at one address, whoever sends it, is one token and one mail a minute."""
    member = add_user(channels, tenant)
    email = f"{member.username}@{tenant.slug}.test"
    request = auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email=email)
    while time.time() % 60 > 50:  # all within one minute
        time.sleep(0.5)
    for _ in range(20):
        auth(channels).RequestPasswordReset(request, timeout=10)
    mailbox.wait_for(email)
    time.sleep(1.5)
    assert [m for m in mailbox.messages if m["To"] == email] == []


def test_parallel_resets_with_one_token_hash_one_password_at_a_time(
    channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    """One good token is one argon2id hash in flight, not one a call: the hash pool serves sign-ins too."""
    _, reset = mailed_reset(channels, mailbox, tenant)

    def attempt(_: int) -> grpc.StatusCode:
        try:
            auth(channels).ResetPassword(reset, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(attempt, range(8)))
    assert codes.count(grpc.StatusCode.OK) == 1 and grpc.StatusCode.ABORTED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT}


def test_a_reset_mail_is_not_sent_once_its_token_has_expired(
    stack: Stack, channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    """Retries outlast an hour's outage; a reset token does not, and a mail with a dead token only misleads."""
    member = add_user(channels, tenant)
    email = f"{member.username}@{tenant.slug}.test"
    # As if the outage had lasted past the token's hour.
    with refused_reset(channels, mailbox, tenant, email), superuser(stack, "identity") as conn:
        conn.execute(
            "update jobs set payload = jsonb_set(payload, '{until}', '\"2000-01-01T00:00:00+00:00\"'), "
            "run_at = now() where kind = 'mail' and payload->>'to' = %s",
            (email,),
        )
    with superuser(stack, "identity") as conn:
        for _ in range(100):
            time.sleep(0.1)
            row = conn.execute("select finished_at is not null, failed from jobs where payload->>'to' = %s", (email,))
            if (done := row.fetchone()) == (True, False):
                break
        assert done == (True, False), "dropped, not failed"
    assert all(m["To"] != email for m in mailbox.messages)


def test_a_reset_lifts_a_lockout_and_its_backoff(
    stack: Stack, channels: Channels, mailbox: Mailbox, tenant: Tenant
) -> None:
    """Whoever reads the mail is the owner: after the reset, a later lockout starts from a minute again."""
    member, reset = mailed_reset(channels, mailbox, tenant)
    for i in range(5):
        failure(
            lambda i=i: auth(channels).Login(
                auth_pb2.LoginRequest(
                    organization_slug=tenant.slug, login=member.username, password=f"guess-{i}-wrong"
                ),
                timeout=30,
            )
        )
    auth(channels).ResetPassword(reset, timeout=30)
    with superuser(stack, "identity") as conn:
        row = conn.execute(
            "select failed_logins, lockouts, locked_until from users where username = %s", (member.username,)
        ).fetchone()
    assert row == (0, 0, None)
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password=reset.new_password)
    assert auth(channels).Login(login, timeout=30).user.name == member.user
