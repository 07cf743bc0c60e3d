"""An organization reads and edits its own record, and nobody else's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import audit_pb2, audit_pb2_grpc, organization_pb2_grpc
from hishamos.identity.v1 import organization_pb2 as pb
from tests.conftest import Channels, Tenant
from tests.errors import failure


def api(channels: Channels) -> organization_pb2_grpc.OrganizationServiceStub:
    return organization_pb2_grpc.OrganizationServiceStub(channels.direct("identity"))


def get(channels: Channels, tenant: Tenant, name: str | None = None) -> pb.Organization:
    request = pb.GetOrganizationRequest(name=name or tenant.organization)
    return api(channels).GetOrganization(request, metadata=tenant.metadata, timeout=10).organization


def update(channels: Channels, tenant: Tenant, org: pb.Organization, *paths: str) -> pb.Organization:
    request = pb.UpdateOrganizationRequest(organization=org, update_mask=FieldMask(paths=list(paths)))
    return api(channels).UpdateOrganization(request, metadata=tenant.metadata, timeout=10).organization


def test_get_own_organization(channels: Channels, tenant: Tenant) -> None:
    org = get(channels, tenant)
    assert org.name == tenant.organization and org.slug == tenant.slug
    assert org.state == pb.Organization.STATE_ACTIVE
    assert (org.max_users, org.max_projects, org.max_storage_gb) == (50, 20, 10)


def test_update_masked_fields_with_etag(channels: Channels, tenant: Tenant) -> None:
    org = get(channels, tenant)
    change = pb.Organization(
        name=org.name, etag=org.etag, display_name="Renamed", website="https://acme.test", max_projects=5
    )
    # Without a mask the quota, which only operators set, is ignored like any output-only field.
    updated = update(channels, tenant, change)
    assert (updated.display_name, updated.website, updated.max_projects) == ("Renamed", "https://acme.test", 20)
    assert updated.description == org.description and updated.slug == org.slug
    stale = failure(lambda: update(channels, tenant, change, "display_name"))
    assert stale.code == grpc.StatusCode.ABORTED
    assert get(channels, tenant) == updated


def test_an_update_is_audited_with_the_fields_it_changed(channels: Channels, tenant: Tenant) -> None:
    org = get(channels, tenant)
    update(channels, tenant, pb.Organization(name=org.name, contact_email="security@acme.test"), "contact_email")
    listing = audit_pb2.ListAuditEventsRequest(parent=tenant.organization, filter='action = "organization.updated"')
    events = audit_pb2_grpc.AuditServiceStub(channels.direct("identity")).ListAuditEvents(
        listing, metadata=tenant.metadata, timeout=10
    )
    latest = events.audit_events[0]
    assert (latest.actor, latest.target) == (tenant.user, org.name)
    assert list(latest.details["fields"]) == ["contact_email"]


def test_bad_values_are_rejected_and_nothing_changes(channels: Channels, tenant: Tenant) -> None:
    org = get(channels, tenant)
    bad = pb.Organization(name=org.name, display_name="", contact_email="nope", website="ftp://x")
    f = failure(lambda: update(channels, tenant, bad, "display_name", "contact_email", "website"))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {"organization.display_name", "organization.contact_email", "organization.website"}
    immutable = failure(lambda: update(channels, tenant, pb.Organization(name=org.name, slug="new-slug"), "slug"))
    assert immutable.code == grpc.StatusCode.INVALID_ARGUMENT and "organization.slug" in immutable.violations
    assert get(channels, tenant) == org


def test_another_organization_is_not_found_and_unchanged(
    channels: Channels, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = get(channels, other_tenant)
    assert failure(lambda: get(channels, tenant, other_tenant.organization)).code == grpc.StatusCode.NOT_FOUND
    hijack = pb.Organization(name=theirs.name, display_name="Hijacked")
    assert failure(lambda: update(channels, tenant, hijack, "display_name")).code == grpc.StatusCode.NOT_FOUND
    assert get(channels, other_tenant) == theirs


def test_organization_methods_need_a_token(channels: Channels, tenant: Tenant) -> None:
    stub = api(channels)
    f = failure(lambda: stub.GetOrganization(pb.GetOrganizationRequest(name=tenant.organization), timeout=10))
    assert f.code == grpc.StatusCode.UNAUTHENTICATED
    request = pb.UpdateOrganizationRequest(organization=pb.Organization(name=tenant.organization, display_name="x"))
    assert failure(lambda: stub.UpdateOrganization(request, timeout=10)).code == grpc.StatusCode.UNAUTHENTICATED


def test_parallel_updates_without_an_etag_all_land(channels: Channels, tenant: Tenant) -> None:
    """Without an etag the last write wins (AIP-154): each waits for the one before, none is ABORTED."""

    def rename(i: int) -> str:
        change = pb.Organization(name=tenant.organization, description=f"edit {i}")
        return update(channels, tenant, change, "description").description

    with ThreadPoolExecutor(12) as pool:
        landed = list(pool.map(rename, range(24)))
    assert landed == [f"edit {i}" for i in range(24)]
    assert landed and get(channels, tenant).description in landed
