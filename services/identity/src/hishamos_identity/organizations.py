"""Organizations: the tenant resource, read and updated by its own members; suspended, reactivated
and given quotas by platform operators only (operators.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Literal

from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import organization_pb2 as pb
from hishamos_identity import audit
from hishamos_identity.models import Organization
from hishamos_kit import resources, validate
from hishamos_kit.auth import Principal, is_operator
from hishamos_kit.db import Database
from hishamos_kit.errors import InvalidArgument, NotFound, PermissionDenied, Violations
from hishamos_kit.resources import ORGANIZATION

UPDATABLE = frozenset(
    {
        "display_name",
        "description",
        "contact_email",
        "contact_phone",
        "website",
    }
)
QUOTAS: tuple[Literal["max_users", "max_projects", "max_storage_gb"], ...] = (
    "max_users",
    "max_projects",
    "max_storage_gb",
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
    for i, path in enumerate(mask.paths):
        if path in QUOTAS:
            raise PermissionDenied(
                "quotas are set by platform operators (SetOrganizationQuotas)",
                "QUOTA_OPERATOR_ONLY",
                {"field": f"update_mask.paths[{i}]"},
            )
    paths = resources.update_paths(mask, message, UPDATABLE, "organization")
    async with db.tenant(organization_id) as session:
        # Held until the write commits: without an etag the last write wins (AIP-154) instead of failing
        # ABORTED whenever another came between this read and the write.
        org = await session.get(Organization, organization_id, with_for_update={"key_share": True})
        if org is None:
            raise NotFound(message.name)
        paths = resources.immutable_kept(paths, message, to_message(org), "organization")
        resources.check_etag(org, message.etag, message.name)
        violations = Violations()
        apply(org, message, paths, violations)
        violations.raise_if_any()
        await session.flush()
        audit.record(session, organization_id, "organization.updated", principal.subject, message.name, fields=paths)
        return to_message(org)


# Applied to a loaded organization: the audit action and details, or None when nothing changed.
Change = Callable[[Organization], tuple[str, dict[str, Any]] | None]


def _operated(principal: Principal, name: str, v: Violations) -> uuid.UUID:
    """The organization an operator method names, with a bad name reported among the violations."""
    if not is_operator(principal):  # the chassis lets only operators in; a second look costs nothing
        raise PermissionDenied("only platform operators manage organizations", "OPERATOR_ONLY")
    try:
        (organization_id,) = ORGANIZATION.parse(name, "name")
    except InvalidArgument:
        v.add("name", "must be `organizations/{organization}`")
        organization_id = uuid.UUID(int=0)
    return organization_id


async def _change(
    db: Database, principal: Principal, organization_id: uuid.UUID, name: str, etag: str, change: Change
) -> pb.Organization:
    """Load and lock the organization (NOT_FOUND when missing or deleted), check the etag, apply
    `change` and audit what it did in the organization's own log, with the operator as actor."""
    async with db.tenant(organization_id) as session:
        org = await session.get(Organization, organization_id, with_for_update=True)
        if org is None or org.is_deleted:
            raise NotFound(name)
        resources.check_etag(org, etag, name)
        outcome = change(org)
        if outcome is not None:
            action, details = outcome
            await session.flush()
            audit.record(session, organization_id, action, principal.subject, name, **details)
        return to_message(org)


async def set_state(
    db: Database, principal: Principal, name: str, reason: str, etag: str, state: str
) -> pb.Organization:
    """Suspend or reactivate. Login, refresh, API keys and service tokens check the state each time,
    so nothing else needs doing; sessions survive a suspension and work again after it."""
    v = Violations()
    organization_id = _operated(principal, name, v)
    reason = validate.text(v, "reason", reason, required=True, max_length=500)
    v.raise_if_any()

    def change(org: Organization) -> tuple[str, dict[str, Any]] | None:
        if org.state == state:
            return None
        org.state = state
        return f"organization.{'reactivated' if state == 'active' else 'suspended'}", {"reason": reason}

    return await _change(db, principal, organization_id, name, etag, change)


async def set_quotas(db: Database, principal: Principal, request: pb.SetOrganizationQuotasRequest) -> pb.Organization:
    v = Violations()
    organization_id = _operated(principal, request.name, v)
    given = [q for q in QUOTAS if request.HasField(q)]
    if not given:
        v.add("max_users", "set at least one of max_users, max_projects, max_storage_gb")
    for quota in given:
        validate.number(v, quota, getattr(request, quota), low=1, high=1_000_000)
    v.raise_if_any()

    def change(org: Organization) -> tuple[str, dict[str, Any]] | None:
        changed: dict[str, Any] = {
            q: {"from": getattr(org, q), "to": getattr(request, q)}
            for q in given
            if getattr(org, q) != getattr(request, q)
        }
        for quota, values in changed.items():
            setattr(org, quota, values["to"])
        return ("organization.quotas_changed", changed) if changed else None

    return await _change(db, principal, organization_id, request.name, request.etag, change)
