"""Expired rows go, from every organization at once, and nothing a request can still use goes with them."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc, session_pb2, session_pb2_grpc
from hishamos_devstack.stack import Stack
from hishamos_identity.recovery import RETENTION as EMAIL_TOKENS
from hishamos_identity.tokens import RETENTION as REFRESH_TOKENS
from hishamos_identity.tokens import hash_refresh_token
from hishamos_kit.db import Database
from hishamos_kit.jobs import RETENTION as FINISHED_JOBS
from hishamos_kit.retention import Retention, Rule
from tests.conftest import Channels, Tenant
from tests.db import app_role, superuser
from tests.errors import failure


def prune(stack: Stack, service: str, *rules: Rule) -> dict[str, int]:
    """One retention pass, as the service's own processes run it: as its app role. (Theirs may run
    meanwhile, so tests look at what is left, not at the counts.)"""

    async def run() -> dict[str, int]:
        db = Database(stack.databases[service].app_url, 1)
        try:
            return await Retention(db, *rules).prune()
        finally:
            await db.close()

    return asyncio.run(run())


@pytest.mark.parametrize("service", ["identity", "projects", "agents", "knowledge"])
def test_every_service_keeps_request_ids_a_week(stack: Stack, service: str) -> None:
    stale, fresh = uuid.uuid4(), uuid.uuid4()  # two organizations
    with superuser(stack, service) as conn:
        for organization, age in ((stale, "8 days"), (fresh, "6 days")):
            conn.execute(
                "insert into idempotency_keys (id, organization_id, method, request_id, created_at) "
                "values (gen_random_uuid(), %s, 'CreateProbe', gen_random_uuid()::text, now() - %s::interval)",
                (organization, age),
            )
    prune(stack, service)
    with superuser(stack, service) as conn:
        left = conn.execute(
            "select organization_id from idempotency_keys where organization_id = any(%s)", ([stale, fresh],)
        ).fetchall()
    assert left == [(fresh,)]
    # Outside a retention pass the policies admit nothing: the app role deletes no organization's rows.
    with app_role(stack, service) as conn:
        assert conn.execute("delete from idempotency_keys").rowcount == 0


def test_run_out_sessions_go_and_live_ones_keep_when_they_began(
    channels: Channels, stack: Stack, tenant: Tenant, other_tenant: Tenant
) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))

    def refresh(token: str) -> str:
        return auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=token), timeout=10).tokens.refresh_token

    first = tenant.refresh_token
    middle = refresh(first)
    last = refresh(middle)  # a live session of three tokens, the first two spent
    login = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=tenant.username, password=tenant.password)
    gone = auth.Login(login, timeout=30).tokens.refresh_token  # a session that will have run out whole
    every = [first, middle, last, gone]
    with superuser(stack, "identity") as conn:
        conn.execute(
            "update refresh_tokens set expires_at = now() - interval '2 days' where token_hash = any(%s)",
            ([hash_refresh_token(t) for t in (first, middle, gone)],),
        )
    sessions = session_pb2_grpc.SessionServiceStub(channels.direct("identity"))
    listing = session_pb2.ListSessionsRequest(parent=tenant.user)
    before = sessions.ListSessions(listing, metadata=tenant.metadata, timeout=10)
    assert len(before.sessions) == 1

    def refused_logout(token: str) -> str:
        return failure(lambda: auth.Logout(auth_pb2.LogoutRequest(refresh_token=token), timeout=10)).reason

    # Whether retention has forgotten a token or not, an expired one gets one answer.
    assert refused_logout(gone) == "REFRESH_TOKEN_INVALID"

    prune(stack, "identity", REFRESH_TOKENS)
    with superuser(stack, "identity") as conn:
        kept = conn.execute(
            "select token_hash from refresh_tokens where token_hash = any(%s)",
            ([hash_refresh_token(t) for t in every],),
        ).fetchall()
    assert {h for (h,) in kept} == {hash_refresh_token(first), hash_refresh_token(last)}
    # The session still began when the user signed in, and still refreshes; the other organization's too.
    assert sessions.ListSessions(listing, metadata=tenant.metadata, timeout=10) == before
    assert refresh(last)
    assert refresh(other_tenant.refresh_token)
    spent = failure(lambda: refresh(middle))
    assert spent.code == grpc.StatusCode.UNAUTHENTICATED and spent.reason == "REFRESH_TOKEN_INVALID"
    assert refused_logout(gone) == refused_logout(middle) == "REFRESH_TOKEN_INVALID"


def test_old_finished_jobs_and_run_out_mail_tokens_go(stack: Stack) -> None:
    kind = f"probe-{uuid.uuid4().hex[:8]}"
    jobs = {  # key: (finished, failed)
        "done-8-days": ("8 days", False),
        "done-6-days": ("6 days", False),
        "failed-8-days": ("8 days", True),
        "failed-31-days": ("31 days", True),
        "never-ran": (None, False),
    }
    stale, fresh = uuid.uuid4().hex, uuid.uuid4().hex  # mail tokens' hashes
    with superuser(stack, "identity") as conn:
        for key, (finished, failed) in jobs.items():
            conn.execute(
                "insert into jobs (id, kind, key, payload, run_at, finished_at, failed) values "
                "(gen_random_uuid(), %s, %s, '{}', now() - interval '40 days', now() - %s::interval, %s)",
                (kind, key, finished, failed),
            )
        for token_hash, expired in ((stale, "2 days"), (fresh, "1 hour")):
            conn.execute(
                "insert into email_tokens (id, organization_id, user_id, purpose, token_hash, expires_at) values "
                "(gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'password_reset', %s, now() - %s::interval)",
                (token_hash, expired),
            )
    prune(stack, "identity", FINISHED_JOBS, EMAIL_TOKENS)
    with superuser(stack, "identity") as conn:
        left = conn.execute("select key from jobs where kind = %s", (kind,)).fetchall()
        tokens = conn.execute("select token_hash from email_tokens where token_hash = any(%s)", ([stale, fresh],))
        assert tokens.fetchall() == [(fresh,)]
    assert sorted(k for (k,) in left) == ["done-6-days", "failed-8-days", "never-ran"]


AGED = {  # table: an insert of a row long expired, for any organization
    "idempotency_keys": "insert into idempotency_keys (id, organization_id, method, request_id, created_at) "
    "values (%s, gen_random_uuid(), 'CreateProbe', gen_random_uuid()::text, now() - interval '30 days')",
    "email_tokens": "insert into email_tokens (id, organization_id, user_id, purpose, token_hash, expires_at) "
    "values (%s, gen_random_uuid(), gen_random_uuid(), 'invitation', md5(random()::text), now() - interval '30 days')",
}


@pytest.mark.parametrize(
    ("service", "table"),
    [(s, "idempotency_keys") for s in ("identity", "projects", "agents", "knowledge")] + [("identity", "email_tokens")],
)
def test_each_service_runs_its_passes_by_itself(stack: Stack, service: str, table: str) -> None:
    """The processes delete on their own: every 2 seconds in the test stack, hourly by default."""
    row = uuid.uuid4()
    with superuser(stack, service) as conn:
        conn.execute(AGED[table], (row,))
        deadline = time.monotonic() + 30
        while conn.execute(f"select 1 from {table} where id = %s", (row,)).fetchone():
            assert time.monotonic() < deadline, f"{service} never deleted the expired row of {table}"
            time.sleep(0.5)
