"""Every RPC of every service, sent hostile values field by field: the answer is a clear status, never
INTERNAL or UNKNOWN, never a hang or a crash, and never a stack trace or SQL; a refused write changes nothing.

Requests are built from the descriptors, so a new RPC or field is covered the day it is declared. Each
starts from a valid request (names of one live resource of every type in the caller's organization, the
request that created a resource), so a hostile value reaches the code behind the checks that come first.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest
from google.api import resource_pb2
from google.protobuf import descriptor_pool, json_format, symbol_database
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from hishamos_devstack.envoy import SERVICES
from hishamos_devstack.stack import Stack
from hishamos_kit import api
from tests.conftest import PASSWORD, Channels, Tenant
from tests.db import superuser

# Statuses that mean the server failed, not the request: a defect whoever sent what.
BROKEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
}
LEAK = re.compile(
    r"Traceback|File \"|psycopg|sqlalchemy|asyncpg|\bSELECT\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bWHERE\b"
)
# Verbs that take something away (a password change ends sessions and the password sign-ins use): sent
# last, so the resources and credentials the others name still work.
DESTRUCTIVE = (
    "Delete",
    "Purge",
    "Revoke",
    "Remove",
    "Unassign",
    "Logout",
    "Archive",
    "Complete",
    "Disable",
    "ChangePassword",
)
NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

# One resource of each type, created in this order; `{Type}` is the name of a resource created before.
SEEDS: list[tuple[str, dict[str, Any]]] = [
    (
        "/hishamos.identity.v1.UserService/CreateUser",
        {
            "parent": "{Organization}",
            "password": PASSWORD,
            "user": {"email": "fuzz@example.test", "username": "fuzz"},
        },
    ),
    (
        "/hishamos.identity.v1.RoleService/CreateRole",
        {
            "parent": "{Organization}",
            "role_id": "fuzzer",
            "role": {"display_name": "Fuzzer", "permissions": ["projects.projects.get"]},
        },
    ),
    (
        "/hishamos.identity.v1.ApiKeyService/CreateApiKey",
        {
            "parent": "{Organization}",
            "api_key": {"display_name": "Fuzz key", "scopes": ["projects.projects.get"]},
        },
    ),
    (
        "/hishamos.projects.v1.ProjectService/CreateProject",
        {
            "parent": "{Organization}",
            "project": {"display_name": "Fuzz", "slug": "fuzz", "manager": "{User:admin}"},
        },
    ),
    ("/hishamos.projects.v1.MemberService/CreateMember", {"parent": "{Project}", "member": {"user": "{User}"}}),
    (
        "/hishamos.projects.v1.SprintService/CreateSprint",
        {
            "parent": "{Project}",
            "sprint": {
                "display_name": "S1",
                "goal": "g",
                "start_date": {"year": 2026, "month": 11, "day": 1},
                "end_date": {"year": 2026, "month": 11, "day": 14},
            },
        },
    ),
    ("/hishamos.projects.v1.EpicService/CreateEpic", {"parent": "{Project}", "epic": {"title": "Epic"}}),
    (
        "/hishamos.projects.v1.StoryService/CreateStory",
        {
            "parent": "{Project}",
            "story": {
                "title": "Story",
                "story_points": 3,
                "labels": ["x"],
                "epic": "{Epic}",
                "sprint": "{Sprint}",
                "acceptance_criteria": ["works"],
                "assignee": "{User}",
            },
        },
    ),
    (
        "/hishamos.projects.v1.TaskService/CreateTask",
        {"parent": "{Story}", "task": {"title": "Task", "estimate_hours": 2}},
    ),
    (
        "/hishamos.projects.v1.WorkLogService/CreateWorkLog",
        {
            "parent": "{Task}",
            "work_log": {"user": "{User}", "work_time": NOW, "duration_minutes": 30},
        },
    ),
    (
        "/hishamos.agents.v1.PlatformService/CreatePlatform",
        {
            "parent": "{Organization}",
            "platform": {"display_name": "Local", "provider": 1, "default_model": "m", "api_key": "sk-fuzz-0123456789"},
        },
    ),
    (
        "/hishamos.knowledge.v1.DocumentService/CreateDocument",
        {
            "parent": "{Organization}",
            "document": {"title": "Doc", "filename": "doc.md", "project": "{Project}"},
        },
    ),
]
# Found rather than created: the admin's session and an audit event.
FOUND = {
    "identity.hishamos.dev/Session": ("/hishamos.identity.v1.SessionService/ListSessions", "{User:admin}"),
    "identity.hishamos.dev/AuditEvent": ("/hishamos.identity.v1.AuditService/ListAuditEvents", "{Organization}"),
}


def hostile_scalars(field: FieldDescriptor) -> list[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return ["", "\x00", " \t\n", "x" * 70_000, "ü" * 300, "../../x", "*", "'\"%_\\;--", "organizations/-/x"]
    if t == FieldDescriptor.TYPE_BYTES:
        return [b"\xff\x00" * 10, b"x" * 70_000]
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return [-1, -(2**31), 2**31 - 1]
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return [-1, -(2**63), 2**63 - 1]
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return [2**32 - 1]
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return [2**64 - 1]
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return [math.nan, math.inf, -math.inf, -0.0, 1e308 if t == FieldDescriptor.TYPE_DOUBLE else 3e38]
    if t == FieldDescriptor.TYPE_BOOL:
        return [True]
    if t == FieldDescriptor.TYPE_ENUM:
        return [99, -1]
    raise AssertionError(field.full_name)


def deep_struct(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


WELL_KNOWN: dict[str, list[dict[str, Any] | list[Any]]] = {
    "google.protobuf.Timestamp": [
        {"seconds": 2**62},
        {"seconds": -62135596801},
        {"seconds": 253402300800},
        {"nanos": -1},
        {"seconds": 1, "nanos": 10**9},
    ],
    "google.protobuf.Duration": [{"seconds": 2**62}, {"seconds": -1, "nanos": 1}],
    "google.type.Date": [
        {"year": 2026, "month": 2, "day": 30},
        {"year": 0, "month": 13, "day": 32},
        {"year": 10000, "month": 1, "day": 1},
        {"year": -1, "month": -1, "day": -1},
    ],
    "google.protobuf.FieldMask": [
        {"paths": ["no_such_field"]},
        {"paths": ["*", "name"]},
        {"paths": [""]},
        {"paths": ["a.b.c.d"]},
        {"paths": ["x" * 5000]},
    ],
    "google.protobuf.Struct": [
        {"fields": {"x" * 300: {"number_value": math.nan}}},
        {"fields": {"n": {"struct_value": deep_struct(90)}}},
    ],
}


def resource_type(message: Any) -> str:
    """The type a message declares itself a resource of, or ""."""
    if message is None:
        return ""
    return message.GetOptions().Extensions[resource_pb2.resource].type


def reference(field: FieldDescriptor) -> tuple[str, bool]:
    """(the resource type a string field names, whether it names that type's parent)."""
    ref = field.GetOptions().Extensions[resource_pb2.resource_reference]
    return (ref.child_type, True) if ref.child_type else (ref.type, False)


def call(channels: Channels, backend: str, method: MethodDescriptor, request: Message, tenant: Tenant) -> Any:
    output = symbol_database.Default().GetSymbol(method.output_type.full_name)
    stub = channels.direct(backend).unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=output.FromString,
    )
    return stub(request, metadata=tenant.metadata, timeout=30)


def method_of(path: str) -> MethodDescriptor:
    api.services()  # every descriptor loaded
    return descriptor_pool.Default().FindMethodByName(path.strip("/").replace("/", "."))


def backend_of(method: MethodDescriptor) -> str:
    return method.containing_service.full_name.split(".")[1]


class Names:
    """One live resource's name per type, and the request that created it."""

    def __init__(self, channels: Channels, tenant: Tenant) -> None:
        self.by_type: dict[str, str] = {
            "identity.hishamos.dev/Organization": tenant.organization,
            "User:admin": tenant.user,
        }
        self.created: dict[str, dict[str, Any]] = {}
        symbols = symbol_database.Default()
        for path, template in SEEDS:
            method = method_of(path)
            values = self.fill(template)
            request = json_format.ParseDict(values, symbols.GetSymbol(method.input_type.full_name)())
            reply = call(channels, backend_of(method), method, request, tenant)
            made = next(
                getattr(reply, f.name)
                for f in reply.DESCRIPTOR.fields
                if f.message_type and resource_type(f.message_type)
            )
            self.by_type[resource_type(made.DESCRIPTOR)] = made.name
            self.created[path] = values
        for kind, (path, parent) in FOUND.items():
            method = method_of(path)
            request = symbols.GetSymbol(method.input_type.full_name)(parent=self.fill(parent))
            reply = call(channels, backend_of(method), method, request, tenant)
            listed = next(getattr(reply, f.name) for f in reply.DESCRIPTOR.fields if f.is_repeated)
            self.by_type[kind] = listed[0].name
        sprint = self.by_type["projects.hishamos.dev/Sprint"]
        self.by_type["projects.hishamos.dev/SprintBoard"] = f"{sprint}/board"

    def fill(self, template: Any) -> Any:
        if isinstance(template, dict):
            return {k: self.fill(v) for k, v in template.items()}
        if isinstance(template, list):
            return [self.fill(v) for v in template]
        if isinstance(template, str) and template.startswith("{") and template.endswith("}"):
            key = template[1:-1]
            return self.by_type.get(key) or self.by_type[next(t for t in self.by_type if t.endswith(f"/{key}"))]
        return template

    def named(self, kind: str, parent: bool) -> str:
        """A live resource of `kind`, or with `parent`, the parent of one."""
        name = self.by_type.get(kind, "")
        if parent:
            if kind == "identity.hishamos.dev/Session":
                return self.by_type["User:admin"]
            return (
                name.rsplit("/", 2)[0] if name.count("/") >= 3 else self.by_type["identity.hishamos.dev/Organization"]
            )
        return name


def base_request(method: MethodDescriptor, names: Names, tenant: Tenant) -> Message:
    """A valid request, as far as the descriptors and the seeds tell: every resource name filled."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    cls = symbol_database.Default().GetSymbol(method.input_type.full_name)
    if path in names.created:
        return json_format.ParseDict(names.created[path], cls())
    request = cls()
    fill_names(request, names, depth=0)
    if method.name in ONESELF:
        request.name = tenant.user  # type: ignore[attr-defined]
    signing_in = {
        "organization_slug": tenant.slug,
        "login": tenant.username,
        "password": PASSWORD,
        "current_password": PASSWORD,
        "new_password": "another-horse-43",
        "organization_display_name": "Fuzz",
        "email": "fuzz-admin@example.test",
        "username": "fuzzer",
        "refresh_token": tenant.refresh_token,
    }
    for field, value in signing_in.items():
        if field in request.DESCRIPTOR.fields_by_name and not getattr(request, field):
            setattr(request, field, value)
    return request


# What a user does only for themself.
ONESELF = {
    "ChangePassword",
    "EnrollTotp",
    "ConfirmTotp",
    "DisableTotp",
    "RegenerateRecoveryCodes",
    "SendEmailVerification",
}
# Fields a second create must not repeat; each call gets its own value unless the field is the hostile one.
UNIQUE = {
    "display_name": "n{}",
    "slug": "s{}",
    "organization_slug": "o{}",
    "username": "u{}",
    "email": "{}@example.test",
    "filename": "{}.md",
    "role_id": "r{}",
}


def fresh(request: Message, hostile: FieldDescriptor) -> None:
    for holder in (
        request,
        *(getattr(request, f.name) for f in request.DESCRIPTOR.fields if f.message_type and not f.is_repeated),
    ):
        for name, pattern in UNIQUE.items():
            field = holder.DESCRIPTOR.fields_by_name.get(name)
            if (
                field is not None
                and field is not hostile
                and getattr(holder, name)
                and not request.DESCRIPTOR.name.startswith(("Login", "RequestPassword"))
            ):
                setattr(holder, name, pattern.format(uuid.uuid4().hex[:10]))


def named_by(field: Any, names: Names) -> str | None:
    """The live resource a string field names, when it names one."""
    if field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
        return None
    kind, parent = reference(field)
    if field.name == "name" and resource_type(field.containing_type):
        return names.named(resource_type(field.containing_type), False)
    return names.named(kind, parent) if kind else None


def fill_names(message: Message, names: Names, depth: int) -> None:
    for field in message.DESCRIPTOR.fields:
        name = named_by(field, names)
        if name is not None:
            setattr(message, field.name, name)
        elif field.message_type and not field.is_repeated and depth < 2 and resource_type(field.message_type):
            fill_names(getattr(message, field.name), names, depth + 1)


def paths(descriptor: Descriptor, prefix: tuple[FieldDescriptor, ...] = ()) -> Iterator[tuple[FieldDescriptor, ...]]:
    """Every field to send a hostile value in, down to the fields of nested messages."""
    for field in descriptor.fields:
        here = (*prefix, field)
        if field.message_type and field.message_type.full_name not in WELL_KNOWN and len(prefix) < 2:
            if field.message_type.GetOptions().map_entry:
                continue
            yield from paths(field.message_type, here)
        else:
            yield here


def hostile_values(field: FieldDescriptor) -> list[Any]:
    if field.message_type:
        if field.message_type.GetOptions().map_entry:
            return []
        known = WELL_KNOWN.get(field.message_type.full_name, [])
        return [[v] for v in known] if field.is_repeated else known
    scalars = hostile_scalars(field)
    if field.is_repeated:
        many = "x" if field.type == FieldDescriptor.TYPE_STRING else scalars[0]
        return [[v] for v in scalars] + [[many] * 5000, [scalars[0], scalars[0]]]
    return scalars


def with_value(base: Message, path: tuple[FieldDescriptor, ...], value: Any) -> Message:
    request = type(base)()
    request.CopyFrom(base)
    holder = request
    for field in path[:-1]:
        holder = getattr(holder, field.name)
        if field.is_repeated:  # the first of a list of messages
            holder = holder[0] if len(holder) else holder.add()
    last = path[-1]
    target = getattr(holder, last.name)
    if last.is_repeated:
        del target[:]
        for item in value:
            parse(item, target.add()) if last.message_type else target.append(item)
    elif last.message_type:
        target.Clear()
        parse(value, target)
    else:
        setattr(holder, last.name, value)
    # An update names what it changes: the field sent, unless the mask itself is what is hostile.
    mask = request.DESCRIPTOR.fields_by_name.get("update_mask")
    if mask and len(path) == 2 and path[-1].name != "update_mask" and path[0].name != "update_mask":
        request.update_mask.paths[:] = [path[-1].name]  # type: ignore[attr-defined]
    return request


def parse(value: dict[str, Any], target: Message) -> None:
    """Set fields directly, so that values json_format would refuse (out-of-range times) are sent."""
    for key, item in value.items():
        field = target.DESCRIPTOR.fields_by_name[key]
        if field.message_type and not field.message_type.GetOptions().map_entry:
            parse(item, getattr(target, key))
        elif field.message_type:  # Struct.fields
            for k, v in item.items():
                entry = getattr(target, key)[k]
                if isinstance(v, dict) and "struct_value" in v:
                    entry.struct_value.update(v["struct_value"])
                else:
                    entry.number_value = v["number_value"]
        elif field.is_repeated:
            getattr(target, key).extend(item)
        else:
            setattr(target, key, item)


def order(method: MethodDescriptor, names: Names) -> tuple[bool, int]:
    """Taking away comes last, the deepest resources first: a project's delete after its stories'."""
    name = method.input_type.fields_by_name.get("name")
    named = (named_by(name, names) or "") if name else ""
    return method.name.startswith(DESTRUCTIVE), -named.count("/")


class Rows:
    """A service's tables as (rows, sum of their xmin): a committed insert, update or delete changes
    it, a rolled-back one does not. It reads no values, so it stays cheap beside 70 kB strings."""

    # Written beside a refusal by design (sign-in failures and denials are audited), or by workers.
    UNWATCHED = ("audit_events", "jobs")

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        tables = [
            table
            for (table,) in self.connection.execute("select tablename from pg_tables where schemaname = 'public'")
            if table not in self.UNWATCHED
        ]
        self.query = " union all ".join(
            f"select '{table}', count(*), coalesce(sum(xmin::text::bigint), 0) from {table}" for table in tables
        )

    def now(self) -> dict[str, tuple[int, int]]:
        return {table: (count, xmins) for table, count, xmins in self.connection.execute(self.query)}


# Refusals these make are recorded on purpose: a wrong password or code takes one of the user's
# attempts, and a spent refresh token presented again revokes its family.
RECORD_REFUSALS = {"Login", "RefreshToken", "ChangePassword", "DisableTotp", "ConfirmTotp", "RegenerateRecoveryCodes"}


def takes_an_attempt(path: tuple[FieldDescriptor, ...]) -> bool:
    """A wrong password counts against the account and locks it after a few: hostile passwords go
    last, so that hostile values in a sign-in's other fields meet an account that can still sign in."""
    return path[-1].name in {"password", "current_password"}


def writes(method: MethodDescriptor) -> bool:
    return not method.name.startswith(("Get", "List", "Compute"))


@pytest.mark.parametrize("service", SERVICES)
def test_hostile_values_in_every_field_get_a_clear_status(
    stack: Stack, channels: Channels, tenant: Tenant, other_tenant: Tenant, service: str
) -> None:
    """Also: a name of another organization's resource in any field is never served."""
    names, theirs = Names(channels, tenant), Names(channels, other_tenant)
    with superuser(stack, service) as connection:
        rows = Rows(connection)
        methods = sorted(
            (m for s in api.services() if s.full_name.split(".")[1] == service for m in s.methods),
            key=lambda m: order(m, names),
        )
        broken: list[str] = []
        sent = 0
        for method in methods:
            base = base_request(method, names, tenant)
            watched = writes(method) and method.name not in RECORD_REFUSALS
            before = rows.now() if watched else {}
            for path in sorted(paths(method.input_type), key=takes_an_attempt):
                # A create ignores its resource's name (AIP-133): the server names what it makes.
                ignored = method.name.startswith("Create") and len(path) == 2 and path[-1].name == "name"
                foreign = None if ignored else named_by(path[-1], theirs)
                for value in [*hostile_values(path[-1]), *([foreign] if foreign else [])]:
                    request = with_value(base, path, value)
                    fresh(request, path[-1])
                    sent += 1
                    field = ".".join(f.name for f in path)
                    try:
                        call(channels, service, method, request, tenant)
                    except grpc.RpcError as exc:
                        code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
                        if code in BROKEN or LEAK.search(details):
                            broken.append(f"{method.name} {field}={repr(value)[:60]}: {code.name} {details[:200]!r}")
                        if watched and (after := rows.now()) != before:
                            changed = sorted(t for t in after if after[t] != before.get(t))
                            broken.append(
                                f"{method.name} {field}={repr(value)[:60]}: {code.name} but changed {changed}"
                            )
                            before = after
                    else:
                        if value == foreign:
                            broken.append(f"{method.name} {field}: served another organization's {value}")
                        if watched:
                            before = rows.now()
    assert sent > 100
    assert not broken, f"{len(broken)} of {sent} calls broke:\n" + "\n".join(broken)


def top_level(listed: Descriptor) -> bool:
    """Whether a List response holds resources that live directly in an organization."""
    items = next(f.message_type for f in listed.fields if f.is_repeated)
    return items is not None and items.GetOptions().Extensions[resource_pb2.resource].pattern[0].count("/") == 3


def hostile_credentials(tenant: Tenant) -> list[tuple[tuple[str, str], ...]]:
    org = tenant.organization.split("/")[1].replace("-", "")
    token = tenant.access_token
    head, _, rest = token.partition(".")
    return [
        (("authorization", "Bearer"),),
        (("authorization", "Bearer " + "x" * 6_000),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", f"Bearer {token[:-3]}abc"),),  # another signature
        (("authorization", f"Bearer {head}..{rest}"),),
        (("authorization", f"Bearer {token}"), ("authorization", "Bearer other")),
        (("authorization", "Bearer hos_"),),
        (("authorization", f"Bearer hos_{org}_" + "y" * 5000),),
        (("x-api-key", "hos_"),),
        (("x-api-key", f"hos_{org}_short"),),
        (("x-api-key", "hos_00000000000000000000000000000000_" + "z" * 43),),
        (("authorization", f"Bearer {token}"), ("x-request-id", "r" * 1_000)),
        (("authorization", f"Bearer {token}"), ("x-request-id", "../../etc/passwd x")),
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_hostile_credentials_are_unauthenticated_or_served_never_broken(
    channels: Channels, tenant: Tenant, service: str
) -> None:
    """Malformed, forged, oversized or doubled credentials on a read of every service; a request id
    the server cannot use is replaced, never an error."""
    methods = (m for s in api.services() if s.full_name.split(".")[1] == service for m in s.methods)
    method = next(m for m in methods if m.name.startswith("List") and top_level(m.output_type))
    request = symbol_database.Default().GetSymbol(method.input_type.full_name)(parent=tenant.organization)
    stub = channels.direct(service).unary_unary(
        f"/{method.containing_service.full_name}/{method.name}", request_serializer=lambda m: m.SerializeToString()
    )
    for metadata in hostile_credentials(tenant):
        try:
            stub(request, metadata=metadata, timeout=30)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
        shown = repr(metadata)[:120]
        assert code not in BROKEN and not LEAK.search(details), (shown, code, details)
        sound = metadata[0][1] == f"Bearer {tenant.access_token}" and len(metadata) == 2
        if metadata[-1][0] == "x-request-id":
            assert code == grpc.StatusCode.OK, shown
        elif not sound:
            assert code == grpc.StatusCode.UNAUTHENTICATED, (shown, code, details)
