"""Filter targets beyond a plain column (hishamos_kit.listing): array membership, text over several
columns, and references given as resource names."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_
from sqlalchemy.sql.elements import ColumnElement

from hishamos_kit.errors import InvalidArgument
from hishamos_kit.resources import ResourcePath


class _Target:
    """Supports `=` (and so `!=`, its negation) only; any other operator is the client's mistake, not a server error."""

    __hash__ = object.__hash__
    label = ""

    def _refuse(self, other: object) -> Any:
        raise InvalidArgument({"filter": f"`{self.label}` supports `=`, `!=`{' and `:`' if self._text else ''} only"})

    _text = False
    __lt__ = __le__ = __gt__ = __ge__ = _refuse


class HasElement(_Target):
    """`label = "ui"`: the array column contains the value."""

    def __init__(self, column: Any, label: str) -> None:
        self.column, self.label = column, label

    def __eq__(self, value: object) -> ColumnElement[bool]:  # type: ignore[override]
        return self.column.contains([value])  # type: ignore[no-any-return]


class AnyText(_Target):
    """`text: "login"`: any of the columns contains the words (case-insensitive)."""

    _text = True

    def __init__(self, label: str, *columns: Any) -> None:
        self.columns, self.label = columns, label

    def ilike(self, pattern: str, escape: str) -> ColumnElement[bool]:
        return or_(*(c.ilike(pattern, escape=escape) for c in self.columns))

    def __eq__(self, value: object) -> ColumnElement[bool]:  # type: ignore[override]
        return or_(*(c == value for c in self.columns))


def reference(path: ResourcePath) -> Callable[[object], uuid.UUID | None]:
    """A filter literal naming a resource (its id is what the column holds); "" matches none set."""

    def parse(literal: object) -> uuid.UUID | None:
        if not isinstance(literal, str):
            raise ValueError(f'expected a quoted name like `{path.pattern}` or ""')
        if not literal:
            return None
        try:
            return path.parse(literal, "filter")[-1]
        except InvalidArgument:
            raise ValueError(f'expected a name like `{path.pattern}` or ""') from None

    return parse
