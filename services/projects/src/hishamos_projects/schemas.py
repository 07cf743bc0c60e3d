"""A project's JSON Schema for its stories' custom fields: what it may be, and checking a story against it.

Any project manager writes the schema, and every story create and update of the project runs it on
the service's event loop, so a check must cost little whatever the schema says. Python's `re`
backtracks (`^(a+)+$` takes seconds on 25 characters), so `pattern` runs on RE2, which takes time
linear in the text, and `patternProperties` (which jsonschema runs on `re` internally) is refused.
Two `$ref`s to the next definition, twenty definitions deep, are a kilobyte that a check walks a
million times, so a schema is measured with its references expanded, and a check's work (that size
times the number of values checked) has a ceiling.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import re2
from google.protobuf import struct_pb2
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable

from hishamos_kit import validate
from hishamos_kit.errors import Violations

MAX_EXPANDED = 5_000  # schema nodes, with references expanded
MAX_WORK = 200_000  # expanded nodes times the values of one story's custom fields
REFERENCES = ("$ref", "$dynamicRef")  # the keywords of draft 2020-12 that name another schema

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def check_schema(v: Violations, field: str, value: struct_pb2.Struct) -> dict[str, Any]:
    """A valid JSON Schema (draft 2020-12) that checks cheaply, checked now so that no story create
    fails on a broken schema."""
    schema = validate.json_object(v, field, value)
    if field in v.items:
        return schema
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        v.add(field, f"is not a valid JSON Schema: {exc.message}")
        return schema
    problem = _problem(json.dumps(schema, sort_keys=True))
    if problem:
        v.add(field, problem)
    return schema


def check_custom_fields(v: Violations, field: str, value: dict[str, Any], schema: dict[str, Any]) -> None:
    """Every way `value` breaks the project's schema, each at its JSON path under `field`."""
    if not schema:
        return
    text = json.dumps(schema, sort_keys=True)
    problem = _problem(text)  # a schema stored before these checks existed
    if problem:
        v.add(field, f"cannot be checked: the project's schema {problem}")
        return
    if _expanded_size(text) * _values(value) > MAX_WORK:
        v.add(field, "holds too many values to check against the project's schema; keep fewer")
        return
    try:
        errors = list(_validator(text).iter_errors(value))
    except Unresolvable:
        v.add(field, "cannot be checked: the project's schema refers to something it does not define")
        return
    except RecursionError:  # a `$ref` cycle the schema reaches through these fields
        v.add(field, "cannot be checked: the project's schema refers to itself without end")
        return
    for error in errors:
        v.add(field + "".join(f".{part}" for part in error.absolute_path), error.message)


@lru_cache(maxsize=256)
def _validator(schema: str) -> Any:
    # A registry of our own, which retrieves nothing: jsonschema's default fetches any URL a reference
    # names, with urlopen, on the event loop, and shows what it got in its errors.
    return Validator(json.loads(schema), registry=Registry())


@lru_cache(maxsize=256)
def _problem(text: str) -> str:
    """Why the schema cannot serve (as the end of a sentence about it), or ''."""
    schema = json.loads(text)
    nodes = list(_nodes(schema))
    if any("patternProperties" in node for node in nodes):
        return "may not use `patternProperties`: name the properties, or check names with `propertyNames`"
    for node in nodes:
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            try:
                _regex(pattern)
            except re2.error:
                return f"has a pattern RE2 cannot run ({pattern[:50]!r}): no backreferences or lookaround"
    for node in nodes:
        for keyword in REFERENCES:
            if isinstance(node.get(keyword), str) and not node[keyword].startswith("#"):
                return f'may only use local references (`{keyword}: "#..."`): nothing is fetched'
    if _expanded_size(text) > MAX_EXPANDED:
        return f"expands through its references to more than {MAX_EXPANDED} parts: checking a story would cost too much"
    # A schema may still fail to check anything: a `$ref` cycle recurses without end, a dangling
    # `$ref` cannot be followed. Trying it on the custom fields of a story that has none finds those
    # it always meets; check_custom_fields reports the others, reached through fields.
    try:
        list(_validator(text).iter_errors({}))
    except RecursionError:
        return "refers to itself without end (a `$ref` cycle): it cannot check any story"
    except Unresolvable:
        return "refers to something it does not define: it cannot check any story"
    return ""


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _nodes(child)
    elif isinstance(node, list):
        for child in node:
            yield from _nodes(child)


def _values(node: Any) -> int:
    """How many values a JSON document holds, itself included."""
    if isinstance(node, dict):
        return 1 + sum(_values(child) for child in node.values())
    if isinstance(node, list):
        return 1 + sum(_values(child) for child in node)
    return 1


@lru_cache(maxsize=256)
def _expanded_size(text: str) -> int:
    """The schema's parts with every local reference (`$ref`, `$dynamicRef`) counted as the part it
    names, at most MAX_EXPANDED + 1. A reference back into a part being expanded counts once: what it
    costs grows with the value's depth, which MAX_WORK bounds, not with the schema."""
    root = json.loads(text)
    sizes: dict[str, int] = {}

    def size(node: Any, expanding: frozenset[str]) -> int:
        total = 0
        if isinstance(node, dict):
            total = 1
            for ref in (node.get(keyword) for keyword in REFERENCES):
                if isinstance(ref, str):
                    if ref not in expanding and ref not in sizes:
                        sizes[ref] = size(_target(root, ref), expanding | {ref})
                    total += sizes.get(ref, 1)
            total += sum(size(child, expanding) for key, child in node.items() if key not in REFERENCES)
        elif isinstance(node, list):
            total = sum(size(child, expanding) for child in node)
        return min(total, MAX_EXPANDED + 1)

    return size(root, frozenset())


def _target(root: Any, ref: str) -> Any:
    """What a local `$ref` (`#` or `#/a/b`) points at; None when it points nowhere this can follow."""
    node = root
    for token in unquote(ref.removeprefix("#")).split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node
