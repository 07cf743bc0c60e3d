"""Signing keys rotate with an overlap; a retired key's tokens fail everywhere."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import jwt
from sqlalchemy import text

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc, organization_pb2, organization_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.stack import Stack
from hishamos_identity.keys import KeyStore
from hishamos_kit.crypto import Sealer, load_key
from hishamos_kit.db import Database
from tests.conftest import Channels, Operator, Tenant, add_user
from tests.db import superuser
from tests.errors import failure


def test_rotation_overlaps_then_retires(stack: Stack, channels: Channels, tenant: Tenant, operator: Operator) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))
    old_kid = jwt.get_unverified_header(tenant.access_token)["kid"]
    # The keys sign every organization's tokens: not even an organization's admin may rotate them.
    for metadata in (add_user(channels, tenant, "viewer").metadata, tenant.metadata):
        denied = failure(lambda m=metadata: auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), metadata=m))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    rotated = auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), metadata=operator.metadata)
    assert rotated.active_kid != old_kid and list(rotated.published_kids)[:1] == [rotated.active_kid]
    assert old_kid in rotated.published_kids
    jwks = auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=10)
    assert {rotated.active_kid, old_kid} <= {k.kid for k in jwks.keys}

    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    orgs = organization_pb2_grpc.OrganizationServiceStub(channels.direct("identity"))
    list_projects = project_pb2.ListProjectsRequest(parent=tenant.organization)
    get_org = organization_pb2.GetOrganizationRequest(name=tenant.organization)
    projects.ListProjects(list_projects, metadata=tenant.metadata, timeout=10)  # the old token, during the overlap
    fresh = auth.Login(
        auth_pb2.LoginRequest(organization_slug=tenant.slug, login=tenant.username, password=tenant.password),
        timeout=30,
    ).tokens.access_token
    assert jwt.get_unverified_header(fresh)["kid"] == rotated.active_kid

    with superuser(stack, "identity") as conn:  # the overlap ends (as it would after 16 minutes)
        conn.execute("update signing_keys set retired_at = now() - interval '1 second' where kid = %s", (old_kid,))
    time.sleep(3)  # key caches in the test stack refresh within 2 seconds
    for call in (
        lambda: projects.ListProjects(list_projects, metadata=tenant.metadata, timeout=10),
        lambda: orgs.GetOrganization(get_org, metadata=tenant.metadata, timeout=10),
    ):
        assert failure(call).code == grpc.StatusCode.UNAUTHENTICATED
    assert old_kid not in {k.kid for k in auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=10).keys}
    projects.ListProjects(list_projects, metadata=(("authorization", f"Bearer {fresh}"),), timeout=10)


def test_a_key_that_may_have_leaked_retires_at_once(
    stack: Stack, channels: Channels, tenant: Tenant, operator: Operator
) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    list_projects = project_pb2.ListProjectsRequest(parent=tenant.organization)
    old_kid = jwt.get_unverified_header(tenant.access_token)["kid"]

    def create_project(metadata: tuple[tuple[str, str], ...]) -> None:
        project = project_pb2.Project(display_name="P", slug=f"p-{uuid.uuid4().hex[:8]}")
        request = project_pb2.CreateProjectRequest(parent=tenant.organization, project=project)
        projects.CreateProject(request, metadata=metadata, timeout=10)

    create_project(tenant.metadata)  # projects now holds a service token for the organization, signed by the old key

    async def rotate_beside_another_replica() -> tuple[auth_pb2.RotateSigningKeyResponse, str]:
        """The rotation, and the key that another identity replica, reading keys only every 30
        seconds, signs with 3 seconds later."""
        db = Database(stack.databases["identity"].app_url, 1)
        sealer = Sealer(load_key(stack.secrets["identity_key_encryption_key"], "key"))
        replica = KeyStore(db, sealer, overlap_seconds=960, refresh_seconds=30)
        try:
            assert (await replica.signing_key())[0] == old_kid
            request = auth_pb2.RotateSigningKeyRequest(retire_previous=True)
            rotated = await asyncio.to_thread(auth.RotateSigningKey, request, metadata=operator.metadata, timeout=10)
            await asyncio.sleep(3)  # key caches in the test stack refresh within 2 seconds
            return rotated, (await replica.signing_key())[0]
        finally:
            await db.close()

    rotated, replica_kid = asyncio.run(rotate_beside_another_replica())
    assert list(rotated.published_kids) == [rotated.active_kid]
    assert [k.kid for k in auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=10).keys] == [rotated.active_kid]
    assert replica_kid == rotated.active_kid  # it hands out no token that is dead already
    orgs = organization_pb2_grpc.OrganizationServiceStub(channels.direct("identity"))
    get_org = organization_pb2.GetOrganizationRequest(name=tenant.organization)
    for call in (
        lambda: projects.ListProjects(list_projects, metadata=tenant.metadata, timeout=10),
        lambda: orgs.GetOrganization(get_org, metadata=tenant.metadata, timeout=10),
    ):
        assert failure(call).code == grpc.StatusCode.UNAUTHENTICATED
    assert old_kid != rotated.active_kid
    # The session itself lives on: its refresh token, which no key signs, gets a token of the new key.
    renewed = auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tenant.refresh_token), timeout=10).tokens
    assert jwt.get_unverified_header(renewed.access_token)["kid"] == rotated.active_kid
    metadata = (("authorization", f"Bearer {renewed.access_token}"),)
    projects.ListProjects(list_projects, metadata=metadata, timeout=10)
    # Projects drops its refused service token and gets a new one, rather than calling identity unreachable.
    create_project(metadata)


def test_signing_waits_for_no_connection_its_caller_may_hold(stack: Stack) -> None:
    """RefreshToken signs inside its transaction; were the key reread on that pool, a process whose
    every session connection were held so would wait for ever."""

    async def scenario() -> str:
        db = Database(stack.databases["identity"].app_url, 1)  # one connection, and one beyond it
        sealer = Sealer(load_key(stack.secrets["identity_key_encryption_key"], "key"))
        store = KeyStore(db, sealer, overlap_seconds=960, refresh_seconds=30)
        try:
            async with db.unscoped() as first, db.unscoped() as second:
                await first.execute(text("select 1"))
                await second.execute(text("select 1"))
                kid, _ = await asyncio.wait_for(store.signing_key(), 10)
                return kid
        finally:
            await db.close()

    assert asyncio.run(scenario())
