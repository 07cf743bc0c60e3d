"""Field checks shared by every service; each records a violation instead of raising, so all are reported."""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from hishamos_kit.errors import InvalidArgument, Violations
from hishamos_kit.listing import Field
from hishamos_kit.resources import ResourcePath

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
EMAIL = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+\Z"
)


def text(v: Violations, field: str, value: str, *, required: bool = False, max_length: int = 200) -> str:
    value = value.strip()
    if required and not value:
        v.add(field, "is required")
    elif "\x00" in value:  # PostgreSQL cannot store it
        v.add(field, "must not contain NUL characters")
    elif len(value) > max_length:
        v.add(field, f"must be at most {max_length} characters")
    return value


def slug(v: Violations, field: str, value: str, *, min_length: int = 2, max_length: int = 63) -> str:
    if not value:
        v.add(field, "is required")
    elif not (min_length <= len(value) <= max_length) or not SLUG.match(value):
        v.add(field, f"must be {min_length}-{max_length} lowercase letters, digits or inner hyphens")
    return value


def email(v: Violations, field: str, value: str, *, required: bool = False) -> str:
    value = value.strip()
    if not value:
        if required:
            v.add(field, "is required")
    elif len(value) > 254 or not EMAIL.match(value):
        v.add(field, "must be an email address like name@example.com")
    return value.lower()


def _host_and_port(parts: SplitResult) -> bool:
    """A host, and a port (if any) that can be one: urlsplit leaves both to whoever connects."""
    try:
        parts.port  # noqa: B018 - reading it checks it: ValueError past 65535 or not a number
    except ValueError:
        return False
    return bool(parts.hostname)


def http_url(v: Violations, field: str, value: str, *, bare: bool = False) -> str:
    """An http(s) URL; `bare`: without user, password or query, where those would be secrets in clear."""
    value = value.strip()
    if value:
        try:
            parts = urlsplit(value)
        except ValueError:  # a malformed host such as `[::1`
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not _host_and_port(parts):
            v.add(field, "must be an http(s) URL with a host, such as https://api.example.com/v1")
        elif any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            v.add(field, "must be an http(s) URL without spaces or control characters")
        elif len(value) > 2000:
            v.add(field, "must be an http(s) URL of at most 2000 characters")
        elif bare and (parts.username is not None or parts.query or parts.fragment):
            v.add(field, "must carry no credentials, query or fragment: a secret here would be readable by all")
    return value


def number(v: Violations, field: str, value: float, *, low: float = 0, high: float | None = None) -> float:
    """`value`, with -0.0 as 0.0: PostgreSQL stores it so, and an answer should say what a read will."""
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        v.add(field, f"must be between {low} and {high}" if high is not None else f"must be at least {low}")
    return value + 0.0


def json_object(v: Violations, field: str, value: Struct, *, max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """`value` as a JSON object PostgreSQL's jsonb can store: finite numbers, no NUL, at most `max_bytes`."""
    # Its wire size, counted in C, is close to its JSON size: refuse the huge before converting
    # it key by key on the event loop (a 10 MB Struct took a service seconds to convert).
    if value.ByteSize() > 2 * max_bytes:
        v.add(field, f"must be at most {max_bytes} bytes as JSON")
        return {}
    try:
        data: dict[str, Any] = json_format.MessageToDict(value)
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError:  # NaN or infinity: JSON has neither
        v.add(field, "numbers must be finite")
        return {}
    if len(encoded) > max_bytes:
        v.add(field, f"must be at most {max_bytes} bytes as JSON")
    elif _has_nul(data):
        v.add(field, "keys and strings must not contain NUL")
    return {key: _without_negative_zero(item) for key, item in data.items()}


def _without_negative_zero(value: Any) -> Any:
    """jsonb has no -0: stored, it reads back as 0, and the answer to a write must say what a read will."""
    if isinstance(value, float):
        return value + 0.0
    if isinstance(value, dict):
        return {key: _without_negative_zero(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_negative_zero(item) for item in value]
    return value


def _has_nul(value: Any) -> bool:
    """PostgreSQL's jsonb cannot store U+0000, in keys or in strings."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any("\0" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


# google.protobuf.Timestamp's own range (0001-01-01 to 9999-12-31, UTC), which datetime shares.
FIRST_SECOND, LAST_SECOND = -62_135_596_800, 253_402_300_799


def timestamp(v: Violations, field: str, value: Timestamp) -> datetime | None:
    """`value` as an aware datetime, or None (and a violation) when it lies outside Timestamp's range."""
    if not FIRST_SECOND <= value.seconds <= LAST_SECOND or not 0 <= value.nanos < 1_000_000_000:
        v.add(field, "must be a time between the years 1 and 9999 (nanos 0-999999999)")
        return None
    return value.ToDatetime(UTC)


def reference(v: Violations, field: str, value: str, path: ResourcePath, organization_id: uuid.UUID) -> str:
    """A name of a resource in the caller's organization (possibly another service's), in canonical form."""
    if not value:
        return ""
    ids: tuple[uuid.UUID, ...] = ()
    with contextlib.suppress(InvalidArgument):
        ids = path.parse(value, field)
    if not ids or ids[0] != organization_id:
        v.add(field, f"must name a resource of this organization, `{path.pattern}`")
        return value
    return path.format(*ids)


class EnumCodes:
    """A proto enum stored as short lowercase codes: PROVIDER_OPENAI ↔ "openai"; UNSPECIFIED is never stored."""

    def __init__(self, values: Iterable[tuple[str, int]], prefix: str) -> None:
        self.prefix = prefix
        self.codes = {name.removeprefix(prefix).lower(): value for name, value in values if value}
        self.names = {value: code for code, value in self.codes.items()}

    def allowed(self) -> str:
        return ", ".join(self.prefix + code.upper() for code in self.codes)

    def check(self, v: Violations, field: str, value: int) -> str:
        if value not in self.names:
            v.add(field, "is required" if value == 0 else f"must be one of {self.allowed()}")
        return self.names.get(value, "")

    def value(self, code: str) -> Any:
        """The enum value of a stored code (Any: each generated enum has its own ValueType)."""
        return self.codes.get(code, 0)

    def filter_field(self, column: Any) -> Field:
        """A list filter's field for `column`, which holds these codes."""
        return Field(column, self.parse, ranks=self.codes)

    def parse(self, literal: object) -> str:
        """A filter literal: the enum name (PROVIDER_OPENAI) or the code (openai)."""
        if isinstance(literal, str):
            code = literal.lower().removeprefix(self.prefix.lower())
            if code in self.codes:
                return code
        raise ValueError(f"expected one of {self.allowed()}")


def time_zone(v: Violations, field: str, value: str) -> str:
    value = value.strip()
    if value:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            v.add(field, "must be an IANA time zone such as Europe/Berlin")
    return value
