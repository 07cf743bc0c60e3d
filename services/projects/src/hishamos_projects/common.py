"""Field rules shared by the work items of a project (epics, stories, tasks)."""

from __future__ import annotations

from hishamos.projects.v1 import priority_pb2
from hishamos_kit.errors import Violations
from hishamos_kit.resources import ResourcePath

USER = ResourcePath("organizations/{organization}/users/{user}")

# Stored as the enum's number, so that ordering by priority orders by urgency.
PRIORITIES = {name: value for name, value in priority_pb2.Priority.items() if value}
DEFAULT_PRIORITY = priority_pb2.PRIORITY_MEDIUM


def priority(v: Violations, field: str, value: int) -> int:
    if value == 0:
        return DEFAULT_PRIORITY
    if value not in PRIORITIES.values():
        v.add(field, f"must be one of {', '.join(PRIORITIES)}")
    return value


def parse_priority(literal: object) -> int:
    """A filter literal: PRIORITY_HIGH or HIGH."""
    if isinstance(literal, str):
        name = literal.upper()
        value = PRIORITIES.get(name) or PRIORITIES.get(f"PRIORITY_{name}")
        if value:
            return value
    raise ValueError(f"expected one of {', '.join(PRIORITIES)}")
