"""Two-factor sign-in: enrol, confirm, sign in with a code once, recover, disable."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import grpc

from hishamos.identity.v1 import audit_pb2, audit_pb2_grpc, auth_pb2, auth_pb2_grpc, user_pb2_grpc
from hishamos.identity.v1 import user_pb2 as pb
from hishamos_devstack.stack import Stack
from hishamos_identity import totp
from tests.conftest import Channels, Tenant, add_user
from tests.db import superuser
from tests.errors import failure


def login(channels: Channels, user: Tenant, code: str = "") -> auth_pb2.LoginResponse:
    request = auth_pb2.LoginRequest(
        organization_slug=user.slug, login=user.username, password=user.password, totp_code=code
    )
    return auth_pb2_grpc.AuthServiceStub(channels.direct("identity")).Login(request, timeout=60)


def enrol(channels: Channels, user: Tenant) -> tuple[bytes, list[str]]:
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    enrolled = api.EnrollTotp(pb.EnrollTotpRequest(name=user.user), metadata=user.metadata, timeout=10)
    assert (
        enrolled.provisioning_uri.startswith("otpauth://totp/HishamOS:")
        and enrolled.secret in enrolled.provisioning_uri
    )
    secret = base64.b32decode(enrolled.secret + "=" * (-len(enrolled.secret) % 8))
    login(channels, user)  # not on until confirmed
    wrong = pb.ConfirmTotpRequest(
        name=user.user,
        code="000000" if totp.code_at(secret, totp.current_step()) != "000000" else "111111",
        password=user.password,
    )
    f = failure(lambda: api.ConfirmTotp(wrong, metadata=user.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "code" in f.violations
    confirm = pb.ConfirmTotpRequest(
        name=user.user, code=totp.code_at(secret, totp.current_step()), password=user.password
    )
    codes = list(api.ConfirmTotp(confirm, metadata=user.metadata, timeout=10).recovery_codes)
    assert len(codes) == 10 == len(set(codes))
    return secret, codes


def test_sign_in_needs_a_code_that_works_once(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    secret, codes = enrol(channels, member)
    assert failure(lambda: login(channels, member)).reason == "TOTP_REQUIRED"
    next_code = totp.code_at(secret, totp.current_step() + 1)
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(lambda _: _try(lambda: login(channels, member, next_code)), range(10)))
    assert outcomes.count(True) == 1, "a code is accepted exactly once, however many race for it"
    with superuser(stack, "identity") as conn:
        conn.execute("update users set failed_logins = 0, locked_until = null where username = %s", (member.username,))
        row = conn.execute(
            "select totp_secret_sealed, recovery_codes from users where username = %s", (member.username,)
        ).fetchone()
    assert row is not None and secret not in bytes(row[0]) and not set(codes) & set(row[1])
    assert login(channels, member, codes[0]).user.totp_enabled
    assert failure(lambda: login(channels, member, codes[0])).reason == "INVALID_TOTP"
    # Enrolling and each recovery code spent show in the audit log (an unknown one: someone has the codes).
    audit = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    listed = audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(parent=tenant.organization, filter=f'target = "{member.user}"', page_size=100),
        metadata=tenant.metadata,
        timeout=10,
    ).audit_events
    actions = [e.action for e in listed]
    assert actions.count("totp.recovery_code_used") == 1 and "totp.enrollment_started" in actions
    # The right password without a code, and a wrong code after it, each say someone knows the password.
    assert actions.count("login.second_factor_required") == 1
    failed = [e.details for e in listed if e.action == "login.failed"]
    assert any(d["factor"] == "totp" for d in failed)  # its password was never wrong: only a locked account's
    assert all(d["locked"] for d in failed if d["factor"] == "password")  # attempt counts as the password's


def test_turning_it_on_needs_the_password(channels: Channels, tenant: Tenant) -> None:
    """A stolen token alone cannot turn two-factor sign-in on and so lock its owner out."""
    member = add_user(channels, tenant)
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    enrolled = api.EnrollTotp(pb.EnrollTotpRequest(name=member.user), metadata=member.metadata, timeout=10)
    secret = base64.b32decode(enrolled.secret + "=" * (-len(enrolled.secret) % 8))
    code = totp.code_at(secret, totp.current_step())
    for password, problem in (("", "is required"), ("not-the-password-1", "does not match")):
        request = pb.ConfirmTotpRequest(name=member.user, code=code, password=password)
        f = failure(lambda r=request: api.ConfirmTotp(r, metadata=member.metadata, timeout=30))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and problem in f.violations["password"]
    assert not login(channels, member).user.totp_enabled


def test_turning_it_on_ends_every_other_session(channels: Channels, tenant: Tenant) -> None:
    """Turned on after a suspected break-in, it evicts whoever else holds a session, at once in identity:
    their next sign-in takes a code. The session it was turned on in goes on."""
    member = add_user(channels, tenant)
    intruder = login(channels, member).tokens
    enrol(channels, member)
    auth = auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))
    refresh = auth_pb2.RefreshTokenRequest(refresh_token=intruder.refresh_token)
    f = failure(lambda: auth.RefreshToken(refresh, timeout=10))
    assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_ENDED")
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    theirs = (("authorization", f"Bearer {intruder.access_token}"),)
    mine = pb.GetUserRequest(name=member.user)
    assert failure(lambda: api.GetUser(mine, metadata=theirs, timeout=10)).reason == "SESSION_ENDED"
    assert api.GetUser(mine, metadata=member.metadata, timeout=10).user.totp_enabled
    kept = auth_pb2.RefreshTokenRequest(refresh_token=member.refresh_token)
    assert auth.RefreshToken(kept, timeout=10).tokens.access_token


def test_disable_needs_the_password(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    enrol(channels, member)
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    bad = pb.DisableTotpRequest(name=member.user, password="not-the-password-1")
    assert "password" in failure(lambda: api.DisableTotp(bad, metadata=member.metadata, timeout=30)).violations
    # A blank one is a form sent half-filled, not a guess: more of them than the lockout allows lock nothing.
    blank = pb.DisableTotpRequest(name=member.user)
    for _ in range(6):
        refused = failure(lambda: api.DisableTotp(blank, metadata=member.metadata, timeout=30))
        assert refused.violations == {"password": "is required"}
    other = pb.EnrollTotpRequest(name=tenant.user)
    assert (
        failure(lambda: api.EnrollTotp(other, metadata=member.metadata, timeout=10)).code
        == grpc.StatusCode.PERMISSION_DENIED
    )
    api.DisableTotp(
        pb.DisableTotpRequest(name=member.user, password=member.password), metadata=member.metadata, timeout=30
    )
    assert not login(channels, member).user.totp_enabled


def test_new_recovery_codes_replace_the_old_ones(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    api = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    request = pb.RegenerateRecoveryCodesRequest(name=member.user, password=member.password)
    off = failure(lambda: api.RegenerateRecoveryCodes(request, metadata=member.metadata, timeout=30))
    assert off.code == grpc.StatusCode.FAILED_PRECONDITION and off.reason == "TOTP_NOT_ENABLED"
    _, old = enrol(channels, member)
    wrong = pb.RegenerateRecoveryCodesRequest(name=member.user, password="not-the-password-1")
    assert (
        "password"
        in failure(lambda: api.RegenerateRecoveryCodes(wrong, metadata=member.metadata, timeout=30)).violations
    )
    theirs = pb.RegenerateRecoveryCodesRequest(name=tenant.user, password=tenant.password)
    denied = failure(lambda: api.RegenerateRecoveryCodes(theirs, metadata=member.metadata, timeout=30))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert login(channels, member, old[0]).user.totp_enabled  # the old codes worked until now
    new = list(api.RegenerateRecoveryCodes(request, metadata=member.metadata, timeout=30).recovery_codes)
    assert len(new) == 10 == len(set(new)) and not set(new) & set(old)
    assert failure(lambda: login(channels, member, old[1])).reason == "INVALID_TOTP"
    assert login(channels, member, new[0]).user.totp_enabled
    assert failure(lambda: login(channels, member, new[0])).reason == "INVALID_TOTP"


def _try(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError:
        return False
    return True


def test_codes_in_other_scripts_are_just_wrong() -> None:
    secret = totp.new_secret()
    assert totp.matching_step(secret, "\uff11\uff12\uff13\uff14\uff15\uff16") is None
    assert totp.matching_step(secret, totp.code_at(secret, totp.current_step())) == totp.current_step()


def test_a_code_typed_as_the_app_shows_it_counts() -> None:
    """Authenticator apps show `123 456`; the space is how the code looks, not part of it."""
    secret = totp.new_secret()
    code = totp.code_at(secret, totp.current_step())
    assert totp.matching_step(secret, f" {code[:3]} {code[3:]}\t") == totp.current_step()
