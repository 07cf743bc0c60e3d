"""The security audit log: written in the same transaction as what it records, read by admins."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.struct_pb2 import Struct
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.identity.v1 import audit_pb2 as pb
from hishamos_identity.models import AuditEvent
from hishamos_kit import resources
from hishamos_kit.auth import Principal, principal_var
from hishamos_kit.db import Database
from hishamos_kit.listing import Field, ListSpec, list_page, parse_time
from hishamos_kit.logs import request_id_var

PATH = resources.ResourcePath("organizations/{organization}/auditEvents/{audit_event}")
LIST = ListSpec(
    filter_fields={
        "action": Field(AuditEvent.action),
        "actor": Field(AuditEvent.actor),
        "target": Field(AuditEvent.target),
        "create_time": Field(AuditEvent.created_at, parse_time),
    },
    order_fields={"create_time": Field(AuditEvent.created_at, parse_time)},
    default_order="create_time desc",
    id_column=AuditEvent.id,
)


def record(
    session: AsyncSession, organization_id: uuid.UUID, action: str, actor: str = "", target: str = "", **details: Any
) -> None:
    """`actor` did `action` to `target`; with the API key it acted through, when it did: a key acts as its
    owner, and the admin reading the log tells a key's doing from the owner's own."""
    caller = principal_var.get(None)
    if caller is not None and caller.api_key and actor == caller.subject:
        details["api_key"] = caller.api_key
    session.add(
        AuditEvent(
            organization_id=organization_id,
            action=action,
            actor=actor,
            target=target,
            request_id=request_id_var.get(),
            details=details,
        )
    )


def to_message(event: AuditEvent) -> pb.AuditEvent:
    details = Struct()
    details.update(event.details)
    return pb.AuditEvent(
        name=PATH.format(event.organization_id, event.id),
        action=event.action,
        actor=event.actor,
        target=event.target,
        request_id=event.request_id,
        details=details,
        create_time=resources.timestamp(event.created_at),
    )


async def list_events(
    db: Database, principal: Principal, request: pb.ListAuditEventsRequest
) -> pb.ListAuditEventsResponse:
    organization_id = resources.own_parent(principal, request.parent)
    async with db.tenant(organization_id) as session:
        page = await list_page(
            session,
            LIST,
            select(AuditEvent).where(AuditEvent.organization_id == organization_id),
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
            scope=(request.parent,),
        )
    events, token = page.fit(to_message(e) for e in page.rows)
    return pb.ListAuditEventsResponse(audit_events=events, next_page_token=token)
