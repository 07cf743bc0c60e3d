"""Service principals: background work acts in one organization with only what it asked for."""

from __future__ import annotations

import grpc
import jwt

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.stack import Stack
from tests.conftest import Channels, Tenant
from tests.errors import failure


def issue(
    channels: Channels, credential: str, organization: str, *permissions: str
) -> auth_pb2.IssueServiceTokenResponse:
    request = auth_pb2.IssueServiceTokenRequest(organization=organization, permissions=list(permissions))
    api = auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))
    return api.IssueServiceToken(request, metadata=(("x-service-credential", credential),), timeout=10)


def test_a_service_token_is_limited_to_one_organization_and_its_permissions(
    stack: Stack, channels: Channels, tenant: Tenant, other_tenant: Tenant
) -> None:
    credential = f"knowledge:{stack.secrets['knowledge_service']}"
    issued = issue(channels, credential, tenant.organization, "projects.projects.list")
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert claims["sub"] == "services/knowledge" and claims["perms"] == ["projects.projects.list"]
    assert 0 < issued.expires_in <= 300
    bearer = (("authorization", f"Bearer {issued.access_token}"),)
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    projects.ListProjects(project_pb2.ListProjectsRequest(parent=tenant.organization), metadata=bearer, timeout=10)
    theirs = project_pb2.ListProjectsRequest(parent=other_tenant.organization)
    assert failure(lambda: projects.ListProjects(theirs, metadata=bearer, timeout=10)).code == grpc.StatusCode.NOT_FOUND
    create = project_pb2.CreateProjectRequest(
        parent=tenant.organization, project=project_pb2.Project(display_name="S", slug="ss")
    )
    assert failure(lambda: projects.CreateProject(create, metadata=bearer, timeout=10)).code == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_only_a_known_service_gets_tokens_and_never_identity_powers(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    for credential in ("", "knowledge:wrong", "nobody:secret", f"projects:{stack.secrets['knowledge_service']}"):
        f = failure(lambda c=credential: issue(channels, c, tenant.organization, "projects.projects.list"))
        assert f.code == grpc.StatusCode.UNAUTHENTICATED
    credential = f"projects:{stack.secrets['projects_service']}"
    f = failure(lambda: issue(channels, credential, tenant.organization, "identity.users.create", "no.such.thing"))
    assert set(f.violations) == {"permissions[0]", "permissions[1]"}
    gone = "organizations/00000000-0000-0000-0000-000000000001"
    assert (
        failure(lambda: issue(channels, credential, gone, "projects.projects.list")).code == grpc.StatusCode.NOT_FOUND
    )
