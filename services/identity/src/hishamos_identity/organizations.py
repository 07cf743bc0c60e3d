"""Organizations: the tenant resource, read and updated by its own members."""

from __future__ import annotations

from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import organization_pb2 as pb
from hishamos_identity.models import Organization
from hishamos_kit import resources, validate
from hishamos_kit.auth import Principal
from hishamos_kit.db import Database
from hishamos_kit.errors import NotFound, Violations
from hishamos_kit.resources import ORGANIZATION

UPDATABLE = frozenset(
    {
        "display_name",
        "description",
        "contact_email",
        "contact_phone",
        "website",
        "max_users",
        "max_projects",
        "max_storage_gb",
    }
)
STATES = validate.EnumCodes(pb.Organization.State.items(), "STATE_")


def to_message(org: Organization) -> pb.Organization:
    return pb.Organization(
        name=ORGANIZATION.format(org.id),
        display_name=org.display_name,
        slug=org.slug,
        description=org.description,
        contact_email=org.contact_email,
        contact_phone=org.contact_phone,
        website=org.website,
        max_users=org.max_users,
        max_projects=org.max_projects,
        max_storage_gb=org.max_storage_gb,
        state=STATES.value(org.state),
        create_time=resources.timestamp(org.created_at),
        update_time=resources.timestamp(org.updated_at),
        etag=resources.etag(org),
    )


def apply(org: Organization, message: pb.Organization, paths: list[str], v: Violations) -> None:
    for path in paths:
        field = f"organization.{path}"
        if path == "display_name":
            org.display_name = validate.text(v, field, message.display_name, required=True)
        elif path == "description":
            org.description = validate.text(v, field, message.description, max_length=2000)
        elif path == "contact_email":
            org.contact_email = validate.email(v, field, message.contact_email)
        elif path == "contact_phone":
            org.contact_phone = validate.text(v, field, message.contact_phone, max_length=50)
        elif path == "website":
            org.website = validate.http_url(v, field, message.website)
        elif path in ("max_users", "max_projects", "max_storage_gb"):
            value = getattr(message, path)
            validate.number(v, field, value, low=1, high=1_000_000)
            setattr(org, path, value)


async def get(db: Database, principal: Principal, name: str) -> pb.Organization:
    (organization_id,) = ORGANIZATION.parse(name, "name")
    if organization_id != principal.organization_id:
        raise NotFound(name)
    async with db.tenant(organization_id) as session:
        org = await session.get(Organization, organization_id)
        if org is None:
            raise NotFound(name)
        return to_message(org)


async def update(db: Database, principal: Principal, message: pb.Organization, mask: FieldMask) -> pb.Organization:
    (organization_id,) = ORGANIZATION.parse(message.name, "organization.name")
    if organization_id != principal.organization_id:
        raise NotFound(message.name)
    paths = resources.update_paths(mask, message, UPDATABLE, "organization")
    async with db.tenant(organization_id) as session:
        org = await session.get(Organization, organization_id)
        if org is None:
            raise NotFound(message.name)
        resources.check_etag(org, message.etag, message.name)
        violations = Violations()
        apply(org, message, paths, violations)
        violations.raise_if_any()
        await session.flush()
        return to_message(org)
