"""Field checks shared by every service; each records a violation instead of raising, so all are reported."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from hishamos_kit.errors import Violations

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def text(v: Violations, field: str, value: str, *, required: bool = False, max_length: int = 200) -> str:
    value = value.strip()
    if required and not value:
        v.add(field, "is required")
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


def http_url(v: Violations, field: str, value: str) -> str:
    value = value.strip()
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(value) > 2000:
            v.add(field, "must be an http(s) URL")
    return value


def number(v: Violations, field: str, value: float, *, low: float = 0, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        v.add(field, f"must be between {low} and {high}" if high is not None else f"must be at least {low}")
