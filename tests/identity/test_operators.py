"""Platform operators suspend and reactivate organizations and set their quotas; no tenant can."""

from __future__ import annotations

import time
import uuid

import grpc
import jwt
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import (
    api_key_pb2,
    api_key_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    organization_pb2,
    organization_pb2_grpc,
    role_pb2,
    role_pb2_grpc,
)
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_kit import api as catalog
from tests.conftest import PASSWORD, Channels, Operator, Tenant, add_user, operator_credential, set_quotas
from tests.errors import failure
from tests.identity.stubs import auth
from tests.identity.test_api_keys import refusals_by_identity, tried

Org = organization_pb2.Organization
SUSPEND = "identity.organizations.suspend"


def orgs(channels: Channels) -> organization_pb2_grpc.OrganizationServiceStub:
    return organization_pb2_grpc.OrganizationServiceStub(channels.direct("identity"))


def suspend(channels: Channels, caller: Operator | Tenant, name: str, reason: str = "unpaid invoice") -> Org:
    request = organization_pb2.SuspendOrganizationRequest(name=name, reason=reason)
    return orgs(channels).SuspendOrganization(request, metadata=caller.metadata, timeout=10).organization


def reactivate(channels: Channels, caller: Operator | Tenant, name: str) -> Org:
    request = organization_pb2.ReactivateOrganizationRequest(name=name, reason="paid")
    return orgs(channels).ReactivateOrganization(request, metadata=caller.metadata, timeout=10).organization


def get(channels: Channels, tenant: Tenant) -> Org:
    request = organization_pb2.GetOrganizationRequest(name=tenant.organization)
    return orgs(channels).GetOrganization(request, metadata=tenant.metadata, timeout=10).organization


def login(channels: Channels, tenant: Tenant) -> auth_pb2.LoginResponse:
    request = auth_pb2.LoginRequest(organization_slug=tenant.slug, login=tenant.username, password=PASSWORD)
    return auth(channels).Login(request, timeout=30)


def refresh(channels: Channels, token: str) -> auth_pb2.TokenPair:
    return auth(channels).RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=token), timeout=10).tokens


def list_projects(channels: Channels, tenant: Tenant, key: str) -> object:
    request = project_pb2.ListProjectsRequest(parent=tenant.organization)
    stub = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    return stub.ListProjects(request, metadata=(("x-api-key", key),), timeout=10)


def audited(channels: Channels, tenant: Tenant, action: str) -> list[audit_pb2.AuditEvent]:
    request = audit_pb2.ListAuditEventsRequest(parent=tenant.organization, filter=f'action = "{action}"')
    stub = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    return list(stub.ListAuditEvents(request, metadata=tenant.metadata, timeout=10).audit_events)


def test_an_operator_token_needs_the_operator_credential(channels: Channels) -> None:
    for metadata in ((), (("x-operator-credential", "operator:wrong"),), (("x-service-credential", "x:y"),)):
        f = failure(
            lambda m=metadata: auth(channels).IssueOperatorToken(auth_pb2.IssueOperatorTokenRequest(), metadata=m)
        )  # type: ignore[misc]
        assert f.code == grpc.StatusCode.UNAUTHENTICATED and f.reason == "OPERATOR_CREDENTIAL_INVALID"
    reply = auth(channels).IssueOperatorToken(
        auth_pb2.IssueOperatorTokenRequest(), metadata=operator_credential(channels.stack), timeout=10
    )
    claims = jwt.decode(reply.access_token, options={"verify_signature": False})
    assert claims["sub"] == "operators/operator" and claims["org"] == str(uuid.UUID(int=0))
    assert (
        set(claims["perms"])
        == catalog.operator_permissions()
        == {
            SUSPEND,
            "identity.organizations.manage_quotas",
            "identity.signing_keys.rotate",
        }
    )
    assert 0 < reply.expires_in <= 300


def test_suspension_stops_sign_in_refresh_and_api_keys_until_reactivated(
    channels: Channels, tenant: Tenant, operator: Operator
) -> None:
    key = (
        api_key_pb2_grpc.ApiKeyServiceStub(channels.direct("identity"))
        .CreateApiKey(
            api_key_pb2.CreateApiKeyRequest(
                parent=tenant.organization,
                api_key=api_key_pb2.ApiKey(display_name="CI", scopes=["projects.projects.list"]),
            ),
            metadata=tenant.metadata,
            timeout=10,
        )
        .secret
    )
    suspended = suspend(channels, operator, tenant.organization)
    assert suspended.state == Org.STATE_SUSPENDED and suspended.name == tenant.organization
    assert suspend(channels, operator, tenant.organization) == suspended  # again: nothing changes

    f = failure(lambda: login(channels, tenant))
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ORGANIZATION_SUSPENDED")
    assert "suspended" in f.message
    f = failure(lambda: refresh(channels, tenant.refresh_token))
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ORGANIZATION_SUSPENDED")
    # First use of the key in projects, so nothing is cached there: identity refuses it at once, and
    # projects remembers the refusal instead of asking identity again on every call.
    before = refusals_by_identity(channels.stack, "PERMISSION_DENIED")
    for _ in range(10):
        f = failure(lambda: list_projects(channels, tenant, key))
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and "suspended" in f.message
    assert refusals_by_identity(channels.stack, "PERMISSION_DENIED") - before == 1
    # Identity answers to the organization's state now, whatever a token issued before says.
    f = failure(lambda: get(channels, tenant))
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ORGANIZATION_SUSPENDED")
    # The access token lives on until it expires; a write that needs identity to act for the
    # organization is refused as suspended, not UNAVAILABLE, which clients retry.
    create = project_pb2.CreateProjectRequest(
        parent=tenant.organization, project=project_pb2.Project(display_name="Later", slug="later")
    )
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    f = failure(lambda: projects.CreateProject(create, metadata=tenant.metadata, timeout=10))
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ORGANIZATION_SUSPENDED")

    active = reactivate(channels, operator, tenant.organization)
    assert active.state == Org.STATE_ACTIVE and active.etag != suspended.etag
    (refused,) = audited(channels, tenant, "login.refused")  # the right password, refused: on record
    assert refused.target == tenant.user and refused.details["reason"] == "organization_suspended"
    assert login(channels, tenant).user.name == tenant.user
    assert refresh(channels, tenant.refresh_token).access_token  # the session survived the suspension
    # Projects remembers the refusal for as long as it would remember a yes (10 seconds).
    until = time.monotonic() + 12
    while tried(lambda: list_projects(channels, tenant, key)) and time.monotonic() < until:
        time.sleep(0.5)
    list_projects(channels, tenant, key)

    (event,) = audited(channels, tenant, "organization.suspended")
    assert (event.actor, event.target) == ("operators/operator", tenant.organization)
    assert event.details["reason"] == "unpaid invoice" and event.request_id
    assert [e.actor for e in audited(channels, tenant, "organization.reactivated")] == ["operators/operator"]


def test_an_operator_sets_quotas_and_only_those_named(channels: Channels, tenant: Tenant, operator: Operator) -> None:
    before = get(channels, tenant)
    after = set_quotas(channels, operator, tenant.organization, max_users=7)
    assert (after.max_users, after.max_projects, after.max_storage_gb) == (
        7,
        before.max_projects,
        before.max_storage_gb,
    )
    assert get(channels, tenant) == after
    (event,) = audited(channels, tenant, "organization.quotas_changed")
    assert event.actor == "operators/operator" and event.details["max_users"] == {"from": 50, "to": 7}
    stale = organization_pb2.SetOrganizationQuotasRequest(name=tenant.organization, max_projects=3, etag=before.etag)
    f = failure(lambda: orgs(channels).SetOrganizationQuotas(stale, metadata=operator.metadata, timeout=10))
    assert f.code == grpc.StatusCode.ABORTED
    assert get(channels, tenant) == after


def test_a_tenant_admin_can_neither_suspend_nor_change_quotas(
    channels: Channels, tenant: Tenant, other_tenant: Tenant
) -> None:
    before = get(channels, tenant)
    for name in (tenant.organization, other_tenant.organization):
        f = failure(lambda n=name: suspend(channels, tenant, n))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.metadata["permission"] == SUSPEND
        f = failure(lambda n=name: reactivate(channels, tenant, n))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.PERMISSION_DENIED
        quota = organization_pb2.SetOrganizationQuotasRequest(name=name, max_users=1000)
        f = failure(lambda q=quota: orgs(channels).SetOrganizationQuotas(q, metadata=tenant.metadata, timeout=10))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and "only platform operators" in f.message
    raise_own = organization_pb2.UpdateOrganizationRequest(
        organization=Org(name=tenant.organization, max_users=1000), update_mask=FieldMask(paths=["max_users"])
    )
    f = failure(lambda: orgs(channels).UpdateOrganization(raise_own, metadata=tenant.metadata, timeout=10))
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "QUOTA_OPERATOR_ONLY")
    assert get(channels, tenant) == before


def test_no_tenant_role_key_or_service_can_hold_operator_permissions(channels: Channels, tenant: Tenant) -> None:
    roles = role_pb2_grpc.RoleServiceStub(channels.direct("identity"))
    create = role_pb2.CreateRoleRequest(
        parent=tenant.organization,
        role=role_pb2.Role(display_name="Root", permissions=["projects.projects.list", SUSPEND]),
        role_id="root",
    )
    f = failure(lambda: roles.CreateRole(create, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"role.permissions[1]"}
    role = roles.CreateRole(
        role_pb2.CreateRoleRequest(
            parent=tenant.organization,
            role=role_pb2.Role(display_name="Lister", permissions=["projects.projects.list"]),
            role_id="lister",
        ),
        metadata=tenant.metadata,
        timeout=10,
    ).role
    grow = role_pb2.UpdateRoleRequest(
        role=role_pb2.Role(name=role.name, permissions=["identity.organizations.manage_quotas"]),
        update_mask=FieldMask(paths=["permissions"]),
    )
    f = failure(lambda: roles.UpdateRole(grow, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "role.permissions[0]" in f.violations
    for predefined in ("admin", "manager", "developer", "viewer"):
        held = roles.GetRole(
            role_pb2.GetRoleRequest(name=f"{tenant.organization}/roles/{predefined}"), metadata=tenant.metadata
        ).role.permissions
        assert not set(held) & catalog.operator_permissions()
    key = api_key_pb2.CreateApiKeyRequest(
        parent=tenant.organization, api_key=api_key_pb2.ApiKey(display_name="x", scopes=[SUSPEND])
    )
    f = failure(
        lambda: api_key_pb2_grpc.ApiKeyServiceStub(channels.direct("identity")).CreateApiKey(
            key, metadata=tenant.metadata, timeout=10
        )
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "api_key.scopes[0]" in f.violations
    service = auth_pb2.IssueServiceTokenRequest(organization=tenant.organization, permissions=[SUSPEND])
    credential = (("x-service-credential", f"projects:{channels.stack.secrets['projects_service']}"),)
    f = failure(lambda: auth(channels).IssueServiceToken(service, metadata=credential, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "permissions[0]" in f.violations


def test_operator_methods_check_their_input(channels: Channels, tenant: Tenant, operator: Operator) -> None:
    bad = organization_pb2.SuspendOrganizationRequest(name="acme", reason=" ")
    f = failure(lambda: orgs(channels).SuspendOrganization(bad, metadata=operator.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"name", "reason"}
    long = organization_pb2.ReactivateOrganizationRequest(name=tenant.organization, reason="x" * 501)
    f = failure(lambda: orgs(channels).ReactivateOrganization(long, metadata=operator.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"reason"}
    for quotas, fields in (
        ({}, {"max_users"}),
        ({"max_users": 0, "max_storage_gb": 2_000_000}, {"max_users", "max_storage_gb"}),
    ):
        request = organization_pb2.SetOrganizationQuotasRequest(name=tenant.organization, **quotas)  # type: ignore[arg-type]
        f = failure(lambda r=request: orgs(channels).SetOrganizationQuotas(r, metadata=operator.metadata, timeout=10))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == fields
    unknown = f"organizations/{uuid.uuid4()}"
    assert failure(lambda: suspend(channels, operator, unknown)).code == grpc.StatusCode.NOT_FOUND
    assert failure(lambda: set_quotas(channels, operator, unknown, max_users=5)).code == grpc.StatusCode.NOT_FOUND
    assert get(channels, tenant).state == Org.STATE_ACTIVE


def test_an_operator_token_reaches_no_tenant_data(channels: Channels, tenant: Tenant, operator: Operator) -> None:
    """An operator is no member of any organization: tenant methods are PERMISSION_DENIED."""
    request = organization_pb2.GetOrganizationRequest(name=tenant.organization)
    f = failure(lambda: orgs(channels).GetOrganization(request, metadata=operator.metadata, timeout=10))
    assert f.code == grpc.StatusCode.PERMISSION_DENIED
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    listing = project_pb2.ListProjectsRequest(parent=tenant.organization)
    f = failure(lambda: projects.ListProjects(listing, metadata=operator.metadata, timeout=10))
    assert f.code == grpc.StatusCode.PERMISSION_DENIED
    member = add_user(channels, tenant, "manager")
    assert failure(lambda: suspend(channels, member, tenant.organization)).code == grpc.StatusCode.PERMISSION_DENIED
