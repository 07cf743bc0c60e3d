"""Calendar dates (google.type.Date) in messages, columns and filters."""

from __future__ import annotations

from datetime import date

from google.type import date_pb2

from hishamos_kit.errors import Violations


def to_date(v: Violations, field: str, value: date_pb2.Date, *, required: bool = False) -> date | None:
    """A full calendar date; a partial one (year 0, month 0 or day 0) is only allowed as "unset"."""
    if (value.year, value.month, value.day) == (0, 0, 0):
        if required:
            v.add(field, "is required")
        return None
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        v.add(field, "must be a full calendar date (year, month and day)")
        return None


def to_message(value: date | None) -> date_pb2.Date | None:
    return None if value is None else date_pb2.Date(year=value.year, month=value.month, day=value.day)


def parse_date(literal: object) -> date:
    """A filter literal such as "2026-01-31"."""
    if not isinstance(literal, str):
        raise ValueError('expected a date like "2026-01-31"')
    return date.fromisoformat(literal)
