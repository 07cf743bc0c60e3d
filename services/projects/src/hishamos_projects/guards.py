"""What a write in a project asks the database to confirm, as SQL with psycopg `%s` parameters.

Both write paths use them: the ORM's (one statement of every check) and fastcreate's (the checks
inside its script and the INSERT's condition), so a rule is written once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import inspect

from hishamos_kit.errors import FailedPrecondition
from hishamos_projects.models import ProjectChild


@dataclass(frozen=True)
class Guard:
    """A condition the database must confirm: SQL with psycopg `%s` placeholders, and the violation when false."""

    sql: str
    params: tuple[Any, ...]
    problem: str


def live(
    model: type[ProjectChild], row_id: uuid.UUID, *where: tuple[str, Any], also: str = ""
) -> tuple[str, tuple[Any, ...]]:
    """SQL that a live row of `model` has `row_id`, each (column, value) of `where` and the condition `also`."""
    table = inspect(model).local_table.name
    conditions = "".join(f' AND "{column}" = %s' for column, _ in where) + (f" AND {also}" if also else "")
    return f"EXISTS (SELECT 1 FROM {table} WHERE id = %s AND NOT is_deleted{conditions})", (
        row_id,
        *(value for _, value in where),
    )


def is_member(row: ProjectChild, user: str) -> Guard:
    sql = 'EXISTS (SELECT 1 FROM members WHERE project_id = %s AND "user" = %s AND NOT is_deleted)'
    return Guard(sql, (row.project_id, user), "is not a member of the project; add them with CreateMember first")


def facts_query(kind: Any, project_id: uuid.UUID, checks: Iterable[Guard]) -> tuple[str, tuple[Any, ...]]:
    """The live project's version, whether it is active, its `project_columns`, and one boolean per check, locking the
    project FOR KEY SHARE; no row when the project is missing or deleted."""
    checks = list(checks)
    return facts_sql(kind, tuple(c.sql for c in checks)), (*(p for c in checks for p in c.params), project_id)


@lru_cache(maxsize=1000)
def facts_sql(kind: Any, checks: tuple[str, ...]) -> str:
    """`facts_query`'s text for checks with these texts: the same for every create of one shape."""
    columns = "".join(f', "{column}"' for column in kind.project_columns)
    columns += "".join(f", {sql} AS ok{i}" for i, sql in enumerate(checks))
    return f"SELECT version, is_active{columns} FROM projects WHERE id = %s AND NOT is_deleted FOR KEY SHARE"


def archived(project_id: uuid.UUID) -> FailedPrecondition:
    """The error for a write to the work of an archived project."""
    return FailedPrecondition(
        "the project is archived and its work is read-only; unarchive it first",
        "PROJECT_ARCHIVED",
        {"project_id": str(project_id)},
    )
