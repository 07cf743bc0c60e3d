"""AIP List methods: a filter language (AIP-160 subset), order_by (AIP-132) and keyset page tokens (AIP-158).

Filter grammar, with OR binding tighter than AND as AIP-160 specifies:
    filter     := sequence (AND sequence)*
    sequence   := factor (OR factor)*
    factor     := [NOT | -] ( "(" filter ")" | comparison )
    comparison := field ( = | != | < | <= | > | >= | : ) value
`:` on a text field means "contains" (case-insensitive). Values are quoted strings, numbers,
true/false, enum names or RFC 3339 timestamps. A comparison with an unset field is false, so `!=`
and NOT hold for it (stories not in a sprint include the backlog); enums compare in their order.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import operator
import os
import re
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property, lru_cache
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from google.protobuf.message import Message
from sqlalchemy import Integer, Select, SmallInteger, String, and_, column, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from hishamos_kit.crypto import Sealer
from hishamos_kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_FILTER_LENGTH = 2000
MAX_NESTING = 32
MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 3 << 20  # a page's resources: within the 4 MiB a gRPC client accepts by default
M = TypeVar("M", bound=Message)

_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|(<=|>=|!=|=|<|>|:)|([^\s()"<>=!:]+))')


def parse_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a quoted string")
    return value


def parse_bool(value: object) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("expected true or false")


_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits: int() also reads "1_000", "+5" and Arabic-Indic digits


def parse_int(value: object) -> int:
    if isinstance(value, str) and _INTEGER.fullmatch(value) and -(2**63) <= (number := int(value)) < 2**63:
        return number
    raise ValueError("expected an integer of at most 64 bits")


def _check_bits(value: int, column_type: object) -> None:
    """Refuse an integer its column cannot hold: PostgreSQL would, as an error of the whole request."""
    bits = 16 if isinstance(column_type, SmallInteger) else 32 if type(column_type) is Integer else 64
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise ValueError(f"expected an integer of at most {bits} bits")


def parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 timestamp")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a time zone, e.g. Z")
    # In UTC: PostgreSQL takes offsets up to 15:59, Python up to 23:59.
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # the offset carries it past year 1 or 9999
        raise ValueError("timestamp out of range") from None


@dataclass(frozen=True)
class Field:
    """A field clients may filter or order by: its column and how to read a literal for it."""

    column: Any
    parse: Callable[[object], Any] = parse_text
    text: bool = False  # `:` means "contains" (case-insensitive)
    array: bool = False  # a repeated field: `:` means "has this element"
    # A write may renumber the column across rows, keeping their order (a story's rank): a page token
    # then resumes from the value its last row has now, which stands where it stood among the others.
    renumbered: bool = False
    # An enum stored as codes: each code's number in the enum, so `<` and `>` follow the enum's order
    # (a story's states run TODO, IN_PROGRESS, REVIEW, DONE), not the alphabetical order of the codes.
    ranks: Mapping[str, int] | None = None


@dataclass(frozen=True)
class ListSpec:
    filter_fields: Mapping[str, Field]
    order_fields: Mapping[str, Field]
    default_order: str
    id_column: Any

    @cached_property
    def table(self) -> str:
        """The listed table's name, read once: SQLAlchemy's column proxy is slow to ask per call."""
        return str(self.id_column.table.name)


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_page_token: str
    token_after: Callable[[Any], str]  # the token that continues after one of `rows`

    def fit(self, messages: Iterable[M]) -> tuple[list[M], str]:
        """The page's messages (one per row, in order) as many as fit a response, and the token after the
        last. Given lazily, the rows past a full page are never made messages: a page of a thousand rows
        with large JSON fields cost seconds of the event loop to send the few dozen that fit."""
        made: list[M] = []

        def sizes() -> Iterator[int]:
            for message in messages:
                made.append(message)
                yield message.ByteSize()

        count = fitting(sizes())
        if count == len(self.rows):
            return made, self.next_page_token
        return made[:count], self.token_after(self.rows[count - 1])


def fitting(sizes: Iterable[int]) -> int:
    """How many leading resources of these encoded sizes one page holds: those that fit in
    MAX_PAGE_BYTES, and at least one. AIP-158 lets a page hold fewer than page_size, and a thousand
    of the longest stories would be some 120 MiB, where gRPC clients accept 4 MiB unless told more."""
    count = total = 0
    for size in sizes:
        total += size
        if total > MAX_PAGE_BYTES and count:
            break
        count += 1
    return count


class _Parser:
    def __init__(self, text: str, fields: Mapping[str, Field]) -> None:
        if len(text) > MAX_FILTER_LENGTH:
            raise self.error(f"is longer than {MAX_FILTER_LENGTH} characters")
        self.fields = fields
        self.depth = 0
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.strip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise self.error(f"cannot read the filter at character {position + 1}")
            kinds = ("(", ")", "string", "op", "word")
            kind, value = next((k, v) for k, v in zip(kinds, match.groups(), strict=True) if v is not None)
            if kind == "string":
                try:  # a JSON string: its escapes must be JSON's, and it must be encodable text
                    value = json.loads(value)
                    value.encode()
                except ValueError:
                    raise self.error(f"the quoted value at character {position + 1} is not a valid string") from None
            after_op = bool(self.tokens) and self.tokens[-1][0] == "op"  # `title = -title` compares a value
            if kind == "word" and value.startswith("-") and value[1:] in fields and not after_op:  # NOT field
                self.tokens.append(("word", "-"))
                value = value[1:]
            self.tokens.append((kind, value))
            position = match.end()
        self.position = 0

    @staticmethod
    def error(message: str) -> InvalidArgument:
        return InvalidArgument({"filter": message})

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.error("the filter ends too early")
        self.position += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token == ("word", word):
            self.position += 1
            return True
        return False

    def parse(self) -> ColumnElement[bool]:
        expression = self.conjunction()
        if self.peek() is not None:
            raise self.error(f"unexpected `{self.peek()[1]}`")  # type: ignore[index]
        return expression

    def conjunction(self) -> ColumnElement[bool]:
        parts = [self.disjunction()]
        while self.keyword("AND"):
            parts.append(self.disjunction())
        return and_(*parts) if len(parts) > 1 else parts[0]

    def disjunction(self) -> ColumnElement[bool]:
        parts = [self.factor()]
        while self.keyword("OR"):
            parts.append(self.factor())
        return or_(*parts) if len(parts) > 1 else parts[0]

    def factor(self) -> ColumnElement[bool]:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nests deeper than {MAX_NESTING} levels")
        try:
            return self._factor()
        finally:
            self.depth -= 1

    def _factor(self) -> ColumnElement[bool]:
        if self.keyword("NOT") or self.keyword("-"):
            # IS NOT TRUE, not NOT: a comparison with an unset field (NULL) is false, so its negation
            # holds (`NOT sprint = "…"` includes the backlog), where NOT NULL would leave the row out.
            return self.factor().is_not(true())
        if self.peek() == ("(", "("):
            self.take()
            inner = self.conjunction()
            if self.take() != (")", ")"):
                raise self.error("missing `)`")
            return inner
        return self.comparison()

    def comparison(self) -> ColumnElement[bool]:
        kind, name = self.take()
        if kind != "word":
            raise self.error(f"expected a field name, got `{name}`")
        field = self.fields.get(name)
        if field is None:
            raise self.error(f"cannot filter on `{name}`; fields: {', '.join(sorted(self.fields))}")
        kind, op = self.take()
        if kind != "op":
            raise self.error(f"expected an operator after `{name}`")
        kind, raw = self.take()
        if kind not in ("string", "word"):
            raise self.error(f"expected a value after `{name} {op}`")
        column = field.column
        try:
            if "\x00" in raw:  # no column holds one, and PostgreSQL refuses it in a parameter
                raise ValueError("NUL characters cannot match anything")
            value = field.parse(raw)
            if isinstance(value, int) and not isinstance(value, bool):
                _check_bits(value, getattr(column, "type", None))
        except ValueError as exc:
            raise self.error(f"bad value for `{name}`: {exc}") from None
        if field.array:  # AIP-160: `labels:x` asks whether the list holds x; nothing else compares a list
            if op != ":":
                raise self.error(f"`{name}` is a list: ask `{name}:<value>` whether it holds a value")
            return column.any(value)  # type: ignore[no-any-return]
        if op == ":":
            if not field.text:
                raise self.error(f"`:` works on text fields only, not `{name}`")
            escaped = str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return column.ilike(f"%{escaped}%", escape="\\")  # type: ignore[no-any-return]
        if value is None and op not in ("=", "!="):  # a literal meaning "none set" (a reference's "")
            raise self.error(f'`{name}` = "" asks whether none is set; it takes `=` or `!=` only')
        if op == "=":
            return column == value  # type: ignore[no-any-return]
        if op == "!=":  # as NOT `=`: an unset field differs from every value
            return (column == value).is_not(true())  # type: ignore[no-any-return]
        compare = ORDERINGS[op]
        if field.ranks is not None:
            ranks = field.ranks  # an OR of equalities, not IN: fastlist compiles no expanding parameters
            return or_(false(), *(column == code for code, rank in ranks.items() if compare(rank, ranks[value])))
        return compare(column, value)  # type: ignore[no-any-return]


ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def parse_filter(text: str, fields: Mapping[str, Field]) -> ColumnElement[bool] | None:
    return _Parser(text, fields).parse() if text.strip() else None


def parse_order_by(text: str, spec: ListSpec) -> list[tuple[str, bool]]:
    """`a, b desc` → [("a", False), ("b", True)]: field name and whether descending."""
    order: list[tuple[str, bool]] = []
    for part in (text or spec.default_order).split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise InvalidArgument({"order_by": f"cannot read `{part.strip()}`; write `field` or `field desc`"})
        if words[0] not in spec.order_fields:
            raise InvalidArgument(
                {"order_by": f"cannot order by `{words[0]}`; fields: {', '.join(sorted(spec.order_fields))}"}
            )
        # Each field once: a repeat orders nothing more, and a key per repeat made the query grow unbounded.
        if any(field == words[0] for field, _ in order):
            raise InvalidArgument({"order_by": f"names `{words[0]}` more than once"})
        order.append((words[0], len(words) == 2 and words[1] == "desc"))
    return order


def fingerprint_of(spec: ListSpec, *parts: Hashable) -> str:
    """What a page token is bound to: what is listed (its table), and the filter, order and scope of
    the list it continues."""
    return _fingerprint(spec.table, parts)


@lru_cache(maxsize=4096)
def _fingerprint(table: str, parts: tuple[Hashable, ...]) -> str:
    # Cached: a client paging through a list, or polling its first page, asks with the same parts.
    return hashlib.sha256(json.dumps([table, *parts], default=str).encode()).hexdigest()[:16]


async def list_page(
    session: AsyncSession,
    spec: ListSpec,
    query: Select[Any],
    *,
    page_size: int,
    page_token: str,
    filter: str,
    order_by: str,
    scope: Sequence[Hashable],
) -> Page:
    """One page of `query` (already scoped to the caller) under the request's filter and order.

    The token holds the last row's sort key, sealed (AES-GCM, `use_token_key`): the next page
    starts strictly after it, so rows inserted, changed or deleted meanwhile never cause repeats or
    gaps among the rest; and a client can neither read it (a story's rank comes from a sequence
    every organization shares, and would tell how busy the others are) nor forge one.
    """
    size = page_size_of(page_size)
    condition = parse_filter(filter, spec.filter_fields)
    order = parse_order_by(order_by, spec)
    keys = sort_keys(spec, order)
    fingerprint = fingerprint_of(spec, filter, tuple(order), *scope)

    if condition is not None:
        query = query.where(condition)
    if page_token:
        query = query.where(after(read_token(page_token, fingerprint, keys), keys))
    query = query.order_by(*(f.column.desc() if desc else f.column.asc() for f, desc in keys)).limit(size + 1)
    rows = list((await session.scalars(query)).all())

    def token_after(row: Any) -> str:
        return make_token([getattr(row, f.column.key) for f, _ in keys], fingerprint)

    return Page(rows[:size], token_after(rows[size - 1]) if len(rows) > size else "", token_after)


_CATALOG_KEY = [(Field(column("item", String())), False)]


def sorted_page(items: Sequence[str], name: str, *, page_size: int, page_token: str) -> Page:
    """One page of a sorted list held in memory (a catalog, `name`), under a table's paging rules."""
    size = page_size_of(page_size)
    fingerprint = _fingerprint(name, ())
    start = bisect.bisect_right(items, read_token(page_token, fingerprint, _CATALOG_KEY)[0]) if page_token else 0
    rows = list(items[start : start + size])

    def token_after(item: str) -> str:
        return make_token([item], fingerprint)

    return Page(rows, token_after(rows[-1]) if start + size < len(items) else "", token_after)


def page_size_of(requested: int) -> int:
    """AIP-158: 0 means the default, more than the most means the most; negative is refused."""
    if requested < 0:
        raise InvalidArgument({"page_size": "must not be negative"})
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def sort_keys(spec: ListSpec, order: Sequence[tuple[str, bool]]) -> list[tuple[Field, bool]]:
    """The order's fields, then the id: a total order, so a page ends at exactly one row."""
    return [(spec.order_fields[name], desc) for name, desc in order] + [(Field(spec.id_column), False)]


_sealer = Sealer(os.urandom(32))  # until use_token_key: tokens then last as long as the process


def use_token_key(key: bytes) -> None:
    """The service's key for page tokens, the same in every process of it (a setting)."""
    global _sealer
    _sealer = Sealer(key)
    _sealed.cache_clear()


def make_token(values: Sequence[Any], fingerprint: str) -> str:
    return _sealed(json.dumps([_encode(v) for v in values]), fingerprint)


@lru_cache(maxsize=4096)
def _sealed(plain: str, fingerprint: str) -> str:
    # Cached: the same page read again (a board polled, say) continues from the same row. A token
    # means only "after this row of this list", so callers who may read the list can share one.
    return base64.urlsafe_b64encode(_sealer.seal(plain.encode(), fingerprint)).decode().rstrip("=")


def read_token(token: str, fingerprint: str, keys: list[tuple[Field, bool]]) -> list[Any]:
    """The sort key a page ended with. A token of another list (filter, order or parent), of another
    key, or none at all is INVALID_ARGUMENT; its values are checked against the columns' types."""
    try:
        plain = _sealer.open(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), fingerprint)
        values = json.loads(plain)
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError
        return [_decode(v, f) for v, (f, _) in zip(values, keys, strict=True)]
    except (InvalidTag, ValueError, TypeError, binascii.Error):
        raise InvalidArgument(
            {"page_token": "is not a token of this list: keep the filter, order and parent, or start over"}
        ) from None


def _encode(value: Any) -> Any:
    if isinstance(value, date):  # and datetime
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _decode(value: Any, field: Field) -> Any:
    if field.parse is parse_time:
        return parse_time(value)
    expected = field.column.type.python_type
    if expected is uuid.UUID:
        return uuid.UUID(str(value))
    if expected is date:
        return date.fromisoformat(value)
    if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
        raise ValueError(f"expected {expected.__name__}")
    return value


def after(values: Sequence[Any], keys: list[tuple[Field, bool]]) -> ColumnElement[bool]:
    """Rows strictly after `values` (values or bind parameters) in the (mixed-direction) key order;
    the last key is the id."""
    if any(field.renumbered for field, _ in keys):
        last = keys[-1][0].column.table.alias()  # the token's row by its id, apart from the rows listed
        values = [
            select(last.c[field.column.name]).where(last.c[keys[-1][0].column.name] == values[-1]).scalar_subquery()
            if field.renumbered
            else value
            for (field, _), value in zip(keys, values, strict=True)
        ]
    alternatives = []
    for i, (field, desc) in enumerate(keys):
        equal = [keys[j][0].column == values[j] for j in range(i)]
        beyond = field.column < values[i] if desc else field.column > values[i]
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)
