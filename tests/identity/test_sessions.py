"""Refresh tokens rotate; a spent one presented again ends its whole family; logout ends a session."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc

from hishamos.identity.v1 import auth_pb2, session_pb2, session_pb2_grpc
from tests.conftest import Channels, Tenant, add_user
from tests.errors import failure
from tests.identity.stubs import auth
from tests.identity.test_operators import audited
from tests.pages import every_page


def refresh(channels: Channels, token: str) -> auth_pb2.TokenPair:
    return auth(channels).RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=token), timeout=10).tokens


def signed_in_again(channels: Channels, tenant: Tenant) -> Tenant:
    request = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=tenant.username, password=tenant.password)
    tokens = auth(channels).Login(request, timeout=30).tokens
    return dataclasses.replace(tenant, access_token=tokens.access_token, refresh_token=tokens.refresh_token)


def test_refresh_rotates_and_reuse_revokes_the_family(channels: Channels, tenant: Tenant) -> None:
    first = refresh(channels, tenant.refresh_token)
    assert first.refresh_token != tenant.refresh_token and first.access_token
    second = refresh(channels, first.refresh_token)
    # The spent token comes back: somebody copied it. Its whole family ends, including the newest.
    reused = failure(lambda: refresh(channels, tenant.refresh_token))
    assert reused.code == grpc.StatusCode.UNAUTHENTICATED and reused.reason == "REFRESH_TOKEN_REUSED"
    assert failure(lambda: refresh(channels, second.refresh_token)).code == grpc.StatusCode.UNAUTHENTICATED
    # Its access tokens, the thief's among them, get nothing more from identity (other services take
    # them until they expire).
    for token in (tenant.access_token, second.access_token):
        ended = failure(
            lambda t=token: audited(channels, dataclasses.replace(tenant, access_token=t), "login.succeeded")
        )  # type: ignore[misc]
        assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_ENDED")
    # The admin, signed in again, learns whose session it was.
    (event,) = audited(channels, signed_in_again(channels, tenant), "session.token_reused")
    assert event.target.startswith(f"{tenant.user}/sessions/")


def test_a_session_ends_a_fixed_time_after_sign_in_however_often_it_is_refreshed(
    channels: Channels, tenant: Tenant
) -> None:
    """Refreshing must not keep a session, a stolen one among them, alive for ever: sign in again every 30 days."""
    api = session_pb2_grpc.SessionServiceStub(channels.direct("identity"))

    def expiry() -> int:
        listed = api.ListSessions(session_pb2.ListSessionsRequest(parent=tenant.user), metadata=tenant.metadata)
        (only,) = listed.sessions
        return only.expire_time.ToMicroseconds()

    signed_in = expiry()
    token = tenant.refresh_token
    for _ in range(2):
        time.sleep(0.01)
        token = refresh(channels, token).refresh_token
    assert expiry() == signed_in


def test_logout_ends_only_that_session(channels: Channels, tenant: Tenant) -> None:
    other = (
        auth(channels)
        .Login(
            auth_pb2.LoginRequest(organization_slug=tenant.slug, login=tenant.username, password=tenant.password),
            timeout=30,
        )
        .tokens
    )
    auth(channels).Logout(auth_pb2.LogoutRequest(refresh_token=tenant.refresh_token), timeout=10)
    # A token of an ended session is no sign of theft: it says so, and the other session lives on.
    ended = failure(lambda: refresh(channels, tenant.refresh_token))
    assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_ENDED")
    signed_out = failure(lambda: audited(channels, tenant, "session.ended"))  # its access token too, in identity
    assert (signed_out.code, signed_out.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_ENDED")
    still = dataclasses.replace(tenant, access_token=refresh(channels, other.refresh_token).access_token)
    (event,) = audited(channels, still, "session.ended")
    assert event.actor == tenant.user and event.target.startswith(f"{tenant.user}/sessions/")
    assert not audited(channels, still, "session.token_reused")


def test_malformed_or_unknown_refresh_tokens_are_unauthenticated(channels: Channels, tenant: Tenant) -> None:
    forged = tenant.refresh_token[:-4] + "AAAA"
    for token in ("hosr_nothex", forged, "Bearer " + tenant.access_token):
        f = failure(lambda t=token: refresh(channels, t))
        assert f.code == grpc.StatusCode.UNAUTHENTICATED
    assert failure(lambda: auth(channels).Logout(auth_pb2.LogoutRequest(refresh_token=forged), timeout=10)).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert refresh(channels, tenant.refresh_token).access_token  # the real one still works


def test_users_list_and_end_their_sessions(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    second = (
        auth(channels)
        .Login(
            auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password=member.password),
            timeout=30,
        )
        .tokens
    )
    api = session_pb2_grpc.SessionServiceStub(channels.direct("identity"))
    listed = api.ListSessions(session_pb2.ListSessionsRequest(parent=member.user), metadata=member.metadata, timeout=10)
    assert len(listed.sessions) == 2 and all(s.name.startswith(f"{member.user}/sessions/") for s in listed.sessions)
    shouted = session_pb2.ListSessionsRequest(parent=member.user.upper().replace("ORGANIZATIONS", "organizations"))
    shouted.parent = shouted.parent.replace("/USERS/", "/users/")  # the same user, ids in capitals
    assert api.ListSessions(shouted, metadata=member.metadata, timeout=10) == listed
    newest = listed.sessions[0]
    api.RevokeSession(session_pb2.RevokeSessionRequest(name=newest.name), metadata=member.metadata, timeout=10)
    assert failure(lambda: refresh(channels, second.refresh_token)).code == grpc.StatusCode.UNAUTHENTICATED
    assert refresh(channels, member.refresh_token).access_token
    again = failure(
        lambda: api.RevokeSession(
            session_pb2.RevokeSessionRequest(name=newest.name), metadata=member.metadata, timeout=10
        )
    )
    assert again.code == grpc.StatusCode.NOT_FOUND
    nobody = session_pb2.ListSessionsRequest(parent=f"{tenant.organization}/users/{uuid.uuid4()}")
    assert failure(lambda: api.ListSessions(nobody, metadata=tenant.metadata, timeout=10)).code == (
        grpc.StatusCode.NOT_FOUND  # no such user: not an empty list (AIP-132)
    )
    theirs = session_pb2.ListSessionsRequest(parent=tenant.user)
    assert failure(lambda: api.ListSessions(theirs, metadata=member.metadata, timeout=10)).code == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    managed = api.ListSessions(
        session_pb2.ListSessionsRequest(parent=member.user), metadata=tenant.metadata, timeout=10
    )
    assert len(managed.sessions) == 1


def test_a_manager_ends_the_sessions_of_those_below_but_not_an_admins(channels: Channels, tenant: Tenant) -> None:
    manager, member = add_user(channels, tenant, "manager"), add_user(channels, tenant)
    api = session_pb2_grpc.SessionServiceStub(channels.direct("identity"))
    admins = api.ListSessions(session_pb2.ListSessionsRequest(parent=tenant.user), metadata=tenant.metadata, timeout=10)
    for refused in (
        lambda: api.ListSessions(session_pb2.ListSessionsRequest(parent=tenant.user), metadata=manager.metadata),
        lambda: api.RevokeSession(
            session_pb2.RevokeSessionRequest(name=admins.sessions[0].name), metadata=manager.metadata
        ),
    ):
        f = failure(refused)
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.reason == "DELEGATION_DENIED"
    still = api.ListSessions(session_pb2.ListSessionsRequest(parent=tenant.user), metadata=tenant.metadata)
    assert still.sessions == admins.sessions, "the admin's sessions are as they were"
    theirs = api.ListSessions(session_pb2.ListSessionsRequest(parent=member.user), metadata=manager.metadata)
    api.RevokeSession(session_pb2.RevokeSessionRequest(name=theirs.sessions[0].name), metadata=manager.metadata)
    assert failure(lambda: refresh(channels, member.refresh_token)).code == grpc.StatusCode.UNAUTHENTICATED


def test_sessions_page_newest_first_without_repeats(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant)
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=member.username, password=member.password)
    for _ in range(4):
        auth(channels).Login(login, timeout=30)
    api = session_pb2_grpc.SessionServiceStub(channels.direct("identity"))
    whole = api.ListSessions(session_pb2.ListSessionsRequest(parent=member.user), metadata=member.metadata, timeout=10)
    assert len(whole.sessions) == 5 and not whole.next_page_token
    began = [s.create_time.ToDatetime() for s in whole.sessions]
    assert began == sorted(began, reverse=True)
    paged = every_page(
        api.ListSessions, session_pb2.ListSessionsRequest(parent=member.user, page_size=2), "sessions", member.metadata
    )
    assert paged == list(whole.sessions)
    # A session ended between pages neither repeats nor hides the ones after it.
    first = api.ListSessions(
        session_pb2.ListSessionsRequest(parent=member.user, page_size=2), metadata=member.metadata, timeout=10
    )
    api.RevokeSession(session_pb2.RevokeSessionRequest(name=first.sessions[0].name), metadata=member.metadata)
    rest = every_page(
        api.ListSessions,
        session_pb2.ListSessionsRequest(parent=member.user, page_size=2, page_token=first.next_page_token),
        "sessions",
        member.metadata,
    )
    assert rest == list(whole.sessions[2:])
    # A token continues only the user's list it came from.
    theirs = session_pb2.ListSessionsRequest(parent=tenant.user, page_token=first.next_page_token)
    f = failure(lambda: api.ListSessions(theirs, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in f.violations


def test_a_refresh_racing_the_end_of_its_session_leaves_no_live_token(channels: Channels, tenant: Tenant) -> None:
    """Logout at the moment the session refreshes: whichever comes first, no token of it works after."""
    sign_in = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=tenant.username, password=tenant.password)
    for _ in range(20):
        token = auth(channels).Login(sign_in, timeout=30).tokens.refresh_token
        start = threading.Barrier(2)

        def rotate(token: str = token, start: threading.Barrier = start) -> str:
            start.wait()
            try:
                return refresh(channels, token).refresh_token
            except grpc.RpcError:
                return ""

        def logout(token: str = token, start: threading.Barrier = start) -> None:
            start.wait()
            auth(channels).Logout(auth_pb2.LogoutRequest(refresh_token=token), timeout=10)

        with ThreadPoolExecutor(max_workers=2) as pool:
            rotated = pool.submit(rotate)
            pool.submit(logout).result()
            newer = rotated.result()
        if newer:
            f = failure(lambda newer=newer: refresh(channels, newer))  # type: ignore[misc]
            assert f.code == grpc.StatusCode.UNAUTHENTICATED, "the refreshed token outlived the logout"
