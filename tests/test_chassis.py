"""The kit under every service, at its edges: odd input answers INVALID_ARGUMENT on the right field, a
stalled identity does not stall the services, and a broken connection does not strand its waiters."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url

from hishamos.agents.v1 import platform_pb2, platform_pb2_grpc
from hishamos.identity.v1 import api_key_pb2, api_key_pb2_grpc, audit_pb2, audit_pb2_grpc, user_pb2, user_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.stack import Stack, free_port
from hishamos_kit.auth import ApiKeys
from hishamos_kit.db import ScriptConnections
from hishamos_kit.errors import PermissionDenied
from hishamos_kit.server import SlowCalls, over_limit, serve
from hishamos_kit.settings import ServiceSettings
from tests.conftest import Channels, Tenant
from tests.errors import failure


@pytest.mark.parametrize(
    "filter",
    [r'username = "\q"', 'username = "a\tb"', r'username = "\ud800"', r'roles:"\ud800x"'],
)
def test_a_filter_string_json_cannot_read_is_refused(channels: Channels, tenant: Tenant, filter: str) -> None:
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    request = user_pb2.ListUsersRequest(parent=tenant.organization, filter=filter)
    f = failure(lambda: users.ListUsers(request, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"filter"}


def test_an_integer_beyond_64_bits_in_a_filter_is_refused(channels: Channels, tenant: Tenant) -> None:
    platforms = platform_pb2_grpc.PlatformServiceStub(channels.direct("agents"))
    request = platform_pb2.ListPlatformsRequest(parent=tenant.organization, filter="priority > 99999999999999999999")
    f = failure(lambda: platforms.ListPlatforms(request, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"filter"}


def test_a_url_with_a_broken_host_is_a_field_violation(channels: Channels, tenant: Tenant) -> None:
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    for url in ("http://[::1", "http://[x]/"):
        change = user_pb2.User(name=tenant.user, avatar_uri=url)
        request = user_pb2.UpdateUserRequest(user=change, update_mask=FieldMask(paths=["avatar_uri"]))
        f = failure(lambda r=request: users.UpdateUser(r, metadata=tenant.metadata, timeout=10))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"user.avatar_uri"}


def test_bytes_that_are_no_request_are_refused_after_authentication(channels: Channels, tenant: Tenant) -> None:
    raw = channels.direct("agents").unary_unary("/hishamos.agents.v1.PlatformService/GetPlatform")
    not_utf8 = b"\x0a\x02\xc3\x28"  # field 1 (name), two bytes that are no UTF-8
    assert failure(lambda: raw(not_utf8, timeout=10)).code == grpc.StatusCode.UNAUTHENTICATED
    f = failure(lambda: raw(not_utf8, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and f.reason == "MALFORMED_REQUEST"
    assert "DecodeError" not in f.message and f.request_id and set(f.violations) == {"request"}


def test_a_page_token_continues_only_the_list_it_came_from(channels: Channels, tenant: Tenant) -> None:
    keys = api_key_pb2_grpc.ApiKeyServiceStub(channels.direct("identity"))
    for name in ("a", "b"):
        key = api_key_pb2.ApiKey(display_name=name, scopes=["projects.projects.list"])
        keys.CreateApiKey(
            api_key_pb2.CreateApiKeyRequest(parent=tenant.organization, api_key=key), metadata=tenant.metadata
        )
    listed = keys.ListApiKeys(
        api_key_pb2.ListApiKeysRequest(parent=tenant.organization, page_size=1), metadata=tenant.metadata
    )
    assert listed.next_page_token
    audit = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    foreign = audit_pb2.ListAuditEventsRequest(parent=tenant.organization, page_token=listed.next_page_token)
    f = failure(lambda: audit.ListAuditEvents(foreign, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"page_token"}


def test_services_keep_answering_while_identity_hangs(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    """Tokens already verified keep working: no call waits on identity's key set, one after another."""
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    request = project_pb2.ListProjectsRequest(parent=tenant.organization)
    projects.ListProjects(request, metadata=tenant.metadata, timeout=10)
    identity = stack.processes["identity"].pid
    os.kill(identity, signal.SIGSTOP)
    try:
        time.sleep(3)  # past the test stack's key-set lifetime (2 s): every call now finds it stale
        with ThreadPoolExecutor(6) as pool:  # each with a deadline that one wait on identity would miss
            calls = [
                pool.submit(projects.ListProjects, request, metadata=tenant.metadata, timeout=3) for _ in range(12)
            ]
            for call in calls:
                call.result()
    finally:
        os.kill(identity, signal.SIGCONT)


def test_a_connection_dropped_in_use_frees_its_place_for_a_waiting_caller(stack: Stack) -> None:
    conninfo = make_url(stack.database_urls("projects")[0]).set(drivername="postgresql")
    pool = ScriptConnections(conninfo.render_as_string(hide_password=False), 1)

    async def scenario() -> None:
        holding = asyncio.Event()

        async def fails_holding_it() -> None:
            async with pool.connection():
                holding.set()
                await asyncio.sleep(0.2)
                raise RuntimeError("the call failed: its connection is closed, not reused")

        async def waits_for_it() -> None:
            await holding.wait()
            async with pool.connection() as conn:
                await pool.run(conn, [("SELECT 1", ())])

        failing = asyncio.create_task(fails_holding_it())
        await asyncio.wait_for(waits_for_it(), 10)
        with pytest.raises(RuntimeError):
            await failing
        await pool.close()

    asyncio.run(scenario())


def test_slow_calls_are_logged_at_most_once_a_period_with_a_count_of_those_left_out() -> None:
    slow = SlowCalls(period=0.2)
    get, list_ = "/hishamos.projects.v1.ProjectService/GetProject", "/hishamos.projects.v1.ProjectService/ListProjects"
    assert slow.admit(get) == {"slow_calls_left_out": 0}
    assert [slow.admit(get) for _ in range(4)] == [None] * 4  # an overloaded second logs one line, not thousands
    assert slow.admit(list_) == {"slow_calls_left_out": 0}  # each method has its own allowance
    time.sleep(0.25)
    assert slow.admit(get) == {"slow_calls_left_out": 4}
    assert slow.admit(get) is None


def test_after_sigterm_a_server_says_not_serving_while_it_still_serves_then_stops() -> None:
    """Gateways stop routing to a server that says NOT_SERVING; until they have, its calls still land."""
    port = free_port()
    settings = ServiceSettings(port=port, metrics_port=-1, drain_seconds=1.5, grace_seconds=1)

    async def check(stub: health_pb2_grpc.HealthStub) -> str:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def main() -> list[str]:
        server = asyncio.create_task(serve("probe", settings, [], authenticator=None))  # type: ignore[arg-type]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await asyncio.wait_for(channel.channel_ready(), 10)
            seen = [await check(stub)]
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.3)
            seen.append(await check(stub))
            await server
            seen.append(await check(stub))
        return seen

    assert asyncio.run(main()) == ["SERVING", "NOT_SERVING", "UNAVAILABLE"]


def test_a_database_that_takes_the_connection_but_never_answers_fails_the_call_in_seconds() -> None:
    """As a PostgreSQL that is restarting on a busy machine does: the caller must hear UNAVAILABLE
    before its deadline, not wait with it."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never says a word
    port = silent.getsockname()[1]

    async def connect() -> None:
        scripts = ScriptConnections(f"host=127.0.0.1 port={port} dbname=x user=x", 1)
        with pytest.raises(psycopg.OperationalError):  # which the chassis answers UNAVAILABLE
            async with scripts.connection():
                pass

    try:
        asyncio.run(asyncio.wait_for(connect(), 30))  # without a connect timeout: waits for ever
    finally:
        silent.close()


def test_a_statement_past_a_database_limit_is_the_requests_fault_not_a_reason_to_retry(stack: Stack) -> None:
    """PostgreSQL files its program limits with the operational errors that mean "unavailable"; a
    client told UNAVAILABLE retries a request that can never succeed."""
    _, owner_url, _ = stack.database_urls("projects")
    url = owner_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn, pytest.raises(psycopg.OperationalError) as too_wide:
        conn.execute("SELECT " + ", ".join(["1"] * 2000))  # a target list holds at most 1664 entries
    assert over_limit(too_wide.value)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"host=127.0.0.1 port={free_port()} dbname=x user=x", connect_timeout=5)
    assert not over_limit(refused.value)


def test_a_remembered_key_refusal_is_a_new_error_each_time_and_asks_identity_once() -> None:
    """Raising one stored error again would grow its traceback with every refused call, holding each
    call's frames (and their requests) for as long as the refusal is remembered."""
    asked = 0

    async def suspended(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal asked
        asked += 1
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the organization is suspended")
        raise AssertionError("abort raises")

    async def scenario() -> list[BaseException]:
        server = grpc.aio.server()
        handlers = {"AuthenticateApiKey": grpc.unary_unary_rpc_method_handler(suspended)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("hishamos.identity.v1.ApiKeyService", handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        keys = ApiKeys(f"127.0.0.1:{port}")
        raised: list[BaseException] = []
        try:
            for _ in range(50):
                try:
                    await keys.verify("hos_key")
                except PermissionDenied as exc:
                    raised.append(exc)
        finally:
            await keys.close()
            await server.stop(None)
        return raised

    raised = asyncio.run(scenario())
    assert asked == 1 and len({id(e) for e in raised}) == 50
    assert all("suspended" in str(e) for e in raised)
    depth = [len(traceback.extract_tb(e.__traceback__)) for e in raised]
    assert depth[1:] == [depth[1]] * 49  # the 50th refusal carries no more frames than the second
