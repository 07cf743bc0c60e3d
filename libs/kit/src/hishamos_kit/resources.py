"""AIP standard-method helpers: resource names, field masks, etags, soft delete and request ids."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol, TypeVar

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import UniqueConstraint, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr

from hishamos_kit.auth import Principal, principal_var
from hishamos_kit.db import Resource, Timestamps
from hishamos_kit.errors import Aborted, AlreadyExists, InvalidArgument, NotFound

M = TypeVar("M", bound=Message)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ResourcePath:
    """A resource name pattern whose segments are server-generated UUIDs (AIP-122).

    >>> ResourcePath("organizations/{organization}/projects/{project}").parse("organizations/…/projects/…")
    """

    pattern: str

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern)
        object.__setattr__(self, "_regex", re.compile(f"^{regex}$"))
        object.__setattr__(self, "_template", re.sub(r"\{\w+\}", "{}", self.pattern))

    def parse(self, value: str, field: str) -> tuple[uuid.UUID, ...]:
        try:
            return _ids(self, value)
        except LookupError:
            raise InvalidArgument({field: f"must be a resource name like `{self.pattern}`"}) from None
        except ValueError:
            raise InvalidArgument({field: f"`{value}` does not name a resource: ids are UUIDs"}) from None

    def format(self, *ids: uuid.UUID) -> str:
        return self._template.format(*ids)  # type: ignore[attr-defined,no-any-return]


ORGANIZATION = ResourcePath("organizations/{organization}")


@lru_cache(maxsize=4096)
def _ids(path: ResourcePath, value: str) -> tuple[uuid.UUID, ...]:
    """Cached: a caller names the same parent call after call, and a UUID is slow to build from text.
    LookupError when `value` does not match the pattern, ValueError when a segment is no UUID."""
    match = path._regex.fullmatch(value)  # type: ignore[attr-defined]
    if match is None:
        raise LookupError(value)
    return tuple(uuid.UUID(part) for part in match.groups())


def own_parent(principal: Principal, parent: str, field: str = "parent") -> uuid.UUID:
    """The organization id of a `parent`; another organization's is NOT_FOUND (it is not the caller's to know)."""
    (organization_id,) = ORGANIZATION.parse(parent, field)
    if organization_id != principal.organization_id:
        raise NotFound(parent)
    return organization_id


def own_name(principal: Principal, path: ResourcePath, name: str, field: str = "name") -> uuid.UUID:
    """The resource id of a `name` in the caller's organization; another organization's is NOT_FOUND."""
    organization_id, *rest = path.parse(name, field)
    if organization_id != principal.organization_id:
        raise NotFound(name)
    return rest[-1]


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    # Direct arithmetic: Timestamp.FromDatetime goes through a UTC time tuple and is several times slower.
    delta = value - EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


class Versioned(Protocol):
    """A row whose version is its etag: a Resource, or a row that versions only some of its writes."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def version(self) -> int: ...


def etag(row: Versioned) -> str:
    """The row's version, marked with the row: a resource deleted and created again under the same
    name (a role, a project member) starts again at version 1, and an etag read from the old one
    must not match the new one."""
    return f"v{row.version}.{row.id.hex[:8]}"


def check_etag(row: Versioned, given: str, name: str) -> None:
    """AIP-154: a stale etag means the caller decided on data that has since changed."""
    if given and given != etag(row):
        raise Aborted(
            f"{name} changed since it was read (etag {given}, now {etag(row)}); get it again and retry",
            "ETAG_MISMATCH",
            {"resource": name, "current_etag": etag(row)},
        )


def update_paths(mask: FieldMask, resource: Message, updatable: Collection[str], resource_field: str) -> list[str]:
    """The paths an Update changes (AIP-134): the mask's, or every populated field when the mask is omitted.
    IMMUTABLE fields among them are for `immutable_kept` to check against the stored resource."""
    immutable = _immutable(resource.DESCRIPTOR)
    allowed = {*updatable, *immutable}
    if not mask.paths:
        # A blank input-only field (a secret left empty in a form) is not sent: only a mask naming it clears it.
        return [
            f.name
            for f, _ in resource.ListFields()
            if f.name in allowed and (not _input_only(resource, f.name) or _sent(resource, f.name))
        ]
    if list(mask.paths) == ["*"]:
        # A full replacement of the resource as a client read it, and no read shows an input-only
        # field (a secret): such a field changes only when sent, or reading and writing back clears it.
        # An immutable one, sent or not, is compared only when sent.
        return [
            path
            for path in dict.fromkeys((*updatable, *immutable))
            if not (_input_only(resource, path) or path in immutable) or _sent(resource, path)
        ]
    bad = {
        f"update_mask.paths[{i}]": "`*` stands alone: it names every updatable field"
        if path == "*"
        else f"`{path}` cannot be updated; updatable fields: {', '.join(sorted(updatable))}"
        for i, path in enumerate(mask.paths)
        if path not in allowed
    }
    if bad:
        raise InvalidArgument(bad)
    return list(dict.fromkeys(mask.paths))


def immutable_kept(paths: list[str], sent: Message, stored: Message, resource_field: str) -> list[str]:
    """`paths` without their IMMUTABLE fields, each of which must come as stored (AIP-203): a resource
    read and written back whole updates, a changed immutable field is INVALID_ARGUMENT."""
    immutable = _immutable(sent.DESCRIPTOR)
    changed = {
        f"{resource_field}.{path}": "is immutable: it cannot change once the resource exists"
        for path in paths
        if path in immutable and getattr(sent, path) != getattr(stored, path)
    }
    if changed:
        raise InvalidArgument(changed)
    return [path for path in paths if path not in immutable]


@lru_cache
def _immutable(descriptor: Descriptor) -> frozenset[str]:
    return frozenset(
        field.name
        for field in descriptor.fields
        if field_behavior_pb2.IMMUTABLE in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    )


def _input_only(resource: Message, path: str) -> bool:
    field = resource.DESCRIPTOR.fields_by_name[path]
    return field_behavior_pb2.INPUT_ONLY in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]


def _sent(resource: Message, path: str) -> bool:
    """Whether a value was sent: blank text (a form's empty field, say) is not one."""
    value = getattr(resource, path)
    if isinstance(value, Message):
        return resource.HasField(path)
    return bool(value.strip()) if isinstance(value, str) else bool(value)


def soft_delete(row: Resource, name: str) -> None:
    if row.is_deleted:
        raise NotFound(name)
    row.is_deleted = True
    row.deleted_at = datetime.now(UTC)


def undelete(row: Resource, name: str) -> None:
    if not row.is_deleted:
        raise AlreadyExists(f"{name} is not deleted", "NOT_DELETED", {"resource": name})
    row.is_deleted = False
    row.deleted_at = None


class IdempotencyKeyColumns(Timestamps):
    """The responses of creates made with a request_id (AIP-155). Each service maps it to its own table."""

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[uuid.UUID]
    method: Mapped[str]
    request_id: Mapped[str]
    response: Mapped[bytes | None]

    @declared_attr.directive
    def __table_args__(cls) -> tuple[UniqueConstraint]:  # noqa: N805 - declared_attr receives the class
        return (UniqueConstraint("organization_id", "method", "request_id"),)


def request_key(request_id: str) -> str:
    """A request_id as the key it is kept under: one UUID in one spelling, however the client wrote it
    (a retry through a proxy that upper-cases it is still the same request); '' when there is none."""
    if not request_id:
        return ""
    if len(request_id) <= len("urn:uuid:") + 36:  # uuid.UUID drops any number of hyphens
        with contextlib.suppress(ValueError):
            return str(uuid.UUID(request_id))
    raise InvalidArgument({"request_id": "must be a UUID"})


def keyed_method(method: str, parents: Sequence[uuid.UUID]) -> str:
    """The method a create's request_id is kept under, with the parent it creates in: an id sent
    again to another project is another request, not a retry answered with the first project's resource."""
    return " ".join((method, *map(str, parents)))


def callers_method(method: str) -> str:
    """The method a request_id is kept under, with who sent it (a user, a service, an API key): the same
    id from another caller is another request. Answered with the first caller's response, it would show
    the resource to anyone who learned the id, past the permissions its first caller needed."""
    principal = principal_var.get(None)
    if principal is None:  # a sign-up: nobody is signed in yet
        return method
    return " ".join(filter(None, (method, principal.subject, principal.api_key)))


async def once(
    session: AsyncSession,
    keys: type[IdempotencyKeyColumns],
    organization_id: uuid.UUID,
    method: str,
    request_id: str,
    response_type: type[M],
    create: Callable[[], Awaitable[M]],
    stored: Callable[[M], M] = lambda response: response,
) -> M:
    """Run `create` once per request_id of a caller: a retry, even a concurrent one, gets the first response.

    The key row is inserted first: a concurrent duplicate blocks on the unique index until the
    first transaction ends, then finds its stored response. A failed create rolls the key back.
    `stored` trims what must not be kept (secrets shown once).
    """
    request_id, method = request_key(request_id), callers_method(method)
    if not request_id:
        return await create()
    claim = (
        insert(keys)
        .values(id=uuid.uuid4(), organization_id=organization_id, method=method, request_id=request_id)
        .on_conflict_do_nothing(index_elements=["organization_id", "method", "request_id"])
        .returning(keys.id)
    )
    key_id = (await session.execute(claim)).scalar_one_or_none()
    if key_id is None:
        previous = await session.scalar(
            select(keys.response).where(
                keys.organization_id == organization_id, keys.method == method, keys.request_id == request_id
            )
        )
        if previous is not None:
            return response_type.FromString(previous)
        # Gone between the two statements: retention deleted a week-old key just now. A new request.
        key_id = (await session.execute(claim)).scalar_one()
    response = await create()
    record = await session.get_one(keys, key_id)
    record.response = stored(response).SerializeToString()
    return response
